//! The CLI reference (`docs/reference/cli.md`), generated from the clap definitions so it cannot go stale: a
//! test compares the committed file with [`cli_reference`].

use clap::CommandFactory;

use crate::cli::Cli;
use crate::env_vars;

/// The reference's path, relative to the workspace root.
pub const REFERENCE_PATH: &str = "docs/reference/cli.md";

/// Help is rendered at this width whatever the terminal, so the file is the same everywhere.
const WIDTH: usize = 100;

/// The command that rewrites the reference.
pub fn regenerate_command() -> String {
    format!("{}=1 cargo test -p adapterctl --test cli_reference", env_vars::ADAPTERCTL_UPDATE_REFERENCE)
}

/// The whole reference: one section per command, each with its full `--help`.
pub fn cli_reference() -> String {
    let mut command = Cli::command().term_width(WIDTH).max_term_width(WIDTH);
    command.build();
    let mut text = String::from("# adapterctl reference\n\n");
    text.push_str("<!-- Generated from crates/adapterctl/src/cli.rs; do not edit. Regenerate with:\n");
    text.push_str(&format!("     {} -->\n\n", regenerate_command()));
    text.push_str(&format!(
        "Exit codes: 0 ok, 1 error or a failed run, 2 usage, 3 a gate rejected the run's adapter, 4 not found, \
         130 interrupted by ctrl-c, 143 stopped by SIGTERM.\n\
         Environment: `{}` (the server URL, like `--server`), `{}` (any value turns color off).\n",
        env_vars::ADAPTERCI_SERVER,
        env_vars::NO_COLOR
    ));
    append_command(&mut text, &mut command, "adapterctl");
    text
}

fn append_command(text: &mut String, command: &mut clap::Command, path: &str) {
    let help = command.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    text.push_str(&format!("\n## `{path}`\n\n```text\n{}\n```\n", help.join("\n").trim_end()));
    for subcommand in command.get_subcommands_mut() {
        if subcommand.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", subcommand.get_name());
        append_command(text, subcommand, &sub_path);
    }
}
