//! Generation identifiers and `drbd_uuid_compare` (spec drbd-wire-protocol.md §10.2), a pure
//! function: it returns the decision, the kernel's rule number and any corrections the kernel
//! would apply to its own or the cached peer UUIDs (rules 34, 35, 51, 71).

/// `UUID_JUST_CREATED`: the current UUID of fresh meta-data.
pub const UUID_JUST_CREATED: u64 = 0x4;
/// `UUID_NEW_BM_OFFSET`: added to the bitmap UUID when a resync starts on the SyncSource.
pub const UUID_NEW_BM_OFFSET: u64 = 0x0001_0000_0000_0000;
/// Index names of the UUID array (`UI_CURRENT` …).
pub const UI_CURRENT: usize = 0;
pub const UI_BITMAP: usize = 1;
pub const UI_HISTORY_START: usize = 2;
pub const UI_HISTORY_END: usize = 3;
/// `UI_FLAGS` bit 1: the sender crashed while Primary.
pub const UUID_FLAG_CRASHED_PRIMARY: u64 = 0x2;
/// `UI_FLAGS` bit 0: the sender has discard-my-data set.
pub const UUID_FLAG_DISCARD_MY_DATA: u64 = 0x1;
/// `UI_FLAGS` bit 2: the sender's disk will be Inconsistent once negotiated.
pub const UUID_FLAG_INCONSISTENT: u64 = 0x4;
/// `UI_FLAGS` bit 3: skip the initial sync (new-current-uuid --clear-bitmap).
pub const UUID_FLAG_SKIP_INITIAL_SYNC: u64 = 0x8;
/// `DRBD_FF_WSAME`, overloaded by rule 41 as "peer is new enough".
const FF_WSAME: u32 = 0x4;
/// `PRO_VERSION_MAX` of 8.4.
const PRO_VERSION_MAX: i32 = 101;

/// Everything `drbd_uuid_compare` looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompareInput {
    /// Own current, bitmap, history[0], history[1].
    pub own: [u64; 4],
    /// Peer's UUIDs as received in `P_UUIDS`.
    pub peer: [u64; 4],
    /// Peer's `UI_FLAGS` word.
    pub peer_flags: u64,
    /// Own CRASHED_PRIMARY runtime flag.
    pub own_crashed_primary: bool,
    pub own_primary: bool,
    pub peer_primary: bool,
    /// Agreed protocol version.
    pub apv: u32,
    /// Agreed feature flags.
    pub features: u32,
    /// This node accepted the meta socket.
    pub resolve_conflicts: bool,
}

/// The result: `hg` as the kernel encodes it (spec §10.2 "Meaning of hg") and the rule number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub hg: i32,
    pub rule: u32,
    /// Own UUIDs after the kernel's corrections (rules 34 and 71 rewrite them).
    pub own: [u64; 4],
    /// Cached peer UUIDs after corrections (rules 35 and 51).
    pub peer: [u64; 4],
}

const fn m(x: u64) -> u64 {
    x & !1
}

/// `drbd_uuid_compare`; `wrong_direction` is the `WrongSyncDirection` mutation (rule 50 flipped).
pub fn uuid_compare(i: &CompareInput, wrong_direction: bool) -> Decision {
    let mut own = i.own;
    let mut peer_u = i.peer;
    let d = |hg: i32, rule: u32, own: [u64; 4], peer: [u64; 4]| Decision {
        hg,
        rule,
        own,
        peer,
    };
    let s = m(own[UI_CURRENT]);
    let p = m(peer_u[UI_CURRENT]);

    if s == UUID_JUST_CREATED && p == UUID_JUST_CREATED {
        return d(0, 10, own, peer_u);
    }
    if (s == UUID_JUST_CREATED || s == 0) && p != UUID_JUST_CREATED {
        return d(-2, 20, own, peer_u);
    }
    if s != UUID_JUST_CREATED && (p == UUID_JUST_CREATED || p == 0) {
        return d(2, 30, own, peer_u);
    }
    if s == p {
        if peer_u[UI_BITMAP] == 0 && own[UI_BITMAP] != 0 {
            if i.apv < 91 {
                // The kernel has not set rule_nr past 30 yet.
                return d(-1091, 30, own, peer_u);
            }
            if m(own[UI_BITMAP]) == m(peer_u[UI_HISTORY_START])
                && m(own[UI_HISTORY_START]) == m(peer_u[UI_HISTORY_END])
            {
                // Was SyncSource and missed the resync-finished event: rotate bitmap → history.
                own[UI_HISTORY_END] = own[UI_HISTORY_START];
                own[UI_HISTORY_START] = own[UI_BITMAP];
                own[UI_BITMAP] = 0;
                return d(1, 34, own, peer_u);
            }
            return d(1, 36, own, peer_u);
        }
        if own[UI_BITMAP] == 0 && peer_u[UI_BITMAP] != 0 {
            if i.apv < 91 {
                return d(-1091, 30, own, peer_u);
            }
            if m(own[UI_HISTORY_START]) == m(peer_u[UI_BITMAP])
                && m(own[UI_HISTORY_END]) == m(peer_u[UI_HISTORY_START])
            {
                peer_u[UI_HISTORY_END] = peer_u[UI_HISTORY_START];
                peer_u[UI_HISTORY_START] = peer_u[UI_BITMAP];
                peer_u[UI_BITMAP] = 0;
                return d(-1, 35, own, peer_u);
            }
            return d(-1, 37, own, peer_u);
        }
        // Roles at crash time: bit 0 own crashed primary, bit 1 peer crashed primary.
        let rct = i.own_crashed_primary as u64 + (i.peer_flags & UUID_FLAG_CRASHED_PRIMARY);
        if rct == 0 {
            return d(0, 40, own, peer_u);
        }
        if i.own_primary || i.peer_primary {
            if i.features & FF_WSAME == 0 {
                let hg = -(0x10000 | PRO_VERSION_MAX | ((FF_WSAME as i32) << 8));
                return d(hg, 41, own, peer_u);
            }
            if i.own_primary && i.peer_primary {
                return d(-100, 41, own, peer_u);
            }
            return d(if i.own_primary { 1 } else { -1 }, 41, own, peer_u);
        }
        let hg = match rct {
            1 => 1,
            2 => -1,
            _ => {
                if i.resolve_conflicts {
                    -1
                } else {
                    1
                }
            }
        };
        return d(hg, 40, own, peer_u);
    }

    if s == m(peer_u[UI_BITMAP]) {
        return d(if wrong_direction { 1 } else { -1 }, 50, own, peer_u);
    }

    let ph0 = m(peer_u[UI_HISTORY_START]);
    if s == ph0 {
        let lost_sync_uuid = if i.apv < 96 {
            m(own[UI_HISTORY_START]) == m(peer_u[UI_HISTORY_END])
        } else {
            ph0.wrapping_add(UUID_NEW_BM_OFFSET) == m(peer_u[UI_BITMAP])
        };
        if lost_sync_uuid {
            if i.apv < 91 {
                return d(-1091, 51, own, peer_u);
            }
            peer_u[UI_BITMAP] = peer_u[UI_HISTORY_START];
            peer_u[UI_HISTORY_START] = peer_u[UI_HISTORY_END];
            return d(-1, 51, own, peer_u);
        }
    }

    for k in UI_HISTORY_START..=UI_HISTORY_END {
        if s == m(peer_u[k]) {
            return d(-2, 60, own, peer_u);
        }
    }

    if m(own[UI_BITMAP]) == p {
        return d(1, 70, own, peer_u);
    }

    let sh0 = m(own[UI_HISTORY_START]);
    if sh0 == p {
        let lost_sync_uuid = if i.apv < 96 {
            m(own[UI_HISTORY_END]) == m(peer_u[UI_HISTORY_START])
        } else {
            sh0.wrapping_add(UUID_NEW_BM_OFFSET) == m(own[UI_BITMAP])
        };
        if lost_sync_uuid {
            if i.apv < 91 {
                return d(-1091, 71, own, peer_u);
            }
            own[UI_BITMAP] = own[UI_HISTORY_START];
            own[UI_HISTORY_START] = own[UI_HISTORY_END];
            return d(1, 71, own, peer_u);
        }
    }

    for k in UI_HISTORY_START..=UI_HISTORY_END {
        if m(own[k]) == p {
            return d(2, 80, own, peer_u);
        }
    }

    let sb = m(own[UI_BITMAP]);
    if sb == m(peer_u[UI_BITMAP]) && sb != 0 {
        return d(100, 90, own, peer_u);
    }

    for a in UI_HISTORY_START..=UI_HISTORY_END {
        for b in UI_HISTORY_START..=UI_HISTORY_END {
            if m(own[a]) == m(peer_u[b]) {
                return d(-100, 100, own, peer_u);
            }
        }
    }

    d(-1000, 100, own, peer_u)
}

/// Names `hg` for the log ("uuid_compare()=-1 by rule 50").
pub fn describe(hg: i32) -> &'static str {
    match hg {
        2 => "full sync, become SyncSource",
        1 => "bitmap sync, become SyncSource",
        0 => "no sync",
        -1 => "bitmap sync, become SyncTarget",
        -2 => "full sync, become SyncTarget",
        100 | -100 => "split brain",
        -1000 => "unrelated data",
        _ => "incompatible peer",
    }
}

/// What the after-split-brain recovery functions look at (drbd_receiver.c drbd_asb_recover_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsbInput {
    pub own_bitmap_uuid: u64,
    pub peer_bitmap_uuid: u64,
    /// Own bitmap weight (`comm_bm_set`) and the peer's `UI_SIZE`.
    pub own_changes: u64,
    pub peer_changes: u64,
    pub resolve_conflicts: bool,
    pub own_primary: bool,
}

/// `drbd_asb_recover_0p`: +1 keep own data, −1 discard it, −100 no decision.
pub fn asb_recover_0p(policy: crate::config::AfterSbPolicy, a: &AsbInput) -> i32 {
    use crate::config::AfterSbPolicy as P;
    // Bit 0 of the bitmap UUID: the node was Primary when its UUIDs rotated.
    let own = a.own_bitmap_uuid & 1;
    let peer = a.peer_bitmap_uuid & 1;
    let tie = if a.resolve_conflicts { -1 } else { 1 };
    let zero_changes = |stop: bool| -> Option<i32> {
        if a.own_changes == 0 && a.peer_changes == 0 {
            return Some(tie);
        }
        if a.peer_changes == 0 {
            return Some(1);
        }
        if a.own_changes == 0 {
            return Some(-1);
        }
        if stop {
            Some(-100)
        } else {
            None
        }
    };
    let least_changes = || match a.own_changes.cmp(&a.peer_changes) {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Greater => 1,
        std::cmp::Ordering::Equal => tie,
    };
    match policy {
        P::Consensus | P::DiscardSecondary | P::CallPriLost | P::Violently | P::Disconnect => -100,
        P::DiscardYoungerPrimary | P::DiscardOlderPrimary => {
            let younger = policy == P::DiscardYoungerPrimary;
            if own == 0 && peer == 1 {
                return if younger { -1 } else { 1 };
            }
            if own == 1 && peer == 0 {
                return if younger { 1 } else { -1 };
            }
            zero_changes(false).unwrap_or_else(least_changes)
        }
        P::DiscardZeroChanges => zero_changes(true).unwrap_or(-100),
        P::DiscardLeastChanges => least_changes(),
        P::DiscardLocal => -1,
        P::DiscardRemote => 1,
    }
}

/// `drbd_asb_recover_1p`. `demote_ok` says whether giving up Primary would succeed (for
/// call-pri-lost-after-sb); the caller demotes when the result is −1 and it is Primary.
pub fn asb_recover_1p(
    p0: crate::config::AfterSbPolicy,
    p1: crate::config::AfterSbPolicy,
    a: &AsbInput,
) -> i32 {
    use crate::config::AfterSbPolicy as P;
    match p1 {
        P::Consensus => {
            let hg = asb_recover_0p(p0, a);
            if (hg == -1 && !a.own_primary) || (hg == 1 && a.own_primary) {
                hg
            } else {
                -100
            }
        }
        P::Violently => asb_recover_0p(p0, a),
        P::DiscardSecondary => {
            if a.own_primary {
                1
            } else {
                -1
            }
        }
        P::CallPriLost => asb_recover_0p(p0, a),
        _ => -100,
    }
}

/// `drbd_asb_recover_2p`.
pub fn asb_recover_2p(
    p0: crate::config::AfterSbPolicy,
    p2: crate::config::AfterSbPolicy,
    a: &AsbInput,
) -> i32 {
    use crate::config::AfterSbPolicy as P;
    match p2 {
        P::Violently | P::CallPriLost => asb_recover_0p(p0, a),
        _ => -100,
    }
}
