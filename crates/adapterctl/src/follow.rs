//! Following a run to its end: poll `GET /api/v1/runs/{id}` about once a second and show its progress on
//! stderr, as an indicatif bar on a terminal and as plain lines otherwise (CI logs).

use std::time::Duration;

use adapterci_api::{ApiClient, ApiError, RunInfo, RunProgress, RunState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::{CliError, ExitStatus};
use crate::output::{Output, Paint, Style};
use crate::render::lists::state_paint;
use crate::render::run::progress_text;

pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Consecutive polls that may fail to reach adapterd (a restart, say) before following gives up.
pub const MAX_CONSECUTIVE_POLL_FAILURES: u32 = 30;

/// Plain progress lines per run (or download) at most, besides state changes and messages.
pub const PLAIN_PROGRESS_LINES: u64 = 20;

/// The exit status of a finished run: a rejection by a gate is an outcome of its own, not a failure.
pub fn exit_status_of(state: RunState) -> ExitStatus {
    match state {
        RunState::Succeeded => ExitStatus::Success,
        RunState::Rejected => ExitStatus::GateRejected,
        RunState::Failed | RunState::Cancelled | RunState::Queued | RunState::Running => ExitStatus::Failure,
    }
}

/// Polls the run until it is terminal and returns its last state.
pub async fn follow(client: &ApiClient, output: &Output, first: RunInfo) -> Result<RunInfo, CliError> {
    let mut display = if output.stderr_is_terminal {
        Display::bar(output.stderr)
    } else {
        Display::Plain { last_printed_step: None }
    };
    let mut tracker = Tracker::default();
    let mut run = first;
    display.show(&tracker.observe(&run), output.stderr);
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut failures = 0;
    while !run.state.is_terminal() {
        ticker.tick().await;
        match client.get_run(&run.id).await {
            Ok(next) => {
                failures = 0;
                run = next;
                display.show(&tracker.observe(&run), output.stderr);
            }
            Err(err @ (ApiError::Unreachable { .. } | ApiError::Transport { .. }))
                if failures < MAX_CONSECUTIVE_POLL_FAILURES =>
            {
                failures += 1;
                if failures == 1 {
                    display.line(&format!("{}: {err}; retrying", output.stderr.paint("warning", Paint::Yellow)));
                }
            }
            Err(err) => {
                display.finish();
                return Err(
                    CliError::from(err).with_hint(format!("the run goes on: `adapterctl runs wait {}`", run.id))
                );
            }
        }
    }
    display.finish();
    Ok(run)
}

/// What changed since the previous poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// `running (train)` when the state or stage changed.
    pub phase: Option<String>,
    pub state: Option<RunState>,
    pub new_messages: Vec<String>,
    /// The latest training step, when it moved.
    pub progress: Option<RunProgress>,
    pub run_id: String,
}

/// Remembers what was already shown of a run.
#[derive(Debug, Default)]
pub struct Tracker {
    phase: Option<String>,
    step: Option<u64>,
    messages_seen: usize,
}

impl Tracker {
    pub fn observe(&mut self, run: &RunInfo) -> Changes {
        let phase = match &run.stage {
            Some(stage) if !run.state.is_terminal() => format!("{} ({stage})", run.state),
            _ => run.state.to_string(),
        };
        let mut changes = Changes { run_id: run.id.clone(), ..Changes::default() };
        if self.phase.as_deref() != Some(&phase) {
            self.phase = Some(phase.clone());
            changes.phase = Some(phase);
            changes.state = Some(run.state);
        }
        // A report that cannot be read only costs the progress display; the final describe says more.
        if let Ok(Some(report)) = run.typed_report() {
            self.messages_seen = self.messages_seen.min(report.messages.len());
            changes.new_messages = report.messages[self.messages_seen..].to_vec();
            self.messages_seen = report.messages.len();
            if let Some(progress) = report.progress.filter(|progress| Some(progress.step) != self.step) {
                self.step = Some(progress.step);
                changes.progress = Some(progress);
            }
        }
        changes
    }
}

/// Plain lines for the changes, with training progress thinned to about [`PLAIN_PROGRESS_LINES`] per run.
pub fn plain_lines(changes: &Changes, last_printed_step: &mut Option<u64>, style: Style) -> Vec<String> {
    let mut lines = Vec::new();
    if let (Some(phase), Some(state)) = (&changes.phase, changes.state) {
        lines.push(format!("run {}: {}", changes.run_id, style.paint(phase, state_paint(state))));
    }
    lines.extend(changes.new_messages.iter().map(|message| format!("  {message}")));
    if let Some(progress) = &changes.progress {
        let every = (progress.total_steps / PLAIN_PROGRESS_LINES).max(1);
        let due = match *last_printed_step {
            None => true,
            Some(last) => progress.step >= last + every || progress.step >= progress.total_steps,
        };
        if due && *last_printed_step != Some(progress.step) {
            *last_printed_step = Some(progress.step);
            lines.push(format!("  {}", progress_text(progress)));
        }
    }
    lines
}

enum Display {
    Plain { last_printed_step: Option<u64> },
    Bar { bar: ProgressBar, training: bool },
}

impl Display {
    fn bar(style: Style) -> Display {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(spinner_style(style));
        bar.enable_steady_tick(Duration::from_millis(120));
        Display::Bar { bar, training: false }
    }

    fn show(&mut self, changes: &Changes, style: Style) {
        match self {
            Display::Plain { last_printed_step } => {
                for line in plain_lines(changes, last_printed_step, style) {
                    eprintln!("{line}");
                }
            }
            Display::Bar { bar, training, .. } => {
                if let (Some(phase), Some(state)) = (&changes.phase, changes.state) {
                    bar.println(format!("run {}: {}", changes.run_id, style.paint(phase, state_paint(state))));
                    bar.set_message(phase.clone());
                    if *training && changes.progress.is_none() {
                        *training = false;
                        bar.set_style(spinner_style(style));
                    }
                }
                for message in &changes.new_messages {
                    bar.println(format!("  {message}"));
                }
                if let Some(progress) = &changes.progress {
                    if !*training {
                        *training = true;
                        bar.set_style(training_style(style));
                    }
                    bar.set_length(progress.total_steps);
                    bar.set_position(progress.step);
                    bar.set_message(format!("loss {:.4} · {:.1} tok/s", progress.loss, progress.tokens_per_second));
                }
            }
        }
    }

    fn line(&self, line: &str) {
        match self {
            Display::Plain { .. } => eprintln!("{line}"),
            Display::Bar { bar, .. } => bar.println(line),
        }
    }

    fn finish(&self) {
        if let Display::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style(style: Style) -> ProgressStyle {
    let template = if style.color { "{spinner:.cyan} {msg}" } else { "{spinner} {msg}" };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn training_style(style: Style) -> ProgressStyle {
    let template = if style.color {
        "{spinner:.cyan} train [{bar:30.cyan/blue}] {pos}/{len} · {msg} · {elapsed}"
    } else {
        "{spinner} train [{bar:30}] {pos}/{len} · {msg} · {elapsed}"
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}
