#!/usr/bin/env bash
# Streaming throughput of gRPC-Web and Connect through tollgate, as ratios to gRPC
# straight to the upstream, measured interleaved in one run (bench/EXTRA.md).
#
#   rpc-load ──h2c──────────────────────────────────────────────> upstream   grpc-direct
#   rpc-load ──h2c (or TLS)──> tollgate ──h2c, gRPC──> upstream               grpc-proxy
#                              (translates)                                   grpc-web, connect-proto, connect-json
# The upstream is the tonic tollgate.test.v1.TestService (`rpc-load --serve`); every
# stream is one ServerStream call of STREAM_MESSAGES messages of one payload size.
# rpc-load (bench/rpc-load, its own cargo project) speaks the wire protocols itself over
# one HTTP/2 connection with CONCURRENCY streams, and counts messages and bytes from the
# envelopes; bytes are what the client received (JSON carries the payload as base64).
#
# PEERS (h2c only: not with CLIENT_TLS=1) puts other proxies in tollgate's place, with one
# worker on PROXY_CPUS (bench/connect-peers.sh): grpc-nginx, grpc-haproxy and grpc-envoy
# pass gRPC through; grpc-web-envoy and connect-proto-envoy translate with Envoy's grpc_web
# and connect_grpc_bridge filters. The summary then compares messages per proxy CPU-second.
#
# BASELINE_BIN (h2c only) runs a second tollgate binary beside the first, on the same CPU with
# the same config, as grpc-proxy-base, grpc-web-base, connect-proto-base and connect-json-base;
# the summary then compares the two builds in the same rounds.
#
# RESUME=1 adds connect-proto-resume and grpc-web-resume: the same streams on an app with
# `resume` (every message numbered, buffered and, with REDIS_URL, written to Redis), and
# reports the Redis commands per resumable message.
#
# Environment: DURATION [5] WARMUP [1] ROUNDS [3] SIZES ["64 16384"] (payload bytes)
#              CONCURRENCY [32] CONNECTIONS [1] STREAM_MESSAGES [2000] CLIENT_TLS [0]
#              PROXY_CPUS [0] LOAD_CPUS [1] UPSTREAM_CPUS [1] BASE_PORT [18400] SKIP_BUILD [0]
#              RESUME [0] REDIS_URL [unset: resume buffers in memory]
#              PEERS ["nginx haproxy envoy"; "" for none] BASELINE_BIN [unset]
#              ONLY [unset: all] an extended regex; only targets it matches run (grpc-direct,
#              which the ratios need, always does)
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
DURATION=${DURATION:-5}; DURATION=${DURATION%s}; WARMUP=${WARMUP:-1}; ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-64 16384}; CONCURRENCY=${CONCURRENCY:-32}; CONNECTIONS=${CONNECTIONS:-1}
STREAM_MESSAGES=${STREAM_MESSAGES:-2000}; CLIENT_TLS=${CLIENT_TLS:-0}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}; UPSTREAM_CPUS=${UPSTREAM_CPUS:-1}
PEERS=${PEERS-nginx haproxy envoy}
BASE_PORT=${BASE_PORT:-18400}; SKIP_BUILD=${SKIP_BUILD:-0}; RESUME=${RESUME:-0}; REDIS_URL=${REDIS_URL:-}
BASELINE_BIN=${BASELINE_BIN:-}
for t in cargo python3 taskset openssl; do
  command -v $t >/dev/null || { echo "connect.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) TG=$((BASE_PORT + 11)) TGS=$((BASE_PORT + 12)) TG_ADMIN=$((BASE_PORT + 19))
TGB=$((BASE_PORT + 21))
HOST=rpc.bench
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
# shellcheck source=bench/connect-peers.sh
. "$BENCH/connect-peers.sh"
bench_init connect

# The load tool shares the main target folder, so it reuses the compiled dependencies.
if [[ $SKIP_BUILD != 1 || ! -x $ROOT/target/release/rpc-load ]]; then
  log "building rpc-load (release)"
  CARGO_TARGET_DIR=$ROOT/target cargo build --release -q --manifest-path "$BENCH/rpc-load/Cargo.toml"
fi
cp "$ROOT/target/release/rpc-load" "$RUN/rpc-load"

# A TLS listener too, for CLIENT_TLS=1 (browsers reach the edge over TLS).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=$HOST" -addext "subjectAltName=DNS:$HOST" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
cat >"$RUN/tollgate.toml" <<EOF
default_certificate = "$HOST"

[admin]
listen = "127.0.0.1:$TG_ADMIN"
[log]
format = "text"
access_log = false

[[listeners]]
name = "plain"
listen = "127.0.0.1:$TG"

[[listeners]]
name = "tls"
listen = "127.0.0.1:$TGS"
[listeners.tls]
alpn = ["h2"]

[[certificates]]
cert_file = "$RUN/cert.pem"
key_file = "$RUN/key.pem"

[[apps]]
id = "rpc"
hostnames = ["$HOST"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "h2c"
[apps.rpc]
descriptor_set = "builtin"

[[apps]]
id = "rpc-resume"
hostnames = ["resume.$HOST"]
resume = { buffer_events = 1000, ttl_secs = 300, linger_secs = 60 }
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "h2c"
[apps.rpc]
descriptor_set = "builtin"
EOF
if [[ -n $REDIS_URL ]]; then
  printf '\n[resume]\nredis_url = "%s"\nkey_prefix = "tollgate-bench-%s"\n' "$REDIS_URL" "$$" >>"$RUN/tollgate.toml"
fi
log "starting the TestService upstream (CPU $UPSTREAM_CPUS), tollgate (CPU $PROXY_CPUS, 1 worker)"
taskset -c "$UPSTREAM_CPUS" "$RUN/rpc-load" --serve "127.0.0.1:$UP" --threads 1 >"$RUN/upstream.log" 2>&1 &
UP_PID=$!; PIDS+=($UP_PID)
wait_port $UP
TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
  "$RUN/tollgate" proxy --config "$RUN/tollgate.toml" --ready-file "$RUN/ready.json" >"$RUN/tollgate.log" 2>&1 &
TG_PID=$!; PIDS+=($TG_PID)
for _ in $(seq 100); do [[ -s $RUN/ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/ready.json ]] || { echo "connect.sh: tollgate not ready:" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
BASE_PID=
if [[ -n $BASELINE_BIN ]]; then
  cp "$BASELINE_BIN" "$RUN/tollgate-base"
  sed -e "s/127.0.0.1:$TG\"/127.0.0.1:$TGB\"/; s/127.0.0.1:$TGS\"/127.0.0.1:$((TGB + 1))\"/" \
    -e "s/127.0.0.1:$TG_ADMIN\"/127.0.0.1:$((TGB + 8))\"/" "$RUN/tollgate.toml" >"$RUN/tollgate-base.toml"
  log "starting the baseline build beside it ($BASELINE_BIN, CPU $PROXY_CPUS, 1 worker)"
  TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" "$RUN/tollgate-base" proxy \
    --config "$RUN/tollgate-base.toml" --ready-file "$RUN/ready-base.json" >"$RUN/tollgate-base.log" 2>&1 &
  BASE_PID=$!; PIDS+=($BASE_PID)
  for _ in $(seq 100); do [[ -s $RUN/ready-base.json ]] && break; sleep 0.1; done
  [[ -s $RUN/ready-base.json ]] || { echo "connect.sh: baseline not ready:" >&2; cat "$RUN/tollgate-base.log" >&2; exit 1; }
fi

if [[ $CLIENT_TLS == 1 ]]; then
  PROXY_URL=(--url "https://$HOST:$TGS" --connect "127.0.0.1:$TGS" --ca "$RUN/cert.pem")
else
  PROXY_URL=(--url "http://$HOST:$TG" --connect "127.0.0.1:$TG")
fi
TARGETS=(grpc-direct grpc-proxy grpc-web connect-proto connect-json)
if [[ $RESUME == 1 ]]; then TARGETS+=(connect-proto-resume grpc-web-resume); fi
if [[ -n $BASE_PID ]]; then TARGETS+=(grpc-proxy-base grpc-web-base connect-proto-base connect-json-base); fi
if [[ -n $PEERS && $CLIENT_TLS == 1 ]]; then
  log "peers skipped: they listen for h2c only (CLIENT_TLS=1)"
elif [[ -n $PEERS ]]; then
  # shellcheck disable=SC2086
  start_peers $((BASE_PORT + 30)) $PEERS
  for peer in "${!PEER_PID[@]}"; do TARGETS+=("grpc-$peer"); done
  if [[ -n ${PEER_PID[envoy]:-} ]]; then TARGETS+=(grpc-web-envoy connect-proto-envoy); fi
fi
if [[ -n ${ONLY:-} ]]; then
  kept=(grpc-direct)
  for t in "${TARGETS[@]}"; do
    [[ $t != grpc-direct && $t =~ $ONLY ]] && kept+=("$t")
  done
  TARGETS=("${kept[@]}")
fi
# load TARGET PAYLOAD SECONDS WARMUP -> one JSON line
load() {
  local proto=$1 where=("${PROXY_URL[@]}") proxy=$TG_PID peer
  case $1 in
    grpc-direct) proto=grpc; where=(--url "http://127.0.0.1:$UP") ;;
    grpc-proxy) proto=grpc ;;
    *-base)
      proto=${1%-base} proxy=$BASE_PID
      [[ $proto == grpc-proxy ]] && proto=grpc
      where=(--url "http://$HOST:$TGB" --connect "127.0.0.1:$TGB") ;;
    grpc-web-envoy | connect-proto-envoy)
      proto=${1%-envoy} proxy=${PEER_PID[envoy]}
      where=(--url "http://$HOST:${PEER_PORT[envoy]}" --connect "127.0.0.1:${PEER_PORT[envoy]}") ;;
    grpc-nginx | grpc-haproxy | grpc-envoy)
      peer=${1#grpc-} proto=grpc proxy=${PEER_PID[$peer]}
      where=(--url "http://$HOST:${PEER_PORT[$peer]}" --connect "127.0.0.1:${PEER_PORT[$peer]}") ;;
    *-resume)
      proto=${1%-resume}
      if [[ $CLIENT_TLS == 1 ]]; then
        where=(--url "https://resume.$HOST:$TGS" --connect "127.0.0.1:$TGS" --ca "$RUN/cert.pem")
      else
        where=(--url "http://resume.$HOST:$TG" --connect "127.0.0.1:$TG")
      fi ;;
  esac
  taskset -c "$LOAD_CPUS" "$RUN/rpc-load" "${where[@]}" --protocol "$proto" \
    --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" --stream-messages "$STREAM_MESSAGES" \
    --payload-bytes "$2" --duration "$3" --warmup "$4" --cpu "proxy=$proxy" --cpu "upstream=$UP_PID"
}
# Sanity: every target streams without an error, for every size.
for size in $SIZES; do
  for t in "${TARGETS[@]}"; do
    line=$(load "$t" "$size" 1 0) || { echo "connect.sh: $t failed" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(r["errors"] > 0 and r.get("first_error", "errors"))' "$line" ||
      { echo "connect.sh: $t ($size B) had errors: $line" >&2; exit 1; }
  done
done
log "sanity ok: every target streams without errors; measuring $ROUNDS rounds x $DURATION s (+${WARMUP} s warm-up)"

RES=$OUT/connect.jsonl
: >"$RES"
ORDER=("${TARGETS[@]}")
for ((round = 1; round <= ROUNDS; round++)); do
  for size in $SIZES; do
    for t in "${ORDER[@]}"; do
      line=$(load "$t" "$size" "$DURATION" "$WARMUP")
      python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(round=int(sys.argv[2]), target=sys.argv[3]); print(json.dumps(r))' \
        "$line" "$round" "$t" >>"$RES"
      log "round $round, $size B, $t: $line"
    done
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}") # rotate the order each round
done

COMMIT="$(git -C "$ROOT" log -1 --format='%h' 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
curl -s "http://127.0.0.1:$TG_ADMIN/metrics" >"$OUT/metrics.txt" || true
python3 - "$RES" "$CLIENT_TLS" "$COMMIT" "$OUT/metrics.txt" <<'EOF' | tee "$OUT/summary.txt"
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
client = "TLS" if sys.argv[2] == "1" else "h2c"
targets = [t for t in ["grpc-direct", "grpc-proxy", "grpc-web", "connect-proto", "connect-json",
                       "connect-proto-resume", "grpc-web-resume", "grpc-nginx", "grpc-haproxy",
                       "grpc-envoy", "grpc-web-envoy", "connect-proto-envoy", "grpc-proxy-base",
                       "grpc-web-base", "connect-proto-base", "connect-json-base"] if any(r["target"] == t for r in rows)]
rounds = sorted({r["round"] for r in rows})
ncpu = os.cpu_count() or 1
def other(r):  # % of the machine busy with anything but the load tool, proxy and upstream
    c = r["cpu_s"]
    rest = c["machine"] - c["load"] - c.get("proxy", 0) - c.get("upstream", 0)
    return max(0.0, 100 * rest / r["seconds"] / ncpu)
r0 = rows[0]
flagged = False
print(f"tollgate {sys.argv[3]}; {ncpu} CPUs; median of {len(rounds)} rounds x {r0['seconds']:.0f} s; "
      f"{r0['concurrency']} streams on {r0['connections']} HTTP/2 connection(s); client to proxy: {client}")
print("MB = 10^6 bytes of envelopes received (JSON carries payloads as base64); "
      "ratio = same-round msgs/s over grpc-direct's, median; other = rest of the machine busy (% of all CPUs)")
for size in sorted({r["payload_bytes"] for r in rows}):
    rs = [r for r in rows if r["payload_bytes"] == size]
    get = lambda t, rd: next(r for r in rs if r["target"] == t and r["round"] == rd)
    med = lambda t, f: statistics.median(f(r) for r in rs if r["target"] == t)
    print(f"\npayload {size} B\n")
    print("| target | msgs/s | MB/s | vs grpc-direct | per round | proxy CPU % | msgs per proxy CPU-s | other % | errors |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for t in targets:
        ratios = [get(t, rd)["msgs_per_s"] / get("grpc-direct", rd)["msgs_per_s"] for rd in rounds]
        direct = t == "grpc-direct"
        cpu = "-" if direct else f"{med(t, lambda r: 100 * r['cpu_s']['proxy'] / r['seconds']):.0f}"
        per_cpu = "-" if direct else f"{med(t, lambda r: r['messages'] / max(r['cpu_s']['proxy'], 0.01)):.0f}"
        errors = sum(r["errors"] + r["cancelled_streams"] for r in rs if r["target"] == t)
        busy = med(t, other)
        flagged |= busy > 10
        print(f"| {t}{' (!)' if busy > 10 else ''} | {med(t, lambda r: r['msgs_per_s']):.0f} | "
              f"{med(t, lambda r: r['mb_per_s']):.1f} | **{statistics.median(ratios):.2f}** | "
              f"{', '.join(f'{x:.2f}' for x in ratios)} | {cpu} | {per_cpu} | {busy:.0f} | {errors} |")
    # Tollgate against each peer doing the same job: messages per proxy CPU-second, same round.
    pairs = [(t, p) for t, p in [("grpc-proxy", "grpc-nginx"), ("grpc-proxy", "grpc-haproxy"),
                                 ("grpc-proxy", "grpc-envoy"), ("grpc-web", "grpc-web-envoy"),
                                 ("connect-proto", "connect-proto-envoy"), ("grpc-proxy", "grpc-proxy-base"),
                                 ("grpc-web", "grpc-web-base"), ("connect-proto", "connect-proto-base"),
                                 ("connect-json", "connect-json-base")] if p in targets]
    if pairs:
        per = lambda r: r["messages"] / max(r["cpu_s"]["proxy"], 0.01)
        print("\n| tollgate / peer, msgs per proxy CPU-s | median | per round |\n|---|---:|---|")
        for t, p in pairs:
            xs = [per(get(t, rd)) / per(get(p, rd)) for rd in rounds]
            print(f"| {t} / {p} | **{statistics.median(xs):.2f}** | {', '.join(f'{x:.2f}' for x in xs)} |")
if flagged:
    print("\n(!) other processes kept more than 10 % of the machine busy during this target's rounds (median).")
metrics = {}
for line in open(sys.argv[4]) if os.path.exists(sys.argv[4]) else []:
    if line.startswith("tollgate_resume_") and " " in line:
        name, value = line.rsplit(" ", 1)
        metrics[name] = float(value)
resumable = sum(r["messages"] for r in rows if r["target"].endswith("-resume"))
if resumable:
    cmds = metrics.get("tollgate_resume_redis_commands_total", 0)
    per = f"at most {cmds / resumable:.2f} per measured message" if cmds else "no Redis configured"
    print(f"\nresumable: {resumable:.0f} messages measured (warm-up and sanity runs not counted); "
          f"Redis commands sent in the whole run: {cmds:.0f} ({per}), "
          f"errors: {metrics.get('tollgate_resume_redis_errors_total', 0):.0f}")
EOF
log "results in $OUT"
