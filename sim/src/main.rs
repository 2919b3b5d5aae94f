//! `udrbd-sim --seed N` replays one run (printing its options first); `--seeds A..B` sweeps a
//! range and stops at the first failure. Exit codes: 0 ok, 2 usage, 10 crash, 11 correctness,
//! 12 liveness (see `FailureClass`).

use std::process::ExitCode;
use std::time::Instant as WallClock;

use udrbd_sim::options::Options;
use udrbd_sim::{mutations, replay_line, run_seed_traced, Mutation};

struct Args {
    seeds: std::ops::Range<u64>,
    mutation: Option<Mutation>,
    verbose: bool,
    /// Sweep on after a failure (one line per failure), exit with the first failure's code.
    keep_going: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut seeds = None;
    let mut mutation = None;
    let mut verbose = false;
    let mut keep_going = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => {
                let v = args.next().ok_or("--seed needs a value")?;
                let s = parse_seed(&v)?;
                seeds = Some(s..s + 1);
                verbose = true;
            }
            "--seeds" => {
                let v = args.next().ok_or("--seeds needs A..B")?;
                let (a, b) = v
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds {v}: expected A..B"))?;
                seeds = Some(parse_seed(a)?..parse_seed(b)?);
            }
            "--mutation" => {
                let v = args.next().ok_or("--mutation needs a name")?;
                mutation =
                    Some(mutations::parse(&v).ok_or_else(|| {
                        format!("unknown mutation {v}; known: {:?}", mutations::ALL)
                    })?);
            }
            "-v" | "--verbose" => verbose = true,
            "-k" | "--keep-going" => keep_going = true,
            "-h" | "--help" => return Err(
                "usage: udrbd-sim (--seed N | --seeds A..B) [--mutation NAME] [-v] [--keep-going]"
                    .into(),
            ),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let seeds = seeds.ok_or("give --seed N or --seeds A..B")?;
    Ok(Args {
        seeds,
        mutation,
        verbose,
        keep_going,
    })
}

/// A decimal seed, or a hex git commit hash (its first 16 hex digits), so CI can pass the commit.
fn parse_seed(s: &str) -> Result<u64, String> {
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v);
    }
    let hex: String = s.chars().take(16).collect();
    u64::from_str_radix(&hex, 16).map_err(|_| format!("seed {s}: not a number or a commit hash"))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("udrbd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = WallClock::now();
    let count = args.seeds.end.saturating_sub(args.seeds.start);
    let mut total = udrbd_sim::cluster::Stats::default();
    let mut failed = 0u64;
    let mut first_code: Option<i32> = None;
    for seed in args.seeds.clone() {
        if args.verbose {
            println!("{}", Options::from_seed(seed));
        }
        match run_seed_traced(
            seed,
            args.mutation,
            if args.verbose { 1_000_000 } else { 400 },
        ) {
            Ok((stats, trace)) => {
                total.add(&stats);
                if args.verbose {
                    for line in &trace {
                        println!("  {line}");
                    }
                    println!("ok: {stats:?}");
                }
            }
            Err((failure, _)) if args.keep_going => {
                failed += 1;
                first_code.get_or_insert(failure.class.exit_code());
                println!("FAILED seed {seed}: {failure}");
                println!("replay: {}", replay_line(seed, args.mutation));
            }
            Err((failure, trace)) => {
                if args.verbose {
                    for line in &trace {
                        println!("  {line}");
                    }
                } else {
                    println!("{}", Options::from_seed(seed));
                }
                println!("FAILED seed {seed}: {failure}");
                println!("replay: {}", replay_line(seed, args.mutation));
                return ExitCode::from(failure.class.exit_code() as u8);
            }
        }
    }
    println!("totals over passing seeds: {total:?}");
    println!(
        "{count} seeds ({}..{}): {} passed, {failed} failed, in {:.1} s",
        args.seeds.start,
        args.seeds.end,
        count - failed,
        started.elapsed().as_secs_f64()
    );
    match first_code {
        Some(code) => ExitCode::from(code as u8),
        None => ExitCode::SUCCESS,
    }
}
