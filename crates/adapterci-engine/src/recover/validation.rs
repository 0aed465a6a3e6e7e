//! Held-out validation of recovery training: sequences of each source of the training text (the teacher's and
//! the user corpus's) that training never sees, scored against the teacher (KL, cross-entropy, top-1 agreement)
//! every so many steps and at the end. Scored in f32 through the model's own forward, as `evaluate` scores, so
//! the numbers compare with its. The gap between the training batches' KL and these says whether more steps
//! or more distinct text is what a recovery lacks; nothing is selected on them.

use serde::{Deserialize, Serialize};

use crate::EngineError;
use crate::calibrate::compare;
use crate::llama::Llama;
use crate::lora::LoraWeights;

/// Held-out sequences of one source, named for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationSet {
    pub name: String,
    pub sequences: Vec<Vec<u32>>,
}

/// One validation of one set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationPoint {
    /// Steps trained when it was scored (0: the start, before any step).
    pub step: usize,
    pub set: String,
    /// Mean KL(teacher ‖ student) per position (nats).
    pub kl: f64,
    pub cross_entropy: f64,
    pub top1_agreement: f64,
}

/// A set holds out at most this share of its source's sequences, so that training keeps nine in ten.
const MAX_HELD_OUT_SHARE: usize = 10;

/// Splits up to `count` sequences off `sequences` for validation, at most a tenth of them (none of fewer than
/// ten), evenly spaced so that each part of a corpus made of several texts is represented. Returns
/// `(train, held_out)`: disjoint, together all of `sequences`, each in its original order.
pub fn hold_out(sequences: Vec<Vec<u32>>, count: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let count = count.min(sequences.len() / MAX_HELD_OUT_SHARE);
    if count == 0 {
        return (sequences, Vec::new());
    }
    let len = sequences.len();
    // the middle of each of `count` equal stretches: distinct, since every stretch is at least ten long
    let picked: Vec<usize> = (0..count).map(|i| (2 * i + 1) * len / (2 * count)).collect();
    let (mut train, mut held) = (Vec::with_capacity(len - count), Vec::with_capacity(count));
    let mut next = picked.iter().peekable();
    for (i, sequence) in sequences.into_iter().enumerate() {
        if next.peek() == Some(&&i) {
            next.next();
            held.push(sequence);
        } else {
            train.push(sequence);
        }
    }
    (train, held)
}

/// Scores `student` (with `lora`) against `teacher` on each set, as of `step`.
pub(crate) fn validate(
    teacher: &Llama,
    student: &Llama,
    lora: &LoraWeights,
    sets: &[ValidationSet],
    step: usize,
) -> Result<Vec<ValidationPoint>, EngineError> {
    sets.iter()
        .filter(|set| !set.sequences.is_empty())
        .map(|set| {
            let a = compare(teacher, student, Some(lora), &set.sequences, 4)?;
            Ok(ValidationPoint {
                step,
                set: set.name.clone(),
                kl: a.kl_divergence,
                cross_entropy: a.cross_entropy,
                top1_agreement: a.top1_agreement,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::hold_out;

    fn numbered(n: u32) -> Vec<Vec<u32>> {
        (0..n).map(|i| vec![i]).collect()
    }

    #[test]
    fn held_out_sequences_are_spread_disjoint_and_at_most_a_tenth() {
        let (train, held) = hold_out(numbered(100), 4);
        assert_eq!(held, vec![vec![12], vec![37], vec![62], vec![87]]);
        assert_eq!(train.len(), 96);
        assert!(train.iter().all(|s| !held.contains(s)));
        assert!(train.windows(2).all(|w| w[0][0] < w[1][0]), "the training order is kept");
        // capped at a tenth
        let (train, held) = hold_out(numbered(35), 16);
        assert_eq!((train.len(), held.len()), (32, 3));
        // fewer than ten sequences, or none asked for: nothing held out
        assert_eq!(hold_out(numbered(9), 16).1.len(), 0);
        assert_eq!(hold_out(numbered(100), 0), (numbered(100), Vec::new()));
        // every count up to the cap picks distinct sequences
        for n in 10..60 {
            for count in 1..=n / 10 {
                let (train, held) = hold_out(numbered(n), count as usize);
                assert_eq!((train.len() + held.len(), held.len()), (n as usize, count as usize));
            }
        }
    }
}
