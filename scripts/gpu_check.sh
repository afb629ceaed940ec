#!/usr/bin/env bash
# The whole GPU check in one command, the same every session:
#   build + install fi_core, main job, GPU tests, compute-sanitizer (memcheck + racecheck) on a
#   subset, then the benchmark suites. Results and logs go to $OUT (default ./gpu_check_out).
#
#   scripts/gpu_check.sh [--archs "90a"] [--head-dims "64;128;256"] [--bench "decode"]
#                        [--full-bench] [--no-sanitizer] [--tests "<pytest -k expression>"]
#
# Wheels not installed on the GPU machine (nvidia-cutlass, flashinfer-python and its needs) are
# taken from ./.whl when present (git-ignored; carry it). To fill it on a machine with PyPI:
#   for p in nvidia-cutlass==4.2.0.0 flashinfer-python==0.5.3 apache-tvm-ffi nvidia-cudnn-frontend; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl "$p"; done
# Budget: on an H100 the decode part (build 40 s, tests 50 s, sanitizers 40 s, decode bench 55 s)
# fits one 10-minute command; with the operator and sampling tests and suites (FlashInfer JITs each
# suite for about a minute on a fresh machine) split the work with --bench / --no-sanitizer.
set -uo pipefail

ARCHS="90a"
HEAD_DIMS="64;128;256"
BENCH_SUITES="decode operators sampling"
BENCH_FLAGS="--quick"
SANITIZER=1
TEST_FILTER=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --archs) ARCHS="$2"; shift 2 ;;
    --head-dims) HEAD_DIMS="$2"; shift 2 ;;
    --bench) BENCH_SUITES="$2"; shift 2 ;;
    --full-bench) BENCH_FLAGS=""; shift ;;
    --no-sanitizer) SANITIZER=0; shift ;;
    --tests) TEST_FILTER="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
export FLASHINFER_CUDA_ARCH_LIST="${FLASHINFER_CUDA_ARCH_LIST:-9.0a}"
declare -A STATUS

step() {  # step NAME LOGFILE COMMAND...: runs, logs, records pass/fail
  local name="$1" log="$2"; shift 2
  local start=$SECONDS
  echo "=== $name"
  "$@" > >(tee "$OUT/$log") 2>&1
  local rc=$?
  STATUS[$name]="rc=$rc $((SECONDS - start))s"
  return $rc
}

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee "$OUT/gpu.txt"

build() {
  FI_CORE_CUDA_ARCHS="$ARCHS" FI_CORE_HEAD_DIMS="$HEAD_DIMS" \
    python3 -m pip install --no-build-isolation --no-deps -v . 2>&1 | grep -E "Building|Linking|error|warning|Successfully" | tail -40
  return "${PIPESTATUS[0]}"
}
step build build.log build || { echo "build failed"; exit 1; }

cd /tmp  # import the installed package, not the source tree
REPO="$OLDPWD"
# fi_core imported before PyTorch must leave PyTorch intact (its operator registry included).
step import_order import_order.log python3 -X faulthandler -c \
  "import fi_core, torch; torch.ops.aten.add; import torch.ao.quantization; print('import order ok')"
step main_job main_job.log python3 -X faulthandler -m fi_core
step gpu_tests gpu_tests.log python3 -m pytest -q -p no:cacheprovider "$REPO/tests" ${TEST_FILTER:+-k "$TEST_FILTER"} --maxfail=20

if [[ $SANITIZER == 1 ]]; then
  # A representative slice: every dtype pair and variant at short and split lengths.
  SUBSET="(test_single_decode_matches_reference and d128 and kv4096 and NHD and g4) or strided or empty or uneven"
  step memcheck memcheck.log compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_single_decode_gpu.py" -k "$SUBSET" -x
  # The operators: the odd-shape, strided, view and edge-case tests (the reference grids run above).
  OPS_SUBSET="not matches_reference and not cos_sin_cache or test_cos_sin_cache_with_3d"
  step memcheck_ops memcheck_ops.log compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_norm_gpu.py" "$REPO/tests/test_activation_gpu.py" \
    "$REPO/tests/test_rope_gpu.py" -k "$OPS_SUBSET" -x
  step memcheck_sampling memcheck_sampling.log compute-sanitizer --tool memcheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_sampling_gpu.py" \
    -k "renorm or odd_rows or out_of_range or strided or keep_only" -x
  step racecheck_sampling racecheck_sampling.log compute-sanitizer --tool racecheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_sampling_gpu.py" -k "renorm" -x
  step racecheck_ops racecheck_ops.log compute-sanitizer --tool racecheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_norm_gpu.py" -k "bfloat16 and (h8192 or h40000)" -x
  step racecheck racecheck.log compute-sanitizer --tool racecheck --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider "$REPO/tests/test_single_decode_gpu.py" \
    -k "test_single_decode_matches_reference and d128 and kv4096 and NHD and g4 and (none or rope)" -x
fi

cd "$REPO"
for suite in $BENCH_SUITES; do
  step "bench_$suite" "bench_$suite.log" python3 -m bench --suite "$suite" $BENCH_FLAGS --out "$OUT/bench"
done

echo
echo "=== summary ($(head -2 "$OUT/gpu.txt" | tail -1))"
for name in "${!STATUS[@]}"; do printf '%-14s %s\n' "$name" "${STATUS[$name]}"; done | sort
for log in gpu_tests memcheck memcheck_ops memcheck_sampling racecheck racecheck_ops racecheck_sampling; do
  [[ -f "$OUT/$log.log" ]] && printf '%-14s %s\n' "$log" "$(grep -hE "passed|failed" "$OUT/$log.log" | tail -1)"
done
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT"/*check*.log 2>/dev/null
grep -hE "^(self-check|speed)" "$OUT/main_job.log"
