//! The native model folder: a [`Legion`] in burn's own format, loaded without key remapping or
//! layout conversion.
//!
//! ```text
//! <dir>/config.json   LegionConfig (burn Config JSON, as `LegionConfig::save` writes it; the
//!                     same file `legion debug forward legion` reads)
//! <dir>/model.bpk     every parameter, burn paths and layout (BurnpackStore), with metadata
//!                     `legion.*` saying where it came from
//! ```
//!
//! `legion convert` writes such a folder from any GLaMM / LEGION checkpoint layout (plus an
//! optional PEFT adapter and a separate CLIP file); [`load_native`] reads it back strictly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::store::burn_pack::{Tensor as PackTensor, Writer};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;

use super::{Legion, LegionConfig, LegionError};
use crate::weights::dtype::{ImportAdapter, TargetDTypes};
use crate::weights::{Allowances, FloatDTypePolicy, WeightsError, check_result};

/// The [`LegionConfig`] of a native folder.
pub const NATIVE_CONFIG_FILE: &str = "config.json";
/// The weights of a native folder.
pub const NATIVE_WEIGHTS_FILE: &str = "model.bpk";

/// What [`save_native`] wrote.
#[derive(Debug, Clone)]
pub struct NativeFiles {
    /// `<dir>/config.json`.
    pub config: PathBuf,
    /// `<dir>/model.bpk`.
    pub weights: PathBuf,
}

/// Writes `model` and its `config` as a native folder `dir` (created if needed).
///
/// `metadata` goes into the `.bpk` header under `legion.<key>` (e.g. the source checkpoint).
///
/// # Errors
/// [`WeightsError::SourceIo`] when the folder cannot be created, [`WeightsError::Source`] when
/// a file exists and `overwrite` is off; [`WeightsError::Write`] when writing fails.
pub fn save_native(
    model: &Legion,
    config: &LegionConfig,
    dir: &Path,
    metadata: &BTreeMap<String, String>,
    overwrite: bool,
) -> Result<NativeFiles, WeightsError> {
    // What `BurnpackStore::collect_from` writes: every parameter under its burn path, enum
    // variants included, each read back only when the writer reaches it.
    let tensors = model.collect(None, None, false);
    write_native_tensors(tensors, config, dir, metadata, overwrite)
}

/// Writes tensors already named by burn path ([`StreamPlan::into_tensors`]) and `config` as a
/// native folder `dir`, as [`save_native`] writes a model: same names, layout and metadata.
/// Each tensor's data is drawn (read, converted) only when the writer reaches it, and the
/// file appears only once complete.
///
/// # Errors
/// As [`save_native`]; [`WeightsError::Write`] also when drawing a tensor fails (unreadable
/// source data), naming it.
///
/// [`StreamPlan::into_tensors`]: crate::weights::stream::StreamPlan::into_tensors
pub fn write_native_tensors(
    tensors: Vec<PackTensor>,
    config: &LegionConfig,
    dir: &Path,
    metadata: &BTreeMap<String, String>,
    overwrite: bool,
) -> Result<NativeFiles, WeightsError> {
    std::fs::create_dir_all(dir).map_err(|source| WeightsError::SourceIo {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = NativeFiles {
        config: dir.join(NATIVE_CONFIG_FILE),
        weights: dir.join(NATIVE_WEIGHTS_FILE),
    };
    if !overwrite {
        for path in [&files.config, &files.weights] {
            if path.exists() {
                return Err(WeightsError::Source {
                    path: path.clone(),
                    message: "the file exists (pass overwrite / --force to replace it)".into(),
                });
            }
        }
    }
    let mut writer = Writer::new(tensors)
        .with_metadata("legion.format", "legion-native-1")
        .auto_extension(false)
        .overwrite(overwrite);
    for (key, value) in BurnpackStore::default_metadata() {
        writer = writer.with_metadata(&key, &value);
    }
    for (key, value) in metadata {
        writer = writer.with_metadata(&format!("legion.{key}"), value);
    }
    writer
        .write_to_file(&files.weights)
        .map_err(|e| WeightsError::Write {
            path: files.weights.clone(),
            what: "cannot write burnpack",
            source: Box::new(e),
        })?;
    config
        .save(&files.config)
        .map_err(|e| WeightsError::Write {
            path: files.config.clone(),
            what: "cannot write config",
            source: Box::new(e),
        })?;
    tracing::debug!(dir = %dir.display(), "native model written");
    Ok(files)
}

/// Reads a native folder: the config, then every parameter, strictly (missing or extra tensors
/// and shape errors are an error). Float parameters get the dtype `float_dtype` says
/// ([`FloatDTypePolicy::Module`]: the device's default, f32 unless set otherwise).
///
/// # Errors
/// [`LegionError::Weights`] ([`WeightsError::Read`] for an unreadable config or `.bpk`,
/// [`WeightsError::Mismatch`] when the weights do not match the config's model),
/// [`LegionError::Config`] when the config's components do not fit together.
pub fn load_native(
    dir: &Path,
    device: &Device,
    float_dtype: FloatDTypePolicy,
) -> Result<(Legion, LegionConfig), LegionError> {
    let config_path = dir.join(NATIVE_CONFIG_FILE);
    let weights_path = dir.join(NATIVE_WEIGHTS_FILE);
    for path in [&config_path, &weights_path] {
        if !path.is_file() {
            return Err(WeightsError::Source {
                path: path.clone(),
                message: "not a native legion model folder (expected config.json and \
                          model.bpk, as `legion convert` writes them)"
                    .into(),
            }
            .into());
        }
    }
    let config = LegionConfig::load(&config_path).map_err(|e| WeightsError::Read {
        path: config_path.clone(),
        what: "not a LegionConfig",
        source: Box::new(e),
    })?;
    let mut model = config.init(device)?;
    let adapter = ImportAdapter::native(TargetDTypes::resolve(&model, float_dtype));
    let mut store = BurnpackStore::from_file(&weights_path)
        .with_from_adapter(adapter)
        .allow_partial(true)
        .validate(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| WeightsError::Read {
            path: weights_path.clone(),
            what: "not a readable burnpack file",
            source: Box::new(e),
        })?;
    check_result(&weights_path, &result, &Allowances::strict())?;
    tracing::debug!(dir = %dir.display(), applied = result.applied.len(), "native model loaded");
    Ok((model, config))
}
