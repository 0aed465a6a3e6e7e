//! Probe: output-space reconstruction error of a few real operations under several 2-bit palette layouts.
use adapterci_engine::allocate::linear_ops;
use adapterci_engine::calibrate::{TeacherTextSpec, collect_hessians, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;
use adapterci_engine::palettize::{Calibration, PaletteSpec, palettize, reconstruction_error};

fn main() -> anyhow::Result<()> {
    adapterci_engine::device::set_threads(1);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let base = BaseModel::load(std::path::Path::new(path), DeviceChoice::Cpu)?;
    let t = base.llama();
    let prompts = prompt_ids(base.tokenizer(), None)?;
    let seqs = teacher_text(
        t,
        &prompts,
        &TeacherTextSpec { sequences: 16, seq_len: 64, batch: 16, temperature: 1.0, seed: 1 },
        &mut |_, _| {},
    )?;
    let h = collect_hessians(t, &seqs, 4)?;
    let ops = linear_ops(t.config());
    for &i in &[3usize, 7 * 10 + 1, 7 * 15 + 4, 7 * 20 + 6, 7 * 29 + 2] {
        let op = ops[i];
        let w = t.linear_weight(op.layer, op.target);
        let hs = h.get(op.layer, op.target);
        let mut line = format!("{:<24}", op.name());
        for (label, spec, weighted, comp) in [
            ("G8s nearest", PaletteSpec { bits: 2, group_rows: 8, row_scale: true }, false, false),
            ("G8s gptq", PaletteSpec { bits: 2, group_rows: 8, row_scale: true }, true, true),
            ("G1 gptq", PaletteSpec { bits: 2, group_rows: 1, row_scale: false }, true, true),
            ("G1s gptq", PaletteSpec { bits: 2, group_rows: 1, row_scale: true }, true, true),
            ("G1 gptq unweighted", PaletteSpec { bits: 2, group_rows: 1, row_scale: false }, false, true),
            ("4b G8s gptq", PaletteSpec { bits: 4, group_rows: 8, row_scale: true }, true, true),
            ("4b G32s gptq", PaletteSpec { bits: 4, group_rows: 32, row_scale: true }, true, true),
        ] {
            let p = palettize(w, spec, Calibration { hessian: hs, weighted, compensate: comp })?;
            let e = reconstruction_error(w, &p.dequantize(tch::Device::Cpu), hs);
            line.push_str(&format!(" | {label} {e:.4} ({:.3}b)", spec.bits_per_weight(op.rows, op.cols)));
        }
        println!("{line}");
    }
    Ok(())
}
