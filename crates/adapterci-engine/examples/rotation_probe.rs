//! Probe: does an orthogonal rotation of the input channels (incoherence processing, as in QuIP# and QuaRot) lower
//! the output error of palettizing a few real operations? Palettizes `W Q` under `Qᵀ H Q` (statistics over
//! teacher text + prose, as the product takes them) and measures `W − P(W Q) Qᵀ` on those statistics and on
//! held-out ones, for no rotation, a Haar-random orthogonal `Q`, and the product's seeded signs + DCT.
//!
//! `cargo run --release -p adapterci-engine --example rotation_probe`
use adapterci_engine::allocate::linear_ops;
use adapterci_engine::palettize::Rotation;
use adapterci_engine::palettize::{Calibration, PaletteSpec, palettize, reconstruction_error};
use tch::{Kind, Tensor};

#[path = "support/probe.rs"]
mod probe;

fn main() -> anyhow::Result<()> {
    let probe::ProbeStatistics { base, teacher: h, held, prose: prose_h } = probe::model_and_three_statistics()?;
    let t = base.llama();
    let ops = linear_ops(t.config());
    tch::manual_seed(5);
    for &i in &[3usize, 7 * 10 + 1, 7 * 15 + 4, 7 * 20 + 6, 7 * 29 + 2, 7 * 5, 7 * 25 + 5] {
        let op = ops[i];
        let w = t.linear_weight(op.layer, op.target).to_kind(Kind::Float);
        let hh = held.get(op.layer, op.target);
        let mixed = h.get(op.layer, op.target).zip(prose_h.get(op.layer, op.target)).map(|(a, b)| a + b);
        let mixed = anyhow::Context::context(mixed, "statistics for every operation")?;
        let n = op.cols as i64;
        let g = Tensor::randn([n, n], (Kind::Double, tch::Device::Cpu));
        let (haar, _) = Tensor::linalg_qr(&g, "reduced");
        let rotations = [
            ("none", Tensor::eye(n, (Kind::Float, tch::Device::Cpu))),
            ("haar", haar.to_kind(Kind::Float)),
            ("signs+dct", Rotation { seed: 1 }.matrix(op.cols, tch::Device::Cpu)),
        ];
        println!("{} [{}x{}]", op.name(), op.rows, op.cols);
        for (label, spec) in [
            ("2b G8s", PaletteSpec { bits: 2, group_rows: 8, row_scale: true, rotation: None }),
            ("4b G32s", PaletteSpec { bits: 4, group_rows: 32, row_scale: true, rotation: None }),
        ] {
            for refit in [0usize, 3] {
                let mut line = format!("  {label} refit{refit}");
                for (name, q) in &rotations {
                    let hq = q.transpose(0, 1).matmul(&mixed).matmul(q);
                    let cal = Calibration { hessian: Some(&hq), weighted: true, compensate: true, refit_rounds: refit };
                    let approx =
                        palettize(&w.matmul(q), spec, cal)?.dequantize(tch::Device::Cpu).matmul(&q.transpose(0, 1));
                    line.push_str(&format!(
                        " | {name} {:.4}/{:.4}",
                        reconstruction_error(&w, &approx, Some(&mixed)),
                        reconstruction_error(&w, &approx, hh)
                    ));
                }
                println!("{line}");
            }
        }
    }
    Ok(())
}
