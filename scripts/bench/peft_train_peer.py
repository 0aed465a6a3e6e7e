"""HF PEFT training throughput in the peer setting of shared/tools/hf_peer.py: SmolLM2-135M from the GGUF
(dequantized to f32), LoRA r16 alpha 32 on all seven linear modules, batch 4 x 128 tokens, loss on every
token, AdamW lr 1e-4, CPU. Prints one `peer_step` line per step and a `peer_peak_rss_mib` line.

  python scripts/bench/peft_train_peer.py MODEL.gguf THREADS STEPS
"""
import os
import pathlib
import resource
import sys
import time

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

path = pathlib.Path(sys.argv[1]).resolve()
threads, steps = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
text = ("The history of the adapter begins with a simple idea: keep the base model frozen and learn a small "
        "low-rank update for each task. ") * 40
ids = tok(text, return_tensors="pt").input_ids
cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
pm = get_peft_model(model, cfg)
pm.train()
opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
B, T = 4, 128
x = ids[:, :T].repeat(B, 1)
for step in range(steps):
    t = time.perf_counter()
    loss = pm(input_ids=x, labels=x).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    dt = time.perf_counter() - t
    print(f"peer_step {step + 1} tokens_per_s {B * T / dt:.1f} loss {loss.item():.4f}", flush=True)
print(f"peer_peak_rss_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", flush=True)
