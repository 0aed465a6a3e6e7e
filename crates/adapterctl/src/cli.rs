//! The command line, as clap derive types. Help texts here are also the reference in `docs/reference/cli.md`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use crate::env_vars;
use crate::output::OutputFormat;

/// The server adapterctl talks to when neither `--server` nor `ADAPTERCI_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Drive adapterd: apply pipelines, trigger and follow runs, inspect adapters, generate text.
///
/// Data goes to stdout, progress and errors to stderr. Exit codes: 0 ok, 1 error (or a run that failed),
/// 2 usage, 3 a gate rejected the run's adapter, 4 not found, 130 interrupted by ctrl-c (143 by SIGTERM).
#[derive(Debug, Parser)]
#[command(name = "adapterctl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// URL of the adapterd server
    #[arg(long, global = true, value_name = "URL", env = env_vars::ADAPTERCI_SERVER, hide_env_values = true,
          default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Output format of the data printed on stdout
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Never color the output (color is also off when NO_COLOR is set or the output is not a terminal)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update a pipeline from its YAML file (validated here first)
    Apply(ApplyArgs),
    /// List pipelines, runs or adapters
    #[command(subcommand)]
    Get(GetCommand),
    /// Show one run or one adapter version in detail
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// Start a run of a pipeline now
    Trigger(TriggerArgs),
    /// Work with existing runs
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Upload datasets
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Generate text with the base model or an adapter
    Generate(GenerateArgs),
    /// List the models adapterd serves (the base model and each served adapter)
    Models,
    /// Build base releases on this machine: palettize, analyze, recover, evaluate, release (runs the
    /// adapterci-base tool; `adapterctl base --help` lists its commands)
    #[command(disable_help_flag = true)]
    Base(BaseArgs),
    /// Manage published adapters: channels (promote, rollback, pin), deprecation, lineage, diffs, garbage
    /// collection
    #[command(subcommand)]
    Adapters(AdaptersCommand),
    /// The metadata database: apply pending migrations or show which are applied (runs the adapterci-db tool)
    #[command(subcommand)]
    Db(DbCommand),
    /// Print a run's training log; with -f, follow it until the run ends (the same as `runs logs`)
    Logs {
        /// The run id
        id: String,
        /// Keep printing what the log gains until the run ends
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The pipeline YAML file
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// List pipelines
    #[command(alias = "pipeline")]
    Pipelines,
    /// List runs, newest first
    #[command(alias = "run")]
    Runs(GetRunsArgs),
    /// List adapters with their latest and served versions
    #[command(alias = "adapter")]
    Adapters,
}

#[derive(Debug, Args)]
pub struct GetRunsArgs {
    /// Only runs of this pipeline
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// At most this many runs
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum DescribeCommand {
    /// A run: state, stage, trigger, timings, progress, metrics, gates and samples
    Run {
        /// The run id
        id: String,
    },
    /// An adapter version: configuration, lineage, files, eval report and the list of versions
    Adapter {
        /// The adapter, optionally with a version: NAME or NAME@VERSION (the latest version by default)
        #[arg(value_name = "NAME[@VERSION]")]
        adapter: AdapterRef,
    },
}

/// `name` or `name@version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterRef {
    pub name: String,
    pub version: Option<u64>,
}

impl FromStr for AdapterRef {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (name, version) = match value.split_once('@') {
            None => (value, None),
            Some((name, version)) => {
                let version = version
                    .parse::<u64>()
                    .map_err(|_| format!("the version after @ must be a number, like {name}@3, got {version:?}"))?;
                (name, Some(version))
            }
        };
        if name.is_empty() {
            return Err("the adapter name is empty".to_string());
        }
        Ok(AdapterRef { name: name.to_string(), version })
    }
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The pipeline to run
    pub pipeline: String,
    /// Follow the run until it ends, then describe it; the exit code tells the outcome
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// Follow a run until it ends, then describe it; the exit code tells the outcome
    Wait {
        /// The run id
        id: String,
    },
    /// Cancel a queued or running run (its training is stopped; nothing is published)
    Cancel {
        /// The run id
        id: String,
    },
    /// Print a run's training log (runs trained in child processes); with -f, follow it until the run ends
    Logs {
        /// The run id
        id: String,
        /// Keep printing what the log gains until the run ends
        #[arg(short, long)]
        follow: bool,
    },
    /// Show a run's per-step training metrics (loss, learning rate, tokens, tokens/s)
    Metrics {
        /// The run id
        id: String,
        /// Also draw the loss curve as an SVG image into this file
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Upload a dataset file (JSONL) to a location pipelines can name
    Push {
        /// The file to upload
        file: PathBuf,
        /// The location key, like datasets/support/train.jsonl
        #[arg(long, value_name = "KEY")]
        location: String,
    },
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The adapter to answer with (the base model alone when absent)
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Complete the prompt as raw text instead of as one user message of a chat
    #[arg(long)]
    pub raw: bool,
    /// The most tokens to generate
    #[arg(long, value_name = "N", default_value_t = adapterci_api::inference::DEFAULT_MAX_TOKENS)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy
    #[arg(long, value_name = "T", default_value_t = adapterci_api::inference::DEFAULT_TEMPERATURE,
          value_parser = parse_temperature)]
    pub temperature: f64,
    /// Seed of the sampler, for repeatable sampling
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// The prompt; `-` reads it from stdin
    pub prompt: String,
}

fn parse_temperature(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(temperature) if temperature.is_finite() && temperature >= 0.0 => Ok(temperature),
        _ => Err(format!("expected a number of 0 or more, got {value:?}")),
    }
}

#[derive(Debug, Args)]
pub struct BaseArgs {
    /// analyze | palettize | recover | evaluate | release, and their options (see `adapterctl base --help`)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// The channel a command acts on when `--channel` is not given.
pub const DEFAULT_CHANNEL: &str = "stable";

#[derive(Debug, Subcommand)]
pub enum AdaptersCommand {
    /// List an adapter's channels and the versions they serve
    Channels {
        /// The adapter
        name: String,
    },
    /// Point a channel at a version (the latest when no @VERSION is given)
    Promote {
        /// The adapter and the version to serve: NAME or NAME@VERSION
        #[arg(value_name = "NAME[@VERSION]")]
        adapter: AdapterRef,
        /// The channel to move
        #[arg(long, default_value = DEFAULT_CHANNEL)]
        channel: String,
        /// Allow the channel to move to a version trained for another base
        #[arg(long)]
        allow_base_change: bool,
    },
    /// Point a channel back at the version it served before, or at `--to VERSION`
    Rollback {
        /// The adapter
        name: String,
        /// The channel to move back
        #[arg(long, default_value = DEFAULT_CHANNEL)]
        channel: String,
        /// Roll back to this version instead of the previous one
        #[arg(long, value_name = "VERSION")]
        to: Option<u64>,
    },
    /// Pin a channel to its version: promotions and rollbacks are refused until it is unpinned
    Pin {
        /// The adapter
        name: String,
        /// The channel to pin
        #[arg(long, default_value = DEFAULT_CHANNEL)]
        channel: String,
        /// Unpin instead
        #[arg(long)]
        unpin: bool,
    },
    /// Mark a version deprecated: it can no longer be promoted or rolled back to
    Deprecate {
        /// The version: NAME@VERSION
        #[arg(value_name = "NAME@VERSION")]
        adapter: AdapterRef,
        /// Lift the deprecation instead
        #[arg(long)]
        undo: bool,
    },
    /// Print a version's lineage as a tree: base model and release, initial adapter, parent versions,
    /// datasets, pipeline, run, code version and eval
    Lineage {
        /// The adapter, optionally with a version (the latest by default)
        #[arg(value_name = "NAME[@VERSION]")]
        adapter: AdapterRef,
    },
    /// Show what changed between two versions: configuration, files, lineage (base, datasets, pipeline) and
    /// eval metrics
    Diff {
        /// The first version: NAME@VERSION (NAME alone is the latest)
        #[arg(value_name = "A")]
        a: AdapterRef,
        /// The second version: NAME@VERSION, or @VERSION for another version of the same adapter
        #[arg(value_name = "B")]
        b: String,
    },
    /// Write a version as Hugging Face PEFT saves adapters (adapter_config.json and adapter_model.safetensors, PEFT's
    /// key names), ready for `PeftModel.from_pretrained(base, DIR)`; with --merged, the base model it was trained
    /// on with the adapter merged into its weights (model.safetensors)
    Export {
        /// The adapter, optionally with a version (the latest by default)
        #[arg(value_name = "NAME[@VERSION]")]
        adapter: AdapterRef,
        /// The folder to write the files into (created if missing). The PEFT files are written to DIR.partial
        /// beside it first and moved into DIR only when both are complete; other files in DIR are kept
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Write DIR/model.safetensors instead: the whole base model with the adapter merged in (W + scale * B A),
        /// f32 with Hugging Face Llama names, as PEFT's merge_and_unload() then save_pretrained() give; the
        /// model's config.json and tokenizer are the base's. It is downloaded to DIR/model.safetensors.partial
        /// (progress on stderr) and renamed only when complete
        #[arg(long)]
        merged: bool,
    },
    /// Publish a Hugging Face PEFT adapter folder (adapter_config.json + adapter_model.safetensors) as the next
    /// version of an adapter, bound to a model of adapterd's catalog
    Import {
        /// The PEFT adapter folder
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The adapter to publish it as
        #[arg(long)]
        name: String,
        /// The catalog model it was trained on
        #[arg(long, value_name = "MODEL")]
        base: String,
    },
    /// List the newest outbound event deliveries (webhooks on publish, promote, rollback) and their outcome
    Events {
        /// At most this many attempts
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
    /// Delete registry blobs that no version references (mark and sweep; a publish in progress is safe)
    Gc {
        /// Keep unreferenced blobs younger than this many seconds
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        grace_secs: u64,
        /// Retention: first remove each adapter's versions beyond the newest N that no channel or tag references
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        keep_last: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply every pending migration
    Migrate(DbArgs),
    /// List every migration this build knows and whether the database has it
    Status(DbArgs),
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// The database: sqlite://PATH?mode=rwc or postgres://USER:PASSWORD@HOST/DB
    #[arg(long, value_name = "URL", env = env_vars::ADAPTERCI_DATABASE_URL, hide_env_values = true)]
    pub database: String,
}
