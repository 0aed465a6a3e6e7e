//! A throwaway PostgreSQL server for tests: `initdb` into a temp dir, `pg_ctl start` on 127.0.0.1 and a free
//! port with trust authentication, one fresh database per store, and `pg_ctl stop` on drop.
//!
//! PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user through
//! `runuser -u postgres --`. The calls block (initdb takes a second or two): call them from
//! `tokio::task::spawn_blocking` inside async tests.

use std::io;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use tempfile::TempDir;

/// Where Debian's PostgreSQL 15 puts its server binaries.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Overrides [`DEFAULT_BIN_DIR`].
pub const BIN_DIR_ENV: &str = "ADAPTERCI_POSTGRES_BIN";
const SERVER_USER: &str = "postgres";

/// A running PostgreSQL server, stopped and deleted when dropped.
#[derive(Debug)]
pub struct PostgresServer {
    bin_dir: PathBuf,
    dir: TempDir,
    port: u16,
    as_root: bool,
    databases: AtomicUsize,
}

impl PostgresServer {
    /// The directory holding `initdb`, `pg_ctl` and `createdb`.
    pub fn bin_dir() -> PathBuf {
        std::env::var_os(BIN_DIR_ENV).map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from)
    }

    /// Whether the server binaries are installed here.
    pub fn available() -> bool {
        ["initdb", "pg_ctl", "postgres", "createdb"].iter().all(|tool| Self::bin_dir().join(tool).is_file())
    }

    /// Creates a cluster in a temp dir and starts it.
    pub fn start() -> io::Result<PostgresServer> {
        let bin_dir = Self::bin_dir();
        let as_root = std::fs::metadata("/proc/self")?.uid() == 0;
        let dir = tempfile::Builder::new().prefix("adapterci-postgres-").tempdir()?;
        if as_root {
            let status = Command::new("chown").arg(SERVER_USER).arg(dir.path()).status()?;
            if !status.success() {
                return Err(io::Error::other(format!("chown {SERVER_USER} {} failed", dir.path().display())));
            }
        }
        let port = free_port()?;
        let server = PostgresServer { bin_dir, dir, port, as_root, databases: AtomicUsize::new(0) };
        let data = server.data_dir();
        server.run_server_tool(
            "initdb",
            &["-D", path_str(&data)?, "-U", SERVER_USER, "--auth=trust", "--no-sync", "--locale=C", "-E", "UTF8"],
        )?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            path_str(server.dir.path())?
        );
        let log = server.dir.path().join("server.log");
        server.run_server_tool(
            "pg_ctl",
            &["-D", path_str(&data)?, "-l", path_str(&log)?, "-o", &options, "-w", "-t", "60", "start"],
        )?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SERVER_USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub fn create_database(&self) -> io::Result<String> {
        let name = format!("adapterci_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        let port = self.port.to_string();
        let output = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", SERVER_USER, &name])
            .output()?;
        check_output("createdb", &output)?;
        Ok(self.url(&name))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server-side tool as the `postgres` user.
    fn run_server_tool(&self, tool: &str, args: &[&str]) -> io::Result<Output> {
        let program = self.bin_dir.join(tool);
        let mut command = if self.as_root {
            let mut command = Command::new("runuser");
            command.args(["-u", SERVER_USER, "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).current_dir(self.dir.path()).output()?;
        check_output(tool, &output)?;
        Ok(output)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        if let Some(data) = data.to_str()
            && let Err(err) = self.run_server_tool("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"])
        {
            eprintln!("stopping the test PostgreSQL server: {err}");
        }
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn path_str(path: &Path) -> io::Result<&str> {
    path.to_str().ok_or_else(|| io::Error::other(format!("temp path {} is not UTF-8", path.display())))
}

fn check_output(tool: &str, output: &Output) -> io::Result<()> {
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{tool} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}
