//! Bit allocation: targets met within 0.05 bits per weight, least sensitivity first, honest accounting.

use super::*;
use crate::config::LlamaConfig;

/// SmolLM2-135M's shape: 30 layers, hidden 576, 3 KV heads of 64, FFN 1536.
fn smollm2() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 49152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: 30,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        rope_theta: 100000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
    }
}

fn sensitivities(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 7919) % 211) as f64 / 211.0 + 1e-3).collect()
}

#[test]
fn allocation_meets_the_target_within_five_hundredths() {
    let ops = linear_ops(&smollm2());
    assert_eq!(ops.len(), 210);
    let method = Method::default();
    let s = sensitivities(ops.len());
    for target in [2.6, 3.0, 3.25, 3.5, 3.8] {
        let bits = allocate_bits(&ops, &s, method, target).unwrap();
        let achieved = average_bpw(&ops, &bits, method);
        assert!((achieved - target).abs() <= 0.05, "target {target}: achieved {achieved}");
        let arbitrary = arbitrary_bits(&ops, method, target, 1).unwrap();
        let achieved = average_bpw(&ops, &arbitrary, method);
        assert!((achieved - target).abs() <= 0.05, "arbitrary, target {target}: achieved {achieved}");
    }
}

#[test]
fn the_tiny_model_allocation_meets_its_target_too() {
    let ops = linear_ops(&LlamaConfig::tiny(300));
    let method = Method { group_rows: 4, group_rows_2bit: 4, ..Method::default() };
    let s = sensitivities(ops.len());
    let bits = allocate_bits(&ops, &s, method, 3.5).unwrap();
    let achieved = average_bpw(&ops, &bits, method);
    assert!((achieved - 3.5).abs() <= 0.05, "achieved {achieved}");
}

#[test]
fn the_least_sensitive_operations_go_to_two_bits() {
    let ops = linear_ops(&smollm2());
    let method = Method::default();
    let s = sensitivities(ops.len());
    let bits = allocate_bits(&ops, &s, method, 3.5).unwrap();
    let arbitrary = arbitrary_bits(&ops, method, 3.5, 9).unwrap();
    let cost = |b: &[u8]| b.iter().zip(&s).filter(|(b, _)| **b == 2).map(|(_, s)| s).sum::<f64>();
    assert!(cost(&bits) < cost(&arbitrary), "sensitive {} vs arbitrary {}", cost(&bits), cost(&arbitrary));
    // same-shaped operations: every one at 2 bits is less sensitive than every one left at 4
    let downs: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].target == LoraTarget::Down).collect();
    let max_two = downs.iter().filter(|&&i| bits[i] == 2).map(|&i| s[i]).fold(f64::MIN, f64::max);
    let min_four = downs.iter().filter(|&&i| bits[i] == 4).map(|&i| s[i]).fold(f64::MAX, f64::min);
    assert!(max_two <= min_four, "{max_two} > {min_four}");
}

#[test]
fn bits_per_weight_accounting_is_exact() {
    let ops = linear_ops(&smollm2());
    let method = Method::default();
    let bits = vec![4u8; ops.len()];
    // per op: rows*cols*4 index bits + rows/32 tables of 16 fp16 entries + rows fp16 scales
    let expected: u64 = ops
        .iter()
        .map(|op| (op.rows * op.cols * 4) as u64 + (op.rows.div_ceil(32) * 16 * 16) as u64 + (op.rows * 16) as u64)
        .sum();
    let params: u64 = ops.iter().map(|op| op.params() as u64).sum();
    assert_eq!(average_bpw(&ops, &bits, method), expected as f64 / params as f64);
    let analysis = BitAnalysis::new(&ops, &bits, &sensitivities(ops.len()), method, 4.2, 1000);
    assert_eq!(
        analysis.total_bytes,
        ops.iter().map(|op| method.spec(4).storage_bits(op.rows, op.cols).div_ceil(8)).sum::<u64>()
    );
    assert!(analysis.to_table().contains("total (linear)"));
    let svg = analysis.to_svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect").count(), ops.len());
}

#[test]
fn impossible_targets_are_refused() {
    let ops = linear_ops(&smollm2());
    let method = Method::default();
    let err = allocate_bits(&ops, &sensitivities(ops.len()), method, 1.5).unwrap_err();
    assert!(err.to_string().contains("below"), "{err}");
    let err = allocate_bits(&ops, &[1.0], method, 3.5).unwrap_err();
    assert!(err.to_string().contains("sensitivities"), "{err}");
}
