#!/usr/bin/env bash
# Every GPU measurement in one run, sized for a 15-minute device session, most important first: does training
# learn in every precision x compile combination (benchmarks/learning.py, six runs side by side for
# LEARN_SECONDS, validation every LEARN_VAL_EVERY episodes; learning_*.json and learning_*/metrics.jsonl), episode
# benchmarks (seed and default presets in bf16 and fp32), a profile of one seed episode, inference on BSD68
# (fp32 with a tiled 4096x4096 image, and bf16), data-loader throughput, a timed training run of
# configs/r3l_gray_sigma25.yaml (TRAIN_SECONDS, then its wall-clock summary and a BSD68 evaluation at the
# mismatch sigmas), and last the optional paths: fp16 and torch.compile. A failing step is logged and the rest
# still run; each step is cut at STEP_SECONDS. With PACK=FILE.tgz the folder is packed there after every step, so
# a run stopped from outside still returns what it measured. ONLY="NAME ..." runs just the steps named.
# Needs $R3L_DATA (with Train400 and BSD68) and $R3L_WEIGHTS.
#   R3L_DATA=... R3L_WEIGHTS=... benchmarks/gpu_check.sh results/
# Each step leaves NAME.json (where it measures) and NAME.log; steps.txt has every step's exit status and time;
# the training run (checkpoints, metrics.jsonl) is in run/. On a device machine, pack the folder into $OUT:
#   PACK=$OUT/gpu_check.tgz benchmarks/gpu_check.sh /tmp/gc
# A CPU dry run with small sizes checks the script itself:
#   PYTHON=.venv/bin/python DEVICE=cpu EPISODES=1 BENCH_ARGS="--batch 4 --crop 16 --set model.features=8" \
#     INFER_ARGS="--max-images 2 --repeats 1" LARGE=300 DATA_ARGS="--batches 20" VAL_EVERY=2 \
#     TRAIN_ARGS="--set train.episodes=4 --set model.features=8 --set model.init=scratch --set data.crop=24 \
#     --set data.batch_size=4 --set data.workers=1 --set data.val_max_images=2" R3L_DATA=... R3L_WEIGHTS=... \
#     PACK=/tmp/gpu_check_dry.tgz benchmarks/gpu_check.sh /tmp/gpu_check_dry
# The training step ends with exit 124 when TRAIN_SECONDS cut it short (the intended end); its best checkpoint is
# still evaluated.
set -uo pipefail
out=${1:?output folder}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
step() {  # step NAME COMMAND...: run (at most STEP_SECONDS), time and log one measurement, then pack
  local name=$1 start=$SECONDS
  shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  timeout "${STEP_SECONDS:-150}" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$out/steps.txt"
  pack
}
$py -m r3l --version | tee "$out/steps.txt"
$py -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" \
  | tee -a "$out/steps.txt"
episode() {  # episode NAME PRESET ARGS...
  local name=$1 preset=$2
  shift 2
  step "$name" $py benchmarks/episode.py --preset "$preset" --device "$device" --episodes "${EPISODES:-10}" \
    ${BENCH_ARGS:-} --out "$out/$name.json" "$@"
}
pack() { if [ -n "${PACK:-}" ]; then tar czf "$PACK" -C "$(dirname "$out")" "$(basename "$out")"; fi; }
learning() {  # every precision x compile combination that train.*=auto can choose, side by side, plus 2 seeds
  local pids=() runs=("fp32 off 0" "fp32 all 0" "bf16 off 0" "bf16 all 0" "bf16 all 1" "bf16 all 2") run name
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" learning "* ]]; then return; fi
  local start=$SECONDS
  for run in "${runs[@]}"; do
    set -- $run
    name=learning_$1_$2_s$3
    timeout "${LEARN_SECONDS:-240}" $py benchmarks/learning.py --config configs/r3l_gray_sigma25.yaml \
      --seconds "$(( ${LEARN_SECONDS:-240} - 60 ))" --val-every "${LEARN_VAL_EVERY:-250}" --run-dir "$out/$name" \
      --out "$out/$name.json" --set train.device="$device" --set train.precision="$1" --set train.compile="$2" \
      --set seed="$3" --set data.workers=2 --set train.tensorboard=false ${LEARN_ARGS:-} > "$out/$name.log" 2>&1 &
    pids+=($!)
  done
  while [ -n "$(jobs -rp)" ]; do sleep 20; pack; done  # a run cut off from outside still returns its curves
  wait "${pids[@]}"
  echo "learning: $((SECONDS - start)) s" | tee -a "$out/steps.txt"
  pack
}
learning
episode episode_seed_bf16 seed --set train.precision=bf16
episode episode_seed_fp32 seed --set train.precision=fp32
episode episode_default_bf16 default --set train.precision=bf16
episode episode_default_fp32 default --set train.precision=fp32
step profile_seed_bf16 $py benchmarks/profile_episode.py --preset seed --device "$device" ${BENCH_ARGS:-} \
  --set train.precision=bf16 --out "$out/profile_seed_bf16.json"
step profile_default_bf16 $py benchmarks/profile_episode.py --preset default --device "$device" ${BENCH_ARGS:-} \
  --set train.precision=bf16 --out "$out/profile_default_bf16.json"
step inference_fp32 $py benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" \
  --large "${LARGE:-4096}" ${INFER_ARGS:-} --out "$out/inference_fp32.json"
step inference_bf16 $py benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" --precision bf16 \
  ${INFER_ARGS:-} --out "$out/inference_bf16.json"
step inference_bf16_compiled $py benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" \
  --precision bf16 --compile ${INFER_ARGS:-} --out "$out/inference_bf16_compiled.json"
step data_loader $py benchmarks/data_loader.py --data "$R3L_DATA/Train400" --workers 0 2 6 --device "$device" \
  ${DATA_ARGS:-} --out "$out/data_loader.json"
STEP_SECONDS=$((${TRAIN_SECONDS:-120} + 30)) step train timeout "${TRAIN_SECONDS:-120}" \
  $py -m r3l train --config configs/r3l_gray_sigma25.yaml \
  --run-dir "$out/run" --set train.device="$device" --set train.val_every="${VAL_EVERY:-500}" \
  --set data.workers=6 --set train.tensorboard=false --set train.progress=false ${TRAIN_ARGS:-}
step training_run $py benchmarks/training_run.py "$out/run" --val-every 1000 --out "$out/training_run.json"
step eval $py -m r3l eval --checkpoint "$out/run/best.safetensors" --data "$R3L_DATA/BSD68" \
  --sigma 15 --sigma 20 --sigma 25 --sigma 30 --sigma 35 --json "$out/eval_bsd68.json" --quiet --device "$device"
step inference_bf16_trained $py benchmarks/inference.py --data "$R3L_DATA/BSD68" --device "$device" \
  --precision bf16 --checkpoint "$out/run/best.safetensors" ${INFER_ARGS:-} --out "$out/inference_bf16_trained.json"
episode episode_seed_fp16 seed --set train.precision=fp16
episode episode_seed_bf16_compiled seed --set train.precision=bf16 --set train.compile=all
episode episode_default_bf16_compiled default --set train.precision=bf16 --set train.compile=all
episode episode_seed_bf16_compiled_ro seed --set train.precision=bf16 --set train.compile=all \
  --set train.compile_mode=reduce-overhead
episode episode_default_bf16_compiled_ro default --set train.precision=bf16 --set train.compile=all \
  --set train.compile_mode=reduce-overhead
