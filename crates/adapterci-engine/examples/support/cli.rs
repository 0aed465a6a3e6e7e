//! Flag parsing and timestamped logging shared by the engine's benchmark examples (`base_bench`,
//! `recovery_convergence`): `--name value` pairs, with named switches that take no value.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

pub struct Args {
    pub values: BTreeMap<String, String>,
}

impl Args {
    /// The process arguments; `switches` are flags without a value (stored as "1").
    pub fn parse(switches: &[&str]) -> anyhow::Result<Args> {
        let mut values = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else { bail!("unexpected argument {key:?}") };
            if switches.contains(&name) {
                values.insert(name.to_string(), "1".to_string());
                continue;
            }
            let value = it.next().with_context(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value);
        }
        Ok(Args { values })
    }

    pub fn get(&self, name: &str, default: &str) -> String {
        self.values.get(name).cloned().unwrap_or_else(|| default.to_string())
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.values.get(name) {
            Some(v) => v.parse().map_err(|_| anyhow::anyhow!("--{name} {v:?} is not a number")),
            None => Ok(default),
        }
    }

    /// A value spelled by its serde name (as in the config files and the reports), or `default`.
    #[allow(dead_code)] // not every example that shares this file has such a flag
    pub fn named<T: serde::de::DeserializeOwned>(&self, name: &str, default: T) -> anyhow::Result<T> {
        match self.values.get(name) {
            Some(v) => {
                serde_json::from_value(serde_json::Value::String(v.clone())).with_context(|| format!("--{name}"))
            }
            None => Ok(default),
        }
    }
}

/// A line on stderr with the UTC time of day.
pub fn log(message: &str) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("[{:02}:{:02}:{:02}] {message}", (secs / 3600) % 24, (secs / 60) % 60, secs % 60);
}
