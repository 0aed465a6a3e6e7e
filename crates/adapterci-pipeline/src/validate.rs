//! `build_and_validate`: the one place where wire structs become a `PipelineSpec`, collecting every problem.

use std::collections::HashSet;
use std::path::PathBuf;

use adapterci_core::CoreError;
use adapterci_core::gate::GateSpec;
use adapterci_core::gate::regression::{Direction, RegressionGateSpec};
use adapterci_core::names::{AdapterName, PipelineName};
use adapterci_core::training::{LayerSelection, LoraSpec, LoraTarget, TrainSpec};

use crate::cron::CronSchedule;
use crate::duration::{format_duration, parse_duration};
use crate::error::Problem;
use crate::locate::SourceIndex;
use crate::spec::{
    BaseModelRef, DEFAULT_CHANNEL, DEFAULT_WATCH_INTERVAL, DatasetRef, MIN_WATCH_INTERVAL, PipelineSpec, PromotionSpec,
    PublishSpec, ResourcesSpec, TriggerSpec, WebhookFormat, default_triggers,
};

const DEFAULT_CANARY_CHANNEL: &str = "canary";
const MIN_STABLE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
use crate::wire::{
    BaseV1, DatasetV1, EvalV1, LayersV1, LoraTargetV1, LoraV1, PipelineV1, PromotionV1, PublishV1, ResourcesV1,
    TrainingV1, TriggerKindV1, TriggerV1, WebhookFormatV1,
};

const MAX_RANK: usize = 256;
const MIN_SEQ_LEN: usize = 16;

/// Collects problems, each placed by looking its field path up in the source index.
pub(crate) struct Checker<'a> {
    index: &'a SourceIndex,
    pub(crate) problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(index: &'a SourceIndex) -> Self {
        Checker { index, problems: Vec::new() }
    }

    pub(crate) fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            position: self.index.position(path),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn required<T>(&mut self, value: Option<T>, path: &str, what: &str) -> Option<T> {
        if value.is_none() {
            self.report(path, format!("missing: {what}"));
        }
        value
    }

    /// `value` (or `default` when absent) if at least `min`, else reports it.
    fn at_least(&mut self, value: Option<usize>, default: usize, path: &str, min: usize) -> usize {
        let value = value.unwrap_or(default);
        if value < min {
            self.report(path, format!("must be at least {min}, got {value}"));
        }
        value
    }

    /// `value` (or `default`) if finite and `accept`ed, else reports `rule`.
    fn number(&mut self, value: Option<f64>, default: f64, path: &str, rule: &str, accept: fn(f64) -> bool) -> f64 {
        let value = value.unwrap_or(default);
        if !value.is_finite() || !accept(value) {
            self.report(path, format!("must be {rule}, got {value}"));
        }
        value
    }
}

impl PipelineV1 {
    /// Turns the wire form into a `PipelineSpec`, filling defaults and checking every value; on failure returns
    /// every problem found, placed with `index`.
    pub(crate) fn build_and_validate_with(self, index: &SourceIndex) -> Result<PipelineSpec, Vec<Problem>> {
        let mut checker = Checker::new(index);
        let name =
            checker.required(self.name, "name", "the pipeline's name, like `name: ticket-format`").and_then(|name| {
                match PipelineName::new(name) {
                    Ok(name) => Some(name),
                    Err(error) => {
                        checker.report("name", error.to_string());
                        None
                    }
                }
            });
        let base = build_base(&mut checker, self.base);
        let dataset = build_dataset(&mut checker, self.dataset);
        let triggers = build_triggers(&mut checker, self.triggers);
        let (lora, train) = build_training(&mut checker, self.training.unwrap_or_default());
        let (gates, regression_gates) = build_gates(&mut checker, self.eval.unwrap_or_default());
        let publish = build_publish(&mut checker, self.publish.unwrap_or_default(), name.as_ref());
        let resources = build_resources(&mut checker, self.resources.unwrap_or_default());
        match (name, base, dataset, publish) {
            (Some(name), Some(base), Some(dataset), Some(publish)) if checker.problems.is_empty() => {
                let description = self.description;
                Ok(PipelineSpec {
                    name,
                    description,
                    base,
                    dataset,
                    triggers,
                    lora,
                    train,
                    gates,
                    regression_gates,
                    publish,
                    resources,
                })
            }
            _ => Err(checker.problems),
        }
    }
}

fn build_base(checker: &mut Checker, base: Option<BaseV1>) -> Option<BaseModelRef> {
    let what = "the base model, like `base: {model: smollm2-135m-instruct}` or `base: {path: models/x.gguf}`";
    let base = checker.required(base, "base", what)?;
    match (base.model, base.path) {
        (Some(_), Some(_)) => {
            checker.report("base", "set exactly one of `model` and `path`, not both");
            None
        }
        (None, None) => {
            checker.report("base", "set exactly one of `model` (a model catalog name) and `path` (a GGUF file)");
            None
        }
        (Some(model), None) => match PipelineName::new(model.as_str()) {
            Ok(_) => Some(BaseModelRef::Named(model)),
            Err(error) => {
                checker.report("base.model", format!("invalid model name {model:?}: {}", name_reason(&error)));
                None
            }
        },
        (None, Some(path)) => {
            if path.is_empty() || path.chars().any(char::is_control) {
                checker.report(
                    "base.path",
                    format!("invalid path {path:?}: must be non-empty, without control characters"),
                );
                return None;
            }
            Some(BaseModelRef::Path(PathBuf::from(path)))
        }
    }
}

fn build_dataset(checker: &mut Checker, dataset: Option<DatasetV1>) -> Option<DatasetRef> {
    let what = "the training data, like `dataset: {location: datasets/x/train.jsonl}`";
    let dataset = checker.required(dataset, "dataset", what)?;
    let location =
        checker.required(dataset.location, "dataset.location", "the dataset's key in the dataset object store")?;
    // a trailing '/' makes the location a prefix; what precedes it follows the rules of a key. `file:///...` names
    // a file (or, with the '/', a directory) on adapterd's machine instead of a key in the dataset store.
    let key = match location.strip_prefix(LOCAL_SCHEME) {
        Some(path) => match path.strip_prefix('/') {
            Some(relative) => relative,
            None => {
                checker.report(
                    "dataset.location",
                    format!("invalid location {location:?}: a file:// location must be an absolute path, like file:///data/train.jsonl"),
                );
                return None;
            }
        },
        None => &location,
    };
    match location_problem(key.strip_suffix('/').unwrap_or(key)) {
        Some(reason) => {
            checker.report("dataset.location", format!("invalid location {location:?}: {reason}"));
            None
        }
        None => Some(DatasetRef { location }),
    }
}

/// The scheme of dataset locations on adapterd's local file system (`file:///abs/path`).
pub const LOCAL_SCHEME: &str = "file://";

/// Why `location` is not a safe object-store key, if it is not.
fn location_problem(location: &str) -> Option<&'static str> {
    if location.is_empty() {
        return Some("must not be empty");
    }
    if location.starts_with('/') {
        return Some("must be relative (no leading '/')");
    }
    if location.chars().any(|c| c.is_control() || c == '\\') {
        return Some("must not contain control characters or '\\'");
    }
    let segments: Vec<&str> = location.split('/').collect();
    if segments.contains(&"..") {
        return Some("must not contain '..'");
    }
    if segments.iter().any(|segment| segment.is_empty() || *segment == ".") {
        return Some("must not contain empty or '.' segments");
    }
    None
}

fn build_triggers(checker: &mut Checker, triggers: Option<Vec<TriggerV1>>) -> Vec<TriggerSpec> {
    let Some(triggers) = triggers else { return default_triggers() };
    if triggers.is_empty() {
        checker.report(
            "triggers",
            "must list at least one trigger (leave `triggers` out for the default: dataset_watch every 10s and manual)",
        );
    }
    let mut seen = HashSet::new();
    let mut built = Vec::new();
    for (position, trigger) in triggers.into_iter().enumerate() {
        let path = format!("triggers[{position}]");
        let kind_name = match trigger.kind {
            TriggerKindV1::DatasetWatch => "dataset_watch",
            TriggerKindV1::Manual => "manual",
            TriggerKindV1::Webhook => "webhook",
            TriggerKindV1::Cron => "cron",
        };
        // Several webhooks (one per secret) may feed one pipeline; every other kind appears once.
        if trigger.kind != TriggerKindV1::Webhook && !seen.insert(trigger.kind) {
            checker.report(&format!("{path}.kind"), format!("duplicate trigger kind `{kind_name}`"));
        }
        let fields = [
            ("interval", "an interval", trigger.interval.is_some(), TriggerKindV1::DatasetWatch, "a dataset_watch"),
            ("secret", "a secret", trigger.secret.is_some(), TriggerKindV1::Webhook, "a webhook"),
            ("format", "a format", trigger.format.is_some(), TriggerKindV1::Webhook, "a webhook"),
            ("schedule", "a schedule", trigger.schedule.is_some(), TriggerKindV1::Cron, "a cron"),
        ];
        let mut misplaced = false;
        for (field, what, present, owner, owner_name) in fields {
            if present && trigger.kind != owner {
                checker.report(&format!("{path}.{field}"), format!("only {owner_name} trigger takes {what}"));
                misplaced = true;
            }
        }
        if misplaced {
            continue;
        }
        match trigger.kind {
            TriggerKindV1::Manual => built.push(TriggerSpec::Manual),
            TriggerKindV1::DatasetWatch => {
                let interval = match trigger.interval.as_deref().map(parse_duration) {
                    None => DEFAULT_WATCH_INTERVAL,
                    Some(Ok(interval)) if interval >= MIN_WATCH_INTERVAL => interval,
                    Some(Ok(interval)) => {
                        let message = format!("must be at least 1s, got {}", format_duration(interval));
                        checker.report(&format!("{path}.interval"), message);
                        continue;
                    }
                    Some(Err(message)) => {
                        checker.report(&format!("{path}.interval"), message);
                        continue;
                    }
                };
                built.push(TriggerSpec::DatasetWatch { interval });
            }
            TriggerKindV1::Webhook => {
                if let Some(webhook) = build_webhook(checker, &path, trigger.secret, trigger.format) {
                    built.push(webhook);
                }
            }
            TriggerKindV1::Cron => {
                let Some(schedule) = trigger.schedule else {
                    checker.report(&path, "a cron trigger needs schedule, like `schedule: \"0 3 * * *\"`");
                    continue;
                };
                match CronSchedule::parse(&schedule) {
                    Ok(schedule) => built.push(TriggerSpec::Cron { schedule }),
                    Err(message) => checker.report(&format!("{path}.schedule"), message),
                }
            }
        }
    }
    built
}

fn build_webhook(
    checker: &mut Checker,
    path: &str,
    secret: Option<String>,
    format: Option<WebhookFormatV1>,
) -> Option<TriggerSpec> {
    let Some(secret) = secret else {
        checker.report(path, "a webhook trigger needs secret: the name of the secret that authenticates deliveries");
        return None;
    };
    if !valid_secret_name(&secret) {
        let message = format!(
            "invalid secret name {secret:?}: 1 to 63 lowercase ASCII letters, digits, '-' or '_', starting with a \
             letter or digit"
        );
        checker.report(&format!("{path}.secret"), message);
        return None;
    }
    let format = match format.unwrap_or(WebhookFormatV1::Hmac) {
        WebhookFormatV1::Huggingface => WebhookFormat::Huggingface,
        WebhookFormatV1::Github => WebhookFormat::Github,
        WebhookFormatV1::S3 => WebhookFormat::S3,
        WebhookFormatV1::Hmac => WebhookFormat::Hmac,
    };
    Some(TriggerSpec::Webhook { secret, format })
}

/// A secret name becomes part of a URL path and of an environment variable name.
fn valid_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn build_training(checker: &mut Checker, training: TrainingV1) -> (LoraSpec, TrainSpec) {
    let lora = build_lora(checker, training.lora.unwrap_or_default());
    let default = TrainSpec::default();
    let path = |field: &str| format!("training.{field}");
    let mut train = TrainSpec {
        steps: checker.at_least(training.steps, default.steps, &path("steps"), 1),
        batch_size: checker.at_least(training.batch_size, default.batch_size, &path("batch_size"), 1),
        learning_rate: checker.number(
            training.learning_rate,
            default.learning_rate,
            &path("learning_rate"),
            "a number greater than 0",
            |value| value > 0.0,
        ),
        weight_decay: checker.number(
            training.weight_decay,
            default.weight_decay,
            &path("weight_decay"),
            "a number at least 0",
            |value| value >= 0.0,
        ),
        max_seq_len: checker.at_least(training.max_seq_len, default.max_seq_len, &path("max_seq_len"), MIN_SEQ_LEN),
        seed: training.seed.unwrap_or(default.seed),
        eval_fraction: checker.number(
            training.eval_fraction,
            default.eval_fraction,
            &path("eval_fraction"),
            "between 0 and 1, both excluded",
            |value| value > 0.0 && value < 1.0,
        ),
        max_eval_examples: checker.at_least(
            training.max_eval_examples,
            default.max_eval_examples,
            &path("max_eval_examples"),
            1,
        ),
        max_new_tokens: checker.at_least(training.max_new_tokens, default.max_new_tokens, &path("max_new_tokens"), 1),
        eval_base: training.eval_base.unwrap_or(default.eval_base),
        ..default
    };
    let options = crate::training_options::TrainOptionsV1 {
        gradient_accumulation: training.gradient_accumulation,
        lr_schedule: training.lr_schedule,
        early_stopping: training.early_stopping,
        truncation: training.truncation,
        packing: training.packing,
        base_precision: training.base_precision,
    };
    crate::training_options::build_train_options(checker, options, &mut train);
    (lora, train)
}

fn build_lora(checker: &mut Checker, lora: LoraV1) -> LoraSpec {
    let default = LoraSpec::default();
    let rank = lora.rank.unwrap_or(default.rank);
    if !(1..=MAX_RANK).contains(&rank) {
        checker.report("training.lora.rank", format!("must be between 1 and {MAX_RANK}, got {rank}"));
    }
    let alpha = checker
        .number(lora.alpha, default.alpha, "training.lora.alpha", "a number greater than 0", |value| value > 0.0);
    let dropout =
        checker.number(lora.dropout, default.dropout, "training.lora.dropout", "at least 0 and less than 1", |value| {
            (0.0..1.0).contains(&value)
        });
    let targets = match lora.targets {
        None => default.targets,
        Some(targets) => build_targets(checker, targets),
    };
    let layers = build_layers(checker, lora.layers.unwrap_or(LayersV1::All));
    let (use_rslora, rank_pattern, alpha_pattern) = crate::training_options::build_lora_options(
        checker,
        lora.use_rslora,
        lora.rank_pattern,
        lora.alpha_pattern,
        MAX_RANK,
    );
    LoraSpec { rank, alpha, dropout, targets, layers, use_rslora, rank_pattern, alpha_pattern }
}

fn build_targets(checker: &mut Checker, targets: Vec<LoraTargetV1>) -> Vec<LoraTarget> {
    if targets.is_empty() {
        checker.report("training.lora.targets", "must list at least one of q, k, v, o, gate, up, down");
    }
    let mut built: Vec<LoraTarget> = Vec::new();
    for (position, target) in targets.into_iter().enumerate() {
        let target = match target {
            LoraTargetV1::Q => LoraTarget::Q,
            LoraTargetV1::K => LoraTarget::K,
            LoraTargetV1::V => LoraTarget::V,
            LoraTargetV1::O => LoraTarget::O,
            LoraTargetV1::Gate => LoraTarget::Gate,
            LoraTargetV1::Up => LoraTarget::Up,
            LoraTargetV1::Down => LoraTarget::Down,
        };
        if built.contains(&target) {
            let path = format!("training.lora.targets[{position}]");
            checker.report(&path, format!("duplicate target `{}`", target.as_str()));
        } else {
            built.push(target);
        }
    }
    built
}

fn build_layers(checker: &mut Checker, layers: LayersV1) -> LayerSelection {
    match layers {
        LayersV1::All => LayerSelection::All,
        LayersV1::Last(count) => {
            if count == 0 {
                checker.report("training.lora.layers.last", "must be at least 1, got 0");
            }
            LayerSelection::LastN(count)
        }
        LayersV1::Range(first, last) => {
            if first > last {
                checker.report(
                    "training.lora.layers.range",
                    format!("[{first}, {last}]: the first layer must not come after the last"),
                );
            }
            LayerSelection::List((first..=last).collect())
        }
        LayersV1::List(list) => {
            if list.is_empty() {
                checker.report("training.lora.layers", "must list at least one layer index (or say `all`)");
            }
            let mut seen = HashSet::new();
            for (position, layer) in list.iter().enumerate() {
                if !seen.insert(*layer) {
                    checker.report(&format!("training.lora.layers[{position}]"), format!("duplicate layer {layer}"));
                }
            }
            LayerSelection::List(list)
        }
    }
}

fn build_gates(checker: &mut Checker, eval: EvalV1) -> (Vec<GateSpec>, Vec<RegressionGateSpec>) {
    let gates = eval.gates.unwrap_or_default();
    for (position, gate) in gates.iter().enumerate() {
        let path = format!("eval.gates[{position}]");
        if gate.metric.trim().is_empty() {
            checker.report(&format!("{path}.metric"), "must name a metric, like `exact_match` or `eval_loss`");
        }
        for (bound, value) in [("min", gate.min), ("max", gate.max)] {
            if value.is_some_and(|value| !value.is_finite()) {
                checker.report(&format!("{path}.{bound}"), "must be a finite number");
            }
        }
        if let Some(tolerance) = gate.max_regression
            && !(tolerance.is_finite() && tolerance >= 0.0)
        {
            checker.report(&format!("{path}.max_regression"), format!("must be a number >= 0, got {tolerance}"));
        }
        match (gate.min, gate.max, gate.max_regression) {
            (None, None, None) => checker.report(&path, "needs `min`, `max`, `max_regression` or several"),
            (Some(min), Some(max), _) if min > max => {
                checker.report(&format!("{path}.min"), format!("min {min} is greater than max {max}"));
            }
            _ => {}
        }
    }
    let regression = gates
        .iter()
        .filter_map(|gate| {
            gate.max_regression.map(|tolerance| RegressionGateSpec {
                metric: gate.metric.clone(),
                direction: Direction::for_metric(&gate.metric),
                tolerance,
            })
        })
        .collect();
    let absolute = gates
        .into_iter()
        .filter(|gate| gate.min.is_some() || gate.max.is_some())
        .map(|gate| GateSpec { metric: gate.metric, min: gate.min, max: gate.max })
        .collect();
    (absolute, regression)
}

fn build_publish(checker: &mut Checker, publish: PublishV1, name: Option<&PipelineName>) -> Option<PublishSpec> {
    let adapter = match publish.adapter {
        Some(adapter) => {
            AdapterName::new(adapter).map_err(|error| checker.report("publish.adapter", error.to_string()))
        }
        // Both names follow the same rules: this only fails if the pipeline name was already reported.
        None => name.ok_or(()).and_then(|name| AdapterName::new(name.as_str()).map_err(|_| ())),
    };
    let channel = publish.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_string());
    let promotion = publish.promotion.and_then(|promotion| build_promotion(checker, promotion, &channel));
    // Channels become registry keys like names do, so they follow the same rules.
    let channel_ok = match PipelineName::new(channel.as_str()) {
        Ok(_) => true,
        Err(error) => {
            checker.report("publish.channel", format!("invalid channel name {channel:?}: {}", name_reason(&error)));
            false
        }
    };
    match adapter {
        Ok(adapter) if channel_ok => Some(PublishSpec { adapter, channel, promotion }),
        _ => None,
    }
}

fn build_promotion(checker: &mut Checker, promotion: PromotionV1, stable: &str) -> Option<PromotionSpec> {
    let canary_channel = promotion.canary.unwrap_or_else(|| DEFAULT_CANARY_CHANNEL.to_string());
    let mut ok = true;
    if let Err(error) = PipelineName::new(canary_channel.as_str()) {
        checker.report(
            "publish.promotion.canary",
            format!("invalid channel name {canary_channel:?}: {}", name_reason(&error)),
        );
        ok = false;
    } else if canary_channel == stable {
        checker.report("publish.promotion.canary", format!("must differ from publish.channel ({stable:?})"));
        ok = false;
    }
    let stable_after = match promotion.stable_after.as_deref().map(parse_duration) {
        None => {
            checker.report("publish.promotion", "missing: stable_after, how long a canary must stay clean, like `1h`");
            None
        }
        Some(Ok(duration)) if duration >= MIN_STABLE_AFTER => Some(duration),
        Some(Ok(duration)) => {
            let message = format!("must be at least 1m, got {}", format_duration(duration));
            checker.report("publish.promotion.stable_after", message);
            None
        }
        Some(Err(message)) => {
            checker.report("publish.promotion.stable_after", message);
            None
        }
    };
    match stable_after {
        Some(stable_after) if ok => Some(PromotionSpec { canary_channel, stable_after }),
        _ => None,
    }
}

/// `512Mi`, `8Gi`, `1Ti`, `64Ki` or plain bytes.
fn parse_memory(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        "Ti" => 40,
        _ => return Err(format!("invalid memory {text:?}: expected a whole number with Ki, Mi, Gi or Ti, like 8Gi")),
    };
    let value: u64 =
        digits.parse().map_err(|_| format!("invalid memory {text:?}: expected a whole number, like 8Gi"))?;
    value
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("invalid memory {text:?}: must be above 0 and below 16Ei"))
}

fn build_resources(checker: &mut Checker, resources: ResourcesV1) -> ResourcesSpec {
    let cpus = resources.cpus.filter(|cpus| {
        let ok = cpus.is_finite() && *cpus > 0.0 && *cpus <= 1024.0;
        if !ok {
            checker.report("resources.cpus", format!("must be a number above 0 and at most 1024, got {cpus}"));
        }
        ok
    });
    let memory_bytes = resources.memory.and_then(|memory| match parse_memory(&memory) {
        Ok(bytes) => Some(bytes),
        Err(message) => {
            checker.report("resources.memory", message);
            None
        }
    });
    let timeout = resources.timeout.and_then(|timeout| match parse_duration(&timeout) {
        Ok(duration) if duration >= MIN_WATCH_INTERVAL => Some(duration),
        Ok(duration) => {
            checker.report("resources.timeout", format!("must be at least 1s, got {}", format_duration(duration)));
            None
        }
        Err(message) => {
            checker.report("resources.timeout", message);
            None
        }
    });
    ResourcesSpec { cpus, memory_bytes, gpus: resources.gpus.unwrap_or(0), timeout }
}

/// The rule a name broke, without the name kind that `CoreError` puts first.
fn name_reason(error: &CoreError) -> String {
    match error {
        CoreError::InvalidName { reason, .. } => (*reason).to_string(),
        other => other.to_string(),
    }
}
