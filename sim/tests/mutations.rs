//! The mutation check: switch on one deliberate engine bug at a time and show the simulator
//! catches it within a seed budget (and that the catching seed passes without the bug, so it
//! is the bug being caught, not noise). A checker that cannot fail proves nothing.

use udrbd_sim::{mutations, replay_line, run_seed, Mutation};

/// Seeds tried per mutation before we call it missed. Kept small so CI stays fast; the report
/// lists how many seeds each mutation actually needed.
const BUDGET: u64 = 2000;

fn check(m: Mutation) {
    let base = std::env::var("UDRBD_SIM_MUTATION_BASE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let Some(c) = mutations::first_catch(m, base, BUDGET) else {
        panic!("{m:?} was not caught in {BUDGET} seeds from {base}");
    };
    eprintln!(
        "{m:?}: caught by seed {} after {} seeds: {}",
        c.seed, c.seeds_tried, c.failure
    );
    eprintln!("  replay: {}", replay_line(c.seed, Some(m)));
    // first_catch only accepts seeds that pass without the mutation; check that here too.
    assert!(
        run_seed(c.seed, None).is_ok(),
        "seed {} also fails without {m:?}",
        c.seed
    );
}

#[test]
fn catches_ack_before_peer_ack() {
    check(Mutation::AckBeforePeerAck);
}

#[test]
fn catches_forget_out_of_sync_on_disconnect() {
    check(Mutation::ForgetOutOfSyncOnDisconnect);
}

#[test]
fn catches_skip_activity_log() {
    check(Mutation::SkipActivityLog);
}

#[test]
fn catches_wrong_sync_direction() {
    check(Mutation::WrongSyncDirection);
}

#[test]
fn catches_clear_bit_before_resync_write_durable() {
    check(Mutation::ClearBitBeforeResyncWriteDurable);
}

#[test]
fn every_mutation_has_a_test() {
    assert_eq!(mutations::ALL.len(), 5);
}

/// How often each mutation is caught (run by hand: `cargo test -p udrbd-sim --release --test
/// mutations -- --ignored --nocapture`). Counts a seed only if it fails with the mutation's own
/// checks and passes without the mutation.
#[test]
#[ignore]
fn catch_rates() {
    const SEEDS: u64 = 200;
    for m in mutations::ALL {
        let mut caught = 0;
        for seed in 0..SEEDS {
            if let Err(f) = run_seed(seed, Some(m)) {
                if mutations::expected_checks(m).contains(&f.check) && run_seed(seed, None).is_ok()
                {
                    caught += 1;
                }
            }
        }
        eprintln!("{m:?}: caught by {caught} of {SEEDS} seeds");
    }
}
