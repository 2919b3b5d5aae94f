//! The deliberate bugs the engine can switch on (`ResourceConfig.mutation`), and what the
//! simulator must catch each with. A checker that cannot fail proves nothing.

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

/// Runs seeds from `first` until one fails, at most `budget` seeds. Returns the failing seed.
pub fn first_catch(
    mutation: Mutation,
    first: u64,
    budget: u64,
) -> Option<(u64, crate::checkers::Failure)> {
    (first..first + budget).find_map(|seed| {
        crate::run_seed(seed, Some(mutation))
            .err()
            .map(|f| (seed, f))
    })
}
