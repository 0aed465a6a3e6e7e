//! Files written whole or not at all: checkpoints, caches and build outputs that a crash must not leave torn; and
//! the removal of such files once nothing will read them, leaving whatever else is beside them.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::EngineError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::Io { path, source }
}

/// `<file name>.tmp` beside `path` (the whole name kept, so `a.b` and `a.c` never share one).
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: see [`write_atomic_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, bytes).map_err(io(tmp)))
}

/// Has `fill` write the file at a temporary path beside `path`, syncs it, renames it over `path` and syncs the
/// folder, so that `path` holds either its old bytes or all of the new ones, even after a crash or power loss.
/// The temporary file is removed when `fill` or the sync fails.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&Path) -> Result<(), EngineError>) -> Result<(), EngineError> {
    let tmp = temporary(path);
    let written = fill(&tmp).and_then(|()| File::open(&tmp).and_then(|file| file.sync_all()).map_err(io(&tmp)));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error);
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // the rename is durable once the folder's entry is; a folder that cannot be opened to sync is not an error
    if let Ok(folder) = File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// A file a cleanup removed, or tried to.
#[derive(Debug)]
pub struct Removal {
    pub path: PathBuf,
    /// The bytes its removal freed, or why it could not be removed.
    pub freed: Result<u64, std::io::Error>,
}

/// Removes the regular files directly in `dir` whose names `recognized` accepts (the files this crate writes
/// there, and the temporaries a kill left of them): records (`.json`) first, so that a record never outlives a
/// file it names, then the rest, each in name order. Anything else in `dir` is left; a missing `dir` removes
/// nothing.
pub fn remove_recognized(dir: &Path, recognized: impl Fn(&str) -> bool) -> Vec<Removal> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // a link or a folder under a recognized name is not one of ours
            let metadata = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            recognized(&name).then_some((name, metadata.len()))
        })
        .collect();
    files.sort_by(|(a, _), (b, _)| (!a.ends_with(".json"), a).cmp(&(!b.ends_with(".json"), b)));
    files
        .into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            let freed = std::fs::remove_file(&path).map(|()| bytes);
            Removal { path, freed }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache-t0.7");
        write_atomic(&path, b"old").expect("first write");
        let failed = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"half").map_err(io(tmp))?;
            Err(EngineError::InvalidConfig("stopped midway".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cache-t0.7")]);
        write_atomic(&path, b"new").expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn a_cleanup_removes_the_recognized_files_records_first_and_leaves_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, bytes) in [("a.safetensors", &b"12345"[..]), ("b.json", b"12"), ("theirs.txt", b"1")] {
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        std::fs::create_dir(dir.path().join("folder.json")).expect("folder");
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("theirs.txt"), dir.path().join("link.json")).expect("link");
        let removed = remove_recognized(dir.path(), |name| name != "theirs.txt");
        let removed: Vec<_> = removed
            .iter()
            .map(|r| (r.path.file_name().expect("name").to_os_string(), *r.freed.as_ref().expect("removed")))
            .collect();
        assert_eq!(removed, [("b.json".into(), 2), ("a.safetensors".into(), 5)]);
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        left.sort();
        let mut expect = vec!["folder.json", "theirs.txt"];
        if cfg!(unix) {
            expect.insert(1, "link.json");
        }
        assert_eq!(left, expect);
        assert!(remove_recognized(&dir.path().join("missing"), |_| true).is_empty());
    }

    #[test]
    fn names_differing_after_a_dot_get_their_own_temporary() {
        assert_ne!(temporary(Path::new("x/teacher-t0.7")), temporary(Path::new("x/teacher-t0.8")));
        assert_eq!(temporary(Path::new("x/state.json")), Path::new("x/state.json.tmp"));
    }
}
