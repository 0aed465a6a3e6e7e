//! What each `adapterci-base` command does.

use std::path::Path;
use std::sync::Arc;

use adapterci_core::manifest::Lineage;
use adapterci_core::ports::{AdapterRegistry, PublishRequest};
use adapterci_core::training::InitialAdapterRef;
use adapterci_core::{AdapterName, Digest};
use adapterci_engine::allocate::{BitAnalysis, Method, arbitrary_bits, average_bpw, linear_ops};
use adapterci_engine::calibrate::{TeacherTextSpec, chunk_tokens, compare, top1_ids};
use adapterci_engine::device::{DeviceChoice, set_threads};
use adapterci_engine::model::BaseModel;
use adapterci_engine::recover::{RecoveryProgress, RecoveryReport, RecoverySpec, ValidationPoint, recover_palettized};
use adapterci_engine::release::{BaseRelease, bind_recovery_adapter, check_recovery_adapter};
use adapterci_engine::release_build::{
    BuildOptions, BuiltRelease, analyze, build_release, calibrate, keep_what_analysis_and_palettization_share,
    palettize_model, recovery_precision, recovery_text, release_file, remove_other_palettized_bases,
    remove_recovery_checkpoints,
};
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Cli, Command, CommonArgs, DeviceArg, RecoveryArgs};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Analyze(args) => {
            let base = load_base(&args.common.model, args.common.device, args.common.threads)?;
            let options = options(&args.common, None, &base);
            let corpus = read(&args.common.corpus)?;
            let calibrated = calibrate(&base, &options, corpus.as_deref(), &mut note)?;
            let analysis = analyze(&base, &calibrated, &options, &mut note)?;
            write_analysis(&args.out, &analysis)?;
            print!("{}", analysis.to_table());
            eprintln!("wrote {}/analysis.json, analysis.txt and analysis.svg", args.out.display());
            Ok(())
        }
        Command::Palettize(args) => {
            let base = load_base(&args.common.model, args.common.device, args.common.threads)?;
            let options = options(&args.common, None, &base);
            let corpus = read(&args.common.corpus)?;
            let mut calibrated = calibrate(&base, &options, corpus.as_deref(), &mut note)?;
            let ops = linear_ops(base.config());
            let bits: Vec<u8> = match (&args.analysis, args.uniform_bits, args.arbitrary_seed) {
                (_, Some(b), _) => vec![b; ops.len()],
                (_, None, Some(seed)) => {
                    let bits = arbitrary_bits(&ops, options.method, options.target_bpw, seed)?;
                    note(&format!(
                        "arbitrary allocation (seed {seed}): {} of {} operations at 2 bits, {:.4} bits per weight",
                        bits.iter().filter(|&&b| b == 2).count(),
                        ops.len(),
                        average_bpw(&ops, &bits, options.method)
                    ));
                    bits
                }
                (Some(path), None, None) => {
                    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                    let analysis: BitAnalysis = serde_json::from_slice(&text)
                        .with_context(|| format!("{}: not an analysis.json written by `analyze`", path.display()))?;
                    if analysis.rows.len() != ops.len() {
                        bail!(
                            "{}: {} operations, but {} has {}",
                            path.display(),
                            analysis.rows.len(),
                            args.common.model.display(),
                            ops.len()
                        );
                    }
                    analysis.rows.iter().map(|r| r.bits).collect()
                }
                (None, None, None) => {
                    // the sensitivities, then the release, palettize every operation under its input's rotated
                    // statistics: each input's made once for both (and its square root, when both solve with it)
                    keep_what_analysis_and_palettization_share(&mut calibrated, &options);
                    let analysis = analyze(&base, &calibrated, &options, &mut note)?;
                    write_analysis(&args.out, &analysis)?;
                    analysis.rows.iter().map(|r| r.bits).collect()
                }
            };
            let (linear, embedding, _) = palettize_model(&base, &calibrated, &bits, &options)?;
            // the statistics, and what was kept of them, are done with
            drop(calibrated);
            let bytes = release_file(&base, &options, linear, embedding)?;
            let path = args.out.join("base.safetensors");
            write_file(&path, &bytes)?;
            let release = BaseRelease::read(&bytes, &path)?;
            println!(
                "{}: {:.4} bits per weight on the linear operations, {:.4} on the whole model, {} bytes, {}",
                path.display(),
                release.manifest.linear_bpw,
                release.manifest.whole_model_bpw,
                bytes.len(),
                Digest::of(&bytes)
            );
            Ok(())
        }
        Command::Recover(args) => {
            let base = load_base(&args.common.model, args.common.device, args.common.threads)?;
            let (release, release_digest) = BaseRelease::open(&args.release)?;
            check_source(&release, &base, &args.release)?;
            let student = release.to_llama(base.llama().device(), &args.release)?;
            let options = options(&args.common, Some(&args.recovery), &base);
            let corpus = read(&args.common.corpus)?;
            let calibrated = calibrate(&base, &options, corpus.as_deref(), &mut note)?;
            let text = recovery_text(
                &base,
                &calibrated.sequences,
                corpus.as_deref(),
                options.teacher.seq_len,
                options.user_corpus_share,
                options.recovery.validation_sequences,
            )?;
            note(&text.describe(options.teacher.seq_len));
            let parts = release.linear_parts(&args.release)?;
            let mut progress = Progress::new(options.recovery.steps);
            let done = recover_palettized(
                base.llama(),
                &student,
                &parts,
                Some(&calibrated.hessians),
                &text,
                &options.recovery,
                &mut |p| progress.tick(p),
            )?;
            progress.bar.finish();
            let report = done.report;
            // trained palettes make a new release (same bits, new tables and scales); the adapter is bound to it
            let release_digest = if options.recovery.palette_learning_rate.is_some() {
                let kept = BuildOptions {
                    method: release.manifest.method,
                    activation_bits: release.manifest.activation_bits,
                    ..options.clone()
                };
                let bytes = release_file(&base, &kept, done.palettes, release.embedding_part().cloned())?;
                let path = args.out.join("base.safetensors");
                write_file(&path, &bytes)?;
                println!("{}: the release with the trained tables and row scales", path.display());
                Digest::of(&bytes)
            } else {
                release_digest
            };
            let bytes = bind_recovery_adapter(&done.lora.to_safetensors()?, &release_digest)?;
            write_file(&args.out.join("recovery.safetensors"), &bytes)?;
            write_file(&args.out.join("recovery.json"), &serde_json::to_vec_pretty(&report)?)?;
            println!(
                "{}: {} steps in {:.0}s on {} ({} matmuls), KL {:.4} -> {:.4}",
                args.out.join("recovery.safetensors").display(),
                report.steps,
                report.seconds,
                report.device,
                report.base_precision.name(),
                report.kl_curve.first().map_or(f64::NAN, |p| p.1),
                report.kl_curve.last().map_or(f64::NAN, |p| p.1)
            );
            for point in report.final_validation() {
                println!("  held-out {}", describe_validation(point));
            }
            warn_if_budget_ran_short(&report);
            Ok(())
        }
        Command::Evaluate(args) => {
            let base = load_base(&args.model, args.device, args.threads)?;
            let (release, release_digest) = BaseRelease::open(&args.release)?;
            check_source(&release, &base, &args.release)?;
            let student = release.to_llama(base.llama().device(), &args.release)?;
            let lora = match &args.recovery {
                Some(path) => {
                    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                    check_recovery_adapter(&bytes, &release_digest).with_context(|| path.display().to_string())?;
                    Some(base.load_adapter(&bytes).with_context(|| path.display().to_string())?)
                }
                None => None,
            };
            let text =
                std::fs::read_to_string(&args.text).with_context(|| format!("reading {}", args.text.display()))?;
            let chunks = chunk_tokens(base.tokenizer(), &text, 256);
            if chunks.is_empty() {
                bail!("{}: shorter than one 256-token chunk", args.text.display());
            }
            let llama = base.llama();
            if let Some(path) = &args.tokens_out {
                let top1 = top1_ids(llama, &chunks)?;
                let json = serde_json::json!({ "chunks": chunks, "teacher_top1": top1 });
                write_file(path, &serde_json::to_vec(&json)?)?;
            }
            let rows = [
                ("uncompressed", compare(llama, llama, None, &chunks, 2)?),
                ("palettized", compare(llama, &student, None, &chunks, 2)?),
            ];
            println!("{:<34} {:>10} {:>9} {:>7} {:>8}", "model", "perplexity", "mean CE", "top-1", "KL");
            for (name, a) in rows.iter().chain(
                lora.as_ref()
                    .map(|l| ("palettized + recovery adapter", compare(llama, &student, Some(l.lora()), &chunks, 2)))
                    .into_iter()
                    .map(|(n, r)| r.map(|a| (n, a)))
                    .collect::<Result<Vec<_>, _>>()?
                    .iter(),
            ) {
                println!(
                    "{name:<34} {:>10.2} {:>9.4} {:>7.3} {:>8.4}",
                    a.perplexity, a.cross_entropy, a.top1_agreement, a.kl_divergence
                );
            }
            println!(
                "{} positions; linear {:.4} bpw, whole model {:.4} bpw",
                rows[0].1.positions, release.manifest.linear_bpw, release.manifest.whole_model_bpw
            );
            Ok(())
        }
        Command::Release(args) => {
            let base = load_base(&args.common.model, args.common.device, args.common.threads)?;
            let mut options = options(&args.common, Some(&args.recovery), &base);
            if let Some(dir) = &args.recovery.checkpoint_dir {
                keep_build_state(&mut options, dir);
            }
            let (eval_text, corpus) = (read(&args.eval_text)?, read(&args.common.corpus)?);
            let mut progress = Progress::new(options.recovery.steps);
            let built = build_release(&base, &options, eval_text.as_deref(), corpus.as_deref(), &mut note, &mut |p| {
                progress.tick(p)
            })?;
            progress.bar.finish();
            warn_if_budget_ran_short(&built.report.recovery);
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            write_file(&args.out.join("base.safetensors"), &built.release)?;
            write_file(&args.out.join("recovery.safetensors"), &built.recovery_adapter)?;
            write_file(&args.out.join("report.json"), &serde_json::to_vec_pretty(&built.report)?)?;
            write_analysis(&args.out, &built.report.analysis)?;
            let r = &built.report;
            println!(
                "base release {} ({:.4} bpw linear, {:.4} whole model)",
                r.release_digest, r.linear_bpw, r.whole_model_bpw
            );
            println!(
                "  uncompressed perplexity {:.2}, palettized {:.2}, with recovery adapter {:.2} (recovery fraction {:.3})",
                r.uncompressed.perplexity, r.palettized.perplexity, r.recovered.perplexity, r.recovery_fraction
            );
            for point in r.recovery.final_validation() {
                println!("  held-out {}", describe_validation(point));
            }
            println!("  written to {}", args.out.display());
            if let Some(name) = &args.publish {
                let version = publish(&args, name, &base, &built)?;
                println!("  published {name} version {version}");
            }
            if args.recovery.checkpoint_dir.is_some() {
                remove_finished_build_state(&base, &options, corpus.as_deref(), &built)?;
            }
            Ok(())
        }
    }
}

fn note(message: &str) {
    eprintln!("{message}");
}

/// Recovery progress: a bar on a terminal; a plain line every 15 seconds (and at the end) when stderr is a log.
struct Progress {
    bar: ProgressBar,
    last_line: Option<f64>,
    /// The step the last plain line was about (validations before the first step and after the last arrive as
    /// progress of their own: no step line for them).
    last_step: usize,
}

impl Progress {
    fn new(steps: usize) -> Progress {
        let bar = ProgressBar::new(steps as u64);
        if let Ok(style) = ProgressStyle::with_template("recovery [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar, last_line: None, last_step: 0 }
    }

    fn tick(&mut self, p: &RecoveryProgress) {
        for point in &p.validation {
            let line = format!("recovery validation at step {}: {}", point.step, describe_validation(point));
            // a hidden bar prints nothing
            if self.bar.is_hidden() { eprintln!("{line}") } else { self.bar.println(line) }
        }
        self.bar.set_length(p.total_steps as u64);
        self.bar.set_position(p.step as u64);
        if p.kl.is_finite() {
            // (the scores before the first step come without a batch KL)
            self.bar.set_message(format!("KL {:.4} lr {:.1e}", p.kl, p.learning_rate));
        }
        let due = self.last_line.is_none_or(|t| p.elapsed_seconds - t >= 15.0) || p.step == p.total_steps;
        if self.bar.is_hidden() && due && p.step > self.last_step {
            eprintln!(
                "recovery step {}/{} KL {:.4} lr {:.2e} {:.0}s",
                p.step, p.total_steps, p.kl, p.learning_rate, p.elapsed_seconds
            );
            self.last_line = Some(p.elapsed_seconds);
            self.last_step = p.step;
        }
    }
}

fn describe_validation(point: &ValidationPoint) -> String {
    format!("{}: KL {:.4}, CE {:.4}, top-1 {:.3}", point.set, point.kl, point.cross_entropy, point.top1_agreement)
}

/// A time budget that the calibrated start and the first steps used up leaves an adapter barely trained: say so.
fn warn_if_budget_ran_short(report: &RecoveryReport) {
    if report.stopped_by_time && report.steps < MIN_USEFUL_STEPS {
        eprintln!(
            "warning: the time budget ended after {} recovery step(s) ({:.0} s, the calibrated start included); \
             give --minutes more time, or a --steps budget",
            report.steps, report.seconds
        );
    }
}

/// Fewer recovery steps than this under a time budget get a warning.
const MIN_USEFUL_STEPS: usize = 10;

fn load_base(model: &Path, device: DeviceArg, threads: usize) -> anyhow::Result<BaseModel> {
    if !model.is_file() {
        bail!("model {} does not exist (pass --model or set ADAPTERCI_BASE_MODEL)", model.display());
    }
    set_threads(threads.max(1));
    let device = match device {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Cuda => DeviceChoice::Cuda(0),
    };
    let base = BaseModel::load(model, device)?;
    eprintln!("{}: {} on {}", model.display(), base.name(), if base.is_cuda() { "CUDA" } else { "the CPU" });
    Ok(base)
}

fn options(common: &CommonArgs, recovery: Option<&RecoveryArgs>, base: &BaseModel) -> BuildOptions {
    let method = Method {
        group_rows: common.group_rows,
        group_rows_2bit: common.group_rows_2bit,
        row_scale: true,
        weighted: !common.naive,
        compensate: !common.naive && !common.no_gptq,
        refit_rounds: if common.naive { 0 } else { common.refit_rounds },
        sequential: !common.naive && common.sequential,
        low_rank_rounds: if common.naive { 0 } else { common.low_rank_rounds },
        rotation: if common.naive { None } else { common.rotation.0 },
    };
    let defaults = BuildOptions::default().recovery;
    let user_corpus_share = recovery.and_then(|r| r.corpus_share);
    let recovery = match recovery {
        Some(r) => RecoverySpec {
            steps: r.steps,
            max_seconds: r.minutes.map(|m| m * 60.0),
            batch: r.batch,
            learning_rate: r.learning_rate,
            checkpoint_every: if r.checkpoint_dir.is_some() { r.checkpoint_every } else { 0 },
            checkpoint_dir: r.checkpoint_dir.clone(),
            palette_learning_rate: r.palette_learning_rate,
            calibrated_init: !r.zero_init,
            base_precision: recovery_precision(r.precision, base),
            seed: common.seed,
            validation_sequences: r.validation_seqs,
            validate_every: r.validate_every,
            ..defaults
        },
        None => defaults,
    };
    BuildOptions {
        target_bpw: common.target_bpw,
        method,
        teacher: TeacherTextSpec {
            sequences: common.teacher_seqs,
            seq_len: common.seq_len,
            batch: common.teacher_batch.unwrap_or(if base.is_cuda() { 256 } else { 16 }),
            temperature: 1.0,
            seed: common.seed,
        },
        sensitivity_sequences: common.sens_seqs,
        sensitivity: common.sensitivity,
        recovery,
        embedding_bits: common.embedding_bits,
        user_corpus_share,
        activation_bits: common.activation_bits,
        teacher_cache: common.teacher_cache.clone(),
        palettized_cache: None,
    }
}

/// Keeps what a rerun of `release` picks up under the checkpoint folder `dir`, beside the recovery's checkpoints:
/// the palettized base (`palettized/`) and, unless `--teacher-cache` names another place, the teacher's text
/// (`teacher-cache/`), so that a rerun with the same inputs (an interrupted build, restarted) skips the
/// calibration and the palettization and goes straight to the recovery's last checkpoint. What a release that
/// succeeds no longer needs of it goes then ([`remove_finished_build_state`]).
fn keep_build_state(options: &mut BuildOptions, dir: &Path) {
    options.palettized_cache = Some(dir.join(PALETTIZED_CACHE));
    options.teacher_cache.get_or_insert_with(|| dir.join(TEACHER_CACHE));
}

/// After a release that succeeded (written, and published when asked), what it kept under the checkpoint folder
/// and nothing will read again: the palettized bases of other inputs (each the size of a release, one per rerun
/// with other settings) and this build's recovery checkpoints (the recovery finished, and its adapter is in
/// `--out`; a rerun that resumed them would, with only its budget changed, go on from a finished schedule
/// instead of training the one that budget lays out), with the checkpoint folder of the same palettized base and
/// spec that a build from before the training text was part of the folder's name left (no build resumes it). The
/// palettized base of these inputs and the teacher's text stay: a rerun with the same inputs, or one that only
/// trains otherwise, skips the sensitivities and the palettization; so do the checkpoints of other builds
/// (interrupted ones, still resumable). Only files this tool writes are removed (never anything else in the
/// folder, and an old checkpoint folder holding anything else is left whole, with a line saying so), one line each
/// with the space freed; a file that cannot be removed is reported and left.
fn remove_finished_build_state(
    base: &BaseModel,
    options: &BuildOptions,
    corpus: Option<&str>,
    built: &BuiltRelease,
) -> anyhow::Result<()> {
    let mut removals = remove_other_palettized_bases(base, options, corpus)?;
    if let Some(dir) = &built.recovery_checkpoints {
        removals.extend(remove_recovery_checkpoints(dir, &mut note));
    }
    for removal in removals {
        match removal.freed {
            Ok(bytes) => note(&format!("removed {} ({} freed)", removal.path.display(), size(bytes))),
            Err(e) => note(&format!("warning: could not remove {}: {e}", removal.path.display())),
        }
    }
    Ok(())
}

/// `bytes` for a person: in B, kB, MB or GB (powers of 1000), one decimal.
fn size(bytes: u64) -> String {
    for (unit, scale) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if bytes as f64 >= scale {
            return format!("{:.1} {unit}", bytes as f64 / scale);
        }
    }
    format!("{bytes} B")
}

/// The folders [`keep_build_state`] keeps under the checkpoint folder (its checkpoints' folders are named by hex
/// digits, two runs of 16 joined by `-`, or one run of 16 for those of builds before the text was in the name, so
/// neither name can clash with one).
const PALETTIZED_CACHE: &str = "palettized";
const TEACHER_CACHE: &str = "teacher-cache";

/// The text of an optional file.
fn read(path: &Option<std::path::PathBuf>) -> anyhow::Result<Option<String>> {
    path.as_ref().map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))).transpose()
}

fn check_source(release: &BaseRelease, base: &BaseModel, path: &Path) -> anyhow::Result<()> {
    if &release.manifest.source_model_digest != base.digest() {
        bail!(
            "{} was made from source model {}, not from {} ({})",
            path.display(),
            release.manifest.source_model_digest,
            base.path().display(),
            base.digest()
        );
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    adapterci_engine::files::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn write_analysis(dir: &Path, analysis: &BitAnalysis) -> anyhow::Result<()> {
    write_file(&dir.join("analysis.json"), &serde_json::to_vec_pretty(analysis)?)?;
    write_file(&dir.join("analysis.txt"), analysis.to_table().as_bytes())?;
    write_file(&dir.join("analysis.svg"), analysis.to_svg().as_bytes())
}

/// Publishes the bundle as a version of `name`: the recovery adapter as the adapter file, the release file and
/// the report beside it, with lineage to the source model and the release digest.
fn publish(args: &crate::cli::ReleaseArgs, name: &str, base: &BaseModel, built: &BuiltRelease) -> anyhow::Result<u64> {
    let name: AdapterName = name.parse().map_err(|e| anyhow::anyhow!("--publish {name:?}: {e}"))?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", args.data_dir.join("adapterci.db").display()));
    let registry_url =
        args.registry_url.clone().unwrap_or_else(|| args.data_dir.join("registry").display().to_string());
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let adapter = base.load_adapter(&built.recovery_adapter)?;
    let report = &built.report;
    let lineage = Lineage {
        base_model_digest: report.source_model_digest.clone(),
        base_model_name: base.name().to_string(),
        base_release_digest: Some(report.release_digest.clone()),
        dataset_digests: Vec::new(),
        pipeline: None,
        run_id: None,
        initial_adapter: InitialAdapterRef::RecoveryAdapter {
            base_release: report.release_digest.clone(),
            adapter: report.recovery_adapter_digest.clone(),
        },
        code_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let request = PublishRequest {
        name,
        adapter: adapter.config().clone(),
        files: vec![
            ("adapter_model.safetensors".to_string(), bytes::Bytes::from(built.recovery_adapter.clone())),
            ("base_release.safetensors".to_string(), bytes::Bytes::from(built.release.clone())),
            ("report.json".to_string(), bytes::Bytes::from(serde_json::to_vec_pretty(report)?)),
        ],
        lineage,
        eval: None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = Arc::new(
            adapterci_store::SeaStore::connect(&database_url)
                .await
                .with_context(|| format!("opening the metadata store {database_url}"))?,
        );
        let objects = adapterci_registry::open_object_store(&registry_url)
            .with_context(|| format!("opening the registry {registry_url}"))?;
        let registry = adapterci_registry::ObjectStoreRegistry::new(objects, store);
        let record = registry.publish(request).await.context("publishing the base release")?;
        Ok(record.version)
    })
}
