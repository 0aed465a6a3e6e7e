//! The adapterctl command-line client: drives adapterd over its HTTP API only (no engine, store or registry).
//!
//! [`main`] parses the command line ([`cli`]), runs one command ([`commands`]) on a small tokio runtime, prints
//! data on stdout and errors on stderr ([`output`]), and exits with a code from [`exit`].

pub mod cli;
pub mod commands;
pub mod download;
pub mod env_vars;
pub mod exit;
pub mod export_folder;
pub mod follow;
pub mod interrupt;
pub mod output;
pub mod partial;
pub mod reference;
pub mod render;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::exit::ExitStatus;
use crate::output::Output;

/// Runs adapterctl with the process's arguments.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are printed on stdout and are not errors.
            let status = if err.use_stderr() { ExitStatus::Usage } else { ExitStatus::Success };
            let _ = err.print();
            return status.into();
        }
    };
    let output = Output::new(cli.global.output, cli.global.no_color);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            output.error(&exit::CliError::new(format!("cannot start the async runtime: {err}")));
            return ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(commands::run(cli, output)) {
        Ok(status) => status.into(),
        Err(err) => {
            output.error(&err);
            err.status.into()
        }
    }
}
