//! Palettization: exact table/index round trips, bit accounting, and error compensation that pays.

use tch::{Device, Kind, Tensor};

use super::*;

fn random_matrix(rows: i64, cols: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn([rows, cols], (Kind::Float, Device::Cpu))
}

#[test]
fn pack_and_unpack_are_inverse_for_every_width() {
    for bits in [2u8, 4, 8] {
        let values: Vec<u8> = (0..1001u32).map(|i| ((i * 7 + 3) % (1 << bits)) as u8).collect();
        let packed = pack_indices(&values, bits);
        assert_eq!(packed.len(), packed_len(values.len(), bits));
        assert_eq!(unpack_indices(&packed, values.len(), bits), values, "bits {bits}");
    }
}

#[test]
fn dequantized_values_are_exactly_table_entries_times_scales() {
    let w = random_matrix(24, 40, 1);
    let p = palettize(&w, PaletteSpec::new(4, 8), Calibration::default()).unwrap();
    p.validate().unwrap();
    let deq = Vec::<f32>::try_from(p.dequantize(Device::Cpu).reshape([-1])).unwrap();
    let idx = p.unpacked_indices();
    let scales = p.scales.as_ref().unwrap();
    for (r, scale) in scales.iter().enumerate() {
        for c in 0..40 {
            let e = r * 40 + c;
            let entry = p.lut[(r / 8) * 16 + idx[e] as usize].to_f32();
            assert_eq!(deq[e], entry * scale.to_f32(), "row {r} col {c}");
        }
    }
    // each group's table is sorted and has 16 entries
    for g in 0..3 {
        let table = &p.lut[g * 16..(g + 1) * 16];
        assert!(table.windows(2).all(|w| w[0] <= w[1]), "group {g} table not sorted");
    }
}

#[test]
fn bits_per_weight_counts_indices_tables_and_scales() {
    let spec = PaletteSpec::new(4, 16);
    // 64 rows x 100 cols: 4 tables of 16 fp16 entries, 64 fp16 scales
    let bits = spec.storage_bits(64, 100);
    assert_eq!(bits, 64 * 100 * 4 + 4 * 16 * 16 + 64 * 16);
    let two = PaletteSpec { bits: 2, group_rows: 3, row_scale: false, rotation: None };
    // 10 rows -> 4 groups (the last one partial)
    assert_eq!(two.storage_bits(10, 10), 10 * 10 * 2 + 4 * 4 * 16);
    let p = palettize(&random_matrix(10, 10, 2), two, Calibration::default()).unwrap();
    assert_eq!(p.groups(), 4);
    assert_eq!(p.storage_bits(), two.storage_bits(10, 10));
    p.validate().unwrap();
}

#[test]
fn more_bits_and_smaller_groups_reconstruct_better() {
    let w = random_matrix(32, 64, 3);
    let err = |spec| {
        let p = palettize(&w, spec, Calibration::default()).unwrap();
        reconstruction_error(&w, &p.dequantize(Device::Cpu), None)
    };
    let two = err(PaletteSpec::new(2, 32));
    let four = err(PaletteSpec::new(4, 32));
    let eight = err(PaletteSpec::new(8, 32));
    assert!(four < two && eight < four, "2-bit {two}, 4-bit {four}, 8-bit {eight}");
    let per_row = err(PaletteSpec::new(2, 1));
    assert!(per_row < two, "per-row tables {per_row} vs one table {two}");
}

#[test]
fn error_compensation_lowers_the_output_error() {
    // correlated inputs: X = Z M, where M mixes channels, so compensation has something to use
    tch::manual_seed(4);
    let z = Tensor::randn([512, 48], (Kind::Float, Device::Cpu));
    let mix = Tensor::randn([48, 48], (Kind::Float, Device::Cpu)) * 0.3 + Tensor::eye(48, (Kind::Float, Device::Cpu));
    let x = z.matmul(&mix);
    let h = x.transpose(0, 1).matmul(&x);
    let w = random_matrix(32, 48, 5);
    let spec = PaletteSpec::new(2, 8);
    let plain =
        palettize(&w, spec, Calibration { hessian: Some(&h), weighted: false, compensate: false, refit_rounds: 0 })
            .unwrap();
    let gptq =
        palettize(&w, spec, Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds: 0 })
            .unwrap();
    let e_plain = reconstruction_error(&w, &plain.dequantize(Device::Cpu), Some(&h));
    let e_gptq = reconstruction_error(&w, &gptq.dequantize(Device::Cpu), Some(&h));
    assert!(e_gptq < e_plain * 0.9, "compensated {e_gptq} vs nearest {e_plain}");
}

#[test]
fn bad_specs_and_shapes_are_refused() {
    let w = random_matrix(4, 4, 6);
    let err = palettize(&w, PaletteSpec::new(3, 2), Calibration::default()).unwrap_err();
    assert!(err.to_string().contains("2, 4 or 8"), "{err}");
    let err = palettize(&w, PaletteSpec::new(4, 0), Calibration::default()).unwrap_err();
    assert!(err.to_string().contains("group_rows"), "{err}");
    let h = Tensor::eye(5, (Kind::Float, Device::Cpu));
    let calibration = Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds: 0 };
    let err = palettize(&w, PaletteSpec::new(4, 2), calibration).unwrap_err();
    assert!(err.to_string().contains("hessian"), "{err}");
    let mut p = palettize(&w, PaletteSpec::new(4, 2), Calibration::default()).unwrap();
    p.indices.pop();
    assert!(p.validate().unwrap_err().contains("indices"));
}

/// Correlated calibration inputs `X = Z M` and their `XᵀX`.
fn correlated_hessian(cols: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let z = Tensor::randn([512, cols], (Kind::Float, Device::Cpu));
    let mix =
        Tensor::randn([cols, cols], (Kind::Float, Device::Cpu)) * 0.3 + Tensor::eye(cols, (Kind::Float, Device::Cpu));
    let x = z.matmul(&mix);
    x.transpose(0, 1).matmul(&x)
}

#[test]
fn refitting_tables_and_scales_lowers_the_output_error_and_keeps_the_format() {
    let h = correlated_hessian(48, 7);
    // 30 rows in groups of 8: the last group is partial
    let w = random_matrix(30, 48, 8);
    for bits in [2u8, 4] {
        let spec = PaletteSpec::new(bits, 8);
        let calibration =
            |refit_rounds| Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds };
        let gptq = palettize(&w, spec, calibration(0)).unwrap();
        let refit = palettize(&w, spec, calibration(3)).unwrap();
        refit.validate().unwrap();
        let e_gptq = reconstruction_error(&w, &gptq.dequantize(Device::Cpu), Some(&h));
        let e_refit = reconstruction_error(&w, &refit.dequantize(Device::Cpu), Some(&h));
        assert!(e_refit < e_gptq * 0.98, "{bits} bits: refit {e_refit} vs GPTQ {e_gptq}");
        assert_eq!(refit.storage_bits(), gptq.storage_bits(), "refitting changes no bits");
        for g in 0..refit.groups() {
            let table = &refit.lut[g * spec.entries()..(g + 1) * spec.entries()];
            assert!(table.windows(2).all(|w| w[0] <= w[1]), "{bits} bits: group {g} table not sorted");
        }
        // the stored parts are what was measured: the file round trip reproduces the refitted matrix exactly
        let again = PalettizedTensor { indices: pack_indices(&refit.unpacked_indices(), bits), ..refit.clone() };
        assert!(again.dequantize(Device::Cpu).equal(&refit.dequantize(Device::Cpu)));
    }
}

#[test]
fn refitting_without_statistics_is_a_no_op() {
    let w = random_matrix(16, 32, 9);
    let spec = PaletteSpec::new(2, 4);
    let plain = palettize(&w, spec, Calibration::default()).unwrap();
    let asked = palettize(&w, spec, Calibration { refit_rounds: 2, ..Calibration::default() }).unwrap();
    assert_eq!(plain, asked);
}

#[test]
fn rotations_are_orthogonal_and_the_same_for_the_same_seed_and_size() {
    for n in [1usize, 7, 64, 96] {
        let q = Rotation { seed: 3 }.matrix(n, Device::Cpu);
        let off = (q.matmul(&q.transpose(0, 1)) - Tensor::eye(n as i64, (Kind::Float, Device::Cpu))).abs().max();
        assert!(off.double_value(&[]) < 1e-5, "n {n}: Q Qᵀ is off the identity by {off}");
        assert!(q.equal(&Rotation { seed: 3 }.matrix(n, Device::Cpu)), "n {n}: built again, the same");
    }
    // another seed flips other rows' signs of the same transform
    let (a, b) = (Rotation { seed: 3 }.matrix(64, Device::Cpu), Rotation { seed: 4 }.matrix(64, Device::Cpu));
    assert!(!a.equal(&b));
    assert!(a.abs().equal(&b.abs()));
    // only the seed is stored, so the matrix a seed means is frozen: these entries must never change
    let q = Vec::<f32>::try_from(Rotation { seed: 3 }.matrix(4, Device::Cpu).reshape([-1])).unwrap();
    let frozen: Vec<f32> = vec![
        0.5,
        0.6532815,
        0.5,
        0.27059805,
        -0.5,
        -0.27059805,
        0.5,
        0.6532815,
        -0.5,
        0.27059805,
        0.5,
        -0.6532815,
        0.5,
        -0.6532815,
        0.5,
        -0.27059805,
    ];
    assert_eq!(q, frozen);
}

#[test]
fn a_rotated_palettization_is_served_rotated_back_and_fits_loud_channels_better() {
    // a few loud input channels in the calibration inputs and a few large weights in those columns: what a
    // 4-entry table handles worst
    tch::manual_seed(10);
    let gain = Tensor::ones([64], (Kind::Float, Device::Cpu));
    let _ = gain.narrow(0, 0, 4).fill_(6.0);
    let x = Tensor::randn([512, 64], (Kind::Float, Device::Cpu)) * &gain;
    let h = x.transpose(0, 1).matmul(&x);
    let w = random_matrix(32, 64, 11);
    let _ = w.narrow(1, 60, 4).g_mul_scalar_(5.0);
    let calibration = Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds: 1 };
    let plain_spec = PaletteSpec::new(2, 8);
    let rotated_spec = PaletteSpec { rotation: Some(Rotation { seed: 1 }), ..plain_spec };
    let plain = palettize(&w, plain_spec, calibration).unwrap();
    let rotated = palettize(&w, rotated_spec, calibration).unwrap();
    rotated.validate().unwrap();
    assert_eq!(rotated.storage_bits(), plain.storage_bits(), "a rotation costs no bits");
    // served: the stored tables and indices dequantized, times Qᵀ
    let stored = PalettizedTensor { spec: plain_spec, ..rotated.clone() }.dequantize(Device::Cpu);
    let q = Rotation { seed: 1 }.matrix(64, Device::Cpu);
    assert!(rotated.dequantize(Device::Cpu).equal(&stored.matmul(&q.transpose(0, 1))));
    let e_plain = reconstruction_error(&w, &plain.dequantize(Device::Cpu), Some(&h));
    let e_rotated = reconstruction_error(&w, &rotated.dequantize(Device::Cpu), Some(&h));
    assert!(e_rotated < e_plain * 0.8, "rotated {e_rotated} vs plain {e_plain}");
}

#[test]
fn a_spec_without_a_rotation_is_written_as_before() {
    let json = serde_json::to_string(&PaletteSpec::new(4, 32)).unwrap();
    assert_eq!(json, r#"{"bits":4,"group_rows":32,"row_scale":true}"#);
    let read: PaletteSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(read.rotation, None);
    let rotated = PaletteSpec { rotation: Some(Rotation { seed: 9 }), ..PaletteSpec::new(2, 8) };
    let json = serde_json::to_string(&rotated).unwrap();
    assert!(json.contains(r#""rotation":{"seed":9}"#), "{json}");
    assert_eq!(serde_json::from_str::<PaletteSpec>(&json).unwrap(), rotated);
}

#[test]
fn rotated_statistics_given_must_fit_a_rotated_spec() {
    let w = random_matrix(8, 16, 11);
    let x = random_matrix(64, 16, 12);
    let h = x.transpose(0, 1).matmul(&x);
    let rotation = Rotation { seed: 5 };
    let rotated = rotation.rotate_hessian(&h, Device::Cpu);
    let calibration = Calibration { hessian: Some(&h), weighted: true, compensate: true, refit_rounds: 0 };
    let spec = PaletteSpec { rotation: Some(rotation), ..PaletteSpec::new(2, 4) };
    let given = palettize_with_rotated(&w, spec, calibration, Some(&rotated)).unwrap();
    assert_eq!(given, palettize(&w, spec, calibration).unwrap());
    let refused = |spec, calibration, rotated: &Tensor| {
        palettize_with_rotated(&w, spec, calibration, Some(rotated)).unwrap_err().to_string()
    };
    assert!(refused(PaletteSpec::new(2, 4), calibration, &rotated).contains("unrotated"));
    assert!(refused(spec, Calibration::default(), &rotated).contains("without statistics"));
    assert!(refused(spec, calibration, &rotated.narrow(0, 0, 8)).contains("does not fit"));
}
