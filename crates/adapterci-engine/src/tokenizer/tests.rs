//! Unit tests for the tokenizer: special-token partitioning, round trips and spec validation on the tiny spec.

use super::*;

fn tiny() -> Tokenizer {
    Tokenizer::from_spec(&tiny_tokenizer_spec()).expect("tiny spec builds")
}

fn check_roundtrip(tokenizer: &Tokenizer, text: &str) {
    for parse_special in [false, true] {
        let ids = tokenizer.encode(text, parse_special);
        assert_eq!(tokenizer.decode(&ids), text, "parse_special={parse_special} ids={ids:?}");
    }
}

#[test]
fn tiny_spec_is_deterministic_and_well_formed() {
    let spec = tiny_tokenizer_spec();
    assert_eq!(spec, tiny_tokenizer_spec());
    assert_eq!(spec.tokens.len(), tiny::TINY_VOCAB_SIZE);
    assert_eq!(spec.merges.len(), tiny::TINY_VOCAB_SIZE - 3 - 256);
    assert_eq!(&spec.tokens[..3], ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert_eq!(spec.tokens[3], "!");
    let mut distinct = spec.tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), spec.tokens.len(), "tokens are unique");
    let tokenizer = tiny();
    assert_eq!(tokenizer.vocab_size(), 512);
    assert_eq!((tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id()), (Some(1), 2, Some(2)));
    assert_eq!(tokenizer.stop_token_ids(), vec![2]);
}

#[test]
fn tiny_tokenizer_compresses_english_and_round_trips_anything() {
    let tokenizer = tiny();
    let text = "The assistant answers the question.";
    let ids = tokenizer.encode(text, false);
    assert!(ids.len() * 3 < text.len(), "learned merges should compress English: {ids:?}");
    for text in
        ["", " ", "héllo wörld 🤖👩🏽‍💻", "\u{0}\u{4}\t\r\n", "12345 + 0.5", "ｆｕｌｌ ｗｉｄｔｈ", "  lead and trail  "]
    {
        check_roundtrip(&tokenizer, text);
    }
}

#[test]
fn special_tokens_match_only_with_parse_special() {
    let tokenizer = tiny();
    let text = "<|im_start|>user\nhi<|im_end|>\n";
    let parsed = tokenizer.encode(text, true);
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.iter().filter(|&&id| id == 2).count(), 1);
    let plain = tokenizer.encode(text, false);
    assert!(plain.iter().all(|&id| !tokenizer.is_special(id)), "{plain:?}");
    assert_eq!(tokenizer.decode(&plain), text);
    // Words around a special token are tokenized as if the token were a text boundary.
    let mut joined = tokenizer.encode("a", true);
    joined.push(2);
    joined.extend(tokenizer.encode(" b", true));
    assert_eq!(tokenizer.encode("a<|im_end|> b", true), joined);
}

fn spec_with(edit: impl FnOnce(&mut TokenizerSpec)) -> TokenizerSpec {
    let mut spec = tiny_tokenizer_spec();
    edit(&mut spec);
    spec
}

fn check_invalid(spec: TokenizerSpec, expect: &str) {
    let error = Tokenizer::from_spec(&spec).expect_err("invalid spec").to_string();
    assert!(error.contains(expect), "expected {expect:?} in {error:?}");
}

#[test]
fn invalid_specs_are_errors_naming_the_problem() {
    check_invalid(spec_with(|s| s.model = "llama".to_owned()), "tokenizer.ggml.model \"llama\"");
    check_invalid(spec_with(|s| s.pre = "qwen2".to_owned()), "tokenizer.ggml.pre \"qwen2\"");
    check_invalid(
        spec_with(|s| {
            s.token_types.pop();
        }),
        "token_type has 511 entries",
    );
    check_invalid(spec_with(|s| s.eos_id = 512), "eos_token_id is 512");
    check_invalid(spec_with(|s| s.bos_id = Some(9999)), "bos_token_id is 9999");
    check_invalid(spec_with(|s| s.merges[5] = "nospace".to_owned()), "merges[5] is \"nospace\"");
    check_invalid(spec_with(|s| s.merges[7] = "x ☃".to_owned()), "merges[7] names \"☃\"");
    check_invalid(spec_with(|s| s.tokens.clear()), "tokens is empty");
}

#[test]
fn unsupported_chat_template_fails_only_when_rendering() {
    let spec = spec_with(|s| s.chat_template = Some("{{ bos_token }}{% for m in messages %}{% endfor %}".to_owned()));
    let tokenizer = Tokenizer::from_spec(&spec).expect("encoding still works");
    assert!(!tokenizer.encode("hello", false).is_empty());
    let error = tokenizer.render_chat(&[ChatMessage::user("hi")], true).expect_err("unsupported template");
    assert!(error.to_string().contains("only ChatML templates"), "{error}");
}

#[test]
fn user_defined_tokens_match_even_without_parse_special() {
    let spec = spec_with(|s| {
        s.tokens.push("<tool>".to_owned());
        s.token_types.push(token_type::USER_DEFINED);
    });
    let tokenizer = Tokenizer::from_spec(&spec).expect("spec");
    let ids = tokenizer.encode("a<tool>b", false);
    assert!(ids.contains(&512), "{ids:?}");
    assert_eq!(tokenizer.decode(&ids), "a<tool>b");
}

#[test]
fn missing_byte_tokens_are_dropped_like_llama_cpp() {
    // Remove the byte 0x04 (GPT-2 char U+0104) from the vocabulary.
    let spec = spec_with(|s| {
        let at = s.tokens.iter().position(|t| t == "Ą").expect("byte 0x04 token");
        s.tokens[at] = "<unused>".to_owned();
        s.token_types[at] = token_type::UNUSED;
    });
    let tokenizer = Tokenizer::from_spec(&spec).expect("spec");
    let mut expect = tokenizer.encode("a", false);
    expect.extend(tokenizer.encode("b", false));
    assert_eq!(tokenizer.encode("a\u{4}b", false), expect);
}

#[test]
fn metadata_round_trips_through_a_gguf_file() {
    let spec = tiny_tokenizer_spec();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tiny-tokenizer.gguf");
    crate::gguf::write_gguf(&path, &spec.to_gguf_metadata(), &[]).expect("write gguf");
    let file = GgufFile::open(&path).expect("open gguf");
    let read = TokenizerSpec::from_gguf(&file);
    assert_eq!(read.expect("read spec"), spec);
}

#[test]
fn streamed_decoding_emits_whole_characters_only() {
    let tokenizer = tiny();
    let text = "a 👩🏽‍💻 中文 é!";
    let ids = tokenizer.encode(text, false);
    let mut stream = tokenizer.decode_stream();
    let pieces: Vec<String> = ids.iter().map(|&id| stream.push(id)).collect();
    assert_eq!(stream.finish(), "");
    assert_eq!(pieces.concat(), text);
    // The tiny vocabulary has no multi-byte merges for emoji: some tokens complete nothing on their own.
    assert!(pieces.iter().any(String::is_empty), "{pieces:?}");
    let mut cut = tokenizer.decode_stream();
    let first_emoji_byte = tokenizer.byte_token(0xF0).expect("byte token");
    assert_eq!(cut.push(first_emoji_byte), "");
    assert_eq!(cut.push(tokenizer.token_id("a").expect("a")), "\u{FFFD}a");
    assert_eq!(cut.push(first_emoji_byte), "");
    assert_eq!(cut.finish(), "\u{FFFD}");
}
