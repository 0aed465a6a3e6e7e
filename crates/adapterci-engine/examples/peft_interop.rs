//! The engine's side of the PEFT round trip (`scripts/peft/peft_roundtrip.py` drives it).
//!
//! ```text
//! peft_interop write-tiny MODEL.gguf SEED          a tiny random-weight model (the fixture's base)
//! peft_interop train MODEL.gguf OUT_DIR STEPS SEED  train a LoRA (rank 8, alpha 16, rsLoRA, down_proj at
//!                                                   rank 4, all seven modules, f32) on a fixed text and
//!                                                   export it as a PEFT directory
//! peft_interop logits MODEL.gguf [PEFT_DIR]        stdin: a JSON list of token ids; stdout: {"logits":
//!                                                   [[f32; vocab] per position]} with the PEFT adapter imported
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use adapterci_core::training::{AdapterConfig, LoraTarget, NoProgress, TrainSpec};
use adapterci_engine::dataset::Example;
use adapterci_engine::gguf::GgufFile;
use adapterci_engine::llama::Llama;
use adapterci_engine::lora::peft::{PeftFiles, export_peft, import_peft, read_peft_dir, write_peft_dir};
use adapterci_engine::lora::{LoraOptions, LoraWeights};
use adapterci_engine::tiny::write_tiny_model;
use adapterci_engine::train::train_lora;
use adapterci_engine::{LlamaConfig, Tokenizer};
use anyhow::{Context, bail};
use tch::{Device, Kind, Tensor};

const TEXT: &str = "The adapter learns a small low-rank update for each task while the base model stays frozen. \
                    Exporting it lets other tools load the same weights.";

fn load(model: &Path) -> anyhow::Result<(LlamaConfig, Llama, Tokenizer)> {
    let file = GgufFile::open(model)?;
    let config = LlamaConfig::from_gguf(&file)?;
    let llama = Llama::load(&file, &config, Device::Cpu)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    Ok((config, llama, tokenizer))
}

fn train(model: &Path, out: &Path, steps: usize, seed: u64) -> anyhow::Result<()> {
    let (config, llama, tokenizer) = load(model)?;
    let ids: Vec<u32> = tokenizer.encode(TEXT, false).into_iter().take(48).collect();
    let example = Example {
        line: 1,
        loss_mask: vec![true; ids.len()],
        input_ids: ids,
        prompt_len: 0,
        prompt: String::new(),
        expected: String::new(),
        truncated_tokens: 0,
    };
    let adapter = AdapterConfig {
        rank: 8,
        alpha: 16.0,
        targets: LoraTarget::ALL.to_vec(),
        layers: (0..config.num_layers).collect(),
        dtype: "f32".into(),
    };
    let options = LoraOptions {
        use_rslora: true,
        rank_pattern: BTreeMap::from([("down_proj".to_owned(), 4)]),
        alpha_pattern: BTreeMap::new(),
    };
    let mut lora = LoraWeights::init_with_options(&adapter, &options, 0.0, &config, seed, Device::Cpu)?;
    let spec = TrainSpec { steps, batch_size: 1, learning_rate: 1e-2, seed, ..TrainSpec::default() };
    let report = train_lora(&llama, &mut lora, &[example], &spec, tokenizer.eos_id(), &NoProgress)?;
    eprintln!("trained {steps} steps: loss {:.4} -> {:.4}", report.loss_curve[0].1, report.final_loss(1));
    // PEFT only records the base's name; the file name keeps temporary directories out of fixtures.
    let base_name = model.file_name().map_or_else(|| model.display().to_string(), |n| n.to_string_lossy().into_owned());
    let files = export_peft(&lora, &config, &base_name)?;
    write_peft_dir(out, &files)?;
    Ok(())
}

fn logits(model: &Path, adapter: Option<&Path>) -> anyhow::Result<()> {
    let (config, llama, _) = load(model)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let ids: Vec<i64> = serde_json::from_str(&input).context("stdin must be a JSON list of token ids")?;
    let lora = adapter.map(|dir| -> anyhow::Result<LoraWeights> {
        let files: PeftFiles = read_peft_dir(dir)?;
        Ok(import_peft(&files, &config, Device::Cpu)?)
    });
    let lora = lora.transpose()?;
    let input = Tensor::from_slice(&ids).unsqueeze(0);
    let out = tch::no_grad(|| llama.forward(&input, 0, None, lora.as_ref())).to_kind(Kind::Float).squeeze_dim(0);
    let rows: Vec<Vec<f32>> = (0..out.size()[0]).map(|i| Vec::<f32>::try_from(out.get(i))).collect::<Result<_, _>>()?;
    println!("{}", serde_json::json!({ "logits": rows }));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tch::set_num_threads(std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).with_context(|| format!("argument {i} is missing (see the file header)"));
    match args.first().map(String::as_str) {
        Some("write-tiny") => Ok(write_tiny_model(&PathBuf::from(arg(1)?), arg(2)?.parse()?)?),
        Some("train") => train(&PathBuf::from(arg(1)?), &PathBuf::from(arg(2)?), arg(3)?.parse()?, arg(4)?.parse()?),
        Some("logits") => logits(&PathBuf::from(arg(1)?), args.get(2).map(Path::new)),
        _ => bail!("usage: peft_interop write-tiny|train|logits ... (see the file header)"),
    }
}
