#!/usr/bin/env bash
# Base-release quality (issue 3's "must show") in one command, our variants and llama.cpp's in the same run:
# palettize SmolLM2-135M (uniform 4-bit; mixed 2/4 at 3.5 bpw with the sensitivity allocation and with an
# arbitrary one; ablations), train a recovery adapter for each (teacher-written text; and teacher text + a user
# corpus from another source), and score everything, with llama.cpp Q8_0/Q5_0/Q4_0/IQ4_NL requantized from the
# same GGUF, on held-out natural text no step saw (scripts/oracles/data/natural_english.txt).
#
#   scripts/bench/base_quality.sh [RECOVERY_MINUTES=4] [TEACHER_SEQS=256] [SEQ_LEN=128]
#
# Runs ours on CUDA when `nvidia-smi` finds a GPU, else on the CPU (1 thread, passive OpenMP waits: 2 spinning
# threads collapse when the cores are shared). The user corpus is public-domain prose (Austen, Conan Doyle:
# scripts/bench/data/README.md), a different source than the eval text; it is half of the recovery sequences of
# the "teacher text + user corpus" adapter. On a GPU, recovery steps are 48 x SEQ_LEN tokens at lr 1.5e-3 (the
# settings of the device run in docs/benchmarks.md); on the CPU 4 x SEQ_LEN at 1e-3. Results: target/bench/base-quality/{ours/results.md,peers.json,table.md}.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
minutes=${1:-4}
teacher_seqs=${2:-256}
seq_len=${3:-128}
out=${BENCH_OUT:-$repo/target/bench/base-quality}
model=${ADAPTERCI_BASE_MODEL:-$repo/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}

source scripts/bootstrap.sh >/dev/null
venv=$(scripts/bench/peer_venv.sh)
mkdir -p "$out"
corpus=$out/user_corpus.txt
zcat scripts/bench/data/public_domain_prose.txt.gz > "$corpus"
corpus_args=(--user-corpus "$corpus" --user-share 0.5)

device=cpu threads=1 step_args=(--recovery-batch 4 --recovery-lr 1e-3)
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  device=cuda threads=8 step_args=(--recovery-batch 48 --recovery-lr 1.5e-3 --teacher-batch 512)
fi
cargo build --quiet --release -p adapterci-engine --example base_bench
OMP_WAIT_POLICY=PASSIVE target/release/examples/base_bench --device "$device" --threads "$threads" --model "$model" \
  --out "$out/ours" --teacher-seqs "$teacher_seqs" --seq-len "$seq_len" --recovery-minutes "$minutes" \
  --recovery-steps 100000 "${step_args[@]}" "${corpus_args[@]}" 2> >(tr "\r" "\n" | grep --line-buffered -v "sensitivity [0-9]\|teacher text [0-9]" >&2)
OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" scripts/bench/llama_cpp_quants.py --model "$model" \
  --tokens "$out/ours/eval_tokens.json" --out "$out/peers.json" --threads 2

python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ours = json.loads((out / "ours/results.json").read_text())
peers = json.loads((out / "peers.json").read_text())
base = ours["rows"][0]
params = 134515008  # SmolLM2-135M: linear 106,168,320 + embedding 28,311,552 + norms 35,136
lines = ["| variant | linear bpw | whole-model bpw | perplexity | vs uncompressed | mean CE | top-1 agreement | recovery fraction |",
         "|---|---|---|---|---|---|---|---|"]
def add(name, lbpw, wbpw, ppl, ce, top1, frac):
    lines.append(f"| {name} | {lbpw:.3f} | {wbpw:.3f} | {ppl:.2f} | {100 * (ppl / base['perplexity'] - 1):+.1f}% | {ce:.4f} | {top1:.3f} | {frac} |")
for r in ours["rows"]:
    frac = r["extra"].get("recovery_fraction")
    add(r["variant"], r["linear_bpw"], r["whole_model_bpw"], r["perplexity"], r["cross_entropy"], r["top1_agreement"],
        "" if frac is None else f"{frac:.3f}")
for r in peers["rows"]:
    add(r["variant"], r["linear_bpw"], 8 * r["file_bytes"] / params, r["perplexity"], r["cross_entropy"], r["top1_agreement"], "")
setup = ours["setup"]
lines.append("")
lines.append(f"ours on {setup['device']}, {setup['threads']} threads; teacher text {setup['teacher_sequences']} x {setup['seq_len']} tokens; "
             f"recovery budget {setup['recovery']['max_seconds'] / 60:.1f} min per adapter; eval {setup['eval_chunks']} x 256 tokens; "
             f"peers: llama-cpp-python {peers['llama_cpp_python']} on the CPU")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
