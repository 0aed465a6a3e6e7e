//! `adapterctl base ...` runs the adapterci-base tool with the same arguments and exits with its status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn adapterctl(tool: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_adapterctl")).args(args).env("ADAPTERCI_BASE_TOOL", tool).output().unwrap()
}

#[test]
fn arguments_reach_the_tool_and_its_status_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("fake-base");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho \"tool got: $*\"\n[ \"$1\" = analyze ] && exit 0\n[ \"$1\" = usage ] && exit 2\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = adapterctl(&tool, &["base", "analyze", "--model", "m.gguf", "--target-bpw", "3.5"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tool got: analyze --model m.gguf --target-bpw 3.5");
    assert_eq!(adapterctl(&tool, &["base", "usage"]).status.code(), Some(2));
    let out = adapterctl(&tool, &["base", "release", "--help"]);
    assert_eq!(out.status.code(), Some(1), "any other failure of the tool is exit 1");
    assert!(String::from_utf8_lossy(&out.stdout).contains("release --help"), "--help goes to the tool");
}

#[test]
fn a_missing_tool_is_an_error_that_says_how_to_get_it() {
    let out = adapterctl(std::path::Path::new("/nonexistent/adapterci-base"), &["base", "analyze"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot run /nonexistent/adapterci-base"), "{stderr}");
}
