"""Shared helpers for the oracle scripts: paths, offline settings, llama.cpp tokenization and the engine's
oracle_dump example (crates/adapterci-engine/examples/oracle_dump.rs documents its JSON I/O)."""
import os

# Nothing may download at run time: every peer loads the local GGUF.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def model_path(cli_value):
    """The GGUF to use: --model, else $ADAPTERCI_BASE_MODEL, else the bootstrap cache; exits if missing."""
    path = pathlib.Path(cli_value or os.environ.get("ADAPTERCI_BASE_MODEL") or DEFAULT_MODEL)
    if not path.is_file():
        sys.exit(f"error: model {path} not found (set ADAPTERCI_BASE_MODEL or pass --model)")
    return path.resolve()


def llama_cpp_tokenize(path, texts, special=True):
    """Token ids per text from llama.cpp's tokenizer (our tokenizer matches it token for token; see
    tests/tokenizer_parity.rs), without BOS, as the engine tokenizes."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return [vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special) for text in texts]


def run_oracle_dump(path, prompts, greedy_tokens, top_k, threads):
    """Runs the engine's oracle_dump example (release build) and returns its parsed response."""
    request = {"model": str(path), "prompts": prompts, "greedy_tokens": greedy_tokens, "top_k": top_k,
               "device": "cpu", "threads": threads}
    command = ["cargo", "run", "--quiet", "--release", "-p", "adapterci-engine", "--example", "oracle_dump"]
    completed = subprocess.run(command, cwd=ROOT, input=json.dumps(request), capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"error: oracle_dump failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)
