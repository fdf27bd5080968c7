#!/usr/bin/env bash
# Every GPU measurement in one run, sized for a 15-minute device session, most important first: episode
# benchmarks (seed preset bf16/fp32/fp16, default preset bf16, seed bf16 compiled), a profile of one seed
# episode, inference on BSD68 and a tiled 4096x4096 image, data-loader throughput, then a short training run of
# the paper config evaluated on BSD68 at the mismatch sigmas. A failing step is logged and the rest still run.
# Needs $R3L_DATA (with Train400 and BSD68) and $R3L_WEIGHTS.
#   R3L_DATA=... R3L_WEIGHTS=... benchmarks/gpu_check.sh results/
# Each step leaves NAME.json (where it measures) and NAME.log; steps.txt has every step's exit status and time;
# the training run (checkpoints, metrics.jsonl) is in run/. On a device machine, pack the folder into $OUT:
#   benchmarks/gpu_check.sh /tmp/gc; tar czf $OUT/gpu_check.tgz -C /tmp gc
# A CPU dry run with small sizes checks the script itself:
#   DEVICE=cpu EPISODES=1 BENCH_ARGS="--batch 4 --crop 16 --set model.features=8" INFER_ARGS="--max-images 2 \
#     --repeats 1" LARGE=300 DATA_ARGS="--batches 20" TRAIN_EPISODES=4 TRAIN_ARGS="--set model.features=8 \
#     --set model.init=scratch --set data.crop=24 --set data.batch_size=4 --set data.workers=1 \
#     --set train.val_every=2 --set data.val_max_images=2" R3L_DATA=... benchmarks/gpu_check.sh /tmp/gpu_check_dry
# The training step ends with exit 124 when TRAIN_SECONDS cut it short; its best checkpoint is still evaluated.
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
device=${DEVICE:-cuda}
step() {  # step NAME COMMAND...: run, time and log one measurement
  local name=$1 start=$SECONDS
  shift
  "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}
python -m r3l --version | tee "$out/steps.txt"
episode() {  # episode NAME PRESET ARGS...
  local name=$1 preset=$2
  shift 2
  step "$name" python benchmarks/episode.py --preset "$preset" --device "$device" --episodes "${EPISODES:-5}" \
    ${BENCH_ARGS:-} --out "$out/$name.json" "$@"
}
episode episode_seed_bf16 seed --set train.precision=bf16
episode episode_seed_fp32 seed --set train.precision=fp32
episode episode_default_bf16 default --set train.precision=bf16
episode episode_seed_fp16 seed --set train.precision=fp16
episode episode_seed_bf16_compiled seed --set train.precision=bf16 --set train.compile=all
step profile_seed_bf16 python benchmarks/profile_episode.py --preset seed --device "$device" ${BENCH_ARGS:-} \
  --set train.precision=bf16 --out "$out/profile_seed_bf16.json"
step inference python benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" --large "${LARGE:-4096}" \
  ${INFER_ARGS:-} --out "$out/inference.json"
step data_loader python benchmarks/data_loader.py --data "$R3L_DATA/Train400" --workers 0 2 6 --device "$device" \
  ${DATA_ARGS:-} --out "$out/data_loader.json"
step train timeout "${TRAIN_SECONDS:-240}" python -m r3l train --config configs/r3l_gray_sigma25.yaml \
  --run-dir "$out/run" --set train.device="$device" --set train.episodes="${TRAIN_EPISODES:-1500}" \
  --set train.val_every=250 --set train.save_every=250 --set data.workers=6 --set train.tensorboard=false \
  --set train.progress=false ${TRAIN_ARGS:-}
step eval python -m r3l eval --checkpoint "$out/run/best.safetensors" --data "$R3L_DATA/BSD68" \
  --sigma 15 --sigma 20 --sigma 25 --sigma 30 --sigma 35 --json "$out/eval_bsd68.json" --quiet --device "$device"
