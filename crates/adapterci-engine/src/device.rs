//! Where the engine runs, chosen without naming tch: `auto`, `cpu`, `cuda` or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use crate::EngineError;

/// The device to load a model on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// CUDA device 0 when CUDA is available, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// The tch device; asking for a CUDA device that is not there is an error naming it.
    pub fn resolve(self) -> Result<tch::Device, EngineError> {
        match self {
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda(index) => {
                let available = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
                if index < available {
                    Ok(tch::Device::Cuda(index))
                } else {
                    Err(EngineError::InvalidConfig(format!(
                        "device cuda:{index} is not available ({available} CUDA devices found)"
                    )))
                }
            }
        }
    }

    /// Whether `resolve` would give a CUDA device.
    pub fn is_cuda(self) -> bool {
        self.resolve().is_ok_and(|device| device.is_cuda())
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = EngineError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || EngineError::InvalidConfig(format!("device {text:?} is not one of auto, cpu, cuda, cuda:N"));
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(index) => index.parse().map(DeviceChoice::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = EngineError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(choice: DeviceChoice) -> String {
        choice.to_string()
    }
}

/// Sets libtorch's intra-op thread count for the whole process (binaries call it once at start-up).
pub fn set_threads(threads: usize) {
    tch::set_num_threads(threads.max(1) as i32);
}

/// Whether this process can use CUDA.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<DeviceChoice, &str>) {
        match (text.parse::<DeviceChoice>(), expected) {
            (Ok(choice), Ok(want)) => {
                assert_eq!(choice, want);
                assert_eq!(choice.to_string().parse::<DeviceChoice>().expect("round trip"), want);
            }
            (Err(error), Err(needle)) => assert!(error.to_string().contains(needle), "{error}"),
            (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_device_names() {
        check("auto", Ok(DeviceChoice::Auto));
        check(" CPU ", Ok(DeviceChoice::Cpu));
        check("cuda", Ok(DeviceChoice::Cuda(0)));
        check("cuda:3", Ok(DeviceChoice::Cuda(3)));
        check("cuda:x", Err("\"cuda:x\" is not one of"));
        check("tpu", Err("\"tpu\""));
    }

    #[test]
    fn serde_uses_the_names() {
        let json = serde_json::to_string(&DeviceChoice::Cuda(1)).expect("serialize");
        assert_eq!(json, "\"cuda:1\"");
        assert_eq!(serde_json::from_str::<DeviceChoice>("\"cpu\"").expect("parse"), DeviceChoice::Cpu);
        assert!(serde_json::from_str::<DeviceChoice>("\"metal\"").is_err());
    }

    #[test]
    fn cpu_always_resolves_and_a_missing_gpu_is_an_error() {
        assert_eq!(DeviceChoice::Cpu.resolve().expect("cpu"), tch::Device::Cpu);
        let missing = DeviceChoice::Cuda(999).resolve().expect_err("no such device").to_string();
        assert!(missing.contains("cuda:999 is not available"), "{missing}");
        let auto = DeviceChoice::Auto.resolve().expect("auto");
        assert_eq!(auto.is_cuda(), cuda_available());
    }
}
