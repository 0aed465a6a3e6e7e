//! Dataset parsing, rendering and splitting: every bad record is reported with its line and field, the loss
//! mask covers exactly the assistant tokens, long records are truncated from the left of the prompt.

use adapterci_engine::EngineError;
use adapterci_engine::chat::ChatMessage;
use adapterci_engine::dataset::{
    Dataset, MAX_REPORTED_ISSUES, parse_jsonl, split_train_eval, tokenize_record, tokenize_records,
};
use adapterci_engine::tokenizer::{Tokenizer, tiny_tokenizer_spec};

/// Parses `input` and asserts the reported problems, each given as a prefix of its message.
fn check_errors(input: &str, expected_prefixes: &[&str]) {
    let issues = match parse_jsonl(input.as_bytes()) {
        Err(EngineError::InvalidDataset(issues)) => issues,
        other => panic!("expected an invalid dataset, got {other:?}"),
    };
    let got: Vec<String> = issues.issues.iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), expected_prefixes.len(), "{got:#?}");
    for (message, prefix) in got.iter().zip(expected_prefixes) {
        assert!(message.starts_with(prefix), "{message:?} does not start with {prefix:?}");
    }
}

fn parse_ok(input: &str) -> Dataset {
    parse_jsonl(input.as_bytes()).expect("valid dataset")
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage { role: role.to_string(), content: content.to_string() }
}

const GOOD: &str = r#"{"prompt": "hi", "completion": "hello"}"#;

#[test]
fn invalid_json_names_the_line() {
    check_errors(
        &format!("{GOOD}\n{GOOD}x\n{{\"prompt\": \"a\", \n"),
        &["line 2: invalid JSON: ", "line 3: invalid JSON: "],
    );
}

#[test]
fn json_errors_give_the_column_not_the_line_inside_the_record() {
    check_errors("{\"prompt\": }", &["line 1: invalid JSON: expected value at column 12"]);
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    check_errors(
        "\n\n{\"prompt\": \"a\"}\n{\"prompt\": 3, \"completion\": \"b\"}\n{\"prompt\": \"a\", \"completion\": null}",
        &[
            "line 3: field \"completion\": missing",
            "line 4: field \"prompt\": expected a string, found a number",
            "line 5: field \"completion\": expected a string, found null",
        ],
    );
}

#[test]
fn records_must_be_objects_of_a_known_shape() {
    check_errors(
        "[1, 2]\n\"text\"\n{\"text\": \"a\"}\n{\"prompt\": \"a\", \"completion\": \"b\", \"messages\": []}",
        &[
            "line 1: expected a JSON object, found a list",
            "line 2: expected a JSON object, found a string",
            "line 3: expected an object with \"prompt\" and \"completion\" or with \"messages\"",
            "line 4: expected either \"prompt\" and \"completion\" or \"messages\", not both",
        ],
    );
}

#[test]
fn message_roles_and_fields_are_checked() {
    let input = [
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#,
        r#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "bot", "content": "c"}]}"#,
        r#"{"messages": [{"role": "user", "content": 1}, {"content": "b"}, "x"]}"#,
        r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}"#,
        r#"{"messages": []}"#,
        r#"{"messages": {"role": "user"}}"#,
    ]
    .join("\n");
    check_errors(
        &input,
        &[
            "line 2: messages[2].role: unknown role \"bot\" (expected system, user or assistant)",
            "line 3: messages[0].content: expected a string, found a number",
            "line 3: messages[1].role: missing",
            "line 3: messages[2]: expected an object with \"role\" and \"content\", found a string",
            "line 4: field \"messages\": no assistant message to learn from",
            "line 5: field \"messages\": the list is empty",
            "line 6: field \"messages\": expected a list, found an object",
        ],
    );
}

#[test]
fn empty_datasets_are_refused() {
    check_errors("", &["the dataset is empty"]);
    check_errors("\n  \n\r\n\t\n", &["the dataset is empty"]);
}

#[test]
fn errors_are_capped_but_counted() {
    let input = "nope\n".repeat(MAX_REPORTED_ISSUES + 5);
    let Err(EngineError::InvalidDataset(issues)) = parse_jsonl(input.as_bytes()) else { panic!("expected errors") };
    assert_eq!(issues.issues.len(), MAX_REPORTED_ISSUES);
    assert_eq!(issues.total, MAX_REPORTED_ISSUES + 5);
    assert!(issues.to_string().ends_with("; and 5 more"), "{issues}");
}

#[test]
fn prompt_completion_becomes_a_user_and_an_assistant_message() {
    let dataset = parse_ok(&format!("\u{feff}{GOOD}\r\n\n{}", r#"{"prompt": "p", "completion": "c", "id": 7}"#));
    assert_eq!(dataset.records.len(), 2);
    assert_eq!(dataset.records[0].messages, vec![msg("user", "hi"), msg("assistant", "hello")]);
    assert_eq!(dataset.records[1].line, 3);
    assert_eq!(dataset.records[1].display_prompt(), "p");
    assert_eq!(dataset.records[1].expected_answer(), "c");
}

#[test]
fn exact_duplicates_are_removed_and_counted() {
    let same_as_messages =
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    let other = r#"{"prompt": "hi", "completion": "hello!"}"#;
    let dataset = parse_ok(&[GOOD, other, GOOD, same_as_messages].join("\n"));
    assert_eq!(dataset.duplicates_removed, 2);
    assert_eq!(dataset.records.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn split_is_seeded_disjoint_and_keeps_one_eval_record() {
    let (train, eval) = split_train_eval(100, 0.1, 7);
    assert_eq!((train.len(), eval.len()), (90, 10));
    assert!(eval.iter().all(|i| !train.contains(i)));
    assert_eq!(split_train_eval(100, 0.1, 7), (train.clone(), eval.clone()));
    assert_ne!(split_train_eval(100, 0.1, 8).1, eval, "another seed picks other records");
    assert_eq!(split_train_eval(2, 0.0, 1).1.len(), 1);
    assert_eq!(split_train_eval(3, 0.99, 1).0.len(), 1);
    assert_eq!(split_train_eval(1, 0.5, 1), (vec![0], vec![]));
}

fn tiny_tokenizer() -> Tokenizer {
    Tokenizer::from_spec(&tiny_tokenizer_spec()).expect("tiny tokenizer")
}

/// The decoded target tokens of an example, concatenated.
fn targets_text(tokenizer: &Tokenizer, ids: &[u32], mask: &[bool]) -> Vec<String> {
    let mut spans = Vec::new();
    let mut current = Vec::new();
    for (&id, &target) in ids.iter().zip(mask) {
        if target {
            current.push(id);
        } else if !current.is_empty() {
            spans.push(tokenizer.decode(&std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        spans.push(tokenizer.decode(&current));
    }
    spans
}

#[test]
fn loss_mask_covers_exactly_the_assistant_content_and_end_of_turn() {
    let tokenizer = tiny_tokenizer();
    let dataset = parse_ok(
        r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "six, I think"}]}"#,
    );
    let example = tokenize_record(&dataset.records[0], &tokenizer, 1024).expect("fits");
    assert_eq!(
        targets_text(&tokenizer, &example.input_ids, &example.loss_mask),
        ["4<|im_end|>", "six, I think<|im_end|>"]
    );
    let messages = &dataset.records[0].messages;
    let rendered = tokenizer.render_chat(messages, false).expect("renders");
    let decoded = tokenizer.decode(&example.input_ids);
    assert!(rendered.starts_with(&decoded) && rendered[decoded.len()..] == *"\n", "{decoded:?} vs {rendered:?}");
    let prompt = tokenizer.render_chat(&messages[..4], true).expect("renders");
    assert_eq!(tokenizer.decode(&example.input_ids[..example.prompt_len]), prompt);
    assert_eq!((example.expected.as_str(), example.prompt.as_str()), ("six, I think", "and 3+3?"));
}

#[test]
fn long_prompts_are_cut_from_the_left() {
    let tokenizer = tiny_tokenizer();
    let long = format!(r#"{{"prompt": "{} end", "completion": "done"}}"#, "word ".repeat(200));
    let dataset = parse_ok(&long);
    let full = tokenize_record(&dataset.records[0], &tokenizer, 100_000).expect("fits");
    let cut = tokenize_record(&dataset.records[0], &tokenizer, 40).expect("fits after truncation");
    assert_eq!(cut.input_ids.len(), 40);
    assert_eq!(cut.truncated_tokens, full.input_ids.len() - 40);
    assert_eq!(cut.input_ids[..], full.input_ids[full.input_ids.len() - 40..]);
    assert_eq!(cut.loss_mask[..], full.loss_mask[full.loss_mask.len() - 40..]);
    assert_eq!(cut.prompt_len, full.prompt_len - cut.truncated_tokens);
    assert_eq!(targets_text(&tokenizer, &cut.input_ids, &cut.loss_mask), ["done<|im_end|>"]);
}

#[test]
fn a_completion_that_cannot_fit_names_its_line() {
    let tokenizer = tiny_tokenizer();
    let long = r#"{"prompt": "p", "completion": "a very long answer that cannot possibly fit in ten tokens"}"#;
    let dataset = parse_ok(&format!("{GOOD}\n{long}\n{GOOD}"));
    assert_eq!(dataset.duplicates_removed, 1);
    let Err(EngineError::InvalidDataset(issues)) = tokenize_records(&dataset.records, &tokenizer, 10) else {
        panic!("expected the long completion to be refused");
    };
    assert_eq!(issues.issues.len(), 1, "{issues}");
    let message = issues.issues[0].to_string();
    assert!(message.starts_with("line 2: the completion alone is ") && message.contains("max_seq_len 10"), "{message}");
}

/// The real model's tokenizer (SmolLM2 inserts a default system message), when `ADAPTERCI_BASE_MODEL` is set.
fn real_tokenizer() -> Option<Tokenizer> {
    let Some(path) = std::env::var_os("ADAPTERCI_BASE_MODEL") else {
        eprintln!("skipping: ADAPTERCI_BASE_MODEL is not set");
        return None;
    };
    let file = adapterci_engine::gguf::GgufFile::open(std::path::Path::new(&path)).expect("open the base model");
    Some(Tokenizer::from_gguf(&file).expect("tokenizer from gguf"))
}

#[test]
fn real_tokenizer_mask_and_prompt_match_generation() {
    let Some(tokenizer) = real_tokenizer() else { return };
    let dataset = parse_ok(
        r#"{"prompt": "Order from Maria Lopez: 2 x blue mug, ship to Lyon.", "completion": "TICKET|Maria Lopez|blue mug|2|Lyon"}"#,
    );
    let record = &dataset.records[0];
    let example = tokenize_record(record, &tokenizer, 256).expect("fits");
    assert_eq!(
        targets_text(&tokenizer, &example.input_ids, &example.loss_mask),
        ["TICKET|Maria Lopez|blue mug|2|Lyon<|im_end|>"]
    );
    let prompt = tokenizer.render_chat(&record.messages[..1], true).expect("renders");
    assert!(prompt.starts_with("<|im_start|>system\n"), "SmolLM2 adds its default system message: {prompt:?}");
    assert_eq!(example.input_ids[..example.prompt_len], tokenizer.encode(&prompt, true)[..]);

    let opener = parse_ok(r#"{"messages": [{"role": "assistant", "content": "Hi there"}]}"#);
    let example = tokenize_record(&opener.records[0], &tokenizer, 256).expect("fits");
    assert_eq!(targets_text(&tokenizer, &example.input_ids, &example.loss_mask), ["Hi there<|im_end|>"]);
    assert!(tokenizer.decode(&example.input_ids).starts_with("<|im_start|>system\n"), "default system message");
}

#[test]
fn token_length_statistics_and_the_reject_policy() {
    use adapterci_engine::dataset::stats::{TruncationPolicy, token_length_stats, tokenize_records_with_policy};
    let tokenizer = tiny_tokenizer();
    let long_prompt = "word ".repeat(60);
    let input = format!(
        "{{\"prompt\":\"hi\",\"completion\":\"yes\"}}\n{{\"prompt\":\"{long_prompt}\",\"completion\":\"ok\"}}\n\
         {{\"prompt\":\"hello there\",\"completion\":\"fine thanks\"}}\n"
    );
    let dataset = parse_ok(&input);
    let examples = tokenize_records_with_policy(&dataset.records, &tokenizer, 48, TruncationPolicy::TruncatePromptLeft)
        .expect("left truncation fits every record");
    let stats = token_length_stats(&examples);
    assert_eq!(stats.examples, 3);
    assert_eq!(stats.max, 48, "{stats}");
    assert_eq!((stats.truncated_examples, stats.p99), (1, 48));
    assert!(stats.truncated_tokens > 0 && stats.min < stats.p50 && stats.p50 < stats.max, "{stats}");
    assert_eq!(stats.total_tokens, examples.iter().map(|e| e.input_ids.len()).sum::<usize>());
    assert!(stats.target_tokens > 0 && stats.target_tokens < stats.total_tokens);
    let error = tokenize_records_with_policy(&dataset.records, &tokenizer, 48, TruncationPolicy::Reject)
        .expect_err("reject refuses the long record")
        .to_string();
    assert!(error.contains("line 2") && error.contains("longer than max_seq_len 48"), "{error}");
    assert_eq!(token_length_stats(&[]).mean, 0.0);
}
