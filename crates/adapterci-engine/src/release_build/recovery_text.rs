//! The text a build's recovery trains on: the teacher's sequences mixed with the user corpus at its share, less
//! the sequences of each source held out for validation.

use crate::EngineError;
use crate::calibrate::chunk_tokens;
use crate::model::BaseModel;
use crate::recover::{RecoveryText, ValidationSet, hold_out};

/// The teacher's sequences plus, when given, `user_corpus` cut into `seq_len`-token sequences, mixed so that the
/// corpus makes up about `share` of the whole: all of the corpus is used, and whichever side is short of its
/// share is repeated (the corpus when it is smaller than the share asks for, the teacher's text when it is
/// larger: distinct text is what a recovery transfers from, so none of it is left out). `None`: each sequence
/// once; a share of 0 trains on the teacher's text alone. Up to `held_out` sequences of each source
/// ([`hold_out`]) are kept out of training as its validation sets, "teacher text" and "user corpus".
pub fn recovery_text(
    base: &BaseModel,
    teacher: &[Vec<u32>],
    user_corpus: Option<&str>,
    seq_len: usize,
    share: Option<f64>,
    held_out: usize,
) -> Result<RecoveryText, EngineError> {
    if let Some(s) = share.filter(|s| !(0.0..1.0).contains(s)) {
        return Err(EngineError::InvalidConfig(format!("user corpus share {s}: use a fraction in [0, 1)")));
    }
    let (teacher, teacher_held) = hold_out(teacher.to_vec(), held_out);
    let mut validation = Vec::new();
    if !teacher_held.is_empty() {
        validation.push(ValidationSet { name: "teacher text".into(), sequences: teacher_held });
    }
    let Some(corpus) = user_corpus.filter(|_| share != Some(0.0)) else {
        return Ok(RecoveryText { validation, ..RecoveryText::plain(teacher) });
    };
    let user = chunk_tokens(base.tokenizer(), corpus, seq_len);
    if user.is_empty() {
        return Err(EngineError::InvalidConfig(format!(
            "the user corpus is shorter than one {seq_len}-token sequence"
        )));
    }
    let (user, user_held) = hold_out(user, held_out);
    if !user_held.is_empty() {
        validation.push(ValidationSet { name: "user corpus".into(), sequences: user_held });
    }
    // how many times each side goes in: repeats r_u, r_t with u·r_u / (u·r_u + t·r_t) about `share`, one of
    // them 1
    let (u, t) = (user.len() as f64, teacher.len().max(1) as f64);
    let (user_repeats, teacher_repeats) = match share {
        None => (1, 1),
        Some(s) if s / (1.0 - s) * t > u => ((s / (1.0 - s) * t / u).round().max(1.0) as usize, 1),
        Some(s) => (1, ((1.0 - s) / s * u / t).round().max(1.0) as usize),
    };
    let mut sequences = Vec::with_capacity(teacher.len() * teacher_repeats + user.len() * user_repeats);
    for _ in 0..teacher_repeats {
        sequences.extend(teacher.iter().cloned());
    }
    for _ in 0..user_repeats {
        sequences.extend(user.iter().cloned());
    }
    Ok(RecoveryText { sequences, user: user.len(), repeats: user_repeats, teacher_repeats, validation })
}
