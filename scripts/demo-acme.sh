#!/usr/bin/env bash
# `tollgate demo` with certificates over ACME: starts Let's Encrypt's test CA (Debian's
# `pebble`, with `pebble-challtestsrv` answering its DNS) on this machine, runs the demo
# against it, and shows `secure.tollgate.localhost` served with a certificate the demo's
# control service ordered, HTTP-01 answered by the demo's proxy on port 8080.
#
#   scripts/demo-acme.sh            (needs: sudo apt-get install pebble openssl curl)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in pebble pebble-challtestsrv openssl curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "demo-acme: $tool is missing; install it with: sudo apt-get install pebble openssl curl" >&2
        exit 1
    fi
done

work=$(mktemp -d /tmp/tollgate-acme-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# pebble's own HTTPS listener needs a certificate, from a CA the demo's control
# service is told to trust (a self-signed leaf would not do: webpki wants a CA).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj "/CN=tollgate demo pebble CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/pebble.key" -out "$work/pebble.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$work/leaf.ext"
openssl x509 -req -in "$work/pebble.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 7 -extfile "$work/leaf.ext" -out "$work/pebble.pem" 2>/dev/null
cat >"$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key",
  "httpPort": 8080, "tlsPort": 8443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
JSON

# Every name resolves to 127.0.0.1, where the demo's proxy listens.
pebble-challtestsrv -dns01 127.0.0.1:8053 -management 127.0.0.1:8055 -http01 "" -https01 "" \
    -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$work/challtestsrv.log" 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 pebble -config "$work/pebble.json" -dnsserver 127.0.0.1:8053 \
    >"$work/pebble.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf --cacert "$work/ca.pem" https://127.0.0.1:14000/dir >/dev/null && break
    sleep 0.1
done

cargo build --release --bin tollgate
target/release/tollgate demo --acme-directory https://127.0.0.1:14000/dir \
    --acme-ca-root "$work/ca.pem" --acme-propagation-ms 500 &
pids+=($!)

host=secure.tollgate.localhost
echo "demo-acme: waiting for pebble to issue $host's certificate (logs in $work)"
for _ in $(seq 300); do
    curl -sf --cacert "$work/ca.pem" https://127.0.0.1:15000/roots/0 >"$work/root.pem" &&
        curl -sf --cacert "$work/root.pem" --resolve "$host:8443:127.0.0.1" \
            "https://$host:8443/" -o /dev/null && break
    sleep 1
done
echo
echo "demo-acme: $host is served with an ACME-issued certificate:"
curl -sv --cacert "$work/root.pem" --resolve "$host:8443:127.0.0.1" "https://$host:8443/" 2>&1 |
    grep -E "subject:|issuer:|expire date:|HTTP/" || true
echo
echo "  curl --cacert $work/root.pem --resolve $host:8443:127.0.0.1 https://$host:8443/"
echo "demo-acme: the demo keeps running; Ctrl-C stops it and pebble."
wait "${pids[2]}"
