//! Swarm options: one seed draws the whole shape of a run (TigerBeetle's `options_swarm`). Each
//! fault and workload kind gets a weight, and a drawn share of runs switch a kind off entirely,
//! so that rare interleavings of the remaining kinds get explored too.

use std::fmt;

use crate::clock::NodeClock;
use crate::disk::DiskFaults;
use crate::net::NetFaults;
use crate::prng::Prng;

pub const NODES: usize = 2;

/// How the pair starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Both meta-data areas say Consistent + WasUpToDate with the same current UUID (as after
    /// `new-current-uuid --clear-bitmap`): the first handshake needs no sync.
    PreSynced,
    /// Fresh `create-md` on both; node 0 is made Primary with `--force`, which needs a full sync.
    ForcedFullSync,
}

/// Relative weights of workload actions (0 = never in this run).
#[derive(Clone, Debug, Default)]
pub struct Weights {
    pub write: u32,
    pub read: u32,
    pub flush: u32,
    pub promote: u32,
    pub demote: u32,
    pub admin_disconnect: u32,
    pub admin_connect: u32,
    pub cut: u32,
    pub partition: u32,
    pub crash: u32,
    pub disk_errors: u32,
    pub idle: u32,
}

impl Weights {
    pub fn as_array(&self) -> [u32; 12] {
        [
            self.write,
            self.read,
            self.flush,
            self.promote,
            self.demote,
            self.admin_disconnect,
            self.admin_connect,
            self.cut,
            self.partition,
            self.crash,
            self.disk_errors,
            self.idle,
        ]
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Backing device size in sectors (data + internal meta-data).
    pub backing_sectors: u64,
    pub start: Start,
    /// The workload writes and reads 4 KiB blocks among this many, spread over the device.
    pub working_set_blocks: u32,
    pub net: NetFaults,
    pub disk: [DiskFaults; NODES],
    /// Read/write error rates used while the workload has disk errors switched on.
    pub disk_error_ppm: u32,
    pub clock: [NodeClock; NODES],
    pub weights: Weights,
    /// Workload actions in the safety phase.
    pub actions: u32,
    /// Largest pause between two workload actions.
    pub action_gap_max_ns: u64,
    /// Most upper-layer requests in flight at once.
    pub max_in_flight: u32,
    /// Largest write, in 4 KiB blocks.
    pub write_blocks_max: u32,
    pub fua_ppm: u32,
    pub restart_delay_max_ns: u64,
    /// Whether a promotion may be attempted on a node whose data is behind (a user error that
    /// makes a split brain, which must then be detected).
    pub risky_promotions: bool,
    /// `resync-rate` in KiB/s (fixed-rate controller).
    pub resync_rate_kib: u32,
    /// after-sb-0pri as the wire value (0 = disconnect, 3 = discard-zero-changes, ...).
    pub after_sb_0pri: u32,
    /// Liveness: sim time allowed for the healed pair to converge.
    pub liveness_budget_ns: u64,
    /// Safety valve: most simulator steps in one run.
    pub max_steps: u64,
    /// Actions added after the first seeds were recorded, drawn from a separate stream so that
    /// older seeds (sim/regressions.txt) replay unchanged when this is off.
    pub extended: Option<Extended>,
}

/// Weights of the later actions: they replace a share of the idle actions.
#[derive(Clone, Debug)]
pub struct Extended {
    /// Per-million share of idle actions that become one of the actions below.
    pub replace_idle_ppm: u32,
    pub discard: u32,
    pub invalidate: u32,
    pub detach: u32,
    pub attach: u32,
    /// Per-million share of writes that carry REQ_PREFLUSH.
    pub preflush_ppm: u32,
}

const MS: u64 = 1_000_000;
const US: u64 = 1_000;
const SECOND: u64 = 1_000_000_000;
/// One activity-log extent in sectors (4 MiB, spec drbd-metadata.md §4.1).
const AL_EXTENT_SECTORS: u64 = 8192;

impl Options {
    pub fn from_seed(seed: u64) -> Options {
        let mut p = Prng::new(seed);
        // Data of 1..=3 AL extents plus a little room for internal meta-data (~ 200 sectors).
        let extents = p.range(1, 3);
        let backing_sectors = extents * AL_EXTENT_SECTORS + 8 * p.range(40, 64);
        let start = if p.chance(200_000) {
            Start::ForcedFullSync
        } else {
            Start::PreSynced
        };
        let net_delay_max_ns = [50 * US, MS, 10 * MS][p.below(3) as usize];
        let net = NetFaults {
            delay_min_ns: p.range(1, 20) * US,
            delay_max_ns: net_delay_max_ns + 20 * US,
            connect_delay_min_ns: MS,
            connect_delay_max_ns: p.range(2, 500) * MS,
            split_ppm: if p.coin() {
                0
            } else {
                p.range(1_000, 300_000) as u32
            },
        };
        let mut disk = [DiskFaults::default(), DiskFaults::default()];
        for d in &mut disk {
            let max = [100 * US, 2 * MS, 20 * MS][p.below(3) as usize];
            *d = DiskFaults {
                latency_min_ns: p.range(5, 50) * US,
                latency_max_ns: max + 50 * US,
                ..Default::default()
            };
        }
        let clock = [
            NodeClock {
                offset_ns: p.range(0, 1_000) * SECOND,
                drift_ppm: p.range(0, 400) as i32 - 200,
            },
            NodeClock {
                offset_ns: p.range(0, 1_000) * SECOND,
                drift_ppm: p.range(0, 400) as i32 - 200,
            },
        ];
        let w = |p: &mut Prng, base: u32, off_ppm: u32| {
            if p.chance(off_ppm) {
                0
            } else {
                p.range(1, u64::from(base)) as u32
            }
        };
        let weights = Weights {
            write: w(&mut p, 60, 0),
            read: w(&mut p, 30, 100_000),
            flush: w(&mut p, 15, 100_000),
            promote: w(&mut p, 6, 50_000),
            demote: w(&mut p, 4, 200_000),
            admin_disconnect: w(&mut p, 3, 400_000),
            admin_connect: w(&mut p, 6, 0),
            cut: w(&mut p, 4, 300_000),
            partition: w(&mut p, 3, 400_000),
            crash: w(&mut p, 4, 300_000),
            disk_errors: w(&mut p, 2, 800_000),
            idle: w(&mut p, 10, 0),
        };
        Options {
            seed,
            backing_sectors,
            start,
            working_set_blocks: [4, 16, 64][p.below(3) as usize],
            net,
            disk,
            disk_error_ppm: p.range(1_000, 100_000) as u32,
            clock,
            weights,
            actions: p.range(20, 120) as u32,
            action_gap_max_ns: [MS, 20 * MS, 500 * MS][p.below(3) as usize],
            max_in_flight: p.range(1, 8) as u32,
            write_blocks_max: p.range(1, 4) as u32,
            fua_ppm: if p.coin() { 0 } else { 100_000 },
            restart_delay_max_ns: p.range(1, 2_000) * MS,
            risky_promotions: p.chance(300_000),
            resync_rate_kib: [4_096, 40_960, 409_600][p.below(3) as usize],
            after_sb_0pri: [0, 0, 3, 4][p.below(4) as usize],
            liveness_budget_ns: 600 * SECOND,
            max_steps: 400_000,
            extended: Extended::from_seed(seed),
        }
    }

    pub fn data_blocks(&self, data_sectors: u64) -> u64 {
        data_sectors / 8
    }
}

impl Extended {
    fn from_seed(seed: u64) -> Option<Extended> {
        let mut p = Prng::new(seed ^ 0xe87e_dded_0000_0001);
        if p.coin() {
            return None;
        }
        Some(Extended {
            replace_idle_ppm: p.range(100_000, 900_000) as u32,
            discard: p.range(0, 5) as u32,
            invalidate: p.range(0, 2) as u32,
            detach: p.range(0, 2) as u32,
            attach: p.range(1, 4) as u32,
            preflush_ppm: p.range(0, 200_000) as u32,
        })
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed={}", self.seed)?;
        writeln!(
            f,
            "  backing_sectors={} start={:?} working_set_blocks={}",
            self.backing_sectors, self.start, self.working_set_blocks
        )?;
        writeln!(f, "  net={:?}", self.net)?;
        for (i, d) in self.disk.iter().enumerate() {
            writeln!(f, "  disk[{i}]={d:?} clock[{i}]={:?}", self.clock[i])?;
        }
        writeln!(
            f,
            "  disk_error_ppm={} weights={:?}",
            self.disk_error_ppm, self.weights
        )?;
        writeln!(
            f,
            "  actions={} action_gap_max_ns={} max_in_flight={} write_blocks_max={} fua_ppm={}",
            self.actions,
            self.action_gap_max_ns,
            self.max_in_flight,
            self.write_blocks_max,
            self.fua_ppm
        )?;
        write!(
            f,
            "  restart_delay_max_ns={} risky_promotions={} resync_rate_kib={} after_sb_0pri={} liveness_budget_ns={}",
            self.restart_delay_max_ns, self.risky_promotions, self.resync_rate_kib, self.after_sb_0pri, self.liveness_budget_ns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_options_and_seeds_vary_the_swarm() {
        assert_eq!(
            Options::from_seed(5).to_string(),
            Options::from_seed(5).to_string()
        );
        let shapes: std::collections::BTreeSet<String> = (0..50)
            .map(|s| {
                let o = Options::from_seed(s);
                format!("{:?}{}", o.start, o.weights.crash == 0)
            })
            .collect();
        assert!(shapes.len() >= 3, "the swarm should vary: {shapes:?}");
    }
}
