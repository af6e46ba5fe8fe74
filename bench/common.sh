# Shared set-up of bench/auth.sh, l4.sh and control.sh (sourced, not run): results and
# scratch folders, a process list stopped on exit, log/wait_port, and the release binary.
# Expects BENCH, ROOT and SKIP_BUILD; sets OUT, RUN and PIDS.

# bench_init NAME: call once, before starting any process.
bench_init() {
  BENCH_NAME=$1
  STAMP=$(date -u +%Y%m%dT%H%M%SZ)
  export OUT=$BENCH/results/$STAMP-$BENCH_NAME
  export RUN=$(mktemp -d "/tmp/tollgate-bench-$BENCH_NAME.XXXXXX")
  mkdir -p "$OUT"
  PIDS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  if [[ $SKIP_BUILD != 1 ]]; then log "building tollgate (release)"; (cd "$ROOT" && cargo build --release -q -p tollgate); fi
  # A copy, so a rebuild during the run cannot swap the binary under it. TOLLGATE_BIN
  # measures another build (with SKIP_BUILD=1) for a before/after.
  cp "${TOLLGATE_BIN:-$ROOT/target/release/tollgate}" "$RUN/tollgate"
}

# Stops every process in PIDS (TERM, then KILL after 5 s), keeps their logs.
bench_cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  cp "$RUN"/*.log "$OUT"/ 2>/dev/null || true
  rm -rf "$RUN"
  # A script's own clean-up (a scratch database), once its processes are stopped.
  if declare -F bench_after >/dev/null; then bench_after || true; fi
  exit $rc
}

log() { printf '[%s] %s\n' "$BENCH_NAME" "$*" >&2; }

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done
  echo "$BENCH_NAME.sh: nothing on :$1" >&2; return 1
}

# Writes $RUN/upstream.conf: a one-worker nginx answering 200 on 127.0.0.1:$UP.
write_upstream_conf() {
  mkdir -p "$RUN/upstream-tmp"
  cat >"$RUN/upstream.conf" <<EOF
daemon off;
worker_processes 1;
pid $RUN/upstream.pid;
error_log $RUN/upstream-error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $RUN/upstream-tmp/body;
    proxy_temp_path $RUN/upstream-tmp/proxy;
    fastcgi_temp_path $RUN/upstream-tmp/fastcgi;
    uwsgi_temp_path $RUN/upstream-tmp/uwsgi;
    scgi_temp_path $RUN/upstream-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$UP backlog=4096;
        location / { default_type text/plain; return 200 "hello from the tollgate bench upstream\n"; }
    }
}
EOF
}
