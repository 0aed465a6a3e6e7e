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

/// The public-domain prose corpus (`$PROSE` when set, else the repository's gzipped copy, read through `zcat`).
#[allow(dead_code)] // not every probe reads it
pub fn prose() -> anyhow::Result<String> {
    use anyhow::Context;
    if let Ok(path) = std::env::var("PROSE") {
        return std::fs::read_to_string(&path).with_context(|| format!("PROSE={path}"));
    }
    let gz = format!("{ROOT}/scripts/bench/data/public_domain_prose.txt.gz");
    let out = std::process::Command::new("zcat").arg(&gz).output().with_context(|| format!("zcat {gz}"))?;
    anyhow::ensure!(out.status.success(), "zcat {gz}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).with_context(|| format!("{gz} is not UTF-8 text"))
}

/// The model, its teacher-text statistics, and two more: on held-out natural text (the eval text, 256-token
/// chunks) and on 32 sequences of 128 tokens of the prose corpus.
#[allow(dead_code)] // not every probe uses them
pub struct ProbeStatistics {
    pub base: BaseModel,
    pub teacher: Hessians,
    pub held: Hessians,
    pub prose: Hessians,
}

#[allow(dead_code)]
pub fn model_and_three_statistics() -> anyhow::Result<ProbeStatistics> {
    use adapterci_engine::calibrate::chunk_tokens;
    let (base, teacher) = model_and_statistics()?;
    let held_text = std::fs::read_to_string(format!("{ROOT}/scripts/oracles/data/natural_english.txt"))?;
    let held = collect_hessians(base.llama(), &chunk_tokens(base.tokenizer(), &held_text, 256), 4)?;
    let prose_seqs: Vec<Vec<u32>> =
        chunk_tokens(base.tokenizer(), &prose()?, 128).into_iter().step_by(7).take(32).collect();
    let prose = collect_hessians(base.llama(), &prose_seqs, 4)?;
    Ok(ProbeStatistics { base, teacher, held, prose })
}
