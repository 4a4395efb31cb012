//! A trained-model directory: everything `analyze`, `infer`, `eval` and `finetune` need to run
//! a LEGION model that legion-rs trained or converted.
//!
//! ```text
//! <dir>/bundle.json         format tag, SAM input size for inference, provenance
//! <dir>/config.json         the LegionConfig (component shapes)
//! <dir>/model.bpk           weights, burn's native burnpack format (LoRA merged)
//! <dir>/tokenizer.json      the tokenizer with GLaMM's special tokens
//! ```
//!
//! Loading is strict: every model tensor must be in `model.bpk` and nothing else may be.
//! Saving writes into a sibling temporary directory and renames it into place, so a crash
//! never leaves a half-written bundle under the final name.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, FloatDType};
use serde::{Deserialize, Serialize};

use crate::legion::native::save_native;
use crate::legion::{Legion, LegionClsConfig, LegionConfig, LegionForCls};
use crate::precision::cast_params;
use crate::tokenizer::{LegionTokenizer, TokenizerError};
use crate::weights::{Allowances, WeightsError, check_result};

/// Format tag written to `bundle.json`.
pub const BUNDLE_FORMAT: &str = "legion-rs-model/1";

/// File names inside a bundle directory.
pub const BUNDLE_META_FILE: &str = "bundle.json";
/// See the module docs; the same file as the native folder of `legion convert`
/// ([`crate::legion::native`]), so a converted folder with a tokenizer is a bundle.
pub const BUNDLE_CONFIG_FILE: &str = crate::legion::native::NATIVE_CONFIG_FILE;
/// See the module docs.
pub const BUNDLE_WEIGHTS_FILE: &str = crate::legion::native::NATIVE_WEIGHTS_FILE;
/// See the module docs.
pub const BUNDLE_TOKENIZER_FILE: &str = "tokenizer.json";

/// Errors reading or writing a model bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the bundle that must be there is not.
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    /// `bundle.json`, `detector.json` or `config.json` is not valid JSON of its schema.
    #[error("{path}: invalid {what}: {source}")]
    Json {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A metadata file carries another format tag.
    #[error("{path}: format `{found}`, expected `{expected}`")]
    Format {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    /// The configuration cannot build a model.
    #[error("{path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: Box<crate::legion::LegionError>,
    },
    /// burn-store could not write a `.bpk` file.
    #[error("{path}: cannot write the weights: {source}")]
    WeightsWrite {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// burn-store could not read a `.bpk` file into the model (unreadable, or shapes that do
    /// not fit).
    #[error("{path}: weights do not match the model: {source}")]
    WeightsRead {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The tokenizer file could not be written.
    #[error("{path}: cannot write the tokenizer: {source}")]
    TokenizerWrite {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The weights do not match the configuration.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The tokenizer is unusable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The tokenizer has more tokens than the LLM's vocabulary.
    #[error("{path}: the tokenizer has {tokens} tokens but the LLM vocabulary only {vocab_size}")]
    Vocabulary {
        path: PathBuf,
        tokens: usize,
        vocab_size: usize,
    },
}

/// Provenance and inference settings of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// Longest side of the SAM input at inference (1024 in LEGION; the SAM canvas of tiny
    /// configs is smaller).
    pub sam_target_size: usize,
    /// Free text: where the weights came from (training run, converted checkpoint).
    pub source: String,
    /// Optimiser steps the weights were trained for, when known.
    pub trained_steps: Option<u64>,
}

impl BundleMeta {
    /// Meta for a model whose SAM input at inference fills the whole SAM canvas.
    pub fn new(config: &LegionConfig, source: impl Into<String>) -> Self {
        Self {
            format: BUNDLE_FORMAT.to_string(),
            sam_target_size: config.sam.image_encoder.img_size,
            source: source.into(),
            trained_steps: None,
        }
    }
}

/// A model ready for inference, with its tokenizer and settings.
#[derive(Debug)]
pub struct ModelBundle {
    /// Component shapes.
    pub config: LegionConfig,
    /// Weights (no LoRA adapters: merge before saving).
    pub model: Legion,
    /// Tokenizer with the special tokens.
    pub tokenizer: LegionTokenizer,
    /// Provenance and inference settings.
    pub meta: BundleMeta,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl ModelBundle {
    /// Whether `dir` looks like a bundle (has `bundle.json`).
    pub fn is_bundle(dir: &Path) -> bool {
        dir.join(BUNDLE_META_FILE).is_file()
    }

    /// Reads `dir`'s configuration and tokenizer without loading weights.
    ///
    /// # Errors
    /// [`BundleError`] naming the file that is missing or invalid.
    pub fn read_config(
        dir: &Path,
    ) -> Result<(BundleMeta, LegionConfig, LegionTokenizer), BundleError> {
        let meta_path = dir.join(BUNDLE_META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(io_err(&meta_path))?;
        let meta: BundleMeta = serde_json::from_str(&text).map_err(|source| BundleError::Json {
            path: meta_path.clone(),
            what: "bundle metadata",
            source,
        })?;
        if meta.format != BUNDLE_FORMAT {
            return Err(BundleError::Format {
                path: meta_path,
                found: meta.format,
                expected: BUNDLE_FORMAT,
            });
        }
        let config_path = dir.join(BUNDLE_CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(io_err(&config_path))?;
        let config: LegionConfig =
            serde_json::from_str(&text).map_err(|source| BundleError::Json {
                path: config_path.clone(),
                what: "LEGION config",
                source,
            })?;
        config.validate().map_err(|source| BundleError::Config {
            path: config_path.clone(),
            source: Box::new(source),
        })?;
        let tokenizer = LegionTokenizer::from_file(&dir.join(BUNDLE_TOKENIZER_FILE))?;
        if tokenizer.vocab_size() > config.llm.vocab_size {
            return Err(BundleError::Vocabulary {
                path: config_path,
                tokens: tokenizer.vocab_size(),
                vocab_size: config.llm.vocab_size,
            });
        }
        Ok((meta, config, tokenizer))
    }

    /// Loads a bundle onto `device`, strictly.
    ///
    /// # Errors
    /// [`BundleError`]: a missing or invalid file, or [`WeightsError::Mismatch`] listing every
    /// missing and unexpected tensor of `model.bpk`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BundleError> {
        Self::load_as(dir, device, None)
    }

    /// Loads a bundle onto `device`, strictly, with its float weights in `dtype` (`None`:
    /// the dtype stored in `model.bpk`). The model computes in its weights' dtype
    /// ([`crate::precision`]): a bf16 bundle holds half the memory of f32, an f32 one computes
    /// exactly.
    ///
    /// # Errors
    /// As [`ModelBundle::load`].
    pub fn load_as(
        dir: &Path,
        device: &Device,
        dtype: Option<FloatDType>,
    ) -> Result<Self, BundleError> {
        let (meta, config, tokenizer) = Self::read_config(dir)?;
        let model = config.init(device).map_err(|source| BundleError::Config {
            path: dir.join(BUNDLE_CONFIG_FILE),
            source: Box::new(source),
        })?;
        let model = load_burnpack(model, &dir.join(BUNDLE_WEIGHTS_FILE))?;
        let model = match dtype {
            Some(dtype) => cast_params(model, dtype),
            None => model,
        };
        Ok(Self {
            config,
            model,
            tokenizer,
            meta,
        })
    }

    /// Writes the bundle to `dir` (replacing an existing bundle there) through a temporary
    /// sibling directory renamed into place.
    ///
    /// # Errors
    /// [`BundleError::Io`] naming the file that could not be written.
    pub fn save(&self, dir: &Path) -> Result<(), BundleError> {
        write_dir_atomically(dir, |tmp| {
            // The native folder (config.json + model.bpk) plus what makes it a bundle.
            let metadata = std::collections::BTreeMap::from([(
                "source".to_string(),
                self.meta.source.clone(),
            )]);
            save_native(&self.model, &self.config, tmp, &metadata, true)?;
            let meta_path = tmp.join(BUNDLE_META_FILE);
            // A plain struct always serialises.
            let meta = serde_json::to_string_pretty(&self.meta).expect("serialisable meta");
            std::fs::write(&meta_path, meta).map_err(io_err(&meta_path))?;
            let tokenizer_path = tmp.join(BUNDLE_TOKENIZER_FILE);
            self.tokenizer
                .inner()
                .save(&tokenizer_path, true)
                .map_err(|source| BundleError::TokenizerWrite {
                    path: tokenizer_path.clone(),
                    source,
                })
        })
    }
}

/// Format tag of a detector bundle (`detector.json`).
pub const DETECTOR_FORMAT: &str = "legion-rs-detector/1";
/// Metadata file of a detector bundle.
pub const DETECTOR_META_FILE: &str = "detector.json";

/// `detector.json`: format tag and the classifier's config.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DetectorMeta {
    format: String,
    config: LegionClsConfig,
    source: String,
}

/// A trained real/fake classifier (`LegionForCls`): `detector.json` + `model.bpk`.
#[derive(Debug)]
pub struct DetectorBundle {
    /// Tower and head shapes.
    pub config: LegionClsConfig,
    /// Weights.
    pub model: LegionForCls,
    /// Provenance.
    pub source: String,
}

impl DetectorBundle {
    /// Whether `dir` holds a detector bundle.
    pub fn is_detector(dir: &Path) -> bool {
        dir.join(DETECTOR_META_FILE).is_file()
    }

    /// Loads a detector bundle strictly.
    ///
    /// # Errors
    /// [`BundleError`] naming the missing / invalid file or the mismatching tensors.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BundleError> {
        let meta_path = dir.join(DETECTOR_META_FILE);
        let text = std::fs::read_to_string(&meta_path).map_err(io_err(&meta_path))?;
        let meta: DetectorMeta =
            serde_json::from_str(&text).map_err(|source| BundleError::Json {
                path: meta_path.clone(),
                what: "detector metadata",
                source,
            })?;
        if meta.format != DETECTOR_FORMAT {
            return Err(BundleError::Format {
                path: meta_path,
                found: meta.format,
                expected: DETECTOR_FORMAT,
            });
        }
        let model = meta
            .config
            .init(device)
            .map_err(|source| BundleError::Config {
                path: meta_path.clone(),
                source: Box::new(source),
            })?;
        let model = load_burnpack(model, &dir.join(BUNDLE_WEIGHTS_FILE))?;
        Ok(Self {
            config: meta.config,
            model,
            source: meta.source,
        })
    }

    /// Writes the bundle to `dir` through a temporary sibling renamed into place.
    ///
    /// # Errors
    /// [`BundleError::Io`] naming the file that could not be written.
    pub fn save(&self, dir: &Path) -> Result<(), BundleError> {
        let meta = DetectorMeta {
            format: DETECTOR_FORMAT.to_string(),
            config: self.config.clone(),
            source: self.source.clone(),
        };
        write_dir_atomically(dir, |tmp| {
            let path = tmp.join(DETECTOR_META_FILE);
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&meta).expect("serialisable meta"),
            )
            .map_err(io_err(&path))?;
            save_burnpack(&self.model, &tmp.join(BUNDLE_WEIGHTS_FILE))
        })
    }
}

/// Fills a temporary sibling of `dir` with `fill`, fsyncs it and renames it to `dir`
/// (replacing an existing folder).
///
/// # Errors
/// [`BundleError::Io`] naming the file or folder that failed, or `fill`'s error.
pub fn write_dir_atomically(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    fill(&tmp)?;
    sync_dir(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    sync_dir(parent)?;
    Ok(())
}

/// fsyncs every file of `dir` and the directory itself.
///
/// # Errors
/// [`BundleError::Io`] naming the file.
pub fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
        }
    }
    // Directory fsync makes the renames durable; not every platform allows opening a dir.
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

/// Saves `module`'s parameters (with their ids, so optimiser state keyed by id stays valid)
/// to a burnpack file, replacing it.
///
/// # Errors
/// [`BundleError::WeightsWrite`] when burn-store fails.
pub fn save_burnpack<M: Module>(module: &M, path: &Path) -> Result<(), BundleError> {
    let mut store = BurnpackStore::from_file(path).overwrite(true);
    module
        .save_into(&mut store)
        .map_err(|source| BundleError::WeightsWrite {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
}

/// Loads a burnpack file into `module` strictly (nothing missing, nothing left over).
///
/// # Errors
/// [`BundleError::Missing`] / [`BundleError::WeightsRead`] when the file cannot be read or
/// its shapes do not fit, [`WeightsError::Mismatch`] when the tensors do not match the module.
pub fn load_burnpack<M: Module>(mut module: M, path: &Path) -> Result<M, BundleError> {
    if !path.is_file() {
        return Err(BundleError::Missing {
            path: path.to_path_buf(),
        });
    }
    let mut store = BurnpackStore::from_file(path).allow_partial(true);
    // burn-store reports shape mismatches as a load error, missing / unused tensors in the
    // result.
    let result = module
        .load_from(&mut store)
        .map_err(|source| BundleError::WeightsRead {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    check_result(path, &result, &Allowances::strict())?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer_train::train_llama_like_tokenizer;
    use burn::tensor::Tensor;

    #[test]
    fn bundle_round_trips_exactly_and_rejects_a_wrong_config() {
        let device = Device::flex();
        let config = LegionConfig::fixture();
        let model = config.init(&device).unwrap();
        let tokenizer = train_llama_like_tokenizer(&["a b c".to_string()], 300).unwrap();
        let mut config = config;
        config.llm.vocab_size = 48.max(tokenizer.vocab_size());
        let model = if config.llm.vocab_size == 48 {
            model
        } else {
            config.init(&device).unwrap()
        };
        let bundle = ModelBundle {
            meta: BundleMeta::new(&config, "test"),
            config,
            model,
            tokenizer,
        };
        let dir = std::env::temp_dir().join(format!("legion-bundle-{}", std::process::id()));
        let target = dir.join("model");
        bundle.save(&target).unwrap();
        // Saving again replaces the bundle.
        bundle.save(&target).unwrap();
        let loaded = ModelBundle::load(&target, &device).unwrap();
        assert_eq!(loaded.meta, bundle.meta);
        let a: Tensor<2> = bundle.model.llm.embed_tokens.weight.val();
        let b: Tensor<2> = loaded.model.llm.embed_tokens.weight.val();
        assert_eq!(a.into_data(), b.into_data());

        // A config with another width does not load silently.
        let mut other = bundle.config.clone();
        other.llm.intermediate_size += 16;
        std::fs::write(
            target.join(BUNDLE_CONFIG_FILE),
            serde_json::to_string(&other).unwrap(),
        )
        .unwrap();
        let err = ModelBundle::load(&target, &device).unwrap_err();
        assert!(
            matches!(err, BundleError::WeightsRead { .. }) && err.to_string().contains("gate_proj"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
