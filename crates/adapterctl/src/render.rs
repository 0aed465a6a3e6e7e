//! The people's views (`-o table`): pure functions from API data to text, so they can be snapshot-tested.

pub mod adapter;
pub mod lists;
pub mod loss_curve;
pub mod run;

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table};

use crate::output::{Paint, Style};

/// One table cell, optionally colored.
#[derive(Clone, Debug)]
pub struct Cell {
    pub text: String,
    pub paint: Option<Paint>,
}

impl Cell {
    pub fn painted(text: impl Into<String>, paint: Paint) -> Self {
        Cell { text: text.into(), paint: Some(paint) }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, paint: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell::from(text.to_string())
    }
}

/// Columns separated by three spaces under upper-case headers, like kubectl; no borders, no wrapping.
pub fn table(headers: &[&str], rows: Vec<Vec<Cell>>, style: Style) -> String {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    if style.color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(headers.iter().map(|header| comfy_table::Cell::new(header.to_uppercase())));
    for row in rows {
        table.add_row(row.into_iter().map(|cell| {
            let mut table_cell = comfy_table::Cell::new(cell.text);
            if let Some(color) = cell.paint.and_then(|paint| paint.table_color()).filter(|_| style.color) {
                table_cell = table_cell.fg(color);
            }
            table_cell
        }));
    }
    let last = headers.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 3 }));
    }
    table.lines().map(|line| line.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// `label:  value` lines with the values aligned; a `None` value leaves its line out.
pub fn fields(pairs: &[(&str, Option<String>)]) -> String {
    let width = pairs.iter().filter(|(_, value)| value.is_some()).map(|(label, _)| label.len() + 1).max().unwrap_or(0);
    pairs
        .iter()
        .filter_map(|(label, value)| value.as_ref().map(|value| format!("{:<width$}  {value}", format!("{label}:"))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Indents every line of `text` by `by` spaces.
pub fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| if line.is_empty() { String::new() } else { format!("{pad}{line}") })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-11-26 10:00:00 UTC`.
pub fn timestamp(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart at a glance.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.get(..19).unwrap_or(digest).to_string(),
    }
}

/// `42s`, `5m 3s`, `2h 10m`.
pub fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {}s", seconds / 60, seconds % 60),
        _ => format!("{}h {}m", seconds / 3600, (seconds % 3600) / 60),
    }
}

/// A metric or gate value: four decimals; `-` when absent or not a finite number (JSON null).
pub fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| format!("{value:.4}"))
}

/// A gate bound: as written in the pipeline, `-` when absent.
pub fn bound(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}
