//! Sequence packing: several short examples share one row of up to `max_seq_len` tokens, so that a batch of
//! short records does not spend most of its compute on padding.
//!
//! Packing here is exact, not an approximation: each token attends only to earlier tokens of its own example
//! (a block-diagonal causal mask), rotary positions restart at 0 for every example, and a target is only ever
//! predicted from a token of the same example. A packed batch therefore has the same loss as running each of
//! its examples alone (a test checks it to rounding), just with fewer padded positions.

use tch::{Device, Kind, Tensor};

use super::{Batch, BatchSampler};
use crate::dataset::Example;

/// Draws examples from `sampler` in order and places each in the first row it fits (first-fit), opening rows
/// up to `rows`; the first example that fits nowhere waits in the sampler for the next batch. At most one
/// epoch's worth of examples is drawn per batch, so a small dataset never repeats an example within a batch.
/// Returns the example indices of each row.
pub(super) fn draw_packed_rows(
    sampler: &mut BatchSampler,
    lengths: &[usize],
    rows: usize,
    max_row_len: usize,
) -> Vec<Vec<usize>> {
    let mut packed: Vec<(usize, Vec<usize>)> = Vec::with_capacity(rows);
    let mut drawn = 0;
    while drawn < lengths.len() {
        let Some(index) = sampler.next_index() else { break };
        let length = lengths[index];
        if let Some((used, row)) = packed.iter_mut().find(|(used, _)| used + length <= max_row_len) {
            *used += length;
            row.push(index);
        } else if packed.len() < rows.max(1) {
            // an example longer than a row still gets a row of its own
            packed.push((length, vec![index]));
        } else {
            sampler.put_back(index);
            break;
        }
        drawn += 1;
    }
    packed.into_iter().map(|(_, row)| row).collect()
}

impl Batch {
    /// One right-padded row per entry of `rows`, each the concatenation of its examples, with per-example
    /// rotary positions and a block-diagonal causal attention mask.
    pub fn packed(rows: &[Vec<&Example>], pad_id: u32, device: Device) -> Batch {
        let seq = rows.iter().map(|row| row.iter().map(|e| e.input_ids.len()).sum::<usize>()).max().unwrap_or(0);
        let cells = rows.len() * seq;
        let mut ids = vec![i64::from(pad_id); cells];
        let mut position_ids = vec![0i64; cells];
        // which example of the row each token belongs to; padding is one more segment of its own
        let mut segments = vec![0i64; cells];
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        let mut tokens = 0;
        for (row_index, row) in rows.iter().enumerate() {
            let base = row_index * seq;
            let mut offset = 0;
            for (segment, example) in row.iter().enumerate() {
                tokens += example.input_ids.len();
                for (index, (&id, &target)) in example.input_ids.iter().zip(&example.loss_mask).enumerate() {
                    let cell = base + offset + index;
                    ids[cell] = i64::from(id);
                    position_ids[cell] = index as i64;
                    segments[cell] = segment as i64;
                    if target && index > 0 {
                        positions.push((cell - 1) as i64);
                        targets.push(i64::from(id));
                    }
                }
                offset += example.input_ids.len();
            }
            for (pad_index, cell) in (base + offset..base + seq).enumerate() {
                position_ids[cell] = pad_index as i64;
                segments[cell] = row.len() as i64;
            }
        }
        let shape = [rows.len() as i64, seq as i64];
        let segments = Tensor::from_slice(&segments).view(shape).to_device(device);
        let same_segment = segments.unsqueeze(2).eq_tensor(&segments.unsqueeze(1));
        let causal = Tensor::ones([seq as i64, seq as i64], (Kind::Bool, device)).tril(0);
        let target_count = targets.len();
        Batch {
            input_ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            positions: Tensor::from_slice(&positions).to_device(device),
            targets: Tensor::from_slice(&targets).to_device(device),
            tokens,
            target_count,
            position_ids: Some(Tensor::from_slice(&position_ids).view(shape).to_device(device)),
            attention_mask: Some(same_segment.logical_and(&causal).unsqueeze(1)),
        }
    }
}
