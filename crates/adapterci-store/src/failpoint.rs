//! Failpoints for crash tests of the metadata store's transactions: when `ADAPTERCI_STORE_FAILPOINT` names a
//! step, the process stops there (it says so on stdout and then parks forever) so that a test can `kill -9` it
//! with a write transaction open. Unset, as in production, each check is one environment lookup.

/// Names the step at which the store stops: one of [`STEPS`].
pub const ENV_STORE_FAILPOINT: &str = "ADAPTERCI_STORE_FAILPOINT";

/// The steps, in the order a publish followed by a promote reaches them: the new version row written but its
/// transaction not committed; the channel pointer and its event written but their transaction not committed;
/// the promote committed (the caller has not heard of it yet).
pub const STEPS: [&str; 3] = ["in-record-transaction", "in-promote-transaction", "after-promote"];

/// The line printed on stdout when `step` is reached.
pub fn reached_line(step: &str) -> String {
    format!("failpoint {step} reached")
}

/// Stops the process here when the failpoint names `step`.
pub(crate) fn check(step: &str) {
    if std::env::var(ENV_STORE_FAILPOINT).is_ok_and(|wanted| wanted == step) {
        use std::io::Write;
        let mut stdout = std::io::stdout();
        // A failed write only means nobody waits for the line.
        let _ = writeln!(stdout, "{}", reached_line(step));
        let _ = stdout.flush();
        loop {
            std::thread::park();
        }
    }
}
