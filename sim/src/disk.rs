//! A simulated block device with a volatile write cache.
//!
//! Model (what Linux promises a block-device user, no more):
//! - A write completes after a drawn latency; from then on reads see it, but it is only in the
//!   device's volatile cache.
//! - A flush makes durable every write that had *completed* when the flush was submitted.
//!   A FUA write is durable when it completes.
//! - Operations complete in any order (each draws its own latency).
//! - A crash drops every write not yet durable and tears each write still in flight: an arbitrary
//!   subset of its 512-byte sectors reaches the medium. Sectors are the unit of atomicity.
//! - Read and write errors are injected with a per-op probability; a failed write changes nothing.
//!
//! Storage is sparse (unwritten sectors read as zeros) so a run with a few dozen MiB costs little.

use std::collections::BTreeMap;

use crate::prng::Prng;

pub const SECTOR_BYTES: u64 = 512;

pub type SectorData = Box<[u8; SECTOR_BYTES as usize]>;

/// The kind of simulated disk fault behaviour, drawn per disk by the options.
#[derive(Clone, Debug, Default)]
pub struct DiskFaults {
    pub latency_min_ns: u64,
    pub latency_max_ns: u64,
    /// Per-op probability in parts per million.
    pub read_error_ppm: u32,
    pub write_error_ppm: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskOp {
    Read {
        offset: u64,
        len: u64,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskResult {
    Read(Vec<u8>),
    Written,
    Flushed,
    Error,
}

/// A finished operation, handed back with the caller's tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<T> {
    pub tag: T,
    pub result: DiskResult,
}

struct InFlight<T> {
    tag: T,
    op: DiskOp,
    done_at_ns: u64,
    /// Submission order, to break ties between equal completion times deterministically.
    order: u64,
    /// For a flush: the newest write sequence number it covers.
    flush_covers_seq: u64,
    fails: bool,
}

pub struct SimDisk<T> {
    size_bytes: u64,
    /// What survives a crash.
    durable: BTreeMap<u64, SectorData>,
    /// Completed writes not yet durable, per sector, oldest first: (write seq, data).
    cache: BTreeMap<u64, Vec<(u64, SectorData)>>,
    in_flight: Vec<InFlight<T>>,
    faults: DiskFaults,
    prng: Prng,
    write_seq: u64,
    order: u64,
    pub stats: DiskStats,
}

#[derive(Clone, Debug, Default)]
pub struct DiskStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub errors: u64,
    pub crashes: u64,
    pub torn_sectors: u64,
    pub dropped_sectors: u64,
}

impl<T: Clone> SimDisk<T> {
    pub fn new(size_bytes: u64, faults: DiskFaults, prng: Prng) -> SimDisk<T> {
        assert!(size_bytes % SECTOR_BYTES == 0);
        assert!(faults.latency_min_ns <= faults.latency_max_ns);
        SimDisk {
            size_bytes,
            durable: BTreeMap::new(),
            cache: BTreeMap::new(),
            in_flight: Vec::new(),
            faults,
            prng,
            write_seq: 0,
            order: 0,
            stats: DiskStats::default(),
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn set_faults(&mut self, faults: DiskFaults) {
        self.faults = faults;
    }

    pub fn faults(&self) -> &DiskFaults {
        &self.faults
    }

    /// Whether an operation lies inside the device and is sector aligned. A caller handing us
    /// anything else has a bug the simulator must report, so `submit` panics on it.
    pub fn op_in_bounds(&self, op: &DiskOp) -> bool {
        let (offset, len) = match op {
            DiskOp::Read { offset, len } => (*offset, *len),
            DiskOp::Write { offset, data, .. } => (*offset, data.len() as u64),
            DiskOp::Flush => return true,
        };
        offset % SECTOR_BYTES == 0
            && len % SECTOR_BYTES == 0
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.size_bytes)
    }

    pub fn submit(&mut self, now_ns: u64, tag: T, op: DiskOp) {
        assert!(
            self.op_in_bounds(&op),
            "disk op out of bounds or unaligned: {op:?}"
        );
        let latency = self
            .prng
            .range(self.faults.latency_min_ns, self.faults.latency_max_ns);
        let fails = match op {
            DiskOp::Read { .. } => self.prng.chance(self.faults.read_error_ppm),
            DiskOp::Write { .. } => self.prng.chance(self.faults.write_error_ppm),
            DiskOp::Flush => false,
        };
        self.order += 1;
        self.in_flight.push(InFlight {
            tag,
            op,
            done_at_ns: now_ns + latency,
            order: self.order,
            flush_covers_seq: self.write_seq,
            fails,
        });
    }

    /// The earliest time an in-flight operation completes.
    pub fn next_completion_ns(&self) -> Option<u64> {
        self.in_flight.iter().map(|f| f.done_at_ns).min()
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// Completes, in time order, every operation due by `now_ns`.
    pub fn poll(&mut self, now_ns: u64) -> Vec<Completion<T>> {
        let mut due: Vec<InFlight<T>> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].done_at_ns <= now_ns {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|f| (f.done_at_ns, f.order));
        due.into_iter().map(|f| self.complete(f)).collect()
    }

    fn complete(&mut self, f: InFlight<T>) -> Completion<T> {
        let result = if f.fails {
            self.stats.errors += 1;
            DiskResult::Error
        } else {
            match f.op {
                DiskOp::Read { offset, len } => {
                    self.stats.reads += 1;
                    DiskResult::Read(self.read_visible(offset, len))
                }
                DiskOp::Write { offset, data, fua } => {
                    self.stats.writes += 1;
                    self.apply_write(offset, &data, fua);
                    DiskResult::Written
                }
                DiskOp::Flush => {
                    self.stats.flushes += 1;
                    self.flush_up_to(f.flush_covers_seq);
                    DiskResult::Flushed
                }
            }
        };
        Completion { tag: f.tag, result }
    }

    fn apply_write(&mut self, offset: u64, data: &[u8], fua: bool) {
        self.write_seq += 1;
        let seq = self.write_seq;
        for (i, chunk) in data.chunks(SECTOR_BYTES as usize).enumerate() {
            let sector = offset / SECTOR_BYTES + i as u64;
            let block = to_sector(chunk);
            if fua {
                // Durable now; older cached versions of this sector are superseded.
                self.cache.remove(&sector);
                self.set_durable(sector, block);
            } else {
                self.cache.entry(sector).or_default().push((seq, block));
            }
        }
    }

    fn flush_up_to(&mut self, seq: u64) {
        let sectors: Vec<u64> = self.cache.keys().copied().collect();
        for sector in sectors {
            let Some(versions) = self.cache.get_mut(&sector) else {
                continue;
            };
            let Some(newest_covered) = versions.iter().rposition(|(s, _)| *s <= seq) else {
                continue;
            };
            let rest = versions.split_off(newest_covered + 1);
            let (_, block) = versions.pop().expect("position found above");
            if rest.is_empty() {
                self.cache.remove(&sector);
            } else {
                self.cache.insert(sector, rest);
            }
            self.set_durable(sector, block);
        }
    }

    fn set_durable(&mut self, sector: u64, block: SectorData) {
        if block.iter().all(|b| *b == 0) {
            self.durable.remove(&sector);
        } else {
            self.durable.insert(sector, block);
        }
    }

    /// What a read issued now would return (cache included).
    pub fn read_visible(&self, offset: u64, len: u64) -> Vec<u8> {
        assert!(offset % SECTOR_BYTES == 0 && len % SECTOR_BYTES == 0);
        let mut out = vec![0u8; len as usize];
        for (i, chunk) in out.chunks_mut(SECTOR_BYTES as usize).enumerate() {
            let sector = offset / SECTOR_BYTES + i as u64;
            if let Some(block) = self.visible_sector(sector) {
                chunk.copy_from_slice(&block[..]);
            }
        }
        out
    }

    /// What the medium holds (what a crash now would leave).
    pub fn read_durable(&self, offset: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        for (i, chunk) in out.chunks_mut(SECTOR_BYTES as usize).enumerate() {
            let sector = offset / SECTOR_BYTES + i as u64;
            if let Some(block) = self.durable.get(&sector) {
                chunk.copy_from_slice(&block[..]);
            }
        }
        out
    }

    fn visible_sector(&self, sector: u64) -> Option<&SectorData> {
        match self.cache.get(&sector).and_then(|v| v.last()) {
            Some((_, block)) => Some(block),
            None => self.durable.get(&sector),
        }
    }

    /// Whether `sectors` sectors from `first` read the same here and on `other` (no copies).
    pub fn same_visible<U: Clone>(&self, other: &SimDisk<U>, first: u64, sectors: u64) -> bool {
        (first..first + sectors).all(
            |s| match (self.visible_sector(s), other.visible_sector(s)) {
                (Some(a), Some(b)) => a == b,
                (None, None) => true,
                (Some(a), None) | (None, Some(a)) => a.iter().all(|x| *x == 0),
            },
        )
    }

    /// Sectors that may hold non-zero visible data, in order (for whole-disk comparisons).
    pub fn touched_sectors(&self) -> impl Iterator<Item = u64> + '_ {
        let mut keys: Vec<u64> = self
            .durable
            .keys()
            .chain(self.cache.keys())
            .copied()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
    }

    /// Whether a sector's visible content is all zeros.
    pub fn sector_visible(&self, sector: u64) -> [u8; SECTOR_BYTES as usize] {
        match self.visible_sector(sector) {
            Some(b) => **b,
            None => [0u8; SECTOR_BYTES as usize],
        }
    }

    /// Power loss: pending completions are never delivered, the cache is lost, in-flight writes
    /// are torn at sector granularity. Returns the tags of the operations that were dropped.
    pub fn crash(&mut self) -> Vec<T> {
        self.stats.crashes += 1;
        let dropped: usize = self.cache.values().map(Vec::len).sum();
        self.stats.dropped_sectors += dropped as u64;
        self.cache.clear();
        let in_flight = std::mem::take(&mut self.in_flight);
        let mut tags = Vec::with_capacity(in_flight.len());
        for f in in_flight {
            if let DiskOp::Write { offset, data, .. } = &f.op {
                for (i, chunk) in data.chunks(SECTOR_BYTES as usize).enumerate() {
                    if self.prng.coin() {
                        self.stats.torn_sectors += 1;
                        self.set_durable(offset / SECTOR_BYTES + i as u64, to_sector(chunk));
                    }
                }
            }
            tags.push(f.tag);
        }
        tags
    }

    /// Test and set-up helper: writes straight to the medium, bypassing latency and the cache.
    pub fn write_durable_now(&mut self, offset: u64, data: &[u8]) {
        assert!(offset % SECTOR_BYTES == 0 && (data.len() as u64) % SECTOR_BYTES == 0);
        assert!(offset + data.len() as u64 <= self.size_bytes);
        for (i, chunk) in data.chunks(SECTOR_BYTES as usize).enumerate() {
            let sector = offset / SECTOR_BYTES + i as u64;
            self.cache.remove(&sector);
            self.set_durable(sector, to_sector(chunk));
        }
    }
}

fn to_sector(chunk: &[u8]) -> SectorData {
    let mut block = Box::new([0u8; SECTOR_BYTES as usize]);
    block.copy_from_slice(chunk);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> SimDisk<u32> {
        let faults = DiskFaults {
            latency_min_ns: 10,
            latency_max_ns: 100,
            ..Default::default()
        };
        SimDisk::new(64 * SECTOR_BYTES, faults, Prng::new(42))
    }

    fn fill(byte: u8, sectors: usize) -> Vec<u8> {
        vec![byte; sectors * SECTOR_BYTES as usize]
    }

    fn run_all(d: &mut SimDisk<u32>) -> Vec<Completion<u32>> {
        d.poll(u64::MAX)
    }

    #[test]
    fn completed_write_is_visible_but_lost_on_crash_without_flush() {
        let mut d = disk();
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 0,
                data: fill(0xaa, 2),
                fua: false,
            },
        );
        assert_eq!(
            d.read_visible(0, 1024),
            fill(0, 2),
            "not visible before completion"
        );
        let c = run_all(&mut d);
        assert_eq!(
            c,
            vec![Completion {
                tag: 1,
                result: DiskResult::Written
            }]
        );
        assert_eq!(d.read_visible(0, 1024), fill(0xaa, 2));
        assert_eq!(d.read_durable(0, 1024), fill(0, 2));
        assert!(d.crash().is_empty());
        assert_eq!(d.read_visible(0, 1024), fill(0, 2));
    }

    #[test]
    fn flush_makes_earlier_completed_writes_durable_but_not_later_ones() {
        let mut d = disk();
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 0,
                data: fill(1, 1),
                fua: false,
            },
        );
        run_all(&mut d);
        d.submit(1000, 2, DiskOp::Flush);
        // Completes after the flush was submitted: not covered by it.
        d.submit(
            1000,
            3,
            DiskOp::Write {
                offset: 0,
                data: fill(2, 1),
                fua: false,
            },
        );
        d.submit(
            1000,
            4,
            DiskOp::Write {
                offset: 512,
                data: fill(3, 1),
                fua: false,
            },
        );
        let tags: Vec<u32> = run_all(&mut d).into_iter().map(|c| c.tag).collect();
        assert_eq!(tags.len(), 3);
        assert_eq!(d.read_visible(0, 1024), [fill(2, 1), fill(3, 1)].concat());
        d.crash();
        assert_eq!(d.read_visible(0, 1024), [fill(1, 1), fill(0, 1)].concat());
    }

    #[test]
    fn flush_keeps_newest_covered_version_when_a_later_write_is_cached() {
        let mut d = disk();
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 0,
                data: fill(1, 1),
                fua: false,
            },
        );
        run_all(&mut d);
        d.submit(
            1000,
            2,
            DiskOp::Write {
                offset: 0,
                data: fill(2, 1),
                fua: false,
            },
        );
        run_all(&mut d);
        // Submitted after write 2 completed, so it covers both; a later write 3 is not covered.
        d.submit(2000, 3, DiskOp::Flush);
        d.submit(
            2000,
            4,
            DiskOp::Write {
                offset: 0,
                data: fill(3, 1),
                fua: false,
            },
        );
        let c = d.poll(u64::MAX);
        // Whatever the completion order, write 4 completed after the flush was submitted.
        assert_eq!(c.len(), 2);
        assert_eq!(d.read_visible(0, 512), fill(3, 1));
        d.crash();
        assert_eq!(d.read_visible(0, 512), fill(2, 1));
    }

    #[test]
    fn fua_write_is_durable_on_completion() {
        let mut d = disk();
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 512,
                data: fill(7, 1),
                fua: true,
            },
        );
        run_all(&mut d);
        d.crash();
        assert_eq!(d.read_visible(512, 512), fill(7, 1));
    }

    #[test]
    fn crash_tears_in_flight_writes_at_sector_granularity_and_drops_their_completions() {
        let mut torn_some = false;
        let mut kept_some = false;
        for seed in 0..32 {
            let faults = DiskFaults {
                latency_min_ns: 10,
                latency_max_ns: 10,
                ..Default::default()
            };
            let mut d: SimDisk<u32> = SimDisk::new(64 * SECTOR_BYTES, faults, Prng::new(seed));
            d.submit(
                0,
                9,
                DiskOp::Write {
                    offset: 0,
                    data: fill(0x5a, 16),
                    fua: false,
                },
            );
            assert_eq!(d.crash(), vec![9]);
            assert!(d.poll(u64::MAX).is_empty(), "a crashed op never completes");
            let after = d.read_visible(0, 16 * SECTOR_BYTES);
            for sector in after.chunks(SECTOR_BYTES as usize) {
                // Every sector is entirely old or entirely new.
                assert!(sector.iter().all(|b| *b == 0) || sector.iter().all(|b| *b == 0x5a));
                if sector[0] == 0x5a {
                    torn_some = true;
                } else {
                    kept_some = true;
                }
            }
        }
        assert!(torn_some && kept_some);
    }

    #[test]
    fn injected_write_error_changes_nothing() {
        let faults = DiskFaults {
            latency_min_ns: 1,
            latency_max_ns: 1,
            read_error_ppm: 1_000_000,
            write_error_ppm: 1_000_000,
        };
        let mut d: SimDisk<u32> = SimDisk::new(64 * SECTOR_BYTES, faults, Prng::new(1));
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 0,
                data: fill(1, 1),
                fua: true,
            },
        );
        d.submit(
            0,
            2,
            DiskOp::Read {
                offset: 0,
                len: 512,
            },
        );
        let c = run_all(&mut d);
        assert!(c.iter().all(|c| c.result == DiskResult::Error));
        assert_eq!(d.read_visible(0, 512), fill(0, 1));
    }

    #[test]
    fn completions_come_in_time_order_and_respect_now() {
        let mut d = disk();
        for tag in 0..20 {
            d.submit(
                0,
                tag,
                DiskOp::Read {
                    offset: 0,
                    len: 512,
                },
            );
        }
        let first = d.next_completion_ns().expect("ops in flight");
        assert!(d.poll(first - 1).is_empty());
        let mut done = d.poll(first);
        assert!(!done.is_empty());
        done.extend(d.poll(u64::MAX));
        assert_eq!(done.len(), 20);
        assert_eq!(d.in_flight_len(), 0);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_write_is_a_caller_bug() {
        let mut d = disk();
        d.submit(
            0,
            1,
            DiskOp::Write {
                offset: 64 * 512,
                data: fill(1, 1),
                fua: false,
            },
        );
    }
}
