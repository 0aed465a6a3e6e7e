//! Failpoints for crash tests: when `ADAPTERCI_REGISTRY_FAILPOINT` names a step of a publish, the process stops
//! there (it says so on stdout and then parks forever) so that a test can `kill -9` it at exactly that point.
//! Unset, as in production, each check is one environment lookup per publish step.

/// Names the step at which a publish stops: one of [`STEPS`].
pub const ENV_REGISTRY_FAILPOINT: &str = "ADAPTERCI_REGISTRY_FAILPOINT";

/// The steps of a publish, in order: the first file blob written, every file blob written, the manifest blob
/// written, the version recorded in the index (the caller has not heard of it yet).
pub const STEPS: [&str; 4] = ["after-first-blob", "after-blobs", "after-manifest", "after-record"];

/// The line printed on stdout when `step` is reached.
pub fn reached_line(step: &str) -> String {
    format!("failpoint {step} reached")
}

/// Stops the process here when the failpoint names `step`.
pub(crate) fn check(step: &str) {
    if std::env::var(ENV_REGISTRY_FAILPOINT).is_ok_and(|wanted| wanted == step) {
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
