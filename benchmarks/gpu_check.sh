#!/usr/bin/env bash
# Episode benchmarks (seed and default presets) and a short training run of the paper config, evaluated on
# BSD68 at the mismatch sigmas. Needs $R3L_DATA and $R3L_WEIGHTS; writes its results into the folder $1.
#   R3L_DATA=... R3L_WEIGHTS=... benchmarks/gpu_check.sh results/
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
device=${DEVICE:-cuda}
python -m r3l --version
python benchmarks/episode.py --preset seed --device "$device" --episodes 5 ${BENCH_ARGS:-} \
  --out "$out/episode_seed.json"
python benchmarks/episode.py --preset default --device "$device" --episodes 10 ${BENCH_ARGS:-} \
  --out "$out/episode_default.json"
timeout "${TRAIN_SECONDS:-300}" python -m r3l train --config configs/r3l_gray_sigma25.yaml \
  --run-dir /tmp/r3l_gpu_run --set train.device="$device" --set train.episodes="${TRAIN_EPISODES:-1500}" \
  --set train.val_every=250 --set train.save_every=250 --set data.workers=6 --set train.tensorboard=false \
  --set train.progress=false ${TRAIN_ARGS:-}
cp /tmp/r3l_gpu_run/metrics.jsonl "$out/"
cp /tmp/r3l_gpu_run/best.safetensors "$out/r3l_gray_sigma25_short.safetensors"
python -m r3l eval --checkpoint /tmp/r3l_gpu_run/best.safetensors --data "$R3L_DATA/BSD68" --sigma 15 \
  --sigma 20 --sigma 25 --sigma 30 --sigma 35 --json "$out/eval_bsd68.json" --quiet --device "$device"
