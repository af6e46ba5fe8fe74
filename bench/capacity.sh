#!/usr/bin/env bash
# Long streams held at once by one tollgate (bench/EXTRA.md, deploy/README.md sizing):
# STREAMS concurrent server streams, each MESSAGES messages INTERVAL_MS apart, from
# rpc-load through tollgate (one worker, pinned) to the tonic TestService upstream, and
# the same straight to the upstream for reference. Reported per stream count and
# protocol: the proxy's RSS with the streams open minus its idle RSS (per stream), its
# CPU per message, and the time from a stream's request to its first message
# (p50/p99/max over every stream, all opened at once) through the proxy vs direct.
#
#   rpc-load ──h2c, CONNECTIONS connections──> tollgate ──h2c──> upstream (rpc-load --serve)
#
# Environment: STREAMS ["1000 10000"] MESSAGES [40] INTERVAL_MS [1000] CONNECTIONS [20]
#              TARGETS ["grpc-direct connect-proto grpc-web"] PAYLOAD [64]
#              PROXY_CPUS [0] LOAD_CPUS [1] UPSTREAM_CPUS [1] BASE_PORT [18700] SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
STREAMS=${STREAMS:-1000 10000}; MESSAGES=${MESSAGES:-40}; INTERVAL_MS=${INTERVAL_MS:-1000}
CONNECTIONS=${CONNECTIONS:-20}; TARGETS=${TARGETS:-grpc-direct connect-proto grpc-web}
PAYLOAD=${PAYLOAD:-64}; PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}
UPSTREAM_CPUS=${UPSTREAM_CPUS:-1}; BASE_PORT=${BASE_PORT:-18700}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in cargo python3 taskset; do
  command -v $t >/dev/null || { echo "capacity.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) TG=$((BASE_PORT + 11)) TG_ADMIN=$((BASE_PORT + 19))
HOST=rpc.bench
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init capacity
if [[ $SKIP_BUILD != 1 || ! -x $ROOT/target/release/rpc-load ]]; then
  log "building rpc-load (release)"
  CARGO_TARGET_DIR=$ROOT/target cargo build --release -q --manifest-path "$BENCH/rpc-load/Cargo.toml"
fi
cp "$ROOT/target/release/rpc-load" "$RUN/rpc-load"
# Enough descriptors for every stream's connections on all three processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cat >"$RUN/tollgate.toml" <<EOF
[admin]
listen = "127.0.0.1:$TG_ADMIN"
[log]
format = "text"
access_log = false
[limits]
max_connections = 100000
[[listeners]]
name = "plain"
listen = "127.0.0.1:$TG"
[[apps]]
id = "rpc"
hostnames = ["$HOST"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "h2c"
[apps.rpc]
descriptor_set = "builtin"
EOF
taskset -c "$UPSTREAM_CPUS" "$RUN/rpc-load" --serve "127.0.0.1:$UP" --threads 1 >"$RUN/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=($UP_PID)
wait_port $UP
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# A fresh proxy per run, so its idle RSS is a clean baseline.
start_proxy() {
  TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
    "$RUN/tollgate" proxy --config "$RUN/tollgate.toml" >>"$RUN/tollgate.log" 2>&1 &
  TG_PID=$!; PIDS+=($TG_PID)
  wait_port $TG
}
stop_proxy() {
  kill -TERM "$TG_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$TG_PID" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$TG_PID" 2>/dev/null || true
}

RES=$OUT/capacity.jsonl
: >"$RES"
# Every stream lives MESSAGES x INTERVAL_MS; the window sits inside the first streams'
# lifetime (after a warm-up that lets them all open), so all of them are open in it.
LIFE=$(( MESSAGES * INTERVAL_MS / 1000 ))
WARM=$(( LIFE / 4 )); WINDOW=$(( LIFE / 2 ))
for n in $STREAMS; do
  for t in $TARGETS; do
    proto=$t; where=(--url "http://$HOST:$TG" --connect "127.0.0.1:$TG")
    if [[ $t == grpc-direct ]]; then proto=grpc; where=(--url "http://127.0.0.1:$UP"); fi
    start_proxy
    idle=$(rss $TG_PID)
    line=$(taskset -c "$LOAD_CPUS" "$RUN/rpc-load" "${where[@]}" --protocol "$proto" \
      --concurrency "$n" --connections "$CONNECTIONS" --stream-messages "$MESSAGES" \
      --interval-ms "$INTERVAL_MS" --payload-bytes "$PAYLOAD" --duration "$WINDOW" --warmup "$WARM" \
      --drain $(( LIFE * 2 )) --cpu "proxy=$TG_PID" --cpu "upstream=$UP_PID")
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(target=sys.argv[2], streams_open=int(sys.argv[3]), proxy_idle_rss_kib=int(sys.argv[4])); print(json.dumps(r))' \
      "$line" "$t" "$n" "$idle" >>"$RES"
    log "$n streams, $t: $line"
    stop_proxy
  done
done

COMMIT="$(git -C "$ROOT" log -1 --format='%h' 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
python3 - "$RES" "$COMMIT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r0 = rows[0]
print(f"tollgate {sys.argv[2]}; one proxy worker; streams of {r0['payload_bytes']} B messages; "
      f"{r0['connections']} client connections; window {r0['seconds']:.0f} s with every stream open")
print("per stream = (RSS with the streams open - the fresh proxy's idle RSS) / streams")
print("\n| streams | target | msgs/s | errors | proxy RSS with streams (MiB) | per stream (KiB) | proxy CPU µs per message | first message p50 / p99 / max ms |")
print("|---:|---|---:|---:|---:|---:|---:|---|")
for r in rows:
    direct = r["target"] == "grpc-direct"
    f = r.get("first_message_ms") or {}
    first = f"{f.get('p50', 0):.1f} / {f.get('p99', 0):.1f} / {f.get('max', 0):.1f}" if f else "-"
    if direct:
        rss = per = cpu = "-"
    else:
        now = r["rss_kib"].get("proxy", 0)
        rss = f"{now / 1024:.1f}"
        per = f"{(now - r['proxy_idle_rss_kib']) / r['streams_open']:.1f}"
        cpu = f"{1e6 * r['cpu_s']['proxy'] / max(r['messages'], 1):.2f}"
    print(f"| {r['streams_open']} | {r['target']} | {r['msgs_per_s']:.0f} | {r['errors'] + r['cancelled_streams']} | {rss} | {per} | {cpu} | {first} |")
EOF
log "results in $OUT"
