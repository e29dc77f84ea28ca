//! The property tests' runner: a fixed seed by default (overridable), printed on failure.

use std::fmt::Debug;
use std::time::Instant;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngSeed, TestCaseResult, TestRunner};

/// The seed used when none is given in the environment.
const DEFAULT_SEED: u64 = 0x0005_7047_5a49_5005;

fn env_u64(names: &[&str]) -> Option<u64> {
    names
        .iter()
        .find_map(|name| std::env::var(name).ok()?.trim().parse().ok())
}

/// Runs `test` on `cases` values of `strategy` with a deterministic RNG.
pub fn run_property<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    let seed = env_u64(&["TOWER_GZIP_PROP_SEED", "PROPTEST_RNG_SEED"]).unwrap_or(DEFAULT_SEED);
    let cases = env_u64(&["PROPTEST_CASES"]).map_or(cases, |n| n as u32);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&strategy, test) {
        panic!(
            "property `{name}` failed with seed {seed} ({cases} cases); reproduce with \
             TOWER_GZIP_PROP_SEED={seed} cargo test --test {} {name}\n{error}",
            env!("CARGO_CRATE_NAME")
        );
    }
    eprintln!(
        "property `{name}`: {cases} cases passed, seed {seed}, {:.1?}",
        started.elapsed()
    );
}
