//! A file or folder written under a `.partial` name beside where it belongs and moved there only once complete,
//! so a command that fails or is interrupted midway leaves nothing half-written under the final name: the merged
//! model's download (`FILE.partial`, [`crate::download`]) and the PEFT export's folder (`DIR.partial/`,
//! [`crate::export_folder`]).
//!
//! The partial file or folder is held under an exclusive lock (`File::try_lock`, flock on Unix; a folder through a
//! handle on the folder itself) from its creation until it is moved into place or removed. A second adapterctl
//! writing the same path meanwhile finds it locked and stops without touching it; one that no process holds is the
//! leftover of a command that was killed, and is emptied and reused, saying so. A [`Partial`] dropped before it
//! was moved into place (an error, ctrl-c through [`crate::interrupt`]) removes it, while still holding the lock,
//! so never another process's.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::exit::CliError;
use crate::output::Output;

/// How many times [`Partial::hold`] opens the partial file or folder again when the one it locked was moved or
/// removed under it (each time by another command finishing): more would mean writers to the same path keep
/// finishing.
const LOCK_TRIES: usize = 8;

/// Where `path` is written until it is complete: `path` with `.partial` appended.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// Whether a file or a folder is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
}

/// The command that writes it, as its messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Download,
    Export,
}

impl Work {
    fn doing(self) -> &'static str {
        match self {
            Work::Download => "downloading",
            Work::Export => "exporting",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Work::Download => "download",
            Work::Export => "export",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            Work::Download => "a download",
            Work::Export => "an export",
        }
    }
}

/// The partial file or folder of a path, created (or a leftover emptied), locked, and removed when dropped unless
/// it was moved into place.
pub struct Partial {
    target: PathBuf,
    partial: PathBuf,
    kind: Kind,
    /// The partial file or folder, open: the lock is on it and is let go when this is dropped.
    handle: File,
    moved: bool,
}

impl Partial {
    /// Creates the partial file or folder of `target`, or takes over a leftover there (emptied, with a note); a
    /// partial file or folder another process holds is an error that leaves it as it is.
    pub fn hold(target: &Path, kind: Kind, work: Work, output: &Output) -> Result<Partial, CliError> {
        let partial = partial_path(target);
        let cannot_write = |err: std::io::Error| CliError::new(format!("cannot write {}: {err}", partial.display()));
        for _ in 0..LOCK_TRIES {
            let Some((handle, existed)) = open_or_create(&partial, kind).map_err(cannot_write)? else {
                continue; // its command just ended
            };
            match handle.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(CliError::new(format!(
                        "another adapterctl is {} {} now: {} is locked",
                        work.doing(),
                        target.display(),
                        partial.display()
                    ))
                    .with_hint(format!("wait for that {} to finish, or stop it", work.noun())));
                }
                // a file system without locks: as before locks, a concurrent writer of the same path is not caught
                Err(TryLockError::Error(err)) if err.kind() == ErrorKind::Unsupported => {}
                Err(TryLockError::Error(err)) => return Err(cannot_write(err)),
            }
            // The holder of what was opened may have moved it to its final name (or removed it) and let go of it
            // between the open and the lock: writing into it then would overwrite a finished file.
            if !still_at(&handle, &partial).map_err(cannot_write)? {
                continue;
            }
            if existed {
                empty(&handle, &partial, kind).map_err(cannot_write)?;
                output.note(&format!(
                    "replaced {}: a leftover of {} that did not finish",
                    partial.display(),
                    work.with_article()
                ));
            }
            return Ok(Partial { target: target.to_path_buf(), partial, kind, handle, moved: false });
        }
        Err(CliError::new(format!("cannot hold {}: other {}s to it keep finishing", partial.display(), work.noun())))
    }

    /// The partial file or folder.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// The partial file or folder, open (for writing, when it is a file).
    pub fn handle(&self) -> &File {
        &self.handle
    }

    /// Moves the complete partial file to its target, replacing the file there, and syncs the folder holding it.
    pub fn move_file_into_place(self) -> Result<(), CliError> {
        debug_assert_eq!(self.kind, Kind::File);
        self.rename_into_place()
    }

    /// Moves the complete partial folder, holding `files` (and nothing else), to its target: whole, where the
    /// target is absent or an empty folder; file by file into a target folder that has files, which keeps its
    /// others, each of `files` replacing the one of its name at once. The first of `files` marks the folder
    /// (PEFT's `adapter_config.json`): it is removed from the target before the others move in and moves in last,
    /// so at every moment the target holds its old files, or no marker, or every new file.
    pub fn move_folder_into_place(self, files: &[&str]) -> Result<(), CliError> {
        debug_assert_eq!(self.kind, Kind::Folder);
        self.handle
            .sync_all()
            .map_err(|err| CliError::new(format!("cannot sync {}: {err}", self.partial.display())))?;
        if !self.target.is_dir() || folder_is_empty(&self.target).map_err(|err| self.cannot_move(&err))? {
            return self.rename_into_place();
        }
        self.move_files_into_target(files)
    }

    fn rename_into_place(mut self) -> Result<(), CliError> {
        std::fs::rename(&self.partial, &self.target).map_err(|err| self.cannot_move(&err))?;
        self.moved = true;
        let parent = self.target.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
        self.sync(parent)
    }

    fn move_files_into_target(mut self, files: &[&str]) -> Result<(), CliError> {
        let Some((marker, others)) = files.split_first() else {
            return Ok(()); // nothing to move: dropping `self` removes the empty partial folder
        };
        match std::fs::remove_file(self.target.join(marker)) {
            Ok(()) => self.sync(&self.target)?,
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(self.cannot_move(&err)),
        }
        for file in others.iter().chain([marker]) {
            let (from, to) = (self.partial.join(file), self.target.join(file));
            std::fs::rename(&from, &to)
                .map_err(|err| CliError::new(format!("cannot move {} to {}: {err}", from.display(), to.display())))?;
        }
        self.sync(&self.target)?;
        // Empty now; should removing it fail, dropping `self` tries again.
        self.moved = std::fs::remove_dir(&self.partial).is_ok();
        Ok(())
    }

    /// Syncs `folder` after names in it changed.
    fn sync(&self, folder: &Path) -> Result<(), CliError> {
        sync_folder(folder).map_err(|err| CliError::new(format!("cannot sync {}: {err}", folder.display())))
    }

    fn cannot_move(&self, err: &std::io::Error) -> CliError {
        CliError::new(format!("cannot move {} to {}: {err}", self.partial.display(), self.target.display()))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.moved {
            return;
        }
        // Nothing useful is left to do when even this fails; the error that brought us here says what failed.
        let _ = match self.kind {
            Kind::File => std::fs::remove_file(&self.partial),
            Kind::Folder => std::fs::remove_dir_all(&self.partial),
        };
    }
}

/// Opens the partial file or folder there, or creates it; with whether it was there before. `None` when it was
/// removed between the two attempts.
fn open_or_create(partial: &Path, kind: Kind) -> std::io::Result<Option<(File, bool)>> {
    let created = match kind {
        Kind::File => match OpenOptions::new().write(true).create_new(true).open(partial) {
            Ok(file) => return Ok(Some((file, false))),
            Err(err) => Err(err),
        },
        Kind::Folder => std::fs::create_dir(partial),
    };
    let existed = match created {
        Ok(()) => false,
        Err(err) if err.kind() == ErrorKind::AlreadyExists => true,
        Err(err) => return Err(err),
    };
    if existed && std::fs::symlink_metadata(partial).is_ok_and(|there| there.file_type().is_symlink()) {
        return Err(std::io::Error::new(ErrorKind::AlreadyExists, "a symbolic link is there: remove it"));
    }
    let opened = match kind {
        Kind::File => OpenOptions::new().write(true).open(partial),
        // a handle on the folder itself, to lock and to sync
        Kind::Folder => File::open(partial),
    };
    match opened {
        Ok(handle) if kind == Kind::Folder && !handle.metadata()?.is_dir() => {
            Err(std::io::Error::new(ErrorKind::NotADirectory, "a file is there, not a folder"))
        }
        Ok(handle) => Ok(Some((handle, existed))),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Empties a leftover partial file or folder, held.
fn empty(handle: &File, partial: &Path, kind: Kind) -> std::io::Result<()> {
    match kind {
        Kind::File => handle.set_len(0),
        Kind::Folder => {
            for entry in std::fs::read_dir(partial)? {
                let entry = entry?;
                // symbolic links are removed, never followed
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())?;
                } else {
                    std::fs::remove_file(entry.path())?;
                }
            }
            Ok(())
        }
    }
}

fn folder_is_empty(folder: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(folder)?.next().is_none())
}

/// Makes the names in `folder` (files moved in or out) durable.
#[cfg(unix)]
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    File::open(folder)?.sync_all()
}

/// Makes the names in `folder` durable: the file system does it by itself where folders cannot be opened.
#[cfg(not(unix))]
fn sync_folder(_folder: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Whether `handle` is still the file or folder at `path`.
#[cfg(unix)]
fn still_at(handle: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = handle.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(there) => Ok((there.dev(), there.ino()) == (held.dev(), held.ino())),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether `handle` is still the file or folder at `path`: assumed where file identities are not compared.
#[cfg(not(unix))]
fn still_at(_handle: &File, _path: &Path) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_file_sits_beside_the_file() {
        assert_eq!(partial_path(Path::new("out/model.safetensors")), Path::new("out/model.safetensors.partial"));
        assert_eq!(partial_path(Path::new("exports/support-v7/")), Path::new("exports/support-v7.partial"));
    }
}
