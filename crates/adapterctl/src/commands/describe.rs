//! `describe run ID` and `describe adapter NAME[@VERSION]`.

use crate::cli::AdapterRef;
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::render::adapter::{AdapterDescription, adapter_detail};
use crate::render::run::run_detail;

pub async fn run(context: &Context, id: &str) -> Result<ExitStatus, CliError> {
    let run = context
        .client
        .get_run(id)
        .await
        .map_err(|err| CliError::from(err).with_not_found_hint("list the runs with `adapterctl get runs`"))?;
    context.output.data(&run, |style| run_detail(&run, style))?;
    Ok(ExitStatus::Success)
}

pub async fn adapter(context: &Context, adapter: &AdapterRef) -> Result<ExitStatus, CliError> {
    let name = adapter.name.as_str();
    let list_hint = "list the adapters with `adapterctl get adapters`";
    let mut versions = context
        .client
        .list_adapter_versions(name)
        .await
        .map_err(|err| CliError::from(err).with_not_found_hint(list_hint))?;
    versions.sort_by_key(|version| std::cmp::Reverse(version.version));
    let version = match adapter.version {
        Some(version) if versions.iter().any(|known| known.version == version) => version,
        Some(version) => {
            let known: Vec<String> = versions.iter().map(|known| known.version.to_string()).collect();
            return Err(CliError::not_found(format!("adapter {name} has no version {version}"))
                .with_hint(format!("its versions are: {}", known.join(", "))));
        }
        None => match versions.first() {
            Some(latest) => latest.version,
            None => return Err(CliError::not_found(format!("adapter {name} has no published version"))),
        },
    };
    let manifest = context.client.get_adapter_manifest(name, version).await?;
    let served_version = context
        .client
        .list_adapters()
        .await?
        .into_iter()
        .find(|info| info.name == name)
        .and_then(|info| info.served_version);
    let description = AdapterDescription { name: name.to_string(), version, served_version, versions, manifest };
    context.output.data(&description, |style| adapter_detail(&description, style))?;
    Ok(ExitStatus::Success)
}
