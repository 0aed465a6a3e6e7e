#!/usr/bin/env bash
# Device call 2 (carry ["device-bin/b"]): join the model, palettize on CUDA (the product path), score the release
# and write the eval tokens for the peers.
set -euo pipefail
export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
S=/tmp/stage
cat "$S/model.part1" device-bin/b/model.part2 > "$S/model.gguf"
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $S/model.gguf" | sha256sum -c
mkdir -p "$OUT/p"
start=$(date +%s)
set +e
source scripts/device/timeline.sh
follow "$OUT/p/palettize-release.log" "$OUT/p/timeline.txt"
# the other settings are base_release_path.sh's CUDA defaults; one process here, so twice its threads. Teacher
# text: 8,192 sequences (~2 min here) instead of the script's 2,048, because the 2026-11-28 run's teacher-only
# adapter memorized its 2,048 (held-out KL flat at 0.129 from step ~650, training batches 0.043); call 3 must
# use the same TEACHER_SEQS to find this text in the cache
BIN=$S/adapterci-base MODEL=$S/model.gguf WORK=/tmp/rp OUT=$OUT/p DEVICE=${DEVICE:-cuda} TEACHER_SEQS=${TEACHER_SEQS:-8192} THREADS=${THREADS:-12} \
  bash scripts/bench/base_release_path.sh palettize
rc=$?
stop_following
cp /tmp/rp/release/analysis.txt "$OUT/p/" 2>/dev/null
cp "$OUT/p/evaluate-release.txt" /tmp/rp/ 2>/dev/null  # for call 3's table
echo "palettize phase rc=$rc in $(( $(date +%s) - start )) s"
cat "$OUT/p/timeline.txt" | tail -40
exit $rc
