#!/usr/bin/env python3
"""The llama.cpp peer rows of the base-release benchmarks (scripts/bench/base_quality.sh, base_release_path.sh).

Requantizes the source GGUF to Q8_0, Q5_0, Q4_0 and IQ4_NL with llama.cpp (requantization allowed), then scores
each, and the source itself, on exactly the held-out token chunks our benchmark scored (eval_tokens.json from
examples/base_bench.rs or `adapterci-base evaluate --tokens-out`): mean next-token cross-entropy, perplexity, and top-1 agreement with the uncompressed
model (the teacher's argmax per position, computed by our engine in f32 on the dequantized GGUF).

    .venv-peers/bin/python scripts/bench/llama_cpp_quants.py --model M.gguf --tokens eval_tokens.json --out peers.json
"""
import argparse
import ctypes
import json
import os
import pathlib

import numpy as np

# Bits per weight of the linear layers for each block format (scale bits counted), from ggml's block layouts.
FORMATS = [("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", 8.5), ("Q5_0", "LLAMA_FTYPE_MOSTLY_Q5_0", 5.5),
           ("Q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0", 4.5), ("IQ4_NL", "LLAMA_FTYPE_MOSTLY_IQ4_NL", 4.5)]


def quantize(llama_cpp, src, dst, ftype, threads):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama.cpp quantization to {dst.name} failed ({rc})")


def score(llama_cpp, path, chunks, teacher_top1, threads):
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, logits_all=True, n_threads=threads,
                          n_threads_batch=threads, n_gpu_layers=0, verbose=False)
    ce_sum, agree, n = 0.0, 0, 0
    for chunk, top1 in zip(chunks, teacher_top1):
        llm.reset()
        llm.eval(chunk)
        scores = np.asarray(llm.scores[: len(chunk)], dtype=np.float64)
        logp = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)
        for pos in range(len(chunk) - 1):
            ce_sum -= logp[pos, chunk[pos + 1]]
            agree += int(scores[pos].argmax()) == top1[pos]
            n += 1
    return ce_sum / n, agree / n, n


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", required=True, help="eval_tokens.json written by examples/base_bench.rs or adapterci-base evaluate --tokens-out")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="where the quantized files go (default: next to --out)")
    args = parser.parse_args()
    import llama_cpp

    data = json.loads(pathlib.Path(args.tokens).read_text())
    chunks, top1 = data["chunks"], data["teacher_top1"]
    work = pathlib.Path(args.workdir or pathlib.Path(args.out).parent / "llama-cpp-quants")
    work.mkdir(parents=True, exist_ok=True)
    source = pathlib.Path(args.model)
    rows = []
    variants = [("llama.cpp Q4_1 (the source GGUF itself)", source, 5.0)]
    for name, ftype_name, bpw in FORMATS:
        dst = work / f"{source.stem}.{name}.gguf"
        if not dst.exists():
            print(f"quantizing {name} ...", flush=True)
            quantize(llama_cpp, source, dst, getattr(llama_cpp, ftype_name), args.threads)
        variants.append((f"llama.cpp {name} (requantized from the same GGUF)", dst, bpw))
    for name, path, bpw in variants:
        ce, agree, n = score(llama_cpp, path, chunks, top1, args.threads)
        size = os.path.getsize(path)
        rows.append({"variant": name, "linear_bpw": bpw, "file_bytes": size, "cross_entropy": ce,
                     "perplexity": float(np.exp(ce)), "top1_agreement": agree, "positions": n})
        print(f"{name}: ppl {np.exp(ce):.2f} ce {ce:.4f} top-1 {agree:.3f} ({size} bytes)", flush=True)
    pathlib.Path(args.out).write_text(json.dumps({"rows": rows, "llama_cpp_python": llama_cpp.__version__}, indent=1))


if __name__ == "__main__":
    main()
