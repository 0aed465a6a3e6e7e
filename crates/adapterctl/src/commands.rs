//! One function per command; [`run`] dispatches to them. Each returns the exit status or a [`CliError`].

mod apply;
pub mod base;
mod dataset;
mod describe;
mod generate;
mod get;
pub mod registry;
mod run_logs;
mod run_metrics;
mod runs;

use adapterci_api::ApiClient;

use crate::cli::{Cli, Command, DatasetCommand, DescribeCommand, GetCommand, RunsCommand};
use crate::exit::{CliError, ExitStatus};
use crate::output::Output;

pub use apply::outcome_of;
pub use dataset::check_location;

/// What every command gets: the client and the output streams.
pub struct Context {
    pub client: ApiClient,
    pub output: Output,
}

/// Runs the parsed command.
pub async fn run(cli: Cli, output: Output) -> Result<ExitStatus, CliError> {
    let client = ApiClient::new(&cli.global.server).map_err(|err| {
        CliError { status: ExitStatus::Usage, ..CliError::new(err.to_string()) }
            .with_hint("the server url looks like http://127.0.0.1:8080")
    })?;
    let context = Context { client, output };
    match cli.command {
        Command::Apply(args) => apply::apply(&context, &args).await,
        Command::Get(GetCommand::Pipelines) => get::pipelines(&context).await,
        Command::Get(GetCommand::Runs(args)) => get::runs(&context, &args).await,
        Command::Get(GetCommand::Adapters) => get::adapters(&context).await,
        Command::Describe(DescribeCommand::Run { id }) => describe::run(&context, &id).await,
        Command::Describe(DescribeCommand::Adapter { adapter }) => describe::adapter(&context, &adapter).await,
        Command::Trigger(args) => runs::trigger(&context, &args).await,
        Command::Runs(RunsCommand::Wait { id }) => runs::wait(&context, &id).await,
        Command::Runs(RunsCommand::Cancel { id }) => runs::cancel(&context, &id).await,
        Command::Runs(RunsCommand::Logs { id, follow }) | Command::Logs { id, follow } => {
            run_logs::logs(&context, &id, follow).await
        }
        Command::Runs(RunsCommand::Metrics { id, svg }) => run_metrics::metrics(&context, &id, svg.as_deref()).await,
        Command::Dataset(DatasetCommand::Push { file, location }) => dataset::push(&context, &file, &location).await,
        Command::Generate(args) => generate::generate(&context, &args).await,
        Command::Models => get::models(&context).await,
        Command::Base(args) => base::run(&args.args).await,
        Command::Adapters(command) => registry::adapters(&context, command).await,
        Command::Db(command) => registry::db(&context, command).await,
    }
}
