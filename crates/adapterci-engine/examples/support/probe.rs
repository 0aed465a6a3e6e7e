//! The set-up the per-operation probes share: SmolLM2-135M on the CPU and its linear inputs' statistics over 32
//! teacher-written sequences of 128 tokens (seed 1).
use adapterci_engine::calibrate::{Hessians, TeacherTextSpec, collect_hessians, prompt_ids, teacher_text};
use adapterci_engine::device::DeviceChoice;
use adapterci_engine::model::BaseModel;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The model and the teacher-text statistics.
pub fn model_and_statistics() -> anyhow::Result<(BaseModel, Hessians)> {
    adapterci_engine::device::set_threads(2);
    let path = format!("{ROOT}/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let base = BaseModel::load(std::path::Path::new(&path), DeviceChoice::Cpu)?;
    let prompts = prompt_ids(base.tokenizer(), None)?;
    let spec = TeacherTextSpec { sequences: 32, seq_len: 128, batch: 16, temperature: 1.0, seed: 1 };
    let seqs = teacher_text(base.llama(), &prompts, &spec, &mut |_, _| {})?;
    let hessians = collect_hessians(base.llama(), &seqs, 4)?;
    Ok((base, hessians))
}
