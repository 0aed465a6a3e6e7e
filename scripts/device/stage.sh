#!/usr/bin/env bash
# Device call 1 (carry ["device-bin/a"]): stage the binary and the first part of the model under /tmp/stage, which
# later calls find while the machine stays warm.
set -euo pipefail
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
S=/tmp/stage; mkdir -p "$S"
gunzip -c device-bin/a/adapterci-base.gz > "$S/adapterci-base"; cp device-bin/a/model.part1 "$S"/
chmod +x "$S/adapterci-base"
{ nvidia-smi -L; nproc; python3 -c 'import torch;print(torch.__version__, torch.cuda.is_available())'; } || true
ldd "$S/adapterci-base" | grep -E "torch|c10" || true
"$S/adapterci-base" --help | head -3
echo staged; ls -la "$S"
