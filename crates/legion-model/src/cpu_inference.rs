//! What the CPU-backend inference fast paths (`linear`, `fused_attention`, SAM's image-encoder
//! attention) share: recognising a plain CPU tensor, and running independent blocks of rows on
//! rayon's threads (burn-flex's kernels run on one thread in this workspace, see the README).

use burn::backend::Flex;
use burn::tensor::Tensor;
use rayon::prelude::*;

/// Whether `t` is a tensor of the CPU (`flex`) backend without autodiff: the fast paths apply
/// to inference on that backend only.
pub(crate) fn is_plain_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    t.clone().try_into_primitive::<Flex>().is_ok()
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
