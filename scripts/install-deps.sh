#!/usr/bin/env bash
# Installs the Debian packages the test suite and benchmarks use, when any is missing. Needs root (apt-get).
# The second line is the real test infrastructure (docs/testing.md): a registry, image tools, container daemons,
# a Debian rootfs builder, and openssl/curl for the token-auth registry.
set -euo pipefail
packages=(fsverity libarchive-tools attr libcap2-bin zstd pigz lz4 tar time erofs-utils util-linux mount kmod
  skopeo umoci podman docker.io docker-registry mmdebstrap openssl curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "error: not root; install these packages first: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
