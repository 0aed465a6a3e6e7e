#!/usr/bin/env bash
# Packs what a lent GPU machine needs for scripts/device/{stage,palettize,recover}.sh into device-bin/ (ignored
# through .git/info/exclude): the release binary of adapterci-base, stripped and gzipped, with the first 44 MB of
# the model (device-bin/a), and the rest of the model (device-bin/b): each under the 64 MiB one device call
# carries, with the working tree (~9 MB, most of it the prose in scripts/bench/data/; the parts are split so
# that each stays ~4 MB under the limit with it). Rerun it after any change to the adapterci-base or
# adapterci-engine code.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
source scripts/bootstrap.sh >/dev/null
cargo build --quiet --release -p adapterci-base --bin adapterci-base
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/device-bin/' "$exclude" 2>/dev/null || echo '/device-bin/' >>"$exclude"
rm -rf device-bin
mkdir -p device-bin/a device-bin/b
strip -o device-bin/a/adapterci-base target/release/adapterci-base
gzip -9 device-bin/a/adapterci-base
head -c 44000000 "$ADAPTERCI_BASE_MODEL" >device-bin/a/model.part1
tail -c +44000001 "$ADAPTERCI_BASE_MODEL" >device-bin/b/model.part2
du -sh device-bin/a device-bin/b >&2
cat >&2 <<'PLAN'
Device calls, each within 30 s of the previous one (the machine stays warm 30 s):
  1. carry ["device-bin/a"]  bash scripts/device/stage.sh                                   timeout_s 60
  2. carry ["device-bin/b"]  bash scripts/device/palettize.sh                               timeout_s 300
     (8,192 teacher sequences by default, ~4 min in all; TEACHER_SEQS=2048 repeats the 2026-11-28 run, 119 s)
  3. no carry                MINUTES=M bash scripts/device/recover.sh, M = (budget_left_s - 80) / 60, at most 9 (566 s of the 600)
                                                                                           timeout_s 600
Then give_back, and here: copy call 2's p/eval_tokens.json and p/evaluate-release.txt and call 3's
r/evaluate-*.txt and r/recovery-*.json into one OUT and run `OUT=... WORK=... scripts/bench/base_release_path.sh peers` for the table.
The controls phase (uniform 4-bit, arbitrary allocation, with their adapters) and the options phase (the
method's options and ablations) are not in these calls: they use the 15 minutes for the headline release. Their
latest numbers are CPU runs of the script (docs/benchmarks.md, eighth and ninth sessions), not this device's
settings.
PLAN
