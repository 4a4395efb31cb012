//! The learning-rate schedule of the reference run (DeepSpeed `WarmupDecayLR` with
//! `warmup_type = "linear"`, `warmup_min_lr = 0`): the rate rises linearly from 0 to `peak`
//! over `warmup` steps, then falls linearly to 0 at step `total`.

/// Learning rate of optimiser step `step` (0-based: the first update uses step 0).
pub fn warmup_decay_lr(peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * step as f64 / warmup as f64;
    }
    if total <= warmup {
        return peak;
    }
    let remaining = total.saturating_sub(step) as f64 / (total - warmup) as f64;
    peak * remaining.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        assert_eq!(warmup_decay_lr(1e-4, 0, 100, 2109), 0.0);
        assert!((warmup_decay_lr(1e-4, 50, 100, 2109) - 5e-5).abs() < 1e-12);
        assert!((warmup_decay_lr(1e-4, 100, 100, 2109) - 1e-4).abs() < 1e-12);
        // The reference stops at step 703 of 2109 planned: lr ~0.7e-4.
        let at_703 = warmup_decay_lr(1e-4, 703, 100, 2109);
        assert!((at_703 - 0.69985e-4).abs() < 1e-8, "{at_703}");
        assert_eq!(warmup_decay_lr(1e-4, 5000, 100, 2109), 0.0);
        // No warmup, no decay horizon: constant.
        assert_eq!(warmup_decay_lr(1e-3, 7, 0, 0), 1e-3);
    }
}
