//! Ctrl-C and SIGTERM while adapterctl writes files: listened for, so that a command removes what it had half
//! written before it exits, with the status shells give a program a signal stopped (128 + the signal's number:
//! 130 for ctrl-c, 143 for SIGTERM).

use crate::exit::{CliError, ExitStatus};

/// A signal that stopped a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: ctrl-c.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Signal {
    /// The signal's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "ctrl-c",
            Signal::Terminate => "SIGTERM",
        }
    }

    /// How adapterctl exits after this signal.
    pub fn exit_status(self) -> ExitStatus {
        match self {
            Signal::Interrupt => ExitStatus::Interrupted,
            Signal::Terminate => ExitStatus::Terminated,
        }
    }

    /// The error of `work` (e.g. "the download") stopped by this signal.
    pub fn error(self, work: &str) -> CliError {
        CliError {
            status: self.exit_status(),
            ..CliError::new(format!("interrupted by {}: {work} was stopped", self.name()))
        }
    }
}

/// Listens for ctrl-c (or SIGTERM on Unix) from now on: the future returned resolves with the signal. Listening
/// replaces the default action (exit at once) for the rest of the process, which after the work only prints its
/// report. Where no handler can be installed, it never resolves: the signal then stops adapterctl as before,
/// leaving what it was writing (replaced by the next command that writes it).
pub fn listen() -> impl Future<Output = Signal> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = signals else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = interrupt.recv() => Signal::Interrupt,
                _ = terminate.recv() => Signal::Terminate,
            }
        }
    }
    #[cfg(not(unix))]
    {
        // tokio installs the handler on the first poll here
        async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Signal::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Runs `work` until it ends, or until `interrupted` (from [`listen`], called before `work` began writing)
/// resolves first: then `work` is dropped and the error says `what` was stopped.
pub async fn unless_interrupted<T>(
    what: &str,
    interrupted: impl Future<Output = Signal>,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    tokio::select! {
        result = work => result,
        signal = interrupted => Err(signal.error(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_exits_with_128_plus_its_number() {
        let error = Signal::Interrupt.error("the export");
        assert_eq!(
            (error.message.as_str(), error.status.code()),
            ("interrupted by ctrl-c: the export was stopped", 130)
        );
        assert_eq!(Signal::Terminate.error("the download").status.code(), 143);
    }
}
