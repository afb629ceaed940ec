#!/usr/bin/env bash
# The whole GPU check in one command, the same every session:
#   build + install fi_core, main job, GPU tests, compute-sanitizer (memcheck + racecheck) on a
#   subset, then the benchmark suites. Results and logs go to $OUT (default ./gpu_check_out).
#
#   scripts/gpu_check.sh [--archs "90a"] [--head-dims "64;128;256"] [--bench "decode"]
#                        [--full-bench] [--no-sanitizer] [--sanitize "decode ops:racecheck ..."]
#                        [--tests "<pytest -k expression>"] [--bench-filter "d=128 bf16"]
#                        [--prebuilt .prebuilt]
#   --prebuilt: use the package scripts/prebuild.sh built on another machine (carry the folder)
#   instead of building here; --archs and --head-dims are then those of that build
#   --bench-filter: only the benchmark workloads whose "op label" contains every word (a full grid
#   is larger than one 10-minute device call: split it over calls, e.g. by head dim)
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
BENCH_FILTER=()
SANITIZER=1
PREBUILT=""
SANITIZE="decode batch_decode prefill batch_prefill ops sampling page cascade quantization"  # kernel families run under compute-sanitizer
TEST_FILTER=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --archs) ARCHS="$2"; shift 2 ;;
    --head-dims) HEAD_DIMS="$2"; shift 2 ;;
    --bench) BENCH_SUITES="$2"; shift 2 ;;
    --full-bench) BENCH_FLAGS=""; shift ;;
    --bench-filter) for word in $2; do BENCH_FILTER+=(--filter "$word"); done; shift 2 ;;
    --no-sanitizer) SANITIZER=0; shift ;;
    --sanitize) SANITIZE="$2"; shift 2 ;;
    --tests) TEST_FILTER="$2"; shift 2 ;;
    --prebuilt) PREBUILT="$2"; shift 2 ;;
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
  # A running summary (first in name order: the device returns only a few files, and a run cut
  # short by its time limit still reports every finished step).
  printf '%-24s rc=%s %4ss %s %s\n' "$name" "$rc" "$((SECONDS - start))" \
    "$(grep -hE "passed|failed" "$OUT/$log" 2>/dev/null | tail -1)" \
    "$(grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$log" 2>/dev/null | tail -1)" >> "$OUT/00_summary.txt"
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
unpack_prebuilt() {  # the carried package, first on the import path
  scripts/unpack_prebuilt.sh "$PREBUILT" /tmp/fi_core_prebuilt || return 1
  export PYTHONPATH="/tmp/fi_core_prebuilt${PYTHONPATH:+:$PYTHONPATH}"
}
if [[ -n "$PREBUILT" ]]; then
  step build build.log unpack_prebuilt || { echo "unpacking $PREBUILT failed"; exit 1; }
else
  step build build.log build || { echo "build failed"; exit 1; }
fi

cd /tmp  # import the installed package, not the source tree
REPO="$OLDPWD"
# fi_core imported before PyTorch must leave PyTorch intact (its operator registry included).
step import_order import_order.log python3 -X faulthandler -c \
  "import fi_core, torch; torch.ops.aten.add; import torch.ao.quantization; print('import order ok')"
step main_job main_job.log python3 -X faulthandler -m fi_core
step gpu_tests gpu_tests.log python3 -m pytest -q -p no:cacheprovider "$REPO/tests" ${TEST_FILTER:+-k "$TEST_FILTER"} --maxfail=20

sanitize() {  # sanitize FAMILY TOOL TEST_FILES -k EXPRESSION: one compute-sanitizer step
  local family="$1" tool="$2"; shift 2
  # A family in --sanitize runs both tools; "family:tool" runs one.
  [[ $SANITIZER == 1 && ( " $SANITIZE " == *" $family "* || " $SANITIZE " == *" $family:$tool "* ) ]] || return 0
  step "${tool}_$family" "${tool}_$family.log" compute-sanitizer --tool "$tool" --error-exitcode 1 \
    python3 -m pytest -q -p no:cacheprovider -x "$@"
}
T="$REPO/tests"
# Representative slices: every dtype pair and variant at split lengths, odd shapes, views, edges.
sanitize decode memcheck "$T/test_single_decode_gpu.py" \
  -k "(test_single_decode_matches_reference and d128 and kv4096 and NHD and g4) or strided or empty or uneven"
sanitize decode racecheck "$T/test_single_decode_gpu.py" \
  -k "test_single_decode_matches_reference and d128 and kv4096 and NHD and g4 and (none or rope)"
sanitize batch_decode memcheck "$T/test_batch_decode_gpu.py" \
  -k "(matches_reference and d128 and ps5 and tensor and NHD) or split or empty or strided or graph or validation"
sanitize batch_decode racecheck "$T/test_batch_decode_gpu.py" \
  -k "(matches_reference and d128 and ps16 and tuple and HND and (none or rope) and bfloat16-bfloat16) or (strided and tensor_cores) or (large and 257 and tensor_cores)"
sanitize prefill memcheck "$T/test_prefill_gpu.py" \
  -k "(matches_reference and d128 and g4 and (q1_kv300 or q129_kv129 or q700_kv1500)) or (variants and d128 and float16 and q300_kv1000) or strided or empty or uneven or (custom_mask and float16 and g4 and q129_kv700 and (p0 or p50)) or (custom_mask_variants and window) or (test_single_prefill_rope and d128 and g4 and NHD and (q1_kv300 or q129_kv129)) or (fp8_kv and d128 and g4 and HND and q129_kv700) or (fp8_kv_variants and d128 and rope)"
sanitize prefill racecheck "$T/test_prefill_gpu.py" \
  -k "(matches_reference and d128 and g4 and NHD and (q37_kv37 or q129_kv129)) or (custom_mask and bfloat16 and g1 and q37_kv37 and p50) or (test_single_prefill_rope and d128 and g4 and NHD and q37_kv37) or (fp8_kv and d128 and g1 and NHD and q37_kv37 and causal)"
sanitize batch_prefill memcheck "$T/test_batch_prefill_gpu.py" \
  -k "(matches_reference and d128 and bfloat16 and NHD and (ragged or paged1)) or split or groups or strided or empty or graph or run_validation or (test_batch_prefill_custom_mask and paged1 and g4 and p50) or (batch_prefill_rope and d128 and bfloat16 and NHD and (ragged or paged1)) or (batch_prefill_fp8_kv and d128 and float16 and NHD and (ragged or paged16_tuple) and causal) or fp8_run_checks or rope_custom_mask"
sanitize batch_prefill racecheck "$T/test_batch_prefill_gpu.py" \
  -k "(matches_reference and d128 and float16 and paged16 and HND and causal) or (decode_like and paged16 and g8) or (split and ragged and causal) or (test_batch_prefill_custom_mask and ragged and g1 and p50) or (batch_prefill_rope and d128 and float16 and paged16 and HND and causal) or (batch_prefill_fp8_kv and d128 and bfloat16 and float8_e5m2 and paged16 and HND and causal)"
sanitize ops memcheck "$T/test_norm_gpu.py" "$T/test_activation_gpu.py" "$T/test_rope_gpu.py" \
  -k "not matches_reference and not cos_sin_cache or test_cos_sin_cache_with_3d"
sanitize ops racecheck "$T/test_norm_gpu.py" -k "bfloat16 and (h8192 or h40000)"
sanitize sampling memcheck "$T/test_sampling_gpu.py" \
  -k "streamed or odd_rows or renorm_matches or top_k_mask_logits_matches or speculative_exact or indices_out_of_range or strided or keep_only"
sanitize sampling racecheck "$T/test_sampling_gpu.py" -k "(streamed_thresholds and 32001) or (renorm_matches and 32001) or (speculative_exact and 32001) or (odd_rows and not logits and 32001)"
sanitize page memcheck "$T/test_page_gpu.py" \
  -k "(pool and (bfloat16 or e4m3)) or skips or odd_head_dims or without or beyond or int64 or (matches_reference and p5 and bfloat16)"
sanitize cascade memcheck "$T/test_cascade_gpu.py" \
  -k "strided or (in_place and d100) or out_is_an_input or empty or (matches_reference and (d3 or d1000 or d1024))"
sanitize cascade racecheck "$T/test_cascade_gpu.py" -k "in_place and d256"
sanitize quantization memcheck "$T/test_quantization_gpu.py" \
  -k "not stream and not second_device and (not matches_numpy or n0 or n9 or (n4097 and big) or mixed or (long_and_short and cuda_int32))"

cd "$REPO"
BENCH_DIR=/tmp/fi_core_bench
rm -rf "$BENCH_DIR"
for suite in $BENCH_SUITES; do
  step "bench_$suite" "bench_$suite.log" python3 -m bench --suite "$suite" $BENCH_FLAGS ${BENCH_FILTER[@]+"${BENCH_FILTER[@]}"} \
    --out "$BENCH_DIR"
done
# One archive: the device returns only a few files per run.
[[ -d "$BENCH_DIR" ]] && tar czf "$OUT/bench_results.tgz" -C "$BENCH_DIR" .

echo
echo "=== summary ($(head -2 "$OUT/gpu.txt" | tail -1))"
for name in "${!STATUS[@]}"; do printf '%-22s %s\n' "$name" "${STATUS[$name]}"; done | sort
for log in "$OUT"/gpu_tests.log "$OUT"/memcheck_*.log "$OUT"/racecheck_*.log; do
  [[ -f "$log" ]] && printf '%-22s %s\n' "$(basename "$log" .log)" "$(grep -hE "passed|failed" "$log" | tail -1)"
done
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT"/*check*.log 2>/dev/null
grep -hE "^(self-check|speed)" "$OUT/main_job.log"
