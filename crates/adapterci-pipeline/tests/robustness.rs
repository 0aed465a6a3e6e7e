//! Bad input never panics: every prefix of a valid pipeline and assorted garbage give `Ok` or a placed `Err`.

use adapterci_pipeline::parse_pipeline;

fn check_no_panic(source: &str) {
    match parse_pipeline(source, Some("fuzz.yaml")) {
        Ok(_) => {}
        Err(error) => {
            assert!(!error.problems().is_empty(), "an error without problems for {source:?}");
            let lines = source.lines().count() + 1;
            for problem in error.problems() {
                if let Some(position) = problem.position {
                    assert!(position.line >= 1 && position.line <= lines, "{problem} outside {source:?}");
                    assert!(position.column >= 1, "{problem}");
                }
            }
        }
    }
}

#[test]
fn every_prefix_of_the_demo_pipeline_is_handled() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/ticket-format.yaml")).unwrap();
    let mut valid_prefixes = 0;
    for (cut, _) in source.char_indices().chain([(source.len(), ' ')]) {
        check_no_panic(&source[..cut]);
        valid_prefixes += usize::from(parse_pipeline(&source[..cut], None).is_ok());
    }
    // The file ends with optional sections, so some prefixes are complete pipelines, but far from all.
    assert!(valid_prefixes > 0 && valid_prefixes < source.len() / 2, "{valid_prefixes} valid prefixes");
}

#[test]
fn garbage_is_refused_without_panicking() {
    let garbage = [
        "",
        "\n\n# only a comment\n",
        "~",
        "42",
        "\"a string\"",
        "[1, 2",
        "{",
        "}",
        "---\nversion: v1\n---\nversion: v1\n",
        ": : :",
        "version: [v1]",
        "version: v1\nname: &a demo\nbase: *a\n",
        "version: v1\nname: *unknown\n",
        "version: v1\n? [complex, key]\n: value\n",
        "version: v1\ntraining: {lora: {layers: [[0]]}}\n",
        "version: v1\ntraining: {lora: {layers: {last: 1, last: 2}}}\n",
        "version: v1\ntriggers: {kind: manual}\n",
        "version: v1\ntriggers: [{interval: 10s}]\n",
        "version: v1\nname: \"\\u0000\"\n",
        "version: v1\ndataset: {location: \"a//b\"}\n",
        "\u{feff}version: v1\n",
        "\t- tab",
        "version: !!binary aGVsbG8=\n",
        "version: v1\n<<: {name: demo}\n",
        "name: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        "\u{0}\u{1}\u{2}",
        "version: v1\ntraining:\n  steps: 99999999999999999999999\n",
    ];
    for source in garbage {
        check_no_panic(source);
    }
    let deep = format!("version: v1\nname: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    check_no_panic(&deep);
}
