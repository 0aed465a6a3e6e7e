//! The real base model (SmolLM2-135M-Instruct, Q4_1 GGUF) at `$ADAPTERCI_BASE_MODEL`: loads with the documented
//! shape and answers a chat prompt in English. Skipped with a notice when the variable or file is missing.

use std::path::PathBuf;

use adapterci_engine::chat::ChatMessage;
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::generate::{FinishReason, GenerationParams};
use adapterci_engine::gguf::{GgmlType, GgufFile};
use adapterci_engine::model::BaseModel;

fn real_model_path() -> Option<PathBuf> {
    let Some(path) = std::env::var_os("ADAPTERCI_BASE_MODEL").map(PathBuf::from) else {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL is not set");
        return None;
    };
    if !path.is_file() {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL={} does not exist", path.display());
        return None;
    }
    Some(path)
}

#[test]
fn the_gguf_has_the_documented_tensors() {
    let Some(path) = real_model_path() else { return };
    let file = GgufFile::open(&path).expect("open");
    assert_eq!(file.version(), 3);
    let count = |ty: GgmlType| file.tensor_infos().iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!((count(GgmlType::Q4_1), count(GgmlType::F32), count(GgmlType::Q8_0)), (210, 61, 1));
    let embedding = file.tensor_info("token_embd.weight").expect("embedding");
    assert_eq!((embedding.shape.as_slice(), embedding.ggml_type), (&[49152, 576][..], GgmlType::Q8_0));
    assert!(file.tensor_info("output.weight").is_none());
    let (shape, values) = file.dequantize("blk.0.attn_q.weight").expect("dequantize");
    assert_eq!(shape, vec![576, 576]);
    let mean_abs = values.iter().map(|v| v.abs() as f64).sum::<f64>() / values.len() as f64;
    assert!(mean_abs > 1e-3 && mean_abs < 1.0 && values.iter().all(|v| v.is_finite()), "mean |w| = {mean_abs}");
}

#[test]
fn loads_smollm2_and_answers_a_chat_prompt_in_english() {
    let Some(path) = real_model_path() else { return };
    let started = std::time::Instant::now();
    let model = BaseModel::load(&path, DeviceChoice::Cpu).expect("load");
    eprintln!("loaded {} in {:.2?}", model.name(), started.elapsed());
    let config = model.config();
    assert_eq!((config.num_layers, config.hidden_size, config.intermediate_size), (30, 576, 1536));
    assert_eq!((config.num_heads, config.num_kv_heads, config.head_dim), (9, 3, 64));
    assert_eq!((config.vocab_size, config.max_position_embeddings), (49152, 8192));
    assert!(config.tie_word_embeddings);
    assert_eq!(config.rope_theta, 100000.0);
    assert_eq!(
        model.digest().hex(),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "the documented SmolLM2-135M-Instruct.Q4_1.gguf"
    );

    let tokenizer = model.tokenizer();
    let text =
        tokenizer.render_chat(&[ChatMessage::user("What is the capital of France?")], true).expect("chat template");
    let prompt = tokenizer.encode(&text, true);
    let params = GenerationParams {
        max_new_tokens: 24,
        stop_token_ids: tokenizer.stop_token_ids(),
        ..GenerationParams::default()
    };
    let generation = model.generate(&prompt, None, &params).expect("generate");
    let answer = tokenizer.decode(&generation.tokens);
    eprintln!(
        "answer ({:?}, ttft {:.2?}, {:.1} tok/s): {answer:?}",
        generation.finish_reason, generation.time_to_first_token, generation.decode_tokens_per_second
    );
    assert!(answer.contains("Paris"), "{answer:?}");
    assert!(!generation.tokens.is_empty() && generation.tokens.len() <= 24);
    if generation.finish_reason == FinishReason::Stop {
        assert!(!answer.contains("<|im_end|>"), "the stop token is not part of the answer");
    }
}
