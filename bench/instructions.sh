#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: tollgate against an
# nginx proxy doing the same work (the same upstream, the same forwarding headers), and
# optionally against a second tollgate binary (COMPARE_BIN, e.g. a build of an earlier
# commit). Counts do not depend on what else the machine is doing, so this is the figure
# to check a change against on a busy shared machine; requests per CPU-second from
# bench/run.sh is the figure that includes the kernel, cache misses and syscalls.
#
#   h2load (h1: -c8; h2c: -c4 -m8) ──> proxy under callgrind ──HTTP/1.1 keep-alive──> nginx
# Each proxy takes WARM requests, its counters are zeroed (callgrind_control -z), then N
# requests are counted (callgrind_control -d). Reported: instructions per request, and
# the ratios. One worker each: TOKIO_WORKER_THREADS=1, nginx master_process off.
#
# Environment: N [3000] WARM [400] MODES ["h1 h2c"] COMPARE_BIN [] BASE_PORT [18300]
#              SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
N=${N:-3000}; WARM=${WARM:-400}; MODES=${MODES:-"h1 h2c"}; COMPARE_BIN=${COMPARE_BIN:-}
BASE_PORT=${BASE_PORT:-18300}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in nginx h2load valgrind callgrind_control; do
  command -v $t >/dev/null || { echo "instructions.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) PX=$((BASE_PORT + 2)) ADMIN=$((BASE_PORT + 3))
HOST=bench.local
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init instructions

write_upstream_conf
nginx -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"

cat >"$RUN/tollgate.toml" <<TOML
[admin]
listen = "127.0.0.1:$ADMIN"
[log]
format = "text"
access_log = false
[[listeners]]
name = "plain"
listen = "127.0.0.1:$PX"
[[apps]]
id = "bench"
hostnames = ["$HOST"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "http1"
balance = { policy = "round_robin" }
TOML

# The same work per request as tollgate: Host kept, X-Forwarded-*, a request id both
# ways, an app-id response header; HTTP/1.1 and h2c (nginx needs a port of its own for
# prior-knowledge h2c, so the mode picks the listen line).
nginx_proxy_conf() { # $1 = mode
  local listen="listen 127.0.0.1:$PX"
  [[ $1 == h2c ]] && listen="$listen http2"
  mkdir -p "$RUN/px-tmp"
  cat >"$RUN/nginx-proxy.conf" <<CONF
daemon off;
master_process off;
pid $RUN/nginx-proxy.pid;
error_log $RUN/nginx-proxy-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $RUN/px-tmp/body;
    proxy_temp_path $RUN/px-tmp/proxy;
    fastcgi_temp_path $RUN/px-tmp/fastcgi;
    uwsgi_temp_path $RUN/px-tmp/uwsgi;
    scgi_temp_path $RUN/px-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream bench_upstream {
        server 127.0.0.1:$UP;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        $listen;
        server_name $HOST;
        location / {
            include $BENCH/nginx-proxy-location.conf;
        }
    }
}
CONF
}

load() { # mode requests
  local common=(-n "$2" -t 1 --connect-to="127.0.0.1:$PX" "http://$HOST:$PX/")
  if [[ $1 == h1 ]]; then h2load --h1 -c 8 "${common[@]}"; else h2load -c 4 -m 8 "${common[@]}"; fi
}

# count NAME MODE CMD...: starts CMD under callgrind, prints instructions per request.
count() {
  local name=$1 mode=$2; shift 2
  local out="$RUN/$name-$mode.cg"
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$@" >"$RUN/$name-$mode.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$PX) 2>/dev/null && break; sleep 0.1; done
  load "$mode" "$WARM" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  load "$mode" "$N" >"$OUT/$name-$mode.h2load.txt"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local ok
  ok=$(grep -o '[0-9]* succeeded' "$OUT/$name-$mode.h2load.txt" | head -1 | cut -d' ' -f1)
  [[ $ok == "$N" ]] || { log "$name $mode: only $ok of $N requests succeeded"; exit 1; }
  # The dump made by -d is the newest part file; its totals are the N requests.
  local part total
  part=$(ls -t "$out".* | head -1)
  total=$(awk '/^(summary|totals):/ {print $2; exit}' "$part")
  # Kept for `callgrind_annotate --inclusive=yes <file>`: where the instructions go.
  cp "$part" "$OUT/$name-$mode.callgrind"
  echo $((total / N))
}

cp "$ROOT/target/release/tollgate" "$RUN/tollgate"
[[ -z $COMPARE_BIN ]] || cp "$COMPARE_BIN" "$RUN/compare"
{
  echo "| mode | tollgate instr/req | nginx instr/req | tollgate/nginx |$([[ -n $COMPARE_BIN ]] && echo ' compare instr/req | tollgate/compare |')"
  echo "|---|---:|---:|---:|$([[ -n $COMPARE_BIN ]] && echo '---:|---:|')"
  for mode in $MODES; do
    tg=$(count tollgate "$mode" "$RUN/tollgate" proxy --config "$RUN/tollgate.toml")
    nginx_proxy_conf "$mode"
    nx=$(count nginx "$mode" nginx -p "$RUN" -c "$RUN/nginx-proxy.conf")
    row="| $mode | $tg | $nx | $(awk -v a="$tg" -v b="$nx" 'BEGIN {printf "%.2f", a / b}') |"
    if [[ -n $COMPARE_BIN ]]; then
      cmp=$(count compare "$mode" "$RUN/compare" proxy --config "$RUN/tollgate.toml")
      row="$row $cmp | $(awk -v a="$tg" -v b="$cmp" 'BEGIN {printf "%.3f", a / b}') |"
    fi
    echo "$row"
  done
} | tee "$OUT/summary.md"
