#!/usr/bin/env python3
"""Engine vs HF transformers fp32, both from the same GGUF: logits and greedy continuations on ten varied prompts.

Prompts are tokenized once (llama.cpp's tokenizer, which ours matches token for token) and the same ids go to
both models. For every prompt position the engine reports its top-k (token, logit) pairs and the logsumexp over
the vocabulary (examples/oracle_dump.rs); we compare those logits with HF's at the same tokens, the logsumexps,
the argmax, and a 32-token greedy continuation that never stops at EOS.
Passes when greedy continuations are identical on at least 8 of the 10 prompts (exit status 1 otherwise).

Run from the repository root with the peer venv (see scripts/oracles/README.md):
    .venv-peers/bin/python scripts/oracles/hf_logits_parity.py [--model PATH] [--threads 2]
"""
import argparse
import sys

import numpy as np

from oracle_common import llama_cpp_tokenize, model_path, run_oracle_dump

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n")

PROMPTS = {
    "chat": CHAT,
    "rust": "fn fibonacci(n: u64) -> u64 {\n    match n {\n",
    "python": "def is_prime(n):\n    \"\"\"Return True if n is a prime number.\"\"\"\n",
    "german": "Die Hauptstadt von Deutschland ist Berlin. Die Stadt liegt",
    "french": "La recette traditionnelle de la ratatouille comprend",
    "japanese": "日本の首都は東京です。東京は",
    "digits": "1, 1, 2, 3, 5, 8, 13, 21, 34,",
    "json": "{\"name\": \"Alice\", \"age\": 30, \"skills\": [\"",
    "whitespace": "Item\t\tPrice\n    apples    \t 3.50\n    bread     \t",
    "english": "Once upon a time, in a small village by the sea, there lived",
}
GREEDY_TOKENS = 32
TOP_K = 64
REQUIRED_IDENTICAL = 8


def hf_model(path, threads):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    return model


def hf_greedy(model, ids, steps):
    """Greedy argmax continuation with a KV cache and no stop token (matches oracle_dump's `greedy`)."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        tokens = []
        for _ in range(steps):
            next_id = int(out.logits[0, -1].argmax())
            tokens.append(next_id)
            out = model(torch.tensor([[next_id]]), cache=out.cache, use_cache=True)
    return tokens


def compare_prompt(model, ids, ours):
    """(max |logit diff| over our top-k, max |logsumexp diff|, argmax agreement count, positions, hf greedy)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logsumexp = torch.logsumexp(logits, dim=-1)
    max_logit = max_lse = 0.0
    argmax_agree = 0
    for position, entry in enumerate(ours["positions"]):
        row = logits[position]
        for token, value in entry["top"]:
            # oracle_dump prints f32 logits as the shortest decimal that round-trips in f32: read them back as f32.
            max_logit = max(max_logit, abs(float(row[token]) - float(np.float32(value))))
        max_lse = max(max_lse, abs(float(logsumexp[position]) - entry["logsumexp"]))
        argmax_agree += int(row.argmax()) == entry["top"][0][0]
    return max_logit, max_lse, argmax_agree, len(ours["positions"]), hf_greedy(model, ids, GREEDY_TOKENS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF path (default: $ADAPTERCI_BASE_MODEL or .cache/models/...)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = model_path(args.model)

    names = list(PROMPTS)
    prompts = llama_cpp_tokenize(path, [PROMPTS[name] for name in names], special=True)
    ours = run_oracle_dump(path, prompts, GREEDY_TOKENS, TOP_K, args.threads)
    model = hf_model(path, args.threads)

    overall_logit = overall_lse = 0.0
    identical = agree_total = positions_total = 0
    print(f"{'prompt':<11} {'tokens':>6} {'max|dlogit|':>12} {'max|dlse|':>10} {'argmax':>9}  greedy-32")
    for name, ids, result in zip(names, prompts, ours["results"]):
        assert result["prompt"] == ids, f"{name}: oracle_dump echoed a different prompt"
        max_logit, max_lse, agree, positions, hf_tokens = compare_prompt(model, ids, result)
        same = hf_tokens == result["greedy"]
        identical += same
        agree_total += agree
        positions_total += positions
        overall_logit, overall_lse = max(overall_logit, max_logit), max(overall_lse, max_lse)
        if same:
            verdict = "identical"
        else:
            first = next(i for i, (a, b) in enumerate(zip(hf_tokens, result["greedy"])) if a != b)
            verdict = f"diverges at token {first}"
        print(f"{name:<11} {len(ids):>6} {max_logit:>12.3e} {max_lse:>10.3e} {agree:>4}/{positions:<4}  {verdict}")

    print(f"max |logit difference| over {positions_total} positions x top-{TOP_K} tokens: {overall_logit:.3e}")
    print(f"max |logsumexp difference|: {overall_lse:.3e}; argmax agreement {agree_total}/{positions_total}")
    print(f"greedy {GREEDY_TOKENS}-token continuations identical on {identical}/{len(names)} prompts "
          f"(required: {REQUIRED_IDENTICAL})")
    return 0 if identical >= REQUIRED_IDENTICAL else 1


if __name__ == "__main__":
    sys.exit(main())
