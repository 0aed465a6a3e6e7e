#!/usr/bin/env bash
# Device call 3 (no carry): two recovery adapters side by side on CUDA (teacher text only; teacher text + prose
# corpus at share 0.9), MINUTES each, then both scored with `adapterci-base evaluate`.
set -euo pipefail
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
S=/tmp/stage
[[ -f /tmp/rp/release/base.safetensors ]] || { echo "no release: call 2 did not run on this machine"; exit 1; }
mkdir -p "$OUT/r"
cp /tmp/rp/evaluate-release.txt "$OUT/r/" 2>/dev/null || true
start=$(date +%s)
set +e
source scripts/device/timeline.sh
for w in teacher corpus; do follow "$OUT/r/recover-$w.log" "$OUT/r/timeline-$w.txt"; done
# the other settings are base_release_path.sh's CUDA defaults; TEACHER_SEQS must be call 2's (the cache's key)
BIN=$S/adapterci-base MODEL=$S/model.gguf WORK=/tmp/rp OUT=$OUT/r DEVICE=${DEVICE:-cuda} TEACHER_SEQS=${TEACHER_SEQS:-8192} MINUTES=${MINUTES:?} \
  bash scripts/bench/base_release_path.sh recover
rc=$?
stop_following
for w in teacher corpus; do python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], {k: v for k, v in r.items() if not isinstance(v, (list, dict))})" /tmp/rp/$w/recovery.json $w 2>/dev/null; done
echo "recover phase rc=$rc in $(( $(date +%s) - start )) s"
for w in teacher corpus; do echo "== $w"; head -12 "$OUT/r/timeline-$w.txt"; tail -8 "$OUT/r/timeline-$w.txt"; done
cat "$OUT/r/table.md" 2>/dev/null
exit $rc
