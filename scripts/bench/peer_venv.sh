#!/usr/bin/env bash
# The peer for the base-release benchmarks: llama-cpp-python 0.3.36 (it builds llama.cpp, ~5 min on 2 cores) in
# PEER_VENV [.venv-peers], installed when missing. Prints the venv's path.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${PEER_VENV:-$repo/.venv-peers}
if ! "$venv/bin/python" -c 'import llama_cpp, numpy' 2>/dev/null; then
  echo "installing the peer (llama-cpp-python 0.3.36, builds llama.cpp: ~5 min) into $venv" >&2
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  CMAKE_BUILD_PARALLEL_LEVEL=2 "$venv/bin/pip" install --quiet numpy llama-cpp-python==0.3.36 >&2
fi
echo "$venv"
