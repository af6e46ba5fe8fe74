#!/usr/bin/env bash
# Puts `promtool` at target/tools/promtool for the metrics exposition test, taken from
# Debian's `prometheus` package without installing it (no service, no user, no files
# outside target/). Idempotent: does nothing when the tool is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="target/tools/promtool"
if [[ -x "$dest" ]]; then
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(
    cd "$work"
    if ! apt-get download prometheus >/dev/null 2>&1; then
        echo "fetch-promtool: package lists look stale; running apt-get update" >&2
        apt-get update -qq
        apt-get download prometheus
    fi
)
deb=("$work"/prometheus_*.deb)
if [[ ! -f "${deb[0]}" ]]; then
    echo "fetch-promtool: apt-get download prometheus produced no .deb" >&2
    exit 1
fi
dpkg-deb -x "${deb[0]}" "$work/root"
if [[ ! -x "$work/root/usr/bin/promtool" ]]; then
    echo "fetch-promtool: ${deb[0]##*/} holds no usr/bin/promtool" >&2
    exit 1
fi

mkdir -p "$(dirname "$dest")"
# Copy then rename, so a concurrent run never sees a half-written binary.
cp "$work/root/usr/bin/promtool" "$dest.tmp.$$"
chmod 755 "$dest.tmp.$$"
mv -f "$dest.tmp.$$" "$dest"
echo "fetch-promtool: installed $("$dest" --version 2>&1 | head -n1) at $dest" >&2
