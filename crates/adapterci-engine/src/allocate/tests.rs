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
        assert!((target - 0.05..=target).contains(&achieved), "target {target}: achieved {achieved}");
        let arbitrary = arbitrary_bits(&ops, method, target, 1).unwrap();
        let achieved = average_bpw(&ops, &arbitrary, method);
        assert!((target - 0.05..=target).contains(&achieved), "arbitrary, target {target}: achieved {achieved}");
    }
}

#[test]
fn the_tiny_model_allocation_meets_its_target_too() {
    let ops = linear_ops(&LlamaConfig::tiny(300));
    let method = Method { group_rows: 4, group_rows_2bit: 4, ..Method::default() };
    let s = sensitivities(ops.len());
    let bits = allocate_bits(&ops, &s, method, 3.5).unwrap();
    let achieved = average_bpw(&ops, &bits, method);
    assert!((3.45..=3.5).contains(&achieved), "achieved {achieved}");
    // the arbitrary control lands in the same window on these few, coarse operations, its seed deciding which
    let picks: Vec<Vec<u8>> = (0..4).map(|seed| arbitrary_bits(&ops, method, 3.5, seed).unwrap()).collect();
    for bits in &picks {
        let achieved = average_bpw(&ops, bits, method);
        assert!((3.45..=3.5).contains(&achieved), "arbitrary: achieved {achieved}");
    }
    assert!(picks.iter().any(|b| *b != picks[0]), "four seeds, one allocation: {picks:?}");
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

/// Random token rows of the tiny model's vocabulary.
fn token_rows(rows: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(seed);
    (0..rows).map(|_| (0..len).map(|_| 3 + rng.below(250) as u32).collect()).collect()
}

#[test]
fn sequential_palettization_builds_every_operation_and_tracks_the_teacher() {
    let tiny = crate::llama::tests::tiny_model(21);
    let teacher = &tiny.llama;
    let ops = linear_ops(teacher.config());
    // unrotated: rotated, the sequential statistics measure no better than the one-shot ones on this model (as
    // unrotated on SmolLM2-135M, where the option stays off)
    let method = Method { group_rows: 4, group_rows_2bit: 4, refit_rounds: 2, rotation: None, ..Method::default() };
    let bits: Vec<u8> = (0..ops.len()).map(|i| if i % 3 == 0 { 2 } else { 4 }).collect();
    let calibration = token_rows(48, 32, 5);
    let (parts, student) = palettize_sequential(teacher, &ops, &bits, method, &calibration, 4, &mut |_, _| {}).unwrap();
    assert_eq!(parts.len(), ops.len());
    for ((op, p), &b) in ops.iter().zip(&parts).zip(&bits) {
        assert_eq!((p.rows, p.cols, p.spec), (op.rows, op.cols, method.spec(b)), "{}", op.name());
        p.validate().unwrap();
        // the decoder returned is exactly the parts
        assert!(student.linear_weight(op.layer, op.target).equal(&p.dequantize(tch::Device::Cpu)), "{}", op.name());
    }
    // and it is a palettization of the teacher: closer to it than the same bits with nearest-entry tables, and
    // than the same method with every operation's statistics taken on the uncompressed model
    let held = token_rows(4, 24, 6);
    let kl = |model: &Llama| {
        tch::no_grad(|| {
            let ids = crate::calibrate::batch_tensor(&held, teacher.device()).unwrap();
            let vocab = teacher.config().vocab_size as i64;
            let t = teacher.forward(&ids, 0, None, None).reshape([-1, vocab]);
            let s = model.forward(&ids, 0, None, None).reshape([-1, vocab]);
            kl_per_position(&t, &s).mean(Kind::Float).double_value(&[])
        })
    };
    let naive = Method { weighted: false, compensate: false, refit_rounds: 0, sequential: false, ..method };
    let mut plain = teacher.shallow_copy();
    for (op, &b) in ops.iter().zip(&bits) {
        let p = palettize_op(teacher, None, op, b, naive).unwrap();
        plain.set_linear_weight(op.layer, op.target, p.dequantize(tch::Device::Cpu)).unwrap();
    }
    // the same method on statistics of the uncompressed model's inputs
    let hessians = crate::calibrate::collect_hessians(teacher, &calibration, 4).unwrap();
    let mut one_shot = teacher.shallow_copy();
    for (op, &b) in ops.iter().zip(&bits) {
        let p = palettize_op(teacher, Some(&hessians), op, b, method).unwrap();
        one_shot.set_linear_weight(op.layer, op.target, p.dequantize(tch::Device::Cpu)).unwrap();
    }
    let one_shot_kl = kl(&one_shot);
    let (sequential_kl, plain_kl) = (kl(&student), kl(&plain));
    assert!(sequential_kl > 0.0 && sequential_kl < plain_kl, "sequential {sequential_kl} vs nearest {plain_kl}");
    assert!(sequential_kl < one_shot_kl, "sequential {sequential_kl} vs one-shot statistics {one_shot_kl}");
}

#[test]
fn sequential_palettization_refuses_mismatched_inputs() {
    let tiny = crate::llama::tests::tiny_model(22);
    let ops = linear_ops(tiny.llama.config());
    let method = Method::default();
    let err =
        palettize_sequential(&tiny.llama, &ops, &[4], method, &token_rows(2, 8, 1), 2, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("bit choices"), "{err}");
    let bits = vec![4u8; ops.len()];
    let err = palettize_sequential(&tiny.llama, &ops, &bits, method, &[], 2, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("calibration"), "{err}");
}

#[test]
fn palettizing_jointly_with_the_low_rank_start_leaves_less_error_after_the_correction() {
    let tiny = crate::llama::tests::tiny_model(23);
    let teacher = &tiny.llama;
    let ops = linear_ops(teacher.config());
    let hessians = crate::calibrate::collect_hessians(teacher, &token_rows(48, 32, 7), 4).unwrap();
    let method = Method { group_rows: 4, group_rows_2bit: 4, ..Method::default() };
    let joint = Method { low_rank_rounds: 2, ..method };
    let mut improved = 0;
    let checked = 14;
    for (i, op) in ops.iter().enumerate().take(checked) {
        let bits = if i % 2 == 0 { 2 } else { 4 };
        let plain = palettize_op(teacher, Some(&hessians), op, bits, method).unwrap();
        let together = palettize_op(teacher, Some(&hessians), op, bits, joint).unwrap();
        together.validate().unwrap();
        assert_eq!((together.rows, together.cols, together.spec), (plain.rows, plain.cols, plain.spec));
        // the error left after each one's best rank-16 correction under the statistics
        let w = teacher.linear_weight(op.layer, op.target).to_kind(Kind::Float);
        let h = hessians.get(op.layer, op.target).unwrap().to_kind(Kind::Float);
        let (s, s_inv) = crate::recover::damped_square_root(&h).unwrap();
        let left = |p: &PalettizedTensor| {
            let error = &w - p.dequantize(tch::Device::Cpu);
            let left = &error - crate::recover::best_low_rank(&error, &s, &s_inv, JOINT_RANK).unwrap();
            (left.matmul(&h) * &left).sum(Kind::Float).double_value(&[])
        };
        let (plain_left, together_left) = (left(&plain), left(&together));
        assert!(together_left <= plain_left * (1.0 + 1e-6), "{}: {together_left} vs {plain_left}", op.name());
        if together_left < 0.99 * plain_left {
            improved += 1;
        }
    }
    assert!(improved * 2 >= checked, "only {improved} of {checked} operations improved");
    // without statistics there is nothing to correct under: the option changes nothing
    let (a, b) = (
        palettize_op(teacher, None, &ops[0], 2, joint).unwrap(),
        palettize_op(teacher, None, &ops[0], 2, method).unwrap(),
    );
    assert_eq!((a.lut, a.indices, a.scales), (b.lut, b.indices, b.scales));
    assert!(joint.label().contains("2 rounds jointly with a rank-16 correction"), "{}", joint.label());
    // releases made without it record the method as before (the field is left out)
    let recorded = serde_json::to_value(method).unwrap();
    assert!(recorded.get("low_rank_rounds").is_none(), "{recorded}");
    let read: Method = serde_json::from_value(recorded).unwrap();
    assert_eq!(read, method);
}

#[test]
fn operations_that_share_an_input_share_its_rotated_statistics_and_palettize_as_if_each_rotated_its_own() {
    let tiny = crate::llama::tests::tiny_model(24);
    let teacher = &tiny.llama;
    let mut hessians = crate::calibrate::collect_hessians(teacher, &token_rows(16, 24, 8), 4).unwrap();
    let method = Method { group_rows: 4, group_rows_2bit: 4, ..Method::default() };
    let rotation = method.rotation.unwrap();
    let rotated = |h: &Hessians, layer, target| h.rotated(layer, target, rotation, tch::Device::Cpu).unwrap();
    // one tensor per input: q/k/v read one, gate/up another
    let q = rotated(&hessians, 0, LoraTarget::Q);
    assert_eq!(rotated(&hessians, 0, LoraTarget::V).data_ptr(), q.data_ptr());
    assert_eq!(rotated(&hessians, 0, LoraTarget::Up).data_ptr(), rotated(&hessians, 0, LoraTarget::Gate).data_ptr());
    assert_ne!(rotated(&hessians, 0, LoraTarget::O).data_ptr(), q.data_ptr());
    // only the latest layer's are kept, unless every layer's are asked for, until forgotten
    let _ = rotated(&hessians, 1, LoraTarget::Q);
    assert_ne!(rotated(&hessians, 0, LoraTarget::Q).data_ptr(), q.data_ptr());
    hessians.keep_rotated();
    let q = rotated(&hessians, 0, LoraTarget::Q);
    let _ = rotated(&hessians, 1, LoraTarget::Q);
    assert_eq!(rotated(&hessians, 0, LoraTarget::Q).data_ptr(), q.data_ptr());
    hessians.forget_rotated();
    assert_ne!(rotated(&hessians, 0, LoraTarget::Q).data_ptr(), q.data_ptr());
    // the shared statistics palettize every operation to the bit as rotating its own did, also when the low-rank
    // rounds and the refit palettize it again
    let again = Method { refit_rounds: 1, low_rank_rounds: 1, ..method };
    for (i, op) in linear_ops(teacher.config()).iter().enumerate() {
        for (bits, method) in [(2, method), (4, method), (2 + 2 * (i as u8 % 2), again)] {
            let shared = palettize_op(teacher, Some(&hessians), op, bits, method).unwrap();
            let hessian = hessians.get(op.layer, op.target).unwrap();
            let own = InputStatistics { hessian, rotated: None, square_root: None };
            let own = palettize_op_with(teacher, Some(&own), op, bits, method).unwrap();
            assert_eq!(shared, own, "{} at {bits} bits", op.name());
        }
    }
}

#[test]
fn the_calibrated_start_reads_the_square_roots_the_corrected_sensitivities_kept_then_forgets_them() {
    let tiny = crate::llama::tests::tiny_model(25);
    let teacher = &tiny.llama;
    let ops = linear_ops(teacher.config());
    let calibration = token_rows(16, 24, 9);
    let method = Method { group_rows: 4, group_rows_2bit: 4, ..Method::default() };
    let mut kept = crate::calibrate::collect_hessians(teacher, &calibration, 4).unwrap();
    kept.keep_square_roots();
    let two_bit: Vec<Tensor> = ops
        .iter()
        .map(|op| palettize_op(teacher, Some(&kept), op, 2, method).unwrap().dequantize(tch::Device::Cpu))
        .collect();
    let mut student = teacher.shallow_copy();
    for (op, w) in ops.iter().zip(&two_bit) {
        student.set_linear_weight(op.layer, op.target, w.shallow_clone()).unwrap();
    }
    let shallow = |ws: &[Tensor]| ws.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
    let corrected = with_low_rank_corrections(teacher, &kept, &ops, shallow(&two_bit), 4).unwrap();
    // one root per input, every layer's kept
    let root = |h: &Hessians, layer, target| h.square_root(layer, target, tch::Device::Cpu).unwrap().unwrap().0;
    let q = root(&kept, 0, LoraTarget::Q);
    assert_eq!(root(&kept, 0, LoraTarget::K).data_ptr(), q.data_ptr());
    assert_ne!(root(&kept, 0, LoraTarget::Down).data_ptr(), q.data_ptr());
    let spec = crate::recover::RecoverySpec::default();
    let config = crate::recover::recovery_config(&student, &spec);
    let start = crate::recover::calibrated_init(&config, teacher, &student, &kept).unwrap();
    // the start was their last reader
    assert_ne!(root(&kept, 0, LoraTarget::Q).data_ptr(), q.data_ptr());
    // and what they gave is what statistics that kept nothing give, to the bit
    let fresh = crate::calibrate::collect_hessians(teacher, &calibration, 4).unwrap();
    let again = with_low_rank_corrections(teacher, &fresh, &ops, shallow(&two_bit), 4).unwrap();
    for ((op, a), b) in ops.iter().zip(&corrected).zip(&again) {
        assert!(a.equal(b), "{}", op.name());
    }
    let again = crate::recover::calibrated_init(&config, teacher, &student, &fresh).unwrap();
    assert_eq!(start.to_safetensors().unwrap(), again.to_safetensors().unwrap());
}
