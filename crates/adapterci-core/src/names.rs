//! Validated names of adapters and pipelines: they become object-store keys and URL path segments, so they are
//! restricted to a small ASCII alphabet (no path separators, no `..`, no control or confusable characters).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CoreError;

const MAX_NAME_LEN: usize = 63;

fn validate(kind: &'static str, value: &str) -> Result<(), CoreError> {
    let invalid = |reason| CoreError::InvalidName { kind, value: value.to_string(), reason };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid("must be at most 63 characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.') {
        return Err(invalid("may only hold lowercase ASCII letters, digits, '-', '_' and '.'"));
    }
    let first = value.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid("must start with a lowercase letter or a digit"));
    }
    if value.contains("..") {
        return Err(invalid("must not contain '..'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as a name.
            pub fn new(value: impl Into<String>) -> Result<Self, CoreError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = CoreError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of an adapter in the registry, such as `support-json`.
    AdapterName,
    "adapter"
);
name_type!(
    /// The name of a pipeline, such as `support-json`.
    PipelineName,
    "pipeline"
);
name_type!(
    /// The name of a channel of an adapter, such as `stable` or `canary`.
    ChannelName,
    "channel"
);
name_type!(
    /// A tag naming one version of an adapter, such as `release-2026.11`.
    TagName,
    "tag"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_and_tag_names_follow_the_same_rules() {
        assert_eq!(ChannelName::new("stable").unwrap().as_str(), "stable");
        assert_eq!(TagName::new("release-2026.11").unwrap().as_str(), "release-2026.11");
        let err = ChannelName::new("../stable").unwrap_err().to_string();
        assert!(err.contains("invalid channel name"), "{err}");
        let err = TagName::new("").unwrap_err().to_string();
        assert!(err.contains("invalid tag name"), "{err}");
    }

    #[test]
    fn ordinary_names_are_accepted() {
        for good in ["support-json", "a", "v2.adapter_x", "0abc"] {
            assert_eq!(AdapterName::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn dangerous_names_are_refused() {
        let cases = [
            ("", "must not be empty"),
            ("../etc", "may only hold"),
            (".hidden", "must start with"),
            ("-dash", "must start with"),
            ("a/../b", "may only hold"),
            ("/abs", "may only hold"),
            ("a..b", "must not contain '..'"),
            ("tab\tname", "may only hold"),
            ("аdapter", "may only hold"), // Cyrillic а, a confusable
            ("Upper", "may only hold"),
            (&"x".repeat(64), "at most 63"),
            ("..", "must start with"),
            ("a/b", "may only hold"),
            ("a\\b", "may only hold"),
            ("C:", "may only hold"),
            ("nul\0byte", "may only hold"),
            ("esc\u{1b}[31m", "may only hold"),
            ("line\nbreak", "may only hold"),
            ("del\u{7f}", "may only hold"),
            ("zero\u{200b}width", "may only hold"), // zero-width space
            ("rtl\u{202e}txt", "may only hold"),    // right-to-left override
            ("ѕupport", "may only hold"),           // Cyrillic dze, looks like s
            ("ｓupport", "may only hold"),          // fullwidth s
            ("support\u{301}", "may only hold"),    // combining accent
            ("%2e%2e", "may only hold"),
            ("a b", "may only hold"),
        ];
        for (bad, reason) in cases {
            let err = AdapterName::new(bad).unwrap_err().to_string();
            assert!(err.contains(reason), "{bad:?}: {err}");
        }
    }
}
