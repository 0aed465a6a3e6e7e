#!/usr/bin/env bash
# Training throughput against HF PEFT in the same run (issue 4's "must show"): SmolLM2-135M, LoRA r16 on all
# seven linear modules, batch 4 x 128 tokens, loss on every token, AdamW, 2 threads (peer settings of
# shared/tools/hf_peer.py). Peer and engine run in alternation (peer, ours f32, ours bf16, peer, ...), ROUNDS
# times, so machine load hits both alike; besides the pooled medians it prints the median over rounds of each
# round's ratio (ours' median step / the peer's median step in the same round), the number to quote on a
# shared machine. OMP_WAIT_POLICY=PASSIVE keeps idle OpenMP threads from spinning on the shared cores.
#
#   scripts/bench/train_throughput.sh [ROUNDS=3] [STEPS=6] [THREADS=2]
#
# The peer runs from a cached virtualenv ($PEER_VENV, default .venv-peers) that this script creates and fills
# from PyPI when it lacks torch 2.11.0, transformers, peft, gguf or accelerate. Tokens/s is the median over
# the steps after the first of every round; peak memory is each process's high-water resident set.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
rounds=${1:-3}
steps=${2:-6}
threads=${3:-2}
model=${ADAPTERCI_BASE_MODEL:-$repo/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
venv=${PEER_VENV:-$repo/.venv-peers}

source scripts/bootstrap.sh >/dev/null
export OMP_WAIT_POLICY=PASSIVE
[[ -f "$model" ]] || { echo "error: model $model not found (run scripts/bootstrap.sh)" >&2; exit 1; }
if ! "$venv/bin/python" -c 'import torch, transformers, peft, gguf, accelerate' 2>/dev/null; then
  echo "installing the peer (torch 2.11.0, transformers, peft, gguf, accelerate) into $venv" >&2
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch==2.11.0 transformers peft gguf accelerate numpy
fi
peer_versions=$("$venv/bin/python" -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")')

cargo build --quiet --release -p adapterci-engine --example train_throughput
ours_bin=$repo/target/release/examples/train_throughput
log=$(mktemp -d)
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds: peer" >&2
  "$venv/bin/python" scripts/bench/peft_train_peer.py "$model" "$threads" "$steps" 2>/dev/null \
    | sed "s/^/r$round /" | tee -a "$log/peer" >&2
  for precision in f32 bf16; do
    echo "round $round/$rounds: ours, base matmuls in $precision" >&2
    "$ours_bin" "$model" "$threads" "$steps" all "$precision" 2>/dev/null \
      | sed "s/^/r$round /" | tee -a "$log/ours-$precision" >&2
  done
done

python3 - "$log" "$threads" "$rounds" "$steps" "$peer_versions" <<'PY'
import statistics, sys, pathlib, platform
log, threads, rounds, steps, versions = pathlib.Path(sys.argv[1]), *sys.argv[2:]
def rates(file, prefix, step_field, round_tag=None):
    out = []
    for line in (log / file).read_text().splitlines():
        tag, *parts = line.split()
        if parts and parts[0] == prefix and int(parts[step_field]) > 1 and round_tag in (None, tag):
            out.append(float(parts[parts.index("tokens_per_s") + 1]))
    return out
def peak(file, key):
    values = [float(l.split()[2]) for l in (log / file).read_text().splitlines() if l.split()[1:2] == [key]]
    return max(values) if values else float("nan")
peer = rates("peer", "peer_step", 1)
pm = statistics.median(peer)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"machine: {cpu}, {threads} threads; model SmolLM2-135M-Instruct Q4_1 (f32 compute)")
print(f"setting: LoRA r16 alpha 32 on q,k,v,o,gate,up,down, batch 4 x 128, loss on every token, AdamW; "
      f"{rounds} rounds x {steps} steps, first step of each round dropped; peer {versions}")
print(f"peer (HF PEFT) tokens/s: median {pm:.1f} (min {min(peer):.1f}, max {max(peer):.1f}, n={len(peer)})")
pp = peak("peer", "peer_peak_rss_mib")
print(f"peer peak resident memory: {pp:.0f} MiB")
def losses(file, prefix, step_field):
    return [float(l.split()[-1]) for l in (log / file).read_text().splitlines()
            if l.split()[1:2] == [prefix]][:int(steps)]
for precision in ("f32", "bf16"):
    ours = rates(f"ours-{precision}", "ours_step", 2)
    om = statistics.median(ours)
    op = peak(f"ours-{precision}", "ours_peak_rss_mib")
    print(f"ours, base matmuls {precision:4}: median {om:.1f} tokens/s (min {min(ours):.1f}, max {max(ours):.1f}, "
          f"n={len(ours)}); ratio ours/peer {om / pm:.2f}x; peak memory {op:.0f} MiB ({op / pp:.2f}x peer)")
    paired = [statistics.median(rates(f"ours-{precision}", "ours_step", 2, f"r{r}"))
              / statistics.median(rates("peer", "peer_step", 1, f"r{r}")) for r in range(1, int(rounds) + 1)]
    print(f"  per-round ratios ours/peer ({precision}): " + " ".join(f"{x:.2f}" for x in paired)
          + f"; median {statistics.median(paired):.2f}x")
peer_loss, f32_loss, bf16_loss = losses("peer", "peer_step", 1), losses("ours-f32", "ours_step", 2), losses("ours-bf16", "ours_step", 2)
print("loss per step (first round): peer " + " ".join(f"{x:.4f}" for x in peer_loss))
print("                             f32  " + " ".join(f"{x:.4f}" for x in f32_loss))
print("                             bf16 " + " ".join(f"{x:.4f}" for x in bf16_loss))
PY
rm -rf "$log"
