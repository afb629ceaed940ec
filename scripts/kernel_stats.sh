#!/usr/bin/env bash
# Per-kernel resource use of translation units, without a GPU: registers, stack and spills
# (ptxas -v), and static SASS instruction counts that matter for our kernels (shared-memory
# atomics, local-memory loads/stores, barriers, global/shared loads, CAS spin loops). Compiles
# each source exactly as the configured build does (its ninja command), into a scratch object.
#
#   scripts/kernel_stats.sh BUILD_DIR SOURCE... [--filter REGEX]
#   e.g. scripts/kernel_stats.sh build/cp312-abi3-linux_x86_64 src/sampling_kernels.cu --filter filter_rows
#
# BUILD_DIR: a configured build (scripts/prebuild.sh leaves one). Needs cuobjdump: the toolkit's,
# or pip's nvidia-cuda-cuobjdump wheel (set CUOBJDUMP to its bin/cuobjdump).
set -euo pipefail
build="${1:?usage: scripts/kernel_stats.sh BUILD_DIR SOURCE... [--filter REGEX]}"; shift
filter="." sources=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --filter) filter="$2"; shift 2 ;;
    *) sources+=("$1"); shift ;;
  esac
done
cuobjdump="${CUOBJDUMP:-$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)}"
[[ -x "$cuobjdump" ]] || { echo "no cuobjdump (set CUOBJDUMP)" >&2; exit 2; }
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
repo="$(cd "$(dirname "$0")/.." && pwd)"
for source in "${sources[@]}"; do
  object="CMakeFiles/fi_core_kernels.dir/src/$(basename "$source").o"
  command="$(ninja -C "$build" -t commands "$object" | tail -1)"
  [[ -n "$command" ]] || { echo "$build builds no $object" >&2; exit 2; }
  # Same flags, a scratch output, no dependency file, ptxas's report on.
  command="$(sed -E -e 's/ -MD -MT [^ ]+ -MF [^ ]+//' -e "s# -o [^ ]+# -o $scratch/k.o#" <<< "$command") -Xptxas -v"
  (cd "$build" && eval "$command") 2> "$scratch/ptxas.txt"
  "$cuobjdump" -sass "$scratch/k.o" > "$scratch/k.sass"
  echo "== $source"
  python3 "$repo/scripts/kernel_stats.py" "$scratch/ptxas.txt" "$scratch/k.sass" "$filter"
done
