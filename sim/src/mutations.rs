//! The deliberate bugs the engine can switch on (`ResourceConfig.mutation`), and the search
//! that shows the simulator catches each. A checker that cannot fail proves nothing.

use crate::checkers::Failure;
use crate::Mutation;

/// Every mutation the mutation check covers.
pub const ALL: [Mutation; 5] = [
    Mutation::AckBeforePeerAck,
    Mutation::ForgetOutOfSyncOnDisconnect,
    Mutation::SkipActivityLog,
    Mutation::WrongSyncDirection,
    Mutation::ClearBitBeforeResyncWriteDurable,
];

pub fn parse(name: &str) -> Option<Mutation> {
    ALL.iter()
        .copied()
        .find(|m| format!("{m:?}").eq_ignore_ascii_case(name))
}

/// The checks that name each mutation's bug. A failure of another check under a mutation is a
/// different (real) problem the mutation merely exposed, not a catch.
pub fn expected_checks(m: Mutation) -> &'static [&'static str] {
    match m {
        Mutation::AckBeforePeerAck => &["acked-replicated"],
        Mutation::ForgetOutOfSyncOnDisconnect => &[
            "out-of-sync-marked",
            "in-sync-identical",
            "uptodate-from-older",
            "in-sync",
            "resync-identical",
            "read",
            "primary-data",
        ],
        Mutation::SkipActivityLog => &["activity-log"],
        Mutation::WrongSyncDirection => &[
            "sync-direction",
            "primary-data",
            "uptodate-from-older",
            "promote-from-older",
            "in-sync",
            "in-sync-identical",
            "read",
            "converge",
        ],
        Mutation::ClearBitBeforeResyncWriteDurable => &[
            "out-of-sync-marked",
            "resync-identical",
            "uptodate-from-older",
            "in-sync-identical",
            "in-sync",
            "read",
        ],
    }
}

/// A seed that fails with the mutation and passes without it.
#[derive(Clone, Debug)]
pub struct Catch {
    pub seed: u64,
    /// Seeds run with the mutation until this one (inclusive).
    pub seeds_tried: u64,
    pub failure: Failure,
}

/// Runs seeds from `first` until one fails with `mutation` on and passes with it off, at most
/// `budget` seeds. Seeds that also fail without the mutation do not count as catches.
pub fn first_catch(mutation: Mutation, first: u64, budget: u64) -> Option<Catch> {
    for (i, seed) in (first..first.saturating_add(budget)).enumerate() {
        let Err(failure) = crate::run_seed(seed, Some(mutation)) else {
            continue;
        };
        if expected_checks(mutation).contains(&failure.check) && crate::run_seed(seed, None).is_ok()
        {
            return Some(Catch {
                seed,
                seeds_tried: i as u64 + 1,
                failure,
            });
        }
    }
    None
}
