#!/usr/bin/env bash
# Builds fi_core here (no GPU needed) for the GPU machine's Python (3.12: one abi3 module) and
# packs the installed package into .prebuilt/ (git-ignored), module compressed, so that a device
# call can run `scripts/gpu_check.sh --prebuilt .prebuilt` instead of spending its minutes on
# the build. The build folder (build/<wheel tag>) is kept, so a rebuild after an edit is
# incremental.
#
#   scripts/prebuild.sh PYTHON [ARCHS] [HEAD_DIMS]      e.g. scripts/prebuild.sh python3.12 90a 128
#
# PYTHON needs scikit-build-core, nanobind, cmake >= 3.30 and nvidia-cutlass installed (the
# build runs without isolation, so it needs no network).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:?usage: scripts/prebuild.sh PYTHON [ARCHS] [HEAD_DIMS]}"
export FI_CORE_CUDA_ARCHS="${2:-90a}" FI_CORE_HEAD_DIMS="${3:-128}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

start=$SECONDS
rm -rf build/prebuilt-wheel .prebuilt
"$PYTHON" -m pip wheel -q --no-build-isolation --no-deps -w build/prebuilt-wheel .
mkdir -p .prebuilt
"$PYTHON" -m zipfile -e build/prebuilt-wheel/fi_core-*.whl .prebuilt
rm -rf .prebuilt/*.dist-info
xz -T0 -6 .prebuilt/fi_core/_C*.so
# What was built, for gpu_check.sh to print beside the results.
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- include src bindings python CMakeLists.txt cmake || echo ' + uncommitted changes')"
  echo "archs $FI_CORE_CUDA_ARCHS; head dims $FI_CORE_HEAD_DIMS; $("$PYTHON" --version)"
} > .prebuilt/SOURCE
cat .prebuilt/SOURCE
echo "prebuilt in $((SECONDS - start)) s: $(du -sh .prebuilt | cut -f1) in .prebuilt (carry it)"
