//! What the steps of a build share: the analysis and the palettization make each input's rotated statistics (and,
//! with corrected sensitivities and low-rank rounds, its square root) once when asked to keep them, and palettize
//! to the bit as without.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{BuildOptions, analyze, calibrate, keep_what_analysis_and_palettization_share, palettize_model};
use crate::allocate::{Method, Sensitivity};
use crate::calibrate::TeacherTextSpec;
use crate::device::DeviceChoice;
use crate::model::BaseModel;

/// Analyzes and palettizes `base` with `options`, keeping what the passes share when `keep`: the release's
/// tensors and how many rotated statistics and square roots were made for how many inputs.
fn analyze_and_palettize(base: &BaseModel, options: &BuildOptions, keep: bool) -> (Vec<u8>, (usize, usize, usize)) {
    let mut calibrated = calibrate(base, options, None, &mut |_| {}).unwrap();
    if keep {
        keep_what_analysis_and_palettization_share(&mut calibrated, options);
    }
    let analysis = analyze(base, &calibrated, options, &mut |_| {}).unwrap();
    let bits: Vec<u8> = analysis.rows.iter().map(|r| r.bits).collect();
    let (linear, embedding, _) = palettize_model(base, &calibrated, &bits, options).unwrap();
    let release = super::release_file(base, options, linear, embedding).unwrap();
    (release, calibrated.hessians.derivations_made())
}

/// Checks how many rotated statistics and square roots per input the analysis and palettization with
/// `low_rank_rounds` and `sensitivity` make apart and sharing them, and that both give the same release.
fn check(low_rank_rounds: usize, sensitivity: Sensitivity, made_apart: (usize, usize), made_shared: (usize, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    crate::tiny::write_tiny_model(&path, 21).unwrap();
    let base = BaseModel::load(&path, DeviceChoice::Cpu).unwrap();
    let options = BuildOptions {
        method: Method { group_rows: 8, group_rows_2bit: 4, low_rank_rounds, ..Method::default() },
        teacher: TeacherTextSpec { sequences: 16, seq_len: 24, batch: 8, temperature: 1.0, seed: 1 },
        sensitivity,
        ..BuildOptions::default()
    };
    let (apart, (rotated, roots, inputs)) = analyze_and_palettize(&base, &options, false);
    assert_eq!((rotated, roots), (made_apart.0 * inputs, made_apart.1 * inputs), "apart");
    let (shared, (rotated, roots, _)) = analyze_and_palettize(&base, &options, true);
    assert_eq!((rotated, roots), (made_shared.0 * inputs, made_shared.1 * inputs), "shared");
    assert!(apart == shared, "shared statistics give a byte-equal release");
}

#[test]
fn the_analysis_and_the_palettization_share_each_inputs_rotated_statistics() {
    // rotated once by the sensitivities' palettizations and once by the release's, or once for both; the
    // corrected sensitivities' square roots are read by them alone
    check(0, Sensitivity::Corrected, (2, 1), (1, 1));
}

#[test]
fn with_low_rank_rounds_the_corrected_sensitivities_and_the_palettization_share_each_inputs_square_root() {
    check(1, Sensitivity::Corrected, (2, 2), (1, 1));
    // the plain sensitivities read no square root: the release's rounds alone do
    check(1, Sensitivity::TwoBit, (2, 1), (1, 1));
}
