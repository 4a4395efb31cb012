//! Training checkpoints that survive a crash at any instant and resume exactly.
//!
//! ```text
//! <out>/checkpoints/step-000040/  model.bpk  optim.bpk  state.json  train_config.toml
//! <out>/checkpoints/latest        the name of the newest complete checkpoint
//! ```
//!
//! A checkpoint is written into `.step-NNNNNN.tmp/`, every file fsynced, then renamed; only
//! then is `latest` replaced (atomically). A kill at any point leaves the previous checkpoint
//! intact and `latest` pointing to a complete one; stale temporary folders are removed on the
//! next save. The model file keeps burn's parameter ids, which key the optimiser state.
//!
//! Exact resume needs nothing else: the data order and every other random choice are pure
//! functions of the step counter ([`crate::rng`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use legion_data::fsutil::write_atomic;
use legion_model::bundle::{load_burnpack, save_burnpack, sync_dir};

use crate::error::TrainError;

/// Name of the pointer file to the newest checkpoint.
pub const LATEST_FILE: &str = "latest";

/// Counters of a run, saved with every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimiser steps completed (the next step to run has this index).
    pub step: u64,
    /// Steps skipped because the loss or a gradient was not finite.
    pub skipped_steps: u64,
    /// Consecutive non-finite steps at the time of saving.
    pub bad_steps_in_a_row: u32,
    /// Training samples dropped by the bad-input policy so far.
    pub dropped_samples: u64,
    /// Wall-clock seconds spent training before this checkpoint.
    pub elapsed_seconds: f64,
    /// The resolved config the run started with (TOML); a resume with another config fails.
    pub config_toml: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn optimizer_state(path: &Path) -> impl Fn(burn::store::RecordError) -> TrainError + '_ {
    move |source| TrainError::OptimizerState {
        path: path.to_path_buf(),
        source,
    }
}

/// Checkpoint folder name of step `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Writes a checkpoint of `model`, `optim` and `state` under `root` (`<out>/checkpoints`),
/// points `latest` at it, and deletes all but the newest `keep` checkpoints.
///
/// # Errors
/// [`TrainError::Io`] naming the file that failed; the previous checkpoint is then intact.
pub fn save_checkpoint<M: Module>(
    root: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &TrainerState,
    keep: usize,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(root).map_err(io(root))?;
    remove_stale_temporaries(root)?;
    let name = checkpoint_name(state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    save_burnpack(model, &tmp.join("model.bpk"))?;
    let optim_path = tmp.join("optim.bpk");
    optim
        .save(&optim_path)
        .map_err(optimizer_state(&optim_path))?;
    let state_path = tmp.join("state.json");
    std::fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("plain struct serialises"),
    )
    .map_err(io(&state_path))?;
    let config_path = tmp.join("train_config.toml");
    std::fs::write(&config_path, &state.config_toml).map_err(io(&config_path))?;
    sync_dir(&tmp)?;
    let target = root.join(&name);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    let latest = root.join(LATEST_FILE);
    write_atomic(&latest, name.as_bytes()).map_err(io(&latest))?;
    prune(root, keep.max(1))?;
    Ok(target)
}

/// `(name, path)` of every entry of the folder `root`.
fn named_entries(root: &Path) -> Result<Vec<(String, PathBuf)>, TrainError> {
    std::fs::read_dir(root)
        .map_err(io(root))?
        .map(|entry| {
            let path = entry.map_err(io(root))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((name, path))
        })
        .collect()
}

fn remove_stale_temporaries(root: &Path) -> Result<(), TrainError> {
    for (name, path) in named_entries(root)? {
        if name.starts_with(".step-") && name.ends_with(".tmp") {
            tracing::warn!(path = %path.display(), "removing an incomplete checkpoint");
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>, TrainError> {
    let mut found: Vec<(u64, PathBuf)> = named_entries(root)?
        .into_iter()
        .filter_map(|(name, path)| {
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, path))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn prune(root: &Path, keep: usize) -> Result<(), TrainError> {
    let found = list_checkpoints(root)?;
    let excess = found.len().saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        std::fs::remove_dir_all(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// The newest complete checkpoint under `root`, from `latest`.
///
/// # Errors
/// [`TrainError::IncompleteCheckpoint`] when `latest` names a folder that is not a complete
/// checkpoint.
pub fn latest_checkpoint(root: &Path) -> Result<Option<PathBuf>, TrainError> {
    let latest = root.join(LATEST_FILE);
    if !latest.is_file() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(io(&latest))?;
    let path = root.join(name.trim());
    if !path.join("state.json").is_file() {
        return Err(TrainError::IncompleteCheckpoint {
            latest,
            target: path,
        });
    }
    Ok(Some(path))
}

/// Loads a checkpoint into a model built exactly as the saving run built it.
///
/// burn materialises the optimizer state on its `Device::default()` (it moves to each
/// parameter's device on the next step); with a GPU backend compiled in, that default is the
/// GPU unless `BURN_DEVICE` says otherwise. The `legion` binary sets `BURN_DEVICE=flex` (the
/// host) when unset; other callers that resume on a different device should do the same.
///
/// # Errors
/// [`TrainError::Io`] / [`TrainError::Bundle`] naming the file; the model load is strict.
pub fn load_checkpoint<M: Module>(
    dir: &Path,
    model: M,
    optim: ModuleOptimizer,
) -> Result<(M, ModuleOptimizer, TrainerState), TrainError> {
    let model = load_burnpack(model, &dir.join("model.bpk"))?;
    let optim_path = dir.join("optim.bpk");
    let optim = optim
        .load(&optim_path)
        .map_err(optimizer_state(&optim_path))?;
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|source| TrainError::Json {
        path: state_path.clone(),
        source,
    })?;
    Ok((model, optim, state))
}
