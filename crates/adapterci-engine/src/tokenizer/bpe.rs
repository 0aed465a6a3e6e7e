//! Byte-level BPE: GPT-2's byte-to-unicode alphabet and rank-ordered merging of one pre-tokenized word.
//!
//! Merging follows llama.cpp's `llm_tokenizer_bpe_session` (and HF tokenizers' BPE): repeatedly merge the adjacent
//! pair with the lowest merge rank, the leftmost one on ties, until no pair has a rank.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The GPT-2 byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes map to
/// U+0100.. in byte order. Index = byte.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(byte)
        } else {
            let code = next_extra;
            next_extra += 1;
            code
        };
        table[usize::from(byte)] = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    table
}

/// The 256 bytes in GPT-2's vocabulary order: the printable bytes first, then the remapped ones.
pub(crate) fn gpt2_byte_order() -> Vec<u8> {
    let table = byte_to_char_table();
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.sort_by_key(|&byte| table[usize::from(byte)]);
    bytes
}

/// Merge ranks keyed by (left id, right id); a multiplicative hash is plenty for two small integers and several
/// times faster than SipHash on this hot path.
#[derive(Default)]
pub(crate) struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, value: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(value)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type PairMap<V> = HashMap<(u32, u32), V, BuildHasherDefault<PairHasher>>;

/// A merge: its rank (position in the merges list) and the token it produces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) merged: u32,
}

pub(crate) struct Bpe {
    /// Token of each raw byte; `None` where the vocabulary lacks that byte (llama.cpp then drops the byte).
    pub(crate) byte_tokens: [Option<u32>; 256],
    pub(crate) merges: PairMap<Merge>,
}

const NONE: usize = usize::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    token: Option<u32>,
    prev: usize,
    next: usize,
    alive: bool,
}

impl Bpe {
    /// Appends the tokens of one word (raw bytes, before the byte-to-unicode mapping) to `out`.
    pub(crate) fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        if let [byte] = word {
            out.extend(self.byte_tokens[usize::from(*byte)]);
            return;
        }
        let mut symbols: Vec<Symbol> = word
            .iter()
            .enumerate()
            .map(|(index, &byte)| Symbol {
                token: self.byte_tokens[usize::from(byte)],
                prev: if index == 0 { NONE } else { index - 1 },
                next: if index + 1 == word.len() { NONE } else { index + 1 },
                alive: true,
            })
            .collect();
        // (rank, left index) ordered ascending: the lowest rank first, the leftmost first on ties.
        let mut queue: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        for left in 1..symbols.len() {
            self.push_pair(&symbols, left - 1, &mut queue);
        }
        while let Some(Reverse((_, left, left_token, right_token))) = queue.pop() {
            let right = symbols[left].next;
            let current = symbols[left].alive
                && right != NONE
                && symbols[left].token == Some(left_token)
                && symbols[right].token == Some(right_token);
            if !current {
                continue;
            }
            let Some(merge) = self.merges.get(&(left_token, right_token)) else { continue };
            symbols[left].token = Some(merge.merged);
            symbols[right].alive = false;
            let after = symbols[right].next;
            symbols[left].next = after;
            if after != NONE {
                symbols[after].prev = left;
            }
            if symbols[left].prev != NONE {
                self.push_pair(&symbols, symbols[left].prev, &mut queue);
            }
            self.push_pair(&symbols, left, &mut queue);
        }
        out.extend(symbols.iter().filter(|symbol| symbol.alive).filter_map(|symbol| symbol.token));
    }

    fn push_pair(&self, symbols: &[Symbol], left: usize, queue: &mut BinaryHeap<Reverse<(u32, usize, u32, u32)>>) {
        let right = symbols[left].next;
        if right == NONE {
            return;
        }
        if let (Some(left_token), Some(right_token)) = (symbols[left].token, symbols[right].token)
            && let Some(merge) = self.merges.get(&(left_token, right_token))
        {
            queue.push(Reverse((merge.rank, left, left_token, right_token)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let table = byte_to_char_table();
        assert_eq!(table[usize::from(b' ')], 'Ġ');
        assert_eq!(table[usize::from(b'\n')], 'Ċ');
        assert_eq!(table[usize::from(b'a')], 'a');
        assert_eq!(table[0], 'Ā');
        assert_eq!(table[0xAD], 'Ń');
        let order = gpt2_byte_order();
        assert_eq!(order[0], b'!');
        assert_eq!(order[255], 0xAD);
        let mut distinct = table.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 256);
    }

    fn toy() -> Bpe {
        // ids: bytes a=0 b=1 c=2; merges: (a b)->3 rank 0, (3 c)->4 rank 1, (b c)->5 rank 2, (a a)->6 rank 3
        let mut byte_tokens = [None; 256];
        byte_tokens[usize::from(b'a')] = Some(0);
        byte_tokens[usize::from(b'b')] = Some(1);
        byte_tokens[usize::from(b'c')] = Some(2);
        let mut merges = PairMap::default();
        merges.insert((0, 1), Merge { rank: 0, merged: 3 });
        merges.insert((3, 2), Merge { rank: 1, merged: 4 });
        merges.insert((1, 2), Merge { rank: 2, merged: 5 });
        merges.insert((0, 0), Merge { rank: 3, merged: 6 });
        Bpe { byte_tokens, merges }
    }

    fn check(word: &str, expect: &[u32]) {
        let mut out = Vec::new();
        toy().encode_word(word.as_bytes(), &mut out);
        assert_eq!(out, expect, "word {word:?}");
    }

    #[test]
    fn merges_by_rank_then_leftmost() {
        check("abc", &[4]);
        check("bc", &[5]);
        check("aaa", &[6, 0]);
        check("aaaa", &[6, 6]);
        check("cab", &[2, 3]);
        check("a", &[0]);
        // 'z' is not in the toy vocabulary: llama.cpp drops such bytes.
        check("azb", &[0, 1]);
    }
}
