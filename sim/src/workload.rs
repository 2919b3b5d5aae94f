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
}

pub struct Workload {
    prng: Prng,
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
        Workload {
            prng,
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
                return a;
            }
        }
        Action::Idle
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
