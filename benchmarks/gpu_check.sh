#!/usr/bin/env bash
# The GPU check in one call, every step time-boxed so the whole run ends within GPU_CHECK_BUDGET
# seconds (default 480) and always writes its results: one CSV (gpu_check.csv) and one log (gpu_check.log) under
# $OUT, or out/gpu_check when $OUT is unset; the summary is printed last.
#
#   On the lent H200 (device tool):  run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
#   Dry run here (CPU, tiny shapes): bash benchmarks/gpu_check.sh --device cpu --tiny     (or: make gpu-check-dry)
#
# Setup: the wheels the device image lacks (`make gpu-wheels`, carried as .whl/) go to /tmp/site; the extension is
# built in place (`setup.py build_ext --inplace`, TORCH_CUDA_ARCH_LIST=9.0) in the background while the steps that
# need only Triton run; the steps that use the CUDA op wait for it.
#
# Compile errors are caught before a GPU is held: `make gpu-preflight` (CPU only) compiles csrc/*.cu and every Triton
# kernel variant for sm_80 and sm_90 with the device image's torch, CUDA and Triton versions; its table travels in
# benchmarks/RESULTS-gpu-preflight.md and its summary is printed below. Its binaries are not reused here: the image's
# Python is 3.12 and the pre-flight's 3.11, so the extension (built per Python ABI) and Triton's cache (keyed on the
# hash of libtriton, which differs between the cp311 and cp312 wheels) would not match; both are rebuilt here.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DEVICE=cuda
TINY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=--tiny; shift ;;
    *) echo "Expected --device cpu|cuda or --tiny, got $1"; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
RESULTS=${OUT:-$ROOT/out/gpu_check}
WORK=${GPU_CHECK_WORKDIR:-/tmp/heat-gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-480}
ONLY=${GPU_CHECK_ONLY:-}  # e.g. "kernels predict": run only these steps (a quick rerun on a still-warm machine)
# the kernel benchmark scripts (the layout renames bench_rollout.py to bench_rollout_phi.py: edit here)
ROLLOUT_BENCH=${ROLLOUT_BENCH:-bench_rollout_phi.py}
[ -f "benchmarks/$ROLLOUT_BENCH" ] || ROLLOUT_BENCH=bench_rollout_phi.py
BLOCK_NORM_BENCH=bench_block_norm.py
mkdir -p "$RESULTS" "$WORK"
rm -f "$RESULTS/gpu_check.csv"
LOG=$RESULTS/gpu_check.log
exec > >(tee "$LOG") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
csvrow() { echo "$1,$2,$3,$4,$5,," >>"$RESULTS/gpu_check.csv"; }
G=("$PY" benchmarks/gpu_check.py --results "$RESULTS" --workdir "$WORK" --device "$DEVICE" $TINY)

# step NAME LIMIT_S CMD...: run CMD under `timeout`, at most LIMIT_S and never past the budget; record rc and time
step() {
  local name=$1 limit=$2 l rc t0
  shift 2
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  l=$(left)
  [ "$limit" -gt "$l" ] && limit=$l
  echo; echo "==== $name (time box ${limit}s, $(left)s of the budget left) ===="
  if [ "$limit" -lt 10 ]; then csvrow step "$name" skipped "no time left" ""; return 0; fi
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@"
  rc=$?
  csvrow step "$name" rc "$rc" "$([ $rc = 124 ] && echo timeout)"
  csvrow step "$name" wall_seconds "$(($(date +%s) - t0))" s
  return 0
}

echo "==== setup ($(date -u +%FT%TZ), device $DEVICE ${TINY:-full size}, budget ${BUDGET}s, results $RESULTS) ===="
[ "$DEVICE" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true; }
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && { [ "$DEVICE" = cuda ] || [ "${GPU_CHECK_INSTALL:-0}" = 1 ]; }; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH} || echo "wheel install FAILED"
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch, transformers, lightning, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| lightning', lightning.__version__, '| triton', triton.__version__)" || true
"$PY" -c "import jsonargparse, platformdirs, heat_module; print('jsonargparse', jsonargparse.__version__)" \
  || echo "MISSING PACKAGES: run make gpu-wheels here and carry .whl"
[ -f benchmarks/RESULTS-gpu-preflight.md ] && grep -m1 '^Pre-flight:' benchmarks/RESULTS-gpu-preflight.md
BUILD_PID=""
if ls heat_kernels/_C*.so >/dev/null 2>&1 && { [ "$DEVICE" != cuda ] || \
    "$PY" -c "from heat_kernels import extension; assert extension.has_cuda()" 2>/dev/null; }; then  # a warm rerun keeps it
  echo "extension: using the existing $(ls heat_kernels/_C*.so)"
else
  echo "extension: building in the background (log: $RESULTS/build.log)"
  (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16 timeout 300 "$PY" setup.py build_ext --inplace \
    >"$RESULTS/build.log" 2>&1; echo "build rc $?" >>"$RESULTS/build.log") &
  BUILD_PID=$!
fi
wait_build() {
  [ -z "$BUILD_PID" ] && return 0
  echo "waiting for the extension build ($(left)s left)"
  wait "$BUILD_PID"
  tail -3 "$RESULTS/build.log"
  csvrow build extension rc "$(tail -1 "$RESULTS/build.log" | awk '{print $3}')" ""
  BUILD_PID=""
}

if [ -n "$TINY" ]; then N_EQ=16; N_VAR=32; T_VAR=20; else N_EQ=48; N_VAR=256; T_VAR=50; fi
if [ -n "$TINY" ]; then
  METRICS_ARGS=(--examples 4 --num-masks 2 --update-batch 2 --batch-size 8 --min-tokens 8 --max-tokens 12)
  VARIANTS_ARGS=(--rank 8 --oversample 4 --ls-layers 1 --fisher-topk 4)
else
  METRICS_ARGS=(--examples 40 --num-masks 10 --update-batch 10 --batch-size 64)
  VARIANTS_ARGS=()
fi
# Order: what matters most first; the time boxes are maxima, most steps end well inside them.
step ceilings 30 "${G[@]}" ceilings
step prepare 40 "${G[@]}" prepare
step equality 60 "${G[@]}" equality --n-equality "$N_EQ"
step throughput_gptj 110 "${G[@]}" throughput --shape gptj-6b --n 512
wait_build
if [ "$DEVICE" = cuda ]; then
  step pytest_cuda 45 "$PY" -m pytest -q -p no:cacheprovider tests/heat_kernels -k "gpu" -rs
else
  step pytest_kernels 120 "$PY" -m pytest -q -p no:cacheprovider tests/heat_kernels -k "not triton" -rs
fi
step kernels 45 "${G[@]}" kernels
step predict 75 "${G[@]}" predict
step bench_metrics 40 "$PY" benchmarks/bench_metrics.py --model "$WORK/model" --device "$DEVICE" "${METRICS_ARGS[@]}" \
  --csv "$RESULTS/bench_metrics.csv"
VAR_BUDGET=$(($(left) - 110)); [ "$VAR_BUDGET" -gt "$T_VAR" ] || VAR_BUDGET=$T_VAR
step bench_variants $((VAR_BUDGET + 25)) "$PY" benchmarks/bench_variants.py --model "$WORK/model" --device "$DEVICE" \
  --data "$WORK/contexts.txt" --lengths "$N_VAR" --prompts-long 20 --time-budget "$VAR_BUDGET" --chunk-long 16 \
  "${VARIANTS_ARGS[@]}" --csv "$RESULTS/bench_variants.csv"
step throughput_llama3 60 "${G[@]}" throughput --shape llama3-8b --n 512
if [ "$DEVICE" = cuda ]; then  # lower value: CI runs these on CPUs; the GPU rows of the old kernel benchmarks
  step pytest_kernels 30 "$PY" -m pytest -q -p no:cacheprovider -n 8 tests/heat_kernels -k "not gpu"
  step bench_rollout 15 "$PY" "benchmarks/$ROLLOUT_BENCH" --skip-cpu --gpu-n 4096
  step bench_block_norm 15 "$PY" "benchmarks/$BLOCK_NORM_BENCH" --skip-cpu --gpu-n 4096 --probes 1
else
  step bench_rollout 60 "$PY" "benchmarks/$ROLLOUT_BENCH" --n 64 --layers 2 --loop-max-n 64 --threads 1
  step bench_block_norm 30 "$PY" "benchmarks/$BLOCK_NORM_BENCH" --n 32 --probes 1 --threads 1
fi
"${G[@]}" summary
echo "total $(($(date +%s) - START))s; results in $RESULTS"
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null || true  # the log is complete before the files under $OUT are collected
