//! udrbd-sim: a deterministic simulator for the udrbd engine (TigerBeetle VOPR style).
//!
//! What it never does: real I/O, wall-clock time, or unseeded randomness. One `u64` seed decides
//! a whole run (options, faults, workload), so every failure replays with
//! `cargo run -p udrbd-sim --release -- --seed N`.
//!
//! 1. [`options::Options::from_seed`] draws the run's shape (swarm testing) and prints it.
//! 2. [`cluster::Cluster`] builds two nodes (engine + simulated disk with internal meta-data),
//!    the simulated network and the workload.
//! 3. The safety phase runs the workload and faults, checking invariants after every step.
//! 4. The liveness phase heals everything; the pair must reach Connected UpToDate/UpToDate.
pub mod checkers;
pub mod clock;
pub mod cluster;
pub mod disk;
pub mod md;
pub mod mutations;
pub mod net;
pub mod options;
pub mod prng;
pub mod workload;

use checkers::Failure;
use cluster::{Cluster, Stats};
use options::Options;
pub use udrbd_engine::Mutation;

/// Runs one seed. `mutation` switches on a deliberate engine bug (for the mutation check).
pub fn run_seed(seed: u64, mutation: Option<Mutation>) -> Result<Stats, Failure> {
    let options = Options::from_seed(seed);
    let mut cluster = Cluster::new(options, mutation)?;
    cluster.run()
}

/// Runs one seed and returns the failure with the run's recent trace for printing.
pub fn run_seed_traced(
    seed: u64,
    mutation: Option<Mutation>,
    trace_cap: usize,
) -> Result<(Stats, Vec<String>), (Failure, Vec<String>)> {
    let options = Options::from_seed(seed);
    let mut cluster = match Cluster::new(options, mutation) {
        Ok(c) => c,
        Err(f) => return Err((f, Vec::new())),
    };
    cluster.trace_cap = trace_cap;
    match cluster.run() {
        Ok(stats) => Ok((stats, cluster.trace.clone())),
        Err(f) => Err((f, cluster.trace.clone())),
    }
}

/// The replay line printed with every failure.
pub fn replay_line(seed: u64, mutation: Option<Mutation>) -> String {
    match mutation {
        None => format!("cargo run -p udrbd-sim --release -- --seed {seed}"),
        Some(m) => format!("cargo run -p udrbd-sim --release -- --seed {seed} --mutation {m:?}"),
    }
}
