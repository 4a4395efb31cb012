//! f32 matrix products of the CPU backend on all of rayon's threads, in inference and in
//! training.
//!
//! burn-flex runs its gemm on one thread in this workspace: the threaded path is behind its
//! `rayon` feature, which burn's `default-features = false` drops, and turning it on slows the
//! two-replica training (see the README). So on two cores every product of the CLIP tower, the
//! LLM and SAM used one core, while PyTorch uses both. This module is a burn backend extension
//! (`#[backend_extension]`): on flex, an f32 product over [`THREADED_MACS`] is cut into one
//! block per thread (along a batch axis, or by rows of the left operand or columns of the right
//! one), each block multiplied on its own thread by the gemm burn-flex calls (same crate,
//! version and arguments, reading the operands' strided views in place) straight into its part
//! of one output. Under autodiff it is one recorded op whose backward (`g @ rhs^T`,
//! `lhs^T @ g`, summed over broadcast axes) uses the same product. Each output value is computed
//! as in one product, so the values are burn's bit for bit (tests below). Linear layers in
//! inference also add their bias inside each block (`matmul_add_bias_inference`), sparing a
//! single-threaded pass over the output. Other dtypes and the GPU backends keep burn's
//! `matmul`. (Session 13 cut blocks through burn's `slice` / `matmul` / `cat`: the join copied
//! every output once more. Calling gemm with its own rayon threading measured the same as the
//! blocks on CLIP, LLaMA and SAM.)
//!
//! Data-parallel training runs one replica per core on its own thread; there the products stay
//! on the calling thread ([`on_calling_thread`]), which is what the replicas were measured with.
//!
//! What burn would need upstream for this to go: burn-flex's `rayon` feature choosing per call
//! (large products threaded, small ones not), so that it can be on for one process.

use std::cell::Cell;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, broadcast_shape};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Tensor, TensorData};
use rayon::prelude::*;

use crate::cpu_inference::is_cpu;

/// Multiply-adds from which a product is shared between threads (burn-flex's own threshold
/// for its threaded gemm, 192^3): below it the split costs more than it saves.
const THREADED_MACS: usize = 192 * 192 * 192;

thread_local! {
    /// Set while [`on_calling_thread`] runs.
    static CALLING_THREAD_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` with every product of this module on the calling thread, as burn-flex computes
/// them: for callers that already keep each core busy with a thread of their own (one training
/// replica per core).
pub fn on_calling_thread<R>(work: impl FnOnce() -> R) -> R {
    /// Restores the flag when `work` returns or unwinds (a rayon worker outlives a panicking
    /// task, and must not stay single-threaded).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CALLING_THREAD_ONLY.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(CALLING_THREAD_ONLY.with(|flag| flag.replace(true)));
    work()
}

/// The extension: a matrix product over the last two axes.
#[backend_extension(Flex, Autodiff)]
pub trait ThreadedMatmulBackend: Backend {
    /// `lhs @ rhs` (`[..., m, k] x [..., k, n]`, batch axes broadcast as burn's `matmul`).
    fn threaded_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl ThreadedMatmulBackend for Flex {
    fn threaded_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        split_product(&lhs, &rhs, None).unwrap_or_else(|| Flex::float_matmul(lhs, rhs))
    }
}

/// `lhs @ rhs`, plus `bias` (`[n]`) on every row when given, cut into one block per rayon
/// thread (see [`plan`]), each block multiplied by gemm as burn-flex calls it and written into
/// one output, its bias added while the block is in cache (after the product's rounding, as
/// `product + bias` computes it). `None` where the product stays in one call: not f32, under
/// [`THREADED_MACS`], one thread, or inside [`on_calling_thread`].
fn split_product(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    let threads = rayon::current_num_threads();
    if lhs.dtype() != DType::F32 || rhs.dtype() != DType::F32 || CALLING_THREAD_ONLY.with(Cell::get)
    {
        return None;
    }
    let split = plan(lhs.layout().shape(), rhs.layout().shape(), threads)?;
    let product = Product::new(lhs, rhs);
    let bias = bias.map(|bias| {
        let bias = bias.to_contiguous();
        let values = bias
            .as_slice::<f32>()
            .expect("a contiguous f32 bias")
            .to_vec();
        assert_eq!(values.len(), product.n, "bias length");
        values
    });
    let len = match split {
        Split::Batch(_, len) | Split::Rows(len) | Split::Columns(len) => len,
    };
    // Blocks of whole 16-wide micro-kernel tiles where the length allows.
    let size = match len.div_ceil(threads) {
        size if size > 16 => size.next_multiple_of(16),
        size => size,
    };
    // The output is written whole by the blocks (gemm without reading it), so it starts
    // uninitialised: `FlexTensor::empty` would zero a byte vector and copy it into an aligned
    // buffer (a `memset` and a `memmove` per product, 5-6% of SAM's decoder).
    let out_shape = product.out_shape();
    let mut out: Vec<f32> = Vec::with_capacity(out_shape.num_elements());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let (lhs_data, rhs_data) = (lhs.storage::<f32>(), rhs.storage::<f32>());
    (0..len.div_ceil(size)).into_par_iter().for_each(|i| {
        let range = i * size..len.min((i + 1) * size);
        let (batches, rows, columns) = match split {
            Split::Batch(axis, _) => (
                product.batches_where(axis, &range),
                0..product.m,
                0..product.n,
            ),
            Split::Rows(_) => (product.all_batches(), range, 0..product.n),
            Split::Columns(_) => (product.all_batches(), 0..product.m, range),
        };
        for batch in batches {
            // SAFETY: the blocks write disjoint parts of `out` (other batches, rows or
            // columns), the operands' offsets stay inside their storage (their layouts'), and
            // `out` outlives the parallel loop.
            unsafe {
                product.multiply(
                    batch,
                    &rows,
                    &columns,
                    lhs_data,
                    rhs_data,
                    bias.as_deref(),
                    &out_ptr,
                )
            };
        }
    });
    // SAFETY: the blocks cover every (batch, row, column) of the output once, and gemm with
    // `read_dst = false` wrote each of their elements (k >= 1: under the threshold otherwise).
    unsafe { out.set_len(out_shape.num_elements()) };
    Some(FlexTensor::from_data(TensorData::new(out, out_shape)))
}

/// The output pointer, written by every block at its own offsets.
struct SharedMut(*mut f32);
// SAFETY: the blocks of one product write disjoint elements.
unsafe impl Sync for SharedMut {}

/// `[..., m, k] x [..., k, n]` over the operands' own strides (burn-flex's layouts: views such
/// as transposes and slices are read in place), batch axes broadcast (stride 0), into a
/// contiguous `[..., m, n]`.
struct Product {
    m: usize,
    k: usize,
    n: usize,
    /// The broadcast batch axes.
    batch: Vec<usize>,
    /// Element strides of each operand along the batch axes, 0 where it is broadcast.
    lhs_batch_strides: Vec<isize>,
    rhs_batch_strides: Vec<isize>,
    /// Start offsets and (row, column) strides of each operand.
    lhs_start: isize,
    rhs_start: isize,
    lhs_strides: (isize, isize),
    rhs_strides: (isize, isize),
}

impl Product {
    fn new(lhs: &FlexTensor, rhs: &FlexTensor) -> Self {
        let (l, r) = (lhs.layout(), rhs.layout());
        let rank = l.num_dims();
        let batch: Vec<usize> = (0..rank - 2)
            .map(|d| l.shape()[d].max(r.shape()[d]))
            .collect();
        let batch_strides = |layout: &Layout| -> Vec<isize> {
            (0..rank - 2)
                .map(|d| {
                    if layout.shape()[d] == 1 {
                        0
                    } else {
                        layout.strides()[d]
                    }
                })
                .collect()
        };
        let matrix_strides =
            |layout: &Layout| (layout.strides()[rank - 2], layout.strides()[rank - 1]);
        Self {
            m: l.shape()[rank - 2],
            k: l.shape()[rank - 1],
            n: r.shape()[rank - 1],
            lhs_batch_strides: batch_strides(l),
            rhs_batch_strides: batch_strides(r),
            lhs_start: l.start_offset() as isize,
            rhs_start: r.start_offset() as isize,
            lhs_strides: matrix_strides(l),
            rhs_strides: matrix_strides(r),
            batch,
        }
    }

    fn out_shape(&self) -> Shape {
        Shape::from([self.batch.as_slice(), &[self.m, self.n]].concat())
    }

    fn all_batches(&self) -> Vec<usize> {
        (0..self.batch.iter().product()).collect()
    }

    /// The flat batch indices whose index along batch `axis` is in `range`.
    fn batches_where(&self, axis: usize, range: &std::ops::Range<usize>) -> Vec<usize> {
        let inner: usize = self.batch[axis + 1..].iter().product();
        let outer: usize = self.batch[..axis].iter().product();
        let len = self.batch[axis];
        (0..outer)
            .flat_map(|o| {
                range
                    .clone()
                    .flat_map(move |a| (0..inner).map(move |i| (o * len + a) * inner + i))
            })
            .collect()
    }

    /// Element offset of flat batch `index` in an operand with these batch strides.
    fn batch_offset(&self, mut index: usize, strides: &[isize]) -> isize {
        let mut offset = 0;
        for d in (0..self.batch.len()).rev() {
            offset += (index % self.batch[d]) as isize * strides[d];
            index /= self.batch[d];
        }
        offset
    }

    /// Rows `rows` x columns `columns` of batch `batch` of the product, written into `out`
    /// (contiguous `[..., m, n]`) by gemm on the calling thread, as burn-flex calls it, then
    /// `bias[columns]` added to each of its rows when given.
    ///
    /// # Safety
    /// `lhs` and `rhs` are the storages of the operands `self` was made from, `out` points to
    /// `self.out_shape()` elements, and no other thread touches this block of it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn multiply(
        &self,
        batch: usize,
        rows: &std::ops::Range<usize>,
        columns: &std::ops::Range<usize>,
        lhs: &[f32],
        rhs: &[f32],
        bias: Option<&[f32]>,
        out: &SharedMut,
    ) {
        let (lhs_rs, lhs_cs) = self.lhs_strides;
        let (rhs_rs, rhs_cs) = self.rhs_strides;
        let lhs_offset = self.lhs_start
            + self.batch_offset(batch, &self.lhs_batch_strides)
            + rows.start as isize * lhs_rs;
        let rhs_offset = self.rhs_start
            + self.batch_offset(batch, &self.rhs_batch_strides)
            + columns.start as isize * rhs_cs;
        let out_offset = (batch * self.m + rows.start) * self.n + columns.start;
        // SAFETY: as the caller guarantees; `parallelism: None` keeps gemm on this thread.
        unsafe {
            gemm::gemm(
                rows.len(),
                columns.len(),
                self.k,
                out.0.add(out_offset),
                1,
                self.n as isize,
                false,
                lhs.as_ptr().offset(lhs_offset),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr().offset(rhs_offset),
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        let Some(bias) = bias else { return };
        let bias = &bias[columns.clone()];
        for row in 0..rows.len() {
            // SAFETY: this block's row `row`, inside `out` as the caller guarantees.
            let values = unsafe {
                std::slice::from_raw_parts_mut(out.0.add(out_offset + row * self.n), bias.len())
            };
            for (value, b) in values.iter_mut().zip(bias) {
                *value += b;
            }
        }
    }
}

/// How a product is cut into blocks: along a batch axis (axis, length), by rows of the left
/// operand (m) or by columns of the right one (n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Batch(usize, usize),
    Rows(usize),
    Columns(usize),
}

/// How `[..., m, k] x [..., k, n]` is shared between `threads`; `None` to keep it in one call
/// (one thread, or under [`THREADED_MACS`]). The first batch axis with a block per thread,
/// else the longer of the rows of the left operand and the columns of the right one: a block
/// then packs only its share of the longer operand, and a `[197 x 768] x [768 x 3072]` product
/// (CLIP's MLP) splits into whole micro-kernel tiles rather than 99-row blocks with ragged
/// edges.
fn plan(lhs: &Shape, rhs: &Shape, threads: usize) -> Option<Split> {
    let rank = lhs.num_dims();
    let (m, k, n) = (lhs[rank - 2], lhs[rank - 1], rhs[rank - 1]);
    let batch: Vec<usize> = (0..rank - 2).map(|d| lhs[d].max(rhs[d])).collect();
    if threads < 2 || batch.iter().product::<usize>() * m * n * k < THREADED_MACS {
        return None;
    }
    match batch.iter().position(|&b| b >= threads) {
        Some(axis) => Some(Split::Batch(axis, batch[axis])),
        None if n >= m && n >= 2 * threads => Some(Split::Columns(n)),
        None if m >= 2 * threads => Some(Split::Rows(m)),
        None => None,
    }
}

impl<B: Backend + ThreadedMatmulBackend, C: CheckpointStrategy> ThreadedMatmulBackend
    for Autodiff<B, C>
{
    fn threaded_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The recorded op; its state: the checkpointed operands each gradient needs, and the
        /// operands' shapes when their batch axes were broadcast.
        #[derive(Debug)]
        struct ThreadedMatmul;

        impl<B: Backend + ThreadedMatmulBackend> Backward<B, 2> for ThreadedMatmul {
            type State = (Option<NodeId>, Option<NodeId>, Option<(Shape, Shape)>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let (lhs, rhs, broadcast) = ops.state;
                let lhs =
                    lhs.map(|id| checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(id));
                let rhs =
                    rhs.map(|id| checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(id));
                let (lhs_broadcast, rhs_broadcast) = match &broadcast {
                    Some((l, r)) => (Some(l), Some(r)),
                    None => (None, None),
                };
                binary::<B, _, _>(
                    ops.parents,
                    ops.node,
                    grads,
                    |grad| {
                        let rhs = rhs.expect("kept for the left operand's gradient");
                        let grad = B::threaded_matmul(grad, B::float_transpose(rhs));
                        match lhs_broadcast {
                            Some(shape) => broadcast_shape::<B>(grad, shape),
                            None => grad,
                        }
                    },
                    |grad| {
                        let lhs = lhs.expect("kept for the right operand's gradient");
                        let grad = B::threaded_matmul(B::float_transpose(lhs), grad);
                        match rhs_broadcast {
                            Some(shape) => broadcast_shape::<B>(grad, shape),
                            None => grad,
                        }
                    },
                );
            }
        }

        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        let (lhs_shape, rhs_shape) = (lhs.primitive().shape(), rhs.primitive().shape());
        let rank = lhs_shape.num_dims();
        let broadcast = (0..rank - 2)
            .any(|d| lhs_shape[d] != rhs_shape[d])
            .then_some((lhs_shape, rhs_shape));
        match ThreadedMatmul
            .prepare::<C>([lhs.node(), rhs.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let lhs_state = rhs_tracked.then(|| prep.checkpoint(&lhs));
                let rhs_state = lhs_tracked.then(|| prep.checkpoint(&rhs));
                prep.finish(
                    (lhs_state, rhs_state, broadcast),
                    B::threaded_matmul(lhs.into_primitive(), rhs.into_primitive()),
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(B::threaded_matmul(
                lhs.into_primitive(),
                rhs.into_primitive(),
            )),
        }
    }
}

/// `rows @ weight + bias` for f32 tensors of the CPU backend without autodiff (inference), the
/// product on rayon's threads and the bias added by each thread to its block: the values of
/// `matmul(rows, weight) + bias`, bit for bit, without the separate pass over the output.
/// `None` for other tensors, or where the product stays in one call.
///
/// # Shapes
/// `[m, k] x [k, n] + [n]` -> `[m, n]`.
pub(crate) fn matmul_add_bias_inference(
    rows: &Tensor<2>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
) -> Option<Tensor<2>> {
    let flex = |t: Tensor<2>| t.try_into_primitive::<Flex>().ok();
    let (rows, weight) = (flex(rows.clone())?, flex(weight.clone())?);
    let bias = bias.clone().try_into_primitive::<Flex>().ok()?;
    if bias.dtype() != DType::F32 || rows.layout().shape()[1] != weight.layout().shape()[0] {
        return None;
    }
    split_product(&rows, &weight, Some(&bias)).map(Tensor::from_primitive::<Flex>)
}

/// `lhs.matmul(rhs)`: through the extension (threaded) for f32 tensors of the CPU backend,
/// with or without autodiff (the default checkpointing strategy); burn's `matmul` otherwise.
/// The same values as burn's, bit for bit.
///
/// # Shapes
/// `[..., m, k] x [..., k, n]` -> `[..., m, n]`, batch axes broadcast.
///
/// # Panics
/// As burn's `matmul`: if the inner sizes or the batch axes do not match.
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    if lhs.dtype() != DType::F32 || rhs.dtype() != DType::F32 || !is_cpu(&lhs) || !is_cpu(&rhs) {
        return lhs.matmul(rhs);
    }
    let [l, r] = [lhs.dims(), rhs.dims()];
    assert_eq!(l[D - 1], r[D - 2], "matmul: inner sizes {l:?} x {r:?}");
    for d in 0..D - 2 {
        assert!(
            l[d] == r[d] || l[d] == 1 || r[d] == 1,
            "matmul: batch axes {l:?} x {r:?}"
        );
    }
    Tensor::from_dispatch(<Dispatch as ThreadedMatmulBackend>::threaded_matmul(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    fn in_pool<R: Send>(threads: usize, work: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(work)
    }

    /// Products split by a batch axis, by rows, by columns (a transposed operand included) and
    /// with a broadcast batch axis give burn's single-thread result bit for bit.
    #[test]
    fn threaded_products_equal_burn_bit_for_bit() {
        let device = Device::flex();
        device.seed(5);
        let normal =
            |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let cases = [
            // Batch axis 1 (heads) split.
            (
                normal([1, 6, 100, 64]),
                normal([1, 6, 64, 200]),
                Split::Batch(1, 6),
            ),
            // Rows split (m > n).
            (
                normal([1, 1, 300, 200]),
                normal([1, 1, 200, 120]),
                Split::Rows(300),
            ),
            // Columns split (n > m), the right operand seen transposed (as in backward passes).
            (
                normal([1, 1, 120, 200]),
                normal([1, 1, 333, 200]).swap_dims(2, 3),
                Split::Columns(333),
            ),
            // Two batch axes, the second split (its outer axis loops inside each block with
            // 3 threads; with 2 the first is split).
            (
                normal([2, 4, 100, 64]),
                normal([2, 4, 64, 200]),
                Split::Batch(0, 2),
            ),
            // A `[1, 1, k, n]` weight broadcast over 3 batches of rows, split by batch.
            (
                normal([1, 3, 150, 160]),
                normal([1, 1, 160, 170]),
                Split::Batch(1, 3),
            ),
        ];
        for (i, (lhs, rhs, split)) in cases.into_iter().enumerate() {
            // The threaded route is the one under test, not burn's fallback.
            assert_eq!(plan(&lhs.shape(), &rhs.shape(), 2), Some(split), "case {i}");
            let want = lhs.clone().matmul(rhs.clone());
            for threads in [2, 3] {
                let got = in_pool(threads, || matmul(lhs.clone(), rhs.clone()));
                assert_eq!(got.dims(), want.dims(), "case {i}");
                assert_eq!(
                    max_diff(got, want.clone()),
                    0.0,
                    "case {i}, {threads} threads"
                );
            }
        }
        assert_eq!(
            plan(
                &Shape::new([2, 4, 100, 64]),
                &Shape::new([2, 4, 64, 200]),
                3
            ),
            Some(Split::Batch(1, 4))
        );
        // On the calling thread (one training replica per core): burn's product itself.
        let (lhs, rhs) = (normal([1, 1, 300, 200]), normal([1, 1, 200, 120]));
        let got = in_pool(2, || on_calling_thread(|| matmul(lhs.clone(), rhs.clone())));
        assert_eq!(max_diff(got, lhs.matmul(rhs)), 0.0);
    }

    /// The bias added by each thread to its block: `lhs @ w + b` bit for bit, split by rows and
    /// by columns (a transposed weight too); `None` below the threshold or under autodiff.
    #[test]
    fn bias_added_per_block_equals_burn_bit_for_bit() {
        let device = Device::flex();
        device.seed(11);
        let normal =
            |shape: [usize; 2]| Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([300], Distribution::Normal(0.0, 1.0), &device);
        for (lhs, weight) in [
            (normal([400, 200]), normal([200, 300])),
            (normal([120, 200]), normal([300, 200]).transpose()),
        ] {
            let want = lhs.clone().matmul(weight.clone()) + bias.clone().unsqueeze_dim(0);
            let got = in_pool(2, || matmul_add_bias_inference(&lhs, &weight, &bias))
                .expect("over the threshold");
            assert_eq!(max_diff(got, want), 0.0);
        }
        let small = normal([8, 200]);
        assert!(matmul_add_bias_inference(&small, &normal([200, 300]), &bias).is_none());
        let tracked = Device::flex().autodiff();
        let on = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), &tracked);
        let bias_tracked = Tensor::<1>::from_data(bias.into_data(), &tracked);
        let (lhs, weight) = (on(normal([400, 200])), on(normal([200, 300])));
        assert!(
            in_pool(2, || matmul_add_bias_inference(
                &lhs,
                &weight,
                &bias_tracked
            ))
            .is_none()
        );
    }

    /// Under autodiff: burn's values and both operands' gradients, also when the right operand
    /// is broadcast over the batch (its gradient is then summed over it).
    #[test]
    fn gradients_equal_burn_with_and_without_broadcast() {
        let device = Device::flex().autodiff();
        device.seed(9);
        for rhs_batch in [2, 1] {
            // Every product of the forward and backward passes is over the threshold.
            let lhs = Tensor::<3>::random([2, 160, 96], Distribution::Normal(0.0, 1.0), &device);
            let rhs = Tensor::<3>::random(
                [rhs_batch, 96, 240],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            const { assert!(2 * 160 * 96 * 240 >= THREADED_MACS) };
            let weights =
                Tensor::<3>::random([2, 160, 240], Distribution::Normal(0.0, 1.0), &device);
            let run = |threaded: bool| {
                let (l, r) = (
                    lhs.clone().detach().require_grad(),
                    rhs.clone().detach().require_grad(),
                );
                assert!(l.clone().try_into_primitive::<Autodiff<Flex>>().is_ok());
                let y = in_pool(2, || {
                    if threaded {
                        matmul(l.clone(), r.clone())
                    } else {
                        l.clone().matmul(r.clone())
                    }
                });
                let grads = (y.clone() * weights.clone()).sum().backward();
                (
                    y.inner(),
                    l.grad(&grads).expect("lhs gradient"),
                    r.grad(&grads).expect("rhs gradient"),
                )
            };
            let (y, gl, gr) = run(true);
            let (y_burn, gl_burn, gr_burn) = run(false);
            assert_eq!(gr.dims(), [rhs_batch, 96, 240]);
            assert_eq!(max_diff(y, y_burn), 0.0, "rhs batch {rhs_batch}");
            let close = |a: Tensor<3>, b: Tensor<3>| {
                let scale = b.clone().abs().max().into_scalar::<f32>();
                max_diff(a, b) <= 1e-6 * scale
            };
            assert!(close(gl, gl_burn), "lhs gradient, rhs batch {rhs_batch}");
            assert!(close(gr, gr_burn), "rhs gradient, rhs batch {rhs_batch}");
        }
    }
}
