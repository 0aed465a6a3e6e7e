#!/usr/bin/env python3
"""Tokenizer oracle: llama.cpp's token ids for the tokenizer corpus, written as the fixture our Rust test checks.

Reads crates/adapterci-engine/tests/fixtures/tokenizer/corpus.txt (chunks separated by a line `-----8<-----`),
tokenizes every chunk, every line of every chunk and the whole corpus with llama.cpp (llama-cpp-python,
vocab only, add_bos=False) with special parsing on and off, and writes llama_cpp_expected.json next to it.
Also tokenizes the same cases with HF transformers' tokenizer loaded from the same GGUF and prints how often
it agrees with llama.cpp (informational: llama.cpp is the reference).

Run from the repository root with the peer venv (see scripts/oracles/README.md):
    .venv-peers/bin/python scripts/oracles/tokenizer_parity.py [--model PATH] [--check]
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse
import hashlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates/adapterci-engine/tests/fixtures/tokenizer"
SEPARATOR = "\n-----8<-----\n"
DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def corpus_cases(corpus: str):
    """(name, text) for every chunk, every line of every chunk with more than one line, and the whole corpus."""
    cases = []
    for index, chunk in enumerate(corpus.split(SEPARATOR)):
        cases.append((f"chunk-{index:02}", chunk))
        lines = chunk.splitlines(keepends=True)
        if len(lines) > 1:
            for number, line in enumerate(lines):
                cases.append((f"chunk-{index:02}-line-{number:02}", line))
    cases.append(("whole-corpus", corpus))
    return cases


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def llama_cpp_ids(model_path: pathlib.Path, cases):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    out = []
    for name, text in cases:
        data = text.encode("utf-8")
        special = llm.tokenize(data, add_bos=False, special=True)
        plain = llm.tokenize(data, add_bos=False, special=False)
        out.append({"name": name, "text": text, "special": special, "plain": plain})
    return llama_cpp.__version__, out


def hf_agreement(model_path: pathlib.Path, expected):
    """How many cases HF's GGUF-loaded tokenizer tokenizes exactly as llama.cpp, per special mode."""
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        print(f"hf: transformers unavailable ({error}); skipping the HF comparison")
        return None
    tokenizer = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    result = {}
    for mode, split in (("special", False), ("plain", True)):
        agree, mismatches = 0, []
        for case in expected:
            ids = tokenizer(case["text"], add_special_tokens=False, split_special_tokens=split)["input_ids"]
            if ids == case[mode]:
                agree += 1
            else:
                mismatches.append(case["name"])
        result[mode] = (agree, len(expected), mismatches)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("ADAPTERCI_BASE_MODEL", DEFAULT_MODEL)))
    parser.add_argument("--corpus", type=pathlib.Path, default=FIXTURES / "corpus.txt")
    parser.add_argument("--out", type=pathlib.Path, default=FIXTURES / "llama_cpp_expected.json")
    parser.add_argument("--check", action="store_true", help="fail if the committed fixture differs, write nothing")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF transformers comparison")
    args = parser.parse_args()

    if not args.model.is_file():
        print(f"error: model {args.model} not found (set ADAPTERCI_BASE_MODEL or pass --model)", file=sys.stderr)
        return 2
    # newline="" keeps \r\n in the corpus as written.
    with open(args.corpus, encoding="utf-8", newline="") as file:
        corpus = file.read()
    cases = corpus_cases(corpus)
    version, expected = llama_cpp_ids(args.model, cases)
    document = {
        "generator": "scripts/oracles/tokenizer_parity.py",
        "llama_cpp_python": version,
        "model_sha256": sha256(args.model),
        "corpus_separator": SEPARATOR,
        "cases": expected,
    }
    rendered = json.dumps(document, ensure_ascii=True, indent=1) + "\n"
    tokens = sum(len(case["special"]) for case in expected)
    print(f"llama.cpp {version}: {len(expected)} cases, {tokens} tokens with special parsing")

    status = 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != rendered:
            print(f"error: {args.out} is stale; rerun without --check to regenerate", file=sys.stderr)
            status = 1
        else:
            print(f"{args.out} is up to date")
    else:
        args.out.write_text(rendered, encoding="utf-8")
        print(f"wrote {args.out}")

    if not args.no_hf:
        agreement = hf_agreement(args.model, expected)
        if agreement:
            for mode, (agree, total, mismatches) in agreement.items():
                shown = ", ".join(mismatches[:8]) + (" ..." if len(mismatches) > 8 else "")
                print(f"hf vs llama.cpp ({mode}): {agree}/{total} cases identical" + (f"; differ: {shown}" if mismatches else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
