//! Command-line arguments of `adapterci-base`.

use std::path::PathBuf;

use adapterci_core::training::BasePrecision;
use adapterci_engine::allocate::{Method, Sensitivity};
use adapterci_engine::palettize::Rotation;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build base releases: palettized base models with their accuracy-recovery adapters.
#[derive(Debug, Parser)]
#[command(name = "adapterci-base", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure each linear operation's sensitivity and choose 2 or 4 bits to meet the target; print the
    /// table, write analysis.json, analysis.txt and the chart analysis.svg
    Analyze(AnalyzeArgs),
    /// Write the palettized base (base.safetensors) with the analysis's bits, or uniform bits
    Palettize(PalettizeArgs),
    /// Train the accuracy-recovery adapter of a palettized base (recovery.safetensors, bound to the release)
    Recover(RecoverArgs),
    /// Score a palettized base, with or without its recovery adapter, against the source model
    Evaluate(EvaluateArgs),
    /// All of it: analyze, palettize, recover, evaluate; write the bundle and optionally publish it
    Release(ReleaseArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    /// CUDA when present, else the CPU
    Auto,
    Cpu,
    Cuda,
}

/// Options of the calibration and the palettization, shared by every command.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The source model (GGUF): the uncompressed teacher
    #[arg(long, value_name = "GGUF", env = "ADAPTERCI_BASE_MODEL")]
    pub model: PathBuf,
    /// Average bits per weight of the linear operations, tables and scales counted
    #[arg(long, default_value_t = 3.5)]
    pub target_bpw: f64,
    /// Rows sharing one lookup table at 4 bits
    #[arg(long, default_value_t = 32)]
    pub group_rows: usize,
    /// Rows sharing one lookup table at 2 bits
    #[arg(long, default_value_t = 8)]
    pub group_rows_2bit: usize,
    /// Plain k-means and nearest-entry indices (no activation weighting, no GPTQ compensation, no refit)
    #[arg(long)]
    pub naive: bool,
    /// Activation-weighted k-means with nearest-entry indices, without GPTQ's error compensation (the ablation
    /// that measures what GPTQ adds)
    #[arg(long)]
    pub no_gptq: bool,
    /// Rounds of least-squares refitting of the tables and row scales after GPTQ (0: none)
    #[arg(long, default_value_t = Method::default().refit_rounds)]
    pub refit_rounds: usize,
    /// Rounds of palettizing jointly with the recovery adapter's calibrated start (LoftQ's alternation under
    /// the statistics): the release alone moves further from the source, the release with its adapter's start
    /// closer (0: off)
    #[arg(long, default_value_t = 0)]
    pub low_rank_rounds: usize,
    /// Palettize each operation with its input channels rotated (random signs from this seed, then a DCT) and
    /// serve it rotated back: spreads large weights and loud channels over all columns; "off" palettizes the
    /// weights as they are
    #[arg(long, value_name = "SEED|off", default_value_t = RotationArg(Method::default().rotation),
          value_parser = rotation_arg)]
    pub rotation: RotationArg,
    /// Take each operation's input statistics layer by layer on the partly palettized model instead of all at
    /// once on the uncompressed one (slower; measured no better on SmolLM2-135M)
    #[arg(long)]
    pub sequential: bool,
    /// Your own text (natural text of your domain): the input statistics are taken on it beside the
    /// teacher's text, and the recovery adapter trains on it too
    #[arg(long, value_name = "FILE")]
    pub corpus: Option<PathBuf>,
    /// Teacher-written calibration sequences
    #[arg(long, default_value_t = 256)]
    pub teacher_seqs: usize,
    /// Tokens per calibration sequence
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Teacher sequences sampled together (default: 16 on the CPU, 256 on CUDA)
    #[arg(long)]
    pub teacher_batch: Option<usize>,
    /// Keep the teacher text in this directory and reuse it in later runs with the same model and teacher
    /// options (`palettize` then `recover` write it once)
    #[arg(long, value_name = "DIR")]
    pub teacher_cache: Option<PathBuf>,
    /// Calibration sequences the sensitivities are measured on
    #[arg(long, default_value_t = 2)]
    pub sens_seqs: usize,
    /// What an operation's sensitivity measures when the bits are allocated: the KL divergence with the
    /// operation alone at 2 bits (two-bit), or the same with the recovery adapter's calibrated start for that
    /// operation added, what the recovery is left to train away (corrected)
    #[arg(long, default_value = "corrected", value_parser = by_name::<Sensitivity>(&["two-bit", "corrected"]))]
    pub sensitivity: Sensitivity,
    /// Palettize the tied embedding too, to 4 or 8 bits
    #[arg(long, value_parser = clap::value_parser!(u8).range(4..=8))]
    pub embedding_bits: Option<u8>,
    /// Quantize linear inputs per token to this many bits when the release is served (recorded in it; the
    /// recovery adapter trains with it on)
    #[arg(long, value_parser = clap::value_parser!(u8).range(4..=8))]
    pub activation_bits: Option<u8>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// CPU threads (1 behaves best when the cores are shared)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long, default_value_t = 11)]
    pub seed: u64,
}

/// `--rotation`: a seed, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationArg(pub Option<Rotation>);

impl std::fmt::Display for RotationArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{}", r.seed),
            None => f.write_str("off"),
        }
    }
}

fn rotation_arg(value: &str) -> Result<RotationArg, String> {
    match value {
        "off" => Ok(RotationArg(None)),
        seed => seed
            .parse::<u64>()
            .map(|seed| RotationArg(Some(Rotation { seed })))
            .map_err(|_| format!("{seed:?} is neither a seed (an unsigned integer) nor \"off\"")),
    }
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Directory for analysis.json, analysis.txt, analysis.svg
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct PalettizeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// analysis.json from `analyze` (its bits); without it the analysis runs first, and each input's rotated
    /// statistics it makes are kept for the palettization (as much memory again as the input statistics) rather
    /// than made again
    #[arg(long, value_name = "FILE", conflicts_with_all = ["uniform_bits", "arbitrary_seed"])]
    pub analysis: Option<PathBuf>,
    /// Every operation at these bits instead of an allocation
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=8), conflicts_with = "arbitrary_seed")]
    pub uniform_bits: Option<u8>,
    /// Pick the operations at 2 bits at random (drawn from this seed) instead of by sensitivity, meeting
    /// --target-bpw as closely as the sensitivity allocation does: the control it is measured against (no
    /// sensitivities are measured)
    #[arg(long, value_name = "SEED")]
    pub arbitrary_seed: Option<u64>,
}

/// Options of recovery training.
#[derive(Debug, Args)]
pub struct RecoveryArgs {
    /// At most this many steps
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Stop after this many minutes (the schedule is fitted to the budget)
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Sequences per step
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,
    /// Share of the recovery sequences drawn from --corpus: all of the corpus is used, and the corpus (when
    /// smaller) or the teacher text (when the corpus is larger) is repeated to reach it; default: each
    /// sequence once
    #[arg(long, value_name = "FRACTION", requires = "corpus")]
    pub corpus_share: Option<f64>,
    /// Checkpoint every N steps into --checkpoint-dir; a rerun with the same options resumes from it
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Where recovery checkpoints go. `release` keeps each palettization's in a folder of its own under DIR
    /// (named by the palettized base, the recovery spec and the text the recovery trains on), so a rerun resumes
    /// only a recovery of the same base on the same text (other --corpus, --corpus-share or --eval-text start
    /// afresh, and say why), and keeps the palettized base (DIR/palettized) and, without --teacher-cache, the
    /// teacher text (DIR/teacher-cache) there too, so a rerun with the same inputs skips calibration and
    /// palettization.
    /// Once a release has succeeded, `release` removes its own checkpoints (its recovery is done), those of
    /// the same palettized base and spec left by a build from before the text named the folder (never
    /// resumed), and the palettized bases of other inputs, one line per file with the space freed; it keeps
    /// this palettized base, the teacher text and other builds' checkpoints, and never removes a file it did
    /// not write (an old checkpoint folder holding anything else is left whole, and it says so).
    /// `recover` uses DIR itself (its release is given), and refuses a checkpoint there made on other text
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Train the palettes' table entries and row scales with the adapter at this peak learning rate (same
    /// bits; `recover` then also writes the release with the trained tables as base.safetensors)
    #[arg(long, value_name = "RATE")]
    pub palette_learning_rate: Option<f64>,
    /// Start the recovery adapter at zero (LoRA's standard start) instead of at each operation's best low-rank
    /// correction of its palettization error under the calibration statistics
    #[arg(long)]
    pub zero_init: bool,
    /// Precision of both models' frozen matmuls in recovery training (the adapter, norms, attention, the KL and
    /// the optimizer stay f32): default bf16 on a CPU with AVX-512 BF16, where a step runs ~1.6x faster at the
    /// same recovery, else f32
    #[arg(long, value_parser = by_name::<BasePrecision>(&["f32", "bf16"]))]
    pub precision: Option<BasePrecision>,
    /// Hold this many sequences of the teacher text and of --corpus out of training (at most a tenth of
    /// each) and score the adapter on them against the uncompressed model (KL, cross-entropy, top-1): the
    /// gap to the training batches' KL says whether more steps or more distinct text would help; 0: none
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub validation_seqs: usize,
    /// Score the held-out sequences every N steps (and before the first and after the last); 0: only then
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub validate_every: usize,
}

/// A parser for a value spelled by its serde name, as in the config files and the reports (one spelling
/// everywhere), which lists `names` in the help and in its error.
fn by_name<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names)
        .try_map(|name| serde_json::from_value::<T>(serde_json::Value::String(name)).map_err(|e| e.to_string()))
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The palettized base from `palettize`
    #[arg(long, value_name = "FILE")]
    pub release: PathBuf,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The source model (GGUF)
    #[arg(long, value_name = "GGUF", env = "ADAPTERCI_BASE_MODEL")]
    pub model: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub release: PathBuf,
    /// The release's recovery adapter (refused when it was trained for another release)
    #[arg(long, value_name = "FILE")]
    pub recovery: Option<PathBuf>,
    /// Held-out text to score on (256-token chunks)
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Also write the scored token chunks and the source model's top-1 id at each position here (JSON
    /// `{"chunks", "teacher_top1"}`), for scoring other quantizers on the same tokens
    /// (`scripts/bench/llama_cpp_quants.py --tokens`)
    #[arg(long, value_name = "FILE")]
    pub tokens_out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub recovery: RecoveryArgs,
    /// Held-out text for the report (else teacher text held out of recovery)
    #[arg(long, value_name = "FILE")]
    pub eval_text: Option<PathBuf>,
    /// Publish the bundle to the registry under this name (e.g. base-smollm2-135m)
    #[arg(long, value_name = "NAME")]
    pub publish: Option<String>,
    /// adapterd's data directory (SQLite metadata and local registry) to publish into
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Metadata store URL (overrides --data-dir's SQLite)
    #[arg(long, value_name = "URL", env = "ADAPTERCI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Registry URL (overrides --data-dir's local registry)
    #[arg(long, value_name = "URL", env = "ADAPTERCI_REGISTRY_URL")]
    pub registry_url: Option<String>,
}
