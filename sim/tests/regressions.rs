//! Every seed that ever failed stays in sim/regressions.txt and must keep passing, unless its bug
//! is still open (listed in sim/known-failures.txt: reported, not failed).

mod known;

use udrbd_sim::{mutations, replay_line, run_seed};

#[test]
fn regression_seeds_pass() {
    let text = include_str!("../regressions.txt");
    let mut ran = 0;
    let mut seeds = Vec::new();
    let mut failed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let seed: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("regressions.txt line {}: bad seed {line:?}", i + 1));
        let mutation = parts.next().map(|m| {
            mutations::parse(m)
                .unwrap_or_else(|| panic!("regressions.txt line {}: unknown mutation {m}", i + 1))
        });
        ran += 1;
        if mutation.is_none() {
            seeds.push(seed);
        }
        // A line with a mutation records a seed that catches it: it must keep failing.
        match (run_seed(seed, mutation), mutation) {
            (Ok(_), None) => {}
            (Err(f), None) => failed.push((
                seed,
                format!("seed {seed}: {f}\n  replay: {}", replay_line(seed, None)),
            )),
            (Err(_), Some(_)) => {}
            (Ok(_), Some(m)) => failed.push((seed, format!("seed {seed} no longer catches {m:?}"))),
        }
    }
    assert!(ran > 0, "regressions.txt lists no seeds");
    let new = known::judge(&seeds, failed);
    assert!(new.is_empty(), "{}", new.join("\n"));
}
