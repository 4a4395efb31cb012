//! f32 matrix products of the CPU backend on all of rayon's threads, in inference and in
//! training.
//!
//! burn-flex runs its gemm on one thread in this workspace: the threaded path is behind its
//! `rayon` feature, which burn's `default-features = false` drops, and turning it on slows the
//! two-replica training (see the README). So on two cores every product of the CLIP tower, the
//! LLM and SAM used one core, while PyTorch uses both. This module is a burn backend extension
//! (`#[backend_extension]`): on flex, an f32 product over [`THREADED_MACS`] is cut into one
//! block per thread (along a batch axis, or by rows of the left operand or columns of the right
//! one), each block multiplied by burn-flex's own gemm on its own thread, and the blocks
//! joined. Under autodiff it is one recorded op whose backward (`g @ rhs^T`, `lhs^T @ g`,
//! summed over broadcast axes) uses the same product. Each output value is computed as in one
//! product, so the values are burn's bit for bit (tests below). Other dtypes and the GPU
//! backends keep burn's `matmul`. (Calling gemm directly with its own rayon threading, which
//! needs raw pointers, measured the same on CLIP, LLaMA and SAM in alternating runs.)
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
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape, Slice, Tensor};
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
        let (lhs_shape, rhs_shape) = (lhs.shape(), rhs.shape());
        let threads = rayon::current_num_threads();
        let split = match plan(&lhs_shape, &rhs_shape, threads) {
            Some(split) if lhs.dtype() == DType::F32 && !CALLING_THREAD_ONLY.with(Cell::get) => {
                split
            }
            _ => return Flex::float_matmul(lhs, rhs),
        };
        let rank = lhs_shape.num_dims();
        let (axis, len) = match split {
            Split::Batch(axis, len) => (axis, len),
            Split::Rows(len) => (rank - 2, len),
            Split::Columns(len) => (rank - 1, len),
        };
        // Blocks of whole 16-wide micro-kernel tiles where the length allows.
        let size = match len.div_ceil(threads) {
            size if size > 16 => size.next_multiple_of(16),
            size => size,
        };
        let blocks: Vec<FloatTensor<Flex>> = (0..len.div_ceil(size))
            .into_par_iter()
            .map(|i| {
                let range = i * size..len.min((i + 1) * size);
                let cut = |t: &FloatTensor<Flex>| {
                    Flex::float_slice(t.clone(), &slices(&t.shape(), axis, &range))
                };
                let lhs_block = match split {
                    Split::Columns(_) => lhs.clone(),
                    // A broadcast operand (size 1 on the axis) is shared by every block.
                    Split::Batch(..) if lhs_shape[axis] == 1 => lhs.clone(),
                    _ => cut(&lhs),
                };
                let rhs_block = match split {
                    Split::Rows(_) => rhs.clone(),
                    Split::Batch(..) if rhs_shape[axis] == 1 => rhs.clone(),
                    _ => cut(&rhs),
                };
                Flex::float_matmul(lhs_block, rhs_block)
            })
            .collect();
        Flex::float_cat(blocks, axis)
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

/// Whole axes of `shape` but `axis`, which is cut to `range`.
fn slices(shape: &Shape, axis: usize, range: &std::ops::Range<usize>) -> Vec<Slice> {
    (0..shape.num_dims())
        .map(|d| {
            let (start, end) = if d == axis {
                (range.start, range.end)
            } else {
                (0, shape[d])
            };
            Slice::new(start as isize, Some(end as isize), 1)
        })
        .collect()
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
        // On the calling thread (one training replica per core): burn's product itself.
        let (lhs, rhs) = (normal([1, 1, 300, 200]), normal([1, 1, 200, 120]));
        let got = in_pool(2, || on_calling_thread(|| matmul(lhs.clone(), rhs.clone())));
        assert_eq!(max_diff(got, lhs.matmul(rhs)), 0.0);
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
