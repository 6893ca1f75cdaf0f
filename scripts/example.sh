#!/usr/bin/env bash
# The main job on the embedded example (README "Quick start"): create a repository, import the bundled tar as
# a layer splitstream, reassemble it and check it is byte-for-byte the original, then fsck the repository.
# Later stages (pull → EROFS → mount) join this script as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/Release/stratum_sys.node ] || npm run install --silent
[ -f dist/src/cli/main.js ] || npm run build --silent
stratum() { node bin/stratum.js "$@"; }

repo=${STRATUM_EXAMPLE_REPO:-$(mktemp -d /tmp/stratum-example.XXXXXX)/repo}
tar=examples/hello-layer.tar
echo "== stratum init $repo"
stratum --repo "$repo" init
echo "== stratum import-tar $tar hello"
stratum --repo "$repo" import-tar "$tar" hello
echo "== stratum cat hello | sha256sum   (must equal the tar's sha256, the layer's diff_id)"
got=$(stratum --repo "$repo" cat hello | sha256sum | cut -d' ' -f1)
want=$(sha256sum "$tar" | cut -d' ' -f1)
echo "   reassembled $got"
echo "   original    $want"
[ "$got" = "$want" ] || { echo "MISMATCH" >&2; exit 1; }
echo "== stratum fsck"
stratum --repo "$repo" fsck
echo "== repository layout"
(cd "$repo" && find . -maxdepth 3 \( -type l -printf '%p -> %l\n' \) -o \( -type f -printf '%p\n' \) | sort | head -20)
echo "done: repository at $repo"
