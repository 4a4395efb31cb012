//! Data parallelism across processes: the collective the training loop needs, and the
//! host-staged gradient all-reduce built on it.
//!
//! burn 0.22 has no multi-process collective (see the README, "Beyond one machine"), so the loop
//! talks to an outside engine through [`Collective`]: element-wise sums (and min/max) of host
//! buffers, the same result on every rank. [`SingleProcess`] is the one-rank group of a plain
//! run; with the `mpi` feature, [`mpi::MpiCollective`] is `MPI_COMM_WORLD` (rsmpi over the
//! system's MPI, launched by `mpirun` or Slurm's `srun`).
//!
//! Every rank holds a full replica of the model and of the optimiser state. A step's samples
//! are split between the ranks (each takes its slice of every micro-batch), every rank computes
//! the gradient of its slice normalised by the *whole* step's counts (themselves summed over
//! the ranks first), and the gradients are summed: exactly the objective of one process, up to
//! float summation order. The sum is host-staged: each trainable parameter's gradient is copied
//! to one `f32` host buffer, summed with `MPI_Allreduce`, and copied back to the first device.
//! The same sum on every rank keeps the replicas identical, which [`check_replicas`] verifies
//! at start and at every checkpoint.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor, TensorData};

/// A reduction of [`Collective::reduce_f64`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise minimum.
    Min,
    /// Element-wise maximum.
    Max,
}

/// A failed collective operation (a rank that died, a transport error).
#[derive(Debug, thiserror::Error)]
#[error("{operation} over {ranks} ranks failed on rank {rank}: {message}")]
pub struct CollectiveError {
    /// What was attempted (`MPI_Allreduce of 1024 floats`).
    pub operation: String,
    /// This process's rank.
    pub rank: usize,
    /// Ranks of the group.
    pub ranks: usize,
    /// The engine's description of the error.
    pub message: String,
}

/// A group of processes that train one model together (one rank per process).
///
/// Every rank must call the same operations in the same order with buffers of the same length;
/// every rank receives the same result.
pub trait Collective: Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Processes in the group.
    fn size(&self) -> usize;
    /// Element-wise sum of `values` over the ranks, in place.
    ///
    /// # Errors
    /// [`CollectiveError`] when the engine reports a failure.
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;
    /// Element-wise `op` of `values` over the ranks, in place.
    ///
    /// # Errors
    /// [`CollectiveError`] when the engine reports a failure.
    fn reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CollectiveError>;
    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// [`CollectiveError`] when the engine reports a failure.
    fn barrier(&self) -> Result<(), CollectiveError> {
        self.reduce_f64(&mut [0.0], ReduceOp::Sum)
    }
}

/// The group of one: a plain single-process run.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _values: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn reduce_f64(&self, _values: &mut [f64], _op: ReduceOp) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// The element range `[start, end)` of the samples of a micro-batch of `batch` that rank
/// `rank` of `ranks` takes (`batch` divisible by `ranks`).
pub fn rank_slice(batch: usize, rank: usize, ranks: usize) -> std::ops::Range<usize> {
    let per_rank = batch / ranks.max(1);
    rank * per_rank..(rank + 1) * per_rank
}

/// Every trainable parameter's id, shape and dtype, in visiting order (the same on every
/// rank: the replicas are built alike).
struct TrainableLayout {
    entries: Vec<(burn::module::ParamId, Vec<usize>)>,
}

impl ModuleVisitor for TrainableLayout {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            self.entries.push((param.id, param.shape().to_vec()));
        }
    }
}

/// Copies every trainable parameter's gradient into `buffer` (zeros when absent) after a
/// presence flag.
struct Stage<'a> {
    grads: &'a mut GradientsParams,
    buffer: Vec<f32>,
    dtypes: Vec<Option<DType>>,
}

impl ModuleVisitor for Stage<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let elements = param.shape().num_elements();
        match self.grads.remove::<D>(param.id) {
            Some(grad) => {
                self.dtypes.push(Some(grad.dtype()));
                self.buffer.push(1.0);
                let data = grad.into_data_as::<f32>();
                let values = data
                    .as_slice::<f32>()
                    .expect("into_data_as::<f32> yields f32 data");
                self.buffer.extend_from_slice(values);
            }
            None => {
                self.dtypes.push(None);
                self.buffer.push(0.0);
                self.buffer.extend(std::iter::repeat_n(0.0, elements));
            }
        }
    }
}

/// Copies the summed buffer back into gradients on `device`: a parameter no rank had a
/// gradient for stays without one (so AdamW treats it exactly as a single process would).
struct Unstage<'a> {
    grads: &'a mut GradientsParams,
    buffer: &'a [f32],
    offset: usize,
    dtypes: std::vec::IntoIter<Option<DType>>,
    fallback: DType,
    device: &'a Device,
}

impl ModuleVisitor for Unstage<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let shape = param.shape();
        let elements = shape.num_elements();
        let present = self.buffer[self.offset] > 0.0;
        let values = &self.buffer[self.offset + 1..self.offset + 1 + elements];
        self.offset += 1 + elements;
        let dtype = self.dtypes.next().flatten().unwrap_or(self.fallback);
        if present {
            let data = TensorData::new(values.to_vec(), shape);
            let grad = Tensor::<D>::from_data(data, self.device);
            let grad = if dtype == DType::F32 {
                grad
            } else {
                grad.cast(dtype)
            };
            self.grads.register(param.id, grad);
        }
    }
}

/// Elements of the host buffer [`all_reduce_gradients`] sends for `model` (one flag per
/// trainable parameter, then its values).
pub fn gradient_buffer_len<M: Module>(model: &M) -> usize {
    let mut layout = TrainableLayout {
        entries: Vec::new(),
    };
    model.visit(&mut layout);
    layout
        .entries
        .iter()
        .map(|(_, shape)| 1 + shape.iter().product::<usize>())
        .sum()
}

/// Sums `grads` (this rank's gradients of `model`'s trainable parameters) over the ranks of
/// `comm`, host-staged: device to host, `all-reduce`, host to `device`. Returns the seconds
/// the whole exchange took.
///
/// # Errors
/// [`CollectiveError`] from the engine.
pub fn all_reduce_gradients<M: Module>(
    comm: &dyn Collective,
    model: &M,
    grads: &mut GradientsParams,
    device: &Device,
) -> Result<f64, CollectiveError> {
    let started = Instant::now();
    let mut stage = Stage {
        grads,
        buffer: Vec::with_capacity(gradient_buffer_len(model)),
        dtypes: Vec::new(),
    };
    model.visit(&mut stage);
    let Stage {
        grads,
        mut buffer,
        dtypes,
    } = stage;
    comm.sum_f32(&mut buffer)?;
    let mut unstage = Unstage {
        grads,
        buffer: &buffer,
        offset: 0,
        dtypes: dtypes.into_iter(),
        fallback: DType::F32,
        device,
    };
    model.visit(&mut unstage);
    Ok(started.elapsed().as_secs_f64())
}

/// Sum and sum of squares of `model`'s trainable parameters: equal on every rank while the
/// replicas are identical.
struct Fingerprint {
    values: [f64; 2],
}

impl ModuleVisitor for Fingerprint {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            let value = param.val().cast(DType::F32);
            self.values[0] += value.clone().sum().into_scalar::<f64>();
            self.values[1] += value.clone().mul(value).sum().into_scalar::<f64>();
        }
    }
}

/// What [`check_replicas`] found different between ranks.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaMismatch {
    /// The ranks are at different steps (a resume that did not see the same checkpoint).
    Step { min: u64, max: u64 },
    /// The trainable weights differ.
    Weights { min: f64, max: f64 },
}

impl std::fmt::Display for ReplicaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step { min, max } => write!(
                f,
                "the ranks are at different steps ({min} to {max}): every rank must see the \
                 same out_dir (a shared filesystem) to resume"
            ),
            Self::Weights { min, max } => write!(
                f,
                "the ranks' trainable weights differ (checksums {min} to {max}): every rank \
                 must start from the same model and data"
            ),
        }
    }
}

/// Checks that every rank is at `step` with the same trainable weights.
///
/// # Errors
/// [`CollectiveError`] from the engine; `Ok(Some(..))` names a mismatch.
pub fn check_replicas<M: Module>(
    comm: &dyn Collective,
    model: &M,
    step: u64,
) -> Result<Option<ReplicaMismatch>, CollectiveError> {
    if comm.size() == 1 {
        return Ok(None);
    }
    let mut fingerprint = Fingerprint { values: [0.0; 2] };
    model.visit(&mut fingerprint);
    let local = [step as f64, fingerprint.values[0], fingerprint.values[1]];
    let (mut min, mut max) = (local, local);
    comm.reduce_f64(&mut min, ReduceOp::Min)?;
    comm.reduce_f64(&mut max, ReduceOp::Max)?;
    if min[0] != max[0] {
        return Ok(Some(ReplicaMismatch::Step {
            min: min[0] as u64,
            max: max[0] as u64,
        }));
    }
    for i in 1..3 {
        if min[i].to_bits() != max[i].to_bits() {
            return Ok(Some(ReplicaMismatch::Weights {
                min: min[i],
                max: max[i],
            }));
        }
    }
    Ok(None)
}

/// The number of processes an MPI launcher started (`mpirun`/`mpiexec` of Open MPI or MPICH,
/// Slurm's `srun` with PMI/PMIx), from the variables they set; `None` outside one.
pub fn launcher_world_size() -> Option<usize> {
    let var = |name: &str| std::env::var(name).ok()?.trim().parse().ok();
    var("OMPI_COMM_WORLD_SIZE")
        .or_else(|| var("PMI_SIZE"))
        // PMIx (`srun --mpi=pmix`) sets no size variable; Slurm does.
        .or_else(|| var("PMIX_RANK").and_then(|_: usize| var("SLURM_STEP_NUM_TASKS")))
}

#[cfg(feature = "mpi")]
pub mod mpi;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn rank_slices_tile_the_batch() {
        assert_eq!(rank_slice(8, 0, 2), 0..4);
        assert_eq!(rank_slice(8, 1, 2), 4..8);
        assert_eq!(rank_slice(6, 2, 3), 4..6);
        assert_eq!(rank_slice(5, 0, 1), 0..5);
    }

    #[test]
    fn staging_round_trips_gradients_and_keeps_absent_ones_absent() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::ones([4, 3], &device);
        let loss = layer.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let weight_before = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        // Drop the bias gradient: it must stay absent after the exchange.
        let bias_id = layer.bias.as_ref().unwrap().id;
        grads.remove::<1>(bias_id);
        let inner = device.clone().inner();
        all_reduce_gradients(&SingleProcess, &layer, &mut grads, &inner).unwrap();
        let weight_after = grads
            .get::<2>(layer.weight.id)
            .unwrap()
            .into_data()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(weight_before, weight_after);
        assert!(grads.get::<1>(bias_id).is_none());
        assert_eq!(gradient_buffer_len(&layer), 1 + 6 + 1 + 2);
        assert_eq!(check_replicas(&SingleProcess, &layer, 3).unwrap(), None);
    }
}
