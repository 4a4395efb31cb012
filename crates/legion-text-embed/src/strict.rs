//! Strict loading through `burn::store`: a checkpoint that does not match the module fails loudly.
//!
//! burn-store's `load_from` returns an [`ApplyResult`] and leaves judging it to the caller; with
//! `allow_partial(true)` a wrong key table would otherwise load nothing and keep random weights.
//! [`load_strict`] applies any store (safetensors or PyTorch) and turns missing tensors, unused
//! tensors and shape/dtype errors into one [`StrictLoadError`] listing them all, except what an
//! explicit [`Allowances`] pattern permits.
//!
//! This module is deliberately independent of the BERT specifics so that other crates
//! (`legion-model`'s `weights.rs` follows the same approach) can share it.

use std::path::{Path, PathBuf};

use burn::store::{ApplyResult, ModuleSnapshot, ModuleStore};

/// The most names listed per category in an error message.
const LISTED: usize = 40;

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StrictLoadError {
    /// The store failed to read or parse the file.
    #[error("cannot read weights from {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file was read, but its tensors do not match the module.
    #[error(
        "weights in {path} do not match the model ({} missing, {} unexpected, {} errors)\n\
         missing (in the model, not in the file): {}\n\
         unexpected (in the file, not in the model): {}\n\
         errors: {}",
        missing.len(), unexpected.len(), errors.len(),
        listing(missing), listing(unexpected), listing(errors)
    )]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        errors: Vec<String>,
    },
}

fn listing(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    let mut text = names
        .iter()
        .take(LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED {
        text.push_str(&format!(", ... and {} more", names.len() - LISTED));
    }
    text
}

/// What a load may leave out. Empty (the default) means fully strict.
#[derive(Debug, Clone, Default)]
pub struct Allowances {
    /// Patterns on burn module paths allowed to keep their initial value.
    pub missing: Vec<regex_lite::Regex>,
    /// Patterns on (remapped) file keys allowed to be ignored.
    pub unexpected: Vec<regex_lite::Regex>,
}

impl Allowances {
    /// Allowances from pattern strings.
    ///
    /// # Panics
    /// If a pattern is not a valid regex; callers pass literals checked by their tests.
    pub fn from_patterns(missing: &[&str], unexpected: &[&str]) -> Self {
        let compile = |patterns: &[&str]| {
            patterns
                .iter()
                .map(|p| regex_lite::Regex::new(p).expect("allowance patterns are literals"))
                .collect()
        };
        Self {
            missing: compile(missing),
            unexpected: compile(unexpected),
        }
    }
}

/// Applies `store` to `module` and fails unless every module tensor was loaded and every file
/// tensor was used (beyond `allow`). `path` is only used in messages.
///
/// The store should be built with `allow_partial(true)` so that all mismatches are collected
/// and reported together instead of the first one aborting the load.
///
/// # Errors
/// [`StrictLoadError::Read`] when the store fails, [`StrictLoadError::Mismatch`] otherwise.
pub fn load_strict<M, S>(
    mut module: M,
    store: &mut S,
    path: &Path,
    allow: &Allowances,
) -> Result<M, StrictLoadError>
where
    M: ModuleSnapshot,
    S: ModuleStore,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let result = module
        .load_from(store)
        .map_err(|source| StrictLoadError::Read {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    check_result(path, &result, allow)?;
    Ok(module)
}

/// Judges burn-store's [`ApplyResult`] strictly.
///
/// # Errors
/// [`StrictLoadError::Mismatch`] when anything is missing, unused or failed, beyond `allow`.
pub fn check_result(
    path: &Path,
    result: &ApplyResult,
    allow: &Allowances,
) -> Result<(), StrictLoadError> {
    let missing: Vec<String> = result
        .missing
        .iter()
        .map(|(name, _container)| name)
        .filter(|name| !allow.missing.iter().any(|r| r.is_match(name)))
        .cloned()
        .collect();
    let (allowed, unexpected): (Vec<&String>, Vec<&String>) = result
        .unused
        .iter()
        .partition(|name| allow.unexpected.iter().any(|r| r.is_match(name)));
    let errors: Vec<String> = result.errors.iter().map(ToString::to_string).collect();
    if missing.is_empty() && unexpected.is_empty() && errors.is_empty() {
        tracing::debug!(
            path = %path.display(),
            applied = result.applied.len(),
            ignored = ?allowed,
            "weights loaded"
        );
        return Ok(());
    }
    Err(StrictLoadError::Mismatch {
        path: path.to_path_buf(),
        missing,
        unexpected: unexpected.into_iter().cloned().collect(),
        errors,
    })
}
