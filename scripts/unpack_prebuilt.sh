#!/usr/bin/env bash
# Unpacks a package folder made by scripts/prebuild.sh into SITE (module decompressed) and prints
# what was built. Put SITE first on PYTHONPATH to import it.
#   scripts/unpack_prebuilt.sh PREBUILT SITE
set -euo pipefail
prebuilt="${1:?usage: scripts/unpack_prebuilt.sh PREBUILT SITE}" site="${2:?usage: scripts/unpack_prebuilt.sh PREBUILT SITE}"
rm -rf "$site" && mkdir -p "$site"
cp -r "$prebuilt/fi_core" "$site/"
xz -d "$site"/fi_core/_C*.so.xz
cat "$prebuilt/SOURCE"
