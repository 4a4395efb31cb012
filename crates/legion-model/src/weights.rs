//! Strict weight loading: a checkpoint that does not match the module fails loudly.
//!
//! Every checkpoint family (HF CLIP, HF LLaMA, original SAM, GLaMM/LEGION) declares one table of
//! `(regex, replacement)` key remaps from the reference naming to burn field paths. Loading goes
//! through `burn::store` with `PyTorchToBurnAdapter` (Linear weights transposed, norm
//! weight/bias -> gamma/beta). After applying, any missing tensor, unused tensor or shape error is
//! an error listing them all, unless a pattern explicitly allows it — silent partial loads are the
//! most common bug in peer projects.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

/// One declarative remap rule: a regex on the reference key and its replacement
/// (`$1`-style groups allowed), applied in table order.
pub type KeyRemap = (&'static str, &'static str);

/// Errors from loading weights into a module.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or parsed as safetensors.
    #[error("cannot read weights from {path}: {message}")]
    Read { path: PathBuf, message: String },
    /// The file was read but does not match the module.
    #[error(
        "weights in {path} do not match the model ({} missing, {} unexpected, {} errors)\n\
         missing (in the model, not in the file): {}\n\
         unexpected (in the file, not in the model): {}\n\
         errors: {}",
        missing.len(), unexpected.len(), errors.len(),
        list(missing), list(unexpected), list(errors)
    )]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        errors: Vec<String>,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    const SHOWN: usize = 40;
    let mut s = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", ... and {} more", items.len() - SHOWN));
    }
    s
}

/// What a load may leave out, by regex on the burn path (missing) or the remapped file key
/// (unexpected). Empty = strict.
#[derive(Debug, Clone, Default)]
pub struct Allowances {
    /// Model tensors allowed to stay at their initial value.
    pub missing: Vec<regex_lite::Regex>,
    /// File tensors allowed to be ignored.
    pub unexpected: Vec<regex_lite::Regex>,
}

/// Loads a safetensors file in the reference (PyTorch) naming into `module`, strictly.
///
/// `remaps` is the checkpoint family's key table, applied in order.
///
/// # Errors
/// [`WeightsError::Read`] when the file cannot be read, [`WeightsError::Mismatch`] listing every
/// missing / unexpected tensor and shape error otherwise.
pub fn load_safetensors<M: Module + ModuleSnapshot>(
    mut module: M,
    path: &Path,
    remaps: &[KeyRemap],
    allow: &Allowances,
) -> Result<M, WeightsError> {
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
        // Not `validate(true)`: with it, any shape/dtype error makes `load_from` return an
        // opaque store error (reported as `Read`) without the missing/unexpected lists;
        // `check_result` reports those errors together with them as a `Mismatch`.
        .validate(false);
    for (from, to) in remaps {
        store = store.with_key_remapping(*from, *to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| WeightsError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    check_result(path, &result, allow)?;
    Ok(module)
}

/// Turns burn-store's [`ApplyResult`] into a strict verdict.
///
/// # Errors
/// [`WeightsError::Mismatch`] when anything is missing, unused or failed, beyond `allow`.
pub fn check_result(
    path: &Path,
    result: &ApplyResult,
    allow: &Allowances,
) -> Result<(), WeightsError> {
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| !allow.missing.iter().any(|r| r.is_match(p)))
        .collect();
    let unexpected: Vec<String> = result
        .unused
        .iter()
        .filter(|p| !allow.unexpected.iter().any(|r| r.is_match(p)))
        .cloned()
        .collect();
    let errors: Vec<String> = result.errors.iter().map(|e| format!("{e:?}")).collect();
    if missing.is_empty() && unexpected.is_empty() && errors.is_empty() {
        tracing::debug!(path = %path.display(), applied = result.applied.len(), "weights loaded");
        Ok(())
    } else {
        Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            missing,
            unexpected,
            errors,
        })
    }
}
