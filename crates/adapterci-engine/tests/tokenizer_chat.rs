//! Chat rendering against Jinja2: every conversation in the fixture (made by scripts/oracles/chat_templates.py
//! from SmolLM2's GGUF template and plain ChatML) renders byte for byte as Jinja2 with HF's settings renders it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adapterci_engine::chat::{CHATML_TEMPLATE, ChatMessage, ChatTemplate};
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::tokenizer::{Tokenizer, tiny_tokenizer_spec};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    templates: BTreeMap<String, String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    template: String,
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    expected: String,
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/chat_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read chat_expected.json")).expect("parse fixture")
}

/// Renders every case of `template_name` with `render` and compares with Jinja2's output.
fn check_all(fixture: &Fixture, template_name: &str, render: impl Fn(&[ChatMessage], bool) -> String) {
    let cases: Vec<&Case> = fixture.cases.iter().filter(|case| case.template == template_name).collect();
    assert!(cases.len() >= 20, "fixture has {} {template_name} cases", cases.len());
    for case in cases {
        assert_eq!(render(&case.messages, case.add_generation_prompt), case.expected, "{}", case.name);
    }
}

#[test]
fn renders_like_jinja_for_both_templates() {
    let fixture = fixture();
    assert_eq!(fixture.templates["chatml"], CHATML_TEMPLATE, "CHATML_TEMPLATE drifted from the oracle's copy");
    for (name, text) in &fixture.templates {
        let template = ChatTemplate::parse(text).unwrap_or_else(|error| panic!("{name}: {error}"));
        check_all(&fixture, name, |messages, prompt| template.render(messages, prompt).expect("render"));
    }
}

#[test]
fn tiny_tokenizer_renders_plain_chatml() {
    let fixture = fixture();
    let tokenizer = Tokenizer::from_spec(&tiny_tokenizer_spec()).expect("tiny tokenizer");
    check_all(&fixture, "chatml", |messages, prompt| tokenizer.render_chat(messages, prompt).expect("render"));
    let rendered = tokenizer.render_chat(&[ChatMessage::user("hi")], true).expect("render");
    let ids = tokenizer.encode(&rendered, true);
    let im_start = tokenizer.token_id("<|im_start|>").expect("im_start");
    assert_eq!(ids.iter().filter(|&&id| id == im_start).count(), 2, "{ids:?}");
    assert_eq!(tokenizer.decode(&ids), rendered);
}

#[test]
fn real_model_template_is_the_fixture_template() {
    let Some(path) = std::env::var_os("ADAPTERCI_BASE_MODEL").map(PathBuf::from).filter(|path| path.is_file()) else {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL is not set to the SmolLM2 GGUF");
        return;
    };
    let fixture = fixture();
    let file = GgufFile::open(&path).expect("open base model");
    assert_eq!(file.get_str("tokenizer.chat_template").expect("chat template"), fixture.templates["smollm2"]);
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    check_all(&fixture, "smollm2", |messages, prompt| tokenizer.render_chat(messages, prompt).expect("render"));
}
