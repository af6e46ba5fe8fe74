#!/usr/bin/env bash
# Cost of a rate-limit check and over-admission of the cluster-wide limit (bench/EXTRA.md).
#
# (a) req/s of three routes of one tollgate to the same nginx `return 200`, as ratios to
#     the unlimited one, measured interleaved in one run:
#       open.bench     no limits
#       local.bench    scope = "local"   (GCRA in process, governor)
#       cluster.bench  scope = "cluster" (GCRA in Redis: one script call per request)
#     The limited routes allow 10^9 requests/s (key app), so they never refuse: what is
#     measured is the check, not refusals.
# (b) over-admission: two tollgates sharing one Redis, app shared.bench limited to
#     OVER_RATE/s (key app, burst = rate), each loaded by its own wrk at full speed for
#     OVER_SECS; admitted (both proxies' `tollgate_rate_limit_decisions_total` allowed)
#     over expected (rate x measured seconds + burst).
#
#   wrk -t1 -c$CONNS ──> tollgate(s) ──HTTP/1.1 keep-alive──> upstream nginx (return 200)
#                              └──────── redis-server (no persistence) ───┘
#
# Environment: DURATION [5] WARMUP [2] ROUNDS [3] CONNS [64] OVER_RATE [100]
#              OVER_SECS [10] REDIS_TIMEOUT_MS [200] PROXY_CPUS [0] LOAD_CPUS [1]
#              BASE_PORT [18400] SKIP_BUILD [0]
# Needs bench/setup.sh's tools and Debian's redis-server (scripts/test installs it).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
DURATION=${DURATION:-5}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}
OVER_RATE=${OVER_RATE:-100}; OVER_SECS=${OVER_SECS:-10}; REDIS_TIMEOUT_MS=${REDIS_TIMEOUT_MS:-200}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}
BASE_PORT=${BASE_PORT:-18400}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in nginx wrk curl python3 taskset redis-server redis-cli; do
  command -v $t >/dev/null || {
    echo "limits.sh: $t missing; run bench/setup.sh (redis: apt-get install redis-server)" >&2
    exit 1
  }
done
UP=$((BASE_PORT + 1)) REDIS=$((BASE_PORT + 2))
TG=$((BASE_PORT + 11)) TG_ADMIN=$((BASE_PORT + 19)) TG2=$((BASE_PORT + 21)) TG2_ADMIN=$((BASE_PORT + 29))
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init limits

# ---- upstream nginx, Redis
mkdir -p "$RUN/redis"
write_upstream_conf
log "starting upstream nginx and redis-server (CPU $LOAD_CPUS)"
taskset -c "$LOAD_CPUS" nginx -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.log" 2>&1 & PIDS+=($!)
taskset -c "$LOAD_CPUS" redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$RUN/redis" >"$RUN/redis.log" 2>&1 & PIDS+=($!)
wait_port $UP; wait_port $REDIS

# ---- two tollgates, same apps, one Redis
tollgate_conf() { # listen-port admin-port
  cat <<EOF
[admin]
listen = "127.0.0.1:$2"
[log]
format = "text"
access_log = false

[rate_limiting]
redis_url = "redis://127.0.0.1:$REDIS"
redis_timeout_ms = $REDIS_TIMEOUT_MS
key_prefix = "tollgate-bench-$STAMP"

[[listeners]]
name = "plain"
listen = "127.0.0.1:$1"
EOF
  local app
  for app in open local cluster shared; do
    cat <<EOF

[[apps]]
id = "$app"
metrics = "detailed"
hostnames = ["$app.bench"]
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "http1"
balance = { policy = "round_robin" }
EOF
    case $app in
      local | cluster) printf '[apps.limits]\nscope = "%s"\non_backend_error = "deny"\n[[apps.limits.rate]]\nkey = "app"\nper_second = 1000000000\n' "$app" ;;
      shared) printf '[apps.limits]\nscope = "cluster"\non_backend_error = "deny"\n[[apps.limits.rate]]\nkey = "app"\nper_second = %d\n' "$OVER_RATE" ;;
    esac
  done
}
tollgate_conf $TG $TG_ADMIN >"$RUN/tollgate.toml"
tollgate_conf $TG2 $TG2_ADMIN >"$RUN/tollgate2.toml"
log "starting two tollgates (CPU $PROXY_CPUS, 1 worker each)"
for n in "" 2; do
  TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
    "$RUN/tollgate" proxy --config "$RUN/tollgate$n.toml" --ready-file "$RUN/ready$n.json" \
    >"$RUN/tollgate$n.log" 2>&1 & PIDS+=($!)
done
for n in "" 2; do
  for _ in $(seq 100); do [[ -s $RUN/ready$n.json ]] && break; sleep 0.1; done
  [[ -s $RUN/ready$n.json ]] || { echo "limits.sh: tollgate$n not ready:" >&2; cat "$RUN/tollgate$n.log" >&2; exit 1; }
done

# Sums a counter's samples whose labels include every given `k="v"`.
metric() { # admin-port name label...
  local port=$1 name=$2; shift 2
  curl -sf "http://127.0.0.1:$port/metrics" | python3 -c '
import sys
name, want = sys.argv[1], sys.argv[2:]
total = 0.0
for line in sys.stdin:
    if line.startswith("#"): continue
    series, _, value = line.rstrip().rpartition(" ")
    metric, _, labels = series.partition("{")
    if metric == name and all(w in labels for w in want): total += float(value)
print(int(total))' "$name" "$@"
}

# Sanity: each route answers 200; the limited ones are decided where they should be,
# and the cluster check leaves its state in Redis.
for r in open local cluster; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $r.bench" "http://127.0.0.1:$TG/")
  [[ $code == 200 ]] || { echo "limits.sh: $r route answered $code" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
done
for src in local cluster; do
  n=$(metric $TG_ADMIN tollgate_rate_limit_decisions_total "app=\"$src\"" 'result="allowed"' "source=\"$src\"")
  [[ $n -ge 1 ]] || { echo "limits.sh: no $src decision counted for the $src route" >&2; exit 1; }
done
# (The limiter's keys expire at once at 10^9/s, so count the script calls instead.)
scripts=$(redis-cli -p "$REDIS" info commandstats |
  awk -F'[=,]' '/^cmdstat_(eval|evalsha|fcall)/ { n += $2 } END { print n + 0 }')
[[ $scripts -ge 1 ]] || { echo "limits.sh: no script ran in Redis" >&2; exit 1; }
log "sanity ok: 200 on every route, decisions local/cluster counted, $scripts script call(s) in Redis"

# ---- (a) cost of the check
run_wrk() { # host port secs -> BENCH line
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${3}s" --latency -s "$BENCH/wrk-report.lua" \
    -H "Host: $1" "http://127.0.0.1:$2/" | grep '^BENCH'
}
RES=$OUT/limits.tsv
echo -e "round\troute\trps\tp50_us\tp99_us\terrors" >"$RES"
ORDER=(open local cluster)
for ((round = 1; round <= ROUNDS; round++)); do
  for r in "${ORDER[@]}"; do
    [[ $WARMUP -gt 0 ]] && run_wrk "$r.bench" $TG "$WARMUP" >/dev/null
    line=$(run_wrk "$r.bench" $TG "$DURATION")
    eval "$(sed -E 's/^BENCH //; s/ /;/g' <<<"$line")"
    rps=$(python3 -c "print(round($requests/($duration_us/1e6)))")
    echo -e "$round\t$r\t$rps\t$p50_us\t$p99_us\t$((sockerr + non2xx))" | tee -a "$RES" >&2
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}") # rotate the order each round
done

# ---- (b) over-admission of the shared limit, two proxies at full speed
log "over-admission: 2 proxies, shared.bench limited to $OVER_RATE/s, ${OVER_SECS}s at full speed"
before=0
for p in $TG_ADMIN $TG2_ADMIN; do
  before=$((before + $(metric $p tollgate_rate_limit_decisions_total 'app="shared"' 'result="allowed"')))
done
HALF=$(((CONNS + 1) / 2))
over_wrk() { # port
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$HALF" -d"${OVER_SECS}s" -s "$BENCH/wrk-report.lua" \
    -H "Host: shared.bench" "http://127.0.0.1:$1/" | grep '^BENCH'
}
over_wrk $TG >"$RUN/over1.txt" & w1=$!
over_wrk $TG2 >"$RUN/over2.txt" & w2=$!
wait $w1 $w2
allowed=0 sources=""
for p in $TG_ADMIN $TG2_ADMIN; do
  allowed=$((allowed + $(metric $p tollgate_rate_limit_decisions_total 'app="shared"' 'result="allowed"')))
  for src in cluster fallback_deny; do
    for res in allowed refused; do
      sources+="$p:$res/$src=$(metric $p tollgate_rate_limit_decisions_total 'app="shared"' "result=\"$res\"" "source=\"$src\"") "
    done
  done
done
admitted=$((allowed - before))
cp "$RUN/over1.txt" "$RUN/over2.txt" "$OUT/"
python3 - "$RES" "$RUN/over1.txt" "$RUN/over2.txt" "$admitted" "$OVER_RATE" "$sources" <<'EOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
res, o1, o2, admitted, rate, sources = sys.argv[1:7]
rows = list(csv.DictReader(open(res), delimiter="\t"))
med = lambda r, k: statistics.median(float(x[k]) for x in rows if x["route"] == r)
routes = ("open", "local", "cluster")
print(f"{'route':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  (median of {len(rows)//3} rounds)")
for r in routes:
    errs = sum(int(x["errors"]) for x in rows if x["route"] == r)
    print(f"{r:8} {med(r,'rps'):9.0f} {med(r,'p50_us')/1000:8.2f} {med(r,'p99_us')/1000:8.2f} {errs:6}")
rounds = sorted({x["round"] for x in rows})
get = lambda rd, r: float(next(x["rps"] for x in rows if x["round"] == rd and x["route"] == r))
for r in ("local", "cluster"):
    ratios = [get(rd, r) / get(rd, "open") for rd in rounds]
    print(f"{r}/open req/s: {statistics.median(ratios):.3f}  (per round: {', '.join(f'{x:.3f}' for x in ratios)})")
def bench(path):
    line = open(path).read().split()
    return {k: int(v) for k, v in (f.split("=") for f in line[1:])}
b = [bench(o1), bench(o2)]
secs = max(x["duration_us"] for x in b) / 1e6
sent = sum(x["requests"] for x in b)
ok = sum(x["requests"] - x["non2xx"] - x["sockerr"] for x in b)
rate, admitted = int(rate), int(admitted)
expected = rate * secs + rate  # refill over the run + the initial burst (burst = rate)
print(f"over-admission: {admitted} admitted (2xx seen by wrk: {ok}) of {sent} sent in {secs:.2f}s "
      f"by 2 proxies; expected {expected:.0f} ({rate}/s x {secs:.2f}s + burst {rate}); "
      f"admitted/expected {admitted/expected:.3f}")
print(f"decisions by proxy admin port: {sources.strip()}")
EOF
log "results in $OUT"
