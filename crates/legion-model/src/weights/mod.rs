//! Strict weight loading: a checkpoint that does not match the module fails loudly.
//!
//! Every checkpoint family (HF CLIP, HF LLaMA, original SAM, GLaMM/LEGION) declares one table of
//! `(regex, replacement)` key remaps from the reference naming to burn field paths. Loading goes
//! through `burn::store` with `PyTorchToBurnAdapter` (Linear weights transposed, norm
//! weight/bias -> gamma/beta). After applying, any missing tensor, unused tensor or shape error is
//! an error listing them all, unless a pattern explicitly allows it — silent partial loads are the
//! most common bug in peer projects.
//!
//! [`load_weights`] accepts every layout [`CheckpointSource::resolve`] understands: a single
//! safetensors or PyTorch (`.bin`/`.pt`/`.pth`, e.g. SAM's `sam_vit_h_4b8939.pth`) file, an HF
//! folder, sharded or not (`model.safetensors.index.json`, `pytorch_model.bin.index.json`). A
//! sharded checkpoint is applied shard by shard (only one shard's tensor list, and one tensor's
//! data, in memory besides the module) and judged over the union of its shards: *missing* is in
//! the model and in no shard, *unexpected* is in some shard and not in the model. Float tensors
//! are converted to the dtype of the parameter they land in ([`FloatDTypePolicy`]).
//!
//! ```no_run
//! # use std::path::Path;
//! # use burn::tensor::Device;
//! use legion_model::clip_vision::{ClipVisionConfig, HF_CLIP_REMAP};
//! use legion_model::weights::{Allowances, LoadOptions, load_weights};
//!
//! let device = Device::flex();
//! let allow = Allowances::from_patterns(&[] as &[&str], &[r"^text_model\."])?;
//! let (tower, report) = load_weights(
//!     ClipVisionConfig::clip_vit_l_336().init(&device),
//!     Path::new("clip-vit-large-patch14-336/"),
//!     HF_CLIP_REMAP,
//!     &allow,
//!     &LoadOptions::default(),
//! )?;
//! tracing::info!(applied = report.applied, "CLIP loaded");
//! # Ok::<(), legion_model::weights::WeightsError>(())
//! ```

pub(crate) mod dtype;
pub mod peft;
mod remap;
mod safetensors_file;
mod source;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ApplyError, ApplyResult, ModuleSnapshot};

pub use burn::tensor::FloatDType;
pub use dtype::FloatDTypePolicy;
pub use peft::{AdapterReport, PeftAdapter, PeftAdapterConfig, merge_peft_adapter};
pub use remap::RemapTable;
pub(crate) use remap::compile_patterns;
pub use source::{CheckpointFormat, CheckpointSource, ShardFile, SourceLayout, TopLevelKey};

use dtype::{ImportAdapter, TargetDTypes};

/// One declarative remap rule: a regex on the reference key and its replacement
/// (`$1`-style groups allowed), applied in table order.
pub type KeyRemap = (&'static str, &'static str);

/// Errors from loading weights into a module.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or parsed (truncated, corrupt, not of its format). `what`
    /// says what the reader expected (`not a readable safetensors file`).
    #[error("cannot read weights from {path}: {what}: {source}")]
    Read {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file was read but holds no tensor.
    #[error(
        "cannot read weights from {path}: the file holds no tensors (a pickled module object \
         instead of a state dict, or a wrong top-level key?)"
    )]
    NoTensors { path: PathBuf },
    /// A PyTorch pickle names Python globals a weights file has no use for.
    #[error(
        "cannot read weights from {path}: the pickle names Python globals a weights file has \
         no use for (a restricted unpickler refuses them; nothing was executed): {}",
        globals.join(", ")
    )]
    ForeignGlobals { path: PathBuf, globals: Vec<String> },
    /// Weights or their config could not be written. `what` says which file.
    #[error("cannot write weights to {path}: {what}: {source}")]
    Write {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing loadable at the path, or the choice is ambiguous.
    #[error("no checkpoint at {path}: {message}")]
    Source { path: PathBuf, message: String },
    /// The path (file or folder) cannot be inspected or created.
    #[error("no checkpoint at {path}: {source}")]
    SourceIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A sharded checkpoint's index disagrees with its shards.
    #[error("sharded checkpoint index {index} is inconsistent: {message}")]
    Index { index: PathBuf, message: String },
    /// A sharded checkpoint's index cannot be read.
    #[error("sharded checkpoint index {index}: {source}")]
    IndexIo {
        index: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A sharded checkpoint's index is not JSON.
    #[error("sharded checkpoint index {index} is not JSON: {source}")]
    IndexJson {
        index: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A remap or allowance pattern does not compile.
    #[error("invalid {what} pattern `{pattern}`: {source}")]
    Pattern {
        /// `remap`, `allow-missing` or `allow-unexpected`.
        what: &'static str,
        pattern: String,
        #[source]
        source: regex_lite::Error,
    },
    /// Several file tensors remap to one burn path (a too-broad remap rule).
    #[error(
        "key remapping is ambiguous for {path}: file tensors {} all map to `{target}`",
        file_keys.join(", ")
    )]
    RemapCollision {
        path: PathBuf,
        target: String,
        file_keys: Vec<String>,
    },
    /// A PEFT adapter's config is unusable, or its tensors do not fit the model.
    #[error("PEFT adapter {path}: {message}")]
    Adapter { path: PathBuf, message: String },
    /// A PEFT adapter has no readable `adapter_config.json`.
    #[error("no checkpoint at {path}: a PEFT adapter needs its adapter_config.json: {source}")]
    AdapterConfigMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEFT adapter's `adapter_config.json` is not JSON of PEFT's LoRA config.
    #[error("PEFT adapter {path}: not a LoRA adapter config: {source}")]
    AdapterConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The file was read but does not match the module.
    #[error(
        "weights in {path} do not match the model ({} missing, {} unexpected, {} errors){}\n\
         missing (in the model, not in the file): {}\n\
         unexpected (in the file, not in the model): {}\n\
         errors: {}",
        missing.len(), unexpected.len(), errors.len(),
        details.hint.as_deref().map(|h| format!("\nhint: {h}")).unwrap_or_default(),
        list(missing), list(&details.unexpected_details), list(errors)
    )]
    Mismatch {
        /// The checkpoint (file, folder or index).
        path: PathBuf,
        /// Burn paths of model tensors no file tensor filled.
        missing: Vec<String>,
        /// File tensors no model tensor took, by their remapped name.
        unexpected: Vec<String>,
        /// Shape / dtype / read errors, naming the burn path (and the file key when known).
        errors: Vec<String>,
        /// File keys, applied count and likely cause (boxed to keep the error small).
        details: Box<MismatchDetails>,
    },
}

/// The less common parts of [`WeightsError::Mismatch`].
#[derive(Debug, Clone, Default)]
pub struct MismatchDetails {
    /// The unexpected tensors by their key in the file (same order as `unexpected`).
    pub unexpected_file_keys: Vec<String>,
    /// `file key (as remapped name) in shard` per unexpected tensor, for the message.
    pub unexpected_details: Vec<String>,
    /// How many tensors were applied.
    pub applied: usize,
    /// A likely cause (another model's checkpoint, a LoRA adapter, ...).
    pub hint: Option<String>,
}

/// Burn paths as burn-store's applier builds them with `skip_enum_variants = true` (what
/// remapped file keys are matched against), for module visitors and mappers.
#[derive(Default)]
pub(crate) struct PathStack {
    names: Vec<String>,
    /// Whether each entered container pushed a path segment (enum variants do not).
    pushed: Vec<bool>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        let push = !container_type.starts_with("Enum:");
        if push {
            self.names.push(name.to_string());
        }
        self.pushed.push(push);
    }

    pub(crate) fn exit(&mut self) {
        if self.pushed.pop() == Some(true) {
            self.names.pop();
        }
    }

    pub(crate) fn current(&self) -> String {
        self.names.join(".")
    }
}

/// Joins at most 40 names, then says how many more.
pub(crate) fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    const SHOWN: usize = 40;
    let mut s = items
        .iter()
        .take(SHOWN)
        .map(|i| i.as_ref())
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
    /// File tensors allowed to be ignored (matched against the key after remapping).
    pub unexpected: Vec<regex_lite::Regex>,
}

impl Allowances {
    /// Nothing allowed.
    pub fn strict() -> Self {
        Self::default()
    }

    /// From user patterns (`--allow-missing PATTERN`, `--allow-unexpected PATTERN`).
    ///
    /// # Errors
    /// [`WeightsError::Pattern`] naming the first pattern that does not compile.
    pub fn from_patterns<M: AsRef<str>, U: AsRef<str>>(
        missing: &[M],
        unexpected: &[U],
    ) -> Result<Self, WeightsError> {
        Ok(Self {
            missing: missing
                .iter()
                .map(|p| remap::compile("allow-missing", p.as_ref()))
                .collect::<Result<_, _>>()?,
            unexpected: unexpected
                .iter()
                .map(|p| remap::compile("allow-unexpected", p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Adds the patterns of `other`.
    pub fn extend(mut self, other: Allowances) -> Self {
        self.missing.extend(other.missing);
        self.unexpected.extend(other.unexpected);
        self
    }

    /// Whether the model tensor at `path` may stay unloaded.
    pub fn allows_missing(&self, path: &str) -> bool {
        self.missing.iter().any(|r| r.is_match(path))
    }

    /// Whether the file tensor remapped to `key` may be ignored.
    pub fn allows_unexpected(&self, key: &str) -> bool {
        self.unexpected.iter().any(|r| r.is_match(key))
    }
}

/// How to read a checkpoint, beyond its remaps and allowances.
#[derive(Clone, Default)]
pub struct LoadOptions<'a> {
    /// Float dtype of the loaded parameters (default: the module's).
    pub float_dtype: FloatDTypePolicy,
    /// Where the state dict sits in a PyTorch file (default: found automatically).
    pub top_level_key: TopLevelKey,
    /// Called after each file as `(files done, files in total)`.
    pub progress: Option<&'a dyn Fn(usize, usize)>,
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("float_dtype", &self.float_dtype)
            .field("top_level_key", &self.top_level_key)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What a successful load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The checkpoint (file, folder or index).
    pub path: PathBuf,
    /// Files read.
    pub files: usize,
    /// Tensors applied.
    pub applied: usize,
    /// Applied tensors whose float dtype was converted.
    pub converted: usize,
    /// How many file tensors had each dtype (e.g. `"BF16" -> 291`).
    pub file_dtypes: BTreeMap<String, usize>,
    /// Model tensors left at their initial value, as allowed.
    pub allowed_missing: Vec<String>,
    /// File tensors ignored, as allowed (file keys).
    pub ignored_unexpected: Vec<String>,
}

impl LoadReport {
    /// Adds what a second load into other parameters of the same model did (e.g. CLIP from its
    /// own file): its tensors count as loaded, so `prefix` (their burn paths) leaves
    /// `allowed_missing`.
    pub fn absorb(&mut self, other: LoadReport, prefix: &str) {
        self.allowed_missing
            .retain(|path| !path.starts_with(prefix));
        self.files += other.files;
        self.applied += other.applied;
        self.converted += other.converted;
        for (dtype, count) in other.file_dtypes {
            *self.file_dtypes.entry(dtype).or_default() += count;
        }
        self.ignored_unexpected.extend(other.ignored_unexpected);
    }
}

/// Loads a checkpoint in the reference (PyTorch) naming into `module`, strictly, with default
/// [`LoadOptions`]. Despite the name, any layout [`CheckpointSource::resolve`] accepts works
/// (kept for the existing call sites; prefer [`load_weights`]).
///
/// `remaps` is the checkpoint family's key table, applied in order.
///
/// # Errors
/// As [`load_weights`].
pub fn load_safetensors<M: Module>(
    module: M,
    path: &Path,
    remaps: &[KeyRemap],
    allow: &Allowances,
) -> Result<M, WeightsError> {
    load_weights(module, path, remaps, allow, &LoadOptions::default()).map(|(m, _)| m)
}

/// Resolves `path` ([`CheckpointSource::resolve`]) and loads it into `module`, strictly.
///
/// # Errors
/// [`WeightsError::Source`] / [`WeightsError::Index`] / [`WeightsError::Read`] when the
/// checkpoint cannot be found or read, [`WeightsError::Pattern`] for a bad remap pattern,
/// [`WeightsError::RemapCollision`], and [`WeightsError::Mismatch`] listing every missing /
/// unexpected tensor and shape error not covered by `allow`.
pub fn load_weights<M: Module>(
    module: M,
    path: &Path,
    remaps: &[KeyRemap],
    allow: &Allowances,
    options: &LoadOptions<'_>,
) -> Result<(M, LoadReport), WeightsError> {
    let remaps = RemapTable::new(remaps)?;
    let source = CheckpointSource::resolve(path)?;
    load_from_source(module, &source, &remaps, allow, options)
}

/// Where a remapped tensor came from.
struct Origin {
    file_key: String,
    shard: usize,
    file_shape: Vec<usize>,
}

/// The file tensors of one checkpoint seen so far, by remapped name: where each came from and
/// how many of each dtype.
#[derive(Default)]
struct Remapped {
    origins: HashMap<String, Origin>,
    file_dtypes: BTreeMap<String, usize>,
}

impl Remapped {
    /// Shard `index`'s tensor list (data still on disk), each renamed to its remapped key.
    ///
    /// # Errors
    /// As [`CheckpointSource::read_shard`], and [`WeightsError::RemapCollision`] when two file
    /// tensors map to one name.
    fn read_shard(
        &mut self,
        source: &CheckpointSource,
        index: usize,
        remaps: &RemapTable,
        top_level_key: &TopLevelKey,
    ) -> Result<Vec<PackTensor>, WeightsError> {
        let mut tensors = source.read_shard(index, top_level_key)?;
        for tensor in &mut tensors {
            let file_key = std::mem::take(&mut tensor.name);
            let key = remaps.apply(&file_key);
            *self
                .file_dtypes
                .entry(format!("{:?}", tensor.dtype))
                .or_default() += 1;
            if let Some(previous) = self.origins.get(&key) {
                return Err(WeightsError::RemapCollision {
                    path: source.path().to_path_buf(),
                    target: key,
                    file_keys: vec![previous.file_key.clone(), file_key],
                });
            }
            self.origins.insert(
                key.clone(),
                Origin {
                    file_key,
                    shard: index,
                    file_shape: tensor.shape.to_vec(),
                },
            );
            tensor.name = key;
        }
        Ok(tensors)
    }
}

/// What applying (or planning) a whole checkpoint found, before the strict verdict.
#[derive(Default)]
struct Outcome {
    /// Model tensors filled.
    applied: usize,
    /// Model tensors no file tensor filled or failed.
    never_loaded: BTreeSet<String>,
    /// File tensors (remapped names) nothing took.
    unused: Vec<String>,
    /// Shape / dtype / read errors.
    errors: Vec<ApplyError>,
    /// Filled tensors whose float dtype was converted.
    converted: usize,
}

/// Loads a resolved checkpoint into `module`, shard by shard, strictly over their union.
///
/// Each shard is applied with burn-store's applier, which reports every model tensor it did
/// not find *in that shard* as missing; the verdict therefore takes as missing only what no
/// shard applied or failed, and as unexpected what some shard held and nothing took.
///
/// # Errors
/// As [`load_weights`].
pub fn load_from_source<M: Module>(
    mut module: M,
    source: &CheckpointSource,
    remaps: &RemapTable,
    allow: &Allowances,
    options: &LoadOptions<'_>,
) -> Result<(M, LoadReport), WeightsError> {
    let adapter = ImportAdapter::new(TargetDTypes::resolve(&module, options.float_dtype));
    let total = source.shards().len();
    let mut remapped = Remapped::default();
    let mut applied: HashSet<String> = HashSet::new();
    let mut never_loaded: Option<BTreeSet<String>> = None;
    let mut outcome = Outcome::default();

    for index in 0..total {
        let tensors = remapped.read_shard(source, index, remaps, &options.top_level_key)?;
        let count = tensors.len();
        // `skip_enum_variants`: PyTorch / HF files never name enum variants.
        let result = module.apply(tensors, None, Some(Box::new(adapter.clone())), true);
        tracing::debug!(
            file = %source.shards()[index].path.display(),
            tensors = count,
            applied = result.applied.len(),
            "checkpoint file applied"
        );
        let missing_here: BTreeSet<String> = result.missing.into_iter().map(|(p, _)| p).collect();
        never_loaded = Some(match never_loaded {
            None => missing_here,
            Some(before) => before.intersection(&missing_here).cloned().collect(),
        });
        applied.extend(result.applied);
        outcome.unused.extend(result.unused);
        outcome.errors.extend(result.errors);
        if let Some(progress) = options.progress {
            progress(index + 1, total);
        }
    }
    outcome.applied = applied.len();
    outcome.never_loaded = never_loaded.unwrap_or_default();
    outcome.converted = adapter.converted();
    let report = judge(source, remapped, outcome, allow)?;
    tracing::debug!(
        path = %report.path.display(),
        files = report.files,
        applied = report.applied,
        converted = report.converted,
        "weights loaded"
    );
    Ok((module, report))
}

/// The strict verdict on a checkpoint: a report when nothing is missing, unused or failed
/// beyond `allow`, else [`WeightsError::Mismatch`] naming every problem by burn path and
/// file key (and shard).
fn judge(
    source: &CheckpointSource,
    remapped: Remapped,
    outcome: Outcome,
    allow: &Allowances,
) -> Result<LoadReport, WeightsError> {
    let Remapped {
        origins,
        file_dtypes,
    } = remapped;
    let Outcome {
        applied,
        never_loaded,
        mut unused,
        errors,
        converted,
    } = outcome;
    let shard_note = |origin: &Origin| match source.layout() {
        SourceLayout::Sharded { .. } => source.shards()[origin.shard]
            .path
            .file_name()
            .map(|n| format!(" in {}", n.to_string_lossy()))
            .unwrap_or_default(),
        SourceLayout::SingleFile => String::new(),
    };
    let (allowed_missing, missing): (Vec<String>, Vec<String>) = never_loaded
        .into_iter()
        .partition(|p| allow.allows_missing(p));
    unused.sort();
    let (ignored, unexpected): (Vec<String>, Vec<String>) =
        unused.into_iter().partition(|k| allow.allows_unexpected(k));
    let file_key = |key: &str| {
        origins
            .get(key)
            .map(|o| o.file_key.clone())
            .unwrap_or_else(|| key.to_string())
    };
    let unexpected_file_keys: Vec<String> = unexpected.iter().map(|k| file_key(k)).collect();
    let unexpected_details: Vec<String> = unexpected
        .iter()
        .map(|key| match origins.get(key) {
            Some(origin) if origin.file_key != *key => {
                format!("{} (as {key}){}", origin.file_key, shard_note(origin))
            }
            Some(origin) => format!("{key}{}", shard_note(origin)),
            None => key.clone(),
        })
        .collect();
    let error_lines: Vec<String> = errors
        .iter()
        .map(|error| {
            let path = error_path(error);
            // The applier looks a norm's gamma/beta up under the file's weight/bias too.
            let origin = origins.get(path).or_else(|| {
                let alternative = path
                    .strip_suffix(".gamma")
                    .map(|p| format!("{p}.weight"))
                    .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")))?;
                origins.get(&alternative)
            });
            let described = describe(error);
            match origin {
                Some(origin) => format!(
                    "{described} [file key {}, file shape {:?}{}]",
                    origin.file_key,
                    origin.file_shape,
                    shard_note(origin)
                ),
                None => described,
            }
        })
        .collect();

    if missing.is_empty() && unexpected.is_empty() && error_lines.is_empty() {
        return Ok(LoadReport {
            path: source.path().to_path_buf(),
            files: source.shards().len(),
            applied,
            converted,
            file_dtypes,
            allowed_missing,
            ignored_unexpected: ignored.iter().map(|k| file_key(k)).collect(),
        });
    }
    let hint = mismatch_hint(
        source,
        applied,
        origins.len(),
        &missing,
        &unexpected_file_keys,
    );
    Err(WeightsError::Mismatch {
        path: source.path().to_path_buf(),
        missing,
        unexpected,
        errors: error_lines,
        details: Box::new(MismatchDetails {
            unexpected_file_keys,
            unexpected_details,
            applied,
            hint,
        }),
    })
}

/// One apply error, shapes as plain lists (burn layout: Linear weights are `[in, out]`).
fn describe(error: &ApplyError) -> String {
    match error {
        ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        } => format!(
            "shape mismatch for '{path}': the model has {:?}, the file gives {:?} (burn layout)",
            expected.to_vec(),
            found.to_vec()
        ),
        other => other.to_string(),
    }
}

fn error_path(error: &ApplyError) -> &str {
    match error {
        ApplyError::ShapeMismatch { path, .. }
        | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. }
        | ApplyError::LoadError { path, .. } => path,
    }
}

/// A likely cause for a mismatch that is not a handful of stray tensors.
fn mismatch_hint(
    source: &CheckpointSource,
    applied: usize,
    file_tensors: usize,
    missing: &[String],
    unexpected_file_keys: &[String],
) -> Option<String> {
    let lora = unexpected_file_keys
        .iter()
        .filter(|k| k.contains(".lora_A.") || k.contains(".lora_B."))
        .count();
    if source.is_peft_adapter() || lora > 0 {
        return Some(format!(
            "this is a PEFT/LoRA adapter ({lora} unmerged lora_A/lora_B tensors, keys under \
             `base_model.model.`), not a full checkpoint: load the base model's checkpoint, or \
             merge the adapter into it first (PEFT `merge_and_unload`)"
        ));
    }
    if applied == 0 {
        let sample = |keys: &[String]| {
            keys.iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Some(format!(
            "none of the file's {file_tensors} tensors matches the model: a checkpoint of \
             another model, or another naming (wrong remap table / layout)? The file has e.g. \
             [{}]; the model expects e.g. [{}]",
            sample(unexpected_file_keys),
            sample(missing)
        ));
    }
    None
}

/// Turns burn-store's [`ApplyResult`] of a single apply into a strict verdict.
///
/// [`load_weights`] does this itself (over all shards, with file keys in the message); this is
/// for callers that drive a `burn::store` store directly.
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
        .filter(|p| !allow.allows_missing(p))
        .collect();
    let unexpected: Vec<String> = result
        .unused
        .iter()
        .filter(|p| !allow.allows_unexpected(p))
        .cloned()
        .collect();
    let errors: Vec<String> = result.errors.iter().map(describe).collect();
    if missing.is_empty() && unexpected.is_empty() && errors.is_empty() {
        tracing::debug!(path = %path.display(), applied = result.applied.len(), "weights loaded");
        Ok(())
    } else {
        Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            missing,
            details: Box::new(MismatchDetails {
                unexpected_file_keys: unexpected.clone(),
                unexpected_details: unexpected.clone(),
                applied: result.applied.len(),
                hint: None,
            }),
            unexpected,
            errors,
        })
    }
}
