#!/usr/bin/env bash
# /metrics at full tenant scale: APPS [10000] apps (one hostname each, one shared
# upstream), one request to each, then the exposition's size in bytes, its series count
# (all, and those of tollgate_http_request*) and the scrape time (median of SCRAPES [5]
# curl fetches), for each binary given: `bench/metrics-size.sh BIN...` (e.g. a build of
# the tree before the bounded labels and one after). No app is marked detailed, so both
# binaries read the same config; DETAILED_ALL=1 marks every app `metrics = "detailed"`
# and raises `limits.max_detailed_metrics_apps` to APPS (the opt-in at its worst; a
# binary with bounded labels only).
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
APPS=${APPS:-10000}
SCRAPES=${SCRAPES:-5}
[[ $# -ge 1 ]] || { echo "usage: bench/metrics-size.sh BIN..." >&2; exit 1; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP-metrics-size
RUN=$(mktemp -d /tmp/tollgate-bench-metrics-size.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  cp "$RUN"/*.log "$OUT"/ 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The upstream: HTTP/1.1 keep-alive, 200 "ok" to everything.
UP=$(free_port)
python3 - "$UP" >"$RUN/upstream.log" 2>&1 <<'EOF' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
PIDS+=($!)

conf() { # port admin_port
  printf '[admin]\nlisten = "127.0.0.1:%s"\n[log]\naccess_log = false\n[[listeners]]\nname = "plain"\nlisten = "127.0.0.1:%s"\n' "$2" "$1"
  [[ ${DETAILED_ALL:-0} == 1 ]] && printf '[limits]\nmax_detailed_metrics_apps = %s\n' "$APPS"
  python3 - "$APPS" "$UP" "${DETAILED_ALL:-0}" <<'EOF'
import sys
apps, up = int(sys.argv[1]), sys.argv[2]
detail = 'metrics = "detailed"\n' if sys.argv[3] == "1" else ""
for i in range(apps):
    print(f'[[apps]]\nid = "app{i}"\n{detail}hostnames = ["app{i}.bench"]\n'
          f'[apps.upstreams.default]\nendpoints = [{{ address = "127.0.0.1:{up}" }}]')
EOF
}

printf 'binary\tapps\tbytes\tseries\trequest_series\tscrape_ms_median\n' | tee "$OUT/summary.txt"
n=0
for bin in "$@"; do
  n=$((n + 1))
  cp "$bin" "$RUN/tollgate$n"
  port=$(free_port) admin=$(free_port)
  conf "$port" "$admin" >"$RUN/tollgate$n.toml"
  RUST_LOG=warn "$RUN/tollgate$n" proxy --config "$RUN/tollgate$n.toml" >"$RUN/tollgate$n.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
  # One request per app over one keep-alive connection.
  python3 - "$port" "$APPS" <<'EOF'
import http.client, sys
port, apps = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
for i in range(apps):
    c.request("GET", "/", headers={"host": f"app{i}.bench"})
    r = c.getresponse(); r.read()
    assert r.status == 200, (i, r.status)
EOF
  curl -sf "http://127.0.0.1:$admin/metrics" >"$OUT/metrics-$n.txt"
  times=$(for _ in $(seq "$SCRAPES"); do curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$admin/metrics"; done)
  median=$(sort -n <<<"$times" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}')
  bytes=$(wc -c <"$OUT/metrics-$n.txt")
  series=$(grep -vc '^#' "$OUT/metrics-$n.txt")
  requests=$(grep -c '^tollgate_http_request' "$OUT/metrics-$n.txt")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$bin" "$APPS" "$bytes" "$series" "$requests" "$median" | tee -a "$OUT/summary.txt"
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
done
echo "results: $OUT" >&2
