//! The behaviour every `RunMetricsStore` must show: steps come back in step order with every value intact, a
//! step recorded again replaces the earlier one, runs do not see each other's steps, an unknown run has none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use adapterci_core::run_metrics::{RunMetricsStore, StepMetric};

fn metric(step: u64, loss: f64) -> StepMetric {
    StepMetric { step, loss, learning_rate: 1e-3 * step as f64, tokens: 100 + step, seconds: 0.25 * step as f64 }
}

/// Runs every case against `store`, which must start empty.
pub async fn run_metrics_conformance(store: &dyn RunMetricsStore) {
    assert!(store.step_metrics("no-such-run").await.unwrap().is_empty());

    // out of order and in two calls; a large batch crosses any insert chunking
    let steps: Vec<StepMetric> = (1..=250).rev().map(|step| metric(step, 10.0 / step as f64)).collect();
    store.record_step_metrics("run-a", &steps[..120]).await.unwrap();
    store.record_step_metrics("run-a", &steps[120..]).await.unwrap();
    store.record_step_metrics("run-a", &[]).await.unwrap();
    let read = store.step_metrics("run-a").await.unwrap();
    let expected: Vec<StepMetric> = (1..=250).map(|step| metric(step, 10.0 / step as f64)).collect();
    assert_eq!(read, expected, "every value intact, in step order");

    // a resumed run replays steps 249 and 250: one row per step, the newest values
    store.record_step_metrics("run-a", &[metric(249, 0.5), metric(250, 0.25)]).await.unwrap();
    let read = store.step_metrics("run-a").await.unwrap();
    assert_eq!(read.len(), 250);
    assert_eq!(read[248..], [metric(249, 0.5), metric(250, 0.25)]);

    store.record_step_metrics("run-b", &[metric(1, 3.0)]).await.unwrap();
    assert_eq!(store.step_metrics("run-b").await.unwrap(), [metric(1, 3.0)]);
    assert_eq!(store.step_metrics("run-a").await.unwrap().len(), 250, "runs do not see each other's steps");
}
