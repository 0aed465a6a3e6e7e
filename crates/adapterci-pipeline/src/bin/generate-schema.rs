//! Writes `pipelines/pipeline.schema.json` from the wire structs, or with `--check` fails if it is stale.

use std::path::PathBuf;
use std::process::ExitCode;

use adapterci_pipeline::{SCHEMA_PATH_IN_WORKSPACE, pipeline_schema_json};

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("error: unexpected argument {other:?}\nusage: generate-schema [--check]");
            return ExitCode::from(2);
        }
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(SCHEMA_PATH_IN_WORKSPACE);
    let generated = pipeline_schema_json();
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == generated {
            eprintln!("{SCHEMA_PATH_IN_WORKSPACE} is up to date");
            return ExitCode::SUCCESS;
        }
        eprintln!("error: {SCHEMA_PATH_IN_WORKSPACE} is stale");
        eprintln!("hint: run `cargo run -p adapterci-pipeline --bin generate-schema` and commit the result");
        return ExitCode::FAILURE;
    }
    match std::fs::write(&path, generated) {
        Ok(()) => {
            eprintln!("wrote {SCHEMA_PATH_IN_WORKSPACE}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: cannot write {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}
