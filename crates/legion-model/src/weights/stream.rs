//! Checkpoint conversion without the model in memory: every tensor is matched, checked and
//! planned from the file headers, then read, converted and written one at a time.
//!
//! [`load_weights`](super::load_weights) fills a module's parameters, so its peak memory is at
//! least the model. A conversion to burn's native format does not need the parameters at
//! all: it needs each parameter's burn path, shape and dtype (read from a lazily initialized
//! module without allocating it), and the file tensor that fills it. [`StreamPlan`] pairs
//! them with the same remap tables, PyTorch layout adapter, dtype policy, allowances and
//! strict verdict as the loader ([`WeightsError::Mismatch`] with the same messages), and
//! yields deferred tensors named as a native `.bpk` names them. burn-pack's writer then draws
//! each tensor's data when it reaches it, so peak memory is about the largest tensor (plus a
//! LoRA update of it), whatever the model size.
//!
//! A parameter allowed to stay missing is written with its initial value, produced when the
//! writer reaches it (as a loaded module would keep it).

use std::collections::{BTreeSet, HashMap};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{ApplyError, ModuleAdapter, ModuleContext, PyTorchToBurnAdapter, bridge};
use burn::tensor::{DType, Tensor};

use super::dtype::param_dtype;
use super::peft::{AdapterPlan, plan_adapter};
use super::{
    Allowances, CheckpointSource, FloatDTypePolicy, LoadOptions, LoadReport, Outcome, PathStack,
    PeftAdapter, RemapTable, Remapped, WeightsError, judge, list,
};

/// One float parameter of a module, read without initializing it.
struct ParamSlot {
    /// Burn path as the importer builds it (enum variants skipped): what remapped file keys
    /// are matched against.
    path: String,
    /// Burn path as a native `.bpk` names it (`Module::collect`: enum variants included).
    native_path: String,
    /// The containers from the root, as burn-store's traversal gives them.
    containers: Vec<String>,
    shape: Vec<usize>,
    dtype: DType,
    /// The parameter's initial value, drawn only if no file fills it.
    initial: PackTensor,
}

/// Collects [`ParamSlot`]s; parameters of other kinds are listed, since the streaming path
/// does not convert them.
#[derive(Default)]
struct SlotCollector {
    /// Import paths (enum variants skipped).
    path: PathStack,
    /// Native path segments (enum variants included) and their containers.
    names: Vec<String>,
    containers: Vec<String>,
    slots: Vec<ParamSlot>,
    unsupported: Vec<String>,
}

impl ModuleVisitor for SlotCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
        self.containers.push(container_type.to_string());
        self.names.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
        self.containers.pop();
        self.names.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dtype = param_dtype(param);
        let shape = param.lazy_shape();
        let native_path = self.names.join(".");
        let param = param.clone();
        let initial =
            bridge::deferred(native_path.clone(), dtype, shape.clone(), None, move || {
                Ok(param.val().into_data())
            });
        self.slots.push(ParamSlot {
            path: self.path.current(),
            native_path,
            containers: self.containers.clone(),
            shape: shape.to_vec(),
            dtype,
            initial,
        });
    }

    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, burn::tensor::Int>>) {
        self.unsupported.push(self.names.join("."));
    }

    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, burn::tensor::Bool>>) {
        self.unsupported.push(self.names.join("."));
    }
}

/// A checkpoint conversion being planned: the module's parameters, and the file tensor
/// chosen for each so far.
pub struct StreamPlan {
    slots: Vec<ParamSlot>,
    /// The chosen tensor per slot index, already adapted, cast and named for the native file.
    chosen: Vec<Option<PackTensor>>,
    policy: FloatDTypePolicy,
}

impl StreamPlan {
    /// Reads the parameters of `module` (burn paths, shapes, dtypes) without initializing
    /// them. `policy` decides the dtype written for each.
    ///
    /// # Errors
    /// [`WeightsError::Source`] when the module has integer or boolean parameters (not
    /// converted by this path).
    pub fn new<M: Module>(module: &M, policy: FloatDTypePolicy) -> Result<Self, WeightsError> {
        let mut collector = SlotCollector::default();
        module.visit(&mut collector);
        if !collector.unsupported.is_empty() {
            return Err(WeightsError::Source {
                path: Default::default(),
                message: format!(
                    "streaming conversion handles float parameters only; the module has {}",
                    list(&collector.unsupported)
                ),
            });
        }
        let chosen = collector.slots.iter().map(|_| None).collect();
        Ok(Self {
            slots: collector.slots,
            chosen,
            policy,
        })
    }

    /// Number of scalar parameters.
    pub fn parameters(&self) -> usize {
        self.slots
            .iter()
            .map(|slot| slot.shape.iter().product::<usize>())
            .sum()
    }

    /// Total bytes of the native tensors (chosen ones in their converted dtype, the rest at
    /// their initial dtype).
    pub fn bytes(&self) -> u64 {
        self.slots
            .iter()
            .zip(&self.chosen)
            .map(|(slot, chosen)| match chosen {
                Some(tensor) => tensor.byte_len() as u64,
                None => slot.initial.byte_len() as u64,
            })
            .sum()
    }

    /// Plans `source` into the parameters under the burn path `prefix` (`""` for the whole
    /// module, `"vision_tower."` for a tower's own file), strictly: the verdict is the
    /// loader's ([`super::load_weights`]) over the paths below `prefix`, which are what its
    /// report and errors name. A later source replaces what an earlier one chose.
    ///
    /// # Errors
    /// As [`super::load_weights`].
    pub fn add_source(
        &mut self,
        source: &CheckpointSource,
        remaps: &RemapTable,
        prefix: &str,
        allow: &Allowances,
        options: &LoadOptions<'_>,
    ) -> Result<LoadReport, WeightsError> {
        let mut remapped = Remapped::default();
        let mut tensors: HashMap<String, PackTensor> = HashMap::new();
        for index in 0..source.shards().len() {
            for tensor in remapped.read_shard(source, index, remaps, &options.top_level_key)? {
                tensors.insert(tensor.name.clone(), tensor);
            }
            if let Some(progress) = options.progress {
                progress(index + 1, source.shards().len());
            }
        }
        let matched = self.match_tensors(prefix, tensors);
        let outcome = Outcome {
            applied: matched.chosen.len(),
            never_loaded: matched.not_found,
            unused: matched.unused,
            errors: matched.errors,
            converted: matched.converted,
        };
        let report = judge(source, remapped, outcome, allow)?;
        for (index, tensor) in matched.chosen {
            self.chosen[index] = Some(tensor);
        }
        Ok(report)
    }

    /// Plans a PEFT adapter on top of the sources added so far: its full tensors
    /// (`modules_to_save`) replace their parameters, and each LoRA update is added to its
    /// weight when the weight is written.
    ///
    /// # Errors
    /// As [`super::merge_peft_adapter`]; also when a LoRA update targets a weight no source
    /// filled.
    pub fn add_adapter(
        &mut self,
        adapter: &PeftAdapter,
        remaps: &RemapTable,
        options: &LoadOptions<'_>,
    ) -> Result<super::AdapterReport, WeightsError> {
        let shapes: HashMap<String, Vec<usize>> = self
            .slots
            .iter()
            .map(|slot| (slot.path.clone(), slot.shape.clone()))
            .collect();
        let AdapterPlan {
            updates,
            full,
            full_keys,
            merged,
        } = plan_adapter(adapter, remaps, &shapes, &options.top_level_key)?;
        let adapter_error = |message: String| WeightsError::Adapter {
            path: adapter.weights_path.clone(),
            message,
        };

        let count = full.len();
        let tensors = full.into_iter().map(|t| (t.name.clone(), t)).collect();
        let matched = self.match_tensors("", tensors);
        let problems: Vec<String> = matched
            .errors
            .iter()
            .map(|e| e.to_string())
            .chain(matched.unused.iter().map(|k| {
                let key = full_keys.get(k).map_or(k.as_str(), String::as_str);
                format!("{key}: not taken by the model")
            }))
            .collect();
        if !problems.is_empty() || matched.chosen.len() != count {
            return Err(adapter_error(format!(
                "full tensors ({} of {count} applied) do not fit: {}",
                matched.chosen.len(),
                list(&problems)
            )));
        }
        let mut replaced: Vec<String> = Vec::with_capacity(count);
        for (index, tensor) in matched.chosen {
            replaced.push(self.slots[index].path.clone());
            self.chosen[index] = Some(tensor);
        }
        replaced.sort();

        let by_path: HashMap<&str, usize> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| (slot.path.as_str(), i))
            .collect();
        let mut unfilled = Vec::new();
        for (path, update) in updates {
            let index = by_path[path.as_str()];
            let Some(base) = self.chosen[index].take() else {
                unfilled.push(path);
                continue;
            };
            let (name, dtype, shape) = (base.name.clone(), base.dtype, base.shape.clone());
            let shown = path.clone();
            self.chosen[index] = Some(bridge::deferred(name, dtype, shape, None, move || {
                let weight = bridge::to_data(&base)?;
                update.add_to_data(weight).map_err(|message| {
                    burn::store::burn_pack::Error::ValidationError(format!(
                        "merging the LoRA update of {shown}: {message}"
                    ))
                })
            }));
        }
        if !unfilled.is_empty() {
            unfilled.sort();
            return Err(adapter_error(format!(
                "LoRA updates of weights no checkpoint filled (left at their initial values): {}",
                list(&unfilled)
            )));
        }
        Ok(super::AdapterReport {
            path: adapter.weights_path.clone(),
            merged,
            replaced,
        })
    }

    /// Every parameter's tensor, in module order, named as a native `.bpk` names it: the
    /// planned file tensor, or the initial value for what no source filled (the caller's
    /// allowances decided that this is fine).
    pub fn into_tensors(self) -> Vec<PackTensor> {
        self.slots
            .into_iter()
            .zip(self.chosen)
            .map(|(slot, chosen)| chosen.unwrap_or(slot.initial))
            .collect()
    }

    /// Matches `tensors` (remapped names, relative to `prefix`) to the slots under `prefix`
    /// as burn-store's applier does: by path, else by the norm's PyTorch name; each match is
    /// adapted from the PyTorch layout, checked for kind and shape, and cast per the policy.
    fn match_tensors(&self, prefix: &str, mut tensors: HashMap<String, PackTensor>) -> Matched {
        let mut matched = Matched::default();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(path) = slot.path.strip_prefix(prefix) else {
                continue;
            };
            let context = ModuleContext::new(&slot.containers);
            // A norm's gamma/beta is found under the file's weight/bias too.
            let (parent, name) = match path.rsplit_once('.') {
                Some((parent, name)) => (format!("{parent}."), name),
                None => (String::new(), path),
            };
            let alternative = context.module_type().and_then(|module_type| {
                PyTorchToBurnAdapter.get_alternative_param_name(name, module_type)
            });
            let found = tensors.remove(path).or_else(|| {
                alternative
                    .and_then(|alternative| tensors.remove(&format!("{parent}{alternative}")))
            });
            let Some(mut tensor) = found else {
                matched.not_found.insert(path.to_string());
                continue;
            };
            tensor.name = path.to_string();
            let mut tensor = PyTorchToBurnAdapter.adapt(tensor, context);
            if !(tensor.dtype.is_float() || matches!(tensor.dtype, DType::QFloat(_))) {
                matched.errors.push(ApplyError::DTypeMismatch {
                    path: path.to_string(),
                    expected: slot.dtype,
                    found: tensor.dtype,
                });
                continue;
            }
            if tensor.shape.to_vec() != slot.shape {
                matched.errors.push(ApplyError::ShapeMismatch {
                    path: path.to_string(),
                    expected: slot.shape.clone().into(),
                    found: tensor.shape.clone(),
                });
                continue;
            }
            let target = match self.policy {
                FloatDTypePolicy::Module => slot.dtype,
                FloatDTypePolicy::KeepFile => tensor.dtype,
                FloatDTypePolicy::Cast(dtype) => dtype.into(),
            };
            let name = slot.native_path.clone();
            let tensor = if tensor.dtype != target {
                matched.converted += 1;
                let shape = tensor.shape.clone();
                // Widening bf16/f16 -> f32 is exact; narrowing rounds like `Tensor::cast`.
                bridge::map_data(tensor, name, target, shape, move |data| {
                    data.convert_dtype(target)
                })
            } else {
                tensor.name = name;
                tensor
            };
            matched.chosen.push((index, tensor));
        }
        matched.unused = tensors.into_keys().collect();
        matched
    }
}

/// What matching one set of file tensors against the slots found.
#[derive(Default)]
struct Matched {
    /// `(slot index, planned tensor)`.
    chosen: Vec<(usize, PackTensor)>,
    /// Slot paths (relative) no tensor filled.
    not_found: BTreeSet<String>,
    /// File tensors (remapped names) no slot took.
    unused: Vec<String>,
    errors: Vec<ApplyError>,
    converted: usize,
}
