#!/usr/bin/env bash
# Proxy apply cost at tenant scale (issue 12): the `apply_cost` example builds a model
# of APPS apps (one hostname, one route, KEYS_PER_APP keys each) and CERTS per-host
# certificates, hands it to a real follower as a feed snapshot (a cold start), then
# applies DELTAS single events of each kind and prints p50/p99/max per apply, the
# whole-config stages timed apart, and RSS. In-process: no control service, no network.
# bench/EXTRA.md has the figures.
#
# Environment: APPS [10000] KEYS_PER_APP [10] CERTS [APPS] DELTAS [50] WORKERS [2]
# (serving workers the per-worker upstream pools are sized for) SKIP_BUILD [0]
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP-proxy-apply
mkdir -p "$OUT"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  echo "[proxy-apply] building the apply_cost example (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p tollgate-proxy --example apply_cost)
fi
{
  echo "# proxy-apply  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  $(git -C "$ROOT" rev-parse --short HEAD) (+ working tree)"
  RUST_LOG=${RUST_LOG:-warn} /usr/bin/time -v "$ROOT/target/release/examples/apply_cost" 2>&1 \
    | grep -v -E '^\s+(Page|Socket|Signal|Swap|File|Average|Volunt|Invol|Minor|Major|Exit|Percent|Elapsed|Command)'
} | tee "$OUT/summary.txt"
echo "[proxy-apply] results in $OUT" >&2
