//! Saving a large response body (the merged export) to a file: written to `FILE.partial` piece by piece and
//! renamed to `FILE` only once every byte the server announced arrived, so a download that fails leaves no `FILE`
//! behind. Progress goes to stderr as an indicatif bar on a terminal and as a few plain lines otherwise (CI logs),
//! as [`crate::follow`] shows a run's.
//!
//! The partial file is a [`Partial`]: locked from its creation until it is renamed or removed, so a second
//! adapterctl downloading to the same `FILE` meanwhile stops without touching it, and a partial file that no
//! process holds (a killed download's) is replaced, saying so. Ctrl-C (or SIGTERM) during the download removes
//! the partial file before adapterctl exits with 130 (or 143).

use std::path::Path;
use std::time::Duration;

use adapterci_api::Download;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::exit::CliError;
use crate::follow::PLAIN_PROGRESS_LINES;
use crate::interrupt;
use crate::output::{Output, Style};
use crate::partial::{Kind, Partial, Work};

/// The write buffer: pieces from the network are small, disk writes need not be.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Without an announced length, a plain progress line every this many bytes.
const PLAIN_LINE_EVERY_BYTES: u64 = 64 << 20;

/// Writes the body of `download` to `path` and returns its length. On any failure (the connection breaks, fewer
/// bytes than announced, a full disk, ctrl-c) the partial file is removed and `path` is left as it was. When
/// another adapterctl is downloading to `path` now, nothing is written and its partial file is left to it.
pub async fn save(mut download: Download, path: &Path, output: &Output) -> Result<u64, CliError> {
    let not_written = format!("{} was not written; run the export again", path.display());
    // listening from before the partial file exists: no signal between the two leaves it behind
    let interrupted = interrupt::listen();
    let partial =
        Partial::hold(path, Kind::File, Work::Download, output).map_err(|err| err.with_hint(not_written.clone()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut progress = Progress::new(&name, download.content_length(), output);
    let written = interrupt::unless_interrupted(
        "the download",
        interrupted,
        write_partial(&mut download, &partial, &mut progress),
    )
    .await;
    progress.finish();
    // On any error `partial` is dropped, which removes the partial file while its lock is still held.
    let saved = match written {
        Ok(length) => partial.move_file_into_place().map(|()| length),
        Err(err) => Err(err),
    };
    saved.map_err(|err| err.with_hint(not_written))
}

async fn write_partial(download: &mut Download, partial: &Partial, progress: &mut Progress) -> Result<u64, CliError> {
    let cannot_write = |err: std::io::Error| CliError::new(format!("cannot write {}: {err}", partial.path().display()));
    // A second handle on the same open file: the lock stays with `partial`, held until the file is renamed or
    // removed.
    let file = tokio::fs::File::from_std(partial.handle().try_clone().map_err(cannot_write)?);
    let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut received = 0u64;
    while let Some(chunk) = download.chunk().await? {
        received += chunk.len() as u64;
        writer.write_all(&chunk).await.map_err(cannot_write)?;
        progress.advance(received);
    }
    // A length-delimited body that ends early is already a transport error; this holds whatever the framing.
    if let Some(announced) = download.content_length().filter(|announced| *announced != received) {
        return Err(CliError::new(format!("the download ended after {received} of the {announced} bytes announced")));
    }
    writer.flush().await.map_err(cannot_write)?;
    writer.into_inner().sync_all().await.map_err(cannot_write)?;
    Ok(received)
}

/// The plain progress line due after `received` bytes of `total`, if one is: about [`PLAIN_PROGRESS_LINES`] in
/// all, the last one at the end.
pub fn plain_progress_line(name: &str, received: u64, total: Option<u64>, last: &mut Option<u64>) -> Option<String> {
    let every = total.map_or(PLAIN_LINE_EVERY_BYTES, |total| (total / PLAIN_PROGRESS_LINES).max(1));
    let due = match *last {
        None => true,
        Some(last) => received >= last + every || Some(received) == total,
    };
    if !due || *last == Some(received) {
        return None;
    }
    *last = Some(received);
    Some(match total {
        Some(total) if total > 0 => format!(
            "  {name}: {} of {} ({}%)",
            HumanBytes(received),
            HumanBytes(total),
            received.saturating_mul(100) / total
        ),
        _ => format!("  {name}: {}", HumanBytes(received)),
    })
}

enum Progress {
    Plain { name: String, total: Option<u64>, last_printed: Option<u64> },
    Bar(ProgressBar),
}

impl Progress {
    fn new(name: &str, total: Option<u64>, output: &Output) -> Progress {
        if !output.stderr_is_terminal {
            return Progress::Plain { name: name.to_string(), total, last_printed: None };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        bar.set_style(bar_style(output.stderr, total.is_some()));
        bar.set_message(format!("downloading {name}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress::Bar(bar)
    }

    fn advance(&mut self, received: u64) {
        match self {
            Progress::Plain { name, total, last_printed } => {
                if let Some(line) = plain_progress_line(name, received, *total, last_printed) {
                    eprintln!("{line}");
                }
            }
            Progress::Bar(bar) => bar.set_position(received),
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn bar_style(style: Style, has_total: bool) -> ProgressStyle {
    let template = match (has_total, style.color) {
        (true, true) => "{spinner:.cyan} {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} · {bytes_per_sec} · {eta}",
        (true, false) => "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} · {bytes_per_sec} · {eta}",
        (false, true) => "{spinner:.cyan} {msg} {bytes} · {bytes_per_sec}",
        (false, false) => "{spinner} {msg} {bytes} · {bytes_per_sec}",
    };
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain lines printed while `pieces` arrive one after another.
    fn check(total: Option<u64>, pieces: &[u64], expect: &[&str]) {
        let (mut received, mut last) = (0, None);
        let mut lines = Vec::new();
        for piece in pieces {
            received += piece;
            lines.extend(plain_progress_line("model.safetensors", received, total, &mut last));
        }
        assert_eq!(lines, expect);
    }

    #[test]
    fn plain_progress_is_thinned_and_ends_with_the_last_byte() {
        check(
            Some(2000),
            &[10, 90, 100, 400, 1390, 10],
            &[
                "  model.safetensors: 10 B of 1.95 KiB (0%)",
                "  model.safetensors: 200 B of 1.95 KiB (10%)",
                "  model.safetensors: 600 B of 1.95 KiB (30%)",
                "  model.safetensors: 1.94 KiB of 1.95 KiB (99%)",
                "  model.safetensors: 1.95 KiB of 1.95 KiB (100%)",
            ],
        );
        check(
            None,
            &[1 << 20, 63 << 20, 1 << 20],
            &["  model.safetensors: 1.00 MiB", "  model.safetensors: 65.00 MiB"],
        );
    }
}
