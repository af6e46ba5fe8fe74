#!/usr/bin/env bash
# Cost of edge authentication: requests/s of an API-key route and a JWT route as ratios
# to the same route without auth, measured interleaved in one run (bench/EXTRA.md), with
# Envoy's jwt_authn (local JWKS, its verified-token cache on) as the peer for JWT routes.
#
#   load (wrk -t1 -c$CONNS) ──> tollgate ──HTTP/1.1 keep-alive──> upstream nginx (return 200)
#     open.bench    no auth
#     key.bench     auth = { api_keys = true }      Authorization: Bearer sk_test_bench_…
#     jwt.bench     auth = { issuers = ["bench"] }  Authorization: Bearer <RS256 JWT>
#   load ──> envoy (--concurrency 1) ──HTTP/1.1 keep-alive──> the same upstream
#     envoy-open    a listener with the router only
#     envoy-jwt     a listener with jwt_authn (same issuer, audience, key, token), router
# Every row also reports requests per proxy CPU-second (the proxy's CPU time, /proc).
# The JWT issuer is a static discovery document + JWKS served by python3 http.server on
# loopback (http:// issuers are allowed on loopback only). The token is signed once with
# `openssl dgst -sha256 -sign`; every request carries the same token and the same key.
#
# Environment: DURATION [5] WARMUP [2] ROUNDS [3] CONNS [64] PROXY_CPUS [0] LOAD_CPUS [1]
#              BASE_PORT [18100] SKIP_BUILD [0] ENVOY [envoy on PATH, else the venv
#              bench/setup.sh makes; without a working one the Envoy rows are skipped]
#              PROFILE [0]: 1 = after the rounds, `perf record` tollgate under each of
#              its routes' load in turn and write profile.txt: CPU µs per request by
#              symbol, and what the key and JWT routes spend beyond the open one
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
DURATION=${DURATION:-5}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}
BASE_PORT=${BASE_PORT:-18100}; SKIP_BUILD=${SKIP_BUILD:-0}; PROFILE=${PROFILE:-0}
for t in nginx wrk openssl curl python3 taskset sha256sum; do
  command -v $t >/dev/null || { echo "auth.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) IDP=$((BASE_PORT + 2)) TG=$((BASE_PORT + 11)) TG_ADMIN=$((BASE_PORT + 19))
EV_OPEN=$((BASE_PORT + 21)) EV_JWT=$((BASE_PORT + 22)) EV_ADMIN=$((BASE_PORT + 29))
ENVOY=${ENVOY:-$(command -v envoy || echo "$BENCH/results/envoy-venv/bin/envoy")}
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
# shellcheck source=bench/perf.sh
. "$BENCH/perf.sh"
bench_init auth
PERF_HZ=999

# ---- credentials: an API key in the documented format, and an RS256 token
B62=0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
KEY=sk_test_bench_$(python3 -c "import secrets;print(''.join(secrets.choice('$B62') for _ in range(32)))")
KEY_SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
ISS=http://127.0.0.1:$IDP
AUD=bench-api
mkdir -p "$RUN/idp/.well-known"
openssl genrsa -out "$RUN/rsa.pem" 2048 2>/dev/null
MOD_HEX=$(openssl rsa -in "$RUN/rsa.pem" -noout -modulus | cut -d= -f2)
b64u() { python3 -c 'import sys,base64;print(base64.urlsafe_b64encode(sys.stdin.buffer.read()).rstrip(b"=").decode())'; }
N=$(printf %s "$MOD_HEX" | xxd -r -p 2>/dev/null | b64u || true)
[[ -n $N ]] || N=$(python3 -c "import base64,sys;h='$MOD_HEX';print(base64.urlsafe_b64encode(bytes.fromhex(h)).rstrip(b'=').decode())")
cat >"$RUN/idp/.well-known/openid-configuration" <<EOF
{"issuer": "$ISS", "jwks_uri": "$ISS/jwks.json", "id_token_signing_alg_values_supported": ["RS256"]}
EOF
cat >"$RUN/idp/jwks.json" <<EOF
{"keys": [{"kty": "RSA", "kid": "bench-1", "use": "sig", "alg": "RS256", "n": "$N", "e": "AQAB"}]}
EOF
NOW=$(date +%s)
HDR=$(printf '{"alg":"RS256","typ":"at+jwt","kid":"bench-1"}' | b64u)
PAY=$(printf '{"iss":"%s","sub":"bench-user","aud":"%s","client_id":"bench","iat":%d,"exp":%d,"scope":"read"}' \
  "$ISS" "$AUD" "$NOW" $((NOW + 30 * 86400)) | b64u)
SIG=$(printf %s "$HDR.$PAY" | openssl dgst -sha256 -sign "$RUN/rsa.pem" | b64u)
JWT=$HDR.$PAY.$SIG

# ---- upstream, IdP, tollgate
write_upstream_conf
cat >"$RUN/tollgate.toml" <<EOF
[admin]
listen = "127.0.0.1:$TG_ADMIN"
[log]
format = "text"
access_log = false

[[listeners]]
name = "plain"
listen = "127.0.0.1:$TG"

[[oidc_issuers]]
name = "bench"
issuer = "$ISS"
audiences = ["$AUD"]

[[api_keys]]
key_id = "bench-key"
app = "bench"
kind = "secret"
sha256 = "$KEY_SHA"
scopes = ["read"]

[[apps]]
id = "bench"
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$UP" }]
protocol = "http1"
balance = { policy = "round_robin" }

[[routes]]
hostname = "open.bench"
path_prefix = "/"
app = "bench"

[[routes]]
hostname = "key.bench"
path_prefix = "/"
app = "bench"
auth = { api_keys = true }

[[routes]]
hostname = "jwt.bench"
path_prefix = "/"
app = "bench"
auth = { issuers = ["bench"] }
EOF
log "starting upstream nginx (CPU $LOAD_CPUS), IdP on :$IDP, tollgate (CPU $PROXY_CPUS, 1 worker)"
taskset -c "$LOAD_CPUS" nginx -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.log" 2>&1 & PIDS+=($!)
(cd "$RUN/idp" && exec python3 -m http.server --bind 127.0.0.1 "$IDP") >"$RUN/idp.log" 2>&1 & PIDS+=($!)
wait_port $UP; wait_port $IDP
TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
  "$RUN/tollgate" proxy --config "$RUN/tollgate.toml" --ready-file "$RUN/ready.json" >"$RUN/tollgate.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [[ -s $RUN/ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/ready.json ]] || { echo "auth.sh: tollgate not ready:" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }

TG_PID=${PIDS[-1]}
declare -A HDRS=([open]="" [key]="Authorization: Bearer $KEY" [jwt]="Authorization: Bearer $JWT"
  [envoy-open]="" [envoy-jwt]="Authorization: Bearer $JWT")
declare -A PORT=([open]=$TG [key]=$TG [jwt]=$TG [envoy-open]=$EV_OPEN [envoy-jwt]=$EV_JWT)
declare -A PID=([open]=$TG_PID [key]=$TG_PID [jwt]=$TG_PID)
ROUTES=(open key jwt)

# Envoy: one listener per route, the same upstream; the JWT listener verifies with the
# issuer's JWKS given inline and remembers verified tokens (jwt_cache_config).
envoy_listener() { # name port jwt(0|1)
  cat <<YAML
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: bench_upstream, timeout: 30s }
          http_filters:
YAML
  if [[ $3 == 1 ]]; then
    cat <<YAML
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: "$ISS"
                  audiences: ["$AUD"]
                  forward: true
                  local_jwks: { inline_string: '$(tr -d '\n' <"$RUN/idp/jwks.json")' }
                  jwt_cache_config: { jwt_cache_size: 10000 }
              rules:
              - match: { prefix: "/" }
                requires: { provider_name: bench }
YAML
  fi
  cat <<YAML
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
YAML
}
if "$ENVOY" --version >/dev/null 2>&1; then
  {
    cat <<YAML
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $EV_ADMIN } }
static_resources:
  listeners:
YAML
    envoy_listener open "$EV_OPEN" 0
    envoy_listener jwt "$EV_JWT" 1
    cat <<YAML
  clusters:
  - name: bench_upstream
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }
    load_assignment:
      cluster_name: bench_upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP } } }
YAML
  } >"$RUN/envoy.yaml"
  taskset -c "$PROXY_CPUS" "$ENVOY" -c "$RUN/envoy.yaml" --concurrency 1 --log-level warn \
    --base-id $((BASE_PORT % 1000)) >"$RUN/envoy.log" 2>&1 &
  PIDS+=($!); PID[envoy-open]=$!; PID[envoy-jwt]=$!
  wait_port $EV_OPEN; wait_port $EV_JWT
  ROUTES+=(envoy-open envoy-jwt)
else
  log "no working envoy ($ENVOY): the Envoy rows are skipped (bench/setup.sh installs it)"
fi

hdr_args() { # route
  [[ -n ${HDRS[$1]} ]] && printf '%s\0' -H "${HDRS[$1]}"
  printf '%s\0' -H "Host: ${1#envoy-}.bench"
}
# Sanity: each route answers 200 with its credential, and the auth routes 401 without.
for r in "${ROUTES[@]}"; do
  mapfile -d '' A < <(hdr_args "$r")
  code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "http://127.0.0.1:${PORT[$r]}/")
  [[ $code == 200 ]] || { echo "auth.sh: $r route answered $code" >&2; cat "$RUN"/*.log >&2; exit 1; }
done
for r in "${ROUTES[@]}"; do
  [[ $r == key || $r == *jwt ]] || continue
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: ${r#envoy-}.bench" "http://127.0.0.1:${PORT[$r]}/")
  [[ $code == 401 ]] || { echo "auth.sh: $r route without credentials answered $code (want 401)" >&2; exit 1; }
done
log "sanity ok: 200 with credentials, 401 without"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_wrk() { # route secs -> BENCH line
  mapfile -d '' A < <(hdr_args "$1")
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${2}s" --latency -s "$BENCH/wrk-report.lua" "${A[@]}" \
    "http://127.0.0.1:${PORT[$1]}/" | grep '^BENCH'
}
RES=$OUT/auth.tsv
echo -e "round\troute\trps\tp50_us\tp99_us\terrors\tcpu_s" >"$RES"
TICK=$(getconf CLK_TCK)
ORDER=("${ROUTES[@]}")
for ((round = 1; round <= ROUNDS; round++)); do
  for r in "${ORDER[@]}"; do
    [[ $WARMUP -gt 0 ]] && run_wrk "$r" "$WARMUP" >/dev/null
    c0=$(cpu_ticks "${PID[$r]}")
    line=$(run_wrk "$r" "$DURATION")
    c1=$(cpu_ticks "${PID[$r]}")
    eval "$(sed -E 's/^BENCH //; s/ /;/g' <<<"$line")"
    rps=$(python3 -c "print(round($requests/($duration_us/1e6)))")
    # CPU seconds of the proxy per second of measurement.
    cpu=$(python3 -c "print(round(($c1 - $c0) / $TICK / ($duration_us / 1e6), 3))")
    echo -e "$round\t$r\t$rps\t$p50_us\t$p99_us\t$((sockerr + non2xx))\t$cpu" | tee -a "$RES" >&2
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}") # rotate the order each round
done
python3 - "$RES" <<'EOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
routes = list(dict.fromkeys(x["route"] for x in rows))
rounds = sorted({x["round"] for x in rows})
med = lambda r, k: statistics.median(float(x[k]) for x in rows if x["route"] == r)
per_cpu = lambda x: float(x["rps"]) / max(float(x["cpu_s"]), 1e-9)
rps = lambda x: float(x["rps"])
print(f"{'route':10} {'req/s':>9} {'per CPU-s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  (median of {len(rounds)} rounds)")
for r in routes:
    pc = statistics.median(per_cpu(x) for x in rows if x["route"] == r)
    errors = sum(int(x["errors"]) for x in rows if x["route"] == r)
    print(f"{r:10} {med(r, 'rps'):9.0f} {pc:10.0f} {med(r, 'p50_us') / 1000:8.2f} {med(r, 'p99_us') / 1000:8.2f} {errors:6}")
# Ratios per round (same round, adjacent measurements), then their median.
get = lambda rd, r, f: f(next(x for x in rows if x["round"] == rd and x["route"] == r))
def ratio(name, a, b, f, what):
    if a in routes and b in routes:
        rs = [get(rd, a, f) / get(rd, b, f) for rd in rounds]
        print(f"{name:22} {what}: {statistics.median(rs):.3f}  (per round: {', '.join(f'{x:.3f}' for x in rs)})")
ratio("api_key/open", "key", "open", rps, "req/s")
ratio("jwt/open", "jwt", "open", rps, "req/s")
ratio("envoy jwt/open", "envoy-jwt", "envoy-open", rps, "req/s")
ratio("tollgate/envoy, open", "open", "envoy-open", per_cpu, "per CPU-s")
ratio("tollgate/envoy, jwt", "jwt", "envoy-jwt", per_cpu, "per CPU-s")
EOF

# ---- optional profile: the same load per route, tollgate sampled by perf (cpu-clock)
if [[ $PROFILE == 1 ]]; then
  if ! perf_works; then
    log "PROFILE=1: perf does not work here; no profile"
  else
    for r in open key jwt; do
      log "profiling tollgate under the $r route's load (${DURATION}s)"
      perf record -q -F "$PERF_HZ" -e cpu-clock -p "$TG_PID" -o "$OUT/perf-$r.data" -- sleep "$DURATION" 2>"$OUT/perf-$r.log" &
      perf_pid=$!
      line=$(run_wrk "$r" "$DURATION")
      wait "$perf_pid" || true
      eval "$(sed -E 's/^BENCH //; s/ /;/g' <<<"$line")"
      perf_samples "$OUT/perf-$r.data" "$OUT/perf-$r.txt"
      echo "$requests" >"$OUT/perf-$r.requests"
    done
    python3 "$BENCH/profile_diff.py" "$PERF_HZ" "$OUT" open key jwt | tee "$OUT/profile.txt"
  fi
fi
log "results in $OUT"
