#!/usr/bin/env bash
# Memory per idle keep-alive connection (bench/EXTRA.md): COUNTS client connections to
# one tollgate worker, each having made one request (so its buffers, TLS session and
# HTTP/2 state exist) and then left idle; the proxy's RSS with them open minus its RSS
# before, divided by the count. A fresh proxy per row. nginx is measured the same way,
# side by side, when it is installed (bench/setup.sh).
#
#   idle_conns.py hold ──N connections──> proxy ──pooled keep-alive──> idle_conns.py serve
#
# Kinds: h1 (HTTP/1.1), h2c (HTTP/2 prior knowledge), h1tls and h2tls (TLS 1.3, ECDSA
# P-256 certificate, ALPN).
# Environment: COUNTS ["1000 10000"] KINDS ["h1 h2c h1tls h2tls"] PARALLEL [64] (connections
#              opened at once) PROXY_CPUS [0] LOAD_CPUS [1] BASE_PORT [18900] SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
COUNTS=${COUNTS:-1000 10000}; KINDS=${KINDS:-h1 h2c h1tls h2tls}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}; PARALLEL=${PARALLEL:-64}
BASE_PORT=${BASE_PORT:-18900}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in cargo python3 taskset openssl; do
  command -v $t >/dev/null || { echo "idle-conns.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) TG=$((BASE_PORT + 11)) TGS=$((BASE_PORT + 12)) TG_ADMIN=$((BASE_PORT + 19))
NX=$((BASE_PORT + 21)) NXS=$((BASE_PORT + 22)) NX2=$((BASE_PORT + 23))
HOST=bench.local
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init idle-conns
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
  -addext "subjectAltName=DNS:$HOST" -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
cat >"$RUN/tollgate.toml" <<EOF
default_certificate = "$HOST"
[admin]
listen = "127.0.0.1:$TG_ADMIN"
[log]
format = "text"
access_log = false
[limits]
max_connections = 100000
# Longer than any row, so nothing is closed for idleness while it is measured.
idle_timeout_ms = 600000
[[listeners]]
name = "plain"
listen = "127.0.0.1:$TG"
[[listeners]]
name = "tls"
listen = "127.0.0.1:$TGS"
[listeners.tls]
alpn = ["h2", "http/1.1"]
[[certificates]]
cert_file = "cert.pem"
key_file = "key.pem"
[[apps]]
id = "bench"
hostnames = ["$HOST"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "http1"
EOF
mkdir -p "$RUN/nginx-tmp"
cat >"$RUN/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 65536; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx-tmp/body;
    proxy_temp_path $RUN/nginx-tmp/proxy;
    fastcgi_temp_path $RUN/nginx-tmp/fastcgi;
    uwsgi_temp_path $RUN/nginx-tmp/uwsgi;
    scgi_temp_path $RUN/nginx-tmp/scgi;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    http2_idle_timeout 600s;
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NX;
        # nginx 1.22 speaks HTTP/2 without TLS only on a port of its own.
        listen 127.0.0.1:$NX2 http2;
        listen 127.0.0.1:$NXS ssl http2;
        ssl_certificate $RUN/cert.pem;
        ssl_certificate_key $RUN/key.pem;
        location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

taskset -c "$LOAD_CPUS" python3 "$BENCH/idle_conns.py" serve "$UP" >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port $UP
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# The RSS of a process and its children (nginx: master and worker).
tree_rss() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do total=$((total + $(rss "$p"))); done
  echo $total
}

PEERS=(tollgate)
command -v nginx >/dev/null && PEERS+=(nginx)
start_peer() { # peer
  if [[ $1 == tollgate ]]; then
    TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
      "$RUN/tollgate" proxy --config "$RUN/tollgate.toml" >>"$RUN/tollgate.log" 2>&1 &
    PEER_PID=$!; PLAIN=$TG; PLAIN_H2=$TG; SECURE=$TGS
  else
    taskset -c "$PROXY_CPUS" nginx -c "$RUN/nginx.conf" -e "$RUN/nginx-error.log" >>"$RUN/nginx.log" 2>&1 &
    PEER_PID=$!; PLAIN=$NX; PLAIN_H2=$NX2; SECURE=$NXS
  fi
  PIDS+=($PEER_PID)
  wait_port $PLAIN
}
stop_peer() {
  kill -TERM "$PEER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$PEER_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$PEER_PID" 2>/dev/null || true
}
# hold PORT PROTO TLS COUNT: opens and holds; returns once all are open (fd 3 = its stdin).
hold() {
  local tls=()
  [[ $3 == 1 ]] && tls=(--tls)
  coproc HOLD { taskset -c "$LOAD_CPUS" python3 "$BENCH/idle_conns.py" hold --port "$1" --host "$HOST" \
    --proto "$2" "${tls[@]}" --count "$4" --parallel "$PARALLEL"; }
  read -r HELD <&"${HOLD[0]}"
}
release() { eval "exec ${HOLD[1]}>&-"; wait "$HOLD_PID" 2>/dev/null || true; }

RES=$OUT/idle.jsonl
: >"$RES"
for n in $COUNTS; do
  for kind in $KINDS; do
    case $kind in
      h1) proto=h1 tls=0 ;; h2c) proto=h2 tls=0 ;; h1tls) proto=h1 tls=1 ;; h2tls) proto=h2 tls=1 ;;
      *) echo "idle-conns.sh: unknown kind $kind" >&2; exit 1 ;;
    esac
    for peer in "${PEERS[@]}"; do
      start_peer "$peer"
      port=$PLAIN; [[ $kind == h2c ]] && port=$PLAIN_H2; [[ $tls == 1 ]] && port=$SECURE
      # As many connections first as are opened at once, then closed: the upstream
      # keep-alive pool and lazily built state are then in the baseline, not counted
      # against the client connections.
      hold "$port" "$proto" "$tls" "$PARALLEL"; release
      sleep 1
      before=$(tree_rss "$PEER_PID")
      hold "$port" "$proto" "$tls" "$n"
      sleep 1
      after=$(tree_rss "$PEER_PID")
      release
      python3 -c 'import json,sys; h=json.loads(sys.argv[1]); print(json.dumps(dict(peer=sys.argv[2], kind=sys.argv[3], count=int(sys.argv[4]), rss_before_kib=int(sys.argv[5]), rss_after_kib=int(sys.argv[6]), **h)))' \
        "$HELD" "$peer" "$kind" "$n" "$before" "$after" >>"$RES"
      log "$peer $kind x$n: $HELD, RSS $before -> $after KiB"
      stop_peer
    done
  done
done

COMMIT="$(git -C "$ROOT" log -1 --format='%h' 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
python3 - "$RES" "$COMMIT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"tollgate {sys.argv[2]}; one worker each; one request per connection, then idle")
print("per connection = (RSS with the connections open - RSS before) / connections open\n")
print("| connections | kind | peer | open | failed | RSS before (MiB) | RSS open (MiB) | per connection (KiB) |")
print("|---:|---|---|---:|---:|---:|---:|---:|")
for r in rows:
    per = (r["rss_after_kib"] - r["rss_before_kib"]) / max(r["open"], 1)
    print(f"| {r['count']} | {r['kind']} | {r['peer']} | {r['open']} | {r['failed']} | "
          f"{r['rss_before_kib'] / 1024:.1f} | {r['rss_after_kib'] / 1024:.1f} | {per:.1f} |")
EOF
log "results in $OUT"
