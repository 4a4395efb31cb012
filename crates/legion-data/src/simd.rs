//! Runtime detection of the CPU features the hot pixel loops can use.
//!
//! The default x86-64 target only guarantees SSE2, where 32-bit integer multiplies and 8-lane
//! vectors are unavailable; the resampler and the normalisation keep portable loops and use an
//! AVX2 (and FMA) copy when these functions say the CPU has the features.

/// Whether this CPU runs the AVX2 code paths.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU runs the AVX2 code paths that also use fused multiply-adds.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
