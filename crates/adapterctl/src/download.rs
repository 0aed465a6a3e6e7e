//! Saving a large response body (the merged export) to a file: written to `FILE.partial` piece by piece and
//! renamed to `FILE` only once every byte the server announced arrived, so a download that fails leaves no `FILE`
//! behind. Progress goes to stderr as an indicatif bar on a terminal and as a few plain lines otherwise (CI logs),
//! as [`crate::follow`] shows a run's.
//!
//! The partial file is held under an exclusive lock (`File::try_lock`, flock on Unix) from its creation until it
//! is renamed or removed. A second adapterctl downloading to the same `FILE` meanwhile finds it locked and stops
//! without touching it; a partial file that no process holds is the leftover of a download that was killed, and
//! is replaced, saying so. Ctrl-C (or SIGTERM) during the download removes the partial file before adapterctl
//! exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapterci_api::Download;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::exit::CliError;
use crate::follow::PLAIN_PROGRESS_LINES;
use crate::output::{Output, Style};

/// The write buffer: pieces from the network are small, disk writes need not be.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Without an announced length, a plain progress line every this many bytes.
const PLAIN_LINE_EVERY_BYTES: u64 = 64 << 20;

/// Where `path` is written until it is complete: `path` with `.partial` appended.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// How many times [`lock_partial`] opens the partial file again when the one it locked was renamed or removed
/// under it (each time by another download finishing): more would mean downloads to the same file keep finishing.
const LOCK_TRIES: usize = 8;

/// Writes the body of `download` to `path` and returns its length. On any failure (the connection breaks, fewer
/// bytes than announced, a full disk, ctrl-c) the partial file is removed and `path` is left as it was. When
/// another adapterctl is downloading to `path` now, nothing is written and its partial file is left to it.
pub async fn save(mut download: Download, path: &Path, output: &Output) -> Result<u64, CliError> {
    let partial = partial_path(path);
    let not_written = format!("{} was not written; run the export again", path.display());
    // listening from before the partial file exists: no signal between the two leaves it behind
    let interrupted = interruption();
    let (lock, leftover) = lock_partial(path, &partial).map_err(|err| err.with_hint(not_written.clone()))?;
    if leftover {
        output.note(&format!("replaced {}: a leftover of a download that did not finish", partial.display()));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut progress = Progress::new(&name, download.content_length(), output);
    let written = tokio::select! {
        written = write_partial(&mut download, &lock, &partial, &mut progress) => written,
        signal = interrupted => Err(CliError::new(format!("interrupted by {signal}: the download was stopped"))),
    };
    progress.finish();
    let renamed = match written {
        Ok(length) => tokio::fs::rename(&partial, path)
            .await
            .map(|()| length)
            .map_err(|err| CliError::new(format!("cannot move {} to {}: {err}", partial.display(), path.display()))),
        Err(err) => Err(err),
    };
    if renamed.is_err() {
        // Removed while the lock is held, so never another download's file. Nothing useful is left to do when even
        // the partial file cannot be removed; the error says what failed.
        let _ = tokio::fs::remove_file(&partial).await;
    }
    drop(lock);
    renamed.map_err(|err| err.with_hint(not_written))
}

/// Creates `partial` (the partial file of `path`), or opens the one there, and locks it; returns it with whether
/// it was a leftover (there before, and held by no process: its download was killed), then emptied. A partial
/// file another process holds is an error that leaves it as it is.
fn lock_partial(path: &Path, partial: &Path) -> Result<(File, bool), CliError> {
    let cannot_write = |err: std::io::Error| CliError::new(format!("cannot write {}: {err}", partial.display()));
    for _ in 0..LOCK_TRIES {
        let (file, existed) = match OpenOptions::new().write(true).create_new(true).open(partial) {
            Ok(file) => (file, false),
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                match OpenOptions::new().write(true).open(partial) {
                    Ok(file) => (file, true),
                    Err(err) if err.kind() == ErrorKind::NotFound => continue, // its download just ended
                    Err(err) => return Err(cannot_write(err)),
                }
            }
            Err(err) => return Err(cannot_write(err)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(CliError::new(format!(
                    "another adapterctl is downloading {} now: {} is locked",
                    path.display(),
                    partial.display()
                ))
                .with_hint("wait for that download to finish, or stop it"));
            }
            // a file system without locks: as before locks, a concurrent download to the same file is not caught
            Err(TryLockError::Error(err)) if err.kind() == ErrorKind::Unsupported => {}
            Err(TryLockError::Error(err)) => return Err(cannot_write(err)),
        }
        // The holder of the file opened may have renamed it to its final name (or removed it) and let go of it
        // between the open and the lock: writing into it then would overwrite a finished download.
        if !still_at(&file, partial).map_err(cannot_write)? {
            continue;
        }
        if existed {
            file.set_len(0).map_err(cannot_write)?;
        }
        return Ok((file, existed));
    }
    Err(CliError::new(format!("cannot hold {}: other downloads to it keep finishing", partial.display())))
}

/// Whether `file` is still the file at `path`.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(there) => Ok((there.dev(), there.ino()) == (held.dev(), held.ino())),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether `file` is still the file at `path`: assumed where file identities are not compared.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> std::io::Result<bool> {
    Ok(true)
}

/// Listens for ctrl-c (or SIGTERM on Unix) from now on: the future returned resolves with the signal's name.
/// Listening replaces the default action (exit at once) for the rest of the process, which after the download only
/// prints its report. Where no handler can be installed, it never resolves: the signal then stops adapterctl as
/// before, leaving the partial file (replaced by the next download).
fn interruption() -> impl Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = signals else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = interrupt.recv() => "ctrl-c",
                _ = terminate.recv() => "SIGTERM",
            }
        }
    }
    #[cfg(not(unix))]
    {
        // tokio installs the handler on the first poll here
        async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "ctrl-c",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

async fn write_partial(
    download: &mut Download,
    lock: &File,
    partial: &Path,
    progress: &mut Progress,
) -> Result<u64, CliError> {
    let cannot_write = |err: std::io::Error| CliError::new(format!("cannot write {}: {err}", partial.display()));
    // A second handle on the same open file: the lock stays with `lock`, held until the file is renamed or removed.
    let file = tokio::fs::File::from_std(lock.try_clone().map_err(cannot_write)?);
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

    #[test]
    fn the_partial_file_sits_beside_the_file() {
        assert_eq!(partial_path(Path::new("out/model.safetensors")), Path::new("out/model.safetensors.partial"));
    }
}
