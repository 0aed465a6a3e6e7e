//! The ML engine on libtorch (tch): GGUF import, byte-level BPE tokenizer, the Llama-family decoder with
//! grouped-query attention and a tied embedding, KV cache, generation, LoRA, training and eval metrics.
//!
//! This is the only crate that names `tch`. Its API is synchronous: callers run it on dedicated threads.
//! Public types that other crates use (`BaseModel`, `LoadedAdapter`, `EngineBackend`, ...) do not expose tch.

pub mod allocate;
pub mod backend;
pub mod calibrate;
pub mod chat;
pub mod config;
pub mod dataset;
pub mod device;
pub mod error;
pub mod eval;
pub mod files;
pub mod generate;
pub mod gguf;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod model;
pub mod palettize;
pub mod recover;
pub mod release;
pub mod release_build;
pub mod tiny;
pub mod tokenizer;
pub mod train;

pub use backend::EngineBackend;
pub use chat::ChatMessage;
pub use config::LlamaConfig;
pub use error::EngineError;
pub use tokenizer::{Tokenizer, TokenizerSpec, tiny_tokenizer_spec};
