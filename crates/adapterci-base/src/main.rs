//! `adapterci-base`: build a base release on this machine — palettize a source model to mixed 2/4-bit lookup
//! tables, analyze each operation's sensitivity and bits, train the accuracy-recovery adapter, evaluate, and
//! publish the release (palettized base + recovery adapter + reports) to the registry with its lineage.
//! `adapterctl base ...` runs this binary. Exit codes: 0 ok, 1 error, 2 usage.

mod cli;
mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match commands::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(1)
        }
    }
}
