//! How the process heap treats large freed buffers during CPU training.
//!
//! A training step on the CPU allocates and frees the same large buffers every step
//! (activations, gradients: 131 MB for the `small` LLaMA's `lm_head` weight gradient). glibc's
//! `malloc` serves blocks above its mmap threshold (128 KiB, rising to at most 32 MiB) with a
//! fresh `mmap` and unmaps them on `free`, and returns free memory at the top of the heap to
//! the system above 128 KiB: so every step faults in and zeroes those pages again. In the
//! `small` LLaMA's forward + backward that was 2.27 million page faults per benchmark run and
//! 20-25% of the time (`perf`: `exc_page_fault`, `clear_page_erms`). [`reuse_freed_buffers`]
//! keeps those pages in the heap for the next step (0.33 million faults, the same run 20-25%
//! faster). Inference is unaffected (its buffers are smaller and fewer), so only training
//! turns it on.

/// Free memory at the top of the heap that the process keeps rather than returns to the
/// system: 1 GiB bounds what an idle process holds beyond its live data.
pub const KEPT_FREE_BYTES: i32 = 1 << 30;

/// Large blocks come from the heap (no per-block `mmap`), and up to [`KEPT_FREE_BYTES`] of free
/// memory at its top is kept for reuse (glibc's `M_MMAP_MAX = 0`, `M_TRIM_THRESHOLD`). For
/// training processes: it leaves the peak memory as it was (a freed block is reused by the
/// next allocation that fits) and makes the steady state fault-free. Returns whether the
/// settings were applied: `false` on a C library other than glibc, where it does nothing.
/// Process-wide; call it once, early, from a binary.
pub fn reuse_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; both values are in range.
        let applied = unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, KEPT_FREE_BYTES) == 1
        };
        tracing::debug!(applied, "heap: large freed buffers kept for reuse");
        applied
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn applies_on_glibc() {
        assert!(super::reuse_freed_buffers());
        // Still serves a block above glibc's largest mmap threshold (32 MiB), from the heap.
        let block = vec![1u8; 64 << 20];
        assert_eq!(
            block.iter().map(|&b| usize::from(b)).sum::<usize>(),
            64 << 20
        );
    }
}
