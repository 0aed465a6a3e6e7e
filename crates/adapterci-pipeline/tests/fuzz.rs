//! Bounded fuzzing of the pipeline parser with proptest: arbitrary text, YAML-shaped mutations of the example
//! pipelines, and random cron schedules never panic, and every error is placed inside the file. The case
//! counts are fixed, so the run is bounded and deterministic per seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_pipeline::{CronSchedule, parse_pipeline};
use proptest::prelude::*;

fn check_no_panic(source: &str) {
    if let Err(error) = parse_pipeline(source, Some("fuzz.yaml")) {
        assert!(!error.problems().is_empty(), "an error without problems for {source:?}");
        let lines = source.lines().count() + 1;
        for problem in error.problems() {
            if let Some(position) = problem.position {
                assert!(position.line >= 1 && position.line <= lines, "{problem} outside {source:?}");
            }
        }
    }
}

fn examples() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines");
    let mut sources: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    sources.sort();
    sources
}

/// Pieces that make YAML mean something different: indentation, flow collections, anchors, tags, odd scalars.
const FRAGMENTS: &[&str] = &[
    "\n",
    "  ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "~",
    "null",
    "1e309",
    "-0",
    "0x1f",
    "\"",
    "'",
    "#",
    "---\n",
    "...\n",
    "? ",
    "|\n",
    ">\n",
    "kind: webhook\n",
    "secret: ",
    "schedule: ",
    "* * * * *",
    "*/0",
    "\u{feff}",
    "\t",
    "\u{0}",
    "é",
    "<<: *a\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(source in any::<String>()) {
        check_no_panic(&source);
    }

    #[test]
    fn mutated_examples_never_panic(
        example in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..FRAGMENTS.len(), any::<bool>()), 1..6),
    ) {
        let examples = examples();
        let mut source = examples[example % examples.len()].clone();
        for (at, fragment, delete) in edits {
            let boundaries: Vec<usize> = source.char_indices().map(|(i, _)| i).chain([source.len()]).collect();
            let at = boundaries[at.index(boundaries.len())];
            if delete {
                let end = boundaries.iter().copied().find(|b| *b > at).unwrap_or(source.len());
                source.replace_range(at..end, "");
            } else {
                source.insert_str(at, FRAGMENTS[fragment]);
            }
        }
        check_no_panic(&source);
    }

    #[test]
    fn cron_schedules_never_panic(fields in proptest::collection::vec("[0-9*/,-]{0,6}", 0..7)) {
        let text = fields.join(" ");
        if let Ok(schedule) = CronSchedule::parse(&text) {
            let start = chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap();
            if let Some(next) = schedule.next_after(start) {
                prop_assert!(next > start);
            }
        }
    }
}
