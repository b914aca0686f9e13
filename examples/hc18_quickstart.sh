#!/usr/bin/env bash
# The quick start on real data: HC18 fetal-head ultrasound (../shared/data/hc18, CC BY 4.0),
# read in place. Search -> decode (rendered) -> train -> evaluate on fold 0, at 64x64 with the
# `quick` space. Pass another output folder as $1; extra options go to `msnas-graph quickstart`.
#
#   bash examples/hc18_quickstart.sh runs/hc18
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${HC18:-$HERE/../../shared/data/hc18}"
OUT="${1:-runs/hc18}"
shift || true
if [ ! -d "$DATA/images" ]; then
  echo "HC18 not found at $DATA (set HC18=/path/to/hc18)" >&2
  exit 1
fi
msnas-graph quickstart "$OUT" --data "$DATA" --folds "$DATA/folds.json" --test-fold 0 \
  --space quick --search-epochs 2,2 --train-epochs 10 --max-steps 40 "$@"
