#!/usr/bin/env bash
# Time from a resume request to its first replayed message (bench/EXTRA.md): a real
# Connect client (@connectrpc/connect-node, tests/connect/resume.mjs) reads one long
# server stream through two tollgate proxies sharing Redis, cutting its own connection
# CUTS times; each resume goes to the other proxy than the last call, so half are
# served from the proxy's own buffer (local) and half from Redis (shared, the stream
# still running on the other proxy). Reported: p50/p90/max ms per kind, against the
# first message of a fresh call through the proxy, and that the sequence arrived whole.
#
#   client ──TLS──> tollgate A ─┐                ┌─ upstream (rpc-load --serve)
#          ──TLS──> tollgate B ─┴── h2c, gRPC ───┘    (and Redis between A and B)
#
# Environment: CUTS [40] STREAM_MESSAGES [4000] INTERVAL_MS [5] TRANSPORT [connect-proto]
#              REDIS_URL [redis://127.0.0.1:6379] BASE_PORT [18500] SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
CUTS=${CUTS:-40}; STREAM_MESSAGES=${STREAM_MESSAGES:-4000}; INTERVAL_MS=${INTERVAL_MS:-5}
TRANSPORT=${TRANSPORT:-connect-proto}; REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
BASE_PORT=${BASE_PORT:-18500}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in cargo python3 node npm openssl; do
  command -v $t >/dev/null || { echo "resume.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) A=$((BASE_PORT + 11)) B=$((BASE_PORT + 12))
HOST=stream.bench
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init resume

if [[ $SKIP_BUILD != 1 || ! -x $ROOT/target/release/rpc-load ]]; then
  log "building rpc-load (release)"
  CARGO_TARGET_DIR=$ROOT/target cargo build --release -q --manifest-path "$BENCH/rpc-load/Cargo.toml"
fi
cp "$ROOT/target/release/rpc-load" "$RUN/rpc-load"
if [[ ! $ROOT/tests/connect/node_modules/.package-lock.json -nt $ROOT/tests/connect/package-lock.json ]]; then
  (cd "$ROOT" && npm ci --prefix tests/connect --no-audit --no-fund >/dev/null)
fi
"$RUN/rpc-load" --write-descriptor-set "$RUN/descriptor.bin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null

PREFIX="tollgate-bench-resume-$$"
config() { # config PORT ADMIN_PORT
  cat <<EOF
[admin]
listen = "127.0.0.1:$2"
[log]
format = "text"
access_log = false
[resume]
redis_url = "$REDIS_URL"
key_prefix = "$PREFIX"
[[listeners]]
name = "tls"
listen = "127.0.0.1:$1"
[listeners.tls]
alpn = ["h2"]
[[certificates]]
cert_file = "$RUN/cert.pem"
key_file = "$RUN/key.pem"
[[apps]]
id = "stream"
hostnames = ["$HOST"]
resume = { buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "h2c"
[apps.rpc]
descriptor_set = "builtin"
EOF
}
config $A $((A + 5)) >"$RUN/a.toml"
config $B $((B + 5)) >"$RUN/b.toml"
"$RUN/rpc-load" --serve "127.0.0.1:$UP" --threads 1 >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
wait_port $UP
for p in a b; do
  RUST_LOG=${RUST_LOG:-warn} "$RUN/tollgate" proxy --config "$RUN/$p.toml" >"$RUN/tollgate-$p.log" 2>&1 &
  PIDS+=($!)
done
wait_port $A; wait_port $B

# Cuts spread evenly over the stream, not in its first or last tenth.
CUT_LIST=$(python3 -c "import sys; n, c = int(sys.argv[1]), int(sys.argv[2]); \
print(','.join(str(n // 10 + i * (8 * n // 10) // c) for i in range(c)))" "$STREAM_MESSAGES" "$CUTS")
ARGS=$(python3 -c 'import json,sys; print(json.dumps({
  "baseUrls": [f"https://{sys.argv[1]}:{sys.argv[2]}", f"https://{sys.argv[1]}:{sys.argv[3]}"],
  "ca": sys.argv[4], "descriptorSet": sys.argv[5], "transport": sys.argv[6],
  "method": "serverStream", "request": {"count": int(sys.argv[7]), "intervalMs": int(sys.argv[8])},
  "abortAt": [int(x) for x in sys.argv[9].split(",")], "maxResumes": 1000}))' \
  "$HOST" "$A" "$B" "$RUN/cert.pem" "$RUN/descriptor.bin" "$TRANSPORT" "$STREAM_MESSAGES" "$INTERVAL_MS" "$CUT_LIST")
log "one stream of $STREAM_MESSAGES messages every $INTERVAL_MS ms, cut $CUTS times, resumed alternately on B (Redis) and A (own buffer)"
(cd "$ROOT/tests/connect" && node resume.mjs "$ARGS") >"$OUT/client.jsonl"

COMMIT="$(git -C "$ROOT" log -1 --format='%h' 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
python3 - "$OUT/client.jsonl" "$STREAM_MESSAGES" "$COMMIT" "$TRANSPORT" <<'EOF' | tee "$OUT/summary.txt"
import json, statistics, sys
done = next(json.loads(l)["done"] for l in open(sys.argv[1]) if '"done"' in l)
n = int(sys.argv[2])
whole = done["ok"] and done["seqs"] == list(range(n))
t = done["firstMessageMs"]
# Call 0 is fresh (through A); resume k goes to proxy k % 2: B (Redis) when odd, A when even.
shared = [x for i, x in enumerate(t) if i % 2 == 1 and x is not None]
local = [x for i, x in enumerate(t) if i > 0 and i % 2 == 0 and x is not None]
def row(name, xs):
    xs = sorted(xs)
    if not xs:
        return f"| {name} | 0 | - | - | - |"
    p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
    return f"| {name} | {len(xs)} | {statistics.median(xs):.1f} | {p(0.9):.1f} | {xs[-1]:.1f} |"
print(f"tollgate {sys.argv[3]}; {sys.argv[4]} over TLS/HTTP/2; {done['resumes']} resumes; "
      f"sequence 0..{n - 1} received exactly once, in order: {'yes' if whole else 'NO'}")
print("\n| call | n | first message p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|")
print(row("fresh call (to the upstream)", [t[0]] if t and t[0] is not None else []))
print(row("resume, same proxy (own buffer)", local))
print(row("resume, other proxy (Redis)", shared))
EOF
log "results in $OUT"
