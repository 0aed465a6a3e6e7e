//! The release file a build writes: the palettized operations, the source's other tensors and its tokenizer, in
//! the release format ([`crate::release`]).

use super::BuildOptions;
use crate::EngineError;
use crate::model::BaseModel;
use crate::palettize::PalettizedTensor;
use crate::release::{ReleaseContents, write_release};
use crate::tokenizer::TokenizerSpec;

/// The release file of `base` palettized into `linear` (in [`linear_ops`](crate::allocate::linear_ops) order)
/// and, when given, `embedding`, with the method and activation bits of `options`.
pub fn release_file(
    base: &BaseModel,
    options: &BuildOptions,
    linear: Vec<PalettizedTensor>,
    embedding: Option<PalettizedTensor>,
) -> Result<Vec<u8>, EngineError> {
    let tokenizer = tokenizer_spec(base)?;
    write_release(&ReleaseContents {
        source_model_digest: base.digest().clone(),
        source_model_name: base.name().to_string(),
        method: options.method,
        config: base.llama().config(),
        tokenizer: &tokenizer,
        linear,
        embedding,
        source: base.llama(),
        activation_bits: options.activation_bits,
    })
}

/// The tokenizer of a base model as its source file describes it (GGUF or release).
pub fn tokenizer_spec(base: &BaseModel) -> Result<TokenizerSpec, EngineError> {
    let path = base.path();
    if crate::release::is_release_path(path)? {
        let (release, _) = crate::release::BaseRelease::open(path)?;
        return Ok(release.tokenizer);
    }
    TokenizerSpec::from_gguf(&crate::gguf::GgufFile::open(path)?)
}
