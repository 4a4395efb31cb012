//! PEFT LoRA adapters (`adapter_model.safetensors` + `adapter_config.json`, as
//! `PeftModel.save_pretrained` writes them) merged into a loaded base model.
//!
//! An adapter file holds, under PEFT's `base_model.model.` prefix:
//! - per adapted `nn.Linear` at module path `M`: `M.lora_A.weight` `[r, d_in]` and
//!   `M.lora_B.weight` `[d_out, r]` (an adapter name such as `.default` before `.weight` is
//!   accepted too, as in full PEFT state dicts);
//! - the full weights of `modules_to_save` (e.g. `lm_head.weight`), which replace the base's.
//!
//! Merging is PEFT's `merge_and_unload`: `W += scale * B @ A` with `scale = lora_alpha / r`
//! (`lora_alpha / sqrt(r)` with `use_rslora`; per-module `rank_pattern` / `alpha_pattern`
//! honoured). burn's `Linear` stores `W` as `[d_in, d_out]`, so the update added here is its
//! transpose, `scale * A^T @ B^T`, computed in f32 and added in f32 (then cast back to the
//! parameter's dtype).
//!
//! Strict like the loader: every `lora_A` has its `lora_B`, every adapted module's `.weight`
//! maps (through the family's remap table, after stripping `base_model.model.`) to a rank-2
//! float parameter of the model with matching shapes, and every other tensor replaces a model
//! parameter. Anything else is [`WeightsError::Adapter`] listing every offending key. DoRA,
//! `fan_in_fan_out` (GPT-2 `Conv1D`) and LoRA on embeddings (`lora_embedding_A/B`) are
//! refused with their names.
//!
//! ```no_run
//! # use std::path::Path;
//! # use burn::tensor::Device;
//! use legion_model::llama::{LlamaConfig, LLAMA_HF_REMAP};
//! use legion_model::weights::{LoadOptions, PeftAdapter, RemapTable, merge_peft_adapter};
//!
//! let device = Device::flex();
//! let base = LlamaConfig::tiny().init(&device).load_hf_safetensors(Path::new("base/model.safetensors"))?;
//! let adapter = PeftAdapter::open(Path::new("my-lora/"))?;
//! let (merged, report) = merge_peft_adapter(
//!     base,
//!     &adapter,
//!     &RemapTable::new(LLAMA_HF_REMAP)?,
//!     &LoadOptions::default(),
//! )?;
//! tracing::info!(merged = report.merged.len(), replaced = report.replaced.len(), "adapter merged");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use serde::Deserialize;

use super::dtype::{ImportAdapter, TargetDTypes};
use super::source::{CheckpointFormat, CheckpointSource};
use super::{LoadOptions, PathStack, RemapTable, WeightsError, list};

/// PEFT wraps the model it adapts; its keys carry this prefix.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// `target_modules` of an adapter config: a list of module names or one regex.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names matched as the last path components (`["q_proj", "v_proj"]`).
    Names(Vec<String>),
    /// A regex matched against the full module name.
    Regex(String),
}

/// The fields of PEFT's `adapter_config.json` (`LoraConfig`) that the merge uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PeftAdapterConfig {
    /// Must be `LORA`.
    #[serde(default = "lora")]
    pub peft_type: String,
    /// Default rank.
    pub r: usize,
    /// Default scaling numerator.
    pub lora_alpha: f64,
    /// Adapted modules (recorded; the adapter's keys are what is merged).
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// `scale = alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (refused).
    #[serde(default)]
    pub use_dora: bool,
    /// Weights stored transposed (GPT-2 `Conv1D`; refused).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Per-module rank overrides, keyed by a module-name pattern.
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides, keyed by a module-name pattern.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Modules whose full weights the adapter carries.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Recorded (not used by a merge).
    #[serde(default)]
    pub lora_dropout: f64,
}

fn lora() -> String {
    "LORA".into()
}

impl PeftAdapterConfig {
    /// Rank and scale of the module named `module` (PEFT's name, without `base_model.model.`),
    /// after `rank_pattern` / `alpha_pattern` (PEFT's `get_pattern_key`: the pattern matches
    /// the whole name or a `.`-separated suffix of it).
    pub fn rank_and_scale(&self, module: &str) -> (usize, f64) {
        let matches = |pattern: &str| {
            regex_lite::Regex::new(&format!(r"^(.*\.)?(?:{pattern})$"))
                .map(|r| r.is_match(module))
                .unwrap_or(false)
        };
        let rank = self
            .rank_pattern
            .iter()
            .find(|(p, _)| matches(p))
            .map_or(self.r, |(_, r)| *r);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(p, _)| matches(p))
            .map_or(self.lora_alpha, |(_, a)| *a);
        let scale = if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        };
        (rank, scale)
    }
}

/// An opened adapter: its config and its weights file.
#[derive(Debug, Clone)]
pub struct PeftAdapter {
    /// The parsed `adapter_config.json`.
    pub config: PeftAdapterConfig,
    /// Where the config was read from.
    pub config_path: PathBuf,
    /// `adapter_model.safetensors` or `adapter_model.bin`.
    pub weights_path: PathBuf,
}

impl PeftAdapter {
    /// Opens an adapter folder (`adapter_config.json` + `adapter_model.safetensors`, else
    /// `adapter_model.bin`) or an adapter weights file with `adapter_config.json` beside it.
    ///
    /// # Errors
    /// [`WeightsError::Source`] when the weights are missing,
    /// [`WeightsError::AdapterConfigMissing`] without a readable `adapter_config.json`,
    /// [`WeightsError::AdapterConfig`] when it is not JSON of a LoRA config,
    /// [`WeightsError::Adapter`] when it asks for something a merge cannot do (not LoRA, DoRA,
    /// `fan_in_fan_out`, rank 0).
    pub fn open(path: &Path) -> Result<Self, WeightsError> {
        let (dir, weights_path) = if path.is_dir() {
            let found = ["adapter_model.safetensors", "adapter_model.bin"]
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| WeightsError::Source {
                    path: path.to_path_buf(),
                    message: "not a PEFT adapter folder: no adapter_model.safetensors or \
                              adapter_model.bin"
                        .into(),
                })?;
            (path.to_path_buf(), found)
        } else if path.is_file() {
            (
                path.parent().unwrap_or(Path::new("")).to_path_buf(),
                path.to_path_buf(),
            )
        } else {
            return Err(WeightsError::Source {
                path: path.to_path_buf(),
                message: "no such adapter file or folder".into(),
            });
        };
        let config_path = dir.join("adapter_config.json");
        let adapter_error = |message: String| WeightsError::Adapter {
            path: config_path.clone(),
            message,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|source| {
            WeightsError::AdapterConfigMissing {
                path: config_path.clone(),
                source,
            }
        })?;
        let config: PeftAdapterConfig =
            serde_json::from_str(&text).map_err(|source| WeightsError::AdapterConfig {
                path: config_path.clone(),
                source,
            })?;
        if !config.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(adapter_error(format!(
                "peft_type `{}`: only LoRA adapters can be merged",
                config.peft_type
            )));
        }
        if config.use_dora {
            return Err(adapter_error(
                "use_dora: DoRA adapters are not supported (merge them in PEFT with \
                 `merge_and_unload` and load the merged checkpoint)"
                    .into(),
            ));
        }
        if config.fan_in_fan_out {
            return Err(adapter_error(
                "fan_in_fan_out: transposed (Conv1D) base weights are not supported".into(),
            ));
        }
        if config.r == 0 || !config.lora_alpha.is_finite() {
            return Err(adapter_error(format!(
                "invalid r {} / lora_alpha {}",
                config.r, config.lora_alpha
            )));
        }
        Ok(Self {
            config,
            config_path,
            weights_path,
        })
    }
}

/// What [`merge_peft_adapter`] did.
#[derive(Debug, Clone, Default)]
pub struct AdapterReport {
    /// The adapter weights file.
    pub path: PathBuf,
    /// Per merged LoRA pair: `(burn path of the weight, rank, scale)`.
    pub merged: Vec<(String, usize, f64)>,
    /// Burn paths of parameters replaced by full tensors (`modules_to_save`).
    pub replaced: Vec<String>,
}

/// One LoRA pair found in the adapter file.
#[derive(Default)]
struct LoraPair {
    a: Option<PackTensor>,
    b: Option<PackTensor>,
}

/// Splits `M.lora_A.weight` / `M.lora_A.<adapter>.weight` into `(M, 'A')`.
fn lora_key(key: &str) -> Option<(&str, char)> {
    let stem = key.strip_suffix(".weight")?;
    for (marker, which) in [(".lora_A", 'A'), (".lora_B", 'B')] {
        if let Some(at) = stem.rfind(marker) {
            let rest = &stem[at + marker.len()..];
            // Nothing, or one adapter-name component (`.default`).
            if rest.is_empty() || (rest.starts_with('.') && !rest[1..].contains('.')) {
                return Some((&stem[..at], which));
            }
        }
    }
    None
}

/// Float parameter shapes of a module by burn path (lazy ones not allocated).
#[derive(Default)]
struct FloatParamShapes {
    path: PathStack,
    shapes: HashMap<String, Vec<usize>>,
}

impl ModuleVisitor for FloatParamShapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.shapes
            .insert(self.path.current(), param.lazy_shape().dims::<D>().to_vec());
    }
}

/// One LoRA pair's update of a weight, `scale * B @ A` in PEFT's layout. Computed only when
/// the weight is merged, so a 7B adapter never holds its full-size updates all at once.
#[derive(Clone)]
pub(crate) struct LoraUpdate {
    a: PackTensor,
    b: PackTensor,
    scale: f64,
}

impl LoraUpdate {
    /// The update in burn's Linear layout, `scale * A^T @ B^T` `[d_in, d_out]`, in f32.
    fn delta(&self, device: &Device) -> Result<Tensor<2>, String> {
        let a = to_f32_tensor(&self.a, device)?;
        let b = to_f32_tensor(&self.b, device)?;
        Ok(a.transpose().matmul(b.transpose()).mul_scalar(self.scale))
    }

    /// `weight + update` for a burn-layout weight, added in f32 and returned in the weight's
    /// dtype.
    fn add_to(&self, weight: Tensor<2>) -> Result<Tensor<2>, String> {
        let delta = self.delta(&weight.device())?;
        let dtype = weight.dtype();
        Ok(if dtype == DType::F32 {
            weight + delta
        } else {
            (weight.cast(FloatDType::F32) + delta).cast(dtype)
        })
    }

    /// [`LoraUpdate::add_to`] on host data (the streaming converter's path), on the CPU.
    ///
    /// # Errors
    /// A message when the adapter tensors cannot be read or the weight is not rank 2.
    pub(crate) fn add_to_data(&self, weight: TensorData) -> Result<TensorData, String> {
        if weight.shape().len() != 2 {
            return Err(format!(
                "a LoRA update needs a rank-2 weight, got {:?}",
                weight.shape()
            ));
        }
        // `from_data` widens to the device's f32; the sum goes back to the weight's dtype.
        let dtype = weight.dtype();
        let weight = Tensor::<2>::from_data(weight, &Device::flex());
        Ok(self.add_to(weight)?.into_data().convert_dtype(dtype))
    }
}

/// What an adapter does to a model, checked against its parameter shapes before anything is
/// read or changed.
pub(crate) struct AdapterPlan {
    /// LoRA updates by the burn path of the weight they change.
    pub(crate) updates: HashMap<String, LoraUpdate>,
    /// Full tensors (`modules_to_save`), renamed to burn paths.
    pub(crate) full: Vec<PackTensor>,
    /// The adapter file key of each full tensor, by its burn path.
    pub(crate) full_keys: HashMap<String, String>,
    /// Per merged pair: `(burn path of the weight, rank, scale)`.
    pub(crate) merged: Vec<(String, usize, f64)>,
}

/// Reads an adapter's tensor list and checks it against `shapes` (float parameters by burn
/// path, enum variants skipped): every `lora_A` has its `lora_B`, each pair fits its weight at
/// its rank, every full tensor lands on a parameter.
///
/// # Errors
/// As [`merge_peft_adapter`].
pub(crate) fn plan_adapter(
    adapter: &PeftAdapter,
    remaps: &RemapTable,
    shapes: &HashMap<String, Vec<usize>>,
    top_level_key: &super::TopLevelKey,
) -> Result<AdapterPlan, WeightsError> {
    let format = if adapter.weights_path.extension().is_some_and(|e| e == "bin") {
        CheckpointFormat::Pytorch
    } else {
        CheckpointFormat::Safetensors
    };
    let source = CheckpointSource::single_file(&adapter.weights_path, format);
    let tensors = source.read_shard(0, top_level_key)?;

    let mut pairs: BTreeMap<String, LoraPair> = BTreeMap::new();
    let mut full: Vec<PackTensor> = Vec::new();
    let mut full_keys: HashMap<String, String> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    for mut tensor in tensors {
        let key = tensor.name.clone();
        let unprefixed = key.strip_prefix(PEFT_PREFIX).unwrap_or(&key).to_string();
        if unprefixed.contains("lora_embedding_") || unprefixed.contains("lora_magnitude") {
            problems.push(format!(
                "{key}: LoRA on embeddings / DoRA magnitudes are not supported"
            ));
            continue;
        }
        match lora_key(&unprefixed) {
            Some((module_name, which)) => {
                let pair = pairs.entry(module_name.to_string()).or_default();
                if which == 'A' {
                    pair.a = Some(tensor);
                } else {
                    pair.b = Some(tensor);
                }
            }
            None if unprefixed.contains(".lora_") => {
                problems.push(format!(
                    "{key}: unknown LoRA tensor (expected lora_A / lora_B .weight)"
                ));
            }
            None => {
                tensor.name = remaps.apply(&unprefixed);
                full_keys.insert(tensor.name.clone(), key);
                full.push(tensor);
            }
        }
    }

    let mut updates = HashMap::new();
    let mut merged = Vec::new();
    for (module_name, pair) in pairs {
        let (a, b) = match (pair.a, pair.b) {
            (Some(a), Some(b)) => (a, b),
            (a, _) => {
                let (have, lacks) = if a.is_some() {
                    ("lora_A", "lora_B")
                } else {
                    ("lora_B", "lora_A")
                };
                problems.push(format!(
                    "{PEFT_PREFIX}{module_name}: has {have} but no {lacks}"
                ));
                continue;
            }
        };
        let target = remaps.apply(&format!("{module_name}.weight"));
        let Some(shape) = shapes.get(&target) else {
            problems.push(format!(
                "{PEFT_PREFIX}{module_name}.lora_{{A,B}}: `{module_name}.weight` maps to `{target}`, \
                 which is not a parameter of the model"
            ));
            continue;
        };
        let (rank, scale) = adapter.config.rank_and_scale(&module_name);
        let (a_shape, b_shape) = (a.shape.to_vec(), b.shape.to_vec());
        // burn Linear weight [d_in, d_out]; PEFT A [r, d_in], B [d_out, r].
        let fits = shape.len() == 2
            && a_shape.len() == 2
            && b_shape.len() == 2
            && a_shape == [rank, shape[0]]
            && b_shape == [shape[1], rank];
        if !fits {
            problems.push(format!(
                "{PEFT_PREFIX}{module_name}: lora_A {a_shape:?} and lora_B {b_shape:?} do not fit \
                 `{target}` {shape:?} (burn layout [d_in, d_out]) at rank {rank} (expected A \
                 [{rank}, d_in], B [d_out, {rank}])"
            ));
            continue;
        }
        updates.insert(target.clone(), LoraUpdate { a, b, scale });
        merged.push((target, rank, scale));
    }

    for tensor in &full {
        if !shapes.contains_key(&tensor.name) && !has_norm_alias(shapes, &tensor.name) {
            problems.push(format!(
                "{}: maps to `{}`, which is not a parameter of the model",
                full_keys[&tensor.name], tensor.name
            ));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(WeightsError::Adapter {
            path: adapter.weights_path.clone(),
            message: format!(
                "{} adapter tensors do not fit the model: {}",
                problems.len(),
                list(&problems)
            ),
        });
    }
    Ok(AdapterPlan {
        updates,
        full,
        full_keys,
        merged,
    })
}

/// Adds each planned LoRA update to its weight, one weight at a time.
struct AddUpdates {
    path: PathStack,
    updates: HashMap<String, LoraUpdate>,
    problems: Vec<String>,
}

impl ModuleMapper for AddUpdates {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.current();
        let Some(update) = self.updates.remove(&path) else {
            return param;
        };
        let mut problem = None;
        let param = param.map(|weight| {
            // Rank 2 was checked by the plan.
            let dims = weight.dims();
            let flat = weight.clone().reshape([dims[0], dims[1]]);
            match update.add_to(flat) {
                Ok(sum) => sum.reshape(dims),
                Err(message) => {
                    problem = Some(message);
                    weight
                }
            }
        });
        if let Some(message) = problem {
            self.problems.push(format!("{path}: {message}"));
        }
        param
    }
}

fn to_f32_tensor(tensor: &PackTensor, device: &Device) -> Result<Tensor<2>, String> {
    let data = bridge::to_data(tensor)
        .map_err(|e| format!("cannot read {}: {e}", tensor.name))?
        .convert_dtype(DType::F32);
    Ok(Tensor::<2>::from_data(data, device))
}

/// Merges a PEFT LoRA adapter into `module` (see the module docs), strictly.
///
/// `remaps` is the table of the family the adapter was trained on (the same one the base was
/// loaded with: e.g. [`crate::legion::glamm_legion_remaps`] for GLaMM / LEGION,
/// [`crate::llama::LLAMA_HF_REMAP`] for an HF LLaMA); PEFT's `base_model.model.` prefix is
/// stripped first. `options.float_dtype` applies to the replaced (`modules_to_save`) tensors.
/// Each update is computed when its weight is merged, so memory beyond the model is one
/// weight's update at a time.
///
/// # Errors
/// [`WeightsError::Read`] when the adapter file cannot be read, [`WeightsError::Adapter`]
/// listing every key that maps to no model weight, every unpaired `lora_A` / `lora_B`, every
/// shape or rank mismatch, and every adapter tensor that cannot be read.
pub fn merge_peft_adapter<M: Module>(
    mut module: M,
    adapter: &PeftAdapter,
    remaps: &RemapTable,
    options: &LoadOptions<'_>,
) -> Result<(M, AdapterReport), WeightsError> {
    let mut shapes = FloatParamShapes::default();
    module.visit(&mut shapes);
    let plan = plan_adapter(adapter, remaps, &shapes.shapes, &options.top_level_key)?;

    let mut replaced = Vec::new();
    if !plan.full.is_empty() {
        let count = plan.full.len();
        let adapter_fn = ImportAdapter::new(TargetDTypes::resolve(&module, options.float_dtype));
        let result = module.apply(plan.full, None, Some(Box::new(adapter_fn)), true);
        let errors: Vec<String> = result
            .errors
            .iter()
            .map(|e| e.to_string())
            .chain(result.unused.iter().map(|k| {
                let key = plan.full_keys.get(k).map_or(k.as_str(), String::as_str);
                format!("{key}: not taken by the model")
            }))
            .collect();
        if !errors.is_empty() || result.applied.len() != count {
            return Err(WeightsError::Adapter {
                path: adapter.weights_path.clone(),
                message: format!(
                    "full tensors ({} of {count} applied) do not fit: {}",
                    result.applied.len(),
                    list(&errors)
                ),
            });
        }
        replaced = result.applied;
        replaced.sort();
    }

    let mut mapper = AddUpdates {
        path: PathStack::default(),
        updates: plan.updates,
        problems: Vec::new(),
    };
    module = module.map(&mut mapper);
    debug_assert!(
        mapper.updates.is_empty(),
        "every update found its parameter"
    );
    if !mapper.problems.is_empty() {
        return Err(WeightsError::Adapter {
            path: adapter.weights_path.clone(),
            message: format!("cannot merge: {}", list(&mapper.problems)),
        });
    }
    tracing::debug!(
        path = %adapter.weights_path.display(),
        merged = plan.merged.len(),
        replaced = replaced.len(),
        "PEFT adapter merged"
    );
    Ok((
        module,
        AdapterReport {
            path: adapter.weights_path.clone(),
            merged: plan.merged,
            replaced,
        },
    ))
}

/// Whether `path` is a norm's `weight`/`bias` that burn names `gamma`/`beta`.
fn has_norm_alias<V>(params: &HashMap<String, V>, path: &str) -> bool {
    let alias = path
        .strip_suffix(".weight")
        .map(|p| format!("{p}.gamma"))
        .or_else(|| path.strip_suffix(".bias").map(|p| format!("{p}.beta")));
    alias.is_some_and(|a| params.contains_key(&a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_keys_with_and_without_adapter_name() {
        assert_eq!(
            lora_key("model.layers.0.self_attn.q_proj.lora_A.weight"),
            Some(("model.layers.0.self_attn.q_proj", 'A'))
        );
        assert_eq!(
            lora_key("model.layers.0.self_attn.v_proj.lora_B.default.weight"),
            Some(("model.layers.0.self_attn.v_proj", 'B'))
        );
        assert_eq!(lora_key("lm_head.weight"), None);
        assert_eq!(lora_key("x.lora_A.a.b.weight"), None);
    }

    #[test]
    fn rank_and_alpha_patterns_like_peft() {
        let config: PeftAdapterConfig = serde_json::from_str(
            r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
                "rank_pattern": {"layers.1.self_attn.q_proj": 4},
                "alpha_pattern": {"v_proj": 2}}"#,
        )
        .unwrap();
        assert_eq!(
            config.rank_and_scale("model.layers.0.self_attn.q_proj"),
            (8, 2.0)
        );
        assert_eq!(
            config.rank_and_scale("model.layers.1.self_attn.q_proj"),
            (4, 4.0)
        );
        assert_eq!(
            config.rank_and_scale("model.layers.0.self_attn.v_proj"),
            (8, 0.25)
        );
        // `layers.1...` must not match `layers.11...`.
        assert_eq!(
            config.rank_and_scale("model.layers.11.self_attn.q_proj"),
            (8, 2.0)
        );
        let rs: PeftAdapterConfig =
            serde_json::from_str(r#"{"r": 4, "lora_alpha": 8, "use_rslora": true}"#).unwrap();
        assert_eq!(rs.rank_and_scale("q_proj"), (4, 4.0));
    }
}
