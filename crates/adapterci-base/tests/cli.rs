//! `adapterci-base` as users run it, on the tiny model: a whole release (published to a local registry with
//! its lineage), a rerun that reuses the palettized base kept in its checkpoint folder (and what a release that
//! succeeds removes from that folder, and what it leaves), a rerun on other training text that does not resume the
//! interrupted recovery and says why, a release that succeeds beside the checkpoints of a build from before the text
//! named their folder (removed when they hold only a checkpoint's files, else left and named), the step-by-step
//! commands, and the refusals (missing model, foreign recovery adapter, an analysis of another model, a corrupt
//! release).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adapterci_engine::tiny::write_tiny_model;

const SMALL: &[&str] =
    &["--teacher-seqs", "16", "--seq-len", "32", "--device", "cpu", "--group-rows", "8", "--group-rows-2bit", "4"];

fn base(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_adapterci-base")).args(args).env_remove("ADAPTERCI_BASE_MODEL").output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn tiny(dir: &Path, seed: u64) -> PathBuf {
    let path = dir.join(format!("tiny-{seed}.gguf"));
    write_tiny_model(&path, seed).unwrap();
    path
}

#[test]
fn a_release_is_built_written_and_published_with_its_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 1);
    let out = dir.path().join("release");
    let data = dir.path().join("data");
    let mut args = vec!["release", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(&["--steps", "6", "--publish", "base-tiny", "--data-dir", data.to_str().unwrap()]);
    let output = base(&args);
    assert!(output.status.success(), "{}", text(&output));
    let printed = text(&output);
    assert!(printed.contains("published base-tiny version 1"), "{printed}");
    for file in
        ["base.safetensors", "recovery.safetensors", "report.json", "analysis.json", "analysis.svg", "analysis.txt"]
    {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let linear = report["linear_bpw"].as_f64().unwrap();
    assert!((linear - 3.5).abs() <= 0.05, "linear bpw {linear}");
    assert_eq!(report["recovery"]["steps"].as_u64(), Some(6));
    // the allocation ranked the operations by what the recovery adapter's start leaves, and says so
    assert_eq!(report["analysis"]["sensitivity"].as_str(), Some("corrected"));
    let table = std::fs::read_to_string(out.join("analysis.txt")).unwrap();
    assert!(table.contains("plus its calibrated low-rank correction"), "{table}");
    // the registry holds the bundle with its lineage: blobs under the data dir, a manifest naming the release
    let registry = data.join("registry");
    assert!(registry.is_dir());
    let manifests: Vec<PathBuf> =
        walk(&registry).into_iter().filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"{"))).collect();
    let release_digest = report["release_digest"].as_str().unwrap();
    assert!(
        manifests.iter().any(|p| std::fs::read_to_string(p).unwrap().contains(release_digest)),
        "no manifest names the release digest {release_digest}"
    );
    // evaluate the written release with its own recovery adapter
    let eval_text = dir.path().join("eval.txt");
    std::fs::write(&eval_text, "the quick brown fox jumps over the lazy dog. ".repeat(80)).unwrap();
    let output = base(&[
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--release",
        out.join("base.safetensors").to_str().unwrap(),
        "--recovery",
        out.join("recovery.safetensors").to_str().unwrap(),
        "--text",
        eval_text.to_str().unwrap(),
        "--device",
        "cpu",
        "--tokens-out",
        dir.path().join("peers/eval_tokens.json").to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("palettized + recovery adapter"), "{}", text(&output));
    // the scored tokens and the source model's top-1 at each position, for the llama.cpp peers
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("peers/eval_tokens.json")).unwrap()).unwrap();
    let (chunks, top1) = (tokens["chunks"].as_array().unwrap(), tokens["teacher_top1"].as_array().unwrap());
    let positions: usize = text(&output)
        .lines()
        .find_map(|l| l.split_once(" positions;").map(|(n, _)| n.trim().parse().unwrap()))
        .expect("a positions line");
    assert!(!chunks.is_empty());
    assert_eq!(positions, chunks.len() * 255, "each 256-token chunk scores 255 next tokens");
    assert_eq!(chunks.len(), top1.len());
    let vocab = adapterci_engine::tokenizer::TINY_VOCAB_SIZE as u64;
    for (chunk, ids) in chunks.iter().zip(top1) {
        let (chunk, ids) = (chunk.as_array().unwrap(), ids.as_array().unwrap());
        assert_eq!((chunk.len(), ids.len()), (256, 256));
        assert!(ids.iter().all(|id| id.as_u64().is_some_and(|id| id < vocab)), "{ids:?}");
    }
}

#[test]
fn a_rerun_of_release_reuses_the_palettized_base_kept_in_its_checkpoint_dir_and_a_success_removes_what_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 4);
    let state = dir.path().join("state");
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["release", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(&["--steps", "4", "--checkpoint-every", "2", "--checkpoint-dir"]);
        args.push(state.to_str().unwrap());
        args.extend_from_slice(extra);
        (base(&args), out)
    };
    let release = |out: &str, extra: &[&str]| {
        let (output, out) = run(out, extra);
        assert!(output.status.success(), "{}", text(&output));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
        (text(&output), report, std::fs::read(out.join("base.safetensors")).unwrap())
    };
    // files of the user's beside the build's: never removed
    let palettized = state.join("palettized");
    std::fs::create_dir_all(&palettized).unwrap();
    let theirs = [state.join("notes.txt"), palettized.join("notes.txt"), palettized.join("palettized-mine.json")];
    for file in &theirs {
        std::fs::write(file, "mine").unwrap();
    }
    let cached = || {
        let mut names: Vec<String> = std::fs::read_dir(&palettized)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !theirs.iter().any(|file| file.file_name().is_some_and(|theirs| theirs == name.as_str())))
            .collect();
        names.sort();
        names
    };
    let checkpoint_folders = || {
        std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            // `<palettized base and spec>-<training text>`, 16 hex digits each
            .filter(|name| {
                name.split_once('-').is_some_and(|(spec, text)| {
                    [spec, text].iter().all(|key| key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()))
                })
            })
            .count()
    };

    let (printed, first, first_release) = release("first", &[]);
    assert!(printed.contains("palettizing:") && !printed.contains("palettized base: reused"), "{printed}");
    // kept beside the checkpoints: the palettized base and the teacher's text
    let first_files = cached();
    assert_eq!(first_files.len(), 2, "the release and its record: {first_files:?}");
    assert!(std::fs::read_dir(state.join("teacher-cache")).unwrap().count() > 0);
    // the recovery finished: its checkpoints (of step 2) are removed, each file named with the space it freed
    assert_eq!(checkpoint_folders(), 0, "{printed}");
    for file in
        ["recovery-checkpoint.json", "recovery-checkpoint.safetensors", "recovery-optimizer-00000002.safetensors"]
    {
        let line = printed.lines().find(|l| l.starts_with("removed ") && l.contains(file));
        assert!(line.is_some_and(|l| l.ends_with(" freed)")), "{file}: {printed}");
    }
    assert!(!printed.contains("palettized-"), "nothing of the palettized base is removed: {printed}");

    // the same inputs again: no sensitivities, no palettization; the recovery trains afresh (the input statistics
    // again, for its calibrated start), to the same adapter
    let (printed, second, second_release) = release("second", &[]);
    let reused = format!("palettized base: reused from {}", palettized.display());
    assert!(printed.contains(&reused), "{printed}");
    assert!(printed.contains("teacher text: 16 sequences from"), "{printed}");
    for absent in ["palettizing:", "sensitivity:"] {
        assert!(!printed.contains(absent), "{absent}: {printed}");
    }
    assert!(printed.contains("calibration: input statistics"), "{printed}");
    assert_eq!(second["recovery"]["resumed_from"].as_u64(), None);
    assert_eq!(second["release_digest"], first["release_digest"]);
    assert_eq!(second_release, first_release);
    assert_eq!(second["recovery_adapter_digest"], first["recovery_adapter_digest"]);

    // other inputs, built and written but failing at the end (a name the registry refuses): nothing is removed
    let other = ["--target-bpw", "3.0"];
    let (output, _) = run("failed", &[&other[..], &["--publish", "Not A Name"]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("--publish"), "{}", text(&output));
    assert!(!text(&output).contains("removed "), "{}", text(&output));
    assert_eq!(cached().len(), 4, "both palettized bases: {:?}", cached());
    assert_eq!(checkpoint_folders(), 1, "the failed build's checkpoints");

    // the other inputs again, succeeding (from their kept base and checkpoint): the first inputs' palettized base
    // goes with this build's checkpoints; theirs stays, and so do the user's files
    let (printed, report, _) = release("other", &other);
    assert!(printed.contains(&reused), "{printed}");
    assert_eq!(report["recovery"]["resumed_from"].as_u64(), Some(2));
    for name in &first_files {
        let line = format!("removed {} (", palettized.join(name).display());
        assert!(printed.lines().any(|l| l.starts_with(&line) && l.ends_with(" freed)")), "{name}: {printed}");
    }
    let left = cached();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|name| !first_files.contains(name)), "{left:?}");
    assert_eq!(checkpoint_folders(), 0, "{printed}");
    for file in &theirs {
        assert_eq!(std::fs::read_to_string(file).unwrap(), "mine", "{}", file.display());
    }
}

#[test]
fn a_rerun_of_an_interrupted_release_with_another_corpus_share_trains_afresh_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 4);
    let state = dir.path().join("state");
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, "Order from Ana Silva: 3 x red cup, ship to Porto. ".repeat(60)).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["release", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(&["--steps", "4", "--checkpoint-every", "2", "--checkpoint-dir"]);
        args.extend_from_slice(&[state.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let output = base(&args);
        let report = std::fs::read(out.join("report.json")).ok();
        (output, report.map(|r| serde_json::from_slice::<serde_json::Value>(&r).unwrap()))
    };
    // built but failing at the end (a name the registry refuses): its checkpoint of step 2 stays, as a kill's would
    let (output, _) = run("failed", &["--corpus-share", "0.5", "--publish", "Not A Name"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // another share of the corpus: other training text, so the checkpoint is not resumed, and the user is told
    let (output, report) = run("other", &["--corpus-share", "0.2"]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("was made on other training text; starting the recovery afresh"), "{printed}");
    assert_eq!(report.unwrap()["recovery"]["resumed_from"].as_u64(), None, "{printed}");
    // the first share again: its checkpoint resumes
    let (output, report) = run("again", &["--corpus-share", "0.5"]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(!printed.contains("other training text"), "{printed}");
    assert_eq!(report.unwrap()["recovery"]["resumed_from"].as_u64(), Some(2), "{printed}");
}

#[test]
fn a_release_that_succeeds_removes_the_old_layouts_checkpoints_of_its_base_and_spec_unless_they_hold_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 4);
    let state = dir.path().join("state");
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["release", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(SMALL);
        args.extend_from_slice(&["--steps", "4", "--checkpoint-every", "2", "--checkpoint-dir"]);
        args.push(state.to_str().unwrap());
        args.extend_from_slice(extra);
        base(&args)
    };
    // built but failing at the end (a name the registry refuses): its checkpoint of step 2 stays
    let output = run("failed", &["--publish", "Not A Name"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    // what a build from before the text named the folder left: `<spec key>`, a record without the text
    let folder = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| name.len() == 33 && name.as_bytes()[16] == b'-')
        .expect("the failed build's checkpoint folder");
    let old = state.join(&folder[..16]);
    std::fs::rename(state.join(&folder), &old).unwrap();
    let record_path = old.join("recovery-checkpoint.json");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert!(record.as_object_mut().unwrap().remove("text_digest").is_some(), "{record}");
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    let checkpoint =
        ["recovery-checkpoint.json", "recovery-checkpoint.safetensors", "recovery-optimizer-00000002.safetensors"];
    let names_in_old = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&old).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };

    // with a file of the user's in it: the old folder is left whole, and the release says so
    std::fs::write(old.join("notes.txt"), "mine").unwrap();
    let output = run("kept", &[]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    let left = format!("recovery: left {}, the checkpoints of this base and spec from before", old.display());
    let line = printed.lines().find(|l| l.starts_with(&left));
    assert!(line.is_some_and(|l| l.contains("(notes.txt)")), "{printed}");
    let removed_in_old = format!("removed {}{}", old.display(), std::path::MAIN_SEPARATOR);
    assert!(!printed.contains(&removed_in_old), "{printed}");
    let mut expect: Vec<&str> = checkpoint.to_vec();
    expect.push("notes.txt");
    expect.sort();
    assert_eq!(names_in_old(), expect);

    // with only a checkpoint's files: a release that succeeds removes them, each with the space freed, and the folder
    std::fs::remove_file(old.join("notes.txt")).unwrap();
    let output = run("removed", &[]);
    let printed = text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(!printed.contains("recovery: left"), "{printed}");
    for file in checkpoint {
        let line = format!("removed {} (", old.join(file).display());
        assert!(printed.lines().any(|l| l.starts_with(&line) && l.ends_with(" freed)")), "{file}: {printed}");
    }
    assert!(!old.exists(), "{printed}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn step_by_step_commands_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny(dir.path(), 2);
    let other = tiny(dir.path(), 3);
    let m = model.to_str().unwrap();
    let out = dir.path().join("a");
    let o = out.to_str().unwrap();
    let with = |mut head: Vec<&'static str>, rest: &[&str]| -> Output {
        let mut args: Vec<String> = head.drain(..).map(String::from).collect();
        args.extend(rest.iter().map(|s| s.to_string()));
        args.extend(SMALL.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        base(&refs)
    };
    let output = with(vec!["analyze"], &["--model", m, "--out", o]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("total (linear)"));
    let analysis = out.join("analysis.json");
    // palettize writes the teacher text into the cache, recover reads it back
    let cache = dir.path().join("teacher-cache");
    let cache = ["--teacher-cache", cache.to_str().unwrap()];
    let analysis = ["--analysis", analysis.to_str().unwrap()];
    let output = with(vec!["palettize"], &[&["--model", m, "--out", o][..], &analysis, &cache].concat());
    assert!(output.status.success(), "{}", text(&output));
    assert!(!text(&output).contains("sequences from"), "{}", text(&output));
    let release = out.join("base.safetensors");
    let r = release.to_str().unwrap();
    // palettized rotated by default: a format-2 release that names its rotation
    let manifest = |path: &Path| adapterci_engine::release::BaseRelease::open(path).unwrap().0.manifest;
    let written = manifest(&release);
    assert_eq!((written.format_version, written.method.rotation.map(|r| r.seed)), (2, Some(1)));
    let output =
        with(vec!["recover"], &[&["--model", m, "--release", r, "--out", o, "--steps", "3"][..], &cache].concat());
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("teacher text: 16 sequences from"), "{}", text(&output));
    // stderr is not a terminal: progress comes as plain lines, the last one at the last step
    assert!(text(&output).contains("recovery step 3/3 KL"), "{}", text(&output));
    // one of the 16 teacher sequences is held out and scored before the first step and after the last
    for line in [
        "1 held out of the teacher text for validation",
        "recovery validation at step 0: teacher text: KL",
        "recovery validation at step 3: teacher text: KL",
        "held-out teacher text: KL",
    ] {
        assert!(text(&output).contains(line), "{line}: {}", text(&output));
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("recovery.json")).unwrap()).unwrap();
    let steps: Vec<u64> =
        report["validation"].as_array().unwrap().iter().map(|p| p["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 3]);
    assert!(!text(&output).contains("warning: the time budget"), "{}", text(&output));
    // the precision this machine's default chose is recorded and printed
    let precision = |dir: &Path| {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("recovery.json")).unwrap()).unwrap();
        report["base_precision"].as_str().unwrap().to_string()
    };
    let chosen = precision(&out);
    assert!(chosen == "f32" || chosen == "bf16", "{chosen}");
    assert!(text(&output).contains(&format!("({chosen} matmuls)")), "{}", text(&output));
    // an unknown precision is refused, naming the ones there are
    let output = with(vec!["recover"], &["--model", m, "--release", r, "--out", o, "--precision", "fp8"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("fp8") && text(&output).contains("f32, bf16"), "{}", text(&output));
    // so is a count that is not one
    let output = with(vec!["recover"], &["--model", m, "--release", r, "--out", o, "--validation-seqs", "some"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("--validation-seqs"), "{}", text(&output));
    // a time budget spent before training got going is reported, and still writes the adapter
    let short = dir.path().join("short");
    let s = short.to_str().unwrap();
    let output = with(
        vec!["recover"],
        &[&["--model", m, "--release", r, "--out", s, "--minutes", "0.00001", "--precision", "f32"][..], &cache]
            .concat(),
    );
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("warning: the time budget ended after 1 recovery step(s)"), "{}", text(&output));
    assert!(short.join("recovery.safetensors").is_file());
    assert_eq!(precision(&short), "f32");
    assert!(out.join("recovery.safetensors").is_file());
    // with trained palettes, recover writes the retrained release too, and binds its adapter to it
    let out_c = dir.path().join("c");
    let c = out_c.to_str().unwrap();
    let recover_c = |rate: &str| {
        let release = release.to_str().unwrap();
        with(
            vec!["recover"],
            &["--model", m, "--release", release, "--out", c, "--steps", "3", "--palette-learning-rate", rate],
        )
    };
    let output = recover_c("1e-3");
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("the release with the trained tables and row scales"), "{}", text(&output));
    let retrained = std::fs::read(out_c.join("base.safetensors")).unwrap();
    assert_ne!(retrained, std::fs::read(&release).unwrap(), "new tables and scales");
    let eval_text = dir.path().join("eval.txt");
    std::fs::write(&eval_text, "a b c d e f g ".repeat(200)).unwrap();
    let evaluate = |release: &Path, recovery: Option<&Path>| {
        let mut args = vec!["evaluate", "--model", m, "--release", release.to_str().unwrap()];
        args.extend(["--text", eval_text.to_str().unwrap(), "--device", "cpu"]);
        if let Some(recovery) = recovery {
            args.extend(["--recovery", recovery.to_str().unwrap()]);
        }
        base(&args)
    };
    let output = evaluate(&out_c.join("base.safetensors"), Some(&out_c.join("recovery.safetensors")));
    assert!(output.status.success(), "{}", text(&output));
    let output = evaluate(&release, Some(&out_c.join("recovery.safetensors")));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("was trained for base release"), "{}", text(&output));
    let output = recover_c("0");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("palette learning rate 0"), "{}", text(&output));

    // a release of another source model is refused by recover
    let output = with(
        vec!["recover"],
        &["--model", other.to_str().unwrap(), "--release", release.to_str().unwrap(), "--out", o],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("was made from source model"), "{}", text(&output));
    // a recovery adapter of another release is refused by evaluate
    let out_b = dir.path().join("b");
    let b = out_b.to_str().unwrap();
    let flags = ["--model", m, "--out", b, "--uniform-bits", "4", "--rotation", "off", "--no-gptq"];
    let output = with(vec!["palettize"], &flags);
    assert!(output.status.success(), "{}", text(&output));
    let unrotated = manifest(&out_b.join("base.safetensors"));
    assert_eq!((unrotated.format_version, unrotated.method.rotation), (1, None));
    // --no-gptq keeps the activation weighting and drops only the error compensation
    assert_eq!((unrotated.method.weighted, unrotated.method.compensate), (true, false));
    // the arbitrary allocation (the control of the sensitivity allocation) meets the same target, and its seed
    // decides which operations drop to 2 bits
    let arbitrary = |seed: &str| {
        let dir = dir.path().join(format!("arbitrary-{seed}"));
        let output = with(vec!["palettize"], &["--model", m, "--out", dir.to_str().unwrap(), "--arbitrary-seed", seed]);
        assert!(output.status.success(), "{}", text(&output));
        assert!(text(&output).contains(&format!("arbitrary allocation (seed {seed})")), "{}", text(&output));
        assert!(!dir.join("analysis.json").exists(), "no sensitivities measured, no analysis written");
        let written = manifest(&dir.join("base.safetensors"));
        assert!((3.45..=3.5).contains(&written.linear_bpw), "linear bpw {}", written.linear_bpw);
        written.palettized.iter().map(|t| t.spec.bits).collect::<Vec<u8>>()
    };
    let (three, four) = (arbitrary("3"), arbitrary("4"));
    assert!(three.contains(&2) && three.contains(&4), "{three:?}");
    assert_ne!(three, four);
    let output = with(vec!["palettize"], &["--model", m, "--out", b, "--arbitrary-seed", "3", "--uniform-bits", "4"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains("--arbitrary-seed"), "{}", text(&output));
    let output = with(vec!["palettize"], &["--model", m, "--out", b, "--rotation", "sideways"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output).contains(r#""sideways" is neither a seed"#), "{}", text(&output));
    let output = evaluate(&out_b.join("base.safetensors"), Some(&out.join("recovery.safetensors")));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("was trained for base release"), "{}", text(&output));
    // a corrupt release is refused with the file named
    let mut bytes = std::fs::read(&release).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 1;
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, bytes).unwrap();
    let output = evaluate(&corrupt, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("corrupt.safetensors") && text(&output).contains("corrupt"), "{}", text(&output));
    // an analysis of another model shape, and a missing model
    std::fs::write(dir.path().join("bad.json"), "{\"not\": \"an analysis\"}").unwrap();
    let bad = dir.path().join("bad.json");
    let output = with(vec!["palettize"], &["--model", m, "--out", o, "--analysis", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("not an analysis.json"), "{}", text(&output));
    let output = with(vec!["analyze"], &["--model", "/nonexistent/model.gguf", "--out", o]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("/nonexistent/model.gguf does not exist"), "{}", text(&output));
}
