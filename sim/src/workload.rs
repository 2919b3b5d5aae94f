//! The random workload: upper-layer I/O on the Primary, role changes, admin commands and
//! faults, drawn from the seed with the run's swarm weights.

use std::collections::BTreeSet;

use crate::options::{Options, NODES};
use crate::prng::Prng;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `count` 4 KiB blocks from `block` on `node`.
    Write {
        node: usize,
        block: u64,
        count: u64,
        fua: bool,
    },
    Read {
        node: usize,
        block: u64,
        count: u64,
    },
    Flush {
        node: usize,
    },
    Promote {
        node: usize,
    },
    Demote {
        node: usize,
    },
    AdminDisconnect {
        node: usize,
    },
    AdminConnect {
        node: usize,
    },
    /// Break the connection (either socket).
    Cut,
    Partition {
        on: bool,
    },
    Crash {
        node: usize,
    },
    DiskErrors {
        node: usize,
        on: bool,
    },
    Idle,
    /// Discard (trim) `count` blocks from `block` on the Primary.
    Discard {
        node: usize,
        block: u64,
        count: u64,
    },
    /// `drbdadm invalidate` on a connected Secondary: full sync from the peer.
    Invalidate {
        node: usize,
    },
    Detach {
        node: usize,
    },
    /// Re-attach a detached disk (the simulator reads its meta-data, apply-al first).
    Attach {
        node: usize,
    },
}

/// What the workload may look at when choosing (the simulator's omniscient view).
pub struct View<'a> {
    pub up: [bool; NODES],
    /// Nodes whose role is Primary.
    pub primary: [bool; NODES],
    /// Whether each node's data matches everything the upper layer was promised.
    pub current: [bool; NODES],
    pub in_flight: usize,
    /// Blocks with an upper-layer request in flight.
    pub busy: &'a BTreeSet<u64>,
    pub partitioned: bool,
    pub disk_errors: [bool; NODES],
    /// Nodes that are up without a disk (detached) and have no disk I/O in flight.
    pub diskless: [bool; NODES],
    /// Nodes that are Secondary, Connected and UpToDate with an UpToDate peer.
    pub in_sync_secondary: [bool; NODES],
}

pub struct Workload {
    prng: Prng,
    /// Separate stream for the extended actions (see `options::Extended`).
    extra: Prng,
    /// First block of each spot the workload uses.
    spots: Vec<u64>,
    data_blocks: u64,
}

impl Workload {
    pub fn new(options: &Options, data_blocks: u64, mut prng: Prng) -> Workload {
        assert!(data_blocks > 8);
        // Spread spots over the device (so several AL extents and bitmap words are touched), some
        // of them adjacent to exercise request merging.
        let mut spots: Vec<u64> = (0..options.working_set_blocks)
            .map(|_| prng.below(data_blocks))
            .collect();
        spots.sort_unstable();
        spots.dedup();
        let extra = Prng::new(options.seed ^ 0xe87e_dded_0000_0002);
        Workload {
            prng,
            extra,
            spots,
            data_blocks,
        }
    }

    pub fn gap_ns(&mut self, options: &Options) -> u64 {
        self.prng.range(0, options.action_gap_max_ns)
    }

    pub fn next(&mut self, options: &Options, view: &View) -> Action {
        let weights = options.weights.as_array();
        for _ in 0..8 {
            let kind = self.prng.weighted(&weights);
            if let Some(a) = self.try_kind(kind, options, view) {
                if a == Action::Idle {
                    return self.extended(options, view).unwrap_or(Action::Idle);
                }
                return a;
            }
        }
        Action::Idle
    }

    /// Whether this write also carries REQ_PREFLUSH.
    pub fn preflush(&mut self, options: &Options) -> bool {
        options
            .extended
            .as_ref()
            .is_some_and(|e| self.extra.chance(e.preflush_ppm))
    }

    fn extended(&mut self, options: &Options, view: &View) -> Option<Action> {
        let e = options.extended.as_ref()?;
        if !self.extra.chance(e.replace_idle_ppm) {
            return None;
        }
        let node = self.extra.below(NODES as u64) as usize;
        let primary = (0..NODES).find(|n| view.primary[*n] && view.up[*n]);
        match self
            .extra
            .weighted(&[e.discard, e.invalidate, e.detach, e.attach])
        {
            0 => {
                let node = primary.filter(|_| view.in_flight < options.max_in_flight as usize)?;
                let spot = self.spots[self.extra.below(self.spots.len() as u64) as usize];
                let count = (0..self.extra.range(1, 2))
                    .take_while(|i| spot + i < self.data_blocks && !view.busy.contains(&(spot + i)))
                    .count() as u64;
                (count > 0).then_some(Action::Discard {
                    node,
                    block: spot,
                    count,
                })
            }
            1 => view.in_sync_secondary[node].then_some(Action::Invalidate { node }),
            2 => (view.up[node] && !view.diskless[node]).then_some(Action::Detach { node }),
            _ => view.diskless[node].then_some(Action::Attach { node }),
        }
    }

    fn try_kind(&mut self, kind: usize, options: &Options, view: &View) -> Option<Action> {
        let primary = (0..NODES).find(|n| view.primary[*n] && view.up[*n]);
        let node = self.prng.below(NODES as u64) as usize;
        let io_room = view.in_flight < options.max_in_flight as usize;
        match kind {
            0 => {
                let node = primary.filter(|_| io_room)?;
                let (block, count) = self.free_range(view.busy, options.write_blocks_max)?;
                let fua = self.prng.chance(options.fua_ppm);
                Some(Action::Write {
                    node,
                    block,
                    count,
                    fua,
                })
            }
            1 => {
                let node = primary.filter(|_| io_room)?;
                let (block, count) = self.free_range(view.busy, options.write_blocks_max)?;
                Some(Action::Read { node, block, count })
            }
            2 => Some(Action::Flush {
                node: primary.filter(|_| io_room)?,
            }),
            3 => {
                // One Primary at a time (allow-two-primaries is off), and only from current data
                // unless this run deliberately makes split brains.
                if primary.is_some() || !view.up[node] {
                    return None;
                }
                (view.current[node] || options.risky_promotions).then_some(Action::Promote { node })
            }
            4 => {
                // A Primary with open requests cannot be demoted (the device is in use).
                let node = primary?;
                (view.in_flight == 0).then_some(Action::Demote { node })
            }
            5 => view.up[node].then_some(Action::AdminDisconnect { node }),
            6 => view.up[node].then_some(Action::AdminConnect { node }),
            7 => Some(Action::Cut),
            8 => Some(Action::Partition {
                on: !view.partitioned,
            }),
            9 => {
                // Keep at least one node alive most of the time; both down is allowed rarely.
                let both_would_be_down = !view.up[1 - node];
                if !view.up[node] || (both_would_be_down && !self.prng.chance(100_000)) {
                    return None;
                }
                Some(Action::Crash { node })
            }
            10 => Some(Action::DiskErrors {
                node,
                on: !view.disk_errors[node],
            }),
            _ => Some(Action::Idle),
        }
    }

    /// A run of free blocks starting at a spot.
    fn free_range(&mut self, busy: &BTreeSet<u64>, max: u32) -> Option<(u64, u64)> {
        let spot = self.spots[self.prng.below(self.spots.len() as u64) as usize];
        let want = self.prng.range(1, u64::from(max));
        let mut count = 0;
        while count < want && spot + count < self.data_blocks && !busy.contains(&(spot + count)) {
            count += 1;
        }
        (count > 0).then_some((spot, count))
    }
}
