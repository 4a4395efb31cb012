//! Float dtype of loaded tensors.
//!
//! burn-store's applier keeps the dtype the file declares (`Tensor::from_data(data, (device,
//! file_dtype))`), so a bf16 checkpoint loaded into an f32 module leaves bf16 parameters, which
//! then meet f32 activations in matmuls. The loader therefore converts, by default, every float
//! tensor to the dtype of the parameter it lands in, inside the import adapter (lazily, one
//! tensor at a time: a bf16 shard is never held as a whole f32 copy).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, ModuleAdapter, ModuleContext, PyTorchToBurnAdapter, bridge,
};
use burn::tensor::{DType, FloatDType, Tensor};

use super::PathStack;

/// Which float dtype loaded tensors get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatDTypePolicy {
    /// The dtype of the parameter each tensor lands in: an initialized parameter's own dtype,
    /// else the default float dtype of its device (f32 unless the program set another).
    #[default]
    Module,
    /// The dtype stored in the file (burn-store's behaviour): a bf16 file gives bf16 parameters.
    KeepFile,
    /// One dtype for every float tensor.
    Cast(FloatDType),
}

/// What the import adapter converts float tensors to.
#[derive(Clone)]
pub(crate) enum TargetDTypes {
    Keep,
    All(DType),
    PerParam(Arc<HashMap<String, DType>>),
}

impl TargetDTypes {
    /// Resolves `policy` against `module` without initializing lazy parameters.
    pub(crate) fn resolve<M: Module>(module: &M, policy: FloatDTypePolicy) -> Self {
        match policy {
            FloatDTypePolicy::KeepFile => Self::Keep,
            FloatDTypePolicy::Cast(dtype) => Self::All(dtype.into()),
            FloatDTypePolicy::Module => {
                let mut visitor = ParamDTypes::default();
                module.visit(&mut visitor);
                Self::PerParam(Arc::new(visitor.dtypes))
            }
        }
    }

    fn target(&self, path: &str) -> Option<DType> {
        match self {
            Self::Keep => None,
            Self::All(dtype) => Some(*dtype),
            Self::PerParam(map) => map.get(path).copied(),
        }
    }
}

/// Records the dtype of every float parameter by its burn path (as the applier builds it with
/// `skip_enum_variants = true`).
#[derive(Default)]
struct ParamDTypes {
    path: PathStack,
    dtypes: HashMap<String, DType>,
}

impl ModuleVisitor for ParamDTypes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.dtypes.insert(self.path.current(), param_dtype(param));
    }
}

/// A float parameter's dtype, without initializing a lazy one.
pub(crate) fn param_dtype<const D: usize>(param: &Param<Tensor<D>>) -> DType {
    if param.is_initialized() {
        // `base` is a cheap handle clone; `val` would materialize a reparameterization.
        param.base().dtype()
    } else {
        // A lazy parameter initializes with its device's default float dtype; asking for its
        // value here would allocate it just to read the dtype.
        param.lazy_device().settings().float_dtype.into()
    }
}

/// PyTorch -> burn layout (Linear transpose, norm weight/bias -> gamma/beta), then the float
/// dtype conversion. For native (burn-layout) files, the dtype conversion only.
#[derive(Clone)]
pub(crate) struct ImportAdapter {
    targets: TargetDTypes,
    converted: Arc<AtomicUsize>,
    from_pytorch: bool,
}

impl ImportAdapter {
    pub(crate) fn new(targets: TargetDTypes) -> Self {
        Self {
            targets,
            converted: Arc::new(AtomicUsize::new(0)),
            from_pytorch: true,
        }
    }

    /// For files already in burn's layout and naming (`.bpk`).
    pub(crate) fn native(targets: TargetDTypes) -> Self {
        Self {
            from_pytorch: false,
            ..Self::new(targets)
        }
    }

    /// How many tensors had their float dtype converted so far.
    pub(crate) fn converted(&self) -> usize {
        self.converted.load(Ordering::Relaxed)
    }
}

impl ModuleAdapter for ImportAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let tensor = if self.from_pytorch {
            PyTorchToBurnAdapter.adapt(tensor, ctx)
        } else {
            tensor
        };
        // The applier names the tensor by the parameter's burn path before adapting.
        match self.targets.target(&tensor.name) {
            Some(target)
                if target.is_float() && tensor.dtype.is_float() && tensor.dtype != target =>
            {
                self.converted.fetch_add(1, Ordering::Relaxed);
                let (name, shape) = (tensor.name.clone(), tensor.shape.clone());
                // Widening bf16/f16 -> f32 is exact; narrowing rounds like `Tensor::cast`.
                bridge::map_data(tensor, name, target, shape, move |data| {
                    data.convert_dtype(target)
                })
            }
            _ => tensor,
        }
    }

    fn get_alternative_param_name(&self, param_name: &str, module_type: &str) -> Option<String> {
        if self.from_pytorch {
            PyTorchToBurnAdapter.get_alternative_param_name(param_name, module_type)
        } else {
            None
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// burn -> PyTorch layout (Linear transpose, gamma/beta -> weight/bias), then an optional
/// float dtype cast, for exports.
#[derive(Clone)]
pub(crate) struct ExportAdapter {
    pub(crate) dtype: Option<DType>,
}

impl ModuleAdapter for ExportAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let tensor = BurnToPyTorchAdapter.adapt(tensor, ctx);
        match self.dtype {
            Some(target) if tensor.dtype.is_float() && tensor.dtype != target => {
                let (name, shape) = (tensor.name.clone(), tensor.shape.clone());
                bridge::map_data(tensor, name, target, shape, move |data| {
                    data.convert_dtype(target)
                })
            }
            _ => tensor,
        }
    }

    fn get_alternative_param_name(&self, param_name: &str, module_type: &str) -> Option<String> {
        BurnToPyTorchAdapter.get_alternative_param_name(param_name, module_type)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}
