#!/usr/bin/env bash
# The whole test suite (README "Quick start", `npm test`; CI runs exactly this after `npm ci`):
# install missing Debian packages, build the native addon if needed, type-check and build, lint, format check,
# then every test file with node:test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f build/Release/stratum_sys.node ] || npm run install --silent
npm run build --silent
npm run lint --silent
node --import tsx --test --test-concurrency=2 test/*.test.ts
