//! Eval gates: thresholds on named metrics, decided without IO. A failed gate is a normal outcome.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::training::Metrics;

pub mod regression;

pub use regression::{Direction, RegressionGateSpec, evaluate_regression_gates};

/// One gate: a metric with a lower and/or upper bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateSpec {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// The decision of one gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub metric: String,
    /// The measured value; `None` when the metric was not produced.
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub passed: bool,
    /// Why it passed or failed, for people.
    pub reason: String,
}

/// Every gate's decision; `passed` only when all passed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReport {
    pub passed: bool,
    pub results: Vec<GateResult>,
}

impl fmt::Display for GateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "gates: {}", if self.passed { "PASSED" } else { "FAILED" })?;
        for result in &self.results {
            writeln!(f, "  [{}] {}", if result.passed { "pass" } else { "FAIL" }, result.reason)?;
        }
        Ok(())
    }
}

/// Decides every gate against `metrics`. A metric that is missing or not finite fails its gate.
pub fn evaluate_gates(gates: &[GateSpec], metrics: &Metrics) -> GateReport {
    let results: Vec<GateResult> = gates.iter().map(|gate| evaluate_gate(gate, metrics)).collect();
    GateReport { passed: results.iter().all(|result| result.passed), results }
}

fn evaluate_gate(gate: &GateSpec, metrics: &Metrics) -> GateResult {
    let value = metrics.get(&gate.metric).copied();
    let (passed, reason) = match value {
        None => (false, format!("{}: metric was not produced", gate.metric)),
        Some(value) if !value.is_finite() => (false, format!("{} = {value}: not a finite number", gate.metric)),
        Some(value) => {
            let mut failures = Vec::new();
            if let Some(min) = gate.min.filter(|&min| value < min) {
                failures.push(format!("below the minimum {min}"));
            }
            if let Some(max) = gate.max.filter(|&max| value > max) {
                failures.push(format!("above the maximum {max}"));
            }
            let bounds = bounds_text(gate);
            if failures.is_empty() {
                (true, format!("{} = {value:.4} within {bounds}", gate.metric))
            } else {
                (false, format!("{} = {value:.4} {} ({bounds})", gate.metric, failures.join(" and ")))
            }
        }
    };
    GateResult { metric: gate.metric.clone(), value, min: gate.min, max: gate.max, passed, reason }
}

fn bounds_text(gate: &GateSpec) -> String {
    match (gate.min, gate.max) {
        (Some(min), Some(max)) => format!("[{min}, {max}]"),
        (Some(min), None) => format!(">= {min}"),
        (None, Some(max)) => format!("<= {max}"),
        (None, None) => "no bounds".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(gates: &[(&str, Option<f64>, Option<f64>)], metrics: &[(&str, f64)], expect_passed: &[bool]) {
        let gates: Vec<GateSpec> =
            gates.iter().map(|&(metric, min, max)| GateSpec { metric: metric.to_string(), min, max }).collect();
        let metrics: Metrics = metrics.iter().map(|&(name, value)| (name.to_string(), value)).collect();
        let report = evaluate_gates(&gates, &metrics);
        let passed: Vec<bool> = report.results.iter().map(|result| result.passed).collect();
        assert_eq!(passed, expect_passed, "{report}");
        assert_eq!(report.passed, expect_passed.iter().all(|&p| p));
    }

    #[test]
    fn bounds_are_inclusive() {
        check(&[("exact_match", Some(0.8), None)], &[("exact_match", 0.8)], &[true]);
        check(&[("eval_loss", None, Some(1.0))], &[("eval_loss", 1.0)], &[true]);
        check(&[("x", Some(0.0), Some(1.0))], &[("x", 0.5)], &[true]);
    }

    #[test]
    fn out_of_bounds_missing_and_nan_fail() {
        check(&[("exact_match", Some(0.8), None)], &[("exact_match", 0.79)], &[false]);
        check(&[("eval_loss", None, Some(1.0))], &[("eval_loss", 1.5)], &[false]);
        check(&[("exact_match", Some(0.8), None)], &[], &[false]);
        check(&[("eval_loss", None, Some(1.0))], &[("eval_loss", f64::NAN)], &[false]);
    }

    #[test]
    fn one_failing_gate_fails_the_report() {
        check(
            &[("exact_match", Some(0.5), None), ("eval_loss", None, Some(1.0))],
            &[("exact_match", 0.9), ("eval_loss", 2.0)],
            &[true, false],
        );
    }

    #[test]
    fn no_gates_pass() {
        check(&[], &[], &[]);
    }
}
