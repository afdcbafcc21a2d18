#!/usr/bin/env bash
# One short CUDA check of the training/evaluation path (run on a GPU machine; ~3 minutes):
# synthetic MURA -> cache at 224 px -> EfficientNet-B0 and ResNet50 training with bf16 AMP + channels_last
# -> a 1-process torchrun (NCCL) run -> `mura evaluate` on CUDA. Prints the per-epoch logs.
#   PYTHONPATH=src bash benchmarks/gpu_check.sh [WORKDIR] [OUTDIR]
set -euo pipefail
WORK=${1:-/tmp/mura_gpu}
OUT=${2:-$WORK/out}
PATIENTS=${GPU_CHECK_PATIENTS:-400}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python3}
mkdir -p "$WORK" "$OUT"
mura() { "$PY" -m mura "$@"; }
t0=$(date +%s)
mura synth "$WORK/data" --patients "$PATIENTS" --seed 0 >/dev/null
mura index "$WORK/data" --out "$WORK/index.csv" >/dev/null
mura prepare "$WORK/index.csv" --out "$WORK/cache" --size 224 --quiet
echo "data ready in $(( $(date +%s) - t0 ))s"
common=(--index "$WORK/index.csv" --cache "$WORK/cache" --device "$DEVICE" --epochs 2 --batch_size 64
        --workers 4 --amp true --channels_last true --early_stopping_patience 0 --pretrained false)
for model in efficientnet_b0 resnet50; do
  mura train --config "configs/$model.yaml" "${common[@]}" --out "$WORK/$model" --freeze full 2>&1 \
    | grep -v "it/s\]" | tail -4
  cp "$WORK/$model/metrics.csv" "$OUT/train_$model.csv"
done
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m mura train \
  --config configs/efficientnet_b0.yaml "${common[@]}" --epochs 1 --out "$WORK/ddp" 2>&1 | grep -v "it/s\]" | tail -3
cp "$WORK/ddp/metrics.csv" "$OUT/train_ddp.csv"
mura evaluate --checkpoint "$WORK/efficientnet_b0/best.pt" --index "$WORK/index.csv" --cache "$WORK/cache" \
  --out "$WORK/eval" --bootstrap 200 --device "$DEVICE" | tail -2
cp "$WORK/eval/metrics.json" "$OUT/eval_metrics.json"
echo "gpu check done in $(( $(date +%s) - t0 ))s"
