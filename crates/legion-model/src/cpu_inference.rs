//! What the CPU-backend fast paths (`matmul`, `fused_attention`, SAM's image-encoder attention,
//! [`gelu`], `softmax`, SAM's `LayerNorm2d`) share: recognising a (plain) CPU tensor,
//! running a kernel over an f32 tensor's values, and running independent blocks of rows on
//! rayon's threads (burn-flex's kernels run on one thread in this workspace, see the README).

use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::activation;
use burn::tensor::{DType, Tensor, TensorData};
use legion_kernels::elementwise::{gelu_erf, quick_gelu as quick_gelu_kernel, transpose};
use rayon::prelude::*;

/// Whether `t` is a tensor of the CPU (`flex`) backend without autodiff: the fast paths apply
/// to inference on that backend only.
pub(crate) fn is_plain_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    t.clone().try_into_primitive::<Flex>().is_ok()
}

/// Whether `t` is a tensor of the CPU backend, plain or with autodiff (the default
/// checkpointing strategy): the tensors the backend extensions (`softmax`, `matmul`) handle.
pub(crate) fn is_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    is_plain_cpu(t) || t.clone().try_into_primitive::<Autodiff<Flex>>().is_ok()
}

/// `block(start, len)` for one block of consecutive rows of `0..rows` per rayon thread, run
/// side by side and concatenated along axis 0 in order. Each block must depend on its rows
/// only, so that the result equals one call on all rows.
///
/// # Panics
/// If `rows` is 0.
pub(crate) fn split_rows_over_threads<const D: usize>(
    rows: usize,
    block: impl Fn(usize, usize) -> Tensor<D> + Sync,
) -> Tensor<D> {
    let size = rows.div_ceil(rayon::current_num_threads());
    let blocks: Vec<Tensor<D>> = (0..rows.div_ceil(size))
        .into_par_iter()
        .map(|i| block(i * size, size.min(rows - i * size)))
        .collect();
    Tensor::cat(blocks, 0)
}

/// burn's `activation::gelu` (the exact, erf GELU), through
/// `legion_kernels::elementwise::gelu_erf` (vectorised, on rayon's threads) for f32 tensors
/// of the CPU backend without autodiff. Other dtypes, training and the GPU backends take
/// burn's op. Within 2e-7 of the exact value relative to `max(|x|, 1)`.
///
/// # Shapes
/// Any shape -> the same shape.
pub(crate) fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    element_wise(x, gelu_erf, activation::gelu)
}

/// `x * sigmoid(1.702 x)` (CLIP's QuickGELU): through
/// `legion_kernels::elementwise::quick_gelu` (vectorised, on rayon's threads; one pass instead
/// of burn's three, whose `sigmoid` calls a scalar `expf` on one thread) for f32 tensors of the
/// CPU backend without autodiff, burn's ops otherwise. Within 5e-7 of the exact value relative
/// to `max(|x|, 1)`.
///
/// # Shapes
/// Any shape -> the same shape.
pub(crate) fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    element_wise(x, quick_gelu_kernel, |x| {
        x.clone() * activation::sigmoid(x.mul_scalar(1.702))
    })
}

/// `kernel` over the values of an f32 tensor of the CPU backend without autodiff (in place
/// where it owns its buffer); `burn_ops` for any other tensor.
fn element_wise<const D: usize>(
    x: Tensor<D>,
    kernel: fn(&mut [f32]),
    burn_ops: impl FnOnce(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    if x.dtype() != DType::F32 || !is_plain_cpu(&x) {
        return burn_ops(x);
    }
    let primitive = x
        .try_into_primitive::<Flex>()
        .expect("is_plain_cpu checked the backend");
    Tensor::from_primitive::<Flex>(map_f32(primitive, kernel))
}

/// `kernel` over the row-major values of an f32 flex tensor: in place when the tensor owns
/// its whole buffer, on a row-major copy otherwise.
///
/// # Panics
/// If the tensor is not f32.
pub(crate) fn map_f32(mut tensor: FlexTensor, kernel: impl FnOnce(&mut [f32])) -> FlexTensor {
    let whole_buffer = tensor.is_contiguous()
        && tensor.layout().start_offset() == 0
        && tensor.storage::<f32>().len() == tensor.layout().num_elements();
    if whole_buffer && let Some(values) = tensor.try_storage_mut::<f32>() {
        kernel(values);
        return tensor;
    }
    let shape = tensor.layout().shape().clone();
    let mut values = tensor
        .to_contiguous()
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor")
        .to_vec();
    kernel(&mut values);
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `read` over the row-major values of an f32 tensor of the CPU backend without autodiff:
/// borrowed in place when the tensor is contiguous, from a row-major copy otherwise; `None` for
/// any other tensor.
pub(crate) fn read_plain_f32<const D: usize, R>(
    x: &Tensor<D>,
    read: impl FnOnce(&[f32]) -> R,
) -> Option<R> {
    if x.dtype() != DType::F32 {
        return None;
    }
    let primitive = x.clone().try_into_primitive::<Flex>().ok()?;
    Some(read_f32(&primitive, read))
}

/// `read` over the row-major values of an f32 flex tensor: borrowed in place when it is
/// contiguous, from a row-major copy otherwise.
///
/// # Panics
/// If the tensor is not f32.
pub(crate) fn read_f32<R>(tensor: &FlexTensor, read: impl FnOnce(&[f32]) -> R) -> R {
    match tensor.as_slice::<f32>() {
        Some(values) => read(values),
        None => read(
            tensor
                .to_contiguous()
                .as_slice::<f32>()
                .expect("an f32 tensor"),
        ),
    }
}

/// `x.swap_dims(1, 2)` copied into row-major order: through
/// `legion_kernels::elementwise::transpose` (tiled, on rayon's threads) for f32 tensors of the
/// CPU backend without autodiff, a reshape of the transposed view otherwise (which copies on
/// every backend). burn-flex's own copy runs on one thread.
///
/// # Shapes
/// `[batch, rows, cols]` -> `[batch, cols, rows]`.
pub(crate) fn transposed_copy(x: Tensor<3>) -> Tensor<3> {
    let [batch, rows, cols] = x.dims();
    if let Some(values) = read_plain_f32(&x, |values| transpose(values, batch, rows, cols)) {
        return Tensor::from_data(TensorData::new(values, [batch, cols, rows]), &x.device());
    }
    x.swap_dims(1, 2)
        .reshape([batch * cols, rows])
        .reshape([batch, cols, rows])
}
