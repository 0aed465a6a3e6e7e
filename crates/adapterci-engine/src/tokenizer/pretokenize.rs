//! Pre-tokenization: splits text into the words that byte-level BPE merges within, exactly as llama.cpp does.
//!
//! llama.cpp (`src/unicode.cpp`) does not run the GPT-2 regex through a regex engine: it hand-codes it
//! (`unicode_regex_split_custom_gpt2`) over code points, and each earlier regex of a pre-tokenizer's list splits the
//! text into chunks that later regexes never look across (lookahead `(?!\S)` stops at a chunk's end). This module
//! mirrors that code step for step so that our words, and therefore our tokens, are llama.cpp's.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::EngineError;

/// The regex families llama.cpp applies before BPE, named by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// `gpt-2`: the GPT-2 regex alone.
    Gpt2,
    /// `smollm`, `starcoder`, `refact`, `codeshell`: every `\p{N}` code point is split off on its own first, then
    /// the GPT-2 regex runs inside each chunk.
    DigitsThenGpt2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value; unknown names are an error naming the value.
    pub(crate) fn from_name(pre: &str) -> Result<Self, EngineError> {
        match pre {
            "gpt-2" => Ok(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "codeshell" => Ok(PreTokenizer::DigitsThenGpt2),
            other => Err(EngineError::Tokenizer(format!(
                "unsupported tokenizer.ggml.pre {other:?} (supported: smollm, starcoder, refact, codeshell, gpt-2)"
            ))),
        }
    }

    /// Splits `text` into words (byte ranges of `text`), in order, covering all of it.
    pub(crate) fn split(self, text: &str, words: &mut Vec<std::ops::Range<usize>>) {
        let chars = classify(text);
        let mut chunk_start = 0;
        if self == PreTokenizer::DigitsThenGpt2 {
            for (index, info) in chars.iter().enumerate() {
                if info.class == CharClass::Number {
                    split_gpt2(&chars, chunk_start, index, text.len(), words);
                    split_gpt2(&chars, index, index + 1, text.len(), words);
                    chunk_start = index + 1;
                }
            }
        }
        split_gpt2(&chars, chunk_start, chars.len(), text.len(), words);
    }
}

/// The Unicode classes the GPT-2 regex distinguishes: `\p{L}`, `\p{N}`, `\s`, and everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CharClass {
    Letter,
    Number,
    Space,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct CharInfo {
    byte_offset: usize,
    ch: char,
    class: CharClass,
}

/// `\p{L}` has no std equivalent (`char::is_alphabetic` also takes marks and letter numbers), so letters come from
/// the regex crate's Unicode tables in one linear pass.
static LETTERS: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"\p{L}+").ok());

fn classify(text: &str) -> Vec<CharInfo> {
    let mut chars: Vec<CharInfo> = text
        .char_indices()
        .map(|(byte_offset, ch)| {
            let class = if ch.is_whitespace() {
                CharClass::Space
            } else if ch.is_numeric() {
                CharClass::Number
            } else {
                CharClass::Other
            };
            CharInfo { byte_offset, ch, class }
        })
        .collect();
    if let Some(letters) = LETTERS.as_ref() {
        let mut index = 0;
        for found in letters.find_iter(text) {
            while index < chars.len() && chars[index].byte_offset < found.start() {
                index += 1;
            }
            while index < chars.len() && chars[index].byte_offset < found.end() {
                chars[index].class = CharClass::Letter;
                index += 1;
            }
        }
    } else {
        // Unreachable in practice (the pattern is a constant); ASCII letters keep the tokenizer usable.
        for info in &mut chars {
            if info.ch.is_ascii_alphabetic() {
                info.class = CharClass::Letter;
            }
        }
    }
    chars
}

/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` over the code points
/// `chars[start..end]`, as llama.cpp's `unicode_regex_split_custom_gpt2` evaluates it (nothing outside the chunk
/// is visible). Pushes byte ranges; `text_len` closes the last one.
fn split_gpt2(chars: &[CharInfo], start: usize, end: usize, text_len: usize, words: &mut Vec<std::ops::Range<usize>>) {
    let class_at = |pos: usize| if pos >= start && pos < end { Some(chars[pos].class) } else { None };
    let byte_at = |pos: usize| chars.get(pos).map_or(text_len, |info| info.byte_offset);
    let mut pos = start;
    while pos < end {
        let word_start = pos;
        pos = gpt2_word_end(chars, pos, end, &class_at);
        words.push(byte_at(word_start)..byte_at(pos));
    }
}

/// The end (exclusive, in code points) of the GPT-2 word that starts at `pos`.
fn gpt2_word_end(chars: &[CharInfo], pos: usize, end: usize, class_at: &dyn Fn(usize) -> Option<CharClass>) -> usize {
    let ch = chars[pos].ch;
    if ch == '\'' && pos + 1 < end {
        let next = chars[pos + 1].ch;
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return pos + 2;
        }
        if pos + 2 < end && matches!((next, chars[pos + 2].ch), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
            return pos + 3;
        }
    }
    // ` ?X+` for X in letters, numbers and "other": an optional leading ASCII space joins the run after it.
    let run_class = if ch == ' ' { class_at(pos + 1) } else { class_at(pos) };
    if let Some(class @ (CharClass::Letter | CharClass::Number | CharClass::Other)) = run_class {
        let mut cursor = pos + usize::from(ch == ' ');
        while class_at(cursor) == Some(class) {
            cursor += 1;
        }
        return cursor;
    }
    let mut spaces = 0;
    while class_at(pos + spaces) == Some(CharClass::Space) {
        spaces += 1;
    }
    // `\s+(?!\S)`: a run followed by a non-space keeps its last space for the next word.
    if spaces > 1 && pos + spaces < end {
        return pos + spaces - 1;
    }
    if spaces > 0 {
        return pos + spaces;
    }
    pos + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pre: PreTokenizer, text: &str, expect: &[&str]) {
        let mut words = Vec::new();
        pre.split(text, &mut words);
        let got: Vec<&str> = words.iter().map(|range| &text[range.clone()]).collect();
        assert_eq!(got, expect, "splitting {text:?}");
    }

    #[test]
    fn gpt2_regex_cases() {
        let pre = PreTokenizer::Gpt2;
        check(pre, "Hello world", &["Hello", " world"]);
        check(pre, "I'm here, they'll go", &["I", "'m", " here", ",", " they", "'ll", " go"]);
        check(pre, "a  b", &["a", " ", " b"]);
        check(pre, "a \n\n b", &["a", " \n\n", " b"]);
        check(pre, "x   ", &["x", "   "]);
        check(pre, "\n\nfoo", &["\n", "\n", "foo"]);
        check(pre, "abc 123!!", &["abc", " 123", "!!"]);
        check(pre, "  ...x", &[" ", " ...", "x"]);
        check(pre, "", &[]);
    }

    #[test]
    fn smollm_splits_every_digit_first() {
        let pre = PreTokenizer::DigitsThenGpt2;
        check(pre, "abc 123!!", &["abc", " ", "1", "2", "3", "!!"]);
        check(pre, "x²½y", &["x", "²", "½", "y"]);
        // The digit boundary hides the following digit from `\s+(?!\S)`: the whole run stays one word.
        check(pre, "a  1", &["a", "  ", "1"]);
        check(PreTokenizer::Gpt2, "a  1", &["a", " ", " 1"]);
    }

    #[test]
    fn letters_are_unicode_letters_not_marks() {
        let pre = PreTokenizer::Gpt2;
        check(pre, "naïve café", &["naïve", " café"]);
        // U+0301 COMBINING ACUTE is a mark (Mn), not a letter: it ends the letter run.
        check(pre, "e\u{301}x", &["e", "\u{301}", "x"]);
        check(pre, "Привет мир", &["Привет", " мир"]);
    }

    #[test]
    fn unknown_pre_is_an_error_naming_it() {
        let error = PreTokenizer::from_name("llama-bpe").expect_err("unsupported");
        assert!(error.to_string().contains("\"llama-bpe\""), "{error}");
    }
}
