#!/usr/bin/env bash
# Quick start (`make quickstart`): from a fresh clone to a prediction on a real radiograph in minutes.
# FracAtlas -> index -> 128 px cache -> a small pretrained model (configs/fracatlas/quick.yaml) ->
# its figures on the held-out test split -> `mura predict` on one held-out film, printed as JSON.
#
# Data: FracAtlas (Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4,
# CC BY 4.0), read from ../shared/data/fracatlas beside the repository or FRACATLAS=DIR; nothing is copied.
# Outputs under runs/quickstart (QUICKSTART_DIR=DIR); a rerun reuses every finished step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
MURA=${MURA:-$ROOT/.venv/bin/mura}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DATA=${FRACATLAS:-$ROOT/../shared/data/fracatlas}
OUT=${QUICKSTART_DIR:-runs/quickstart}
CONFIG=configs/fracatlas/quick.yaml
START=$(date +%s)

step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

[ -x "$MURA" ] || { echo "quickstart: $MURA not found; run \`make quickstart\` (it creates .venv)" >&2; exit 2; }
[ -f "$DATA/dataset.csv" ] || {
  echo "quickstart: no FracAtlas at $DATA: download it from https://doi.org/10.6084/m9.figshare.22363012, unzip, and set FRACATLAS=path/to/FracAtlas" >&2
  exit 2
}
mkdir -p "$OUT"

step "index FracAtlas ($DATA)"
# No patient ids: splits keep blocks of 20 consecutive image ids together (neighbours are often one study).
[ -f "$OUT/index.csv" ] || "$MURA" index "$DATA" --format folders --block-size 20 --seed 0 --out "$OUT/index.csv"

step "cache at 128 px"
"$MURA" prepare "$OUT/index.csv" --out "$OUT/cache_128" --size 128 --quiet

step "train $CONFIG (EfficientNet-Lite0, ImageNet weights, 2 epochs)"
if [ -f "$OUT/model/best.pt" ] && [ "$OUT/model/best.pt" -nt "$CONFIG" ]; then
  echo "reusing $OUT/model/best.pt"
else
  "$MURA" train --config "$CONFIG" --index "$OUT/index.csv" --cache "$OUT/cache_128" --out "$OUT/model" \
    --overwrite > "$OUT/train.log" 2>&1 || { tail -5 "$OUT/train.log" >&2; exit 1; }
  tail -1 "$OUT/train.log"
fi

step "evaluate on the held-out test split (films the model never saw)"
"$MURA" evaluate --checkpoint "$OUT/model/best.pt" --index "$OUT/index.csv" --cache "$OUT/cache_128" \
  --split test --out "$OUT/eval" --bootstrap 1000 --device cpu 2> "$OUT/eval.log"

FILM=$("$PYTHON" - "$OUT/index.csv" <<'PY'
import csv, sys

rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["split"] == "test" and r["label"] == "1"]
print(rows[0]["path"])
PY
)
step "mura predict $FILM (a fractured film of the test split)"
"$MURA" predict "$FILM" --checkpoint "$OUT/model/best.pt" --format jsonl 2>> "$OUT/eval.log" \
  | "$PYTHON" -m json.tool

step "done in $(( $(date +%s) - START ))s"
echo "report: $(cd "$OUT" && pwd)/eval/report.html; your own films: $MURA predict FOLDER --checkpoint $OUT/model/best.pt"
