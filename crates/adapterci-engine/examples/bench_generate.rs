//! Times prefill and decode of the base model on the CPU: `cargo run --release --example bench_generate --
//! MODEL.gguf [threads] [prompt_tokens] [new_tokens]`. Prints one line per measurement; no assertions.

use std::time::Instant;

use adapterci_engine::device::{DeviceChoice, set_threads};
use adapterci_engine::generate::GenerationParams;
use adapterci_engine::model::BaseModel;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path =
        args.get(1).ok_or_else(|| anyhow::anyhow!("usage: bench_generate MODEL.gguf [threads] [prompt] [new]"))?;
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let prompt_tokens: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(64);
    let new_tokens: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(64);
    set_threads(threads);
    let started = Instant::now();
    let model = BaseModel::load(std::path::Path::new(path), DeviceChoice::Auto)?;
    println!("load: {:.3}s", started.elapsed().as_secs_f64());
    let text = "The quick brown fox jumps over the lazy dog while the assistant explains why the sky is blue. ";
    let mut prompt = Vec::new();
    while prompt.len() < prompt_tokens {
        prompt.extend(model.tokenizer().encode(text, false));
    }
    prompt.truncate(prompt_tokens);
    let params = GenerationParams { max_new_tokens: new_tokens, ..GenerationParams::default() };
    for run in 0..3 {
        let generation = model.generate(&prompt, None, &params)?;
        let ttft = generation.time_to_first_token.as_secs_f64();
        println!(
            "run {run}: threads {threads}, prompt {} tokens, ttft {:.1} ms ({:.0} prompt tok/s), decode {:.1} tok/s over {} tokens",
            prompt.len(),
            ttft * 1000.0,
            prompt.len() as f64 / ttft,
            generation.decode_tokens_per_second,
            generation.tokens.len()
        );
    }
    Ok(())
}
