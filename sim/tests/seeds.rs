//! CI's simulator sweep: many seeds per run, 0 violations. The seeds start at a base derived
//! from the git commit (so every commit explores new runs, and a failure replays with the printed
//! seed); `UDRBD_SIM_SEED_BASE` and `UDRBD_SIM_SEEDS` override base and count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use udrbd_sim::{replay_line, run_seed};

const DEFAULT_SEEDS: u64 = 10_000;

fn seed_base() -> u64 {
    if let Some(b) = std::env::var("UDRBD_SIM_SEED_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return b;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    // No git (a source tarball): a fixed base still runs the same number of seeds.
    commit
        .and_then(|c| u64::from_str_radix(c.get(..12)?, 16).ok())
        .map_or(1 << 40, |v| v << 8)
}

#[test]
fn ci_seed_sweep_has_no_violations() {
    let base = seed_base();
    let count = std::env::var("UDRBD_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(udrbd_sim::cluster::Stats::default());
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let seed = base.wrapping_add(i);
                let result = run_seed(seed, None);
                if let Ok(stats) = &result {
                    totals.lock().expect("no panics while held").add(stats);
                }
                if let Err(f) = result {
                    let line = format!("seed {seed}: {f}\n  replay: {}", replay_line(seed, None));
                    eprintln!("{line}");
                    failures.lock().expect("no panics while held").push(line);
                }
            });
        }
    });
    let failures = failures.into_inner().expect("threads joined");
    eprintln!(
        "totals over passing seeds: {:?}",
        totals.into_inner().expect("threads joined")
    );
    eprintln!(
        "{count} seeds from {base} in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed (add them to sim/regressions.txt):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A seed is a replay: two runs of the same seed produce the same trace, event for event.
#[test]
fn same_seed_replays_identically() {
    for seed in [1u64, 4242, 1_000_003] {
        let a = udrbd_sim::run_seed_traced(seed, None, 1_000_000);
        let b = udrbd_sim::run_seed_traced(seed, None, 1_000_000);
        let trace = |r: Result<
            (udrbd_sim::cluster::Stats, Vec<String>),
            (udrbd_sim::checkers::Failure, Vec<String>),
        >| match r {
            Ok((_, t)) | Err((_, t)) => t,
        };
        let (ta, tb) = (trace(a), trace(b));
        assert!(ta.len() > 50, "seed {seed}: a run leaves a real trace");
        assert_eq!(ta, tb, "seed {seed} did not replay identically");
    }
}
