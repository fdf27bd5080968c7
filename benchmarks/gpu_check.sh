#!/usr/bin/env bash
# Every GPU measurement in one run, sized for a 15-minute device session: episode benchmarks (seed and default
# presets, fp32 and bf16), inference on BSD68 and a tiled 4096x4096 image, and a short training run of the
# paper config evaluated on BSD68 at the mismatch sigmas. Needs $R3L_DATA and $R3L_WEIGHTS.
#   R3L_DATA=... R3L_WEIGHTS=... benchmarks/gpu_check.sh results/
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
device=${DEVICE:-cuda}
python -m r3l --version
for preset in seed default; do
  for precision in fp32 bf16; do
    python benchmarks/episode.py --preset $preset --device "$device" --episodes 5 ${BENCH_ARGS:-} \
      --set train.precision=$precision --out "$out/episode_${preset}_${precision}.json"
  done
done
python benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" --large "${LARGE:-4096}" ${INFER_ARGS:-} \
  --out "$out/inference.json"
timeout "${TRAIN_SECONDS:-300}" python -m r3l train --config configs/r3l_gray_sigma25.yaml \
  --run-dir /tmp/r3l_gpu_run --set train.device="$device" --set train.episodes="${TRAIN_EPISODES:-1500}" \
  --set train.val_every=250 --set train.save_every=250 --set data.workers=6 --set train.tensorboard=false \
  --set train.progress=false ${TRAIN_ARGS:-}
cp /tmp/r3l_gpu_run/metrics.jsonl "$out/"
python -m r3l eval --checkpoint /tmp/r3l_gpu_run/best.safetensors --data "$R3L_DATA/BSD68" --sigma 15 \
  --sigma 20 --sigma 25 --sigma 30 --sigma 35 --json "$out/eval_bsd68.json" --quiet --device "$device"
