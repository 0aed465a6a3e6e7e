"""PEFT round trip: an adapter trained by the engine, loaded by HF PEFT on the same base, must give the engine's
logits; a PEFT-trained adapter imported by the engine likewise.

  .venv-peers/bin/python scripts/peft/peft_roundtrip.py --fixture   # tiny model; (re)writes the CI fixture
  .venv-peers/bin/python scripts/peft/peft_roundtrip.py [--model SmolLM2.gguf]   # the real base, prints diffs

The base for PEFT is the same GGUF dequantized to f32: the real model through transformers' GGUF loader (as
scripts/oracles/hf_logits_parity.py), the tiny one built here from the GGUF tensors (its tokenizer is not one
transformers can convert). The engine side is `cargo run -p adapterci-engine --example peft_interop`.
The fixture (crates/adapterci-engine/tests/fixtures/peft/) is checked by tests/lora_peft.rs without Python.
Installs `peft` into the running interpreter's environment from PyPI when it is missing.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "crates/adapterci-engine/tests/fixtures/peft"
DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 7
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

try:
    import peft  # noqa: F401
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "peft"], check=True)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402


def engine(*args, stdin=None):
    command = ["cargo", "run", "--quiet", "-p", "adapterci-engine", "--example", "peft_interop", "--", *map(str, args)]
    done = subprocess.run(command, cwd=ROOT, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: peft_interop {args[0]} failed:\n{done.stderr[-4000:]}")
    sys.stderr.write(done.stderr)
    return done.stdout


def engine_logits(model, ids, adapter=None):
    out = engine("logits", model, *([adapter] if adapter else []), stdin=json.dumps(ids))
    return np.array(json.loads(out)["logits"], dtype=np.float32)


def tiny_hf_model(path):
    """A transformers Llama with the tiny GGUF's f32 weights (q/k rows un-permuted as transformers does)."""
    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM

    reader = GGUFReader(str(path))

    def field(name):
        f = reader.fields[name]
        return f.parts[f.data[0]].tolist()[0]

    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    heads, kv_heads = field("llama.attention.head_count"), field("llama.attention.head_count_kv")
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=field("llama.embedding_length"),
        intermediate_size=field("llama.feed_forward_length"), num_hidden_layers=field("llama.block_count"),
        num_attention_heads=heads, num_key_value_heads=kv_heads,
        rms_norm_eps=field("llama.attention.layer_norm_rms_epsilon"), rope_theta=field("llama.rope.freq_base"),
        max_position_embeddings=field("llama.context_length"), tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(torch.float32)
    tensors = {t.name: torch.from_numpy(np.array(t.data, dtype=np.float32)) for t in reader.tensors}

    def unpermute(w, n):
        return w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    state = {"model.embed_tokens.weight": tensors["token_embd.weight"], "model.norm.weight": tensors["output_norm.weight"],
             "lm_head.weight": tensors["token_embd.weight"]}
    for i in range(config.num_hidden_layers):
        for short, long in names.items():
            w = tensors[f"blk.{i}.{short}.weight"]
            w = unpermute(w, heads) if short == "attn_q" else unpermute(w, kv_heads) if short == "attn_k" else w
            state[f"model.layers.{i}.{long}.weight"] = w
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    return model.eval()


def real_hf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def train_peft(base, ids, layers, out_dir, steps=5):
    """A PEFT adapter with rsLoRA, a rank and an alpha pattern and a layer selection, trained a few steps."""
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0, use_rslora=True,
                        rank_pattern={"down_proj": 4}, alpha_pattern={"o_proj": 4}, layers_to_transform=layers,
                        task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.tensor([ids])
    for _ in range(steps):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out_dir)
    return model


def rounded(logits):
    """Eight significant digits: far below the tolerance, and half the fixture's size."""
    return [[float(f"{x:.8g}") for x in row] for row in logits.tolist()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fixture", action="store_true", help="tiny model; write the CI fixture")
    parser.add_argument("--model", type=pathlib.Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["THREADS"] = str(args.threads)
    work = pathlib.Path(tempfile.mkdtemp(prefix="peft-roundtrip-"))
    if args.fixture:
        model_path = work / "tiny.gguf"
        engine("write-tiny", model_path, TINY_SEED)
        base = tiny_hf_model(model_path)
        ids = list(range(3, 300, 23))
        out = FIXTURE
        peft_layers = [1]
    else:
        model_path = (args.model or pathlib.Path(os.environ.get("ADAPTERCI_BASE_MODEL", DEFAULT_MODEL))).resolve()
        base = real_hf_model(model_path)
        ids = [1, 504, 3458, 282, 260, 4328, 30, 1115, 1838, 314, 5248, 28, 2365, 7, 10, 216]
        out = work
        peft_layers = list(range(22, 30))
    ours_dir, peft_dir = out / "ours", out / "peft"

    base_engine, base_hf = engine_logits(model_path, ids), hf_logits(base, ids)
    engine("train", model_path, ours_dir, 8, 3)
    ours_in_peft = PeftModel.from_pretrained(base, str(ours_dir))
    ours_peft_logits = hf_logits(ours_in_peft, ids)
    base = ours_in_peft.unload()
    ours_engine = engine_logits(model_path, ids, ours_dir)

    trained = train_peft(base, ids, peft_layers, str(peft_dir))
    peft_peft_logits = hf_logits(trained, ids)
    peft_engine = engine_logits(model_path, ids, peft_dir)

    def report(label, a, b):
        diff = float(np.abs(a - b).max())
        scale = float(np.abs(b).max())
        print(f"{label}: max |engine - PEFT| {diff:.3g} (logits up to {scale:.3g}), argmax agreement "
              f"{int((a.argmax(-1) == b.argmax(-1)).sum())}/{len(ids)}")
        return diff

    worst = max(report("base, no adapter", base_engine, base_hf),
                report("engine-trained adapter", ours_engine, ours_peft_logits),
                report("PEFT-trained adapter", peft_engine, peft_peft_logits))
    moved = float(np.abs(peft_peft_logits - base_hf).max()), float(np.abs(ours_peft_logits - base_hf).max())
    print(f"the adapters move the logits by up to {moved[1]:.3g} (engine-trained) and {moved[0]:.3g} (PEFT-trained)")
    if args.fixture:
        expected = {"tiny_seed": TINY_SEED, "ids": ids, "tolerance": 1e-4,
                    "peft_logits_of_engine_adapter": rounded(ours_peft_logits),
                    "peft_logits_of_peft_adapter": rounded(peft_peft_logits),
                    "peft_version": __import__("peft").__version__,
                    "transformers_version": __import__("transformers").__version__}
        (out / "expected.json").write_text(json.dumps(expected) + "\n")
        (peft_dir / "README.md").unlink(missing_ok=True)
        print(f"wrote {out}")
    if worst > 1e-3:
        sys.exit(f"error: engine and PEFT differ by {worst:.3g}")


if __name__ == "__main__":
    main()
