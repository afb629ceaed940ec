#!/usr/bin/env bash
# Times a kernel change against main in one run on the GPU machine, to decide whether a patch in
# bench/experiments/ lands. Both packages are built by scripts/prebuild.sh (main's, and one with
# the patch applied). The same bench grid runs for fi_core alone (no peers: gpu_check.sh measures
# those) in the order base, change, base again, so the two base columns show the drift between
# runs. Tests and sanitizers of the change go through gpu_check.sh, not here.
#
#   scripts/gpu_compare.sh BASE_PREBUILT CHANGE_PREBUILT [python -m bench arguments]
#   e.g. OUT=$OUT scripts/gpu_compare.sh .prebuilt_main .prebuilt_change --suite sampling
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:?usage: scripts/gpu_compare.sh BASE_PREBUILT CHANGE_PREBUILT [bench arguments]}"
change="${2:?usage: scripts/gpu_compare.sh BASE_PREBUILT CHANGE_PREBUILT [bench arguments]}"
shift 2
OUT="${OUT:-$PWD/gpu_compare_out}"
results=/tmp/fi_core_compare
mkdir -p "$OUT" && rm -rf "$results"
columns=()
for name in base change base_again; do
  prebuilt="$base"; [[ $name == change ]] && prebuilt="$change"
  site="/tmp/fi_core_compare_$name"
  echo "=== $name: $(scripts/unpack_prebuilt.sh "$prebuilt" "$site" | head -1)"
  PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" python3 -m bench --no-peers --out "$results/$name" "$@" | tail -2
  columns+=("$name=$results/$name")
done
python3 -m bench.compare "${columns[@]}" | tee "$OUT/compare_$(date +%H%M%S).md"
