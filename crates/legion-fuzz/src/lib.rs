//! Bounded mutation fuzzing on stable Rust, run by `cargo test` (`tests/parsers.rs`).
//!
//! `cargo fuzz` needs a nightly toolchain; this driver needs nothing. Each target is either a
//! byte parser fed mutants of seed inputs ([`fuzz_bytes`]: bit flips, interesting bytes,
//! deletions, insertions, duplications, truncations, splices and dictionary tokens) or a
//! structured generator ([`fuzz_values`]). A target runs until its time budget is spent. A panic
//! in the code under test is caught, the input that caused it is written to a file, and the test
//! fails naming that file and how to replay the run.
//!
//! Budget and replay, from the environment:
//! - `LEGION_FUZZ_SECS`: seconds per target (default 2: the 8 targets of `tests/parsers.rs` then
//!   cost ~8 s of a newcomer's first `cargo test` on 2 cores; `.ci/run` sets 6, ~25 s); a long
//!   run sets e.g. `LEGION_FUZZ_SECS=600`.
//! - `LEGION_FUZZ_SEED`: the generator seed (default 0, so CI runs are repeatable up to how far
//!   the time budget reaches; iteration `i` of a seed is always the same input).
//! - `LEGION_FUZZ_CRASH_DIR`: where crashing inputs go (default: the system temp dir).
//!
//! ```text
//! LEGION_FUZZ_SECS=600 cargo test --workspace --test parsers -- --test-threads 2 --nocapture
//! ```

use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// SplitMix64: a small, fast, seedable generator (quality is ample for mutation choices).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A float that is often a troublemaker: NaN, infinities, huge, tiny, negative zero,
    /// integers and half-integers near `scale`, or uniform in `[-scale, 2 * scale]`.
    pub fn awkward_f64(&mut self, scale: f64) -> f64 {
        let uniform = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        match self.below(12) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 => f64::MAX * if self.one_in(2) { 1.0 } else { -1.0 },
            4 => 1e300 * (uniform - 0.5),
            5 => f64::MIN_POSITIVE * uniform,
            6 => -0.0,
            7 => (uniform * scale).round(),
            8 => (uniform * scale).floor() + 0.5,
            9 => i32::MAX as f64 + uniform * 4.0,
            _ => -scale + 3.0 * scale * uniform,
        }
    }
}

/// How long each target runs and with which seed (see the module docs).
#[derive(Debug, Clone)]
pub struct Budget {
    /// Time per target.
    pub duration: Duration,
    /// Generator seed.
    pub seed: u64,
}

impl Budget {
    /// From `LEGION_FUZZ_SECS` and `LEGION_FUZZ_SEED`.
    ///
    /// # Panics
    /// When either variable is set but not a number.
    pub fn from_env() -> Self {
        let number = |name: &str, default: u64| match std::env::var(name) {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
            Err(_) => default,
        };
        Self {
            duration: Duration::from_secs(number("LEGION_FUZZ_SECS", 2)),
            seed: number("LEGION_FUZZ_SEED", 0),
        }
    }
}

/// What a finished target did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Inputs tried.
    pub iterations: u64,
    /// Inputs the target accepted (the check returned `true`).
    pub accepted: u64,
}

/// Applies 1-4 random mutations to a copy of one of `seeds`, splicing with another seed and
/// inserting `dictionary` tokens (format keywords) now and then.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFF, b'"', b'\\', b'\n'];
    let mut data = rng.pick(seeds).clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 | 1 if len > 0 => {
                let bit = rng.below(len * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                data[at] = *rng.pick(&INTERESTING);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(256));
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            6 => data.truncate(rng.below(len + 1)),
            7 => {
                let other = rng.pick(seeds);
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if !dictionary.is_empty() => {
                let at = rng.below(len + 1);
                let token = rng.pick(dictionary).to_vec();
                if rng.one_in(2) && at < len {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token);
                } else {
                    data.splice(at..at, token);
                }
            }
            _ => {}
        }
    }
    data
}

/// Saves a crashing input and fails with the replay instructions.
fn report_crash(target: &str, budget: &Budget, iteration: u64, input: &[u8]) -> ! {
    let dir = std::env::var_os("LEGION_FUZZ_CRASH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "legion-fuzz-{target}-seed{}-{iteration}.bin",
        budget.seed
    ));
    let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    panic!(
        "fuzz target `{target}` panicked at iteration {iteration} (LEGION_FUZZ_SEED={}); \
         input {}",
        budget.seed,
        match saved {
            Ok(()) => format!("saved to {}", path.display()),
            Err(e) => format!("could not be saved ({e}): {input:?}"),
        }
    )
}

/// Feeds mutants of `seeds` to `check` until the budget is spent; `check` returns whether the
/// input was accepted (for the statistics) and must not panic. The seeds themselves go first.
///
/// # Panics
/// When `check` panics (see [`report_crash`]) or `seeds` is empty.
pub fn fuzz_bytes(
    target: &str,
    budget: &Budget,
    seeds: &[Vec<u8>],
    dictionary: &[&[u8]],
    mut check: impl FnMut(&[u8]) -> bool,
) -> Stats {
    assert!(!seeds.is_empty(), "fuzz target `{target}` has no seeds");
    let mut rng = Rng::new(budget.seed);
    let mut stats = Stats {
        iterations: 0,
        accepted: 0,
    };
    let start = Instant::now();
    while stats.iterations < seeds.len() as u64 || start.elapsed() < budget.duration {
        let input = match seeds.get(stats.iterations as usize) {
            Some(seed) => seed.clone(),
            None => mutate(&mut rng, seeds, dictionary),
        };
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(accepted) => stats.accepted += u64::from(accepted),
            Err(_) => report_crash(target, budget, stats.iterations, &input),
        }
        stats.iterations += 1;
    }
    stats
}

/// Feeds values made by `generate` to `check` until the budget is spent; a panic fails the test
/// with the value's `Debug` form (written to the crash file).
///
/// # Panics
/// When `check` panics.
pub fn fuzz_values<T: Debug>(
    target: &str,
    budget: &Budget,
    mut generate: impl FnMut(&mut Rng) -> T,
    mut check: impl FnMut(&T) -> bool,
) -> Stats {
    let mut rng = Rng::new(budget.seed);
    let mut stats = Stats {
        iterations: 0,
        accepted: 0,
    };
    let start = Instant::now();
    while start.elapsed() < budget.duration {
        let value = generate(&mut rng);
        match catch_unwind(AssertUnwindSafe(|| check(&value))) {
            Ok(accepted) => stats.accepted += u64::from(accepted),
            Err(_) => report_crash(
                target,
                budget,
                stats.iterations,
                format!("{value:?}").as_bytes(),
            ),
        }
        stats.iterations += 1;
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_repeatable_for_a_seed_and_differ_between_seeds() {
        let seeds = vec![b"{\"a\": [1, 2, 3]}".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&mut rng, &seeds, &[b"null"]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(|m| m != &seeds[0]));
    }

    #[test]
    fn a_panicking_target_fails_naming_the_saved_input() {
        let budget = Budget {
            duration: Duration::from_millis(200),
            seed: 3,
        };
        let message = catch_unwind(|| {
            fuzz_bytes("selftest", &budget, &[b"ok".to_vec()], &[], |input| {
                assert!(input == b"ok", "boom");
                true
            })
        })
        .unwrap_err();
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains("fuzz target `selftest` panicked at iteration")
                && text.contains("saved to"),
            "{text}"
        );
    }
}
