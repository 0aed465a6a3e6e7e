//! Whether a test that needs a real server (PostgreSQL, SeaweedFS) runs here: where its binaries are missing the
//! test is skipped with a notice, unless the environment says the server is required (`.ci/run` does), in which
//! case the test fails, so a CI image that lost a server cannot pass by skipping everything that uses it.

use crate::postgres::PostgresServer;
use crate::seaweedfs::SeaweedServer;

/// Set (to anything) where PostgreSQL must be tested.
pub const REQUIRE_POSTGRES_ENV: &str = "ADAPTERCI_REQUIRE_POSTGRES";
/// Set (to anything) where SeaweedFS (the S3 path) must be tested.
pub const REQUIRE_SEAWEEDFS_ENV: &str = "ADAPTERCI_REQUIRE_SEAWEEDFS";

/// True when PostgreSQL is installed; otherwise prints that `test` is skipped and returns false, or panics when
/// [`REQUIRE_POSTGRES_ENV`] is set.
pub fn postgres_or_skip(test: &str) -> bool {
    present_or_skip(
        test,
        PostgresServer::available(),
        REQUIRE_POSTGRES_ENV,
        &format!("PostgreSQL is not installed in {}", PostgresServer::bin_dir().display()),
    )
}

/// True when SeaweedFS's `weed` is installed; otherwise prints that `test` is skipped and returns false, or
/// panics when [`REQUIRE_SEAWEEDFS_ENV`] is set.
pub fn seaweedfs_or_skip(test: &str) -> bool {
    present_or_skip(
        test,
        SeaweedServer::available(),
        REQUIRE_SEAWEEDFS_ENV,
        "SeaweedFS is not installed (run scripts/install_seaweedfs.sh or set ADAPTERCI_WEED)",
    )
}

fn present_or_skip(test: &str, present: bool, require_env: &str, missing: &str) -> bool {
    skip_unless_required(test, present, require_env, std::env::var_os(require_env).is_some(), missing)
}

fn skip_unless_required(test: &str, present: bool, require_env: &str, required: bool, missing: &str) -> bool {
    if present {
        return true;
    }
    assert!(!required, "{test}: {require_env} is set but {missing}");
    eprintln!("skipped {test}: {missing} (set {require_env}=1 to fail instead)");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_skips_unless_it_is_required() {
        assert!(skip_unless_required("t", true, REQUIRE_POSTGRES_ENV, true, "gone"), "a present server runs");
        assert!(!skip_unless_required("t", false, REQUIRE_POSTGRES_ENV, false, "gone"), "a missing one skips");
        let required =
            std::panic::catch_unwind(|| skip_unless_required("t", false, REQUIRE_POSTGRES_ENV, true, "gone"));
        let message = required.expect_err("a required server that is missing must fail the test");
        let text = message.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains(REQUIRE_POSTGRES_ENV) && text.contains("gone"), "{text}");
    }
}
