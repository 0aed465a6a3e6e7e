//! The error type of the pipeline crate: every problem found in a pipeline file, each with its place.

use std::fmt;
use std::path::PathBuf;

/// A place in a pipeline file: 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePosition {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong with a pipeline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value (or the mapping missing a key) starts; `None` only for problems of the file as
    /// a whole that the YAML parser could not place.
    pub position: Option<SourcePosition>,
    /// The field, such as `training.lora.rank` or `triggers[0].interval`; empty for the document itself.
    pub path: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(position) = self.position {
            write!(f, "{position}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem of one pipeline file, sorted by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems {
    /// The file name shown before each problem, when the source came from a file.
    pub file: Option<String>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    /// One problem a line, like `pipelines/x.yaml:12:5: training.lora.rank: must be between 1 and 256, got 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            match (&self.file, problem.position) {
                (Some(file), Some(_)) => write!(f, "{file}:{problem}")?,
                (Some(file), None) => write!(f, "{file}: {problem}")?,
                (None, _) => write!(f, "{problem}")?,
            }
        }
        Ok(())
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline file is not valid; holds every problem found, not only the first.
    #[error("{0}")]
    Invalid(Problems),
    /// The pipeline file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

impl PipelineError {
    /// The problems of an invalid pipeline; empty for a read error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PipelineError::Invalid(problems) => &problems.problems,
            PipelineError::Read { .. } => &[],
        }
    }
}
