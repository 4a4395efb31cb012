//! [`Collective`] over MPI (`MPI_COMM_WORLD`), through rsmpi: the `mpi` feature.
//!
//! Errors are returned, not fatal: the communicator's error handler is `MPI_ERRORS_RETURN`, and
//! every call's code becomes a [`CollectiveError`] with the library's own message. A rank that
//! dies is still usually noticed by the launcher first (`mpirun` and `srun --kill-on-bad-exit`
//! stop the job when one process dies); a surviving rank whose call fails reports it, and the
//! caller then aborts the job ([`MpiCollective::abort`]) so that no rank waits forever.
//!
//! Only the thread that initialised MPI calls it (MPI_THREAD_FUNNELED): the training loop's
//! thread; the data-parallel worker threads never touch the collective.

use std::ffi::c_int;

use mpi::ffi;
use mpi::traits::Communicator;

use super::{Collective, CollectiveError, ReduceOp};

/// Largest element count of one MPI call (MPI counts are `int`); longer buffers go in parts.
const MAX_COUNT: usize = 1 << 30;

/// `MPI_COMM_WORLD` of an initialised MPI.
pub struct MpiCollective {
    /// Finalises MPI when dropped.
    _universe: mpi::environment::Universe,
    rank: usize,
    size: usize,
}

impl std::fmt::Debug for MpiCollective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiCollective")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl MpiCollective {
    /// Initialises MPI (once per process) and sets `MPI_ERRORS_RETURN` on the world.
    ///
    /// # Errors
    /// [`CollectiveError`] when MPI was already initialised or cannot be.
    pub fn init() -> Result<Self, CollectiveError> {
        let fail = |message: &str| CollectiveError {
            operation: "MPI_Init_thread".into(),
            rank: 0,
            ranks: 0,
            message: message.into(),
        };
        let (universe, _threading) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| {
                fail("MPI is already initialised in this process, or failed to initialise")
            })?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        // SAFETY: MPI is initialised; the world communicator and the predefined handler are
        // valid for the whole session.
        let code = unsafe {
            ffi::MPI_Comm_set_errhandler(ffi::RSMPI_COMM_WORLD, ffi::RSMPI_ERRORS_RETURN)
        };
        let me = Self {
            _universe: universe,
            rank,
            size,
        };
        me.check(code, || "MPI_Comm_set_errhandler".into())?;
        Ok(me)
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): after an error on one rank, so
    /// that the others do not wait for it in the next collective.
    pub fn abort(&self, code: i32) -> ! {
        // SAFETY: MPI is initialised.
        unsafe {
            ffi::MPI_Abort(ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::abort()
    }

    fn check(
        &self,
        code: c_int,
        operation: impl FnOnce() -> String,
    ) -> Result<(), CollectiveError> {
        if code == ffi::MPI_SUCCESS as c_int {
            return Ok(());
        }
        let mut text = vec![0u8; 1024];
        let mut len: c_int = 0;
        // SAFETY: the buffer is longer than MPI_MAX_ERROR_STRING (256 in Open MPI and MPICH).
        let known = unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr().cast(), &mut len) };
        let message = if known == ffi::MPI_SUCCESS as c_int {
            text.truncate(len.clamp(0, 1024) as usize);
            format!("{} (MPI error {code})", String::from_utf8_lossy(&text))
        } else {
            format!("MPI error {code}")
        };
        Err(CollectiveError {
            operation: operation(),
            rank: self.rank,
            ranks: self.size,
            message,
        })
    }

    /// `MPI_Allreduce` of `values` (`datatype` elements of `T`) in parts of at most
    /// [`MAX_COUNT`], through a send copy (rsmpi exposes no `MPI_IN_PLACE`).
    fn all_reduce<T: Copy>(
        &self,
        values: &mut [T],
        datatype: ffi::MPI_Datatype,
        op: ffi::MPI_Op,
        name: &str,
    ) -> Result<(), CollectiveError> {
        for part in values.chunks_mut(MAX_COUNT) {
            let send = part.to_vec();
            // SAFETY: both buffers hold `part.len()` elements of `datatype`; MPI is initialised
            // and called from the thread that initialised it.
            let code = unsafe {
                ffi::MPI_Allreduce(
                    send.as_ptr().cast(),
                    part.as_mut_ptr().cast(),
                    part.len() as c_int,
                    datatype,
                    op,
                    ffi::RSMPI_COMM_WORLD,
                )
            };
            self.check(code, || format!("MPI_Allreduce of {} {name}", part.len()))?;
        }
        Ok(())
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        // SAFETY: reading MPI's predefined handles.
        let (datatype, op) = unsafe { (ffi::RSMPI_FLOAT, ffi::RSMPI_SUM) };
        self.all_reduce(values, datatype, op, "floats")
    }

    fn reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), CollectiveError> {
        // SAFETY: reading MPI's predefined handles.
        let (datatype, op) = unsafe {
            (
                ffi::RSMPI_DOUBLE,
                match op {
                    ReduceOp::Sum => ffi::RSMPI_SUM,
                    ReduceOp::Min => ffi::RSMPI_MIN,
                    ReduceOp::Max => ffi::RSMPI_MAX,
                },
            )
        };
        self.all_reduce(values, datatype, op, "doubles")
    }
}
