//! Run-time device selection for legion-rs.
//!
//! burn 0.22 picks the backend from a [`Device`] value, not a type parameter, so every legion
//! crate shares this one parser: `--device cpu|wgpu|wgpu:N|wgpu:cpu|cuda:N`. The CPU backend (`flex`) is
//! always compiled; `wgpu` and `cuda` are cargo features of this crate (re-exported by the CLI).
//! Asking for a backend that was not compiled in is an error that says how to rebuild.
//!
//! ```text
//! legion train --config configs/tiny.toml --device cpu
//! cargo build --release --features wgpu && legion train ... --device wgpu:0
//! ```

pub mod heap;

use std::fmt;
use std::str::FromStr;

pub use burn::tensor::Device;

/// Errors from parsing or opening a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The string is not of the form `cpu`, `wgpu`, `wgpu:N`, `wgpu:cpu` or `cuda:N`.
    #[error("invalid device `{0}`: expected `cpu`, `wgpu`, `wgpu:N`, `wgpu:cpu` or `cuda:N`")]
    Invalid(String),
    /// The backend exists but this binary was built without its cargo feature.
    #[error(
        "device `{spec}` needs the `{feature}` backend, which this binary was built without; \
         rebuild with `cargo build --release --features {feature}` (see README, \"GPU builds\")"
    )]
    NotCompiled { spec: String, feature: &'static str },
}

/// A device as the user names it on the command line or in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The pure-Rust CPU backend (`flex`), always available.
    #[default]
    Cpu,
    /// A wgpu adapter: `None` lets wgpu choose, `Some(n)` is the n-th discrete GPU.
    Wgpu(Option<usize>),
    /// wgpu's software (CPU) adapter, e.g. Mesa's lavapipe: named explicitly because wgpu picks
    /// a software adapter only when no GPU adapter exists (`wgpu:cpu`).
    WgpuCpu,
    /// The n-th CUDA GPU.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || BackendError::Invalid(s.to_string());
        let lower = s.trim().to_ascii_lowercase();
        if lower == "wgpu:cpu" {
            return Ok(Self::WgpuCpu);
        }
        let (kind, index) = match lower.split_once(':') {
            Some((kind, index)) => (kind, Some(index.parse::<usize>().map_err(|_| invalid())?)),
            None => (lower.as_str(), None),
        };
        match (kind, index) {
            ("cpu" | "flex", None) => Ok(Self::Cpu),
            ("wgpu" | "gpu", index) => Ok(Self::Wgpu(index)),
            ("cuda", Some(index)) => Ok(Self::Cuda(index)),
            ("cuda", None) => Ok(Self::Cuda(0)),
            _ => Err(invalid()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Wgpu(None) => write!(f, "wgpu"),
            Self::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
            Self::WgpuCpu => write!(f, "wgpu:cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The cargo feature this device needs, `None` for the always-present CPU backend.
    pub fn feature(&self) -> Option<&'static str> {
        match self {
            Self::Cpu => None,
            Self::Wgpu(_) | Self::WgpuCpu => Some("wgpu"),
            Self::Cuda(_) => Some("cuda"),
        }
    }

    /// Whether this binary was compiled with the backend this device needs.
    pub fn is_compiled(&self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Wgpu(_) | Self::WgpuCpu => cfg!(feature = "wgpu"),
            Self::Cuda(_) => cfg!(feature = "cuda"),
        }
    }

    /// Opens the device (inference mode, no autodiff).
    ///
    /// # Errors
    /// [`BackendError::NotCompiled`] when the backend's feature is off in this build.
    pub fn device(&self) -> Result<Device, BackendError> {
        if !self.is_compiled() {
            return Err(BackendError::NotCompiled {
                spec: self.to_string(),
                feature: self.feature().unwrap_or("flex"),
            });
        }
        Ok(match *self {
            Self::Cpu => Device::flex(),
            #[cfg(feature = "wgpu")]
            Self::Wgpu(index) => {
                use burn::tensor::DeviceKind;
                Device::wgpu(match index {
                    None => DeviceKind::DefaultDevice,
                    Some(n) => DeviceKind::DiscreteGpu(n),
                })
            }
            #[cfg(feature = "wgpu")]
            Self::WgpuCpu => Device::wgpu(burn::tensor::DeviceKind::Cpu),
            #[cfg(feature = "cuda")]
            Self::Cuda(index) => Device::cuda(index),
            #[allow(unreachable_patterns)]
            _ => unreachable!("is_compiled() guards every backend that is not built"),
        })
    }

    /// Opens the device with autodiff enabled, for training.
    ///
    /// # Errors
    /// As [`DeviceSpec::device`].
    pub fn autodiff_device(&self) -> Result<Device, BackendError> {
        Ok(self.device()?.autodiff())
    }
}

/// The environment variable that names the device of the backend-generic tests.
pub const TEST_DEVICE_VAR: &str = "LEGION_TEST_DEVICE";

/// The device the backend-generic tests (component parity, losses) run on: the spelling in
/// `LEGION_TEST_DEVICE` (default `cpu`), so that one test suite checks every backend against the
/// same PyTorch fixtures (CI runs it again with `LEGION_TEST_DEVICE=wgpu:cpu` on lavapipe).
///
/// # Panics
/// When the variable holds an invalid spelling or a backend this build lacks: a test run that
/// asked for a backend must not silently fall back to the CPU.
pub fn test_device() -> Device {
    let spec = std::env::var(TEST_DEVICE_VAR).unwrap_or_else(|_| "cpu".into());
    spec.parse::<DeviceSpec>()
        .and_then(|spec| spec.device())
        .unwrap_or_else(|e| panic!("{TEST_DEVICE_VAR}={spec}: {e}"))
}

/// Whether [`test_device`] is the f32 CPU reference backend (`flex`): tests that compare a
/// backend with the CPU, or whose tolerances were measured on it, ask this.
pub fn testing_on_cpu() -> bool {
    std::env::var(TEST_DEVICE_VAR)
        .map(|spec| matches!(spec.parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu)))
        .unwrap_or(true)
}

/// The backends compiled into this binary, for `--help` texts and error messages.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut backends = vec!["cpu"];
    if cfg!(feature = "wgpu") {
        backends.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        backends.push("cuda");
    }
    backends
}

/// Makes CPU float arithmetic flush subnormal numbers to zero (x86 FTZ + DAZ) on the calling
/// thread and on every thread of rayon's global pool (which burn's `flex` backend computes on).
///
/// Why: once a trained model's mask logits saturate, `exp`/`sigmoid` produce subnormal floats,
/// and x86 handles those ~100x slower: a tiny training run went from 1 s to 25 s per step.
/// Subnormals (< 1.2e-38) carry no meaningful signal here. Call before any tensor work, once;
/// returns `false` when the rayon pool already existed (its threads then keep their mode) or
/// the CPU is not x86.
pub fn flush_denormals() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        // `_mm_setcsr` is deprecated in favour of inline assembly; it is still the plain way.
        #[allow(deprecated)]
        fn set_mode() {
            #[cfg(target_arch = "x86")]
            use std::arch::x86::{_mm_getcsr, _mm_setcsr};
            #[cfg(target_arch = "x86_64")]
            use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
            // FTZ (bit 15) and DAZ (bit 6) of MXCSR.
            // SAFETY: only the flush/zero mode bits change; SSE is baseline on these targets.
            unsafe {
                _mm_setcsr(_mm_getcsr() | 0x8040);
            }
        }
        set_mode();
        rayon::ThreadPoolBuilder::new()
            .start_handler(|_| set_mode())
            .build_global()
            .is_ok()
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("CPU".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("wgpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Wgpu(None)));
        assert_eq!(
            "wgpu:1".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Wgpu(Some(1)))
        );
        assert_eq!("wgpu:CPU".parse::<DeviceSpec>(), Ok(DeviceSpec::WgpuCpu));
        assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        for bad in ["", "tpu", "cuda:x", "cpu:0", "cuda:-1"] {
            assert!(
                matches!(bad.parse::<DeviceSpec>(), Err(BackendError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            DeviceSpec::Cpu,
            DeviceSpec::Wgpu(None),
            DeviceSpec::Wgpu(Some(2)),
            DeviceSpec::WgpuCpu,
            DeviceSpec::Cuda(1),
        ] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>(), Ok(spec));
        }
    }

    #[test]
    fn missing_backend_names_the_feature() {
        if !cfg!(feature = "cuda") {
            let err = DeviceSpec::Cuda(0).device().unwrap_err();
            assert_eq!(
                err,
                BackendError::NotCompiled {
                    spec: "cuda:0".into(),
                    feature: "cuda"
                }
            );
            assert!(err.to_string().contains("--features cuda"));
        }
        assert!(DeviceSpec::Cpu.device().is_ok());
        assert!(compiled_backends().contains(&"cpu"));
    }
}
