#!/usr/bin/env bash
# TLS passthrough (L4, by SNI): throughput (MB/s) and connection rate (conn/s) through
# tollgate, as ratios to a direct connection and to nginx `stream { ssl_preread }` doing
# the same, measured interleaved in one run (bench/EXTRA.md).
#
#   curl / wrk ──TLS──> direct:      backend nginx (ssl), 100 MB file and a small file
#                       tollgate:    listener mode = "tls_passthrough" ──TCP──> backend
#                       nginx-stream: ssl_preread + proxy_pass              ──TCP──> backend
# TLS is terminated by the backend in all three cases; the proxies only read the SNI.
# SNI is "localhost" (resolves to 127.0.0.1 everywhere, so wrk, which takes SNI from the
# URL, needs no /etc/hosts entry).
#
# Environment: ROUNDS [3] DOWNLOADS [3] (100 MB downloads per target and round)
#              BIG_MB [100] DURATION [5] WARMUP [1] CONNS [16] (wrk, Connection: close)
#              PROXY_CPUS [0] LOAD_CPUS [1] BASE_PORT [18200] SKIP_BUILD [0]
# Needs nginx with the stream modules (Debian: libnginx-mod-stream).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
ROUNDS=${ROUNDS:-3}; DOWNLOADS=${DOWNLOADS:-3}; BIG_MB=${BIG_MB:-100}
DURATION=${DURATION:-5}; DURATION=${DURATION%s}; WARMUP=${WARMUP:-1}; CONNS=${CONNS:-16}
PROXY_CPUS=${PROXY_CPUS:-0}; LOAD_CPUS=${LOAD_CPUS:-1}
BASE_PORT=${BASE_PORT:-18200}; SKIP_BUILD=${SKIP_BUILD:-0}
for t in nginx wrk openssl curl python3 taskset; do
  command -v $t >/dev/null || { echo "l4.sh: $t missing; run bench/setup.sh" >&2; exit 1; }
done
STREAM_SO=
for d in /usr/lib/nginx/modules /usr/share/nginx/modules /usr/lib64/nginx/modules; do
  [[ -e $d/ngx_stream_module.so ]] && STREAM_SO=$d/ngx_stream_module.so && break
done
if [[ -z $STREAM_SO ]] && ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
  echo "l4.sh: nginx has no stream module (Debian: apt-get install libnginx-mod-stream)" >&2; exit 1
fi
BACKEND=$((BASE_PORT + 1)) TG=$((BASE_PORT + 11)) TG_ADMIN=$((BASE_PORT + 19)) NX=$((BASE_PORT + 21))
SNI=localhost
# shellcheck source=bench/common.sh
. "$BENCH/common.sh"
bench_init l4

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=$SNI" -addext "subjectAltName=DNS:$SNI" -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
mkdir -p "$RUN/www" "$RUN/backend-tmp" "$RUN/stream-tmp"
head -c $((BIG_MB * 1024 * 1024)) /dev/urandom >"$RUN/www/big"
echo "small" >"$RUN/www/small"
# nginx workers run unprivileged: they must be able to read the served files.
chmod 755 "$RUN" "$RUN/www"; chmod 644 "$RUN/www/big" "$RUN/www/small"

nginx_head() { # name
  [[ -n $STREAM_SO ]] && echo "load_module $STREAM_SO;"
  cat <<EOF
daemon off;
worker_processes 1;
pid $RUN/$1.pid;
error_log $RUN/$1-error.log warn;
events { worker_connections 16384; }
EOF
}
{ nginx_head backend; cat <<EOF
http {
    access_log off;
    client_body_temp_path $RUN/backend-tmp/body;
    proxy_temp_path $RUN/backend-tmp/proxy;
    fastcgi_temp_path $RUN/backend-tmp/fastcgi;
    uwsgi_temp_path $RUN/backend-tmp/uwsgi;
    scgi_temp_path $RUN/backend-tmp/scgi;
    keepalive_requests 10000000;
    sendfile on;
    ssl_certificate $RUN/cert.pem;
    ssl_certificate_key $RUN/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:$BACKEND ssl backlog=4096;
        root $RUN/www;
    }
}
EOF
} >"$RUN/backend.conf"
{ nginx_head stream; cat <<EOF
stream {
    map \$ssl_preread_server_name \$backend {
        $SNI 127.0.0.1:$BACKEND;
        default 127.0.0.1:1;
    }
    server {
        listen 127.0.0.1:$NX backlog=4096;
        ssl_preread on;
        proxy_pass \$backend;
    }
}
EOF
} >"$RUN/stream.conf"
cat >"$RUN/tollgate.toml" <<EOF
[admin]
listen = "127.0.0.1:$TG_ADMIN"
[log]
format = "text"
access_log = false
[port_policy]
allowed = [$TG]

[[listeners]]
name = "l4"
listen = "127.0.0.1:$TG"
mode = "tls_passthrough"

[[apps]]
id = "backend"
[apps.upstreams.default]
endpoints = [{ address = "127.0.0.1:$BACKEND" }]

[[routes]]
hostname = "$SNI"
listen_port = $TG
app = "backend"
protocol_hint = "tls_passthrough"
EOF
log "backend nginx (CPU $LOAD_CPUS); tollgate and nginx-stream, 1 worker each (CPU $PROXY_CPUS)"
taskset -c "$LOAD_CPUS" nginx -p "$RUN" -c "$RUN/backend.conf" >"$RUN/backend.log" 2>&1 & PIDS+=($!)
taskset -c "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/stream.conf" >"$RUN/stream.log" 2>&1 & PIDS+=($!)
TOKIO_WORKER_THREADS=1 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CPUS" \
  "$RUN/tollgate" proxy --config "$RUN/tollgate.toml" --ready-file "$RUN/ready.json" >"$RUN/tollgate.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [[ -s $RUN/ready.json ]] && break; sleep 0.1; done
[[ -s $RUN/ready.json ]] || { echo "l4.sh: tollgate not ready:" >&2; cat "$RUN/tollgate.log" >&2; exit 1; }
wait_port $BACKEND; wait_port $NX

declare -A PORT=([direct]=$BACKEND [tollgate]=$TG [nginx-stream]=$NX)
for t in direct tollgate nginx-stream; do
  body=$(curl -sS -k --max-time 5 "https://$SNI:${PORT[$t]}/small") || { echo "l4.sh: $t unreachable" >&2; exit 1; }
  [[ $body == small ]] || { echo "l4.sh: $t answered '$body'" >&2; exit 1; }
done
log "sanity ok: all three reach the backend by SNI $SNI"

RES=$OUT/l4.tsv
echo -e "round\ttarget\tmetric\tvalue" >"$RES"
ORDER=(direct tollgate nginx-stream)
for ((round = 1; round <= ROUNDS; round++)); do
  for t in "${ORDER[@]}"; do
    # Throughput: DOWNLOADS sequential downloads of the big file, one connection each.
    tot_b=0 tot_s=0
    for ((i = 0; i < DOWNLOADS; i++)); do
      read -r b s < <(taskset -c "$LOAD_CPUS" curl -sS -k -o /dev/null -w '%{size_download} %{time_total}\n' \
        "https://$SNI:${PORT[$t]}/big")
      tot_b=$((tot_b + b)); tot_s=$(python3 -c "print($tot_s + $s)")
    done
    mbs=$(python3 -c "print(round($tot_b / 1048576 / $tot_s, 1))")
    echo -e "$round\t$t\tMBps\t$mbs" | tee -a "$RES" >&2
    # Connection rate: a new TCP + TLS connection to the backend per request.
    [[ $WARMUP -gt 0 ]] && taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -H 'Connection: close' \
      "https://$SNI:${PORT[$t]}/small" >/dev/null
    line=$(taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" -H 'Connection: close' \
      -s "$BENCH/wrk-report.lua" "https://$SNI:${PORT[$t]}/small" | grep '^BENCH')
    eval "$(sed -E 's/^BENCH //; s/ /;/g' <<<"$line")"
    cps=$(python3 -c "print(round($requests/($duration_us/1e6)))")
    echo -e "$round\t$t\tconnps\t$cps" | tee -a "$RES" >&2
    echo -e "$round\t$t\tconn_p99_us\t$p99_us" >>"$RES"
    echo -e "$round\t$t\terrors\t$((sockerr + non2xx))" >>"$RES"
  done
  ORDER=("${ORDER[@]:1}" "${ORDER[0]}")
done
python3 - "$RES" <<'EOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rounds = sorted({r["round"] for r in rows})
v = lambda rd, t, m: float(next(r["value"] for r in rows if r["round"] == rd and r["target"] == t and r["metric"] == m))
med = lambda t, m: statistics.median(v(rd, t, m) for rd in rounds)
print(f"{'target':13} {'MB/s':>8} {'conn/s':>8} {'p99 ms':>8} {'errors':>6}  (median of {len(rounds)} rounds)")
for t in ("direct", "tollgate", "nginx-stream"):
    print(f"{t:13} {med(t,'MBps'):8.1f} {med(t,'connps'):8.0f} {med(t,'conn_p99_us')/1000:8.2f} {sum(v(rd,t,'errors') for rd in rounds):6.0f}")
for m, name in (("MBps", "throughput"), ("connps", "conn rate")):
    for ref in ("direct", "nginx-stream"):
        rs = [v(rd, "tollgate", m) / v(rd, ref, m) for rd in rounds]
        print(f"{name:10} tollgate/{ref:12} {statistics.median(rs):.3f}  (per round: {', '.join(f'{x:.3f}' for x in rs)})")
EOF
log "results in $OUT"
