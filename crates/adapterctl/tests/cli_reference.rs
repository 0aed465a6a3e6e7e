//! `docs/reference/cli.md` is generated from the clap definitions; this test fails when it is stale.

use std::path::Path;

use adapterctl::env_vars;
use adapterctl::reference::{REFERENCE_PATH, cli_reference, regenerate_command};

#[test]
fn the_cli_reference_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(REFERENCE_PATH);
    let expected = cli_reference();
    if std::env::var_os(env_vars::ADAPTERCTL_UPDATE_REFERENCE).is_some_and(|value| value == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != expected {
        let first_difference = committed
            .lines()
            .zip(expected.lines())
            .position(|(old, new)| old != new)
            .map_or_else(|| "at the end".to_string(), |line| format!("first at line {}", line + 1));
        panic!(
            "{REFERENCE_PATH} is out of date ({first_difference}); regenerate it with:\n    {}",
            regenerate_command()
        );
    }
}
