//! The Llama decoder's runtime configuration, read from GGUF metadata (`llama.*` keys) or made for tiny models.

use crate::EngineError;
use crate::gguf::{GgufFile, GgufValue, gguf_error};

/// Shape and numerics of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    /// The LM head is the token embedding (no `output.weight`).
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Reads `general.architecture == "llama"` and the `llama.*` keys; errors name the missing or bad key.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, EngineError> {
        let architecture = file.get_str("general.architecture")?;
        if architecture != "llama" {
            return Err(EngineError::UnsupportedModel(format!(
                "{}: architecture {architecture:?} is not supported (only \"llama\")",
                file.path().display()
            )));
        }
        let usize_key = |key: &str| file.get_u32(key).map(|v| v as usize);
        let hidden_size = usize_key("llama.embedding_length")?;
        let num_heads = usize_key("llama.attention.head_count")?;
        let num_kv_heads = match file.get("llama.attention.head_count_kv") {
            None => num_heads,
            Some(_) => usize_key("llama.attention.head_count_kv")?,
        };
        let vocab_size = match file.get("tokenizer.ggml.tokens") {
            Some(GgufValue::Array(tokens)) => tokens.len(),
            _ => usize_key("llama.vocab_size")?,
        };
        let rope_theta = match file.get("llama.rope.freq_base") {
            None => 10_000.0,
            Some(_) => file.get_f32("llama.rope.freq_base")? as f64,
        };
        let config = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: usize_key("llama.feed_forward_length")?,
            num_layers: usize_key("llama.block_count")?,
            num_heads,
            num_kv_heads,
            head_dim: hidden_size.checked_div(num_heads).unwrap_or(0),
            rope_theta,
            rms_norm_eps: file.get_f32("llama.attention.layer_norm_rms_epsilon")? as f64,
            max_position_embeddings: usize_key("llama.context_length")?,
            tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        };
        config.validate().map_err(|reason| gguf_error(file.path(), reason))?;
        Ok(config)
    }

    /// A tiny configuration of the same architecture (GQA, tied embedding) for fast tests.
    pub fn tiny(vocab_size: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            // Stored as f32 in GGUF; keep the f32 value so a tiny model's config reads back equal.
            rms_norm_eps: f64::from(1e-5f32),
            max_position_embeddings: 512,
            tie_word_embeddings: true,
        }
    }

    /// Checks the relations the decoder relies on; `Err` says which one fails.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab size", self.vocab_size),
            ("embedding length", self.hidden_size),
            ("feed-forward length", self.intermediate_size),
            ("block count", self.num_layers),
            ("head count", self.num_heads),
            ("kv head count", self.num_kv_heads),
            ("context length", self.max_position_embeddings),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("the model's {what} is 0"));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) || self.head_dim * self.num_heads != self.hidden_size {
            return Err(format!(
                "embedding length {} is not head count {} x head dim {}",
                self.hidden_size, self.num_heads, self.head_dim
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "head count {} is not a multiple of kv head count {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head dim {} is odd; rotary embeddings need pairs", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(format!("rms eps {} and rope base {} must be positive", self.rms_norm_eps, self.rope_theta));
        }
        Ok(())
    }

    /// The `llama.*` metadata that [`LlamaConfig::from_gguf`] reads back (for tiny models).
    pub fn to_gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let u32_value = |v: usize| GgufValue::U32(v as u32);
        vec![
            ("general.architecture".into(), GgufValue::String("llama".into())),
            ("llama.block_count".into(), u32_value(self.num_layers)),
            ("llama.embedding_length".into(), u32_value(self.hidden_size)),
            ("llama.feed_forward_length".into(), u32_value(self.intermediate_size)),
            ("llama.attention.head_count".into(), u32_value(self.num_heads)),
            ("llama.attention.head_count_kv".into(), u32_value(self.num_kv_heads)),
            ("llama.rope.freq_base".into(), GgufValue::F32(self.rope_theta as f32)),
            ("llama.attention.layer_norm_rms_epsilon".into(), GgufValue::F32(self.rms_norm_eps as f32)),
            ("llama.context_length".into(), u32_value(self.max_position_embeddings)),
            ("llama.vocab_size".into(), u32_value(self.vocab_size)),
            ("llama.rope.dimension_count".into(), u32_value(self.head_dim)),
        ]
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write_gguf;

    fn file_with(metadata: Vec<(String, GgufValue)>, with_output: bool) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.gguf");
        let tensors =
            if with_output { vec![("output.weight".to_owned(), vec![2, 2], vec![0.0; 4])] } else { Vec::new() };
        write_gguf(&path, &metadata, &tensors).expect("write");
        let file = GgufFile::open(&path).expect("open");
        (dir, file)
    }

    #[test]
    fn reads_back_what_to_gguf_metadata_writes() {
        let config = LlamaConfig::tiny(300);
        let (_dir, file) = file_with(config.to_gguf_metadata(), false);
        assert_eq!(LlamaConfig::from_gguf(&file).expect("config"), config);
        let (_dir, file) = file_with(config.to_gguf_metadata(), true);
        assert!(!LlamaConfig::from_gguf(&file).expect("config").tie_word_embeddings);
    }

    #[test]
    fn vocab_comes_from_the_token_list_when_present() {
        let mut metadata = LlamaConfig::tiny(300).to_gguf_metadata();
        let tokens = (0..7).map(|i| GgufValue::String(format!("t{i}"))).collect();
        metadata.push(("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens)));
        let (_dir, file) = file_with(metadata, false);
        assert_eq!(LlamaConfig::from_gguf(&file).expect("config").vocab_size, 7);
    }

    fn check_error(edit: impl Fn(&mut Vec<(String, GgufValue)>), expected: &str) {
        let mut metadata = LlamaConfig::tiny(300).to_gguf_metadata();
        edit(&mut metadata);
        let (_dir, file) = file_with(metadata, false);
        let message = LlamaConfig::from_gguf(&file).expect_err("should fail").to_string();
        assert!(message.contains(expected), "{message:?} should contain {expected:?}");
    }

    fn set(key: &str, value: GgufValue) -> impl Fn(&mut Vec<(String, GgufValue)>) {
        move |metadata| {
            metadata.retain(|(k, _)| k != key);
            metadata.push((key.to_owned(), value.clone()));
        }
    }

    fn remove(key: &'static str) -> impl Fn(&mut Vec<(String, GgufValue)>) {
        move |metadata| metadata.retain(|(k, _)| k != key)
    }

    #[test]
    fn bad_metadata_names_the_key() {
        check_error(remove("llama.block_count"), "\"llama.block_count\" is missing");
        check_error(remove("llama.attention.layer_norm_rms_epsilon"), "\"llama.attention.layer_norm_rms_epsilon\"");
        check_error(remove("llama.vocab_size"), "\"llama.vocab_size\" is missing");
        check_error(remove("general.architecture"), "\"general.architecture\" is missing");
        check_error(set("general.architecture", GgufValue::String("gemma".into())), "\"gemma\" is not supported");
        check_error(set("llama.embedding_length", GgufValue::String("576".into())), "\"llama.embedding_length\"");
        check_error(set("llama.attention.head_count_kv", GgufValue::U32(3)), "not a multiple of kv head count 3");
        check_error(set("llama.attention.head_count", GgufValue::U32(5)), "embedding length 64");
        check_error(set("llama.block_count", GgufValue::U32(0)), "block count is 0");
    }
}
