//! The ML engine on libtorch: GGUF import, tokenizer, Llama decoder, KV cache, generation, LoRA, training, eval metrics
