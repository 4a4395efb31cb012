//! Times the host-side `MPI_Allreduce` (sum of `f32`) the training loop uses, for a few buffer
//! sizes, after a barrier (so the time is the exchange, not waiting for a slower rank):
//!
//! ```text
//! cargo build --release -p legion-train --features mpi --example allreduce_bench
//! mpirun -np 2 target/release/examples/allreduce_bench [FLOATS...]
//! ```
//! Prints, on rank 0, the median seconds of 10 repetitions per size and the implied bus
//! bandwidth (a ring all-reduce moves `2 (N-1)/N` times the buffer through every rank).

use std::time::Instant;

use legion_train::distributed::Collective;
use legion_train::distributed::mpi::MpiCollective;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let comm = MpiCollective::init()?;
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![1 << 10, 1 << 18, 3_500_000, 1 << 24, 1 << 26]
    } else {
        sizes
    };
    let ranks = comm.size() as f64;
    for floats in sizes {
        let mut buffer = vec![1.0f32; floats];
        comm.sum_f32(&mut buffer)?; // warm-up: connections, pinned pages
        let mut times = Vec::new();
        for _ in 0..10 {
            buffer.fill(1.0);
            comm.barrier()?;
            let started = Instant::now();
            comm.sum_f32(&mut buffer)?;
            times.push(started.elapsed().as_secs_f64());
        }
        assert!(buffer.iter().all(|&v| v == ranks as f32), "wrong sum");
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let bytes = floats as f64 * 4.0;
        if comm.rank() == 0 {
            println!(
                "{} ranks, {floats} floats ({:.1} MB): median {:.3} ms, bus bandwidth {:.2} GB/s",
                comm.size(),
                bytes / 1e6,
                median * 1e3,
                2.0 * (ranks - 1.0) / ranks * bytes / median / 1e9
            );
        }
    }
    Ok(())
}
