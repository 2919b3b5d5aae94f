//! The activity log (spec §4): 4 KiB transaction blocks in a ring, their crc32c, replay
//! (`apply-al`), and the in-memory hot set a Primary keeps.
//!
//! Block layout source: `struct al_transaction_on_disk` (drbd-8.4 `drbd_actlog.c`); replay
//! follows drbdmeta's `replay_al_84` so that both tools mark the same extents.

use std::collections::HashMap;

use crate::error::Error;
use crate::layout::{AlGeometry, Layout, BLOCK_BYTES};
use crate::MetaWrite;

/// `DRBD_AL_MAGIC`: first word of every 8.4 AL transaction block.
pub const DRBD_AL_MAGIC: u32 = 0x69cb_65a2;
/// `DRBD_MAGIC`: first word of a pre-8.4 (v07-style, 512-byte) AL sector.
pub const DRBD_MAGIC: u32 = 0x8374_0267;
/// `AL_TR_UPDATE`.
pub const AL_TR_UPDATE: u16 = 0;
/// `AL_TR_INITIALIZED`: a block written by create-md / apply-al, carrying nothing.
pub const AL_TR_INITIALIZED: u16 = 0xffff;
/// `AL_UPDATES_PER_TRANSACTION`: explicit slot changes one block can carry.
pub const AL_UPDATES_PER_TRANSACTION: usize = 64;
/// `AL_CONTEXT_PER_TRANSACTION`: slots of context one block carries ((4096 − 420) / 4).
pub const AL_CONTEXT_PER_TRANSACTION: usize = 919;
/// `AL_EXTENTS_MAX` (drbd_limits.h): largest al-extents; slots at or above are ignored.
pub const AL_EXTENTS_MAX: u32 = 65534;
/// `LC_FREE`: "no extent in this slot".
pub const LC_FREE: u32 = 0xffff_ffff;
/// crc32c (raw, seed 0, no final inversion) of an `AL_TR_INITIALIZED` block, spec §4.3.
pub const INITIALIZED_BLOCK_CRC: u32 = 0x709c_c651;
/// log2 of the bytes one AL extent covers (4 MiB).
pub const AL_EXTENT_SHIFT: u32 = 22;
/// Sectors per AL extent.
pub const AL_EXTENT_SECT: u64 = 1 << (AL_EXTENT_SHIFT - 9);

const OFF_CRC: usize = 8;
const OFF_UPDATE_SLOTS: usize = 36;
const OFF_UPDATE_EXTENTS: usize = OFF_UPDATE_SLOTS + 2 * AL_UPDATES_PER_TRANSACTION;
const OFF_CONTEXT: usize = OFF_UPDATE_EXTENTS + 4 * AL_UPDATES_PER_TRANSACTION;
const _: () = assert!(OFF_CONTEXT + 4 * AL_CONTEXT_PER_TRANSACTION == BLOCK_BYTES as usize);

/// The kernel's `crc32c(0, buf, len)`: Castagnoli, seed 0, no inversion on either end.
pub fn crc32c_raw(data: &[u8]) -> u32 {
    // crc32c_append(c, d) = !raw(!c, d), so raw(0, d) = !crc32c_append(!0, d).
    !crc32c::crc32c_append(0xffff_ffff, data)
}

/// AL extent number covering `sector` of the DRBD device.
pub fn extent_of_sector(sector: u64) -> u32 {
    (sector / AL_EXTENT_SECT) as u32
}

/// One decoded 8.4 AL transaction block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlTransaction {
    pub tr_number: u32,
    pub transaction_type: u16,
    pub context_size: u16,
    pub context_start_slot_nr: u16,
    /// `n_updates` explicit changes: (slot, new extent).
    pub updates: Vec<(u16, u32)>,
    /// Raw update arrays beyond `n_updates`, kept because replay looks at them (an entry
    /// past `n_updates` still counts unless its slot is 0xffff).
    pub extra_updates: Vec<(u16, u32)>,
    pub context: Box<[u32; AL_CONTEXT_PER_TRANSACTION]>,
}

/// Why a block is not a usable transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    Magic(u32),
    Checksum { stored: u32, computed: u32 },
}

impl AlTransaction {
    /// Decodes one 4 KiB block; only magic and crc32c decide validity, as in the kernel.
    pub fn decode(block: &[u8]) -> Result<AlTransaction, BlockError> {
        assert_eq!(block.len(), BLOCK_BYTES as usize, "AL blocks are 4 KiB");
        let be32 = |o: usize| u32::from_be_bytes(block[o..o + 4].try_into().expect("4 bytes"));
        let be16 = |o: usize| u16::from_be_bytes(block[o..o + 2].try_into().expect("2 bytes"));
        let magic = be32(0);
        if magic != DRBD_AL_MAGIC {
            return Err(BlockError::Magic(magic));
        }
        let stored = be32(OFF_CRC);
        let computed = block_crc(block);
        if stored != computed {
            return Err(BlockError::Checksum { stored, computed });
        }
        let n_updates = be16(14);
        let mut updates = Vec::new();
        let mut extra_updates = Vec::new();
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            let slot = be16(OFF_UPDATE_SLOTS + 2 * i);
            let extent = be32(OFF_UPDATE_EXTENTS + 4 * i);
            if i < usize::from(n_updates) {
                updates.push((slot, extent));
            } else if slot != 0xffff {
                extra_updates.push((slot, extent));
            }
        }
        let mut context = Box::new([LC_FREE; AL_CONTEXT_PER_TRANSACTION]);
        for (i, c) in context.iter_mut().enumerate() {
            *c = be32(OFF_CONTEXT + 4 * i);
        }
        Ok(AlTransaction {
            tr_number: be32(4),
            transaction_type: be16(12),
            context_size: be16(16),
            context_start_slot_nr: be16(18),
            updates,
            extra_updates,
            context,
        })
    }

    /// Encodes into a 4 KiB block with a valid crc32c.
    pub fn encode(&self) -> Box<[u8; BLOCK_BYTES as usize]> {
        assert!(
            self.updates.len() <= AL_UPDATES_PER_TRANSACTION,
            "at most 64 updates per transaction"
        );
        let mut b = Box::new([0u8; BLOCK_BYTES as usize]);
        b[0..4].copy_from_slice(&DRBD_AL_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.tr_number.to_be_bytes());
        b[12..14].copy_from_slice(&self.transaction_type.to_be_bytes());
        b[14..16].copy_from_slice(&(self.updates.len() as u16).to_be_bytes());
        b[16..18].copy_from_slice(&self.context_size.to_be_bytes());
        b[18..20].copy_from_slice(&self.context_start_slot_nr.to_be_bytes());
        for i in 0..AL_UPDATES_PER_TRANSACTION {
            // Unused entries: slot 0xffff, extent LC_FREE, as the kernel writes them.
            let (slot, extent) = self.updates.get(i).copied().unwrap_or((0xffff, LC_FREE));
            b[OFF_UPDATE_SLOTS + 2 * i..][..2].copy_from_slice(&slot.to_be_bytes());
            b[OFF_UPDATE_EXTENTS + 4 * i..][..4].copy_from_slice(&extent.to_be_bytes());
        }
        for (i, c) in self.context.iter().enumerate() {
            b[OFF_CONTEXT + 4 * i..][..4].copy_from_slice(&c.to_be_bytes());
        }
        let crc = block_crc(&b[..]);
        b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// crc32c of a block with its crc field taken as zero.
fn block_crc(block: &[u8]) -> u32 {
    let zero = [0u8; 4];
    let c = crc32c::crc32c_append(0xffff_ffff, &block[..OFF_CRC]);
    let c = crc32c::crc32c_append(c, &zero);
    !crc32c::crc32c_append(c, &block[OFF_CRC + 4..])
}

/// An `AL_TR_INITIALIZED` block: magic, type 0xffff, crc, zeros (spec §4.3).
pub fn initialized_block() -> Box<[u8; BLOCK_BYTES as usize]> {
    let mut b = Box::new([0u8; BLOCK_BYTES as usize]);
    b[0..4].copy_from_slice(&DRBD_AL_MAGIC.to_be_bytes());
    b[12..14].copy_from_slice(&AL_TR_INITIALIZED.to_be_bytes());
    let crc = block_crc(&b[..]);
    b[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A whole initialised AL area for `al` (what create-md and apply-al write).
pub fn initialized_area(al: AlGeometry) -> Vec<u8> {
    let block = initialized_block();
    let mut v = Vec::with_capacity(al.size_bytes() as usize);
    for _ in 0..al.blocks() {
        v.extend_from_slice(&block[..]);
    }
    v
}

/// What replaying the AL found (drbdmeta `replay_al_84` return values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Valid update transactions were found; `hot` holds the extents to mark.
    Updates { transactions: u32 },
    /// Only initialised blocks (or only the first block unreadable): nothing to apply.
    Clean,
    /// No block carried a valid magic and checksum (`-ENODATA`, "No usable activity log").
    NoUsableLog,
    /// Some blocks valid, none an update, more than the first one corrupt (`-EINVAL`).
    NoValidUpdate,
}

/// Result of [`replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub outcome: ReplayOutcome,
    /// Extent per AL slot after replaying oldest → newest; `LC_FREE` for empty slots.
    /// Length `AL_EXTENTS_MAX`.
    pub slots: Vec<u32>,
    /// Blocks that failed the magic or checksum test.
    pub corrupt_blocks: u32,
    /// Highest transaction number among valid updates.
    pub newest_tr: Option<u32>,
    /// Messages drbdmeta would print about the log (out-of-range slots etc.).
    pub warnings: Vec<String>,
}

impl Replay {
    /// The hot extents, ascending, without duplicates.
    pub fn hot_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .slots
            .iter()
            .copied()
            .filter(|e| *e != LC_FREE)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Replays an 8.4-format AL area (`area` = the whole ring, `al.size_bytes()` bytes) into the
/// per-slot hot set (spec §4.4 steps 1–4).
pub fn replay(area: &[u8], al: AlGeometry) -> Replay {
    let mx = al.blocks();
    assert_eq!(
        area.len() as u64,
        al.size_bytes(),
        "replay needs the whole AL area"
    );
    let mut decoded: Vec<Option<AlTransaction>> = Vec::with_capacity(mx as usize);
    let mut found_valid = 0u32;
    let mut updates = 0u32;
    // (logical index, tr_number)
    let mut oldest: Option<(u32, u32)> = None;
    let mut newest: Option<(u32, u32)> = None;
    for b in 0..mx {
        let o = al.block_of_transaction(b) as usize * BLOCK_BYTES as usize;
        let t = AlTransaction::decode(&area[o..o + BLOCK_BYTES as usize]).ok();
        if let Some(t) = &t {
            found_valid += 1;
            if t.transaction_type != AL_TR_INITIALIZED {
                updates += 1;
                let tr = t.tr_number;
                match oldest {
                    Some((_, otr)) if (tr.wrapping_sub(otr) as i32) >= 0 => {}
                    _ => oldest = Some((b, tr)),
                }
                match newest {
                    Some((_, ntr)) if (tr.wrapping_sub(ntr) as i32) <= 0 => {}
                    _ => newest = Some((b, tr)),
                }
            }
        }
        decoded.push(t);
    }
    let mut r = Replay {
        outcome: ReplayOutcome::Clean,
        slots: vec![LC_FREE; AL_EXTENTS_MAX as usize],
        corrupt_blocks: mx - found_valid,
        newest_tr: newest.map(|n| n.1),
        warnings: Vec::new(),
    };
    if found_valid == 0 {
        r.outcome = ReplayOutcome::NoUsableLog;
        return r;
    }
    let (Some((oi, _)), Some((ni, _))) = (oldest, newest) else {
        // No update transactions. Fine if every block is initialised, or only the very first
        // write failed; anything else is unexpected.
        r.outcome = if found_valid == mx || (decoded[0].is_none() && found_valid == mx - 1) {
            ReplayOutcome::Clean
        } else {
            ReplayOutcome::NoValidUpdate
        };
        return r;
    };
    let end = if ni < oi { ni + mx } else { ni };
    for b in oi..=end {
        let idx = (b % mx) as usize;
        let Some(t) = &decoded[idx] else { continue };
        if t.transaction_type == AL_TR_INITIALIZED {
            continue;
        }
        for (i, &extent) in t.context.iter().enumerate() {
            let slot = u32::from(t.context_start_slot_nr) + i as u32;
            if extent == LC_FREE && slot >= u32::from(t.context_size) {
                continue;
            }
            if slot >= AL_EXTENTS_MAX {
                r.warnings
                    .push(format!("slot number out of range: tr:{idx} slot:{slot}"));
                continue;
            }
            r.slots[slot as usize] = extent;
        }
        for &(slot, extent) in t.updates.iter().chain(&t.extra_updates) {
            if u32::from(slot) >= AL_EXTENTS_MAX {
                r.warnings.push(format!(
                    "update slot number out of range: tr:{idx} slot:{slot}"
                ));
                continue;
            }
            r.slots[usize::from(slot)] = extent;
        }
    }
    r.outcome = ReplayOutcome::Updates {
        transactions: updates,
    };
    r
}

/// Replays a pre-8.4 AL (512-byte sectors, 62 (slot, extent) pairs and an XOR checksum), the
/// format drbdmeta falls back to for MAGIC_08 meta-data whose first two blocks lack the 8.4
/// AL magic. Returns the per-slot hot set and the number of valid sectors.
pub fn replay_v07(area: &[u8], al_nr_extents: u32) -> (Vec<u32>, u32) {
    const PER_SECTOR: u32 = 61;
    let mut slots = vec![LC_FREE; AL_EXTENTS_MAX as usize];
    let mx = (1 + al_nr_extents.div_ceil(PER_SECTOR)).min(64) as usize;
    let be32 = |o: usize| u32::from_be_bytes(area[o..o + 4].try_into().expect("4 bytes"));
    let mut valid = vec![false; mx];
    let mut found = 0u32;
    let mut oldest: Option<(usize, u32)> = None;
    let mut newest: Option<(usize, u32)> = None;
    for (b, v) in valid.iter_mut().enumerate() {
        let base = b * 512;
        let xor = (0..62).fold(0u32, |x, i| x ^ be32(base + 8 + 8 * i + 4));
        if be32(base) != DRBD_MAGIC || be32(base + 8 + 62 * 8) != xor {
            continue;
        }
        *v = true;
        found += 1;
        let tr = be32(base + 4);
        match oldest {
            Some((_, o)) if (tr.wrapping_sub(o) as i32) >= 0 => {}
            _ => oldest = Some((b, tr)),
        }
        match newest {
            Some((_, n)) if (tr.wrapping_sub(n) as i32) <= 0 => {}
            _ => newest = Some((b, tr)),
        }
    }
    let (Some((oi, _)), Some((ni, _))) = (oldest, newest) else {
        return (slots, 0);
    };
    let end = if ni < oi { ni + mx } else { ni };
    for b in oi..=end {
        let idx = b % mx;
        if !valid[idx] {
            continue;
        }
        let base = idx * 512;
        for i in (0..=PER_SECTOR as usize).rev() {
            let pos = be32(base + 8 + 8 * i);
            let extent = be32(base + 8 + 8 * i + 4);
            if extent == LC_FREE || pos >= AL_EXTENTS_MAX {
                continue;
            }
            slots[pos as usize] = extent;
        }
    }
    (slots, found)
}

/// One transaction to write, produced by [`ActivityLog::make_hot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlWrite {
    pub tr_number: u32,
    /// Extents that left the hot set in this transaction. Their bitmap pages must be durable
    /// before this transaction is written (see the crate docs, rule 2).
    pub evicted: Vec<u32>,
    /// Absolute byte offset and the 4 KiB block.
    pub write: MetaWrite,
}

/// What [`ActivityLog::make_hot_with`] asks for, in order: write and flush
/// `bitmap_writes` (if any), write and flush `transaction.write`, call
/// [`ActivityLog::transaction_written`], then issue the data writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlStep {
    pub bitmap_writes: Vec<MetaWrite>,
    pub transaction: AlWrite,
}

/// The hot set of a Primary: which 4 MiB extents may be written without a new transaction.
///
/// Slots are handed out lowest-free first, then least-recently-used idle (no I/O in
/// flight). One transaction may be in flight at a time: the next `make_hot` that needs a
/// transaction fails with [`Error::AlInFlight`] until [`ActivityLog::transaction_written`].
#[derive(Debug, Clone)]
pub struct ActivityLog {
    layout: Layout,
    nr_slots: u32,
    slot_extent: Vec<u32>,
    slot_refs: Vec<u32>,
    slot_used: Vec<u64>,
    clock: u64,
    by_extent: HashMap<u32, u32>,
    next_tr: u32,
    context_start: u32,
    in_flight: Option<u32>,
}

impl ActivityLog {
    /// An empty hot set over an initialised ring (as left by create-md or apply-al), with
    /// `nr_slots` slots ("al-extents"). The first transaction is number 0.
    pub fn new(layout: Layout, nr_slots: u32) -> Result<ActivityLog, Error> {
        let max = layout.al.max_al_extents();
        if nr_slots == 0 || nr_slots > max {
            return Err(Error::InvalidArgument {
                field: "al-extents",
                value: nr_slots.to_string(),
                reason: "must be 1 ..= (AL blocks − 1) × 919 (and ≤ 65534)",
            });
        }
        let n = nr_slots as usize;
        Ok(ActivityLog {
            layout,
            nr_slots,
            slot_extent: vec![LC_FREE; n],
            slot_refs: vec![0; n],
            slot_used: vec![0; n],
            clock: 0,
            by_extent: HashMap::with_capacity(n),
            next_tr: 0,
            context_start: 0,
            in_flight: None,
        })
    }

    pub fn nr_slots(&self) -> u32 {
        self.nr_slots
    }

    /// True if `extent` is in the hot set (its transaction is written or in flight).
    pub fn is_hot(&self, extent: u32) -> bool {
        self.by_extent.contains_key(&extent)
    }

    /// The hot extents, ascending.
    pub fn hot_extents(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.by_extent.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Number of I/Os holding `extent`.
    pub fn refs(&self, extent: u32) -> u32 {
        self.by_extent
            .get(&extent)
            .map_or(0, |&s| self.slot_refs[s as usize])
    }

    /// Takes a reference on every extent in `extents` for one write each, and returns the
    /// transaction to write first if any of them was cold. The data writes into these
    /// extents may be issued only after the returned transaction is durable and
    /// [`ActivityLog::transaction_written`] was called. On error nothing changes.
    pub fn make_hot(&mut self, extents: &[u32]) -> Result<Option<AlWrite>, Error> {
        let mut cold: Vec<u32> = extents
            .iter()
            .copied()
            .filter(|e| !self.by_extent.contains_key(e))
            .collect();
        cold.sort_unstable();
        cold.dedup();
        if cold.contains(&LC_FREE) {
            return Err(Error::InvalidArgument {
                field: "extent",
                value: format!("{LC_FREE:#x}"),
                reason: "LC_FREE is not an extent number",
            });
        }
        if cold.len() > AL_UPDATES_PER_TRANSACTION {
            return Err(Error::InvalidArgument {
                field: "extents",
                value: cold.len().to_string(),
                reason: "at most 64 cold extents per transaction",
            });
        }
        if !cold.is_empty() {
            if let Some(tr_number) = self.in_flight {
                return Err(Error::AlInFlight { tr_number });
            }
        }
        // Pick victim slots before changing anything.
        let wanted: std::collections::HashSet<u32> = extents.iter().copied().collect();
        let mut candidates: Vec<usize> = (0..self.nr_slots as usize)
            .filter(|&s| {
                let e = self.slot_extent[s];
                e == LC_FREE || (self.slot_refs[s] == 0 && !wanted.contains(&e))
            })
            .collect();
        // Free slots first (lowest index), then least recently used.
        candidates.sort_by_key(|&s| (self.slot_extent[s] != LC_FREE, self.slot_used[s], s));
        if candidates.len() < cold.len() {
            return Err(Error::AlBusy {
                slots: self.nr_slots,
            });
        }
        self.clock += 1;
        for &e in extents {
            if let Some(&s) = self.by_extent.get(&e) {
                self.slot_refs[s as usize] += 1;
                self.slot_used[s as usize] = self.clock;
            }
        }
        if cold.is_empty() {
            return Ok(None);
        }
        let mut updates = Vec::with_capacity(cold.len());
        let mut evicted = Vec::new();
        for (&e, &s) in cold.iter().zip(&candidates) {
            let old = self.slot_extent[s];
            if old != LC_FREE {
                self.by_extent.remove(&old);
                evicted.push(old);
            }
            self.slot_extent[s] = e;
            self.slot_used[s] = self.clock;
            self.by_extent.insert(e, s as u32);
            updates.push((s as u16, e));
        }
        for &e in extents.iter().filter(|e| cold.binary_search(e).is_ok()) {
            let s = self.by_extent[&e] as usize;
            self.slot_refs[s] += 1;
        }
        let tr_number = self.next_tr;
        let start = self.context_start;
        let mut context = Box::new([LC_FREE; AL_CONTEXT_PER_TRANSACTION]);
        for (i, c) in context.iter_mut().enumerate() {
            let slot = start as usize + i;
            if slot < self.nr_slots as usize {
                *c = self.slot_extent[slot];
            }
        }
        self.context_start = start + AL_CONTEXT_PER_TRANSACTION as u32;
        if self.context_start >= self.nr_slots {
            self.context_start = 0;
        }
        let t = AlTransaction {
            tr_number,
            transaction_type: AL_TR_UPDATE,
            context_size: self.nr_slots as u16,
            context_start_slot_nr: start as u16,
            updates,
            extra_updates: Vec::new(),
            context,
        };
        self.in_flight = Some(tr_number);
        Ok(Some(AlWrite {
            tr_number,
            evicted,
            write: MetaWrite {
                offset: self.layout.al_transaction_offset(tr_number),
                data: t.encode().to_vec(),
            },
        }))
    }

    /// [`ActivityLog::make_hot`] plus rule 2 of the crate docs done for the caller: the
    /// bitmap pages of every evicted extent that are dirty in `bitmap`, to be written and
    /// flushed before the transaction.
    pub fn make_hot_with(
        &mut self,
        extents: &[u32],
        bitmap: &mut crate::Bitmap,
    ) -> Result<Option<AlStep>, Error> {
        let Some(transaction) = self.make_hot(extents)? else {
            return Ok(None);
        };
        let mut bitmap_writes = Vec::new();
        for &e in &transaction.evicted {
            bitmap_writes.extend(bitmap.extent_writes(&self.layout, e));
        }
        Ok(Some(AlStep {
            bitmap_writes,
            transaction,
        }))
    }

    /// Records that transaction `tr_number` is durable; later transactions may be built.
    pub fn transaction_written(&mut self, tr_number: u32) {
        assert_eq!(
            self.in_flight,
            Some(tr_number),
            "transaction_written for a transaction that is not in flight"
        );
        self.in_flight = None;
        self.next_tr = self.next_tr.wrapping_add(1);
    }

    /// Drops one reference on `extent` (its write completed).
    pub fn release(&mut self, extent: u32) {
        let s = *self
            .by_extent
            .get(&extent)
            .unwrap_or_else(|| panic!("release of extent {extent} that is not hot"))
            as usize;
        assert!(
            self.slot_refs[s] > 0,
            "release of extent {extent} without a reference"
        );
        self.slot_refs[s] -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MetaIndex;

    fn layout() -> Layout {
        Layout::new(MetaIndex::Internal, 1 << 30, AlGeometry::default()).unwrap()
    }

    /// Spec §4.3: bytes and checksum of an initialised block.
    #[test]
    fn initialized_block_golden() {
        let b = initialized_block();
        assert_eq!(
            &b[..16],
            &[0x69, 0xcb, 0x65, 0xa2, 0, 0, 0, 0, 0x70, 0x9c, 0xc6, 0x51, 0xff, 0xff, 0, 0]
        );
        assert!(b[16..].iter().all(|&x| x == 0));
        let mut z = *b;
        z[8..12].fill(0);
        assert_eq!(crc32c_raw(&z), INITIALIZED_BLOCK_CRC);
    }

    #[test]
    fn transaction_round_trips() {
        let mut context = Box::new([LC_FREE; AL_CONTEXT_PER_TRANSACTION]);
        context[0] = 7;
        let t = AlTransaction {
            tr_number: 42,
            transaction_type: AL_TR_UPDATE,
            context_size: 61,
            context_start_slot_nr: 0,
            updates: vec![(3, 99)],
            extra_updates: vec![],
            context,
        };
        assert_eq!(AlTransaction::decode(&t.encode()[..]).unwrap(), t);
    }

    #[test]
    fn rejects_corrupt_checksum() {
        let l = layout();
        let mut al = ActivityLog::new(l, 61).unwrap();
        let w = al.make_hot(&[5]).unwrap().unwrap();
        let mut block = w.write.data.clone();
        block[500] ^= 1;
        assert!(matches!(
            AlTransaction::decode(&block),
            Err(BlockError::Checksum { .. })
        ));
    }

    fn ring_with(al: &mut ActivityLog, area: &mut [u8], w: AlWrite) {
        let base = layout().al_offset();
        let o = (w.write.offset - base) as usize;
        area[o..o + 4096].copy_from_slice(&w.write.data);
        al.transaction_written(w.tr_number);
    }

    #[test]
    fn replay_recovers_hot_set_across_ring_wrap() {
        let geo = AlGeometry::default();
        let mut area = initialized_area(geo);
        let mut al = ActivityLog::new(layout(), 61).unwrap();
        // More transactions than ring blocks, with evictions.
        for e in 0..100u32 {
            if let Some(w) = al.make_hot(&[e]).unwrap() {
                ring_with(&mut al, &mut area, w);
            }
            al.release(e);
        }
        let r = replay(&area, geo);
        assert!(matches!(r.outcome, ReplayOutcome::Updates { .. }));
        assert_eq!(r.hot_extents(), al.hot_extents());
    }

    proptest::proptest! {
        /// Any sequence of activations: replaying the ring gives the in-memory hot set, and
        /// with the newest block torn, the hot set before the last transaction.
        #[test]
        fn replay_matches_hot_set(
            slots in 1u32..200,
            ops in proptest::collection::vec((0u32..400, 1usize..4), 1..120),
        ) {
            let geo = AlGeometry::default();
            let mut area = initialized_area(geo);
            let mut al = ActivityLog::new(layout(), slots).unwrap();
            let mut before_last = Vec::new();
            let mut last = None;
            for (first, n) in ops {
                let ext: Vec<u32> = (first..first + n as u32).collect();
                match al.make_hot(&ext) {
                    Ok(Some(w)) => {
                        before_last = al_hot_before(&al, &w);
                        last = Some(w.write.offset);
                        ring_with(&mut al, &mut area, w);
                    }
                    Ok(None) => {}
                    Err(Error::AlBusy { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
                for e in ext {
                    al.release(e);
                }
            }
            let r = replay(&area, geo);
            proptest::prop_assert_eq!(r.hot_extents(), al.hot_extents());
            if let Some(off) = last {
                let o = (off - layout().al_offset()) as usize;
                area[o + 1000] ^= 1;
                let r = replay(&area, geo);
                proptest::prop_assert_eq!(r.hot_extents(), before_last);
            }
        }

        /// Arbitrary bytes in the AL area never panic replay.
        #[test]
        fn replay_survives_garbage(seed in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut area = initialized_area(AlGeometry::default());
            for (i, b) in seed.iter().enumerate() {
                let o = (usize::from(*b) * 131 + i * 4099) % area.len();
                area[o] ^= b | 1;
            }
            let _ = replay(&area, AlGeometry::default());
        }
    }

    /// The hot set as it was before transaction `w` (whose changes are already applied).
    fn al_hot_before(al: &ActivityLog, w: &AlWrite) -> Vec<u32> {
        let t = AlTransaction::decode(&w.write.data).unwrap();
        let mut hot: std::collections::BTreeSet<u32> = al.hot_extents().into_iter().collect();
        for (_, e) in &t.updates {
            hot.remove(e);
        }
        hot.extend(w.evicted.iter().copied());
        hot.into_iter().collect()
    }

    #[test]
    fn replay_of_initialized_ring_is_clean() {
        let r = replay(
            &initialized_area(AlGeometry::default()),
            AlGeometry::default(),
        );
        assert_eq!(r.outcome, ReplayOutcome::Clean);
        assert!(r.hot_extents().is_empty());
    }

    #[test]
    fn replay_of_zeroes_finds_no_log() {
        let r = replay(&[0u8; 32768], AlGeometry::default());
        assert_eq!(r.outcome, ReplayOutcome::NoUsableLog);
    }

    #[test]
    fn busy_when_every_slot_has_io() {
        let mut al = ActivityLog::new(layout(), 2).unwrap();
        let w = al.make_hot(&[1, 2]).unwrap().unwrap();
        al.transaction_written(w.tr_number);
        assert!(matches!(al.make_hot(&[3]), Err(Error::AlBusy { slots: 2 })));
        al.release(1);
        let w = al.make_hot(&[3]).unwrap().unwrap();
        assert_eq!(w.evicted, [1]);
    }

    #[test]
    fn eviction_hands_out_the_evicted_extents_dirty_bitmap_page_first() {
        let l = layout();
        let mut bm = crate::Bitmap::for_sectors(l.max_usable_sect);
        let mut al = ActivityLog::new(l, 1).unwrap();
        let s = al.make_hot_with(&[3], &mut bm).unwrap().unwrap();
        assert!(s.bitmap_writes.is_empty());
        al.transaction_written(s.transaction.tr_number);
        bm.set_extent(3); // e.g. written while disconnected
        al.release(3);
        let s = al.make_hot_with(&[40], &mut bm).unwrap().unwrap();
        assert_eq!(s.transaction.evicted, [3]);
        assert_eq!(s.bitmap_writes.len(), 1);
        assert_eq!(s.bitmap_writes[0].offset, l.bm_offset());
        assert_eq!(&s.bitmap_writes[0].data[3 * 128..4 * 128], &[0xff; 128][..]);
        assert!(!bm.is_dirty(0), "handed out, so clean");
    }

    #[test]
    fn second_transaction_waits_for_first() {
        let mut al = ActivityLog::new(layout(), 10).unwrap();
        let w = al.make_hot(&[1]).unwrap().unwrap();
        assert!(matches!(
            al.make_hot(&[2]),
            Err(Error::AlInFlight { tr_number: 0 })
        ));
        assert_eq!(
            al.make_hot(&[1]).unwrap(),
            None,
            "hot extents need no transaction"
        );
        al.transaction_written(w.tr_number);
        assert!(al.make_hot(&[2]).unwrap().is_some());
    }
}
