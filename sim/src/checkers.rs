//! The oracle: what the upper layer was promised, and the invariants the pair must keep.
//!
//! Every 4 KiB block the workload writes carries its write id in every sector, so the checkers
//! can name which write a disk holds (or that a block is a torn mixture).
//!
//! The model keeps, per block, the set of values a correct replicated device may hold:
//! - normally the last completed write (plus a write still in flight to it);
//! - after a crash, any value written since the last completed flush covering it, because block
//!   devices promise durability only for flushed data (and DRBD resyncs a crashed Primary's
//!   activity-log extents from that Primary, whatever it kept).

use std::collections::BTreeMap;
use std::fmt;

pub const BLOCK_BYTES: u64 = 4096;
const SECTOR: usize = 512;

/// Why a run failed; each class has its own exit code (TigerBeetle's `Failure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The engine panicked, returned an error it should not, or asked for impossible I/O.
    Crash,
    /// A safety invariant was violated.
    Correctness,
    /// The healed pair did not converge within the budget.
    Liveness,
}

impl FailureClass {
    pub fn exit_code(self) -> i32 {
        match self {
            FailureClass::Crash => 10,
            FailureClass::Correctness => 11,
            FailureClass::Liveness => 12,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub class: FailureClass,
    /// Which invariant, short and stable (used by the mutation tests).
    pub check: &'static str,
    pub detail: String,
    pub at_ns: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} [{}] at {} ns: {}",
            self.class, self.check, self.at_ns, self.detail
        )
    }
}

/// The bytes of block `block` as written by write `write_id` (ids start at 1; 0 = zeros).
/// Every sector names its write, block and index in a header and is filled with words derived
/// from them, so any sector found on a disk can be traced to exactly one write.
pub fn block_pattern(write_id: u64, block: u64) -> Vec<u8> {
    let mut out = vec![0u8; BLOCK_BYTES as usize];
    if write_id == 0 {
        return out;
    }
    for (i, sector) in out.chunks_mut(SECTOR).enumerate() {
        for (w, word) in sector.chunks_mut(8).enumerate() {
            word.copy_from_slice(&sector_word(write_id, block, i as u64, w).to_le_bytes());
        }
    }
    out
}

fn sector_word(id: u64, block: u64, index: u64, w: usize) -> u64 {
    match w {
        0 => id,
        1 => block,
        2 => index,
        _ => {
            id.rotate_left(17)
                ^ block.rotate_left(40)
                ^ index
                ^ (w as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
    }
}

/// What a block holds, as far as the checkers can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockValue {
    Write(u64),
    /// Sectors from different writes (a torn or half-synced block) or foreign bytes.
    Mixed,
}

pub fn identify(data: &[u8], block: u64) -> BlockValue {
    let mut value = None;
    for (i, sector) in data.chunks(SECTOR).enumerate() {
        match sector_value(sector, block, i as u64) {
            Some(id) if value.map_or(true, |v| v == id) => value = Some(id),
            _ => return BlockValue::Mixed,
        }
    }
    value.map_or(BlockValue::Mixed, BlockValue::Write)
}

/// The write whose sector `index` of block `block` this is (0 = zeros), or None for bytes no
/// write of the workload put there.
fn sector_value(sector: &[u8], block: u64, index: u64) -> Option<u64> {
    let word = |w: usize| u64::from_le_bytes(sector[8 * w..8 * w + 8].try_into().expect("8 bytes"));
    let id = word(0);
    if id == 0 {
        return sector.iter().all(|b| *b == 0).then_some(0);
    }
    (0..SECTOR / 8)
        .all(|w| word(w) == sector_word(id, block, index, w))
        .then_some(id)
}

#[derive(Clone, Debug)]
struct BlockModel {
    acked: u64,
    in_flight: Option<u64>,
    /// Every value a crash may leave: the value at the last durability point and all written
    /// (or attempted) since.
    history: Vec<u64>,
    fuzzy: bool,
    last_complete_gen: u64,
}

impl Default for BlockModel {
    fn default() -> Self {
        BlockModel {
            acked: 0,
            in_flight: None,
            history: vec![0],
            fuzzy: false,
            last_complete_gen: 0,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    blocks: BTreeMap<u64, BlockModel>,
    gen: u64,
    /// Set when the run made two lineages of data (a promotion from stale data): value checks
    /// pause until the pair is back in sync, then restart from what it holds.
    pub diverged: bool,
}

impl Model {
    pub fn write_issued(&mut self, id: u64, blocks: &[u64]) {
        for b in blocks {
            let m = self.blocks.entry(*b).or_default();
            assert!(
                m.in_flight.is_none(),
                "workload issued overlapping writes to block {b}"
            );
            m.in_flight = Some(id);
            m.history.push(id);
        }
    }

    pub fn write_completed(&mut self, id: u64, blocks: &[u64], ok: bool) {
        self.gen += 1;
        for b in blocks {
            let m = self.blocks.entry(*b).or_default();
            assert_eq!(m.in_flight, Some(id));
            m.in_flight = None;
            if ok {
                m.acked = id;
                m.fuzzy = false;
                m.last_complete_gen = self.gen;
            } else {
                // A failed write leaves the block undefined between old and new.
                m.fuzzy = true;
            }
        }
    }

    /// The node holding this request crashed: it never completes, either value may remain.
    pub fn write_abandoned(&mut self, id: u64, blocks: &[u64]) {
        for b in blocks {
            let m = self.blocks.entry(*b).or_default();
            if m.in_flight == Some(id) {
                m.in_flight = None;
                m.fuzzy = true;
            }
        }
    }

    pub fn flush_issued(&self) -> u64 {
        self.gen
    }

    /// A flush issued when the generation was `gen` completed: every block whose last write
    /// completed before it is durable.
    pub fn flush_completed(&mut self, gen: u64) {
        for m in self.blocks.values_mut() {
            if m.last_complete_gen <= gen && m.in_flight.is_none() && !m.fuzzy {
                m.history = vec![m.acked];
            }
        }
    }

    pub fn crashed(&mut self) {
        for m in self.blocks.values_mut() {
            if m.history.len() > 1 || m.in_flight.is_some() {
                m.fuzzy = true;
            }
        }
    }

    pub fn allowed(&self, block: u64, value: BlockValue) -> bool {
        let Some(m) = self.blocks.get(&block) else {
            return value == BlockValue::Write(0);
        };
        let BlockValue::Write(v) = value else {
            return false;
        };
        if m.fuzzy {
            v == m.acked || m.history.contains(&v)
        } else {
            v == m.acked || m.in_flight == Some(v)
        }
    }

    /// Whether `data` is a value block `block` may hold. After a crash, a write that was in
    /// flight may have landed partly (sectors are the unit of atomicity), so each sector may come
    /// from any value a crash may leave.
    pub fn allows_data(&self, block: u64, data: &[u8]) -> bool {
        let v = identify(data, block);
        if self.allowed(block, v) {
            return true;
        }
        let Some(m) = self.blocks.get(&block) else {
            return false;
        };
        if !m.fuzzy {
            return false;
        }
        data.chunks(SECTOR).enumerate().all(|(i, sector)| {
            sector_value(sector, block, i as u64)
                .is_some_and(|id| id == m.acked || m.history.contains(&id))
        })
    }

    pub fn expected(&self, block: u64) -> String {
        match self.blocks.get(&block) {
            None => "write 0 (never written)".into(),
            Some(m) if m.fuzzy => format!("one of {:?} (after a crash)", m.history),
            Some(m) => format!("write {} (in flight: {:?})", m.acked, m.in_flight),
        }
    }

    pub fn in_flight(&self, block: u64) -> bool {
        self.blocks
            .get(&block)
            .is_some_and(|m| m.in_flight.is_some())
    }

    pub fn blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.keys().copied()
    }

    pub fn any_in_flight(&self) -> bool {
        self.blocks.values().any(|m| m.in_flight.is_some())
    }

    /// Rebase one block on what the synced disks hold: a whole write, or a torn mixture of
    /// known writes (kept as a set of acceptable sector sources). Foreign bytes are not adopted.
    pub fn rebase_block(&mut self, block: u64, data: &[u8]) {
        let ids: Option<Vec<u64>> = data
            .chunks(SECTOR)
            .enumerate()
            .map(|(i, s)| sector_value(s, block, i as u64))
            .collect();
        let Some(mut ids) = ids else { return };
        ids.sort_unstable();
        ids.dedup();
        let m = self.blocks.entry(block).or_default();
        m.acked = ids[0];
        m.fuzzy = ids.len() > 1;
        m.history = ids;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_identify_their_write_and_torn_blocks_are_mixed() {
        let a = block_pattern(5, 17);
        assert_eq!(identify(&a, 17), BlockValue::Write(5));
        assert_eq!(
            identify(&a, 18),
            BlockValue::Mixed,
            "a block at the wrong place is foreign"
        );
        assert_eq!(identify(&[0u8; 4096], 3), BlockValue::Write(0));
        let mut torn = block_pattern(6, 17);
        torn[512..1024].copy_from_slice(&a[512..1024]);
        assert_eq!(identify(&torn, 17), BlockValue::Mixed);
    }

    #[test]
    fn model_follows_completion_flush_and_crash() {
        let mut m = Model::default();
        m.write_issued(1, &[0]);
        assert!(m.allowed(0, BlockValue::Write(0)) && m.allowed(0, BlockValue::Write(1)));
        m.write_completed(1, &[0], true);
        assert!(
            !m.allowed(0, BlockValue::Write(0)),
            "a completed write must be visible"
        );
        m.crashed();
        assert!(
            m.allowed(0, BlockValue::Write(0)),
            "not flushed: a crash may lose it"
        );
        let g = {
            m.write_issued(2, &[0]);
            m.write_completed(2, &[0], true);
            m.flush_issued()
        };
        m.flush_completed(g);
        m.crashed();
        assert!(
            !m.allowed(0, BlockValue::Write(1)),
            "flushed: only write 2 may remain"
        );
        assert!(m.allowed(0, BlockValue::Write(2)));
        assert!(!m.allowed(0, BlockValue::Mixed));
    }

    #[test]
    fn torn_blocks_are_allowed_only_after_a_crash_and_only_from_known_writes() {
        let mut m = Model::default();
        m.write_issued(1, &[4]);
        m.write_completed(1, &[4], true);
        m.write_issued(2, &[4]);
        let mut torn = block_pattern(1, 4);
        torn[..512].copy_from_slice(&block_pattern(2, 4)[..512]);
        assert!(!m.allows_data(4, &torn), "no crash: a block is never torn");
        m.write_abandoned(2, &[4]);
        m.crashed();
        assert!(m.allows_data(4, &torn));
        let mut foreign = block_pattern(1, 4);
        foreign[..512].copy_from_slice(&block_pattern(9, 4)[..512]);
        assert!(!m.allows_data(4, &foreign), "write 9 never went to block 4");
    }
}
