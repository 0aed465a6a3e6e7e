//! `adapterctl adapters channels|promote|rollback|pin|deprecate|lineage|diff|export|import|gc` over adapterd's
//! HTTP API, and `adapterctl db migrate|status`, which runs the `adapterci-db` tool (adapterctl itself names no
//! database crate).

mod diff;
mod lineage;

use adapterci_api::{ChannelInfo, PeftImportRequest, PromoteBody, RollbackBody};
use serde::{Deserialize, Serialize};

use crate::cli::{AdapterRef, AdaptersCommand, DbCommand};
use crate::commands::Context;
use crate::exit::{CliError, ExitStatus};
use crate::output::Style;
use crate::render::{Cell, short_digest, table, timestamp};

pub use diff::{FieldChange, VersionDiff, diff_manifests, diff_table};
pub use lineage::{LineageView, ParentVersion, lineage_tree};

/// The files of a PEFT adapter folder, as adapterd exports them; the first marks the folder as one (PEFT reads it
/// first).
const PEFT_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// The file `adapters export --merged` writes: the merged model, named as Hugging Face names a single-file model.
const MERGED_FILE: &str = "model.safetensors";

/// What `adapters export` wrote.
#[derive(Debug, Serialize)]
struct ExportReport {
    adapter: String,
    version: u64,
    files: Vec<String>,
}

const LIST_HINT: &str = "list the adapters with `adapterctl get adapters`";

/// Runs one `adapters ...` command.
pub async fn adapters(context: &Context, command: AdaptersCommand) -> Result<ExitStatus, CliError> {
    match command {
        AdaptersCommand::Channels { name } => {
            let channels = context.client.list_channels(&name).await.map_err(not_found_hint)?;
            context.output.data(&channels, |style| channels_table(&channels, style))?;
        }
        AdaptersCommand::Promote { adapter, channel, allow_base_change } => {
            let version = resolve_version(context, &adapter).await?;
            let body = PromoteBody { version, allow_base_change };
            let info = context.client.promote(&adapter.name, &channel, &body).await.map_err(not_found_hint)?;
            print_channel(context, &info, "now serves")?;
        }
        AdaptersCommand::Rollback { name, channel, to } => {
            let info =
                context.client.rollback(&name, &channel, &RollbackBody { version: to }).await.map_err(|err| {
                    not_found_hint(err).with_hint(format!("see its channels: adapterctl adapters channels {name}"))
                })?;
            print_channel(context, &info, "rolled back to")?;
        }
        AdaptersCommand::Pin { name, channel, unpin } => {
            let info = context.client.pin(&name, &channel, !unpin).await.map_err(not_found_hint)?;
            print_channel(context, &info, if unpin { "unpinned at" } else { "pinned to" })?;
        }
        AdaptersCommand::Deprecate { adapter, undo } => {
            let Some(version) = adapter.version else {
                return Err(usage(format!("say which version to deprecate: {}@VERSION", adapter.name)));
            };
            let answer = context.client.deprecate(&adapter.name, version, !undo).await.map_err(not_found_hint)?;
            let state = if answer.deprecated { "deprecated" } else { "no longer deprecated" };
            context.output.data(&answer, |_| format!("{}@{} is {state}", answer.adapter, answer.version))?;
        }
        AdaptersCommand::Export { adapter, out, merged } => {
            let version = resolve_version(context, &adapter).await?;
            let written = if merged {
                std::fs::create_dir_all(&out)
                    .map_err(|error| CliError::new(format!("cannot create {}: {error}", out.display())))?;
                // As large as the base model in f32: streamed to disk, never held in memory.
                let download =
                    context.client.adapter_merged_model(&adapter.name, version).await.map_err(not_found_hint)?;
                let path = out.join(MERGED_FILE);
                crate::download::save(download, &path, &context.output).await?;
                vec![path.display().to_string()]
            } else {
                let mut files = Vec::new();
                for file in PEFT_FILES {
                    let bytes =
                        context.client.adapter_peft_file(&adapter.name, version, file).await.map_err(not_found_hint)?;
                    files.push((file, bytes));
                }
                // All fetched before anything is written; then written beside `out` and moved into it at once.
                crate::export_folder::save(&out, &files, &context.output).await?;
                PEFT_FILES.iter().map(|file| out.join(file).display().to_string()).collect()
            };
            let report = ExportReport { adapter: adapter.name.clone(), version, files: written };
            context.output.data(&report, |_| {
                let (adapter, version, files) = (&report.adapter, report.version, report.files.join(", "));
                if merged {
                    format!(
                        "{adapter}@{version} merged into the base model it was trained on: {files} (the whole model \
                         in f32 with Hugging Face Llama names; config.json and tokenizer are the base's)"
                    )
                } else {
                    format!("{adapter}@{version} exported for PEFT: {files}")
                }
            })?;
        }
        AdaptersCommand::Import { dir, name, base } => {
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read(&path).map_err(|error| CliError::new(format!("cannot read {}: {error}", path.display())))
            };
            let config = read(PEFT_FILES[0])?;
            let adapter_config = serde_json::from_slice(&config)
                .map_err(|error| CliError::new(format!("{}: not JSON: {error}", dir.join(PEFT_FILES[0]).display())))?;
            let request =
                PeftImportRequest { base, adapter_config, adapter_model_hex: hex::encode(read(PEFT_FILES[1])?) };
            let info = context.client.import_peft(&name, &request).await?;
            context
                .output
                .data(&info, |_| format!("published {}@{} from {}", info.name, info.version, dir.display()))?;
        }
        AdaptersCommand::Lineage { adapter } => {
            let view = lineage_view(context, &adapter).await?;
            context.output.data(&view, |_| lineage_tree(&view))?;
        }
        AdaptersCommand::Diff { a, b } => {
            let b = other_ref(&a, &b)?;
            let (a_version, b_version) = (resolve_version(context, &a).await?, resolve_version(context, &b).await?);
            let a_manifest = context.client.get_adapter_manifest(&a.name, a_version).await.map_err(not_found_hint)?;
            let b_manifest = context.client.get_adapter_manifest(&b.name, b_version).await.map_err(not_found_hint)?;
            let diff = VersionDiff {
                a: format!("{}@{a_version}", a.name),
                b: format!("{}@{b_version}", b.name),
                changes: diff_manifests(&a_manifest, &b_manifest),
            };
            context.output.data(&diff, |style| diff_table(&diff, style))?;
        }
        AdaptersCommand::Events { limit } => {
            let attempts = context.client.list_event_attempts(limit).await?;
            context.output.data(&attempts, |style| events_table(&attempts, style))?;
        }
        AdaptersCommand::Gc { grace_secs, keep_last } => {
            let report = context.client.collect_garbage(grace_secs, keep_last).await?;
            context.output.data(&report, |_| {
                let pruned = if report.pruned.is_empty() {
                    String::new()
                } else {
                    format!("removed versions {}; ", report.pruned.join(", "))
                };
                format!(
                    "{pruned}scanned {} blobs: {} referenced, {} unreferenced kept (younger than {grace_secs}s), {} deleted",
                    report.scanned,
                    report.referenced,
                    report.kept_young,
                    report.deleted.len()
                )
            })?;
        }
    }
    Ok(ExitStatus::Success)
}

fn usage(message: impl Into<String>) -> CliError {
    CliError { status: ExitStatus::Usage, ..CliError::new(message) }
}

fn not_found_hint(err: adapterci_api::ApiError) -> CliError {
    CliError::from(err).with_not_found_hint(LIST_HINT)
}

fn print_channel(context: &Context, info: &ChannelInfo, verb: &str) -> Result<(), CliError> {
    let pinned = if info.pinned { " (pinned)" } else { "" };
    context.output.data(info, |_| format!("{} {} {verb} v{}{pinned}", info.adapter, info.channel, info.version))
}

/// The table of `adapters channels`.
pub fn channels_table(channels: &[ChannelInfo], style: Style) -> String {
    let rows = channels
        .iter()
        .map(|channel| {
            vec![
                Cell::from(channel.channel.as_str()),
                Cell::from(channel.version.to_string()),
                Cell::from(if channel.pinned { "yes" } else { "no" }),
                Cell::from(short_digest(&channel.base_binding)),
                Cell::from(timestamp(&channel.updated_at)),
            ]
        })
        .collect();
    table(&["channel", "version", "pinned", "base", "updated"], rows, style)
}

/// The table of `adapters events`, newest first.
pub fn events_table(attempts: &[adapterci_api::EventAttemptInfo], style: Style) -> String {
    let rows = attempts
        .iter()
        .map(|attempt| {
            let outcome = match (&attempt.error, attempt.delivered) {
                (_, true) => Cell::painted("delivered", crate::output::Paint::Green),
                (Some(error), false) => Cell::painted(error.as_str(), crate::output::Paint::Red),
                (None, false) => Cell::painted("failed", crate::output::Paint::Red),
            };
            vec![
                Cell::from(timestamp(&attempt.at)),
                Cell::from(attempt.kind.as_str()),
                Cell::from(attempt.event_id.as_str()),
                Cell::from(attempt.endpoint.as_str()),
                Cell::from(attempt.attempt.to_string()),
                Cell::from(attempt.status.map_or_else(|| "-".to_string(), |status| status.to_string())),
                outcome,
            ]
        })
        .collect();
    table(&["at", "event", "id", "endpoint", "attempt", "status", "outcome"], rows, style)
}

/// `B` of `adapters diff`: `NAME@VERSION`, `NAME`, or `@VERSION` for another version of `A`'s adapter.
fn other_ref(a: &AdapterRef, b: &str) -> Result<AdapterRef, CliError> {
    let spelled = if b.starts_with('@') { format!("{}{b}", a.name) } else { b.to_string() };
    spelled.parse().map_err(usage)
}

/// The version `adapter` names, or its latest; unknown ones are named with the versions that exist.
async fn resolve_version(context: &Context, adapter: &AdapterRef) -> Result<u64, CliError> {
    let name = adapter.name.as_str();
    let versions = context.client.list_adapter_versions(name).await.map_err(not_found_hint)?;
    let known: Vec<u64> = versions.iter().map(|version| version.version).collect();
    match adapter.version {
        Some(version) if known.contains(&version) => Ok(version),
        Some(version) => {
            let listed: Vec<String> = known.iter().map(ToString::to_string).collect();
            Err(CliError::not_found(format!("adapter {name} has no version {version}"))
                .with_hint(format!("its versions are: {}", listed.join(", "))))
        }
        None => known
            .iter()
            .max()
            .copied()
            .ok_or_else(|| CliError::not_found(format!("adapter {name} has no published version"))),
    }
}

/// The version's lineage and the chain of earlier versions (their manifests are read one by one).
async fn lineage_view(context: &Context, adapter: &AdapterRef) -> Result<LineageView, CliError> {
    let version = resolve_version(context, adapter).await?;
    let name = adapter.name.as_str();
    let versions = context.client.list_adapter_versions(name).await.map_err(not_found_hint)?;
    let manifest = context.client.get_adapter_manifest(name, version).await.map_err(not_found_hint)?;
    let digest_of =
        |number: u64| versions.iter().find(|known| known.version == number).map(|known| known.manifest_digest.clone());
    let mut earlier: Vec<u64> = versions.iter().map(|known| known.version).filter(|v| *v < version).collect();
    earlier.sort_unstable_by(|a, b| b.cmp(a));
    let mut parents = Vec::new();
    for number in earlier {
        let parent = context.client.get_adapter_manifest(name, number).await.map_err(not_found_hint)?;
        parents.push(ParentVersion {
            version: number,
            manifest_digest: digest_of(number).unwrap_or_default(),
            dataset_digests: lineage::dataset_digests(&parent["lineage"]),
        });
    }
    Ok(LineageView {
        adapter: name.to_string(),
        version,
        manifest_digest: digest_of(version).unwrap_or_default(),
        lineage: manifest["lineage"].clone(),
        metrics: manifest["eval"].get("metrics").cloned(),
        parents,
    })
}

/// The `adapterci-db` tool's file name.
pub const DB_TOOL: &str = "adapterci-db";

/// One migration and whether the database has it, as the tool reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRow {
    pub name: String,
    pub applied: bool,
}

/// What the tool prints on stdout (one JSON object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbReport {
    /// The migrations applied by this call (`migrate` only).
    #[serde(default)]
    pub applied_now: Vec<String>,
    pub migrations: Vec<MigrationRow>,
}

/// Where the tool is: `$ADAPTERCI_DB_TOOL`, beside this executable, or the first `PATH` entry that has it.
fn locate_db_tool() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(crate::env_vars::ADAPTERCI_DB_TOOL) {
        return Some(std::path::PathBuf::from(path));
    }
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(DB_TOOL)));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Some(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(DB_TOOL)).find(|p| p.is_file()))
}

/// Runs `adapterci-db migrate|status`; the database URL goes in its environment, never on a command line.
pub async fn db(context: &Context, command: DbCommand) -> Result<ExitStatus, CliError> {
    let (action, args) = match command {
        DbCommand::Migrate(args) => ("migrate", args),
        DbCommand::Status(args) => ("status", args),
    };
    let Some(tool) = locate_db_tool() else {
        return Err(CliError::new(format!("{DB_TOOL} was not found beside adapterctl or on PATH")).with_hint(format!(
            "build it with `cargo build -p adapterci-store --bin {DB_TOOL}` (or set {} to its path)",
            crate::env_vars::ADAPTERCI_DB_TOOL
        )));
    };
    let output = tokio::process::Command::new(&tool)
        .arg(action)
        .env(crate::env_vars::ADAPTERCI_DATABASE_URL, &args.database)
        .output()
        .await
        .map_err(|err| CliError::new(format!("cannot run {}: {err}", tool.display())))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.trim().trim_start_matches("error: ");
        let reason = if reason.is_empty() { "it printed no reason" } else { reason };
        return Err(CliError::new(format!("{DB_TOOL} {action} failed: {reason}")));
    }
    let report: DbReport = serde_json::from_slice(&output.stdout)
        .map_err(|err| CliError::new(format!("{DB_TOOL} printed something that is not its report: {err}")))?;
    context.output.data(&report, |style| db_table(&report, style))?;
    Ok(ExitStatus::Success)
}

/// The table of `db migrate|status`.
pub fn db_table(report: &DbReport, style: Style) -> String {
    let rows = report
        .migrations
        .iter()
        .map(|migration| {
            let state = if report.applied_now.contains(&migration.name) {
                "applied now"
            } else if migration.applied {
                "applied"
            } else {
                "pending"
            };
            vec![Cell::from(migration.name.as_str()), Cell::from(state)]
        })
        .collect();
    table(&["migration", "state"], rows, style)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn event_attempts_show_their_outcome() {
        let attempt = |number: u32, status: Option<u16>, error: Option<&str>| adapterci_api::EventAttemptInfo {
            event_id: "e1".to_string(),
            kind: "promoted".to_string(),
            endpoint: "http://hooks/x".to_string(),
            attempt: number,
            status,
            delivered: error.is_none(),
            error: error.map(ToString::to_string),
            at: chrono::Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap(),
        };
        let text = events_table(
            &[attempt(2, Some(204), None), attempt(1, None, Some("connection refused"))],
            Style { color: false },
        );
        let lines: Vec<Vec<&str>> = text.lines().map(|line| line.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["AT", "EVENT", "ID", "ENDPOINT", "ATTEMPT", "STATUS", "OUTCOME"]);
        assert_eq!(lines[1][3..], ["promoted", "e1", "http://hooks/x", "2", "204", "delivered"]);
        assert_eq!(lines[2][7..], ["-", "connection", "refused"]);
    }
}
