//! Content digests (`sha256:<hex>`), the identity of every blob, manifest, dataset and base model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::CoreError;

/// A sha256 content digest, written `sha256:<64 lowercase hex digits>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// The 64 hex digits without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

/// Computes a digest over data that arrives in pieces.
#[derive(Default)]
pub struct DigestWriter(Sha256);

impl DigestWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = CoreError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| CoreError::InvalidDigest { value: value.to_string(), reason };
        let hex_part = value.strip_prefix("sha256:").ok_or_else(|| invalid("expected the prefix sha256:"))?;
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid("expected 64 lowercase hex digits"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| invalid("expected 64 lowercase hex digits"))?;
        Ok(Digest(bytes))
    }
}

impl TryFrom<String> for Digest {
    type Error = CoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(value: Digest) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_through_its_string_form() {
        let digest = Digest::of(b"hello");
        let text = digest.to_string();
        assert_eq!(text, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(text.parse::<Digest>().unwrap(), digest);
    }

    #[test]
    fn malformed_digests_are_refused_with_a_reason() {
        for bad in ["", "sha256:", "md5:abcd", "sha256:XYZ", &format!("sha256:{}", "A".repeat(64))] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(matches!(err, CoreError::InvalidDigest { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn streaming_digest_equals_one_shot_digest() {
        let mut writer = DigestWriter::new();
        writer.update(b"hel");
        writer.update(b"lo");
        assert_eq!(writer.finish(), Digest::of(b"hello"));
    }
}
