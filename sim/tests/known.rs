//! sim/known-failures.txt: seeds that fail against the current engine because of open engine bugs.
//! They are tolerated (and listed loudly) so that CI catches every *new* failure; a listed seed
//! that passes again is reported so it can be removed. Shared by the sweep and regression tests.

use std::collections::BTreeMap;

/// Seed → the note on its line (failure class and the open bug it belongs to).
pub fn known_failures() -> BTreeMap<u64, String> {
    let text = include_str!("../known-failures.txt");
    let mut known = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (body, note) = line.split_once('#').unwrap_or((line, ""));
        let body = body.trim();
        if body.is_empty() {
            continue;
        }
        let seed = body
            .parse()
            .unwrap_or_else(|_| panic!("known-failures.txt line {}: bad seed {body:?}", i + 1));
        known.insert(seed, note.trim().to_string());
    }
    known
}

/// Splits failures into new ones (the test fails on them) and known ones (reported only), and
/// prints the known seeds that now pass.
pub fn judge(ran: &[u64], failures: Vec<(u64, String)>) -> Vec<String> {
    let known = known_failures();
    let mut new = Vec::new();
    let mut still_open = 0;
    for (seed, line) in &failures {
        if known.contains_key(seed) {
            still_open += 1;
            eprintln!("known open failure (see known-failures.txt): {line}");
        } else {
            new.push(line.clone());
        }
    }
    let failed: std::collections::BTreeSet<u64> = failures.iter().map(|(s, _)| *s).collect();
    for seed in ran
        .iter()
        .filter(|s| known.contains_key(s) && !failed.contains(s))
    {
        eprintln!("seed {seed} in known-failures.txt passes now: remove it from the list");
    }
    eprintln!(
        "{} seeds run, {} known open failures, {} new failures",
        ran.len(),
        still_open,
        new.len()
    );
    new
}
