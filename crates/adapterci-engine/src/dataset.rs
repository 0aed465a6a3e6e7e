//! Training datasets: JSONL parsing with line-precise errors, ChatML rendering with an exact loss mask,
//! left truncation, de-duplication and the seeded train/eval split.
//!
//! A record is `{"prompt": str, "completion": str}` or `{"messages": [{"role", "content"}, ...]}`. Tokens are
//! produced segment by segment (template text, then each assistant content separately) so that the loss mask
//! boundaries are exact and the prompt tokens are the same ones generation sees at evaluation time.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::EngineError;
use crate::chat::ChatMessage;
use crate::tokenizer::Tokenizer;

pub mod stats;

/// At most this many problems are listed in one error; the rest are counted.
pub const MAX_REPORTED_ISSUES: usize = 20;

const ROLES: [&str; 3] = ["system", "user", "assistant"];
const END_OF_TURN: &str = "<|im_end|>";

/// One problem with a dataset, at a 1-based line when it belongs to one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetIssue {
    pub line: Option<usize>,
    pub message: String,
}

impl DatasetIssue {
    fn at(line: usize, message: impl Into<String>) -> Self {
        DatasetIssue { line: Some(line), message: message.into() }
    }
}

impl fmt::Display for DatasetIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a dataset (the first [`MAX_REPORTED_ISSUES`] of them, and how many there were).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetIssues {
    pub issues: Vec<DatasetIssue>,
    pub total: usize,
}

impl DatasetIssues {
    fn collect(all: Vec<DatasetIssue>) -> Self {
        let total = all.len();
        DatasetIssues { issues: all.into_iter().take(MAX_REPORTED_ISSUES).collect(), total }
    }
}

impl fmt::Display for DatasetIssues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, issue) in self.issues.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        if self.total > self.issues.len() {
            write!(f, "; and {} more", self.total - self.issues.len())?;
        }
        Ok(())
    }
}

/// One valid record, as chat messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetRecord {
    /// 1-based line in the JSONL file.
    pub line: usize,
    pub messages: Vec<ChatMessage>,
}

impl DatasetRecord {
    /// The text shown as the prompt of an eval sample: the last non-assistant message before the final answer.
    pub fn display_prompt(&self) -> String {
        let last = self.last_assistant_index();
        self.messages[..last]
            .iter()
            .rev()
            .find(|m| m.role != "assistant")
            .map(|m| m.content.clone())
            .unwrap_or_default()
    }

    /// The final assistant message: the expected answer for exact match.
    pub fn expected_answer(&self) -> &str {
        &self.messages[self.last_assistant_index()].content
    }

    fn last_assistant_index(&self) -> usize {
        // parse_jsonl guarantees at least one assistant message
        self.messages.iter().rposition(|m| m.role == "assistant").unwrap_or(self.messages.len().saturating_sub(1))
    }
}

/// The parsed dataset, duplicates removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub records: Vec<DatasetRecord>,
    /// Records dropped because an earlier line had exactly the same messages.
    pub duplicates_removed: usize,
}

/// Parses a JSONL dataset; every bad line is reported with its number (up to [`MAX_REPORTED_ISSUES`]).
pub fn parse_jsonl(bytes: &[u8]) -> Result<Dataset, EngineError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut issues = Vec::new();
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates_removed = 0;
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line, raw) {
            Ok(messages) => {
                let key: Vec<(String, String)> = messages.iter().map(|m| (m.role.clone(), m.content.clone())).collect();
                if seen.insert(key) {
                    records.push(DatasetRecord { line, messages });
                } else {
                    duplicates_removed += 1;
                }
            }
            Err(mut line_issues) => issues.append(&mut line_issues),
        }
    }
    if issues.is_empty() && records.is_empty() {
        issues.push(DatasetIssue { line: None, message: "the dataset is empty: it has no records".to_string() });
    }
    if !issues.is_empty() {
        return Err(EngineError::InvalidDataset(DatasetIssues::collect(issues)));
    }
    Ok(Dataset { records, duplicates_removed })
}

fn parse_line(line: usize, raw: &[u8]) -> Result<Vec<ChatMessage>, Vec<DatasetIssue>> {
    let value: Value = serde_json::from_slice(raw).map_err(|error| vec![json_issue(line, &error)])?;
    let Value::Object(object) = value else {
        return Err(vec![DatasetIssue::at(line, format!("expected a JSON object, found {}", kind_of(&value)))]);
    };
    let has_messages = object.contains_key("messages");
    let has_prompt = object.contains_key("prompt") || object.contains_key("completion");
    match (has_messages, has_prompt) {
        (true, true) => {
            Err(vec![DatasetIssue::at(line, "expected either \"prompt\" and \"completion\" or \"messages\", not both")])
        }
        (true, false) => parse_messages(line, &object),
        (false, true) => parse_prompt_completion(line, &object),
        (false, false) => Err(vec![DatasetIssue::at(
            line,
            "expected an object with \"prompt\" and \"completion\" or with \"messages\"",
        )]),
    }
}

fn parse_prompt_completion(line: usize, object: &Map<String, Value>) -> Result<Vec<ChatMessage>, Vec<DatasetIssue>> {
    let mut issues = Vec::new();
    let mut field = |name: &str| match object.get(name) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            issues
                .push(DatasetIssue::at(line, format!("field \"{name}\": expected a string, found {}", kind_of(other))));
            None
        }
        None => {
            issues.push(DatasetIssue::at(line, format!("field \"{name}\": missing")));
            None
        }
    };
    let prompt = field("prompt");
    let completion = field("completion");
    match (prompt, completion) {
        (Some(prompt), Some(completion)) => Ok(vec![
            ChatMessage { role: "user".to_string(), content: prompt },
            ChatMessage { role: "assistant".to_string(), content: completion },
        ]),
        _ => Err(issues),
    }
}

fn parse_messages(line: usize, object: &Map<String, Value>) -> Result<Vec<ChatMessage>, Vec<DatasetIssue>> {
    let items = match object.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(vec![DatasetIssue::at(line, "field \"messages\": the list is empty")]),
        Some(other) => {
            let found = kind_of(other);
            return Err(vec![DatasetIssue::at(line, format!("field \"messages\": expected a list, found {found}"))]);
        }
        None => return Err(vec![DatasetIssue::at(line, "field \"messages\": missing")]),
    };
    let mut issues = Vec::new();
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match parse_message(item) {
            Ok(message) => messages.push(message),
            Err(problems) => {
                issues.extend(problems.into_iter().map(|p| DatasetIssue::at(line, format!("messages[{index}]{p}"))))
            }
        }
    }
    if issues.is_empty() && !messages.iter().any(|m| m.role == "assistant") {
        issues.push(DatasetIssue::at(line, "field \"messages\": no assistant message to learn from"));
    }
    if issues.is_empty() { Ok(messages) } else { Err(issues) }
}

/// Problems are returned as suffixes of `messages[i]` (`.role: ...`, `: expected an object ...`).
fn parse_message(item: &Value) -> Result<ChatMessage, Vec<String>> {
    let Value::Object(object) = item else {
        return Err(vec![format!(": expected an object with \"role\" and \"content\", found {}", kind_of(item))]);
    };
    let mut problems = Vec::new();
    let role = match object.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => Some(role.clone()),
        Some(Value::String(role)) => {
            problems.push(format!(".role: unknown role {role:?} (expected system, user or assistant)"));
            None
        }
        Some(other) => {
            problems.push(format!(".role: expected a string, found {}", kind_of(other)));
            None
        }
        None => {
            problems.push(".role: missing".to_string());
            None
        }
    };
    let content = match object.get("content") {
        Some(Value::String(content)) => Some(content.clone()),
        Some(other) => {
            problems.push(format!(".content: expected a string, found {}", kind_of(other)));
            None
        }
        None => {
            problems.push(".content: missing".to_string());
            None
        }
    };
    match (role, content) {
        (Some(role), Some(content)) => Ok(ChatMessage { role, content }),
        _ => Err(problems),
    }
}

fn json_issue(line: usize, error: &serde_json::Error) -> DatasetIssue {
    let text = error.to_string();
    // serde_json appends " at line L column C"; within one JSONL line only the column helps
    let message = text.rfind(" at line ").map_or(text.as_str(), |cut| &text[..cut]);
    DatasetIssue::at(line, format!("invalid JSON: {message} at column {}", error.column()))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One record as tokens, ready for training and evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// 1-based line in the JSONL file.
    pub line: usize,
    pub input_ids: Vec<u32>,
    /// `true` where the token is a training target: assistant content and its closing `<|im_end|>`.
    pub loss_mask: Vec<bool>,
    /// Tokens before the final assistant content: the generation prompt for exact match.
    pub prompt_len: usize,
    /// Shown in eval samples.
    pub prompt: String,
    /// The final assistant content: what exact match compares against.
    pub expected: String,
    /// Tokens dropped from the left of the prompt to fit `max_seq_len`.
    pub truncated_tokens: usize,
}

impl Example {
    /// Number of training targets in this example.
    pub fn target_count(&self) -> usize {
        self.loss_mask.iter().filter(|&&target| target).count()
    }
}

/// Tokenizes every record; each record that cannot be rendered or does not fit is reported with its line.
pub fn tokenize_records(
    records: &[DatasetRecord],
    tokenizer: &Tokenizer,
    max_seq_len: usize,
) -> Result<Vec<Example>, EngineError> {
    let mut examples = Vec::with_capacity(records.len());
    let mut issues = Vec::new();
    for record in records {
        match tokenize_record(record, tokenizer, max_seq_len) {
            Ok(example) => examples.push(example),
            Err(issue) => issues.push(issue),
        }
    }
    if issues.is_empty() { Ok(examples) } else { Err(EngineError::InvalidDataset(DatasetIssues::collect(issues))) }
}

/// Renders one record with the chat template and tokenizes it segment by segment.
pub fn tokenize_record(
    record: &DatasetRecord,
    tokenizer: &Tokenizer,
    max_seq_len: usize,
) -> Result<Example, DatasetIssue> {
    let line = record.line;
    let render = |messages: &[ChatMessage]| {
        tokenizer.render_chat(messages, false).map_err(|e| DatasetIssue::at(line, e.to_string()))
    };
    let full = render(&record.messages)?;
    let mut ids: Vec<u32> = Vec::new();
    let mut mask: Vec<bool> = Vec::new();
    let mut push = |ids: &mut Vec<u32>, text: &str, target: bool, parse_special: bool| {
        let tokens = encode_segment(tokenizer, text, parse_special, ids.is_empty());
        mask.extend(std::iter::repeat_n(target, tokens.len()));
        ids.extend(tokens);
    };
    let mut consumed = 0;
    let mut prompt_len = 0;
    for (index, message) in record.messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
        // the conversation up to this turn ends with "{content}<|im_end|>\n" in ChatML; the content starts there
        let upto = render(&record.messages[..=index])?;
        let turn_end = format!("{}{END_OF_TURN}\n", message.content);
        let content_start = upto.len().saturating_sub(turn_end.len());
        if !(full.starts_with(upto.as_str()) && upto.ends_with(turn_end.as_str()) && content_start >= consumed) {
            let reason = "the chat template does not render assistant turns as ChatML \
                          (<|im_start|>assistant\\n...<|im_end|>); cannot build the loss mask";
            return Err(DatasetIssue::at(line, reason));
        }
        push(&mut ids, &full[consumed..content_start], false, true);
        prompt_len = ids.len();
        push(&mut ids, &message.content, true, false);
        push(&mut ids, END_OF_TURN, true, true);
        consumed = content_start + message.content.len() + END_OF_TURN.len();
    }
    truncate_left(line, ids, mask, prompt_len, max_seq_len, record)
}

/// Encodes one piece of the rendered text; a BOS the tokenizer adds is kept only at the very start.
fn encode_segment(tokenizer: &Tokenizer, text: &str, parse_special: bool, first: bool) -> Vec<u32> {
    let mut tokens = tokenizer.encode(text, parse_special);
    if !first
        && let Some(bos) = tokenizer.bos_id()
        && tokens.first() == Some(&bos)
    {
        tokens.remove(0);
    }
    tokens
}

fn truncate_left(
    line: usize,
    mut ids: Vec<u32>,
    mut mask: Vec<bool>,
    prompt_len: usize,
    max_seq_len: usize,
    record: &DatasetRecord,
) -> Result<Example, DatasetIssue> {
    let first_target = mask.iter().position(|&target| target).unwrap_or(ids.len());
    let answer_tokens = ids.len() - first_target;
    // one prompt token must stay: the first target is predicted from the token before it
    if answer_tokens + 1 > max_seq_len {
        return Err(DatasetIssue::at(
            line,
            format!(
                "the completion alone is {answer_tokens} tokens; with at least one prompt token it does not fit \
                 max_seq_len {max_seq_len}"
            ),
        ));
    }
    let truncated_tokens = ids.len().saturating_sub(max_seq_len);
    ids.drain(..truncated_tokens);
    mask.drain(..truncated_tokens);
    Ok(Example {
        line,
        input_ids: ids,
        loss_mask: mask,
        prompt_len: prompt_len - truncated_tokens,
        prompt: record.display_prompt(),
        expected: record.expected_answer().to_string(),
        truncated_tokens,
    })
}

/// A small, stable generator (SplitMix64) so that splits and batches do not change with a dependency's version.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), without modulo bias worth caring about at dataset sizes.
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// Uniform in the open interval (0, 1), on a grid of 2⁻⁵³.
    pub fn open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Record indices for training and evaluation, chosen by `seed`. With two or more records at least one is
/// held out and at least one is trained on.
pub fn split_train_eval(count: usize, eval_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..count).collect();
    // a different stream from batch sampling, which also starts from `seed`
    SeededRng::new(seed ^ 0x5EED_5B11_7000_0001).shuffle(&mut order);
    let wanted = (count as f64 * eval_fraction.clamp(0.0, 1.0)).round() as usize;
    let eval_count = if count >= 2 { wanted.clamp(1, count - 1) } else { 0 };
    let mut eval = order[..eval_count].to_vec();
    let mut train = order[eval_count..].to_vec();
    eval.sort_unstable();
    train.sort_unstable();
    (train, eval)
}
