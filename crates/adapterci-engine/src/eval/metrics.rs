//! Eval metrics beyond loss and exact match: contains, regex match, JSON validity (optionally against a JSON
//! schema subset), ROUGE-L, perplexity, and KL divergence from the base model's next-token distribution.
//!
//! Text metrics are shares over the generated answers (0..1), so a gate reads them like `exact_match`.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;
use tch::Kind;

use crate::dataset::Example;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::train::Batch;

/// Whether the trimmed expected answer occurs in the output (an empty expectation never counts).
pub fn contains(output: &str, expected: &str) -> bool {
    let expected = expected.trim();
    !expected.is_empty() && output.contains(expected)
}

/// Whether the whole trimmed output parses as JSON.
pub fn json_valid(output: &str) -> bool {
    serde_json::from_str::<Value>(output.trim()).is_ok()
}

/// Lowercased runs of letters and digits (punctuation and spacing separate tokens), as ROUGE tokenizes.
fn rouge_tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

/// ROUGE-L F1 (beta 1) over lowercased alphanumeric tokens: the longest common subsequence against both
/// lengths.
pub fn rouge_l(output: &str, reference: &str) -> f64 {
    let candidate = rouge_tokens(output);
    let reference = rouge_tokens(reference);
    if candidate.is_empty() || reference.is_empty() {
        return if candidate.is_empty() && reference.is_empty() { 1.0 } else { 0.0 };
    }
    let mut previous = vec![0usize; reference.len() + 1];
    for token in &candidate {
        let mut current = vec![0usize; reference.len() + 1];
        for (j, other) in reference.iter().enumerate() {
            current[j + 1] = if token == other { previous[j] + 1 } else { current[j].max(previous[j + 1]) };
        }
        previous = current;
    }
    let lcs = previous[reference.len()] as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / candidate.len() as f64, lcs / reference.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// `exp(loss)`: perplexity of the mean per-token cross-entropy.
pub fn perplexity(loss: f64) -> f64 {
    loss.exp()
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(value: &Value, wanted: &str) -> bool {
    let actual = type_name(value);
    actual == wanted || (wanted == "number" && actual == "integer")
}

/// Where `value` breaks `schema`, for a subset of JSON Schema: `type` (a name or a list), `enum`, `const`,
/// `properties`, `required`, `additionalProperties: false`, `items`, `minItems`/`maxItems`,
/// `minLength`/`maxLength`, `minimum`/`maximum`. Other keywords are ignored. Each problem names its JSON path.
pub fn json_schema_errors(value: &Value, schema: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check_schema(value, schema, "$", &mut errors);
    errors
}

fn check_schema(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else { return };
    match schema.get("type") {
        Some(Value::String(wanted)) if !type_matches(value, wanted) => {
            errors.push(format!("{path}: expected {wanted}, found {}", type_name(value)));
            return;
        }
        Some(Value::Array(options)) if !options.iter().filter_map(Value::as_str).any(|w| type_matches(value, w)) => {
            errors.push(format!("{path}: found {}, not one of the allowed types", type_name(value)));
            return;
        }
        _ => {}
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of the allowed values"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{path}: expected {constant}"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    if let Some(number) = value.as_f64()
        && (bound("minimum").is_some_and(|min| number < min) || bound("maximum").is_some_and(|max| number > max))
    {
        errors.push(format!("{path}: {number} is out of range"));
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as f64;
        if bound("minLength").is_some_and(|min| length < min) || bound("maxLength").is_some_and(|max| length > max) {
            errors.push(format!("{path}: length {length} is out of range"));
        }
    }
    if let Some(items) = value.as_array() {
        let count = items.len() as f64;
        if bound("minItems").is_some_and(|min| count < min) || bound("maxItems").is_some_and(|max| count > max) {
            errors.push(format!("{path}: {count} items is out of range"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                check_schema(item, item_schema, &format!("{path}[{index}]"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                errors.push(format!("{path}: missing required property {name:?}"));
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property_schema) => check_schema(item, property_schema, &format!("{path}.{name}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{path}: property {name:?} is not allowed"));
                }
                None => {}
            }
        }
    }
}

/// What to score generated answers on, beyond exact match.
#[derive(Clone, Debug, Default)]
pub struct TextMetricOptions {
    /// `regex_match`: the share of outputs this pattern matches (anywhere in the trimmed output).
    pub regex: Option<Regex>,
    /// `json_schema_valid`: the share of outputs that are JSON satisfying this schema.
    pub json_schema: Option<Value>,
}

/// Shares over `outputs` (paired with `expected`): `contains`, `rouge_l` (mean), `json_valid`, and
/// `regex_match` / `json_schema_valid` when asked for. Empty when there are no outputs.
pub fn text_metrics(outputs: &[String], expected: &[String], options: &TextMetricOptions) -> BTreeMap<String, f64> {
    let pairs: Vec<(&String, &String)> = outputs.iter().zip(expected).collect();
    let mut metrics = BTreeMap::new();
    if pairs.is_empty() {
        return metrics;
    }
    let share = |hits: usize| hits as f64 / pairs.len() as f64;
    metrics.insert("contains".to_owned(), share(pairs.iter().filter(|(o, e)| contains(o, e)).count()));
    let rouge: f64 = pairs.iter().map(|(o, e)| rouge_l(o, e)).sum();
    metrics.insert("rouge_l".to_owned(), rouge / pairs.len() as f64);
    metrics.insert("json_valid".to_owned(), share(pairs.iter().filter(|(o, _)| json_valid(o)).count()));
    if let Some(regex) = &options.regex {
        metrics.insert("regex_match".to_owned(), share(pairs.iter().filter(|(o, _)| regex.is_match(o.trim())).count()));
    }
    if let Some(schema) = &options.json_schema {
        let valid = pairs
            .iter()
            .filter(|(o, _)| {
                serde_json::from_str::<Value>(o.trim()).is_ok_and(|v| json_schema_errors(&v, schema).is_empty())
            })
            .count();
        metrics.insert("json_schema_valid".to_owned(), share(valid));
    }
    metrics
}

/// Mean over the target tokens of `examples` of KL(adapter ‖ base) between the next-token distributions, in
/// nats: how far the adapter moved the model where it was trained to. NaN when there are no targets.
pub fn kl_to_base(llama: &Llama, lora: &LoraWeights, examples: &[Example], pad_id: u32, batch_size: usize) -> f64 {
    let (mut total, mut count) = (0.0, 0usize);
    tch::no_grad(|| {
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let batch = Batch::new(&refs, pad_id, llama.device());
            if batch.target_count == 0 {
                continue;
            }
            let log_probs = |adapter: Option<&LoraWeights>| {
                let hidden = llama.forward_hidden(&batch.input_ids, 0, None, adapter);
                let width = hidden.size().last().copied().unwrap_or(0);
                let selected = hidden.reshape([-1, width]).index_select(0, &batch.positions);
                llama.lm_head(&selected).to_kind(Kind::Double).log_softmax(-1, Kind::Double)
            };
            let (adapted, base) = (log_probs(Some(lora)), log_probs(None));
            let kl = (adapted.exp() * (&adapted - base)).sum(Kind::Double);
            total += kl.double_value(&[]);
            count += batch.target_count;
        }
    });
    if count == 0 { f64::NAN } else { total / count as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kl_to_base_is_zero_for_a_fresh_adapter_and_positive_after_training() {
        use adapterci_core::training::{AdapterConfig, LoraTarget};
        let tiny = crate::llama::tests::tiny_model(3);
        let config = AdapterConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec![LoraTarget::Q, LoraTarget::Down],
            layers: vec![0, 1],
            dtype: "f32".into(),
        };
        let mut lora = LoraWeights::init_standard(&config, 0.0, tiny.llama.config(), 1, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{e}"));
        let example = Example {
            line: 1,
            input_ids: vec![5, 9, 40, 7, 300, 12],
            loss_mask: vec![false, false, false, true, true, true],
            prompt_len: 3,
            prompt: String::new(),
            expected: String::new(),
            truncated_tokens: 0,
        };
        let examples = vec![example.clone(), example];
        assert_eq!(kl_to_base(&tiny.llama, &lora, &examples, 2, 4), 0.0);
        crate::lora::randomize_b_for_tests(&mut lora, 2);
        let kl = kl_to_base(&tiny.llama, &lora, &examples, 2, 4);
        assert!(kl > 1e-4 && kl.is_finite(), "{kl}");
        assert!(kl_to_base(&tiny.llama, &lora, &[], 2, 4).is_nan());
    }

    #[test]
    fn rouge_l_is_the_lcs_f1() {
        assert_eq!(rouge_l("the cat sat", "the cat sat"), 1.0);
        assert_eq!(rouge_l("a b c", "x y z"), 0.0);
        // LCS "the sat" = 2 of 3 and 2 of 4: P 2/3, R 1/2, F1 4/7.
        assert!((rouge_l("the cat sat", "the dog has sat") - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(rouge_l("", ""), 1.0);
        assert_eq!(rouge_l("Paris!", "paris"), 1.0, "case and punctuation do not count");
        assert_eq!(rouge_l("word", ""), 0.0);
    }

    #[test]
    fn contains_and_json_validity() {
        assert!(contains("The answer is Paris.", " Paris "));
        assert!(!contains("anything", "  "));
        assert!(json_valid(" {\"a\": [1, 2]} "));
        assert!(!json_valid("{\"a\": }"));
    }

    #[test]
    fn the_schema_subset_names_each_problem_with_its_path() {
        let schema = json!({
            "type": "object",
            "required": ["name", "tags"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 2},
                "age": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}
            }
        });
        assert!(json_schema_errors(&json!({"name": "Al", "tags": ["a"]}), &schema).is_empty());
        let errors = json_schema_errors(&json!({"name": "A", "age": -1.5, "tags": ["a", "c", "b"], "x": 1}), &schema);
        assert_eq!(
            errors,
            vec![
                "$.age: expected integer, found number",
                "$.name: length 1 is out of range",
                "$.tags: 3 items is out of range",
                "$.tags[1]: \"c\" is not one of the allowed values",
                "$: property \"x\" is not allowed",
            ]
        );
        assert_eq!(json_schema_errors(&json!([1]), &schema), vec!["$: expected object, found array"]);
        assert_eq!(json_schema_errors(&json!({}), &schema).len(), 2, "both required properties are missing");
    }

    #[test]
    fn text_metrics_are_shares_over_the_outputs() {
        let outputs = vec!["{\"city\": \"Paris\"}".to_owned(), "Paris, I think".to_owned()];
        let expected = vec!["Paris".to_owned(), "Paris".to_owned()];
        let options = TextMetricOptions {
            regex: Some(Regex::new("^\\{").unwrap_or_else(|_| unreachable!())),
            json_schema: Some(json!({"type": "object", "required": ["city"]})),
        };
        let metrics = text_metrics(&outputs, &expected, &options);
        assert_eq!(metrics["contains"], 1.0);
        assert_eq!(metrics["json_valid"], 0.5);
        assert_eq!(metrics["regex_match"], 0.5);
        assert_eq!(metrics["json_schema_valid"], 0.5);
        // "city paris" vs "paris": F1 2/3; "paris i think" vs "paris": F1 1/2.
        assert!((metrics["rouge_l"] - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert!(text_metrics(&[], &[], &TextMetricOptions::default()).is_empty());
        assert!((perplexity(0.0) - 1.0).abs() < 1e-12);
    }
}
