//! Every environment variable adapterctl reads, in one place.

/// The adapterd URL, when `--server` is not given.
pub const ADAPTERCI_SERVER: &str = "ADAPTERCI_SERVER";

/// Any non-empty value turns color off (<https://no-color.org>).
pub const NO_COLOR: &str = "NO_COLOR";

/// Set to `1` when running adapterctl's tests to rewrite `docs/reference/cli.md` instead of comparing with it.
pub const ADAPTERCTL_UPDATE_REFERENCE: &str = "ADAPTERCTL_UPDATE_REFERENCE";

/// Path of the `adapterci-base` tool that `adapterctl base` runs (default: beside adapterctl, then `PATH`).
pub const ADAPTERCI_BASE_TOOL: &str = "ADAPTERCI_BASE_TOOL";

/// The metadata database URL for `adapterctl db`, when `--database` is not given (the same variable adapterd
/// reads).
pub const ADAPTERCI_DATABASE_URL: &str = "ADAPTERCI_DATABASE_URL";

/// Path of the `adapterci-db` tool that `adapterctl db` runs (default: beside adapterctl, then `PATH`).
pub const ADAPTERCI_DB_TOOL: &str = "ADAPTERCI_DB_TOOL";
