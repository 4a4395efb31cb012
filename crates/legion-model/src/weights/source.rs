//! Where a checkpoint's tensors are: one file, or the shards an HF index names.
//!
//! Layouts (as `transformers` / `peft` / `torch.save` write them):
//! - a single `.safetensors` file (read tensor by tensor, see `safetensors_file`);
//! - a single PyTorch file (`.bin` / `.pt` / `.pth` / `.ckpt`: zip or legacy pickle, read by
//!   burn-store's pure-Rust reader, no code execution), optionally a training checkpoint that
//!   wraps the state dict under `state_dict` / `model` / `module` ([`TopLevelKey`]);
//! - a folder: `model.safetensors.index.json` (sharded), `model.safetensors`,
//!   `pytorch_model.bin.index.json` (sharded), `pytorch_model.bin`, or a PEFT adapter
//!   (`adapter_model.safetensors` / `.bin` next to `adapter_config.json`), in that order of
//!   preference (as `from_pretrained`), else its only weights file;
//! - an index JSON given directly.
//!
//! An index must be consistent with its shards: every named shard exists, and every shard holds
//! exactly the keys the index assigns to it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::store::bridge;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::pytorch_reader::{PickleValue, PytorchReader};

use super::WeightsError;

/// Container format of one checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// safetensors (header + raw little-endian data; memory-mapped, read tensor by tensor).
    Safetensors,
    /// `torch.save` output: zip archive or legacy pickle.
    Pytorch,
}

/// Which entry of a PyTorch file holds the state dict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TopLevelKey {
    /// The root dict if it is a state dict; if the root dict has a nested dict under
    /// `state_dict`, `model`, `module` or `model_state_dict` (training checkpoints, DeepSpeed),
    /// that one. A flat dict whose keys merely start with `model.` is not unwrapped.
    #[default]
    Auto,
    /// Always the root dict (nested dicts flatten to `outer.inner` keys).
    Root,
    /// This entry of the root dict.
    Key(String),
}

/// Wrapper entries [`TopLevelKey::Auto`] looks for, in order.
const WRAPPER_KEYS: &[&str] = &["state_dict", "model", "module", "model_state_dict"];

/// How the checkpoint is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLayout {
    /// One file.
    SingleFile,
    /// Shards named by an HF index JSON.
    Sharded {
        /// The index file.
        index: PathBuf,
    },
}

/// One file of a checkpoint.
#[derive(Debug, Clone)]
pub struct ShardFile {
    /// The file.
    pub path: PathBuf,
    /// Its container format.
    pub format: CheckpointFormat,
    /// The keys the index assigns to this shard (`None` for a single file).
    pub listed_keys: Option<BTreeSet<String>>,
}

/// A resolved checkpoint: its layout, its files, and the HF side files found next to it.
#[derive(Debug, Clone)]
pub struct CheckpointSource {
    path: PathBuf,
    layout: SourceLayout,
    shards: Vec<ShardFile>,
    config_json: Option<PathBuf>,
    peft_adapter: bool,
}

impl CheckpointSource {
    /// Resolves a file, an index JSON or a folder (see the module docs).
    ///
    /// # Errors
    /// [`WeightsError::Source`] when nothing loadable is there (or the choice is ambiguous),
    /// [`WeightsError::Index`] when an index is unreadable or names a shard that does not
    /// exist.
    pub fn resolve(path: &Path) -> Result<Self, WeightsError> {
        let metadata = std::fs::metadata(path).map_err(|source| WeightsError::SourceIo {
            path: path.to_path_buf(),
            source,
        })?;
        if metadata.is_dir() {
            return Self::resolve_folder(path);
        }
        let name = file_name(path);
        if name.ends_with(".index.json") {
            return Self::from_index(path, path);
        }
        let format = detect_format(path)?;
        let parent = path.parent().unwrap_or(Path::new(""));
        Ok(Self {
            path: path.to_path_buf(),
            layout: SourceLayout::SingleFile,
            shards: vec![ShardFile {
                path: path.to_path_buf(),
                format,
                listed_keys: None,
            }],
            config_json: existing(parent.join("config.json")),
            peft_adapter: name.starts_with("adapter_model."),
        })
    }

    /// A single file of a known format, without looking at the disk.
    pub fn single_file(path: &Path, format: CheckpointFormat) -> Self {
        Self {
            path: path.to_path_buf(),
            layout: SourceLayout::SingleFile,
            shards: vec![ShardFile {
                path: path.to_path_buf(),
                format,
                listed_keys: None,
            }],
            config_json: None,
            peft_adapter: false,
        }
    }

    fn resolve_folder(dir: &Path) -> Result<Self, WeightsError> {
        Self::resolve_folder_excluding(dir, None)
    }

    /// As [`CheckpointSource::resolve`] on the folder `dir`, leaving the file named `excluded`
    /// aside (the separate `clip.safetensors` next to a LEGION checkpoint).
    ///
    /// # Errors
    /// As [`CheckpointSource::resolve`].
    pub fn resolve_folder_excluding(
        dir: &Path,
        excluded: Option<&str>,
    ) -> Result<Self, WeightsError> {
        let config_json = existing(dir.join("config.json"));
        let with_config = |mut source: Self| {
            source.path = dir.to_path_buf();
            source.config_json = config_json.clone();
            source
        };
        for name in [
            "model.safetensors.index.json",
            "model.safetensors",
            "pytorch_model.bin.index.json",
            "pytorch_model.bin",
            "adapter_model.safetensors",
            "adapter_model.bin",
        ] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(with_config(Self::resolve(&candidate)?));
            }
        }
        // Any other naming: the folder's only index, else its only weights file.
        let mut indexes = Vec::new();
        let mut weights = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| WeightsError::SourceIo {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = file_name(&path);
            if !path.is_file() || excluded == Some(name.as_str()) {
                continue;
            }
            if name.ends_with(".index.json") {
                indexes.push(path);
            } else if format_from_extension(&path).is_some() {
                weights.push(path);
            }
        }
        indexes.sort();
        weights.sort();
        match (indexes.as_slice(), weights.as_slice()) {
            ([index], _) => Ok(with_config(Self::resolve(index)?)),
            ([], [file]) => Ok(with_config(Self::resolve(file)?)),
            ([], []) => Err(WeightsError::Source {
                path: dir.to_path_buf(),
                message: "the folder holds no checkpoint (no *.safetensors, *.bin, *.pt, *.pth, \
                          *.ckpt or *.index.json file)"
                    .into(),
            }),
            _ => Err(WeightsError::Source {
                path: dir.to_path_buf(),
                message: format!(
                    "ambiguous: the folder holds several checkpoints ({}); pass one file or index",
                    indexes
                        .iter()
                        .chain(&weights)
                        .map(|p| file_name(p))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// Reads an HF index (`{"metadata": .., "weight_map": {key: shard file}}`) and checks that
    /// every shard it names exists.
    fn from_index(source_path: &Path, index: &Path) -> Result<Self, WeightsError> {
        let index_error = |message: String| WeightsError::Index {
            index: index.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(index).map_err(|source| WeightsError::IndexIo {
            index: index.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| WeightsError::IndexJson {
                index: index.to_path_buf(),
                source,
            })?;
        let weight_map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| index_error("no `weight_map` object".into()))?;
        if weight_map.is_empty() {
            return Err(index_error("`weight_map` is empty".into()));
        }
        let mut by_shard: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (key, shard) in weight_map {
            let shard = shard.as_str().ok_or_else(|| {
                index_error(format!(
                    "`weight_map[\"{key}\"]` is not a file name: {shard}"
                ))
            })?;
            by_shard
                .entry(shard.to_string())
                .or_default()
                .insert(key.clone());
        }
        let dir = index.parent().unwrap_or(Path::new(""));
        let mut shards = Vec::with_capacity(by_shard.len());
        for (name, keys) in by_shard {
            let path = dir.join(&name);
            if !path.is_file() {
                return Err(index_error(format!(
                    "it names shard `{name}` for {} tensors (e.g. `{}`), but {} does not exist",
                    keys.len(),
                    keys.first().map(String::as_str).unwrap_or_default(),
                    path.display()
                )));
            }
            let format = detect_format(&path)?;
            shards.push(ShardFile {
                path,
                format,
                listed_keys: Some(keys),
            });
        }
        Ok(Self {
            path: source_path.to_path_buf(),
            layout: SourceLayout::Sharded {
                index: index.to_path_buf(),
            },
            shards,
            config_json: existing(dir.join("config.json")),
            peft_adapter: false,
        })
    }

    /// The path that resolves to exactly this source again: the index of a sharded
    /// checkpoint, else its file.
    pub fn entry_file(&self) -> &Path {
        match &self.layout {
            SourceLayout::Sharded { index } => index,
            SourceLayout::SingleFile => &self.shards[0].path,
        }
    }

    /// The path the source was resolved from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Single file or sharded.
    pub fn layout(&self) -> &SourceLayout {
        &self.layout
    }

    /// The files to read, in order.
    pub fn shards(&self) -> &[ShardFile] {
        &self.shards
    }

    /// The HF `config.json` next to the weights, if any (not interpreted here).
    pub fn config_json(&self) -> Option<&Path> {
        self.config_json.as_deref()
    }

    /// Whether this is a PEFT adapter (`adapter_model.*`), i.e. LoRA deltas, not a model.
    pub fn is_peft_adapter(&self) -> bool {
        self.peft_adapter
    }

    /// Reads shard `index`'s tensor list (data stays on disk until a tensor is applied) under
    /// its file keys, and checks it against the index.
    ///
    /// # Errors
    /// [`WeightsError::Read`] when the file is not a readable checkpoint of its format,
    /// [`WeightsError::Index`] when it holds keys its index does not assign to it or lacks
    /// keys it does.
    ///
    /// # Panics
    /// When `index >= self.shards().len()`.
    pub fn read_shard(
        &self,
        index: usize,
        top_level_key: &TopLevelKey,
    ) -> Result<Vec<PackTensor>, WeightsError> {
        let shard = &self.shards[index];
        let read_error = |what: &'static str| {
            move |source: Box<dyn std::error::Error + Send + Sync>| WeightsError::Read {
                path: shard.path.clone(),
                what,
                source,
            }
        };
        let tensors: Vec<PackTensor> = match shard.format {
            CheckpointFormat::Safetensors => super::safetensors_file::read_lazy(&shard.path)?,
            CheckpointFormat::Pytorch => {
                let root = read_pickle_restricted(&shard.path)?;
                let key = match top_level_key {
                    TopLevelKey::Root => None,
                    TopLevelKey::Key(key) => Some(key.clone()),
                    // HF shards are plain state dicts; only a lone file may be a wrapper.
                    TopLevelKey::Auto if shard.listed_keys.is_some() => None,
                    TopLevelKey::Auto => wrapper_key(&root),
                };
                let reader = match &key {
                    Some(key) => PytorchReader::with_top_level_key(&shard.path, key),
                    None => PytorchReader::new(&shard.path),
                }
                .map_err(|e| read_error("not a readable PyTorch checkpoint")(e.into()))?;
                if let Some(key) = &key {
                    tracing::debug!(path = %shard.path.display(), key, "state dict under a top-level key");
                }
                reader
                    .into_tensors()
                    .into_values()
                    .map(bridge::from_pytorch)
                    .collect()
            }
        };
        if tensors.is_empty() {
            return Err(WeightsError::NoTensors {
                path: shard.path.clone(),
            });
        }
        if let (Some(listed), SourceLayout::Sharded { index }) = (&shard.listed_keys, &self.layout)
        {
            let present: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
            let unlisted: Vec<&str> = present
                .iter()
                .copied()
                .filter(|k| !listed.contains(*k))
                .collect();
            let absent: Vec<&str> = listed
                .iter()
                .map(String::as_str)
                .filter(|k| !present.contains(k))
                .collect();
            if !unlisted.is_empty() || !absent.is_empty() {
                let shard_name = file_name(&shard.path);
                let mut problems = Vec::new();
                if !unlisted.is_empty() {
                    problems.push(format!(
                        "shard `{shard_name}` holds {} tensors the index does not assign to it: {}",
                        unlisted.len(),
                        super::list(&unlisted)
                    ));
                }
                if !absent.is_empty() {
                    problems.push(format!(
                        "the index assigns {} tensors to `{shard_name}` that it does not hold: {}",
                        absent.len(),
                        super::list(&absent)
                    ));
                }
                return Err(WeightsError::Index {
                    index: index.clone(),
                    message: problems.join("; "),
                });
            }
        }
        Ok(tensors)
    }
}

/// Parses a PyTorch file's pickle (tensors stay references) and refuses it when it names a
/// Python global outside [`is_allowed_global`].
///
/// The reader never executes anything (a call it does not know stays an opaque value), but a
/// checkpoint that names `os.system` or `builtins.eval` is hostile or broken either way, and
/// loading the tensors beside it would hide that; `torch.load(weights_only=True)` refuses such
/// files too.
fn read_pickle_restricted(path: &Path) -> Result<PickleValue, WeightsError> {
    let root = PytorchReader::read_pickle_data(path, None).map_err(|e| WeightsError::Read {
        path: path.to_path_buf(),
        what: "not a readable PyTorch checkpoint",
        source: e.into(),
    })?;
    let mut refused = BTreeSet::new();
    foreign_globals(&root, &mut refused);
    if !refused.is_empty() {
        return Err(WeightsError::ForeignGlobals {
            path: path.to_path_buf(),
            globals: refused.into_iter().collect(),
        });
    }
    Ok(root)
}

/// Whether a pickle may name the Python global `name` (`module.attribute`): what
/// `torch.load(weights_only=True)` accepts (torch's tensor, storage, dtype and module types,
/// `collections.OrderedDict`, builtin containers, `_codecs.encode`), numpy scalars and dtypes,
/// and `argparse.Namespace` (training arguments saved beside the weights).
fn is_allowed_global(name: &str) -> bool {
    let top_module = name.split('.').next().unwrap_or(name);
    matches!(top_module, "torch" | "numpy")
        || matches!(
            name,
            "collections.OrderedDict"
                | "collections.defaultdict"
                | "builtins.set"
                | "builtins.frozenset"
                | "builtins.slice"
                | "builtins.bytearray"
                | "builtins.complex"
                | "__builtin__.set"
                | "__builtin__.frozenset"
                | "_codecs.encode"
                | "argparse.Namespace"
        )
}

/// Collects the globals under `value` that [`is_allowed_global`] refuses. Values the reader
/// cannot represent carry their Python type name; plain type names (no module) are values,
/// not globals.
fn foreign_globals(value: &PickleValue, found: &mut BTreeSet<String>) {
    match value {
        PickleValue::Unsupported(name) if name.contains('.') && !is_allowed_global(name) => {
            found.insert(name.clone());
        }
        PickleValue::List(items) => items.iter().for_each(|v| foreign_globals(v, found)),
        PickleValue::Dict(entries) => entries.values().for_each(|v| foreign_globals(v, found)),
        _ => {}
    }
}

/// The wrapper entry of a training checkpoint, if its root dict has one holding a dict.
fn wrapper_key(root: &PickleValue) -> Option<String> {
    let PickleValue::Dict(root) = root else {
        return None;
    };
    WRAPPER_KEYS
        .iter()
        .find(|key| matches!(root.get(**key), Some(PickleValue::Dict(_))))
        .map(|key| key.to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

fn format_from_extension(path: &Path) -> Option<CheckpointFormat> {
    let extension = path.extension()?.to_string_lossy().to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => Some(CheckpointFormat::Safetensors),
        "bin" | "pt" | "pth" | "ckpt" => Some(CheckpointFormat::Pytorch),
        _ => None,
    }
}

/// By extension, else by the first bytes (zip / pickle magic, or a safetensors header length
/// followed by `{`).
fn detect_format(path: &Path) -> Result<CheckpointFormat, WeightsError> {
    if let Some(format) = format_from_extension(path) {
        return Ok(format);
    }
    let mut head = [0u8; 9];
    let read = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| WeightsError::Read {
            path: path.to_path_buf(),
            what: "cannot read the file's first bytes",
            source: e.into(),
        })?;
    let head = &head[..read];
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Ok(CheckpointFormat::Pytorch);
    }
    if head.len() == 9 && head[8] == b'{' {
        return Ok(CheckpointFormat::Safetensors);
    }
    Err(WeightsError::Source {
        path: path.to_path_buf(),
        message: "unknown checkpoint format (expected safetensors, or a torch.save zip/pickle \
                  file; by extension .safetensors / .bin / .pt / .pth / .ckpt)"
            .into(),
    })
}
