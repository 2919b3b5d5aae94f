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
//! 5. A failure names its class (crash, correctness, liveness: exit codes 10, 11, 12), the
//!    check that fired, and the replay line.
//!
//! The checks, by the name a failure prints (issue 5's invariants in brackets):
//! - `acked-replicated`, `acked-local`: a protocol-C write completed upward is on both disks
//!   (if it was replicated over one connection) [acked writes on both disks or marked].
//! - `out-of-sync-marked`: a block that differs between the disks is marked out of sync by a
//!   resyncing node itself, otherwise by at least one node [... or marked out of sync].
//! - `primary-data`, `read`: the Primary's disk and every read hold what was promised
//!   (after crashes: anything written since the last completed flush, torn at sector level).
//! - `resync-identical`, `in-sync-identical`, `in-sync`: when a resync ends and whenever the pair
//!   is Connected UpToDate/UpToDate, the data areas are byte-identical and hold the promised
//!   data [identical after resync].
//! - `uptodate-from-older`, `promote-from-older`, `sync-direction`: no node becomes UpToDate or
//!   Primary from older data while connected, and both sides agree on the sync direction
//!   [never UpToDate/Primary from older data].
//! - `split-brain-detected`: if both nodes changed their current UUID since they last agreed,
//!   a handshake must report a split brain [never silently merged].
//! - `meta-data`, `crashed-primary-flag`, `activity-log`: after a crash the meta-data decodes,
//!   the engine accepts it, a crashed Primary's flags say so, and apply-al covers every block
//!   the crash lost or tore [meta-data after a crash leads to an accepted state].
//! - liveness: `converge`, `stuck`, `steps`; crash: `panic`, `data-io`, `meta-io`, `complete`.
//!
//! ```
//! // Seed 1 is in sim/regressions.txt: it must pass.
//! let stats = udrbd_sim::run_seed(1, None).expect("seed 1 passes");
//! assert!(stats.steps > 0 && stats.restarts >= 2);
//! // The replay line is what CI prints for a failing seed.
//! assert_eq!(udrbd_sim::replay_line(1, None), "cargo run -p udrbd-sim --release -- --seed 1");
//! ```
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
