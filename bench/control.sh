#!/usr/bin/env bash
# Control service -> proxy: how long an update takes to reach a proxy, and what a large
# snapshot costs (bytes, proxy apply time, proxy memory). bench/EXTRA.md has the figures.
#
#   (a) latency: UPDATES times, bind a new hostname (PUT /api/v1/hostnames/<h>) and time,
#       from just before the request until the proxy's admin /config shows
#       control.serving_event_id >= the event_id the API answered (admin /control, polled
#       every 1 ms).
#       The proxy follows over gRPC Watch (http_url is configured as the fallback only).
#   (b) scale: seed SCALE_APPS apps, SCALE_HOSTS bound hostnames, SCALE_ROUTES routes,
#       SCALE_KEYS API keys and ONE wildcard certificate covering every hostname (the
#       brief allows one wildcard; 10,000 distinct certificates are not measured here),
#       with SEED_THREADS parallel API clients, while proxy A follows. Then:
#         - GET /v1/snapshot size in bytes
#         - proxy A: RSS before/after, apply-duration histogram (sum/count) for the
#           incremental applies during seeding
#         - (c) the latency of (a) again, on top of the seeded scale
#         - proxy B, started cold (empty state_dir): time until it serves the head event,
#           its apply duration (one snapshot apply) and RSS; then stopped
#         - (d), below, and then proxy B again, after the control service is killed:
#           time until it serves the head event it persisted, from that snapshot
#       (a) and (c) time each update until EVERY following proxy serves it (FOLLOWERS
#       proxies: A and, from the second on, A2, A3, ...), and report the slowest.
#   (d) the latency of (a) on the full scale while a bulk load runs: BULK_CLIENTS
#       clients post batches of BULK_BATCH API-key commands through POST /api/v1/batch
#       for as long as the updates take (their commands/s is printed too, and the control
#       service's CPU seconds per event appended until every follower serves the head).
#
# Environment: UPDATES [50] SCALE_APPS [100] SCALE_HOSTS [1000] SCALE_ROUTES [1000]
#              SCALE_KEYS [10000] SEED_THREADS [8] BASE_PORT [18300] SKIP_BUILD [0]
#              FOLLOWERS [3] BULK_CLIENTS [2] BULK_BATCH [500]
#              STORE [unset: SQLite in the scratch folder] a postgres:// URL of a server: the
#              run creates a database of its own there and drops it at the end
#              (the issue's target is 10000/10000/100000; raise them if you have the time)
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
export UPDATES=${UPDATES:-50} SCALE_APPS=${SCALE_APPS:-100} SCALE_HOSTS=${SCALE_HOSTS:-1000}
export SCALE_ROUTES=${SCALE_ROUTES:-1000} SCALE_KEYS=${SCALE_KEYS:-10000} SEED_THREADS=${SEED_THREADS:-8}
export FOLLOWERS=${FOLLOWERS:-3} BULK_CLIENTS=${BULK_CLIENTS:-2} BULK_BATCH=${BULK_BATCH:-500}
BASE_PORT=${BASE_PORT:-18300}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in openssl curl python3; do command -v $t >/dev/null || { echo "control.sh: $t missing" >&2; exit 1; }; done
export CP_HTTP=$((BASE_PORT + 1)) CP_GRPC=$((BASE_PORT + 2))
export A_PLAIN=$((BASE_PORT + 11)) A_ADMIN=$((BASE_PORT + 19)) B_PLAIN=$((BASE_PORT + 21)) B_ADMIN=$((BASE_PORT + 29))
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init control
export TOLLGATE_ADMIN_TOKEN=bench-admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export TOLLGATE_PROXY_TOKEN=bench-proxy-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# One wildcard certificate for every scale hostname (*.scale.bench).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=*.scale.bench" -addext "subjectAltName=DNS:*.scale.bench" \
  -keyout "$RUN/wild.key" -out "$RUN/wild.pem" 2>/dev/null

proxy_conf() { # name plain admin
  mkdir -p "$RUN/$1-state"
  cat >"$RUN/$1.toml" <<EOF
[admin]
listen = "127.0.0.1:$3"
[log]
format = "text"
access_log = false
[[listeners]]
name = "plain"
listen = "127.0.0.1:$2"
[control]
grpc_url = "http://127.0.0.1:$CP_GRPC"
http_url = "http://127.0.0.1:$CP_HTTP"
token_env = "TOLLGATE_PROXY_TOKEN"
node_id = "bench-$1"
state_dir = "$RUN/$1-state"
EOF
}
proxy_conf a $A_PLAIN $A_ADMIN
proxy_conf b $B_PLAIN $B_ADMIN

STORE=${STORE:-}; STORE_ARGS=()
if [[ -n $STORE ]]; then
  command -v psql >/dev/null || { echo "control.sh: STORE needs psql" >&2; exit 1; }
  PG_DB=tollgate_bench_$$
  psql "$STORE" -qc "CREATE DATABASE $PG_DB" >/dev/null
  bench_after() { psql "$STORE" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null; }
  STORE_URL="${STORE%/*}/$PG_DB"
  # PostgreSQL keeps certificate keys sealed; the key lives in the scratch folder.
  STORE_ARGS=(--sealing-key-file "$RUN/sealing.key")
else
  STORE_URL="sqlite://$RUN/control.db"
fi
export STORE_URL
log "starting tollgate control (store ${STORE_URL%%:*})"
RUST_LOG=${RUST_LOG:-warn} "$RUN/tollgate" control --store "$STORE_URL" "${STORE_ARGS[@]}" \
  --listen 127.0.0.1:$CP_HTTP --grpc-listen 127.0.0.1:$CP_GRPC --ready-file "$RUN/control-ready.json" \
  >"$RUN/control.log" 2>&1 & PIDS+=($!)
export CP_PID=$!
for _ in $(seq 100); do [[ -s $RUN/control-ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/control-ready.json ]] || { echo "control.sh: control not ready:" >&2; cat "$RUN/control.log" >&2; exit 1; }
log "starting proxy A"
RUST_LOG=${RUST_LOG:-warn} "$RUN/tollgate" proxy --config "$RUN/a.toml" --ready-file "$RUN/a-ready.json" \
  >"$RUN/proxy-a.log" 2>&1 & PIDS+=($!)
export A_PID=$!
for _ in $(seq 100); do [[ -s $RUN/a-ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/a-ready.json ]] || { echo "control.sh: proxy A not ready:" >&2; cat "$RUN/proxy-a.log" >&2; exit 1; }
# More followers: A2, A3, ... on ports BASE_PORT + 10*(n+1) + 11 / + 19.
FOLLOWER_ADMINS=$A_ADMIN FOLLOWER_PIDS=$A_PID
for n in $(seq 2 "$FOLLOWERS"); do
  plain=$((BASE_PORT + 10 * (n + 1) + 11)) admin=$((BASE_PORT + 10 * (n + 1) + 19))
  proxy_conf "a$n" $plain $admin
  RUST_LOG=${RUST_LOG:-warn} "$RUN/tollgate" proxy --config "$RUN/a$n.toml" --ready-file "$RUN/a$n-ready.json" \
    >"$RUN/proxy-a$n.log" 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do [[ -s $RUN/a$n-ready.json ]] && break; sleep 0.1; done
  [[ -s $RUN/a$n-ready.json ]] || { echo "control.sh: proxy A$n not ready:" >&2; cat "$RUN/proxy-a$n.log" >&2; exit 1; }
  FOLLOWER_ADMINS="$FOLLOWER_ADMINS $admin" FOLLOWER_PIDS="$FOLLOWER_PIDS $!"
done
export FOLLOWER_ADMINS FOLLOWER_PIDS

# Proxy B is started by the Python part (cold start after seeding); it writes the pid
# to $RUN/b.pid so the cleanup above can stop it.
python3 - <<'EOF' | tee "$OUT/summary.txt"
import http.client, json, os, statistics, subprocess, sys, threading, time
E = os.environ
RUN, CP = E["RUN"], int(E["CP_HTTP"])
ADMIN_HDR = {"Authorization": "Bearer " + E["TOLLGATE_ADMIN_TOKEN"], "Content-Type": "application/json"}
PROXY_HDR = {"Authorization": "Bearer " + E["TOLLGATE_PROXY_TOKEN"]}

def conn(port): return http.client.HTTPConnection("127.0.0.1", port, timeout=120)
def call(c, method, path, body=None, hdrs=ADMIN_HDR):
    c.request(method, path, body=None if body is None else json.dumps(body), headers=hdrs)
    r = c.getresponse(); data = r.read()
    if r.status >= 300: raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None
def serving(c):
    # /control, not /config: the cursor alone, whatever the size of the config.
    return call(c, "GET", "/control", hdrs={}).get("serving_event_id") or 0
def cpu_s(pid):
    # utime + stime of the process (all threads), in seconds.
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"): return int(line.split()[1])
def apply_metric(port):
    c = conn(port); c.request("GET", "/metrics"); text = c.getresponse().read().decode(); c.close()
    s = n = 0.0
    for line in text.splitlines():
        if line.startswith("tollgate_config_apply_duration_seconds_sum"): s = float(line.split()[-1])
        if line.startswith("tollgate_config_apply_duration_seconds_count"): n = float(line.split()[-1])
    return s, n
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

api, adm_a = conn(CP), conn(int(E["A_ADMIN"]))
followers = [conn(int(p)) for p in E["FOLLOWER_ADMINS"].split()]
print(f"# tollgate control bench  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  "
      f"store: {E['STORE_URL'].split(':')[0]}")

# ---- (a) update latency
def update_latency(label, zone):
    """UPDATES hostname binds to app `lat`, each timed until every follower serves it."""
    lat = []
    for i in range(int(E["UPDATES"])):
        t0 = time.perf_counter()
        ev = call(api, "PUT", f"/api/v1/hostnames/h{i}.{zone}.bench", {"app": "lat"})["event_id"]
        t_api = time.perf_counter()
        for f in followers:
            while serving(f) < ev:
                if time.perf_counter() - t0 > 30: raise RuntimeError(f"proxy did not reach event {ev} in 30 s")
                time.sleep(0.001)
        t1 = time.perf_counter()
        lat.append(((t1 - t0) * 1000, (t_api - t0) * 1000))
    tot = [x[0] for x in lat]; apis = [x[1] for x in lat]
    print(f"{label}, {len(lat)} hostname binds, API call -> all {len(followers)} following proxies serving it (gRPC Watch):")
    print(f"    end to end  p50 {pct(tot,50):.2f} ms  p99 {pct(tot,99):.2f} ms  max {max(tot):.2f} ms")
    print(f"    API answer  p50 {pct(apis,50):.2f} ms  p99 {pct(apis,99):.2f} ms  (part of the above)")
    rest = [x[0] - x[1] for x in lat]
    print(f"    answer -> all serving  p50 {pct(rest,50):.2f} ms  p99 {pct(rest,99):.2f} ms  (the rest)")
    sys.stdout.flush()
call(api, "POST", "/api/v1/apps", {"id": "lat"})
update_latency("(a) update latency on an empty config", "lat")

# ---- (b) scale
A_PID = int(E["A_PID"])
rss_a0 = rss_kb(A_PID); sum0, cnt0 = apply_metric(int(E["A_ADMIN"]))
NA, NH, NR, NK, NT = (int(E[k]) for k in ("SCALE_APPS", "SCALE_HOSTS", "SCALE_ROUTES", "SCALE_KEYS", "SEED_THREADS"))
def parallel(jobs):
    jobs = list(jobs); it = iter(jobs); lock = threading.Lock(); errs = []
    def worker():
        c = conn(CP)
        while True:
            with lock:
                j = next(it, None)
            if j is None: return
            try: call(c, *j)
            except Exception as e: errs.append(str(e)); return
    ts = [threading.Thread(target=worker) for _ in range(NT)]
    t0 = time.perf_counter(); [t.start() for t in ts]; [t.join() for t in ts]
    dt = time.perf_counter() - t0
    if errs: raise RuntimeError(errs[0])
    return len(jobs), dt
t_seed = time.perf_counter(); rates = []
for label, jobs in (
    ("apps", (("POST", "/api/v1/apps", {"id": f"s{j}"}) for j in range(NA))),
    ("upstream instances", (("POST", f"/api/v1/apps/s{j}/upstreams/default/instances", {"address": f"127.0.0.1:{20000+j}"}) for j in range(NA))),
    ("certificate", [("POST", "/api/v1/certificates", {"id": "wild", "cert_pem": open(f"{RUN}/wild.pem").read(), "key_pem": open(f"{RUN}/wild.key").read()})]),
    ("hostnames", (("PUT", f"/api/v1/hostnames/h{i}.scale.bench", {"app": f"s{i % NA}"}) for i in range(NH))),
    ("routes", (("POST", "/api/v1/routes", {"hostname": f"r{i}.scale.bench", "path_prefix": "/api", "app": f"s{i % NA}"}) for i in range(NR))),
    ("keys", (("POST", f"/api/v1/apps/s{i % NA}/keys", {"scopes": ["read"]}) for i in range(NK))),
):
    n, dt = parallel(jobs)
    rates.append(f"{label} {n} in {dt:.1f} s ({n/dt:.0f}/s)")
seed_s = time.perf_counter() - t_seed
head = call(api, "GET", "/api/v1/version")["event_id"]
t0 = time.perf_counter()
while serving(adm_a) < head:
    if time.perf_counter() - t0 > 600: raise RuntimeError("proxy A did not catch up in 600 s")
    time.sleep(0.05)
catchup = time.perf_counter() - t0
snap = conn(CP); snap.request("GET", "/v1/snapshot", headers=PROXY_HDR); r = snap.getresponse(); body = r.read()
cfg = json.loads(body)["config"]
time.sleep(1)
rss_a1 = rss_kb(A_PID); sum1, cnt1 = apply_metric(int(E["A_ADMIN"]))
print(f"(b) scale: {NA} apps, {NH} hostnames, {NR} routes, {NK} API keys, 1 wildcard certificate "
      f"(snapshot holds {len(cfg.get('apps', []))} apps, {len(cfg.get('routes', []))} routes, "
      f"{len(cfg.get('hostnames', []))} hostnames, {len(cfg.get('api_keys', []))} keys, {len(cfg.get('certificates', []))} certificates)")
print(f"    seeding via API with {NT} threads: {seed_s:.1f} s; " + "; ".join(rates))
print(f"    proxy A still behind after the last API answer: {catchup*1000:.0f} ms")
print(f"    GET /v1/snapshot: {len(body):,} bytes ({len(body)/1048576:.1f} MiB), head event {head}")
print(f"    proxy A (followed incrementally): RSS {rss_a0/1024:.1f} -> {rss_a1/1024:.1f} MiB; "
      f"{cnt1-cnt0:.0f} applies during seeding, {sum1-sum0:.2f} s in total, mean {1000*(sum1-sum0)/max(1,cnt1-cnt0):.1f} ms")
sys.stdout.flush()

# ---- (c) the same updates at the full scale just seeded: each one changes routing
update_latency("(c) update latency at this scale", "full")
heads = [serving(f) for f in followers]
print(f"    every follower at the same event: {len(set(heads)) == 1} ({heads})")

def start_b():
    b = subprocess.Popen([f"{RUN}/tollgate", "proxy", "--config", f"{RUN}/b.toml", "--ready-file", f"{RUN}/b-ready.json"],
                         stdout=open(f"{RUN}/proxy-b.log", "a"), stderr=subprocess.STDOUT, env=dict(E, RUST_LOG=E.get("RUST_LOG", "warn")))
    open(f"{RUN}/b.pid", "w").write(str(b.pid))
    return b
def until_serving(head, t0):
    """Seconds from t0 until proxy B serves `head` (polling its admin /control)."""
    adm = None
    while True:
        if time.perf_counter() - t0 > 300: raise RuntimeError("proxy B did not serve the head event in 300 s")
        try:
            adm = adm or conn(int(E["B_ADMIN"]))
            if serving(adm) >= head: return time.perf_counter() - t0
        except (ConnectionError, OSError, http.client.HTTPException):
            adm = None
        time.sleep(0.01)
def stop(p):
    p.terminate()
    try: p.wait(10)
    except subprocess.TimeoutExpired: p.kill()

# Cold start at the full scale: proxy B gets the whole snapshot in one message.
head = call(api, "GET", "/api/v1/version")["event_id"]
t0 = time.perf_counter()
b = start_b()
state = f"{RUN}/b-state/edge-snapshot.json"
try:
    cold = until_serving(head, t0)
    time.sleep(1)
    sb, nb = apply_metric(int(E["B_ADMIN"])); rss_b = rss_kb(b.pid)
    print(f"    proxy B cold start -> serving head event: {cold*1000:.0f} ms; applies {nb:.0f}, "
          f"{sb*1000:.0f} ms in total (apply = validate + compile); RSS {rss_b/1024:.1f} MiB")
    sys.stdout.flush()
    t1 = time.perf_counter()
    while True:
        try:
            if json.load(open(state)).get("event_id", 0) >= head: break
        except (OSError, ValueError):
            pass
        if time.perf_counter() - t1 > 120: raise RuntimeError("proxy B did not persist the head event in 120 s")
        time.sleep(0.5)
finally:
    stop(b)
b_head = head

# ---- (d) the same again while clients bulk-load keys through the batch API
bulk_stop = threading.Event(); bulk_done = []; bulk_errs = []
def bulk(n):
    c = conn(CP); k = 0
    while not bulk_stop.is_set():
        cmds = [{"op": "create_key", "app": f"s{(n * 7919 + k + j) % NA}"} for j in range(int(E["BULK_BATCH"]))]
        k += len(cmds)
        try: call(c, "POST", "/api/v1/batch", {"commands": cmds})
        except Exception as e: bulk_errs.append(str(e)); return
        bulk_done.append(len(cmds))
bulkers = [threading.Thread(target=bulk, args=(n,)) for n in range(int(E["BULK_CLIENTS"]))]
F_PIDS = [int(p) for p in E["FOLLOWER_PIDS"].split()]
def own_cpu_s(): t = os.times(); return t.user + t.system
cp_cpu = cpu_s(int(E["CP_PID"])); head_before = call(api, "GET", "/api/v1/version")["event_id"]
f_cpu = [cpu_s(p) for p in F_PIDS]; bench_cpu = own_cpu_s()
t_bulk = time.perf_counter(); [t.start() for t in bulkers]
time.sleep(1)
update_latency(f"(d) update latency at this scale while {len(bulkers)} clients bulk-load keys", "bulk")
bulk_stop.set(); [t.join() for t in bulkers]
dt = time.perf_counter() - t_bulk
if bulk_errs: raise RuntimeError(bulk_errs[0])
print(f"    bulk load meanwhile: {sum(bulk_done)} commands in {len(bulk_done)} batches, {sum(bulk_done)/dt:.0f} commands/s")
head = call(api, "GET", "/api/v1/version")["event_id"]
for f in followers:
    while serving(f) < head: time.sleep(0.01)
cp_cpu = cpu_s(int(E["CP_PID"])) - cp_cpu
f_cpu = [cpu_s(p) - c for p, c in zip(F_PIDS, f_cpu)]; bench_cpu = own_cpu_s() - bench_cpu
wall = time.perf_counter() - t_bulk
print(f"    control service CPU during (d), until every follower served the head: {cp_cpu:.1f} s, "
      f"{cp_cpu / max(1, head - head_before) * 1e6:.0f} us per event appended ({head - head_before} events)")
print(f"    CPU seconds in those {wall:.1f} s (2 cores: {2 * wall:.1f} CPU-s): control {cp_cpu:.1f}, "
      f"proxies {' / '.join(f'{c:.1f}' for c in f_cpu)}, this bench's clients {bench_cpu:.1f}")
time.sleep(1)
print(f"    proxy A after it: RSS {rss_kb(A_PID)/1024:.1f} MiB, head event {head}")
sys.stdout.flush()

# Restart with the control service down: B serves from the snapshot it persisted.
os.kill(int(E["CP_PID"]), 9)
size = os.path.getsize(state)
t0 = time.perf_counter()
b = start_b()
try:
    warm = until_serving(b_head, t0)
    print(f"    proxy B restarted with the control service down -> serving the head event from its "
          f"persisted snapshot ({size/1048576:.1f} MiB): {warm*1000:.0f} ms")
finally:
    stop(b)
EOF
log "results in $OUT"
