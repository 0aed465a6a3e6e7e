//! From pipeline text to a `PipelineSpec`: YAML syntax, the version, serde's structural errors, then
//! `build_and_validate`, every problem placed at a line and column.

use std::path::Path;

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_yaml::Value;

use crate::error::{PipelineError, Problem, Problems, SourcePosition};
use crate::locate::SourceIndex;
use crate::spec::PipelineSpec;
use crate::validate::Checker;
use crate::wire::{PipelineV1, SUPPORTED_VERSIONS, VersionedPipeline};

/// Parses and validates a pipeline. `file` is shown before each problem (`pipelines/x.yaml:12:5: ...`).
pub fn parse_pipeline(source: &str, file: Option<&str>) -> Result<PipelineSpec, PipelineError> {
    let index = SourceIndex::build(source);
    parse_with_index(source, &index).map_err(|mut problems| {
        // Stable: problems at one place keep the order in which the checks found them.
        problems.sort_by_key(|problem| problem.position);
        PipelineError::Invalid(Problems { file: file.map(str::to_string), problems })
    })
}

/// Reads and parses the pipeline file at `path`.
pub fn load_pipeline_file(path: &Path) -> Result<PipelineSpec, PipelineError> {
    let source =
        std::fs::read_to_string(path).map_err(|source| PipelineError::Read { path: path.to_path_buf(), source })?;
    parse_pipeline(&source, Some(&path.display().to_string()))
}

impl VersionedPipeline {
    /// Validates a pipeline built in code rather than parsed from text; problems carry no position.
    pub fn build_and_validate(self) -> Result<PipelineSpec, PipelineError> {
        let VersionedPipeline::V1(pipeline) = self;
        pipeline
            .build_and_validate_with(&SourceIndex::without_source())
            .map_err(|problems| PipelineError::Invalid(Problems { file: None, problems }))
    }
}

fn parse_with_index(source: &str, index: &SourceIndex) -> Result<PipelineSpec, Vec<Problem>> {
    // A first pass catches syntax errors and finds the version; the versioned struct is then deserialized
    // straight from the text, where serde's errors keep their line and column.
    let mut checker = Checker::new(index);
    let version = match serde_yaml::from_str::<Top>(source) {
        Err(error) => return Err(vec![serde_problem(&error, index)]),
        Ok(Top::Empty) => {
            checker.report("", "the file is empty: a pipeline is a mapping that starts with `version: v1`");
            return Err(checker.problems);
        }
        Ok(Top::Mapping { version }) => version,
    };
    let supported = SUPPORTED_VERSIONS.join(", ");
    match version {
        // Go on as the newest version so that the other problems are reported too.
        None => checker
            .report("version", format!("missing: the format version, like `version: v1` (supported: {supported})")),
        Some(Value::String(version)) if version == "v1" => {}
        Some(other) => {
            let message = match &other {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                    format!("unknown version {}, supported versions: {supported}", describe(&other))
                }
                _ => format!("expected a version such as `v1` (supported: {supported}), found {}", describe(&other)),
            };
            checker.report("version", message);
            return Err(checker.problems);
        }
    }
    let mut problems = checker.problems;
    let pipeline: PipelineV1 = match serde_yaml::from_str(source) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            problems.push(serde_problem(&error, index));
            return Err(problems);
        }
    };
    match pipeline.build_and_validate_with(index) {
        Ok(spec) if problems.is_empty() => Ok(spec),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// A serde or YAML syntax error as a problem: `yaml_serde` writes `path: message at line L column C`.
fn serde_problem(error: &serde_yaml::Error, index: &SourceIndex) -> Problem {
    let mut position =
        error.location().map(|location| SourcePosition { line: location.line(), column: location.column() });
    let mut text = error.to_string();
    if let Some(position) = position {
        let suffix = format!(" at line {} column {}", position.line, position.column);
        if let Some(start) = text.find(&suffix) {
            text.replace_range(start..start + suffix.len(), "");
        }
    }
    // The path prefix has no spaces, a message always does; a message alone is kept whole.
    let (path, message) = match text.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            (path.to_string(), message.to_string())
        }
        _ => (String::new(), text),
    };
    // serde notices a repeated key only after reading it, and places the error at the mapping: point at the key.
    if let Some(field) = message.strip_prefix("duplicate field `").and_then(|rest| rest.split('`').next()) {
        let value_path = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
        position = index.repeated_key(&value_path).or(position);
    }
    Problem { position, path, message }
}

/// The top of a document, read without building it: its shape and the value of its `version` key.
enum Top {
    Empty,
    Mapping { version: Option<Value> },
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a pipeline (a mapping that starts with `version: v1`)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Empty)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        // Values other than the version are skipped, not built: a duplicate key in them is reported by the
        // second pass, at its own line, rather than here at the document's.
        let mut version = None;
        while let Some(key) = map.next_key::<Value>()? {
            if key.as_str() == Some("version") {
                version = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Top::Mapping { version })
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(value) => value.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => format!("{text:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}
