//! Byte-level BPE tokenizer built from GGUF metadata, token for token identical to llama.cpp's.
//!
//! Encoding is: split the text at special tokens (llama.cpp's `tokenizer_st_partition`), pre-tokenize each plain
//! fragment into words ([`pretokenize`]), then merge each word's bytes by rank ([`bpe`]). The GGUF keys read are
//! `tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id, eos_token_id, padding_token_id,
//! add_bos_token}` and `tokenizer.chat_template`.

mod bpe;
mod pretokenize;
mod stream;
mod tiny;

use std::collections::HashMap;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::EngineError;
use crate::gguf::{GgufFile, GgufValue};

use bpe::{Bpe, Merge, PairMap};
use pretokenize::PreTokenizer;

pub use stream::DecodeStream;
pub use tiny::{TINY_VOCAB_SIZE, tiny_tokenizer_spec};

/// llama.cpp's token types (`llama_token_type`, stored in `tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The tokenizer as GGUF metadata describes it; the one place that knows the GGUF keys.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenizerSpec {
    /// `tokenizer.ggml.model`; only `gpt2` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer regex family, e.g. `smollm`.
    pub pre: String,
    pub tokens: Vec<String>,
    /// One of [`token_type`] per token.
    pub token_types: Vec<i32>,
    /// `"left right"` pairs, highest priority first.
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: u32,
    pub pad_id: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

impl TokenizerSpec {
    /// Reads the tokenizer keys of a GGUF file. Missing or mistyped keys are errors naming the key; whether the
    /// values describe a usable tokenizer is checked by [`Tokenizer::from_spec`].
    pub fn from_gguf(file: &GgufFile) -> Result<Self, EngineError> {
        let tokens = file.get_string_array(KEY_TOKENS)?;
        // llama.cpp treats a vocabulary without types as all-normal.
        let token_types = match file.get(KEY_TOKEN_TYPE) {
            Some(_) => file.get_i32_array(KEY_TOKEN_TYPE)?,
            None => vec![token_type::NORMAL; tokens.len()],
        };
        let optional_id = |key: &str| file.get(key).map(|_| file.get_u32(key)).transpose();
        let add_bos = match file.get(KEY_ADD_BOS) {
            None => false,
            Some(GgufValue::Bool(value)) => *value,
            Some(other) => {
                return Err(EngineError::Tokenizer(format!(
                    "{}: metadata key {KEY_ADD_BOS:?} should be a bool, found {}",
                    file.path().display(),
                    other.type_name()
                )));
            }
        };
        let chat_template = match file.get(KEY_CHAT_TEMPLATE) {
            Some(_) => Some(file.get_str(KEY_CHAT_TEMPLATE)?.to_owned()),
            None => None,
        };
        Ok(TokenizerSpec {
            model: file.get_str(KEY_MODEL)?.to_owned(),
            pre: file.get_str(KEY_PRE)?.to_owned(),
            tokens,
            token_types,
            merges: file.get_string_array(KEY_MERGES)?,
            bos_id: optional_id(KEY_BOS)?,
            eos_id: file.get_u32(KEY_EOS)?,
            pad_id: optional_id(KEY_PAD)?,
            add_bos,
            chat_template,
        })
    }

    /// The metadata entries that [`TokenizerSpec::from_gguf`] reads back, for writing tiny test models.
    pub fn to_gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let strings = |items: &[String]| GgufValue::Array(items.iter().cloned().map(GgufValue::String).collect());
        let mut entries = vec![
            (KEY_MODEL.to_owned(), GgufValue::String(self.model.clone())),
            (KEY_PRE.to_owned(), GgufValue::String(self.pre.clone())),
            (KEY_TOKENS.to_owned(), strings(&self.tokens)),
            (
                KEY_TOKEN_TYPE.to_owned(),
                GgufValue::Array(self.token_types.iter().copied().map(GgufValue::I32).collect()),
            ),
            (KEY_MERGES.to_owned(), strings(&self.merges)),
        ];
        if let Some(bos) = self.bos_id {
            entries.push((KEY_BOS.to_owned(), GgufValue::U32(bos)));
        }
        entries.push((KEY_EOS.to_owned(), GgufValue::U32(self.eos_id)));
        if let Some(pad) = self.pad_id {
            entries.push((KEY_PAD.to_owned(), GgufValue::U32(pad)));
        }
        entries.push((KEY_ADD_BOS.to_owned(), GgufValue::Bool(self.add_bos)));
        if let Some(template) = &self.chat_template {
            entries.push((KEY_CHAT_TEMPLATE.to_owned(), GgufValue::String(template.clone())));
        }
        entries
    }
}

/// A token matched as a whole in the text before BPE runs.
#[derive(Clone, Debug)]
struct SpecialToken {
    text: String,
    id: u32,
    /// Control and unknown tokens are matched only when the caller asks for special parsing; user-defined tokens
    /// always are (llama.cpp's rule).
    needs_parse_special: bool,
}

/// A byte-level BPE tokenizer. Cheap to share by reference; encoding takes `&self`.
pub struct Tokenizer {
    tokens: Vec<String>,
    token_types: Vec<i32>,
    token_to_id: HashMap<String, u32>,
    /// The bytes each token decodes to.
    token_bytes: Vec<Vec<u8>>,
    bpe: Bpe,
    pre: PreTokenizer,
    /// Longest first, as llama.cpp matches them.
    specials: Vec<SpecialToken>,
    bos_id: Option<u32>,
    eos_id: u32,
    pad_id: Option<u32>,
    add_bos: bool,
    /// The chat template, or why it cannot be used (reported by [`Tokenizer::render_chat`], so that a model
    /// with an unsupported template can still encode text).
    chat: Result<ChatTemplate, String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.bpe.merges.len())
            .field("pre", &self.pre)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

fn tokenizer_error(message: String) -> EngineError {
    EngineError::Tokenizer(message)
}

impl Tokenizer {
    /// Builds the tokenizer; an unsupported model or pre-tokenizer, inconsistent lengths, out-of-range ids or
    /// merges naming tokens outside the vocabulary are errors saying which.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Tokenizer, EngineError> {
        if spec.model != "gpt2" {
            return Err(tokenizer_error(format!(
                "unsupported tokenizer.ggml.model {:?} (only \"gpt2\", byte-level BPE, is supported)",
                spec.model
            )));
        }
        let pre = PreTokenizer::from_name(&spec.pre)?;
        validate_ids(spec)?;
        let mut token_to_id = HashMap::with_capacity(spec.tokens.len());
        for (id, token) in spec.tokens.iter().enumerate() {
            // Later duplicates win, as in llama.cpp's `token_to_id[text] = id`.
            token_to_id.insert(token.clone(), id as u32);
        }
        let bpe = build_bpe(spec, &token_to_id)?;
        let token_bytes =
            spec.tokens.iter().zip(&spec.token_types).map(|(token, &kind)| token_to_bytes(token, kind)).collect();
        let mut specials: Vec<SpecialToken> = spec
            .tokens
            .iter()
            .zip(&spec.token_types)
            .enumerate()
            .filter(|(_, (text, kind))| !text.is_empty() && is_special_type(**kind))
            .map(|(id, (text, &kind))| SpecialToken {
                text: text.clone(),
                id: id as u32,
                needs_parse_special: kind != token_type::USER_DEFINED,
            })
            .collect();
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let chat = ChatTemplate::for_vocabulary(spec.chat_template.as_deref(), |token| token_to_id.contains_key(token))
            .map_err(|error| error.to_string());
        Ok(Tokenizer {
            tokens: spec.tokens.clone(),
            token_types: spec.token_types.clone(),
            token_to_id,
            token_bytes,
            bpe,
            pre,
            specials,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            pad_id: spec.pad_id,
            add_bos: spec.add_bos,
            chat,
        })
    }

    /// Reads the tokenizer of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, EngineError> {
        Tokenizer::from_spec(&TokenizerSpec::from_gguf(file)?)
    }

    /// Token ids for `text`. With `parse_special`, control tokens written in the text (`<|im_start|>`) become
    /// their ids; without it they are tokenized as plain text. User-defined tokens always match (llama.cpp's
    /// rule). BOS is prepended only when the model asks for it (`tokenizer.ggml.add_bos_token`). Bytes the
    /// vocabulary cannot represent are dropped, as llama.cpp drops them.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.add_bos
            && let Some(bos) = self.bos_id
        {
            ids.push(bos);
        }
        let mut words = Vec::new();
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Special(id) => ids.push(id),
                Fragment::Text(start, end) => {
                    let plain = &text[start..end];
                    words.clear();
                    self.pre.split(plain, &mut words);
                    for word in &words {
                        self.bpe.encode_word(plain[word.clone()].as_bytes(), &mut ids);
                    }
                }
            }
        }
        ids
    }

    /// Splits `text` at special tokens, longest token first, as llama.cpp's `tokenizer_st_partition` does.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = vec![Fragment::Text(0, text.len())];
        for special in &self.specials {
            if special.needs_parse_special && !parse_special {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                let Fragment::Text(start, end) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut cursor = start;
                for (offset, matched) in text[start..end].match_indices(special.text.as_str()) {
                    if start + offset > cursor {
                        next.push(Fragment::Text(cursor, start + offset));
                    }
                    next.push(Fragment::Special(special.id));
                    cursor = start + offset + matched.len();
                }
                if cursor < end {
                    next.push(Fragment::Text(cursor, end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The text of `ids`; special tokens render as their text, so `decode(encode(x, true)) == x` whenever every
    /// byte of `x` is in the vocabulary. Invalid UTF-8 (a sequence cut mid-character) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }

    /// A decoder for tokens that arrive one at a time (streamed generation).
    pub fn decode_stream(&self) -> DecodeStream<'_> {
        DecodeStream::new(self)
    }

    /// The raw bytes of `ids`; ids outside the vocabulary contribute nothing.
    pub fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id).unwrap_or_default());
        }
        bytes
    }

    /// The bytes one token decodes to (for streaming decoders that join bytes across tokens).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.token_bytes.get(id as usize).map(Vec::as_slice)
    }

    /// The token that stands for one raw byte; `None` where the vocabulary lacks it (such bytes are dropped by
    /// [`Tokenizer::encode`]; SmolLM2 lacks 21, e.g. 0x04 and 0xC0).
    pub fn byte_token(&self, byte: u8) -> Option<u32> {
        self.bpe.byte_tokens[usize::from(byte)]
    }

    /// The vocabulary entry of `id` as stored (byte-level form, e.g. `Ġthe`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether `id` is a control, unknown or user-defined token (one matched whole, never produced from bytes).
    pub fn is_special(&self, id: u32) -> bool {
        self.token_types.get(id as usize).is_some_and(|&kind| is_special_type(kind))
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The id of a vocabulary entry, by its stored text (`<|im_end|>`, `Ġthe`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.token_to_id.get(token).copied()
    }

    /// Tokens that end a generation: EOS, and `<|im_end|>` when the vocabulary has it.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = vec![self.eos_id];
        if let Some(im_end) = self.token_id(crate::chat::IM_END)
            && im_end != self.eos_id
        {
            ids.push(im_end);
        }
        ids
    }

    /// Renders a conversation with the model's chat template (ChatML-family templates only).
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, EngineError> {
        match &self.chat {
            Ok(template) => template.render(messages, add_generation_prompt),
            Err(reason) => Err(EngineError::Tokenizer(reason.clone())),
        }
    }

    /// The parsed chat template, or the reason it is unusable.
    pub fn chat_template(&self) -> Result<&ChatTemplate, EngineError> {
        self.chat.as_ref().map_err(|reason| EngineError::Tokenizer(reason.clone()))
    }
}

#[derive(Clone, Copy, Debug)]
enum Fragment {
    /// A byte range of the input to pre-tokenize.
    Text(usize, usize),
    Special(u32),
}

fn is_special_type(kind: i32) -> bool {
    matches!(kind, token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN)
}

fn validate_ids(spec: &TokenizerSpec) -> Result<(), EngineError> {
    if spec.tokens.is_empty() {
        return Err(tokenizer_error("tokenizer.ggml.tokens is empty".to_owned()));
    }
    if spec.tokens.len() > u32::MAX as usize {
        return Err(tokenizer_error(format!("tokenizer.ggml.tokens has {} entries, too many", spec.tokens.len())));
    }
    if spec.token_types.len() != spec.tokens.len() {
        return Err(tokenizer_error(format!(
            "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
            spec.token_types.len(),
            spec.tokens.len()
        )));
    }
    let named = [("bos_token_id", spec.bos_id), ("eos_token_id", Some(spec.eos_id)), ("padding_token_id", spec.pad_id)];
    for (key, id) in named {
        if let Some(id) = id
            && id as usize >= spec.tokens.len()
        {
            return Err(tokenizer_error(format!(
                "tokenizer.ggml.{key} is {id}, outside the vocabulary of {} tokens",
                spec.tokens.len()
            )));
        }
    }
    Ok(())
}

/// Merge ranks by token pair. A merge whose result is a control/unknown token is left out so that such tokens are
/// never produced from plain text.
fn build_bpe(spec: &TokenizerSpec, token_to_id: &HashMap<String, u32>) -> Result<Bpe, EngineError> {
    let byte_table = bpe::byte_to_char_table();
    let mut byte_tokens = [None; 256];
    for (byte, ch) in byte_table.iter().enumerate() {
        byte_tokens[byte] = token_to_id.get(ch.to_string().as_str()).copied();
    }
    let mut merges = PairMap::default();
    merges.reserve(spec.merges.len());
    let lookup = |index: usize, part: &str| {
        token_to_id.get(part).copied().ok_or_else(|| {
            tokenizer_error(format!("tokenizer.ggml.merges[{index}] names {part:?}, which is not in the vocabulary"))
        })
    };
    for (index, merge) in spec.merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte, so a merge may start with a space.
        let split = merge.bytes().skip(1).position(|byte| byte == b' ').map(|at| at + 1);
        let Some(split) = split else {
            return Err(tokenizer_error(format!(
                "tokenizer.ggml.merges[{index}] is {merge:?}, expected \"left right\""
            )));
        };
        let (left, right) = (&merge[..split], &merge[split + 1..]);
        let merged_text = format!("{left}{right}");
        let (left, right, merged) = (lookup(index, left)?, lookup(index, right)?, lookup(index, &merged_text)?);
        let merged_type = spec.token_types[merged as usize];
        if matches!(merged_type, token_type::CONTROL | token_type::UNKNOWN) {
            continue;
        }
        let rank = u32::try_from(index).unwrap_or(u32::MAX);
        // The first occurrence of a pair keeps its rank (llama.cpp's `emplace`).
        merges.entry((left, right)).or_insert(Merge { rank, merged });
    }
    Ok(Bpe { byte_tokens, merges })
}

/// Normal tokens are byte-level text (each char one byte via GPT-2's table); special tokens are their own text.
fn token_to_bytes(token: &str, kind: i32) -> Vec<u8> {
    if is_special_type(kind) {
        return token.as_bytes().to_vec();
    }
    let table = byte_to_char_lookup();
    let mut bytes = Vec::with_capacity(token.len());
    for ch in token.chars() {
        match table.get(&ch) {
            Some(&byte) => bytes.push(byte),
            // Not byte-level text: keep the character itself rather than lose it.
            None => bytes.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    bytes
}

fn byte_to_char_lookup() -> &'static HashMap<char, u8> {
    static LOOKUP: std::sync::LazyLock<HashMap<char, u8>> = std::sync::LazyLock::new(|| {
        bpe::byte_to_char_table().iter().enumerate().map(|(byte, &ch)| (ch, byte as u8)).collect()
    });
    &LOOKUP
}

#[cfg(test)]
mod tests;
