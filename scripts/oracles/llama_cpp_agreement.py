#!/usr/bin/env python3
"""Engine vs llama.cpp on the same GGUF: teacher-forced next-token agreement and KL(llama.cpp || ours).

Tokenizes scripts/oracles/data/natural_english.txt (about 3000 tokens of English prose written for this check),
runs both models teacher-forced over the whole sequence and compares, at every position, the distribution of the
next token. llama.cpp computes with the quantized weights (Q4_1 x Q8 dot products), the engine with the
dequantized f32 weights, so the two differ slightly by design; this measures how much.

The engine reports its top-K (token, logit) pairs and logsumexp per position (examples/oracle_dump.rs). KL is
computed over our top-K tokens plus one bucket for all other tokens: by the log-sum inequality this lumped KL is a
lower bound of the exact KL, and it is tight when llama.cpp's mass outside our top-K is small (printed as
"max tail mass").

Run from the repository root with the peer venv (see scripts/oracles/README.md):
    .venv-peers/bin/python scripts/oracles/llama_cpp_agreement.py [--model PATH] [--threads 2] [--top-k 2048]

Exits 1 when top-1 agreement falls below 0.90 or the mean KL rises above 0.02 nats: sanity bounds an order of
magnitude looser than what the engine measures (see README.md), to catch a broken forward pass, not to grade it.
"""
import argparse
import sys

import numpy as np

from oracle_common import ROOT, llama_cpp_tokenize, model_path, run_oracle_dump

TEXT = ROOT / "scripts/oracles/data/natural_english.txt"
MIN_AGREEMENT = 0.90
MAX_MEAN_KL = 0.02


def llama_cpp_log_probs(path, ids, threads):
    """Teacher-forced log-probabilities [len(ids), vocab] (float64) from llama.cpp on the CPU."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + 16, n_batch=512, logits_all=True,
                          n_threads=threads, n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    llm.eval(ids)
    scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def lumped_kl(log_p_row, ours_position):
    """KL(P || Q) over Q's top-k tokens plus one tail bucket, and P's tail mass."""
    tokens = np.array([token for token, _ in ours_position["top"]])
    # oracle_dump prints f32 logits as the shortest decimal that round-trips in f32: read them back as f32.
    logits = np.array([logit for _, logit in ours_position["top"]], dtype=np.float32).astype(np.float64)
    log_q = logits - ours_position["logsumexp"]
    log_p = log_p_row[tokens]
    p, q = np.exp(log_p), np.exp(log_q)
    kl = float(np.sum(p * (log_p - log_q)))
    p_tail, q_tail = max(1.0 - p.sum(), 0.0), max(1.0 - q.sum(), 1e-300)
    if p_tail > 0.0:
        kl += p_tail * np.log(p_tail / q_tail)
    return kl, p_tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF path (default: $ADAPTERCI_BASE_MODEL or .cache/models/...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=2048, help="top tokens per position requested from the engine")
    args = parser.parse_args()
    path = model_path(args.model)

    (ids,) = llama_cpp_tokenize(path, [TEXT.read_text(encoding="utf-8")], special=False)
    print(f"{TEXT.relative_to(ROOT)}: {len(ids)} tokens")
    ours = run_oracle_dump(path, [ids], 0, args.top_k, args.threads)["results"][0]
    assert ours["prompt"] == ids and len(ours["positions"]) == len(ids)
    log_p = llama_cpp_log_probs(path, ids, args.threads)

    agree = 0
    kls, tails = [], []
    for position, entry in enumerate(ours["positions"]):
        agree += int(log_p[position].argmax()) == entry["top"][0][0]
        kl, tail = lumped_kl(log_p[position], entry)
        kls.append(kl)
        tails.append(tail)
    kls = np.array(kls)
    # Perplexity of the text itself under llama.cpp, for scale (the last position has no next token).
    nll = -np.mean([log_p[i, ids[i + 1]] for i in range(len(ids) - 1)])
    print(f"teacher-forced top-1 agreement: {agree}/{len(ids)} = {agree / len(ids):.4f}")
    print(f"KL(llama.cpp || ours), top-{args.top_k} + tail: mean {kls.mean():.3e} nats, median {np.median(kls):.3e}, "
          f"p99 {np.quantile(kls, 0.99):.3e}, max {kls.max():.3e}")
    tails = np.array(tails)
    print(f"llama.cpp mass outside our top-{args.top_k}: median {np.median(tails):.2e}, p99 {np.quantile(tails, 0.99):.2e}, "
          f"max {tails.max():.2e} (position {int(tails.argmax())}); positions above 1e-2: {int((tails > 1e-2).sum())}")
    print(f"llama.cpp perplexity on the text: {np.exp(nll):.3f}")
    ok = agree / len(ids) >= MIN_AGREEMENT and kls.mean() <= MAX_MEAN_KL
    print(f"{'ok' if ok else 'FAILED'}: bounds are agreement >= {MIN_AGREEMENT}, mean KL <= {MAX_MEAN_KL}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
