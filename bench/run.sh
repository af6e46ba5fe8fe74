#!/usr/bin/env bash
# Tollgate vs nginx vs the bare upstream, same load, one run.
#
# Scenarios (bench/README.md says what each one measures):
#   h1      HTTP/1.1 keep-alive               wrk    -t1 -c$H1_CONNS
#   h2c     HTTP/2 cleartext, prior knowledge h2load -t1 -c$H2_CONNS -m$H2_STREAMS
#   h2tls   HTTP/2 over TLS (ALPN h2)         h2load -t1 -c$H2_CONNS -m$H2_STREAMS
#   tlsnew  new TLS connection per request    wrk    -t1 -c$TLS_CONNS, Connection: close
#           (wrk resumes TLS sessions, as browsers do; both servers allow it)
#   tlsfull full TLS handshake per request    $TLS_CONNS x openssl s_time -new
#           (no resumption: certificate + signature on every connection)
# Each is run against: direct (the upstream itself), tollgate, nginx (reverse proxy).
#
# Topology (all on 127.0.0.1, nothing leaves the machine):
#   load generator ──> tollgate | nginx-proxy ──HTTP/1.1 keep-alive──> upstream nginx
#   load generator ──────────────────────────────────────────────────> upstream nginx (direct)
#
# Environment (defaults in brackets):
#   DURATION [10s]     measured time per target, scenario and round (whole seconds)
#   WARMUP [3]         seconds of identical, discarded load before each measurement
#   ROUNDS [3]         measurements per target and scenario, target order rotated each
#                      round; the tables show the median of the rounds
#   SCENARIOS ["h1 h2c h2tls tlsnew tlsfull"]
#   PROXY_WORKERS [1]  nginx worker_processes and TOKIO_WORKER_THREADS for tollgate
#   PROXY_CPUS [0]     taskset CPU list for both proxies
#   LOAD_CPUS [1]      taskset CPU list for wrk/h2load/s_time
#   UPSTREAM_CPUS [$LOAD_CPUS]  taskset CPU list for the upstream nginx
#   H1_CONNS [64] H2_CONNS [16] H2_STREAMS [16] TLS_CONNS [16]
#   QUIET_PCT [10]     before, during and after each measurement, other processes may
#                      use at most this % of the machine (see machine_busy_pct);
#   QUIET_WAIT [900]   otherwise wait up to this many seconds for quiet, and redo a
#   MAX_ATTEMPTS [3]   measurement that was disturbed (up to MAX_ATTEMPTS in all)
#   BASE_PORT [18000]  ports BASE+1..BASE+29 are used (see "Ports" below)
#   PROFILE [auto]     auto: perf-profile tollgate in scenarios where it trails nginx;
#                      1: profile every scenario; 0: never
#   SKIP_BUILD [0]     1: use the existing target/release/tollgate
#   UPDATE_README [1]  0: leave bench/README.md alone
#   TOLLGATE_PRELOAD   experiments only: LD_PRELOAD for tollgate (e.g. an allocator),
#                      recorded in the results
#   SERVE_ONLY [0]     1: start upstream, tollgate and nginx as configured here, print
#                      the URLs and pids, and wait (for profiling by hand)
#
# Needs: nginx, wrk, h2load, openssl, curl, python3, taskset (bench/setup.sh installs them).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")

DURATION=${DURATION:-10s}
SECS=${DURATION%s}
WARMUP=${WARMUP:-3}
WARMUP=${WARMUP%s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"h1 h2c h2tls tlsnew tlsfull"}
PROXY_WORKERS=${PROXY_WORKERS:-1}
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
UPSTREAM_CPUS=${UPSTREAM_CPUS:-$LOAD_CPUS}
H1_CONNS=${H1_CONNS:-64}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-16}
TLS_CONNS=${TLS_CONNS:-16}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-900}
MAX_ATTEMPTS=${MAX_ATTEMPTS:-3}
BASE_PORT=${BASE_PORT:-18000}
PROFILE=${PROFILE:-auto}
SKIP_BUILD=${SKIP_BUILD:-0}
UPDATE_README=${UPDATE_README:-1}

for tool in nginx wrk h2load openssl curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing; run bench/setup.sh" >&2; exit 1; }
done
for n in "$SECS" "$WARMUP" "$ROUNDS"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "run.sh: DURATION/WARMUP/ROUNDS must be whole numbers" >&2; exit 1; }
done

# Ports. The upstream has a TLS and an h2c port too, only so the "direct" rows of the
# TLS and HTTP/2 scenarios measure the same protocol the proxies are loaded with.
UP_H1=$((BASE_PORT + 1)) UP_H2C=$((BASE_PORT + 2)) UP_TLS=$((BASE_PORT + 3)) UP_STATUS=$((BASE_PORT + 9))
TG_PLAIN=$((BASE_PORT + 11)) TG_TLS=$((BASE_PORT + 13)) TG_ADMIN=$((BASE_PORT + 19))
NX_H1=$((BASE_PORT + 21)) NX_H2C=$((BASE_PORT + 22)) NX_TLS=$((BASE_PORT + 23)) NX_STATUS=$((BASE_PORT + 29))

HOST=bench.local
BODY="hello from the tollgate bench upstream"
CLK_TCK=$(getconf CLK_TCK)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP
RUN=$(mktemp -d /tmp/tollgate-bench.XXXXXX) # configs, certs, pid files, logs of this run
mkdir -p "$OUT"

# ---------------------------------------------------------------- process cleanup
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Give each a moment to drain, then make sure it is gone.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Keep the daemons' logs with the results, then drop the scratch folder.
  cp "$RUN"/*.log "$OUT"/ 2>/dev/null || true
  rm -rf "$RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench] %s\n' "$*" >&2; }

wait_port() { # host:port — until it accepts TCP connections (10 s)
  local hp=$1
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing listening on $hp" >&2
  return 1
}

# ---------------------------------------------------------------- build
if [[ $SKIP_BUILD != 1 ]]; then
  log "building tollgate (release)"
  (cd "$ROOT" && cargo build --release -q -p tollgate)
fi
TOLLGATE=$ROOT/target/release/tollgate
[[ -x $TOLLGATE ]] || { echo "run.sh: $TOLLGATE not built" >&2; exit 1; }
# Copy the binary: others may rebuild target/ while the bench runs.
cp "$TOLLGATE" "$RUN/tollgate"
TOLLGATE=$RUN/tollgate

# ---------------------------------------------------------------- certificate
# One ECDSA P-256 certificate for bench.local, served by tollgate, nginx and the
# upstream's TLS port, so every server does the same signature work per handshake.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null

# ---------------------------------------------------------------- nginx configs
# nginx runs in the foreground (daemon off) from its own prefix in $RUN: no /etc/nginx,
# no system service, pid file and temp paths in the scratch folder. Debian's build has
# absolute default temp paths, hence the *_temp_path lines.
nginx_common() { # $1 = name, $2 = worker count
  cat <<EOF
daemon off;
worker_processes $2;
pid $RUN/$1.pid;
error_log $RUN/$1-error.log warn;
events { worker_connections 16384; }
EOF
}
nginx_http_common() { # $1 = name
  cat <<EOF
    access_log off;
    client_body_temp_path $RUN/$1-tmp/body;
    proxy_temp_path $RUN/$1-tmp/proxy;
    fastcgi_temp_path $RUN/$1-tmp/fastcgi;
    uwsgi_temp_path $RUN/$1-tmp/uwsgi;
    scgi_temp_path $RUN/$1-tmp/scgi;
    # nginx closes a connection after 1000 requests by default (HTTP/1.1 and, since
    # 1.19.7, HTTP/2); tollgate has no such limit, so neither does nginx here.
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    ssl_certificate $RUN/cert.pem;
    ssl_certificate_key $RUN/key.pem;
    # Same versions as tollgate's min_version = "1.2" (nginx 1.22 defaults lack 1.3).
    ssl_protocols TLSv1.2 TLSv1.3;
EOF
}

# The upstream: a fixed 200, as cheap as nginx can answer. One worker, pinned away
# from the proxies.
{
  nginx_common upstream 1
  cat <<EOF
http {
$(nginx_http_common upstream)
    server {
        listen 127.0.0.1:$UP_H1 backlog=4096;
        listen 127.0.0.1:$UP_H2C http2 backlog=4096;
        listen 127.0.0.1:$UP_TLS ssl http2 backlog=4096;
        location / {
            default_type text/plain;
            return 200 "$BODY\n";
        }
    }
    server {
        listen 127.0.0.1:$UP_STATUS;
        location / { stub_status; }
    }
}
EOF
} >"$RUN/upstream.conf"

# The reference proxy, configured to do what tollgate does per request:
#  - HTTP/1.1 keep-alive pool to the upstream (tollgate: hyper pool, 256 idle per host)
#  - Host passed through, x-forwarded-for/-proto/-host set, x-request-id generated and
#    sent both ways, an app-id response header added (tollgate: x-tollgate-app-id)
#  - HTTP/1.1 and h2c prior knowledge on plain ports, h2 + http/1.1 by ALPN on TLS.
#    nginx 1.22 cannot sniff h2c on an HTTP/1.1 port as tollgate does, so it gets a
#    separate h2c port; the load is the same.
#  - TLS session resumption on (nginx default: tickets; tollgate/rustls default:
#    stateful TLS 1.3 tickets and a TLS 1.2 session cache).
{
  nginx_common nginx-proxy "$PROXY_WORKERS"
  cat <<EOF
http {
$(nginx_http_common nginx-proxy)
    upstream bench_upstream {
        server 127.0.0.1:$UP_H1;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 90s;
    }
    server {
        listen 127.0.0.1:$NX_H1 backlog=4096;
        listen 127.0.0.1:$NX_H2C http2 backlog=4096;
        listen 127.0.0.1:$NX_TLS ssl http2 backlog=4096;
        server_name $HOST;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_set_header X-Request-Id \$request_id;
            add_header X-Request-Id \$request_id always;
            add_header X-Tollgate-App-Id bench always;
        }
    }
    server {
        listen 127.0.0.1:$NX_STATUS;
        location / { stub_status; }
    }
}
EOF
} >"$RUN/nginx-proxy.conf"

# ---------------------------------------------------------------- tollgate config
cat >"$RUN/tollgate.toml" <<EOF
# Bench config: one app on bench.local, one upstream over HTTP/1.1 keep-alive.
default_certificate = "$HOST"

[admin]
listen = "127.0.0.1:$TG_ADMIN"

[log]
format = "text"
# Off for the bench, like nginx's access_log off: both measure proxying, not logging.
access_log = false

[[listeners]]
name = "plain"
listen = "127.0.0.1:$TG_PLAIN"

[[listeners]]
name = "tls"
listen = "127.0.0.1:$TG_TLS"
[listeners.tls]
min_version = "1.2"
alpn = ["h2", "http/1.1"]

[[certificates]]
cert_file = "cert.pem"
key_file = "key.pem"

[[apps]]
id = "bench"
hostnames = ["$HOST"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP_H1" }]
protocol = "http1"
balance = { policy = "round_robin" }
EOF

# ---------------------------------------------------------------- start everything
mkdir -p "$RUN/upstream-tmp" "$RUN/nginx-proxy-tmp"
log "starting upstream nginx (CPU $UPSTREAM_CPUS)"
taskset -c "$UPSTREAM_CPUS" nginx -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
log "starting nginx proxy, $PROXY_WORKERS worker(s) (CPU $PROXY_CPUS)"
taskset -c "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx-proxy.conf" >"$RUN/nginx-proxy.log" 2>&1 &
NX_PID=$!
PIDS+=("$NX_PID")
log "starting tollgate, TOKIO_WORKER_THREADS=$PROXY_WORKERS (CPU $PROXY_CPUS)"
# TOLLGATE_PRELOAD (experiments only, e.g. another malloc): LD_PRELOAD for tollgate.
TOKIO_WORKER_THREADS=$PROXY_WORKERS RUST_LOG=${RUST_LOG:-warn} LD_PRELOAD=${TOLLGATE_PRELOAD:-} taskset -c "$PROXY_CPUS" \
  "$TOLLGATE" proxy --config "$RUN/tollgate.toml" --ready-file "$RUN/ready.json" >"$RUN/tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")

for _ in $(seq 100); do [[ -s $RUN/ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/ready.json ]] || { echo "run.sh: tollgate did not get ready; see its log:" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
for p in $UP_H1 $UP_H2C $UP_TLS $UP_STATUS $NX_H1 $NX_H2C $NX_TLS $NX_STATUS; do wait_port "127.0.0.1:$p"; done

# ---------------------------------------------------------------- targets
# URLs per scenario and target. The load always names bench.local (Host / :authority);
# connections go to 127.0.0.1, so TLS clients send no usable SNI and every server
# answers with its default (the only) certificate.
declare -A URL=(
  [h1.direct]=http://127.0.0.1:$UP_H1/ [h1.tollgate]=http://127.0.0.1:$TG_PLAIN/ [h1.nginx]=http://127.0.0.1:$NX_H1/
  [h2c.direct]=http://127.0.0.1:$UP_H2C/ [h2c.tollgate]=http://127.0.0.1:$TG_PLAIN/ [h2c.nginx]=http://127.0.0.1:$NX_H2C/
  [h2tls.direct]=https://127.0.0.1:$UP_TLS/ [h2tls.tollgate]=https://127.0.0.1:$TG_TLS/ [h2tls.nginx]=https://127.0.0.1:$NX_TLS/
  [tlsnew.direct]=https://127.0.0.1:$UP_TLS/ [tlsnew.tollgate]=https://127.0.0.1:$TG_TLS/ [tlsnew.nginx]=https://127.0.0.1:$NX_TLS/
  [tlsfull.direct]=https://127.0.0.1:$UP_TLS/ [tlsfull.tollgate]=https://127.0.0.1:$TG_TLS/ [tlsfull.nginx]=https://127.0.0.1:$NX_TLS/
)

# Sanity check before measuring: every target answers 200 with the upstream's body
# over the protocol the scenario uses.
check() { # scenario target
  local url=${URL[$1.$2]} opts=(-sS -o "$RUN/check.body" -w '%{http_code} %{http_version}' -H "Host: $HOST" --max-time 5)
  case $1 in
    h1) opts+=(--http1.1) ;;
    h2c) opts+=(--http2-prior-knowledge) ;;
    h2tls) opts+=(-k --http2) ;;
    tlsnew | tlsfull) opts+=(-k --http1.1 -H 'Connection: close') ;;
  esac
  local got
  got=$(curl "${opts[@]}" "$url") || { echo "run.sh: $1/$2: $url unreachable" >&2; return 1; }
  if [[ $got != "200 "* ]] || ! grep -qx "$BODY" "$RUN/check.body"; then
    echo "run.sh: $1/$2: $url answered '$got' $(head -c 200 "$RUN/check.body")" >&2
    return 1
  fi
}
for s in $SCENARIOS; do for t in direct tollgate nginx; do check "$s" "$t"; done; done

if [[ ${SERVE_ONLY:-0} == 1 ]]; then
  # Manual profiling aid: the same setup, left running until Ctrl-C.
  log "serving until interrupted; pids: tollgate $TG_PID, nginx proxy master $NX_PID, upstream master $UP_PID"
  for k in "${!URL[@]}"; do echo "$k ${URL[$k]}"; done | sort >&2
  log "tollgate admin: http://127.0.0.1:$TG_ADMIN/metrics; load e.g.: taskset -c $LOAD_CPUS wrk -t1 -c$H1_CONNS -d10s -H 'Host: $HOST' ${URL[h1.tollgate]}"
  # `wait` on a background sleep, so a TERM reaches the cleanup trap at once.
  while :; do sleep 3600 & wait $!; done
fi

# New-connection counters, read before and after each TLS-per-request measurement to
# prove every request really opened a TLS connection: tollgate's handshake metric, and
# the "accepts" of nginx's stub_status (our own status request is subtracted).
conn_counter() { # target
  case $1 in
    tollgate)
      curl -sS "http://127.0.0.1:$TG_ADMIN/metrics" |
        awk '/^tollgate_tls_handshakes_total\{/ && /listener="tls"/ && /result="ok"/ {print $NF; f=1} END {if (!f) print 0}' ;;
    nginx) curl -sS "http://127.0.0.1:$NX_STATUS/" | awk 'NR==3 {print $1}' ;;
    direct) curl -sS "http://127.0.0.1:$UP_STATUS/" | awk 'NR==3 {print $1}' ;;
  esac
}

# CPU time (clock ticks) used so far by the server processes behind a target: the
# tollgate process (all threads), or an nginx master and its workers.
server_ticks() { # target
  local pids
  case $1 in
    tollgate) pids=$TG_PID ;;
    nginx) pids="$NX_PID $(pgrep -P "$NX_PID" | tr '\n' ' ')" ;;
    direct) pids="$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')" ;;
  esac
  local total=0 p
  for p in $pids; do
    # Fields 14 and 15 of /proc/PID/stat (utime, stime); the command name in field 2
    # has no spaces for these processes.
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# User+system ticks of the whole machine, and of every process of this bench that
# runs between measurements (the three servers). With the load generator's ticks,
# the rest of the machine's ticks during a measurement are other people's.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4}' /proc/stat; }
bench_ticks() { echo $(($(server_ticks direct) + $(server_ticks tollgate) + $(server_ticks nginx))); }

# Share of the whole machine busy over one second, in percent. Called while the bench
# itself is idle (between measurements), so it is other people's load: a build on a
# 2-core machine skews the comparison more than anything in the configs.
machine_busy_pct() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

# Waits until other processes leave the machine quiet; sets QUIET_BUSY to the last
# busy share. Runs in this shell (not in $(...)) and sleeps with `wait`, so Ctrl-C or
# TERM reaches the cleanup trap at once.
wait_quiet() {
  local waited=0
  QUIET_BUSY=$(machine_busy_pct)
  while ((QUIET_BUSY > QUIET_PCT && waited < QUIET_WAIT)); do
    ((waited % 30 == 0)) && log "  machine ${QUIET_BUSY}% busy with other processes; waiting for quiet (${waited}s of ${QUIET_WAIT}s)"
    sleep 4 &
    wait $!
    waited=$((waited + 5))
    QUIET_BUSY=$(machine_busy_pct)
  done
  if ((QUIET_BUSY > QUIET_PCT)); then
    log "  still ${QUIET_BUSY}% busy after ${QUIET_WAIT}s; measuring anyway (row flagged)"
  fi
}

# CPU ticks used by the finished children of the calling (sub)shell: `times` prints
# the shell's own and its children's user and system time, as 0m1.230s.
# `times` must run in this shell, not in a pipeline's subshell, hence the file.
children_ticks() { # file to write the ticks to
  times >"$1.raw"
  awk -v hz="$CLK_TCK" 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
    printf "%d\n", t * hz }' "$1.raw" >"$1"
  rm -f "$1.raw"
}

# ---------------------------------------------------------------- load
# One load command, run twice per measurement: warm-up (discarded) and measurement.
# Prints "rps p50_us p99_us mean_us errors" on stdout (p50/p99 -1 when the tool has
# no distribution); raw tool output goes to $4.
load() { # scenario target seconds rawfile
  local s=$1 t=$2 secs=$3 raw=$4 url=${URL[$1.$2]}
  local lc=(taskset -c "$LOAD_CPUS")
  case $s in
    h1 | tlsnew)
      local extra=() conns=$H1_CONNS
      if [[ $s == tlsnew ]]; then extra=(-H 'Connection: close'); conns=$TLS_CONNS; fi
      "${lc[@]}" wrk -t1 -c"$conns" -d"${secs}s" --latency --timeout 5s -H "Host: $HOST" "${extra[@]}" \
        -s "$BENCH/wrk-report.lua" "$url" >"$raw" 2>&1 || true
      children_ticks "$raw.ticks"
      awk '/^BENCH / {
             for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
             printf "%.1f %d %d %d %d\n", v["requests"] / (v["duration_us"] / 1e6), v["p50_us"], v["p99_us"], v["mean_us"], v["sockerr"] + v["non2xx"]
             found = 1 }
           END { if (!found) print "0 0 0 0 -1" }' "$raw"
      ;;
    h2c | h2tls)
      "${lc[@]}" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$secs" -H ":authority: $HOST" \
        --log-file="$raw.lat" "$url" >"$raw" 2>&1 || true
      children_ticks "$raw.ticks"
      local rps errors pct
      rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$raw")
      # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
      # ("failed" already includes the errored and timed-out ones)
      errors=$(awk '/^requests:/ {print $10; f=1} END {if (!f) print -1}' "$raw")
      # Non-2xx answers count as errors too.
      errors=$((errors + $(awk '/^status codes:/ {print $5 + $7 + $9; f=1} END {if (!f) print 0}' "$raw")))
      pct=$(python3 "$BENCH/report.py" percentiles "$raw.lat")
      gzip -f "$raw.lat"
      echo "${rps:-0} $pct $errors"
      ;;
    tlsfull)
      # openssl s_time -new opens a fresh connection with a full handshake (it never
      # offers a session), sends the -www request, reads to EOF and starts over. Its
      # -www argument is spliced into "GET %s HTTP/1.0\r\n\r\n"; the CRLFs below turn
      # that into a proper HTTP/1.1 request for bench.local ("X-Pad: HTTP/1.0").
      # TLS_CONNS processes give the concurrency; s_time has no latency distribution,
      # so only the mean is reported (concurrency x time / connections).
      local req=$'/ HTTP/1.1\r\nHost: '"$HOST"$'\r\nConnection: close\r\nX-Pad:'
      local hp=${url#https://} i pids=() t0 t1
      hp=${hp%/}
      t0=$(date +%s.%N)
      for i in $(seq "$TLS_CONNS"); do
        # No CA store: s_time would otherwise search the system store on every connection.
        "${lc[@]}" openssl s_time -connect "$hp" -new -time "$secs" -no-CAfile -no-CApath -no-CAstore \
          -www "$req" >"$raw.$i" 2>&1 &
        pids+=($!)
      done
      local failed=0
      for i in "${pids[@]}"; do wait "$i" || failed=$((failed + 1)); done
      t1=$(date +%s.%N)
      children_ticks "$raw.ticks"
      # "N connections in T real seconds, B bytes read per connection"
      cat "$raw".* | grep -v '^\*' >"$raw"
      rm -f "$raw".*
      # A process that failed, or whose connections read no response, counts as an error.
      awk -v c="$TLS_CONNS" -v t0="$t0" -v t1="$t1" -v failed="$failed" '
        / connections in .* real seconds/ { n += $1; if ($(NF - 4) + 0 == 0) failed++ }
        END { wall = t1 - t0; if (n == 0 || wall <= 0) { print "0 -1 -1 0 -1"; exit }
              printf "%.1f -1 -1 %d %d\n", n / wall, 1e6 * c * wall / n, failed }' "$raw"
      ;;
  esac
}

perf_works() { command -v perf >/dev/null && perf record -q -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; }

# Profiles tollgate under the same load as the measurement. perf samples the running
# process by CPU clock (hardware counters are often missing in VMs; cpu-clock is
# not); without perf, callgrind runs a separate, short tollgate under valgrind.
profile_tollgate() { # scenario
  local s=$1 base=$OUT/profile-$1
  if perf_works; then
    log "  profiling tollgate with perf during $s"
    perf record -q -F 999 -g -e cpu-clock -p "$TG_PID" -o "$base.perf.data" -- sleep "$SECS" 2>"$base.perf.log" &
    local perf_pid=$!
    load "$s" tollgate "$SECS" "$base.load.txt" >/dev/null
    wait "$perf_pid" || true
    local rep=(perf report -i "$base.perf.data" --stdio --no-children -g none)
    "${rep[@]}" --sort dso -F overhead,dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 >"$base.dso.txt" || true
    "${rep[@]}" --sort dso,sym -F overhead,dso,sym --percent-limit 0.3 2>/dev/null |
      grep -v '^#' | grep -v '^$' | sed 's/ *$//' | cut -c1-220 | sort -rn | head -80 >"$base.symbols.txt" || true
    PROFILES+=("profile-$s.symbols.txt")
  elif command -v valgrind >/dev/null; then
    log "  profiling tollgate with callgrind during $s (slow: short run)"
    local shift=100
    # A second tollgate under callgrind on shifted ports, so the measured one is untouched.
    sed -e "s/127.0.0.1:$TG_PLAIN/127.0.0.1:$((TG_PLAIN + shift))/" \
      -e "s/127.0.0.1:$TG_TLS/127.0.0.1:$((TG_TLS + shift))/" \
      -e "s/127.0.0.1:$TG_ADMIN/127.0.0.1:$((TG_ADMIN + shift))/" "$RUN/tollgate.toml" >"$RUN/tollgate-cg.toml"
    TOKIO_WORKER_THREADS=$PROXY_WORKERS RUST_LOG=warn taskset -c "$PROXY_CPUS" valgrind --tool=callgrind \
      --callgrind-out-file="$base.callgrind.out" "$TOLLGATE" proxy --config "$RUN/tollgate-cg.toml" >"$base.callgrind.log" 2>&1 &
    local cg=$!
    PIDS+=("$cg")
    wait_port "127.0.0.1:$((TG_PLAIN + shift))"
    local saved=${URL[$s.tollgate]}
    URL[$s.tollgate]=${saved/:$TG_PLAIN\//:$((TG_PLAIN + shift))\/}
    URL[$s.tollgate]=${URL[$s.tollgate]/:$TG_TLS\//:$((TG_TLS + shift))\/}
    load "$s" tollgate 5 "$base.load.txt" >/dev/null
    URL[$s.tollgate]=$saved
    kill -TERM "$cg" 2>/dev/null || true
    wait "$cg" 2>/dev/null || true
    callgrind_annotate "$base.callgrind.out" 2>/dev/null | head -60 >"$base.symbols.txt" || true
    PROFILES+=("profile-$s.symbols.txt")
  else
    log "  no perf or valgrind: not profiling"
  fi
}

# One measurement: quiet gate, warm-up, measure, counters; redone (twice at most)
# when other processes were busy during or right after it (MAX_ATTEMPTS in all). Appends to rounds.tsv.
measure() { # scenario target round
  local s=$1 t=$2 r=$3 attempt busy_before busy_after raw="$OUT/$1-$2-r$3.txt"
  for attempt in $(seq "$MAX_ATTEMPTS"); do
    wait_quiet
    busy_before=$QUIET_BUSY
    log "$s / $t (round $r): warm-up ${WARMUP}s, measure ${SECS}s"
    ((WARMUP > 0)) && load "$s" "$t" "$WARMUP" "$OUT/warmup.txt" >/dev/null
    local before=0 ticks0 ticks1 conns=-
    [[ $s == tlsnew || $s == tlsfull ]] && before=$(conn_counter "$t")
    ticks0=$(server_ticks "$t")
    local w0 w1 wall m0 m1 b0 b1 during
    m0=$(machine_ticks) b0=$(bench_ticks)
    w0=$(date +%s.%N)
    read -r rps p50 p99 mean errors < <(load "$s" "$t" "$SECS" "$raw")
    w1=$(date +%s.%N)
    m1=$(machine_ticks) b1=$(bench_ticks)
    ticks1=$(server_ticks "$t")
    # Counters and CPU are per second of wall time around the load command (s_time
    # overruns its -time by up to a second; wrk's start-up is in the noise).
    wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')
    if [[ $s == tlsnew || $s == tlsfull ]]; then
      local after delta
      after=$(conn_counter "$t")
      delta=$((after - before))
      [[ $t != tollgate ]] && delta=$((delta - 1)) # our own stub_status request
      conns=$(awk -v d="$delta" -v s="$wall" 'BEGIN {printf "%.1f", d / s}')
    fi
    local cpu
    cpu=$(awk -v d="$((ticks1 - ticks0))" -v hz="$CLK_TCK" -v s="$wall" 'BEGIN {printf "%.0f", 100 * d / hz / s}')
    # Other processes' share of the machine during the measurement.
    during=$(awk -v m="$((m1 - m0))" -v b="$((b1 - b0))" -v l="$(cat "$raw.ticks" 2>/dev/null || echo 0)" \
      -v hz="$CLK_TCK" -v s="$wall" -v n="$(nproc)" 'BEGIN { o = m - b - l; if (o < 0) o = 0; printf "%d", 100 * o / hz / s / n }')
    rm -f "$raw.ticks"
    busy_after=$(machine_busy_pct)
    local busy=$busy_before
    ((during > busy)) && busy=$during
    ((busy_after > busy)) && busy=$busy_after
    log "  $rps req/s, p50 ${p50}us, p99 ${p99}us, errors $errors, server CPU ${cpu}%, new TLS conns/s $conns, other load ${busy_before}/${during}/${busy_after}% (before/during/after)"
    if (((during > QUIET_PCT || busy_after > QUIET_PCT) && attempt < MAX_ATTEMPTS)); then
      log "  other processes got busy during the measurement; measuring again"
      continue
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$t" "$r" "$rps" "$p50" "$p99" "$mean" "$errors" "$conns" "$cpu" "$busy" >>"$OUT/rounds.tsv"
    LAST_RPS=$rps LAST_P99=$p99
    return 0
  done
}

# ---------------------------------------------------------------- run
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- proxy routing certs proto filters Cargo.lock 2>/dev/null) ]] && commit+=" (with uncommitted changes)"
cat >"$OUT/meta.env" <<EOF
stamp=$STAMP
date=$(date -u '+%Y-%m-%d %H:%M UTC')
nproc=$(nproc)
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
kernel=$(uname -r)
commit=$commit
nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')
wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')
h2load=$(h2load --version 2>&1 | head -1)
openssl=$(openssl version | awk '{print $1, $2}')
proxy_cpus=$PROXY_CPUS
load_cpus=$LOAD_CPUS
upstream_cpus=$UPSTREAM_CPUS
workers=$PROXY_WORKERS
tollgate_preload=${TOLLGATE_PRELOAD:-}
duration=$SECS
warmup=$WARMUP
rounds=$ROUNDS
quiet_pct=$QUIET_PCT
body_bytes=$((${#BODY} + 1))
h1_conns=$H1_CONNS
h2_conns=$H2_CONNS
h2_streams=$H2_STREAMS
tls_conns=$TLS_CONNS
EOF

log "pinning: proxies CPU $PROXY_CPUS, load generator CPU $LOAD_CPUS, upstream CPU $UPSTREAM_CPUS; $PROXY_WORKERS worker(s) per proxy"
log "results: $OUT"
printf 'scenario\ttarget\tround\trps\tp50_us\tp99_us\tmean_us\terrors\tnew_conns_per_s\tserver_cpu_pct\tother_load_pct\n' >"$OUT/rounds.tsv"
PROFILES=()
targets=(direct tollgate nginx)
for s in $SCENARIOS; do
  declare -A rps_sum=() p99_sum=()
  for r in $(seq "$ROUNDS"); do
    # Rotate the order each round so no target always runs first or right after another.
    for i in 0 1 2; do
      t=${targets[$(((i + r - 1) % 3))]}
      measure "$s" "$t" "$r"
      rps_sum[$t]=$(awk -v a="${rps_sum[$t]:-0}" -v b="$LAST_RPS" 'BEGIN {print a + b}')
      p99_sum[$t]=$(awk -v a="${p99_sum[$t]:-0}" -v b="$LAST_P99" 'BEGIN {print a + b}')
    done
  done
  # Profile when tollgate trails nginx on mean throughput or p99 (p99 only where the
  # tool reports one).
  behind=$(awk -v tr="${rps_sum[tollgate]}" -v nr="${rps_sum[nginx]}" -v tp="${p99_sum[tollgate]}" -v np="${p99_sum[nginx]}" \
    'BEGIN { print (tr < nr || (tp > 0 && tp > np)) ? 1 : 0 }')
  if [[ $PROFILE == 1 || ($PROFILE == auto && $behind == 1) ]]; then
    profile_tollgate "$s"
  fi
  unset rps_sum p99_sum
done
rm -f "$OUT/warmup.txt" "$OUT/warmup.txt.lat.gz"
echo "profiles=${PROFILES[*]}" >>"$OUT/meta.env"

python3 "$BENCH/report.py" summary "$OUT" >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
echo
if [[ $UPDATE_README == 1 ]]; then
  python3 "$BENCH/report.py" readme "$BENCH/README.md" "$OUT/summary.md"
  log "updated the Latest figures section of bench/README.md"
fi
log "raw results: $OUT"
