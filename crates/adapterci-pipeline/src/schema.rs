//! The JSON schema of pipeline files, generated from the wire structs and committed for editors and CI.

use schemars::Schema;

use crate::wire::VersionedPipeline;

/// Where the committed schema lives, relative to the workspace root.
pub const SCHEMA_PATH_IN_WORKSPACE: &str = "pipelines/pipeline.schema.json";

/// The JSON schema of every supported pipeline version.
pub fn pipeline_schema() -> Schema {
    schemars::schema_for!(VersionedPipeline)
}

/// The schema as committed: pretty JSON with a final newline.
pub fn pipeline_schema_json() -> String {
    // Serializing a `serde_json::Value` tree cannot fail; an empty string would only make the check fail loudly.
    let mut text = serde_json::to_string_pretty(&pipeline_schema()).unwrap_or_default();
    text.push('\n');
    text
}
