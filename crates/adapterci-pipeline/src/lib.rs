//! Versioned pipeline YAML parsed into a validated PipelineSpec, with line and column in every error
