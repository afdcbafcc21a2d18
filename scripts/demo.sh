#!/usr/bin/env bash
# The main job (`make demo`): synthetic MURA -> index -> cache -> the spec's four models (CPU-sized
# configs) -> evaluation of each on the test split -> runs/demo/report.html with Tables 8 and 9.
#
# The models train in DEMO_JOBS parallel lanes (default 2), each on one thread: on 2 cores that keeps
# both busy, where one model on two threads left a third of the machine idle (small convolutions split
# badly across threads). Each model's output goes to DEMO_DIR/logs/ (<model>.train.log, .eval.log);
# this script prints one line per finished step.
#
# Idempotent: a rerun reuses the data, index, cache, trained checkpoints and evaluations that are
# already complete (delete runs/demo, or a model's folder, to redo them).
# Every row must learn: the run fails, naming the row, when a model's test ROC AUC is below
# DEMO_MIN_AUC (0.75) or its body-part accuracy below DEMO_MIN_BODY_PART (0.9).
# Knobs (environment): DEMO_DIR, DEMO_PATIENTS, DEMO_MODELS, DEMO_CONFIGS, DEMO_JOBS, DEMO_BOOTSTRAP,
# DEMO_MIN_AUC, DEMO_MIN_BODY_PART, MURA, PYTHON.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
MURA=${MURA:-$ROOT/.venv/bin/mura}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DEMO=${DEMO_DIR:-runs/demo}
PATIENTS=${DEMO_PATIENTS:-600}
MODELS=${DEMO_MODELS:-custom_cnn resnet50 densenet169 efficientnet_b0}
CONFIGS=${DEMO_CONFIGS:-configs/demo}
JOBS=${DEMO_JOBS:-2}
BOOTSTRAP=${DEMO_BOOTSTRAP:-1000}
MIN_AUC=${DEMO_MIN_AUC:-0.75}
MIN_BODY_PART=${DEMO_MIN_BODY_PART:-0.9}
START=$(date +%s)

step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

[ -x "$MURA" ] || { echo "demo: $MURA not found; run \`make demo\` (it creates .venv)" >&2; exit 2; }
LOGS="$DEMO/logs"
mkdir -p "$LOGS"

step "synthetic MURA ($PATIENTS patients)"
if [ -f "$DEMO/data/.complete" ]; then
  echo "reusing $DEMO/data"
else
  rm -rf "$DEMO/data"
  "$MURA" synth "$DEMO/data" --patients "$PATIENTS" --seed 0
  touch "$DEMO/data/.complete"
fi

step "index"
if [ -f "$DEMO/index.csv" ] && [ "$DEMO/index.csv" -nt "$DEMO/data/.complete" ]; then
  echo "reusing $DEMO/index.csv"
else
  "$MURA" index "$DEMO/data" --out "$DEMO/index.csv"
fi

# Each config says its input size; one cache per distinct size (`mura prepare` reuses an up-to-date one).
declare -A SIZE
SIZES=$("$PYTHON" - "$CONFIGS" $MODELS <<'PY'
import sys
from pathlib import Path

from mura.config_loading import load_config

for model in sys.argv[2:]:
    config = Path(sys.argv[1]) / f"{model}.yaml"
    if not config.is_file():
        sys.exit(f"demo: {config} not found")
    print(model, load_config(config).model.size)
PY
)
while read -r model size; do SIZE[$model]=$size; done <<< "$SIZES"
for size in $(printf '%s\n' "${SIZE[@]}" | sort -un); do
  step "cache at ${size}px"
  "$MURA" prepare "$DEMO/index.csv" --out "$DEMO/cache_$size" --size "$size" --quiet
done

failed() { tail -5 "$LOGS/$1.$2.log" >&2; echo "demo: $2 of $1 failed (log: $LOGS/$1.$2.log)" >&2; }

# One model: train (unless an up-to-date best.pt exists), then evaluate on the test split.
pipeline() {
  local model=$1 config="$CONFIGS/$1.yaml" cache="$DEMO/cache_${SIZE[$1]}" run="$DEMO/$1" log="$LOGS/$1"
  if [ -f "$run/best.pt" ] && [ "$run/best.pt" -nt "$config" ] && [ "$run/best.pt" -nt "$DEMO/index.csv" ]; then
    step "reusing $run/best.pt"
  else
    "$MURA" train --config "$config" --index "$DEMO/index.csv" --cache "$cache" --out "$run" --overwrite \
      > "$log.train.log" 2>&1 || { failed "$model" train; return 1; }
    step "trained $model: $(tail -1 "$log.train.log")"
  fi
  if [ -f "$run/eval/metrics.json" ] && [ "$run/eval/metrics.json" -nt "$run/best.pt" ]; then
    step "reusing $run/eval"
  else
    "$MURA" evaluate --checkpoint "$run/best.pt" --index "$DEMO/index.csv" --cache "$cache" \
      --split test --out "$run/eval" --bootstrap "$BOOTSTRAP" --device cpu > "$log.eval.log" 2>&1 \
      || { failed "$model" eval; return 1; }
    step "evaluated $model: $(tr '\r' '\n' < "$log.eval.log" | grep '^AUC')"
  fi
}

read -r -a MODEL_LIST <<< "$MODELS"
step "train and evaluate ${MODEL_LIST[*]} in $JOBS lanes, one thread each (logs: $LOGS)"
# A shared queue, longest first (the two deep nets trained from scratch cost 2-5x the others), so no
# lane idles while another still holds two models; a lane claims a model by creating its claim folder
# (mkdir is atomic).
QUEUE=()
for model in resnet50 densenet169 "${MODEL_LIST[@]}"; do
  if [[ " ${MODEL_LIST[*]} " == *" $model "* && " ${QUEUE[*]} " != *" $model "* ]]; then QUEUE+=("$model"); fi
done
CLAIMS="$LOGS/.claims"
rm -rf "$CLAIMS" && mkdir -p "$CLAIMS"
LANES=()
for (( lane = 0; lane < JOBS; lane++ )); do
  (
    export OMP_NUM_THREADS=1
    for model in "${QUEUE[@]}"; do
      if mkdir "$CLAIMS/$model" 2>/dev/null; then pipeline "$model"; fi
    done
  ) &
  LANES+=($!)
done
lane_failed=0
for pid in "${LANES[@]}"; do wait "$pid" || lane_failed=1; done
[ "$lane_failed" = 0 ] || exit 1
EVALS=()
for model in "${MODEL_LIST[@]}"; do EVALS+=("$DEMO/$model/eval"); done

step "compare (the spec's Tables 8 and 9)"
"$MURA" compare "${EVALS[@]}" --out "$DEMO"

step "floors: test ROC AUC >= $MIN_AUC, body-part accuracy >= $MIN_BODY_PART"
# Prints one line per row; exits 1 when any row is below a floor.
"$PYTHON" - "$MIN_AUC" "$MIN_BODY_PART" "${EVALS[@]}" <<'PY'
import json, sys
from pathlib import Path

min_auc, min_body_part = float(sys.argv[1]), float(sys.argv[2])
below = []
for folder in map(Path, sys.argv[3:]):
    metrics = json.loads((folder / "metrics.json").read_text())
    row = folder.parent.name
    auc = metrics["image"]["default"].get("roc_auc")
    body_part = metrics.get("body_part", {}).get("accuracy")
    ok = auc is not None and body_part is not None and auc >= min_auc and body_part >= min_body_part
    shown = [f"{v:.3f}" if v is not None else "undefined" for v in (auc, body_part)]
    print(f"{'ok   ' if ok else 'BELOW'} {row}: test ROC AUC {shown[0]}, body-part accuracy {shown[1]}")
    if not ok:
        below.append(row)
if below:
    sys.exit(f"demo: below the floor: {', '.join(below)} (ROC AUC >= {min_auc}, body part >= {min_body_part})")
PY

step "done in $(( $(date +%s) - START ))s"
echo "report: $(cd "$DEMO" && pwd)/report.html"
