# Peers for bench/connect.sh (sourced, not run): other proxies in tollgate's place between
# rpc-load and the TestService upstream, each with one worker on PROXY_CPUS, speaking
# h2c (prior knowledge) on both sides.
#
#   nginx    `grpc_pass`                                     gRPC
#   haproxy  `proto h2` on the bind and the server           gRPC
#   envoy    router over an HTTP/2 cluster                   gRPC
#            + `envoy.filters.http.grpc_web`                 gRPC-Web -> gRPC
#            + `envoy.filters.http.connect_grpc_bridge`      Connect (proto) -> gRPC
#
# Expects RUN, BENCH, UP, PROXY_CPUS, PIDS and log/wait_port (bench/common.sh). Sets
# PEER_PID[name] and PEER_PORT[name] for every peer started; a peer whose binary is
# missing is skipped with a line on stderr, as bench/run.sh does.
declare -A PEER_PID PEER_PORT

peer_nginx() { # port
  mkdir -p "$RUN/nginx-rpc-tmp"
  # master_process off: one process, so its PID is the worker whose CPU is counted.
  cat >"$RUN/nginx-rpc.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $RUN/nginx-rpc.pid;
error_log $RUN/nginx-rpc-error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $RUN/nginx-rpc-tmp/body;
    proxy_temp_path $RUN/nginx-rpc-tmp/proxy;
    fastcgi_temp_path $RUN/nginx-rpc-tmp/fastcgi;
    uwsgi_temp_path $RUN/nginx-rpc-tmp/uwsgi;
    scgi_temp_path $RUN/nginx-rpc-tmp/scgi;
    upstream rpc { server 127.0.0.1:$UP; keepalive 16; }
    server {
        listen 127.0.0.1:$1 http2;
        http2_max_requests 100000000;
        http2_max_concurrent_streams 1024;
        keepalive_requests 100000000;
        grpc_read_timeout 300s;
        location / { grpc_pass grpc://rpc; }
    }
}
EOF
  taskset -c "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx-rpc.conf" >"$RUN/nginx-rpc.log" 2>&1 &
}

peer_haproxy() { # port
  cat >"$RUN/haproxy-rpc.cfg" <<EOF
global
    nbthread 1
    maxconn 8192
    log stderr format raw local0 warning
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend rpc
    bind 127.0.0.1:$1 proto h2
    default_backend rpc_upstream
backend rpc_upstream
    server up 127.0.0.1:$UP proto h2
EOF
  taskset -c "$PROXY_CPUS" haproxy -f "$RUN/haproxy-rpc.cfg" >"$RUN/haproxy-rpc.log" 2>&1 &
}

peer_envoy() { # port
  cat >"$RUN/envoy-rpc.yaml" <<EOF
static_resources:
  listeners:
  - name: rpc
    address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: rpc
          codec_type: HTTP2
          http2_protocol_options: { max_concurrent_streams: 1024 }
          route_config:
            virtual_hosts:
            - name: rpc
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: rpc_upstream, timeout: 0s }
          http_filters:
          - name: envoy.filters.http.grpc_web
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb
          - name: envoy.filters.http.connect_grpc_bridge
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: rpc_upstream
    type: STATIC
    connect_timeout: 5s
    circuit_breakers:
      thresholds:
      - { max_connections: 100000, max_pending_requests: 100000, max_requests: 100000 }
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: { max_concurrent_streams: 1024 } }
    load_assignment:
      cluster_name: rpc_upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP } } }
EOF
  taskset -c "$PROXY_CPUS" "$ENVOY" -c "$RUN/envoy-rpc.yaml" --concurrency 1 \
    --disable-hot-restart --log-level warn --base-id $$ >"$RUN/envoy-rpc.log" 2>&1 &
}

# start_peers PORT_BASE NAMES...: starts each named peer on its own port from PORT_BASE.
start_peers() {
  local port=$1 name
  shift
  ENVOY=${ENVOY:-$(command -v envoy || echo "$BENCH/results/envoy-venv/bin/envoy")}
  for name in "$@"; do
    case $name in
      nginx) command -v nginx >/dev/null || { log "peer nginx skipped: no nginx"; continue; } ;;
      haproxy) command -v haproxy >/dev/null || { log "peer haproxy skipped: no haproxy"; continue; } ;;
      envoy) [[ -x $ENVOY ]] || { log "peer envoy skipped: no envoy (bench/setup.sh)"; continue; } ;;
      *) log "peer $name skipped: unknown (known: nginx haproxy envoy)"; continue ;;
    esac
    "peer_$name" "$port"
    PEER_PID[$name]=$!
    PEER_PORT[$name]=$port
    PIDS+=("${PEER_PID[$name]}")
    wait_port "$port"
    port=$((port + 1))
  done
}
