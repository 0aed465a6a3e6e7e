//! Token-for-token parity with llama.cpp on the real SmolLM2 tokenizer: every case of the corpus fixture (made by
//! scripts/oracles/tokenizer_parity.py) encodes to llama.cpp's ids with special parsing on and off, and decodes back.

use std::path::{Path, PathBuf};

use adapterci_engine::gguf::GgufFile;
use adapterci_engine::tokenizer::Tokenizer;
use serde::Deserialize;

const SEPARATOR: &str = "\n-----8<-----\n";

#[derive(Deserialize)]
struct Expected {
    corpus_separator: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    text: String,
    special: Vec<u32>,
    plain: Vec<u32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn expected() -> Expected {
    let text =
        std::fs::read_to_string(fixtures().join("llama_cpp_expected.json")).expect("read llama_cpp_expected.json");
    serde_json::from_str(&text).expect("parse llama_cpp_expected.json")
}

/// The real model's tokenizer, or `None` (with a notice) when ADAPTERCI_BASE_MODEL is unset or missing.
fn real_tokenizer() -> Option<Tokenizer> {
    let Some(path) = std::env::var_os("ADAPTERCI_BASE_MODEL").map(PathBuf::from).filter(|path| path.is_file()) else {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL is not set to the SmolLM2 GGUF");
        return None;
    };
    let file = GgufFile::open(&path).expect("open base model");
    Some(Tokenizer::from_gguf(&file).expect("tokenizer from base model"))
}

#[test]
fn fixture_matches_the_corpus() {
    let corpus = std::fs::read_to_string(fixtures().join("corpus.txt")).expect("read corpus.txt");
    let expected = expected();
    assert_eq!(expected.corpus_separator, SEPARATOR);
    let chunks: Vec<&str> = corpus.split(SEPARATOR).collect();
    let fixture_chunks: Vec<&str> = expected
        .cases
        .iter()
        .filter(|case| case.name.starts_with("chunk-") && !case.name.contains("-line-"))
        .map(|case| case.text.as_str())
        .collect();
    assert_eq!(fixture_chunks, chunks, "corpus.txt changed: rerun scripts/oracles/tokenizer_parity.py");
    let whole = expected.cases.iter().find(|case| case.name == "whole-corpus").expect("whole-corpus case");
    assert_eq!(whole.text, corpus);
}

#[test]
fn encodes_like_llama_cpp_token_for_token() {
    let Some(tokenizer) = real_tokenizer() else { return };
    let mut failures = Vec::new();
    for case in expected().cases {
        for (parse_special, want) in [(true, &case.special), (false, &case.plain)] {
            let got = tokenizer.encode(&case.text, parse_special);
            if &got != want {
                let first = got.iter().zip(want.iter()).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
                failures.push(format!(
                    "{} (parse_special={parse_special}): first difference at token {first}: ours {:?} llama.cpp {:?}",
                    case.name,
                    &got[first..(first + 6).min(got.len())],
                    &want[first..(first + 6).min(want.len())],
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn decode_inverts_encode_on_the_corpus() {
    let Some(tokenizer) = real_tokenizer() else { return };
    for case in expected().cases {
        // Bytes the vocabulary lacks are dropped by encoding (as llama.cpp drops them), so they cannot come back.
        let representable: Vec<u8> = case.text.bytes().filter(|&byte| tokenizer.byte_token(byte).is_some()).collect();
        for parse_special in [true, false] {
            let ids = tokenizer.encode(&case.text, parse_special);
            assert_eq!(tokenizer.decode_bytes(&ids), representable, "{} parse_special={parse_special}", case.name);
        }
    }
}

#[test]
fn real_tokenizer_facts() {
    let Some(tokenizer) = real_tokenizer() else { return };
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()), (Some(1), 2, Some(2)));
    assert_eq!(tokenizer.token_id("<|im_start|>"), Some(1));
    assert_eq!(tokenizer.stop_token_ids(), vec![2]);
    assert_eq!(tokenizer.encode("", true), Vec::<u32>::new());
    let missing: Vec<u8> = (0..=255u8).filter(|&byte| tokenizer.byte_token(byte).is_none()).collect();
    assert_eq!(missing.len(), 21, "{missing:x?}");
    assert_eq!(
        tokenizer.chat_template().expect("SmolLM2's template is ChatML").default_system(),
        Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    );
}
