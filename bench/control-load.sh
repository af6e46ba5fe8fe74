#!/usr/bin/env bash
# Control writes: commands/s loading apps, one hostname each and API keys through
# POST /api/v1/batch vs single commands, at each scale in SCALES. Only the control
# crate is built (its `control_load` example runs the service in-process on a fresh
# store and drives its HTTP API); no proxy. bench/EXTRA.md has the figures.
#
# Per scale N: (1) N apps + N hostnames + N*KEYS_PER_APP keys in batches of <= BATCH
# commands (each app's create, bind and keys in the same batch) on BATCH_CLIENTS
# clients; (2) on top of that, PROBE more of each kind as single commands on CLIENTS
# clients (the single-write rate at scale N); (3) on a second fresh store, the same N
# through single commands only, from an empty log (SQLite only; skip with
# SINGLE_FROM_EMPTY=0).
#
# Environment: SCALES ["1000 5000"] KEYS_PER_APP [1] CLIENTS [8] BATCH [999]
#              BATCH_CLIENTS [2] PROBE [300] SINGLE_FROM_EMPTY [1] SKIP_BUILD [0]
#              CERTS [0] (certificate uploads on top, one per hostname)
#              STORE (a postgres:// URL; a temporary SQLite file without it)
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
SCALES=${SCALES:-"1000 5000"}; SKIP_BUILD=${SKIP_BUILD:-0}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$BENCH/results/$STAMP-control-load
mkdir -p "$OUT"
if [[ $SKIP_BUILD != 1 ]]; then
  echo "[control-load] building the control_load example (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p tollgate-control --example control_load)
fi
BIN=$(mktemp /tmp/control_load.XXXXXX)
trap 'rm -f "$BIN"' EXIT
cp "$ROOT/target/release/examples/control_load" "$BIN"; chmod +x "$BIN"
{
  echo "# control-load  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  $(git -C "$ROOT" rev-parse --short HEAD) (+ working tree)"
  for n in $SCALES; do
    APPS=$n RUST_LOG=${RUST_LOG:-warn} "$BIN"
  done
} 2>&1 | tee "$OUT/summary.txt"
echo "[control-load] results in $OUT" >&2
