//! Runtime selection of AVX2 for the hot pixel loops.
//!
//! The default x86-64 target only guarantees SSE2, where 32-bit integer multiplies and 8-lane
//! vectors are unavailable; the loops of the resampler and the normalisation are written
//! portably and compiled twice, once with AVX2 enabled, and the CPU picks one at run time.

/// Defines `$name`, which runs `$portable` compiled for AVX2 when the CPU has it and for the
/// target's baseline otherwise. The code is the same; only the instructions the compiler may use
/// differ (8-lane integer multiplies instead of SSE2's emulated 4-lane ones), so the results are
/// identical. `$portable` and everything it calls must be `#[inline(always)]` to be compiled
/// inside the AVX2 function.
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* fn $name:ident => $avx2:ident => $portable:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::has_avx2() {
                // SAFETY: the CPU supports AVX2 (checked on the line above), the only
                // requirement for calling a `#[target_feature(enable = "avx2")]` function.
                return unsafe { $avx2($($arg),*) };
            }
            $portable($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) {
            $portable($($arg),*)
        }
    };
}

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
