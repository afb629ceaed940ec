#!/usr/bin/env bash
# Times kernel changes against main in one run on the GPU machine, to decide whether patches in
# bench/experiments/ land. Every package is built by scripts/prebuild.sh (main's, and one per
# patch applied). The same bench grid runs for fi_core alone (no peers: gpu_check.sh measures
# those) in the order base, each change, base again, so the two base columns show the drift
# between runs. Tests and sanitizers of a change go through gpu_check.sh, not here.
#
#   scripts/gpu_compare.sh BASE_PREBUILT CHANGE_PREBUILT... -- [python -m bench arguments]
#   e.g. OUT=$OUT scripts/gpu_compare.sh .prebuilt .prebuilt_mass .prebuilt_ring -- --suite sampling
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/gpu_compare.sh BASE_PREBUILT CHANGE_PREBUILT... -- [bench arguments]"
prebuilts=()
while [[ $# -gt 0 && "$1" != "--" ]]; do prebuilts+=("$1"); shift; done
[[ $# -gt 0 ]] && shift  # the "--"
(( ${#prebuilts[@]} >= 2 )) || { echo "$usage" >&2; exit 2; }
OUT="${OUT:-$PWD/gpu_compare_out}"
results=/tmp/fi_core_compare
mkdir -p "$OUT" && rm -rf "$results"
# Column name: "base" and "base_again" for the first package, the folder's name for the others.
runs=("base=${prebuilts[0]}")
for prebuilt in "${prebuilts[@]:1}"; do name="$(basename "$prebuilt")"; runs+=("${name#.}=$prebuilt"); done
runs+=("base_again=${prebuilts[0]}")
columns=()
for run in "${runs[@]}"; do
  name="${run%%=*}" prebuilt="${run#*=}" site="/tmp/fi_core_compare_site"
  echo "=== $name: $(scripts/unpack_prebuilt.sh "$prebuilt" "$site" | tr '\n' ' ')"
  PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" python3 -m bench --no-peers --out "$results/$name" "$@" | tail -2
  columns+=("$name=$results/$name")
done
python3 -m bench.compare "${columns[@]}" | tee "$OUT/compare_$(date +%H%M%S).md"
