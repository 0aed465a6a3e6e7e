//! Probe: does alternating the palettization with the rank-16 correction (LoftQ's alternation, under the
//! calibration statistics as the calibrated start does) lower the joint output error `‖(W − Q − L) X‖`?
//! Q_0 = palettize(W); L_t = best rank-16 correction of W − Q_t under H; Q_{t+1} = palettize(W − L_t).
//!
//! `[ROUNDS=2] [ROTATION=off] cargo run --release -p adapterci-engine --example loftq_probe` (`ROTATION=off`:
//! palettize the weights unrotated)
use adapterci_engine::allocate::{JOINT_RANK, Method, linear_ops};
use adapterci_engine::palettize::{Calibration, palettize};
use adapterci_engine::recover::{best_low_rank, damped_square_root};
use anyhow::Context;
use tch::{Kind, Tensor};

#[path = "support/probe.rs"]
mod probe;

fn error(e: &Tensor, h: &Tensor) -> f64 {
    (e.matmul(h) * e).sum(Kind::Float).double_value(&[])
}

fn main() -> anyhow::Result<()> {
    let (base, hs) = probe::model_and_statistics()?;
    let t = base.llama();
    let ops = linear_ops(t.config());
    let rotation = if std::env::var("ROTATION").as_deref() == Ok("off") { None } else { Method::default().rotation };
    let method = Method { rotation, ..Method::default() };
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    for &i in &[3usize, 7 * 10 + 1, 7 * 15, 7 * 20 + 2, 7 * 29 + 2] {
        let op = ops[i];
        let w = t.linear_weight(op.layer, op.target).to_kind(Kind::Float);
        let h = hs.get(op.layer, op.target).context("no statistics")?.to_kind(Kind::Float);
        let (s, s_inv) = damped_square_root(&h)?;
        let low_rank = |e: &Tensor| best_low_rank(e, &s, &s_inv, JOINT_RANK);
        let total = error(&w, &h);
        for bits in [2u8, 4] {
            let calibration =
                Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds: method.refit_rounds };
            let mut q = palettize(&w, method.spec(bits), calibration)?.dequantize(w.device());
            let mut line = format!("{:<22} {bits} bits:", op.name());
            for round in 0..=rounds {
                let l = low_rank(&(&w - &q))?;
                line += &format!(
                    "  t{round} quant {:.5} joint {:.5}",
                    error(&(&w - &q), &h) / total,
                    error(&(&w - &q - &l), &h) / total
                );
                if round < rounds {
                    q = palettize(&(&w - &l), method.spec(bits), calibration)?.dequantize(w.device());
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
