#!/usr/bin/env bash
# Cost of edge authentication: requests/s of an API-key route and a JWT route as ratios
# to the same route without auth, measured interleaved in one run (bench/EXTRA.md).
#
#   load (wrk -t1 -c$CONNS) ──> tollgate ──HTTP/1.1 keep-alive──> upstream nginx (return 200)
#     open.bench    no auth
#     key.bench     auth = { api_keys = true }      Authorization: Bearer sk_test_bench_…
#     jwt.bench     auth = { issuers = ["bench"] }  Authorization: Bearer <RS256 JWT>
# The JWT issuer is a static discovery document + JWKS served by python3 http.server on
# loopback (http:// issuers are allowed on loopback only). The token is signed once with
# `openssl dgst -sha256 -sign`; every request carries the same token and the same key.
#
# Environment: DURATION [5] WARMUP [2] ROUNDS [3] CONNS [64] PROXY_CPUS [0] LOAD_CPUS [1]
#              BASE_PORT [18100] SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
DURATION=${DURATION:-5}; DURATION=${DURATION%s}
WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}
BASE_PORT=${BASE_PORT:-18100}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in nginx wrk openssl curl python3 taskset sha256sum; do
  command -v $t >/dev/null || { echo "auth.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
UP=$((BASE_PORT + 1)) IDP=$((BASE_PORT + 2)) TG=$((BASE_PORT + 11)) TG_ADMIN=$((BASE_PORT + 19))
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init auth

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

declare -A HDRS=([open]="" [key]="Authorization: Bearer $KEY" [jwt]="Authorization: Bearer $JWT")
hdr_args() { [[ -n ${HDRS[$1]} ]] && printf '%s\0' -H "${HDRS[$1]}"; printf '%s\0' -H "Host: $1.bench"; }
# Sanity: each route answers 200 with its credential, and the auth routes 401 without.
for r in open key jwt; do
  mapfile -d '' A < <(hdr_args $r)
  code=$(curl -s -o /dev/null -w '%{http_code}' "${A[@]}" "http://127.0.0.1:$TG/")
  [[ $code == 200 ]] || { echo "auth.sh: $r route answered $code" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
done
for r in key jwt; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $r.bench" "http://127.0.0.1:$TG/")
  [[ $code == 401 ]] || { echo "auth.sh: $r route without credentials answered $code (want 401)" >&2; exit 1; }
done
log "sanity ok: 200 with credentials, 401 without"

run_wrk() { # route secs -> BENCH line
  mapfile -d '' A < <(hdr_args $1)
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${2}s" --latency -s "$BENCH/wrk-report.lua" "${A[@]}" \
    "http://127.0.0.1:$TG/" | grep '^BENCH'
}
RES=$OUT/auth.tsv
echo -e "round\troute\trps\tp50_us\tp99_us\terrors" >"$RES"
ORDER=(open key jwt)
for ((round = 1; round <= ROUNDS; round++)); do
  for r in "${ORDER[@]}"; do
    [[ $WARMUP -gt 0 ]] && run_wrk "$r" "$WARMUP" >/dev/null
    line=$(run_wrk "$r" "$DURATION")
    eval "$(sed -E 's/^BENCH //; s/ /;/g' <<<"$line")"
    rps=$(python3 -c "print(round($requests/($duration_us/1e6)))")
    echo -e "$round\t$r\t$rps\t$p50_us\t$p99_us\t$((sockerr + non2xx))" | tee -a "$RES" >&2
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}") # rotate the order each round
done
python3 - "$RES" <<'EOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda r, k: statistics.median(float(x[k]) for x in rows if x["route"] == r)
print(f"{'route':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  (median of {len(rows)//3} rounds)")
for r in ("open", "key", "jwt"):
    print(f"{r:6} {med(r,'rps'):9.0f} {med(r,'p50_us')/1000:8.2f} {med(r,'p99_us')/1000:8.2f} {sum(int(x['errors']) for x in rows if x['route']==r):6}")
# Ratios per round (same round, adjacent measurements), then their median.
rounds = sorted({x["round"] for x in rows})
get = lambda rd, r: float(next(x["rps"] for x in rows if x["round"] == rd and x["route"] == r))
for r in ("key", "jwt"):
    ratios = [get(rd, r) / get(rd, "open") for rd in rounds]
    print(f"{'api_key' if r == 'key' else 'jwt'}/open req/s: {statistics.median(ratios):.3f}  (per round: {', '.join(f'{x:.3f}' for x in ratios)})")
EOF
log "results in $OUT"
