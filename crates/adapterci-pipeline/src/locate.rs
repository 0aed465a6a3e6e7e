//! Where each value of a YAML document starts, by field path (`training.lora.rank`, `triggers[0].interval`), so
//! that checks run on deserialized values can still point at a line and column.
//!
//! serde drops positions once a value is deserialized, and `yaml_serde` does not expose its parser's events, so
//! the document is walked a second time with `saphyr-parser`, which reports a span for every event. The index is
//! only ever a lookup aid: if it cannot parse what `yaml_serde` accepted, lookups fall back to the nearest
//! ancestor that it did see, and finally to the start of the document.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

use crate::error::SourcePosition;

/// Field path -> where its value starts.
#[derive(Debug, Default)]
pub(crate) struct SourceIndex {
    positions: HashMap<String, SourcePosition>,
    /// Value path -> where its key occurs a second time in the same mapping.
    repeated_keys: HashMap<String, SourcePosition>,
    /// `false` for the index of a pipeline that did not come from a file: every lookup answers `None`.
    from_source: bool,
}

/// A mapping or sequence being walked; `path` is `None` inside a subtree that has no field path (a mapping used
/// as a key).
enum Frame {
    Mapping { path: Option<String>, pending_key: Option<Option<String>> },
    Sequence { path: Option<String>, next_index: usize },
}

impl SourceIndex {
    /// An index with no positions, for specs that were not parsed from text.
    pub(crate) fn without_source() -> Self {
        SourceIndex::default()
    }

    /// Indexes the first document of `source`. Never fails: whatever could not be parsed is simply absent.
    pub(crate) fn build(source: &str) -> Self {
        let mut index = SourceIndex { from_source: true, ..SourceIndex::default() };
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(source);
        // Every event but the empty scalar consumes input; the cap keeps a parser bug from looping forever.
        let max_events = source.len().saturating_mul(4).saturating_add(64);
        for _ in 0..max_events {
            let Some(Ok((event, span))) = parser.next_event() else { break };
            let (node, opens) = match &event {
                Event::StreamEnd | Event::DocumentEnd => break,
                Event::Scalar(value, ..) => (enter_node(&mut stack, Some(value.as_ref())), None),
                Event::Alias(_) => (enter_node(&mut stack, None), None),
                Event::MappingStart(..) => (enter_node(&mut stack, None), Some(true)),
                Event::SequenceStart(..) => (enter_node(&mut stack, None), Some(false)),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    continue;
                }
                Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => continue,
            };
            let path = match node {
                Node::Value(path) => {
                    if let Some(path) = &path {
                        index.record(path.clone(), span);
                    }
                    path
                }
                Node::Key(value_path) => {
                    if let Some(value_path) = value_path {
                        index.note_key(value_path, span);
                    }
                    None
                }
            };
            match opens {
                Some(true) => stack.push(Frame::Mapping { path, pending_key: None }),
                Some(false) => stack.push(Frame::Sequence { path, next_index: 0 }),
                None => {}
            }
        }
        index
    }

    /// Remembers where a key repeats a key already seen in its mapping (serde places that error at the mapping).
    fn note_key(&mut self, value_path: String, span: Span) {
        if self.positions.contains_key(&value_path) {
            let position = position_of(span);
            self.repeated_keys.entry(value_path).or_insert(position);
        }
    }

    /// Where the second occurrence of the key naming `value_path` is, if the key repeats.
    pub(crate) fn repeated_key(&self, value_path: &str) -> Option<SourcePosition> {
        self.repeated_keys.get(value_path).copied()
    }

    fn record(&mut self, path: String, span: Span) {
        let position = position_of(span);
        // A repeated key is an error reported by serde; keep the first so both point at the same place.
        self.positions.entry(path).or_insert(position);
    }

    /// Where the value at `path` starts; for a path not in the document (a missing key), where its nearest
    /// present ancestor starts. `None` only for an index built without source.
    pub(crate) fn position(&self, path: &str) -> Option<SourcePosition> {
        if !self.from_source {
            return None;
        }
        let mut current = path;
        loop {
            if let Some(position) = self.positions.get(current) {
                return Some(*position);
            }
            if current.is_empty() {
                return Some(SourcePosition { line: 1, column: 1 });
            }
            current = parent_path(current);
        }
    }
}

/// What a node is to its parent, with the field path it names (`None` under a non-scalar key).
enum Node {
    /// A value, with its own path.
    Value(Option<String>),
    /// A mapping key, with the path of the value it names.
    Key(Option<String>),
}

fn position_of(span: Span) -> SourcePosition {
    SourcePosition { line: span.start.line().max(1), column: span.start.col() + 1 }
}

/// Advances the parent frame past a node and says what the node is.
fn enter_node(stack: &mut [Frame], scalar: Option<&str>) -> Node {
    let path = match stack.last_mut() {
        None => Some(String::new()),
        Some(Frame::Sequence { path, next_index }) => {
            let index = *next_index;
            *next_index += 1;
            path.as_ref().map(|path| format!("{path}[{index}]"))
        }
        Some(Frame::Mapping { path, pending_key }) => match pending_key.take() {
            None => {
                // This node is a key: a scalar names its value, anything else leaves the value unnamed.
                let key = scalar.map(str::to_string);
                let value_path = child_path(path.as_deref(), key.as_deref());
                *pending_key = Some(key);
                return Node::Key(value_path);
            }
            Some(key) => child_path(path.as_deref(), key.as_deref()),
        },
    };
    Node::Value(path)
}

fn child_path(parent: Option<&str>, key: Option<&str>) -> Option<String> {
    match (parent, key) {
        (Some(""), Some(key)) => Some(key.to_string()),
        (Some(parent), Some(key)) => Some(format!("{parent}.{key}")),
        _ => None,
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> ``.
fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(cut) => &path[..cut],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str, path: &str, expect: Option<(usize, usize)>) {
        let index = SourceIndex::build(source);
        let position = index.position(path).map(|position| (position.line, position.column));
        assert_eq!(position, expect, "{path} in\n{source}");
    }

    const DOC: &str = "\
version: v1
training:
  lora:
    rank: 0
    targets: [q, k]
triggers:
  - kind: manual
  - {kind: dataset_watch, interval: 5x}
? [complex, key]
: {ignored: 1}
";

    #[test]
    fn values_are_found_by_path() {
        check(DOC, "version", Some((1, 10)));
        check(DOC, "training.lora.rank", Some((4, 11)));
        check(DOC, "training.lora.targets[1]", Some((5, 18)));
        check(DOC, "triggers[0].kind", Some((7, 11)));
        check(DOC, "triggers[1].interval", Some((8, 37)));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        check(DOC, "training.lora.alpha", Some((4, 5)));
        check(DOC, "training.steps", Some((3, 3)));
        check(DOC, "triggers[5].kind", Some((7, 3)));
        check(DOC, "ignored", Some((1, 1)));
        check("", "name", Some((1, 1)));
        check(": : [", "a.b", Some((1, 1)));
    }

    #[test]
    fn an_index_without_source_has_no_positions() {
        assert_eq!(SourceIndex::without_source().position("name"), None);
    }
}
