//! LoRA options beyond rank and alpha: rsLoRA scaling and per-module rank and alpha (PEFT's `use_rslora`,
//! `rank_pattern` and `alpha_pattern`, with PEFT's matching rule).
//!
//! PEFT resolves a module's rank by the first key of `rank_pattern` that matches `(.*\.)?(KEY)$` against the
//! module's name in the base model (`model.layers.3.self_attn.q_proj`). The first match depends on the order
//! of a JSON object's keys, which JSON does not promise to keep; here two keys that both match one module
//! must agree, so the order never matters.

use std::collections::BTreeMap;

use adapterci_core::training::LoraTarget;
use regex::Regex;

use crate::EngineError;

/// rsLoRA and per-module rank/alpha. The default (all off, no patterns) is plain LoRA.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoraOptions {
    /// Scale by `alpha / sqrt(rank)` instead of `alpha / rank` (Kalajdzievski 2023).
    pub use_rslora: bool,
    /// Module-name pattern -> rank, for the modules whose rank is not the adapter's.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Module-name pattern -> alpha, for the modules whose alpha is not the adapter's.
    pub alpha_pattern: BTreeMap<String, f64>,
}

/// The module's name in a Hugging Face Llama model (`model.layers.{layer}.self_attn.q_proj`).
pub fn module_name(layer: usize, target: LoraTarget) -> String {
    format!("model.layers.{layer}.{}", target.hf_module())
}

fn pattern_regex(key: &str) -> Result<Regex, EngineError> {
    Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
        .map_err(|e| EngineError::Adapter(format!("pattern {key:?} is not a regular expression: {e}")))
}

/// The value of the keys of `patterns` that match `module`, `None` when none does; keys that match with
/// different values are an error naming both.
fn resolve<T: Copy + PartialEq + std::fmt::Display>(
    patterns: &BTreeMap<String, T>,
    module: &str,
    what: &str,
) -> Result<Option<T>, EngineError> {
    let mut found: Option<(&str, T)> = None;
    for (key, &value) in patterns {
        if !pattern_regex(key)?.is_match(module) {
            continue;
        }
        match found {
            Some((first, earlier)) if earlier != value => {
                return Err(EngineError::Adapter(format!(
                    "{what} keys {first:?} ({earlier}) and {key:?} ({value}) both match {module}"
                )));
            }
            _ => found = Some((key, value)),
        }
    }
    Ok(found.map(|(_, value)| value))
}

impl LoraOptions {
    pub fn is_default(&self) -> bool {
        *self == LoraOptions::default()
    }

    /// `(rank, alpha)` of `target` in `layer`, given the adapter's own rank and alpha.
    pub fn rank_and_alpha(
        &self,
        rank: usize,
        alpha: f64,
        layer: usize,
        target: LoraTarget,
    ) -> Result<(usize, f64), EngineError> {
        let module = module_name(layer, target);
        let rank = resolve(&self.rank_pattern, &module, "rank_pattern")?.unwrap_or(rank);
        let alpha = resolve(&self.alpha_pattern, &module, "alpha_pattern")?.unwrap_or(alpha);
        Ok((rank, alpha))
    }

    /// The factor on `x A^T B^T`: `alpha / rank`, or `alpha / sqrt(rank)` with rsLoRA.
    pub fn scale(&self, rank: usize, alpha: f64) -> f64 {
        if self.use_rslora { alpha / (rank as f64).sqrt() } else { alpha / rank as f64 }
    }

    /// Checks every pattern compiles and every rank/alpha is usable for a model of `hidden_size`.
    pub fn validate(&self, hidden_size: usize) -> Result<(), EngineError> {
        for (key, &rank) in &self.rank_pattern {
            pattern_regex(key)?;
            if rank == 0 || rank > hidden_size {
                return Err(EngineError::Adapter(format!(
                    "rank_pattern {key:?}: rank {rank} must be between 1 and {hidden_size}"
                )));
            }
        }
        for (key, &alpha) in &self.alpha_pattern {
            pattern_regex(key)?;
            if !(alpha.is_finite() && alpha > 0.0) {
                return Err(EngineError::Adapter(format!("alpha_pattern {key:?}: alpha {alpha} must be positive")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rank: &[(&str, usize)], alpha: &[(&str, f64)]) -> LoraOptions {
        LoraOptions {
            use_rslora: false,
            rank_pattern: rank.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            alpha_pattern: alpha.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn patterns_match_like_peft() {
        let o = options(&[("q_proj", 8), ("model.layers.1.mlp.down_proj", 2)], &[("mlp\\..*", 3.0)]);
        assert_eq!(o.rank_and_alpha(4, 16.0, 0, LoraTarget::Q).ok(), Some((8, 16.0)));
        assert_eq!(o.rank_and_alpha(4, 16.0, 0, LoraTarget::Down).ok(), Some((4, 3.0)));
        assert_eq!(o.rank_and_alpha(4, 16.0, 1, LoraTarget::Down).ok(), Some((2, 3.0)));
        assert_eq!(o.rank_and_alpha(4, 16.0, 1, LoraTarget::K).ok(), Some((4, 16.0)));
        // "proj" alone is not a whole dotted suffix of "q_proj": PEFT's `(.*\.)?(KEY)$` needs a dot before it.
        let o = options(&[("proj", 8)], &[]);
        assert_eq!(o.rank_and_alpha(4, 16.0, 0, LoraTarget::Q).ok(), Some((4, 16.0)));
    }

    #[test]
    fn disagreeing_matches_and_bad_values_are_errors() {
        let o = options(&[("q_proj", 8), ("layers.0.self_attn.q_proj", 2)], &[]);
        let message = o.rank_and_alpha(4, 16.0, 0, LoraTarget::Q).expect_err("ambiguous").to_string();
        assert!(message.contains("both match model.layers.0.self_attn.q_proj"), "{message}");
        assert!(options(&[("(", 8)], &[]).validate(64).is_err());
        assert!(options(&[("q_proj", 0)], &[]).validate(64).is_err());
        assert!(options(&[("q_proj", 65)], &[]).validate(64).is_err());
        assert!(options(&[], &[("q_proj", -1.0)]).validate(64).is_err());
        assert!(options(&[("q_proj", 64)], &[("v_proj", 1.0)]).validate(64).is_ok());
    }

    #[test]
    fn rslora_divides_by_the_square_root_of_the_rank() {
        let mut o = LoraOptions::default();
        assert_eq!(o.scale(16, 32.0), 2.0);
        o.use_rslora = true;
        assert_eq!(o.scale(16, 32.0), 8.0);
    }
}
