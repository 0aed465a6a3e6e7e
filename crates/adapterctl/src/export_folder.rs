//! The PEFT export's folder, written all at once: its files go to `DIR.partial/` beside DIR (a locked [`Partial`]
//! folder; one a killed export left is replaced, saying so), each synced, and move to DIR only once every one is
//! complete. An export that fails or is interrupted (ctrl-c, SIGTERM) midway removes `DIR.partial/` and leaves DIR
//! as it was, or absent; a second adapterctl exporting to DIR meanwhile stops without touching either. DIR may
//! already be a folder, as before: the files replace those of their names there and its other files stay
//! ([`Partial::move_folder_into_place`]).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::exit::CliError;
use crate::interrupt::{self, Signal};
use crate::output::Output;
use crate::partial::{Kind, Partial, Work};

/// Writes `files` (name and bytes; the first marks the folder, as PEFT's `adapter_config.json` does) into the
/// folder `out`, created with its parents if missing.
pub async fn save(out: &Path, files: &[(&str, Vec<u8>)], output: &Output) -> Result<(), CliError> {
    // listening from before the partial folder exists: no signal between the two leaves it behind
    save_with(out, files, output, interrupt::listen(), write_file).await
}

/// [`save`], stopped when `interrupted` resolves, writing each file with `write`.
async fn save_with(
    out: &Path,
    files: &[(&str, Vec<u8>)],
    output: &Output,
    interrupted: impl Future<Output = Signal>,
    write: impl AsyncFn(&Path, &[u8]) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let unchanged =
        |err: CliError| err.with_hint(format!("{} was left as it was; run the export again", out.display()));
    let target = target_folder(out).map_err(unchanged)?;
    let partial = Partial::hold(&target, Kind::Folder, Work::Export, output).map_err(unchanged)?;
    let write_all = async {
        for (name, bytes) in files {
            let path = partial.path().join(name);
            write(&path, bytes)
                .await
                .map_err(|err| CliError::new(format!("cannot write {}: {err}", path.display())))?;
        }
        Ok(())
    };
    // On any error `partial` is dropped, which removes the partial folder while its lock is still held.
    interrupt::unless_interrupted("the export", interrupted, write_all).await.map_err(unchanged)?;
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    partial.move_folder_into_place(&names).map_err(unchanged)
}

/// Writes one file of the partial folder and syncs it.
async fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = tokio::fs::File::create_new(path).await?;
    file.write_all(bytes).await?;
    file.flush().await?;
    file.sync_all().await
}

/// The folder the files go to: `out`, or the folder it leads to where its last part is `.`, `..` or a symbolic
/// link, so that the partial folder is beside the folder itself, on its file system. The parents of a missing
/// `out` are created, as `out` itself was before.
fn target_folder(out: &Path) -> Result<PathBuf, CliError> {
    let cannot_read = |err: std::io::Error| CliError::new(format!("cannot read {}: {err}", out.display()));
    let target = match std::fs::symlink_metadata(out) {
        Ok(there) if there.file_type().is_symlink() || out.file_name().is_none() => {
            std::fs::canonicalize(out).map_err(cannot_read)?
        }
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(cannot_read(err)),
        _ => out.to_path_buf(),
    };
    if target.file_name().is_none() {
        return Err(CliError::new(format!(
            "cannot export into {}: name a folder (its files are written to NAME.partial beside it first)",
            out.display()
        )));
    }
    if target.exists() && !target.is_dir() {
        return Err(CliError::new(format!("cannot export into {}: it is a file, not a folder", out.display())));
    }
    if let Some(parent) = target.parent().filter(|parent| !parent.as_os_str().is_empty() && !parent.exists()) {
        std::fs::create_dir_all(parent)
            .map_err(|err| CliError::new(format!("cannot create {}: {err}", parent.display())))?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio::sync::Notify;

    use super::*;
    use crate::exit::ExitStatus;
    use crate::output::OutputFormat;
    use crate::partial::partial_path;

    const FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

    fn files() -> Vec<(&'static str, Vec<u8>)> {
        vec![(FILES[0], br#"{"r": 4}"#.to_vec()), (FILES[1], vec![7; 4096])]
    }

    fn output() -> Output {
        Output::new(OutputFormat::Json, true)
    }

    /// Every file under `dir` (relative path to bytes); empty when `dir` does not exist.
    fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut found = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return found };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                found.extend(contents(&path).into_iter().map(|(inner, bytes)| (format!("{name}/{inner}"), bytes)));
            } else {
                found.insert(name, std::fs::read(&path).unwrap());
            }
        }
        found
    }

    /// An earlier export and a file of the user's in `out`.
    fn earlier_export(out: &Path) {
        std::fs::create_dir_all(out).unwrap();
        std::fs::write(out.join(FILES[0]), b"{\"r\": 2}").unwrap();
        std::fs::write(out.join(FILES[1]), b"old weights").unwrap();
        std::fs::write(out.join("README.md"), b"mine").unwrap();
    }

    /// Writes half of the model file, then fails as a full disk does.
    async fn fail_on_the_model(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if path.ends_with(FILES[1]) {
            std::fs::write(path, &bytes[..bytes.len() / 2])?;
            return Err(std::io::Error::other("no space left on device"));
        }
        write_file(path, bytes).await
    }

    #[tokio::test]
    async fn a_write_that_fails_midway_leaves_the_folder_as_it_was_and_no_partial_folder() {
        for earlier in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("support-v1");
            if earlier {
                earlier_export(&out);
            }
            let before = contents(&out);
            let err = save_with(&out, &files(), &output(), std::future::pending(), fail_on_the_model)
                .await
                .expect_err("the model file cannot be written");
            let model = dir.path().join("support-v1.partial").join(FILES[1]);
            assert_eq!(err.message, format!("cannot write {}: no space left on device", model.display()));
            assert_eq!(err.hints, [format!("{} was left as it was; run the export again", out.display())]);
            assert_eq!(contents(&out), before, "earlier export: {earlier}");
            assert_eq!(out.exists(), earlier);
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
            assert_eq!(left.len(), usize::from(earlier), "no partial folder is left: {left:?}");
        }
    }

    #[tokio::test]
    async fn ctrl_c_midway_stops_the_export_with_130_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("support-v1");
        let config_written = Notify::new();
        // the config is written, then writing stalls: ctrl-c comes midway
        let write = async |path: &Path, bytes: &[u8]| {
            write_file(path, bytes).await?;
            config_written.notify_one();
            std::future::pending::<std::io::Result<()>>().await
        };
        let interrupted = async {
            config_written.notified().await;
            Signal::Interrupt
        };
        let err = save_with(&out, &files(), &output(), interrupted, write).await.expect_err("interrupted");
        assert_eq!(err.message, "interrupted by ctrl-c: the export was stopped");
        assert_eq!((err.status, err.status.code()), (ExitStatus::Interrupted, 130));
        assert!(
            contents(dir.path()).is_empty(),
            "neither the folder nor its partial folder: {:?}",
            contents(dir.path())
        );
    }

    #[tokio::test]
    async fn an_export_replaces_the_files_of_an_earlier_one_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("support-v1");
        earlier_export(&out);
        save_with(&out, &files(), &output(), std::future::pending(), write_file).await.unwrap();
        let mut expected: BTreeMap<String, Vec<u8>> =
            files().into_iter().map(|(name, bytes)| (name.to_string(), bytes)).collect();
        expected.insert("README.md".to_string(), b"mine".to_vec());
        assert_eq!(contents(&out), expected);
        assert!(!partial_path(&out).exists());
    }

    #[cfg(unix)]
    #[test]
    fn the_target_is_the_folder_a_link_leads_to_and_never_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(target_folder(&link).unwrap(), real.canonicalize().unwrap());
        let nested = dir.path().join("a/b/out");
        assert_eq!(target_folder(&nested).unwrap(), nested);
        assert!(dir.path().join("a/b").is_dir(), "the parents are created");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = target_folder(&file).unwrap_err();
        assert_eq!(err.message, format!("cannot export into {}: it is a file, not a folder", file.display()));
    }
}
