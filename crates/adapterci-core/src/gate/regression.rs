//! "No regression beyond a tolerance" gates: a metric is compared with the same metric of a reference report
//! (the version now served on the channel) instead of a fixed threshold. Decided without IO.

use serde::{Deserialize, Serialize};

use super::{GateReport, GateResult};
use crate::training::Metrics;

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
}

impl Direction {
    /// The usual direction of a metric by its name: losses, perplexities and divergences go down, the rest up.
    pub fn for_metric(metric: &str) -> Direction {
        let lower = ["loss", "perplexity", "kl"];
        if lower.iter().any(|word| metric.split('_').any(|part| part == *word)) {
            Direction::LowerIsBetter
        } else {
            Direction::HigherIsBetter
        }
    }
}

/// A metric may be worse than the reference's by at most `tolerance` (absolute, in the metric's units).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionGateSpec {
    pub metric: String,
    pub direction: Direction,
    pub tolerance: f64,
}

/// Decides every regression gate of `metrics` against `reference`. Without a reference (nothing served yet)
/// or when the reference lacks the metric, a gate passes and says why; a candidate metric that is missing or
/// not finite fails. Results carry the effective bound (`min` or `max`) the value was held to.
pub fn evaluate_regression_gates(
    gates: &[RegressionGateSpec],
    metrics: &Metrics,
    reference: Option<&Metrics>,
) -> GateReport {
    let results: Vec<GateResult> = gates.iter().map(|gate| evaluate(gate, metrics, reference)).collect();
    GateReport { passed: results.iter().all(|result| result.passed), results }
}

fn evaluate(gate: &RegressionGateSpec, metrics: &Metrics, reference: Option<&Metrics>) -> GateResult {
    let name = &gate.metric;
    let value = metrics.get(name).copied();
    let baseline = reference.and_then(|reference| reference.get(name).copied()).filter(|v| v.is_finite());
    let bound = baseline.map(|baseline| match gate.direction {
        Direction::HigherIsBetter => baseline - gate.tolerance,
        Direction::LowerIsBetter => baseline + gate.tolerance,
    });
    let (min, max) = match gate.direction {
        Direction::HigherIsBetter => (bound, None),
        Direction::LowerIsBetter => (None, bound),
    };
    let (passed, reason) = match (value, baseline, bound) {
        (None, _, _) => (false, format!("{name}: metric was not produced")),
        (Some(value), _, _) if !value.is_finite() => (false, format!("{name} = {value}: not a finite number")),
        (Some(value), None, _) if reference.is_none() => {
            (true, format!("{name} = {value:.4}: no served version to compare with"))
        }
        (Some(value), None, _) => (true, format!("{name} = {value:.4}: the served version has no {name}")),
        (Some(value), Some(baseline), Some(bound)) => {
            let within = match gate.direction {
                Direction::HigherIsBetter => value >= bound,
                Direction::LowerIsBetter => value <= bound,
            };
            let verb = if within { "within" } else { "regressed beyond" };
            let tolerance = gate.tolerance;
            (within, format!("{name} = {value:.4} {verb} the tolerance {tolerance} of the served {baseline:.4}"))
        }
        (Some(_), Some(_), None) => (false, format!("{name}: no bound")),
    };
    GateResult { metric: name.clone(), value, min, max, passed, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(values: &[(&str, f64)]) -> Metrics {
        values.iter().map(|&(name, value)| (name.to_string(), value)).collect()
    }

    fn check(metric: &str, tolerance: f64, value: Option<f64>, reference: Option<f64>, expect: bool) -> GateReport {
        let gate = RegressionGateSpec { metric: metric.into(), direction: Direction::for_metric(metric), tolerance };
        let candidate = value.map_or_else(Metrics::new, |v| metrics(&[(metric, v)]));
        let served = reference.map(|r| metrics(&[(metric, r)]));
        let report = evaluate_regression_gates(&[gate], &candidate, served.as_ref());
        assert_eq!(report.passed, expect, "{report}");
        report
    }

    #[test]
    fn higher_is_better_metrics_may_drop_by_the_tolerance() {
        check("exact_match", 0.02, Some(0.90), Some(0.91), true);
        check("exact_match", 0.02, Some(0.89), Some(0.91), true);
        let report = check("exact_match", 0.02, Some(0.88), Some(0.91), false);
        assert!(report.results[0].reason.contains("regressed beyond the tolerance 0.02 of the served 0.9100"));
        assert!((report.results[0].min.unwrap_or_default() - 0.89).abs() < 1e-12);
        check("rouge_l", 0.0, Some(0.95), Some(0.5), true);
    }

    #[test]
    fn lower_is_better_metrics_may_rise_by_the_tolerance() {
        check("eval_loss", 0.1, Some(1.05), Some(1.0), true);
        check("eval_loss", 0.1, Some(1.2), Some(1.0), false);
        check("kl_to_base", 0.0, Some(0.3), Some(0.2), false);
        assert_eq!(Direction::for_metric("base_eval_loss"), Direction::LowerIsBetter);
        assert_eq!(Direction::for_metric("perplexity"), Direction::LowerIsBetter);
        assert_eq!(Direction::for_metric("json_valid"), Direction::HigherIsBetter);
    }

    #[test]
    fn missing_reference_passes_and_missing_candidate_fails() {
        let report = check("exact_match", 0.0, Some(0.5), None, true);
        assert!(report.results[0].reason.contains("no served version"));
        check("exact_match", 0.0, None, Some(0.5), false);
        check("exact_match", 0.0, Some(f64::NAN), Some(0.5), false);
        let gate =
            RegressionGateSpec { metric: "contains".into(), direction: Direction::HigherIsBetter, tolerance: 0.0 };
        let report = evaluate_regression_gates(&[gate], &metrics(&[("contains", 0.1)]), Some(&metrics(&[])));
        assert!(report.passed && report.results[0].reason.contains("the served version has no contains"));
    }
}
