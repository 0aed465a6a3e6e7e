//! The `adapterd` binary: parses flags, sets up logging, runs the server until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use adapterci_server::{ServerConfig, env_vars, start};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // `adapterd train-job DIR` or `--staged URL --run ID`: one training job, in the process executor's child or a
    // Kubernetes executor's pod
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == adapterci_server::process_launcher::TRAIN_JOB_COMMAND) {
        let filter = EnvFilter::try_from_env(env_vars::ADAPTERCI_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
        if let Some(threads) = std::env::var(env_vars::ADAPTERCI_THREADS).ok().and_then(|t| t.parse().ok()) {
            adapterci_engine::device::set_threads(threads);
        }
        let args = std::iter::once(std::ffi::OsString::from("adapterd train-job")).chain(args);
        return match adapterci_server::trainer::TrainJobArgs::try_parse_from(args) {
            Ok(args) => adapterci_server::trainer::main(args),
            Err(error) => {
                let _ = error.print();
                // 2 means "failure written" to the executors: a usage error is one of the job's own (1)
                if error.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
        };
    }
    let config = ServerConfig::parse();
    let filter = EnvFilter::try_from_env(env_vars::ADAPTERCI_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match start(config).await {
            Ok(server) => server,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = server.shutdown_sender();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown.send(true);
        });
        server.wait().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
