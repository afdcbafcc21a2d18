#!/usr/bin/env bash
# Real-data check on FracAtlas (issues 10 and 18): the shipped CPU recipe (it localises: a fracture-map
# head trained on FracAtlas's boxes) and its ensemble partner, each 5-fold cross-validated over all
# 2,826 development films, scored out of fold (image AUC and the boxes: pointing game, AP50, FROC),
# joined by `mura ensemble`, with the toolkit's own commands only.
#
#   scripts/fracatlas_check.sh                   # the deployed model (about 55 min on 2 quiet CPU cores)
#   OTHERS=1 scripts/fracatlas_check.sh          # also the other recipes (configs/fracatlas/*.yaml)
#   RECIPES="configs/fracatlas/lite1_240.yaml" scripts/fracatlas_check.sh   # given recipes only
#
# Leaves the deployed model as runs/fracatlas/final/*.pt: the fold ensembles of the shipped recipe
# (Lite2, 256 px, map head) and of the same recipe without a map at 260 px, each member carrying its
# preprocessing and calibration, all deciding at operating points fitted on the ensemble's out-of-fold
# mean; its findings (boxes) come from the map members, scored at the ensemble's probability:
#   mura predict FOLDER --checkpoint runs/fracatlas/final/*.pt --tta
# Work resumes: finished folds are kept, an interrupted fold continues. Data: ../shared/data/fracatlas
# beside the repo (or FRACATLAS=DIR); outputs under runs/fracatlas (OUT=DIR). FracAtlas: Abedeen et al.,
# Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, CC BY 4.0.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MURA="${MURA:-$ROOT/.venv/bin/mura}"
PY="${PY:-$ROOT/.venv/bin/python}"
DATA="${FRACATLAS:-$ROOT/../shared/data/fracatlas}"
OUT="${OUT:-runs/fracatlas}"
SHIPPED=configs/recipes/fracture_cpu_map.yaml
DEPLOYED=("$SHIPPED" configs/recipes/fracture_cpu.yaml)   # the recipes `mura ensemble` joins
if [ -n "${RECIPES:-}" ]; then
    read -r -a RECIPE_LIST <<< "$RECIPES"
elif [ "${OTHERS:-0}" = 1 ]; then
    RECIPE_LIST=("${DEPLOYED[@]}")
    for config in configs/fracatlas/*.yaml; do
        [[ " ${DEPLOYED[*]} " == *" $config "* ]] || RECIPE_LIST+=("$config")
    done
else
    RECIPE_LIST=("${DEPLOYED[@]}")
fi
mkdir -p "$OUT"
[ -d "$DATA/images" ] || { echo "FracAtlas not found at $DATA (set FRACATLAS=DIR)" >&2; exit 2; }

# 1. Index: FracAtlas layout detected; no patient ids, so folds (and splits) keep blocks of 20
#    consecutive image ids together (neighbouring ids are often views of one study).
[ -f "$OUT/index.csv" ] || "$MURA" index "$DATA" --format folders --block-size 20 --seed 0 --out "$OUT/index.csv"

config_size() { "$PY" -c 'import sys; from mura.config_loading import load_config; print(load_config(sys.argv[1]).model.size)' "$1"; }

# 2. Per recipe: a cache at its input size (a model reads exactly the pixels `mura predict` computes
#    from the file), then k-fold cross-validation; all splits of the index are pooled into the folds.
for config in "${RECIPE_LIST[@]}"; do
    name=$(basename "$config" .yaml)
    size=$(config_size "$config")
    "$MURA" prepare "$OUT/index.csv" --out "$OUT/cache_${size}_stretch" --size "$size" --resize stretch --quiet
    "$MURA" cv --config "$config" --index "$OUT/index.csv" --cache "$OUT/cache_${size}_stretch" \
        --folds 5 --tta --bootstrap 1000 --out "$OUT/$name"
done

# 3. The deployed model: the recipes' fold ensembles as one, operating points fitted on its OOF mean.
MEMBERS=()
for config in "${DEPLOYED[@]}"; do MEMBERS+=("$OUT/$(basename "$config" .yaml)"); done
if ls "${MEMBERS[@]/%//cv.json}" > /dev/null 2>&1; then
    "$MURA" ensemble "${MEMBERS[@]}" --out "$OUT/ensemble" --bootstrap 1000
    rm -rf "$OUT/final" && mkdir -p "$OUT/final" && cp "$OUT"/ensemble/final/*.pt "$OUT/final/"
fi

# 4. One table, out of fold (every film scored by the model that did not see it), flip TTA.
"$PY" - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
def located(loc):
    """Pointing game / AP50 / FROC at 1 false box per film, or why there are none."""
    if not loc or "ap50" not in loc:
        return "no map head" if not loc else loc["status"].split(":")[0]
    figures = (loc["pointing_game"], loc["ap50"], loc["froc"]["1"])
    return " / ".join(f"{f['estimate']:.3f}" if f and f["estimate"] is not None else "-" for f in figures)

print("\n| Recipe | OOF AUC [95% CI] | ECE before -> after (cross-fitted) | suspicious: sens / spec / PPV / NPV "
      "| definite: sens / spec / PPV / NPV | boxes: pointing / AP50 / FROC@1 | CPU h (wall min) |")
print("|---|---|---|---|---|---|---|")
for path in sorted(out.glob("*/cv.json")) + sorted(out.glob("*/ensemble.json")):
    s = json.loads(path.read_text())
    pts = s["operating_points"]
    row = lambda p: " / ".join(f"{pts[p][k]:.2f}" for k in ("sensitivity", "specificity", "ppv", "npv"))
    low, high = s["oof_auc_ci"]
    if "calibration" in s:  # one recipe (`mura cv`)
        method = s["calibration"]["stored"]["method"]
        ece = f"{s['calibration']['ece_before']:.3f} -> {s['calibration']['cross_fitted'][method]['ece']:.3f} ({method})"
        cost = f"{s['seconds']['cpu'] / 3600:.2f} ({s['seconds']['wall'] / 60:.0f})"
    else:  # `mura ensemble`: members keep their calibration
        ece, cost = f"{s['ece']:.3f} (members' own)", "sum of its recipes"
    print(f"| {path.parent.name} | {s['oof_auc']:.3f} [{low:.3f}, {high:.3f}] | {ece} "
          f"| {row('suspicious')} | {row('definite')} | {located(s.get('localisation'))} | {cost} |")
EOF
echo "deployed model: $OUT/final/*.pt"
