//! `describe run`: a run's state, trigger and timings, then its report: progress, metrics, the gate decision
//! with pass/FAIL per gate, and samples answered by the base model and the adapter side by side.

use adapterci_api::{EvalSample, GateReport, RunInfo, RunProgress, RunReport};

use crate::output::{Paint, Style};
use crate::render::lists::state_paint;
use crate::render::{Cell, bound, duration, fields, indent, number, short_digest, table, timestamp};

/// How many samples the table view shows; `-o json` has them all.
pub const SHOWN_SAMPLES: usize = 5;
/// How many of the latest job messages the table view shows.
pub const SHOWN_MESSAGES: usize = 10;

pub fn run_detail(run: &RunInfo, style: Style) -> String {
    let mut sections = vec![summary(run, style)];
    match run.typed_report() {
        Ok(Some(report)) => sections.extend(report_sections(&report, style)),
        Ok(None) => {}
        Err(err) => sections.push(format!("Report: cannot read it ({err}); -o json shows it as it is")),
    }
    sections.join("\n\n")
}

fn summary(run: &RunInfo, style: Style) -> String {
    let finished = run.state.is_terminal();
    let published = run.published.as_ref().map(|published| {
        format!("{} version {} ({})", published.adapter, published.version, short_digest(&published.manifest_digest))
    });
    fields(&[
        ("Run", Some(run.id.clone())),
        ("Pipeline", Some(format!("{} (revision {})", run.pipeline, run.pipeline_revision))),
        ("State", Some(style.paint(run.state.as_str(), state_paint(run.state)))),
        ("Stage", run.stage.clone()),
        ("Trigger", Some(trigger_text(&run.trigger))),
        ("Dataset", run.dataset_digest.as_deref().map(short_digest)),
        ("Created", Some(timestamp(&run.created_at))),
        ("Updated", Some(timestamp(&run.updated_at))),
        ("Duration", finished.then(|| duration((run.updated_at - run.created_at).num_seconds()))),
        ("Published", published),
        ("Error", run.error.as_deref().map(|error| style.paint(error, Paint::Red))),
    ])
}

/// `manual`, or the kind with its other fields: `webhook (delivery_id d-1, source github)`.
pub fn trigger_text(trigger: &serde_json::Value) -> String {
    let Some(object) = trigger.as_object() else { return trigger.to_string() };
    let kind = object.get("kind").and_then(|kind| kind.as_str()).unwrap_or("unknown");
    let details: Vec<String> = object
        .iter()
        .filter(|(key, _)| key.as_str() != "kind")
        .map(|(key, value)| match value.as_str() {
            Some(text) if text.starts_with("sha256:") => format!("{key} {}", short_digest(text)),
            Some(text) => format!("{key} {text}"),
            None => format!("{key} {value}"),
        })
        .collect();
    if details.is_empty() { kind.to_string() } else { format!("{kind} ({})", details.join(", ")) }
}

pub(crate) fn report_sections(report: &RunReport, style: Style) -> Vec<String> {
    let mut sections = Vec::new();
    let mut training = Vec::new();
    if let Some(progress) = &report.progress {
        training.push(("Progress", Some(progress_text(progress))));
    }
    if let (Some(first), Some(last)) = (report.loss_curve.first(), report.loss_curve.last()) {
        let text = format!("{:.4} at step {} -> {:.4} at step {}", first.1, first.0, last.1, last.0);
        training.push(("Loss", Some(text)));
    }
    if !training.is_empty() {
        sections.push(fields(&training));
    }
    if !report.metrics.is_empty() {
        let rows = report.metrics.iter().map(|(name, value)| vec![Cell::from(name.as_str()), number(*value).into()]);
        sections.push(format!("Metrics:\n{}", indent(&table(&["metric", "value"], rows.collect(), style), 2)));
    }
    if let Some(gates) = &report.gates {
        sections.push(gates_text(gates, style));
    }
    if !report.samples.is_empty() {
        sections.push(samples_text(&report.samples, style));
    }
    if !report.messages.is_empty() {
        let skip = report.messages.len().saturating_sub(SHOWN_MESSAGES);
        let lines: Vec<String> = report.messages[skip..].iter().map(|message| format!("  {message}")).collect();
        sections.push(format!("Messages:\n{}", lines.join("\n")));
    }
    sections
}

/// `step 20/40 (50%), loss 1.2345, lr 2.00e-4, 210.5 tok/s`.
pub fn progress_text(progress: &RunProgress) -> String {
    let percent = (progress.step * 100).checked_div(progress.total_steps).unwrap_or(0);
    format!(
        "step {}/{} ({percent}%), loss {:.4}, lr {:.2e}, {:.1} tok/s",
        progress.step, progress.total_steps, progress.loss, progress.learning_rate, progress.tokens_per_second
    )
}

fn gates_text(gates: &GateReport, style: Style) -> String {
    let verdict = if gates.passed { style.paint("PASSED", Paint::Green) } else { style.paint("FAILED", Paint::Red) };
    if gates.results.is_empty() {
        return format!("Gates: {verdict} (no gates)");
    }
    let rows = gates
        .results
        .iter()
        .map(|result| {
            let decision =
                if result.passed { Cell::painted("pass", Paint::Green) } else { Cell::painted("FAIL", Paint::Red) };
            vec![
                Cell::from(result.metric.as_str()),
                number(result.value).into(),
                bound(result.min).into(),
                bound(result.max).into(),
                decision,
                Cell::from(result.reason.as_str()),
            ]
        })
        .collect();
    let gate_table = table(&["metric", "value", "min", "max", "result", "reason"], rows, style);
    format!("Gates: {verdict}\n{}", indent(&gate_table, 2))
}

fn samples_text(samples: &[EvalSample], style: Style) -> String {
    let matched = samples.iter().filter(|sample| sample.exact_match).count();
    let shown = samples.len().min(SHOWN_SAMPLES);
    let mut text = format!("Samples ({shown} of {}, exact match {matched}/{}):", samples.len(), samples.len());
    for (index, sample) in samples.iter().take(SHOWN_SAMPLES).enumerate() {
        let verdict = if sample.exact_match {
            style.paint("exact match", Paint::Green)
        } else {
            style.paint("different", Paint::Yellow)
        };
        let body = fields(&[
            ("prompt", Some(multiline(&sample.prompt))),
            ("expected", Some(multiline(&sample.expected))),
            ("base", sample.base_output.as_deref().map(multiline)),
            ("adapter", Some(multiline(&sample.adapter_output))),
        ]);
        text.push_str(&format!("\n  #{}  {verdict}\n{}", index + 1, indent(&body, 4)));
    }
    text
}

/// Keeps a sample on one line: newlines shown as `⏎`, so the labels stay aligned.
fn multiline(text: &str) -> String {
    text.trim_end_matches('\n').replace('\n', " ⏎ ")
}
