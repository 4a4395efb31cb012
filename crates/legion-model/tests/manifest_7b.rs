//! `LegionConfig::legion_7b()` against the full-size reference layout, key by key, without
//! allocating a weight.
//!
//! Fixtures: `tests/fixtures/manifest/*.json`, key -> shape of the reference modules built on
//! PyTorch's meta device (`glamm_legion_7b.json`: a merged GLaMM/LEGION checkpoint;
//! `clip_vit_large_patch14_336.json`: the whole HF `CLIPModel` that `--clip` loads).
//!
//! ```text
//! /work/main/.venv/bin/python scripts/fixtures/full_size_manifest.py
//! cargo test --workspace --test manifest_7b
//! ```
//!
//! Every manifest tensor goes the way `Legion::load_glamm(.., ClipWeights::HfFile(..))` sends a
//! file tensor, on shapes only: the family's remap table ([`glamm_legion_remaps`], or
//! [`ClipCheckpointLayout::HfClip`]'s), burn-store's applier lookup (the burn path, then the
//! `PyTorchToBurnAdapter` alternative name: a norm's `gamma`/`beta` found as `weight`/`bias`),
//! `PyTorchToBurnAdapter`'s layout change (Linear weights transposed, applied to a deferred
//! burn-pack tensor whose bytes are never drawn) and the applier's kind and shape checks against
//! the parameter's `Param::lazy_shape`. What no parameter takes must match one of the loader's
//! named ignore rules ([`GLAMM_LEGION_IGNORED`], [`HF_CLIP_IGNORED`] through the layout's
//! allowances); every parameter must be filled by exactly one of the two files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn::store::{ModuleAdapter, ModuleContext, PyTorchToBurnAdapter};
use burn::tensor::{Bool, DType, Device, Int, Tensor};
use legion_model::clip_vision::{ClipCheckpointLayout, HF_CLIP_IGNORED};
use legion_model::legion::{
    GLAMM_LEGION_IGNORED, LegionConfig, LegionParamCount, glamm_legion_remaps,
};
use legion_model::weights::{Allowances, RemapTable};

/// The burn field the checkpoint does not fill because `--clip` does (`ClipWeights::HfFile`).
const VISION_TOWER: &str = "vision_tower";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Float,
    Int,
    Bool,
}

impl ParamKind {
    /// burn-store's applier: a parameter takes a source of its kind, whatever the width.
    fn accepts(self, dtype: DType) -> bool {
        match self {
            Self::Float => dtype.is_float(),
            Self::Int => dtype.is_int() || dtype.is_uint(),
            Self::Bool => dtype.is_bool() || matches!(dtype, DType::U8 | DType::U32),
        }
    }
}

/// One model parameter as the applier sees it.
#[derive(Debug, Clone)]
struct ModelParam {
    /// burn path (enum variants skipped, as the loader asks).
    path: String,
    /// Container types from the root, for the adapter's module type.
    containers: Vec<String>,
    shape: Vec<usize>,
    kind: ParamKind,
}

/// Records every parameter's path and lazy shape; never initializes one.
#[derive(Default)]
struct LazyParams {
    path: Vec<String>,
    containers: Vec<String>,
    /// Whether each entered container pushed a path segment (enum variants do not).
    pushed: Vec<bool>,
    params: Vec<ModelParam>,
    /// Elements of parameters that already hold a value (eager buffers).
    initialized_elements: usize,
}

impl LazyParams {
    fn of<M: Module>(module: &M) -> Self {
        let mut visitor = Self::default();
        module.visit(&mut visitor);
        visitor
    }

    fn record<T>(&mut self, param: &Param<T>, kind: ParamKind)
    where
        T: burn::module::Parameter,
    {
        let shape = param.lazy_shape().to_vec();
        if param.is_initialized() {
            self.initialized_elements += shape.iter().product::<usize>();
        }
        self.params.push(ModelParam {
            path: self.path.join("."),
            containers: self.containers.clone(),
            shape,
            kind,
        });
    }
}

impl ModuleVisitor for LazyParams {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        let push = !container_type.starts_with("Enum:");
        if push {
            self.path.push(name.to_string());
        }
        self.pushed.push(push);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
        if self.pushed.pop() == Some(true) {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.record(param, ParamKind::Float);
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        self.record(param, ParamKind::Int);
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        self.record(param, ParamKind::Bool);
    }
}

/// One tensor of a manifest, in the file's naming and PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
struct FileTensor {
    shape: Vec<usize>,
    dtype: DType,
}

impl FileTensor {
    /// `{"shape": [..], "dtype": "F32"}`; `at` names the entry in a panic.
    fn parse(entry: &serde_json::Value, at: &str) -> Self {
        let shape = entry["shape"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: no shape list"))
            .iter()
            .map(|d| {
                d.as_u64()
                    .unwrap_or_else(|| panic!("{at}: a dimension is not a count"))
            })
            .map(|d| d as usize)
            .collect();
        let dtype = match entry["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("BF16") => DType::BF16,
            Some("F16") => DType::F16,
            Some("I64") => DType::I64,
            other => panic!("{at}: unknown dtype {other:?}"),
        };
        Self { shape, dtype }
    }
}

/// A manifest: the tensors a current save has, and those older transformers saved too.
#[derive(Debug, Clone)]
struct Manifest {
    tensors: BTreeMap<String, FileTensor>,
    legacy_tensors: BTreeMap<String, FileTensor>,
}

impl Manifest {
    fn read(name: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/manifest")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run scripts/fixtures/full_size_manifest.py)",
                path.display()
            )
        });
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let section = |field: &str| -> BTreeMap<String, FileTensor> {
            let entries = json[field]
                .as_object()
                .unwrap_or_else(|| panic!("{}: no `{field}` object", path.display()));
            entries
                .iter()
                .map(|(key, entry)| {
                    let at = format!("{}: `{field}.{key}`", path.display());
                    (key.clone(), FileTensor::parse(entry, &at))
                })
                .collect()
        };
        Self {
            tensors: section("tensors"),
            legacy_tensors: section("legacy_tensors"),
        }
    }

    /// The current tensors plus the legacy buffers, as an old save would hold them.
    fn with_legacy(&self) -> BTreeMap<String, FileTensor> {
        let mut all = self.tensors.clone();
        all.extend(self.legacy_tensors.clone());
        all
    }
}

/// What loading one file into some parameters does, shapes only.
#[derive(Debug, Default)]
struct LayoutVerdict {
    /// burn path -> file key it was filled from.
    applied: BTreeMap<String, String>,
    /// burn paths no file tensor fills.
    missing: Vec<String>,
    /// File tensors no parameter takes and no ignore rule covers: `file key (as remapped)`.
    unexpected: Vec<String>,
    /// Kind or shape disagreements, and remap collisions, each naming both sides.
    errors: Vec<String>,
    /// Ignore rule (its pattern) -> the file keys it covered.
    ignored: BTreeMap<String, Vec<String>>,
}

impl LayoutVerdict {
    /// `(ignore rule, how many file keys it covered)`.
    fn ignored_counts(&self) -> Vec<(&str, usize)> {
        self.ignored
            .iter()
            .map(|(rule, keys)| (rule.as_str(), keys.len()))
            .collect()
    }

    /// Problems, one per line (empty when the file fits the parameters exactly).
    fn problems(&self, file: &str) -> Vec<String> {
        let missing = self
            .missing
            .iter()
            .map(|p| format!("{file}: model parameter `{p}` is filled by no tensor"));
        let unexpected = self
            .unexpected
            .iter()
            .map(|k| format!("{file}: tensor {k} fits no model parameter and no ignore rule"));
        let errors = self.errors.iter().map(|e| format!("{file}: {e}"));
        missing.chain(unexpected).chain(errors).collect()
    }
}

/// Loads `file` into `params` as `weights::load_weights` would (see the module docs), without
/// data: `remaps` then the applier's lookup, adapter and checks; leftovers judged by `ignore`.
fn check_layout(
    params: &[ModelParam],
    file: &BTreeMap<String, FileTensor>,
    remaps: &RemapTable,
    ignore: &Allowances,
) -> LayoutVerdict {
    let mut verdict = LayoutVerdict::default();
    let mut by_path: HashMap<String, (&str, &FileTensor)> = HashMap::new();
    for (file_key, tensor) in file {
        let path = remaps.apply(file_key);
        if let Some((earlier, _)) = by_path.insert(path.clone(), (file_key, tensor)) {
            verdict.errors.push(format!(
                "file keys {earlier} and {file_key} both remap to `{path}`"
            ));
        }
    }
    let mut consumed: HashSet<&str> = HashSet::new();
    for param in params {
        let context = ModuleContext::new(&param.containers);
        let alternative = || {
            let (parent, name) = param.path.rsplit_once('.').unwrap_or(("", &param.path));
            let alternative =
                PyTorchToBurnAdapter.get_alternative_param_name(name, context.module_type()?)?;
            Some(if parent.is_empty() {
                alternative
            } else {
                format!("{parent}.{alternative}")
            })
        };
        let Some((source_path, (file_key, tensor))) = by_path
            .get_key_value(param.path.as_str())
            .or_else(|| by_path.get_key_value(alternative()?.as_str()))
        else {
            verdict.missing.push(param.path.clone());
            continue;
        };
        consumed.insert(source_path.as_str());
        let elements: usize = tensor.shape.iter().product();
        let deferred = PackTensor::deferred(
            param.path.clone(),
            tensor.dtype,
            tensor.shape.clone(),
            None,
            elements * tensor.dtype.size(),
            || {
                Err(PackError::IoError(
                    "a layout check never reads tensor data".into(),
                ))
            },
        );
        let adapted = PyTorchToBurnAdapter.adapt(deferred, context);
        if !param.kind.accepts(adapted.dtype) {
            verdict.errors.push(format!(
                "`{}` ({:?} parameter) cannot take {file_key} of dtype {:?}",
                param.path, param.kind, adapted.dtype
            ));
        } else if adapted.shape.to_vec() != param.shape {
            verdict.errors.push(format!(
                "`{}` has shape {:?} (burn layout); {file_key} has {:?}, {:?} after the PyTorch \
                 adapter",
                param.path,
                param.shape,
                tensor.shape,
                adapted.shape.to_vec()
            ));
        } else {
            verdict
                .applied
                .insert(param.path.clone(), file_key.to_string());
        }
    }
    for (path, (file_key, _)) in &by_path {
        if consumed.contains(path.as_str()) {
            continue;
        }
        match ignore.unexpected.iter().find(|rule| rule.is_match(path)) {
            Some(rule) => verdict
                .ignored
                .entry(rule.as_str().to_string())
                .or_default()
                .push(file_key.to_string()),
            None => verdict.unexpected.push(format!("{file_key} (as `{path}`)")),
        }
    }
    verdict.unexpected.sort();
    verdict.ignored.values_mut().for_each(|keys| keys.sort());
    verdict
}

/// The 7B model's parameters, split as `load_glamm` with `--clip` loads them: the checkpoint's
/// (everything outside the vision tower) and the CLIP file's (the tower, by its own paths).
struct SevenB {
    checkpoint_params: Vec<ModelParam>,
    clip_params: Vec<ModelParam>,
    counts: LegionParamCount,
    initialized_elements: usize,
}

fn seven_b() -> SevenB {
    let model = LegionConfig::legion_7b().init(&Device::flex()).unwrap();
    let whole = LazyParams::of(&model);
    let tower = LazyParams::of(&model.vision_tower);
    let checkpoint_params = whole
        .params
        .into_iter()
        .filter(|p| p.path.split('.').next() != Some(VISION_TOWER))
        .collect();
    // Reading shapes initialized nothing: a second walk finds the same eager buffers.
    assert_eq!(
        LazyParams::of(&model).initialized_elements,
        whole.initialized_elements
    );
    SevenB {
        checkpoint_params,
        clip_params: tower.params,
        counts: LegionParamCount::of(&model),
        initialized_elements: whole.initialized_elements,
    }
}

fn checkpoint_rules() -> (RemapTable, Allowances) {
    let remaps = RemapTable::new(&glamm_legion_remaps()).unwrap();
    let ignore = Allowances::from_patterns(&[] as &[&str], GLAMM_LEGION_IGNORED).unwrap();
    (remaps, ignore)
}

fn clip_rules() -> (RemapTable, Allowances) {
    let layout = ClipCheckpointLayout::HfClip;
    (
        RemapTable::new(layout.remaps()).unwrap(),
        layout.allowances(),
    )
}

fn assert_fits(verdict: &LayoutVerdict, file: &str) {
    let problems = verdict.problems(file);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn ignored_keys<'a>(verdict: &'a LayoutVerdict, rule: &str) -> &'a [String] {
    verdict
        .ignored
        .get(rule)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[test]
fn legion_7b_matches_the_full_size_reference_layout_key_by_key() {
    let model = seven_b();
    let glamm = Manifest::read("glamm_legion_7b.json");
    let clip = Manifest::read("clip_vit_large_patch14_336.json");

    let (remaps, ignore) = checkpoint_rules();
    let checkpoint = check_layout(&model.checkpoint_params, &glamm.tensors, &remaps, &ignore);
    assert_fits(&checkpoint, "glamm_legion_7b.json");
    let (clip_remaps, clip_ignore) = clip_rules();
    let tower = check_layout(
        &model.clip_params,
        &clip.tensors,
        &clip_remaps,
        &clip_ignore,
    );
    assert_fits(&tower, "clip_vit_large_patch14_336.json");

    // Every parameter filled by exactly one file; elements agree with the parameter counts.
    assert_eq!(
        checkpoint.applied.len() + tower.applied.len(),
        model.checkpoint_params.len() + model.clip_params.len()
    );
    let elements = |file: &BTreeMap<String, FileTensor>, verdict: &LayoutVerdict| -> usize {
        verdict
            .applied
            .values()
            .map(|key| file[key].shape.iter().product::<usize>())
            .sum()
    };
    assert_eq!(elements(&clip.tensors, &tower), model.counts.vision_tower);
    assert_eq!(
        elements(&glamm.tensors, &checkpoint),
        model.counts.total() - model.counts.vision_tower
    );
    // The PyTorch adapter was needed: a Linear weight is stored [out, in] and held [in, out].
    let gate = "llm.layers.0.mlp.gate_proj.weight";
    let gate_param = model
        .checkpoint_params
        .iter()
        .find(|p| p.path == gate)
        .unwrap();
    assert_eq!(gate_param.shape, vec![4096, 11008]);
    assert_eq!(
        glamm.tensors[&checkpoint.applied[gate]].shape,
        vec![11008, 4096]
    );

    // Ignored by named rules, and only what those rules are for.
    let region_encoder: Vec<&String> = glamm
        .tensors
        .keys()
        .filter(|k| k.starts_with("model.region_encoder."))
        .collect();
    assert_eq!(region_encoder.len(), 43, "GLaMM's region_encoder tensors");
    assert_eq!(
        ignored_keys(&checkpoint, GLAMM_LEGION_IGNORED[0])
            .iter()
            .collect::<Vec<_>>(),
        region_encoder
    );
    assert_eq!(
        checkpoint.ignored.len(),
        1,
        "{:?}",
        checkpoint.ignored.keys()
    );
    let text_tower = ignored_keys(&tower, HF_CLIP_IGNORED[0]);
    assert_eq!(text_tower.len(), 196, "CLIP text tower tensors");
    assert!(text_tower.iter().all(|k| k.starts_with("text_model.")));
    assert_eq!(
        ignored_keys(&tower, HF_CLIP_IGNORED[1]),
        ["text_projection.weight", "visual_projection.weight"]
    );
    assert_eq!(ignored_keys(&tower, HF_CLIP_IGNORED[2]), ["logit_scale"]);
    assert_eq!(tower.ignored.len(), 3, "{:?}", tower.ignored.keys());
    println!(
        "checkpoint: {} tensors, {} loaded, ignored {:?}; CLIP: {} tensors, {} loaded, \
         ignored {:?}; {} model parameters, {} elements held before loading",
        glamm.tensors.len(),
        checkpoint.applied.len(),
        checkpoint.ignored_counts(),
        clip.tensors.len(),
        tower.applied.len(),
        tower.ignored_counts(),
        model.checkpoint_params.len() + model.clip_params.len(),
        model.initialized_elements,
    );
    // Only SAM's eager buffers exist before loading (pos_embed 64x64x1280, rel-pos tables,
    // the prompt encoder's Gaussian matrix): well under 1% of the 7.7 B parameters.
    assert!(model.initialized_elements < model.counts.total() / 100);
}

#[test]
fn buffers_older_transformers_saved_are_ignored_by_named_rules() {
    let model = seven_b();
    let glamm = Manifest::read("glamm_legion_7b.json");
    let clip = Manifest::read("clip_vit_large_patch14_336.json");
    assert_eq!(
        glamm.legacy_tensors.len(),
        32,
        "one rotary inv_freq per layer"
    );
    assert_eq!(clip.legacy_tensors.len(), 2, "position_ids of both towers");

    let (remaps, ignore) = checkpoint_rules();
    let checkpoint = check_layout(
        &model.checkpoint_params,
        &glamm.with_legacy(),
        &remaps,
        &ignore,
    );
    assert_fits(&checkpoint, "glamm_legion_7b.json with legacy buffers");
    let inv_freq: usize = checkpoint
        .ignored
        .values()
        .flatten()
        .filter(|k| glamm.legacy_tensors.contains_key(*k))
        .count();
    assert_eq!(inv_freq, 32);

    let (clip_remaps, clip_ignore) = clip_rules();
    let tower = check_layout(
        &model.clip_params,
        &clip.with_legacy(),
        &clip_remaps,
        &clip_ignore,
    );
    assert_fits(
        &tower,
        "clip_vit_large_patch14_336.json with legacy buffers",
    );
    assert_eq!(
        ignored_keys(&tower, HF_CLIP_IGNORED[3]),
        ["vision_model.embeddings.position_ids"]
    );
}

/// The check itself: a key the model lacks, a parameter no key fills and a wrong shape each
/// fail with a message naming them.
#[test]
fn layout_check_names_missing_unexpected_and_misshapen_tensors() {
    let model = seven_b();
    let mut glamm = Manifest::read("glamm_legion_7b.json").tensors;
    glamm.remove("model.layers.7.mlp.up_proj.weight");
    glamm.insert(
        "model.layers.7.mlp.extra_proj.weight".into(),
        FileTensor {
            shape: vec![4096, 4096],
            dtype: DType::BF16,
        },
    );
    glamm
        .get_mut("model.grounding_encoder.image_encoder.blocks.7.attn.rel_pos_h")
        .unwrap()
        .shape = vec![27, 80];
    glamm.get_mut("lm_head.weight").unwrap().dtype = DType::I64;

    let (remaps, ignore) = checkpoint_rules();
    let verdict = check_layout(&model.checkpoint_params, &glamm, &remaps, &ignore);
    let problems = verdict.problems("edited").join("\n");
    assert_eq!(
        verdict.missing,
        ["llm.layers.7.mlp.up_proj.weight"],
        "{problems}"
    );
    assert_eq!(
        verdict.unexpected,
        ["model.layers.7.mlp.extra_proj.weight (as `llm.layers.7.mlp.extra_proj.weight`)"]
    );
    assert_eq!(verdict.errors.len(), 2, "{problems}");
    assert!(
        problems.contains(
            "`grounding_encoder.image_encoder.blocks.7.attn.rel_pos_h` has shape [127, 80]"
        ),
        "{problems}"
    );
    assert!(
        problems.contains("cannot take lm_head.weight of dtype I64"),
        "{problems}"
    );
}
