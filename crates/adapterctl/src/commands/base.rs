//! `adapterctl base ...`: base releases are built on the machine that runs the command, by the
//! `adapterci-base` tool (it links libtorch, which adapterctl must not). adapterctl finds the tool in
//! `$ADAPTERCI_BASE_TOOL`, next to its own executable, or on `PATH`, runs it with the same arguments and exits
//! with its status.

use std::path::PathBuf;

use crate::exit::{CliError, ExitStatus};

/// The tool's file name.
pub const TOOL: &str = "adapterci-base";

/// Where the tool is: `$ADAPTERCI_BASE_TOOL`, beside this executable, or the first `PATH` entry that has it.
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(crate::env_vars::ADAPTERCI_BASE_TOOL) {
        return Some(PathBuf::from(path));
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(TOOL)));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Some(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(TOOL)).find(|p| p.is_file()))
}

/// Runs the tool with `args`; its output goes straight to the terminal.
pub async fn run(args: &[String]) -> Result<ExitStatus, CliError> {
    let Some(tool) = locate() else {
        return Err(CliError::new(format!("{TOOL} was not found beside adapterctl or on PATH")).with_hint(format!(
            "build it with `cargo build -p {TOOL}` (or set {} to its path)",
            crate::env_vars::ADAPTERCI_BASE_TOOL
        )));
    };
    let status = tokio::process::Command::new(&tool)
        .args(args)
        .status()
        .await
        .map_err(|err| CliError::new(format!("cannot run {}: {err}", tool.display())))?;
    Ok(match status.code() {
        Some(0) => ExitStatus::Success,
        Some(2) => ExitStatus::Usage,
        _ => ExitStatus::Failure,
    })
}
