//! Progress reporting from library code: the library counts, the CLI draws (indicatif).

/// Receives progress of a long operation. Implementations must be cheap and thread-safe:
/// `advance` is called from rayon workers.
pub trait Progress: Sync {
    /// A phase with `total` steps begins.
    fn start(&self, phase: &str, total: u64);
    /// `n` more steps are done.
    fn advance(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}
