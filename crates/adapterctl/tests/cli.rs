//! The command line as clap parses it, and the small pure pieces behind the commands: adapter references,
//! apply outcomes, exit codes, progress lines, dataset locations, durations and digests.

#![allow(clippy::unwrap_used, reason = "test helpers build fixed JSON: a failure there is a broken test")]

use adapterci_api::{ApplyOutcome, PipelineInfo, RunInfo, RunProgress, RunState};
use adapterctl::cli::{AdapterRef, Cli, Command, DescribeCommand, GetCommand, RunsCommand};
use adapterctl::commands::outcome_of;
use adapterctl::exit::ExitStatus;
use adapterctl::follow::{Tracker, exit_status_of, plain_lines};
use adapterctl::output::{OutputFormat, Style};
use adapterctl::render::{adapter::ranges, duration, short_digest};
use clap::{CommandFactory, Parser};
use serde_json::json;

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}

fn parse(args: &[&str]) -> Cli {
    let argv = std::iter::once("adapterctl").chain(args.iter().copied());
    Cli::try_parse_from(argv).unwrap_or_else(|err| panic!("{args:?}: {err}"))
}

fn check_usage_error(args: &[&str], expect: &str) {
    let argv = std::iter::once("adapterctl").chain(args.iter().copied());
    let err = Cli::try_parse_from(argv).err().unwrap_or_else(|| panic!("{args:?} parsed"));
    assert!(err.use_stderr(), "{args:?}: {err}");
    let text = err.to_string();
    assert!(text.contains(expect), "{args:?}: expected {expect:?} in\n{text}");
}

#[test]
fn global_options_go_anywhere() {
    let cli = parse(&["get", "runs", "-o", "json", "--server", "http://h:1", "--no-color"]);
    assert_eq!(cli.global.output, OutputFormat::Json);
    assert_eq!(cli.global.server, "http://h:1");
    assert!(cli.global.no_color);
    let cli = parse(&["-o", "yaml", "models"]);
    assert_eq!(cli.global.output, OutputFormat::Yaml);
    assert!(matches!(cli.command, Command::Models));
}

#[test]
fn get_runs_takes_a_pipeline_and_a_limit() {
    let Command::Get(GetCommand::Runs(args)) = parse(&["get", "runs", "--pipeline", "sql", "--limit", "5"]).command
    else {
        panic!("not get runs")
    };
    assert_eq!((args.pipeline.as_deref(), args.limit), (Some("sql"), Some(5)));
    assert!(matches!(parse(&["get", "pipeline"]).command, Command::Get(GetCommand::Pipelines)));
}

#[test]
fn describe_and_runs_wait() {
    let Command::Describe(DescribeCommand::Adapter { adapter }) = parse(&["describe", "adapter", "sql@3"]).command
    else {
        panic!("not describe adapter")
    };
    assert_eq!(adapter, AdapterRef { name: "sql".into(), version: Some(3) });
    let Command::Runs(RunsCommand::Wait { id }) = parse(&["runs", "wait", "r-1"]).command else { panic!("not wait") };
    assert_eq!(id, "r-1");
    let Command::Trigger(args) = parse(&["trigger", "sql", "--wait"]).command else { panic!("not trigger") };
    assert!(args.wait);
}

#[test]
fn generate_defaults_and_options() {
    let Command::Generate(args) = parse(&["generate", "hello"]).command else { panic!("not generate") };
    assert_eq!((args.adapter, args.raw, args.max_tokens, args.temperature, args.seed), (None, false, 64, 0.0, None));
    let Command::Generate(args) = parse(&[
        "generate",
        "--adapter",
        "sql",
        "--raw",
        "--max-tokens",
        "8",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "x",
    ])
    .command
    else {
        panic!("not generate")
    };
    assert_eq!((args.adapter.as_deref(), args.raw, args.max_tokens, args.seed), (Some("sql"), true, 8, Some(3)));
}

#[test]
fn bad_command_lines_are_usage_errors() {
    check_usage_error(&["apply"], "--filename <FILE>");
    check_usage_error(&["get", "runs", "--limit", "0"], "--limit");
    check_usage_error(&["get", "runs", "--limit", "many"], "invalid digit");
    check_usage_error(&["describe", "adapter", "sql@latest"], "the version after @ must be a number");
    check_usage_error(&["describe", "adapter", "@3"], "the adapter name is empty");
    check_usage_error(&["generate", "--temperature=-1", "x"], "expected a number of 0 or more");
    check_usage_error(&["generate", "--temperature", "NaN", "x"], "expected a number of 0 or more");
    check_usage_error(&["-o", "xml", "models"], "invalid value 'xml'");
    check_usage_error(&["dataset", "push", "f.jsonl"], "--location <KEY>");
    check_usage_error(&["frobnicate"], "unrecognized subcommand");
}

#[test]
fn adapter_references() {
    let check = |text: &str, expect: Result<(&str, Option<u64>), &str>| {
        let got = text.parse::<AdapterRef>();
        match expect {
            Ok((name, version)) => assert_eq!(got, Ok(AdapterRef { name: name.into(), version }), "{text}"),
            Err(message) => assert!(got.as_ref().is_err_and(|err| err.contains(message)), "{text}: {got:?}"),
        }
    };
    check("sql", Ok(("sql", None)));
    check("sql@12", Ok(("sql", Some(12))));
    check("sql@", Err("must be a number"));
    check("sql@-1", Err("must be a number"));
    check("", Err("empty"));
}

fn pipeline(revision: u64, digest: &str) -> PipelineInfo {
    serde_json::from_value(json!({
        "name": "sql", "revision": revision, "spec_digest": digest, "adapter": "a", "dataset_location": "d",
        "base_model": "b", "triggers": [], "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z"
    }))
    .unwrap()
}

#[test]
fn apply_outcomes_from_before_and_after() {
    assert_eq!(outcome_of(None, &pipeline(1, "sha256:a")), ApplyOutcome::Created);
    assert_eq!(outcome_of(Some(&pipeline(1, "sha256:a")), &pipeline(1, "sha256:a")), ApplyOutcome::Unchanged);
    assert_eq!(outcome_of(Some(&pipeline(1, "sha256:a")), &pipeline(2, "sha256:b")), ApplyOutcome::Configured);
}

#[test]
fn exit_codes() {
    let codes: Vec<u8> = RunState::ALL
        .into_iter()
        .filter(|state| state.is_terminal())
        .map(|state| exit_status_of(state).code())
        .collect();
    assert_eq!(codes, [0, 3, 1, 1], "succeeded, rejected, failed, cancelled");
    assert_eq!(ExitStatus::Usage.code(), 2);
    assert_eq!(ExitStatus::NotFound.code(), 4);
    assert_eq!((ExitStatus::Interrupted.code(), ExitStatus::Terminated.code()), (130, 143), "128 + the signal");
}

fn run_at(state: &str, stage: Option<&str>, step: Option<u64>, messages: &[&str]) -> RunInfo {
    let mut run = json!({
        "id": "r1", "pipeline": "sql", "pipeline_revision": 1, "state": state, "trigger": {"kind": "manual"},
        "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z",
        "report": {"messages": messages}
    });
    if let Some(stage) = stage {
        run["stage"] = json!(stage);
    }
    if let Some(step) = step {
        let progress = RunProgress { step, total_steps: 100, loss: 1.0, learning_rate: 1e-4, tokens_per_second: 50.0 };
        run["report"]["progress"] = serde_json::to_value(progress).unwrap();
    }
    serde_json::from_value(run).unwrap()
}

#[test]
fn plain_progress_shows_changes_once_and_thins_steps() {
    let mut tracker = Tracker::default();
    let mut last_step = None;
    let mut lines = |run: RunInfo| plain_lines(&tracker.observe(&run), &mut last_step, Style::PLAIN);
    assert_eq!(lines(run_at("queued", None, None, &[])), ["run r1: queued"]);
    assert!(lines(run_at("queued", None, None, &[])).is_empty(), "nothing changed");
    assert_eq!(
        lines(run_at("running", Some("train"), Some(1), &["loaded"])),
        ["run r1: running (train)", "  loaded", "  step 1/100 (1%), loss 1.0000, lr 1.00e-4, 50.0 tok/s"]
    );
    assert!(lines(run_at("running", Some("train"), Some(3), &["loaded"])).is_empty(), "too soon after step 1");
    assert_eq!(lines(run_at("running", Some("train"), Some(6), &["loaded", "half"])).len(), 2, "a message and step 6");
    assert_eq!(lines(run_at("running", Some("train"), Some(100), &["loaded", "half"])).len(), 1, "the last step");
    assert_eq!(lines(run_at("rejected", Some("eval"), Some(100), &["loaded", "half"])), ["run r1: rejected"]);
}

#[test]
fn small_formatters() {
    assert_eq!(
        short_digest("sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
        "sha256:2cf24dba5fb0"
    );
    assert_eq!(short_digest("sha256:abc"), "sha256:abc");
    assert_eq!(short_digest("nodigest"), "nodigest");
    assert_eq!([duration(-3), duration(42), duration(303), duration(7800)], ["0s", "42s", "5m 3s", "2h 10m"]);
    assert_eq!(ranges(&[7, 0, 1, 2, 5, 8, 2]), "0-2, 5, 7-8");
    assert_eq!(ranges(&[]), "none");
}

#[test]
fn dataset_locations() {
    use adapterctl::commands::check_location;
    assert!(check_location("datasets/sql/train.jsonl").is_ok());
    for bad in ["", "/abs", "a//b", "a/../b", "./a", "a/"] {
        let err = check_location(bad).expect_err(bad);
        assert_eq!(err.status, ExitStatus::Usage, "{bad}");
    }
}

#[test]
fn color_needs_a_terminal_and_no_opt_out() {
    assert!(!Style::detect(true, true).color, "--no-color wins over a terminal");
    assert!(!Style::detect(false, false).color, "no color into pipes and files");
    assert_eq!(Style::PLAIN.paint("x", adapterctl::output::Paint::Red), "x");
    assert_eq!(Style { color: true }.paint("x", adapterctl::output::Paint::Green), "\x1b[32mx\x1b[0m");
}
