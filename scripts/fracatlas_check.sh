#!/usr/bin/env bash
# Real-data check on FracAtlas (issue 3): index -> prepare -> train each recipe -> evaluate on the
# held-back test split -> one table. Uses only the toolkit's own commands.
#
#   scripts/fracatlas_check.sh                 # everything (about 1 h on 2 busy CPU cores)
#   ONLY=lite0_224 scripts/fracatlas_check.sh  # one of: scratch_cnn scratch_mnv3 lite0_224 lite0_288 ensemble
#   EVAL_ONLY=1 scripts/fracatlas_check.sh     # re-evaluate existing runs, no training
#
# Data: ../shared/data/fracatlas beside the repo (or FRACATLAS=DIR). Outputs go to runs/fracatlas/
# (git-ignored; OUT=DIR to change). Recipes were chosen on the val split; the test split is evaluated
# once per final recipe. FracAtlas: Abedeen et al., Scientific Data 10, 521 (2023),
# doi:10.1038/s41597-023-02432-4, CC BY 4.0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MURA="${MURA:-$ROOT/.venv/bin/mura}"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${FRACATLAS:-$ROOT/../shared/data/fracatlas}"
WEIGHTS="${WEIGHTS:-$ROOT/../shared/weights/tf_efficientnet_lite0.in1k.safetensors}"
OUT="${OUT:-runs/fracatlas}"
ONLY="${ONLY:-all}"
EVAL_ONLY="${EVAL_ONLY:-0}"
mkdir -p "$OUT"

[ -d "$DATA/images" ] || { echo "FracAtlas not found at $DATA (set FRACATLAS=DIR)" >&2; exit 2; }
[ -f "$WEIGHTS" ] || { echo "weights not found at $WEIGHTS (set WEIGHTS=FILE)" >&2; exit 2; }

# 1. Index: FracAtlas layout detected; val/test carved out in blocks of 20 consecutive image ids
#    (neighbouring ids are often views of one study), fixed seed.
"$MURA" index "$DATA" --format folders --block-size 20 --seed 0 --out "$OUT/index.csv"

# 2. Image caches (uint8, resized once), stretched (letterbox shrinks the anatomy at 224 px), one per
#    model input size: a model reads exactly the pixels `mura predict` computes from the file, so a
#    cache of another size is refused; an ensemble of two sizes is evaluated with one cache per size.
for size in 128 224 288; do
    "$MURA" prepare "$OUT/index.csv" --out "$OUT/cache_${size}_stretch" --size "$size" --resize stretch --quiet
done

want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

train() {  # name config cache [extra flags...]
    local name=$1 config=$2 cache=$3
    shift 3
    [ "$EVAL_ONLY" = 1 ] && return 0
    [ -f "$OUT/$name/train_seconds.txt" ] && return 0  # finished before
    if [ -f "$OUT/$name/last.pt" ]; then set -- "$@" --resume; fi  # finish an interrupted run
    local started=$SECONDS
    "$MURA" train --config "$config" --index "$OUT/index.csv" --cache "$cache" --out "$OUT/$name" "$@"
    mkdir -p "$OUT/$name" && echo "$((SECONDS - started))" > "$OUT/$name/train_seconds.txt"
}

evaluate() {  # eval-name "cache..." checkpoint...
    local name=$1 caches=$2
    shift 2
    # shellcheck disable=SC2086  # one cache per input size, space-separated
    "$MURA" evaluate --checkpoint "$@" --cache $caches --index "$OUT/index.csv" --split test \
        --tta --by hardware --bootstrap 1000 --seed 0 --out "$OUT/eval_$name"
}

if want scratch_cnn; then
    train scratch_cnn configs/fracatlas/scratch_cnn.yaml "$OUT/cache_128_stretch"
    evaluate scratch_cnn "$OUT/cache_128_stretch" "$OUT/scratch_cnn/best.pt"
fi
if want scratch_mnv3; then
    train scratch_mnv3 configs/fracatlas/scratch_mnv3.yaml "$OUT/cache_224_stretch"
    evaluate scratch_mnv3 "$OUT/cache_224_stretch" "$OUT/scratch_mnv3/best.pt"
fi
if want lite0_224; then
    train lite0_224 configs/fracatlas/lite0_224.yaml "$OUT/cache_224_stretch" --model.weights_file "$WEIGHTS"
    evaluate lite0_224 "$OUT/cache_224_stretch" "$OUT/lite0_224/best.pt"
fi
if want lite0_288; then
    train lite0_288 configs/fracatlas/lite0_288.yaml "$OUT/cache_288_stretch" --model.weights_file "$WEIGHTS"
    evaluate lite0_288 "$OUT/cache_288_stretch" "$OUT/lite0_288/best.pt"
fi
if want ensemble; then  # the best recipe on val: both Lite0 runs, probabilities averaged, flip TTA
    evaluate ensemble "$OUT/cache_224_stretch $OUT/cache_288_stretch" "$OUT/lite0_224/best.pt" \
        "$OUT/lite0_288/best.pt"
fi

# 3. One table: held-back test split, image level, flip TTA, thresholds stored at training (val).
"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
print("\n| Recipe | Test AUC [95% CI] | Threshold (suspicious, val) | Accuracy | Sensitivity | Specificity "
      "| Sens. hardware=1 (pos/n) | Sens. hardware=0 (pos/n) | Train s |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ("scratch_cnn", "scratch_mnv3", "lite0_224", "lite0_288", "ensemble"):
    path = out / f"eval_{name}" / "metrics.json"
    if not path.is_file():
        continue
    m = json.loads(path.read_text())
    ci = m["bootstrap"]["default"]["image"]["roc_auc"]
    key = "suspicious" if "suspicious" in m["image"] else "youden" if "youden" in m["image"] else "default"
    img = m["image"][key]
    hw = m["subgroups"]["hardware"][key]
    sens = {str(k): f"{v['sensitivity']:.3f} ({v['n_positive']}/{v['n']})" for k, v in hw.items()}
    runs = ["lite0_224", "lite0_288"] if name == "ensemble" else [name]
    total = sum(int((out / r / "train_seconds.txt").read_text()) for r in runs if (out / r / "train_seconds.txt").is_file())
    print(f"| {name} | {img['roc_auc']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}] | {img['threshold']:.3f} "
          f"| {img['accuracy']:.3f} | {img['sensitivity']:.3f} | {img['specificity']:.3f} "
          f"| {sens.get('1', '-')} | {sens.get('0', '-')} | {total or '-'} |")
EOF
