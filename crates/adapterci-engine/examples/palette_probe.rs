//! Probe: output-space reconstruction error of a few real operations under several palette layouts and methods
//! (nearest entry, GPTQ, GPTQ with least-squares table/scale refit rounds), on teacher-text calibration
//! statistics and on held-out statistics (natural text the calibration did not see).
//!
//! `cargo run --release -p adapterci-engine --example palette_probe`
use adapterci_engine::allocate::linear_ops;
use adapterci_engine::palettize::{Calibration, PaletteSpec, palettize, reconstruction_error};

#[path = "support/probe.rs"]
mod probe;

fn main() -> anyhow::Result<()> {
    let probe::ProbeStatistics { base, teacher: h, held, prose: prose_h } = probe::model_and_three_statistics()?;
    let t = base.llama();
    let ops = linear_ops(t.config());
    for &i in &[3usize, 7 * 10 + 1, 7 * 15 + 4, 7 * 20 + 6, 7 * 29 + 2] {
        let op = ops[i];
        let w = t.linear_weight(op.layer, op.target);
        let hs = h.get(op.layer, op.target);
        let hh = held.get(op.layer, op.target);
        println!("{}", op.name());
        let mixed = hs.zip(prose_h.get(op.layer, op.target)).map(|(a, b)| a + b);
        for (label, spec) in [
            ("2b G8s", PaletteSpec { bits: 2, group_rows: 8, row_scale: true, rotation: None }),
            ("4b G32s", PaletteSpec { bits: 4, group_rows: 32, row_scale: true, rotation: None }),
        ] {
            let mut line = format!("  {label} ({:.3}b)", spec.bits_per_weight(op.rows, op.cols));
            for (method, compensate, refit_rounds, hs_used) in [
                ("nearest", false, 0, hs),
                ("gptq", true, 0, hs),
                ("gptq+refit3", true, 3, hs),
                ("+prose H: gptq+refit3", true, 3, mixed.as_ref()),
            ] {
                let calibration = Calibration { hessian: hs_used, weighted: true, compensate, refit_rounds };
                let p = palettize(w, spec, calibration)?;
                let approx = p.dequantize(tch::Device::Cpu);
                let (calib, held) = (reconstruction_error(w, &approx, hs), reconstruction_error(w, &approx, hh));
                line.push_str(&format!(" | {method} {calib:.4} / held {held:.4}"));
            }
            println!("{line}");
        }
    }
    Ok(())
}
