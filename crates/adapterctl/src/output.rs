//! Where output goes and how it looks: data on stdout as a table, JSON or YAML; notes, progress and errors on
//! stderr; color only on a terminal, never with `--no-color` or `NO_COLOR`.

use std::io::{self, IsTerminal, Write};

use serde::Serialize;

use crate::env_vars;
use crate::exit::CliError;

/// The format of data on stdout (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns and readable sections for people.
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
    /// The API's data as YAML.
    Yaml,
}

/// A color of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Green,
    Red,
    Yellow,
    Cyan,
    Bold,
    Dim,
}

impl Paint {
    fn ansi(self) -> &'static str {
        match self {
            Paint::Green => "32",
            Paint::Red => "1;31",
            Paint::Yellow => "33",
            Paint::Cyan => "36",
            Paint::Bold => "1",
            Paint::Dim => "2",
        }
    }

    /// comfy-table's name for the same color, for table cells.
    pub fn table_color(self) -> Option<comfy_table::Color> {
        match self {
            Paint::Green => Some(comfy_table::Color::Green),
            Paint::Red => Some(comfy_table::Color::Red),
            Paint::Yellow => Some(comfy_table::Color::Yellow),
            Paint::Cyan => Some(comfy_table::Color::Cyan),
            Paint::Bold | Paint::Dim => None,
        }
    }
}

/// Whether one stream gets color.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// No color: for pipes, files and tests.
    pub const PLAIN: Style = Style { color: false };

    /// Color when `stream_is_terminal`, unless `--no-color` was given or `NO_COLOR` is set to anything.
    pub fn detect(no_color_flag: bool, stream_is_terminal: bool) -> Style {
        let no_color_env = std::env::var_os(env_vars::NO_COLOR).is_some_and(|value| !value.is_empty());
        Style { color: stream_is_terminal && !no_color_flag && !no_color_env }
    }

    pub fn paint(self, text: &str, paint: Paint) -> String {
        if self.color { format!("\x1b[{}m{text}\x1b[0m", paint.ansi()) } else { text.to_string() }
    }
}

/// The streams of one invocation.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub format: OutputFormat,
    pub stdout: Style,
    pub stderr: Style,
    /// Whether stderr is a terminal: progress bars there, plain lines otherwise.
    pub stderr_is_terminal: bool,
}

impl Output {
    pub fn new(format: OutputFormat, no_color: bool) -> Self {
        let stderr_is_terminal = io::stderr().is_terminal();
        Output {
            format,
            stdout: Style::detect(no_color, io::stdout().is_terminal()),
            stderr: Style::detect(no_color, stderr_is_terminal),
            stderr_is_terminal,
        }
    }

    /// Prints `value` in the chosen format; `table` renders the people's view.
    pub fn data<T: Serialize + ?Sized>(&self, value: &T, table: impl FnOnce(Style) -> String) -> Result<(), CliError> {
        let text = match self.format {
            OutputFormat::Table => table(self.stdout),
            OutputFormat::Json => serde_json::to_string_pretty(value)
                .map_err(|err| CliError::new(format!("cannot encode the answer as json: {err}")))?,
            OutputFormat::Yaml => serde_yaml::to_string(value)
                .map_err(|err| CliError::new(format!("cannot encode the answer as yaml: {err}")))?,
        };
        stdout_text(&text)
    }

    /// A note for people on stderr (never data).
    pub fn note(&self, text: &str) {
        // Nothing sensible is left to do when stderr itself is gone.
        let _ = writeln!(io::stderr().lock(), "{text}");
    }

    /// Prints `error: ...`, its details and `hint: ...` lines on stderr.
    pub fn error(&self, err: &CliError) {
        self.note(&render_error(err, self.stderr));
    }
}

/// `error: message`, the details indented below it, then `hint: ...` lines.
pub fn render_error(err: &CliError, style: Style) -> String {
    let mut lines = vec![format!("{}: {}", style.paint("error", Paint::Red), err.message)];
    lines.extend(err.details.iter().map(|detail| format!("  {detail}")));
    lines.extend(err.hints.iter().map(|hint| format!("{}: {hint}", style.paint("hint", Paint::Cyan))));
    lines.join("\n")
}

/// Writes `text` to stdout with exactly one final newline. A closed pipe (`| head`) is not an error.
pub fn stdout_text(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    let result = stdout.write_all(text.trim_end_matches('\n').as_bytes()).and_then(|()| stdout.write_all(b"\n"));
    match result.and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("cannot write to stdout: {err}")))
        }
        _ => Ok(()),
    }
}
