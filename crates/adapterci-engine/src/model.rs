//! The base model facade other crates use without naming tch: load a GGUF (weights, tokenizer, digest),
//! generate, score, and load adapters checked against the model.

use std::path::{Path, PathBuf};

use adapterci_core::Digest;
use adapterci_core::training::AdapterConfig;
use tch::{Kind, Tensor};

use crate::EngineError;
use crate::config::LlamaConfig;
use crate::device::DeviceChoice;
use crate::generate::{Generation, GenerationParams, generate};
use crate::gguf::GgufFile;
use crate::llama::Llama;
use crate::lora::LoraWeights;
use crate::release::{BaseRelease, is_release_path};
use crate::tokenizer::{Tokenizer, TokenizerSpec};

/// A loaded base model: decoder, tokenizer and the sha256 of its file. Owned by one thread at a time.
pub struct BaseModel {
    llama: Llama,
    tokenizer: Tokenizer,
    digest: Digest,
    name: String,
    path: PathBuf,
}

impl std::fmt::Debug for BaseModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseModel")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("digest", &self.digest)
            .field("device", &self.llama.device())
            .finish()
    }
}

/// The decoder shape of a model file, GGUF or base release, without loading its weights onto a device.
pub fn model_config(path: &Path) -> Result<LlamaConfig, EngineError> {
    if is_release_path(path)? {
        return Ok(BaseRelease::open(path)?.0.config);
    }
    LlamaConfig::from_gguf(&GgufFile::open(path)?)
}

/// [`model_config`] and the sha256 of the file it was read from (the digest [`BaseModel::load`] gives), from one
/// read of the file: what an export that needs only shapes checks against the digest a version was trained on.
pub fn model_config_and_digest(path: &Path) -> Result<(LlamaConfig, Digest), EngineError> {
    if is_release_path(path)? {
        let (release, digest) = BaseRelease::open(path)?;
        return Ok((release.config, digest));
    }
    let file = GgufFile::open(path)?;
    Ok((LlamaConfig::from_gguf(&file)?, Digest::of(file.as_bytes())))
}

impl BaseModel {
    /// Reads a `llama` GGUF: config, f32 weights on `device`, tokenizer from its metadata, sha256 of the file.
    ///
    /// A base release file (palettized safetensors, see [`crate::release`]) loads too: its tables are
    /// dequantized to f32 at load, its digest is the release file's.
    pub fn load(path: &Path, device: DeviceChoice) -> Result<BaseModel, EngineError> {
        let device = device.resolve()?;
        if is_release_path(path)? {
            let (release, digest) = BaseRelease::open(path)?;
            let tokenizer = Tokenizer::from_spec(&release.tokenizer)?;
            let llama = release.to_llama(device, path)?;
            let name = format!("{} ({})", release.manifest.source_model_name, "base release");
            return Ok(BaseModel { llama, tokenizer, digest, name, path: path.to_path_buf() });
        }
        let file = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_spec(&TokenizerSpec::from_gguf(&file)?)?;
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(EngineError::UnsupportedModel(format!(
                "{}: the tokenizer has {} tokens but the model's vocabulary is {}",
                path.display(),
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let llama = Llama::load(&file, &config, device)?;
        let digest = Digest::of(file.as_bytes());
        let name = match file.get("general.name").and_then(|v| v.as_str()) {
            Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
            _ => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        Ok(BaseModel { llama, tokenizer, digest, name, path: path.to_path_buf() })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &LlamaConfig {
        self.llama.config()
    }

    /// The sha256 of the GGUF file.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// `general.name` from the metadata, or the file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decoder, for training.
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// Whether the model runs on a CUDA device.
    pub fn is_cuda(&self) -> bool {
        self.llama.device().is_cuda()
    }

    /// Generates after `prompt_ids`, with `adapter` applied when given.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        adapter: Option<&LoadedAdapter>,
        params: &GenerationParams,
    ) -> Result<Generation, EngineError> {
        generate(&self.llama, prompt_ids, adapter.map(LoadedAdapter::lora), params)
    }

    /// Teacher-forced logits: for every position of `ids`, the scores of the next token (`[len][vocab]`).
    pub fn logits(&self, ids: &[u32], adapter: Option<&LoadedAdapter>) -> Result<Vec<Vec<f32>>, EngineError> {
        let vocab = self.config().vocab_size;
        if ids.is_empty() {
            return Err(EngineError::InvalidConfig("no tokens to score".into()));
        }
        if let Some((index, id)) = ids.iter().enumerate().find(|(_, id)| **id as usize >= vocab) {
            return Err(EngineError::InvalidConfig(format!(
                "token {index} is {id}, outside the vocabulary of {vocab}"
            )));
        }
        let input: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let input = Tensor::from_slice(&input).unsqueeze(0).to_device(self.llama.device());
        self.llama.check_forward(&input, 0, None)?;
        let logits = tch::no_grad(|| self.llama.forward(&input, 0, None, adapter.map(LoadedAdapter::lora)));
        let flat = Vec::<f32>::try_from(logits.to_kind(Kind::Float).to_device(tch::Device::Cpu).reshape([-1]))?;
        Ok(flat.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    /// Reads an adapter file and checks every tensor against this model.
    pub fn load_adapter(&self, safetensors: &[u8]) -> Result<LoadedAdapter, EngineError> {
        let lora = LoraWeights::from_safetensors(safetensors, self.config(), self.llama.device())?;
        Ok(LoadedAdapter::from_lora(lora))
    }
}

/// An adapter ready for inference (no dropout).
#[derive(Debug)]
pub struct LoadedAdapter {
    lora: LoraWeights,
}

impl LoadedAdapter {
    pub fn from_lora(mut lora: LoraWeights) -> LoadedAdapter {
        lora.set_training(false);
        LoadedAdapter { lora }
    }

    pub fn lora(&self) -> &LoraWeights {
        &self.lora
    }

    pub fn config(&self) -> &AdapterConfig {
        self.lora.config()
    }

    /// Bytes of its weights in the file's dtype (what an adapter cache counts).
    pub fn size_bytes(&self) -> usize {
        self.lora.size_bytes()
    }
}
