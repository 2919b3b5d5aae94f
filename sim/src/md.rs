//! Reads and writes DRBD v08 meta-data on a simulated disk, the way the daemon's attach path
//! does (`drbdadm up` = `drbdmeta apply-al` + attach): decode the superblock, replay the activity
//! log into the bitmap, re-initialise the log and mark the meta-data clean.
//!
//! Written from the spec (drbd-metadata.md §2–§5) so the simulator can judge what the engine
//! left on disk independently of the code that wrote it.

use crate::disk::SimDisk;

/// `DRBD_MD_MAGIC_08`, clean (spec drbd-metadata.md §2.1).
pub const MAGIC_08: u32 = 0x8374_026b;
/// `DRBD_MD_MAGIC_84_UNCLEAN`: an 8.4 kernel has it attached.
pub const MAGIC_84_UNCLEAN: u32 = 0x8374_026c;
/// `DRBD_AL_MAGIC` on every activity-log block.
pub const AL_MAGIC: u32 = 0x69cb_65a2;
pub const MDF_CONSISTENT: u32 = 0x001;
pub const MDF_PRIMARY_IND: u32 = 0x002;
pub const MDF_CONNECTED_IND: u32 = 0x004;
pub const MDF_FULL_SYNC: u32 = 0x008;
pub const MDF_WAS_UP_TO_DATE: u32 = 0x010;
pub const MDF_PEER_OUT_DATED: u32 = 0x020;
pub const MDF_CRASHED_PRIMARY: u32 = 0x040;
pub const MDF_AL_CLEAN: u32 = 0x080;
const BLOCK: u64 = 4096;
/// Context entries in one AL transaction block (spec §4.3).
const AL_CONTEXT_PER_BLOCK: usize = 919;
const AL_UPDATES_PER_BLOCK: usize = 64;
const AL_TR_INITIALIZED: u16 = 0xffff;
/// One AL extent covers 1024 bitmap bits (4 MiB).
const BITS_PER_AL_EXTENT: u64 = 1024;

/// Internal meta-data placement with the default 1 × 32 KiB activity log (spec §1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub backing_sectors: u64,
    pub md_offset_bytes: u64,
    pub al_offset_sect: i32,
    pub bm_offset_sect: i32,
    pub md_size_sect: u32,
    pub data_sectors: u64,
}

impl Placement {
    pub fn internal(backing_sectors: u64) -> Placement {
        let md_offset_sect = (backing_sectors & !7) - 8;
        // One bit per 4 KiB, bitmap rounded to 4 KiB blocks, sized for the whole backing device.
        let bm_sect = backing_sectors
            .div_ceil(8)
            .div_ceil(8 * 512)
            .div_ceil(8)
            .max(1)
            * 8;
        let al_sect = 64u64;
        let md_size_sect = bm_sect + al_sect + 8;
        Placement {
            backing_sectors,
            md_offset_bytes: md_offset_sect * 512,
            al_offset_sect: -(al_sect as i32),
            bm_offset_sect: -((al_sect + bm_sect) as i32),
            md_size_sect: md_size_sect as u32,
            data_sectors: (backing_sectors & !7) - md_size_sect,
        }
    }

    pub fn al_offset_bytes(&self) -> u64 {
        offset(self.md_offset_bytes, self.al_offset_sect)
    }

    pub fn bm_offset_bytes(&self) -> u64 {
        offset(self.md_offset_bytes, self.bm_offset_sect)
    }

    pub fn bits(&self) -> u64 {
        self.data_sectors.div_ceil(8)
    }

    /// The byte range of the meta-data area on the backing device.
    pub fn meta_range(&self) -> std::ops::Range<u64> {
        self.bm_offset_bytes()..self.md_offset_bytes + BLOCK
    }
}

fn offset(base: u64, sect: i32) -> u64 {
    base.checked_add_signed(i64::from(sect) * 512)
        .expect("meta-data offsets inside the device")
}

/// The superblock fields the simulator needs (spec §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub la_size_sect: u64,
    pub uuids: [u64; 4],
    pub device_uuid: u64,
    pub flags: u32,
    pub magic: u32,
    pub md_size_sect: u32,
    pub al_offset_sect: i32,
    pub al_nr_extents: u32,
    pub bm_offset_sect: i32,
    pub bm_bytes_per_bit: u32,
    pub la_peer_max_bio_size: u32,
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
}

impl Superblock {
    pub fn created(p: &Placement) -> Superblock {
        Superblock {
            la_size_sect: 0,
            uuids: [4, 0, 0, 0],
            device_uuid: 0,
            flags: MDF_AL_CLEAN,
            magic: MAGIC_08,
            md_size_sect: p.md_size_sect,
            al_offset_sect: p.al_offset_sect,
            al_nr_extents: 257,
            bm_offset_sect: p.bm_offset_sect,
            bm_bytes_per_bit: 4096,
            la_peer_max_bio_size: 4096,
            al_stripes: 1,
            al_stripe_size_4k: 8,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK as usize];
        b[0..8].copy_from_slice(&self.la_size_sect.to_be_bytes());
        for (i, u) in self.uuids.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&u.to_be_bytes());
        }
        b[40..48].copy_from_slice(&self.device_uuid.to_be_bytes());
        let words: [(usize, u32); 10] = [
            (56, self.flags),
            (60, self.magic),
            (64, self.md_size_sect),
            (68, self.al_offset_sect as u32),
            (72, self.al_nr_extents),
            (76, self.bm_offset_sect as u32),
            (80, self.bm_bytes_per_bit),
            (84, self.la_peer_max_bio_size),
            (88, self.al_stripes),
            (92, self.al_stripe_size_4k),
        ];
        for (at, v) in words {
            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, String> {
        if b.len() < 96 {
            return Err(format!("superblock truncated: {} bytes", b.len()));
        }
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let sb = Superblock {
            la_size_sect: u64_at(0),
            uuids: [u64_at(8), u64_at(16), u64_at(24), u64_at(32)],
            device_uuid: u64_at(40),
            flags: u32_at(56),
            magic: u32_at(60),
            md_size_sect: u32_at(64),
            al_offset_sect: u32_at(68) as i32,
            al_nr_extents: u32_at(72),
            bm_offset_sect: u32_at(76) as i32,
            bm_bytes_per_bit: u32_at(80),
            la_peer_max_bio_size: u32_at(84),
            al_stripes: u32_at(88),
            al_stripe_size_4k: u32_at(92),
        };
        if sb.magic != MAGIC_08 && sb.magic != MAGIC_84_UNCLEAN {
            return Err(format!("superblock magic {:#010x} is not v08", sb.magic));
        }
        if sb.bm_bytes_per_bit != 4096 {
            return Err(format!(
                "bm_bytes_per_bit {} (must be 4096)",
                sb.bm_bytes_per_bit
            ));
        }
        Ok(sb)
    }
}

/// CRC32C with initial value 0 and no final inversion, as the AL uses (spec §4.3).
pub fn crc32c_raw(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, &byte| {
        (crc >> 8) ^ CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize]
    })
}

/// Byte-at-a-time table for the reflected Castagnoli polynomial 0x82F63B78.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// An initialised AL block: magic, type 0xffff, zeros (spec §4.3).
pub fn al_initialized_block() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
    b[12..14].copy_from_slice(&AL_TR_INITIALIZED.to_be_bytes());
    let crc = crc32c_raw(&b);
    b[8..12].copy_from_slice(&crc.to_be_bytes());
    b
}

struct AlBlock {
    tr_number: u32,
    context_size: u16,
    context_start: u16,
    n_updates: u16,
    update_slots: Vec<u16>,
    update_extents: Vec<u32>,
    context: Vec<u32>,
}

fn decode_al_block(b: &[u8]) -> Option<AlBlock> {
    let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let u16_at = |at: usize| u16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"));
    if u32_at(0) != AL_MAGIC {
        return None;
    }
    let mut copy = b.to_vec();
    copy[8..12].fill(0);
    if crc32c_raw(&copy) != u32_at(8) || u16_at(12) == AL_TR_INITIALIZED {
        return None;
    }
    Some(AlBlock {
        tr_number: u32_at(4),
        n_updates: u16_at(14),
        context_size: u16_at(16),
        context_start: u16_at(18),
        update_slots: (0..AL_UPDATES_PER_BLOCK)
            .map(|i| u16_at(36 + 2 * i))
            .collect(),
        update_extents: (0..AL_UPDATES_PER_BLOCK)
            .map(|i| u32_at(164 + 4 * i))
            .collect(),
        context: (0..AL_CONTEXT_PER_BLOCK)
            .map(|i| u32_at(420 + 4 * i))
            .collect(),
    })
}

/// Hot extents recorded in the activity log (spec §4.4), replaying valid transactions from
/// the oldest to the newest. Torn or never-written blocks fail the CRC and are skipped.
pub fn al_hot_extents(area: &[u8]) -> Vec<u32> {
    let mut blocks: Vec<AlBlock> = area
        .chunks(BLOCK as usize)
        .filter_map(decode_al_block)
        .collect();
    let Some(first) = blocks.first().map(|b| b.tr_number) else {
        return Vec::new();
    };
    blocks.sort_by_key(|b| b.tr_number.wrapping_sub(first) as i32);
    let mut hot: Vec<u32> = Vec::new();
    for b in &blocks {
        let size = usize::from(b.context_size);
        if hot.len() < size {
            hot.resize(size, u32::MAX);
        }
        for (i, e) in b.context.iter().enumerate() {
            let slot = usize::from(b.context_start) + i;
            if slot < size {
                hot[slot] = *e;
            }
        }
        for i in 0..usize::from(b.n_updates).min(AL_UPDATES_PER_BLOCK) {
            let slot = usize::from(b.update_slots[i]);
            if slot < 65534 {
                if hot.len() <= slot {
                    hot.resize(slot + 1, u32::MAX);
                }
                hot[slot] = b.update_extents[i];
            }
        }
    }
    let mut out: Vec<u32> = hot.into_iter().filter(|e| *e != u32::MAX).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A one-line summary of every valid AL transaction in `area` (for failure reports).
pub fn al_describe(area: &[u8]) -> String {
    let mut out = Vec::new();
    for (i, b) in area.chunks(BLOCK as usize).enumerate() {
        if let Some(t) = decode_al_block(b) {
            let ctx: Vec<String> = t
                .context
                .iter()
                .enumerate()
                .filter(|(_, e)| **e != u32::MAX)
                .map(|(j, e)| format!("{}={e}", usize::from(t.context_start) + j))
                .collect();
            let upd: Vec<String> = (0..usize::from(t.n_updates).min(AL_UPDATES_PER_BLOCK))
                .map(|j| format!("{}={}", t.update_slots[j], t.update_extents[j]))
                .collect();
            out.push(format!(
                "[ring {i}: tr {} updates {upd:?} context {ctx:?}]",
                t.tr_number
            ));
        }
    }
    out.join(" ")
}

/// What attach hands the engine after `apply-al`.
#[derive(Clone, Debug)]
pub struct Attached {
    /// The AL area as found before re-initialising (described only for failure reports).
    pub al_before: Vec<u8>,
    pub superblock: Superblock,
    pub bitmap_words: Vec<u64>,
    /// Extents the AL replay found hot (whose bits were set if the node was a Primary).
    pub replayed_extents: Vec<u32>,
}

/// `drbdmeta apply-al` followed by reading what attach reads. Writes back durably, like the
/// tool does, so that the disk and the engine's starting point agree.
pub fn apply_al_and_read<T: Clone>(
    disk: &mut SimDisk<T>,
    p: &Placement,
) -> Result<Attached, String> {
    let mut sb = Superblock::decode(&disk.read_visible(p.md_offset_bytes, BLOCK))?;
    if sb.al_offset_sect != p.al_offset_sect || sb.bm_offset_sect != p.bm_offset_sect {
        return Err(format!(
            "superblock offsets al {} bm {} differ from the placement {p:?}",
            sb.al_offset_sect, sb.bm_offset_sect
        ));
    }
    let words = p.bits().div_ceil(64);
    let bm_bytes = disk.read_visible(p.bm_offset_bytes(), (words * 8).div_ceil(512) * 512);
    let mut bitmap_words: Vec<u64> = bm_bytes
        .chunks(8)
        .take(words as usize)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let clean = clean_flags(&sb);
    // A clean AL holds nothing to replay (apply-al wrote it that way).
    let al_area = if clean {
        Vec::new()
    } else {
        disk.read_visible(p.al_offset_bytes(), 8 * BLOCK)
    };
    let hot = al_hot_extents(&al_area);
    if !clean && sb.flags & MDF_PRIMARY_IND != 0 {
        for e in &hot {
            let start = u64::from(*e) * BITS_PER_AL_EXTENT;
            for bit in start..(start + BITS_PER_AL_EXTENT).min(p.bits()) {
                bitmap_words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
    }
    if !clean {
        let mut bm_out = vec![0u8; bm_bytes.len()];
        for (i, w) in bitmap_words.iter().enumerate() {
            bm_out[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        disk.write_durable_now(p.bm_offset_bytes(), &bm_out);
        let init = al_initialized_block();
        for i in 0..8 {
            disk.write_durable_now(p.al_offset_bytes() + i * BLOCK, &init);
        }
        sb.flags |= MDF_AL_CLEAN;
        sb.magic = MAGIC_08;
        disk.write_durable_now(p.md_offset_bytes, &sb.encode());
    }
    Ok(Attached {
        al_before: al_area,
        superblock: sb,
        bitmap_words,
        replayed_extents: if clean { Vec::new() } else { hot },
    })
}

fn clean_flags(sb: &Superblock) -> bool {
    sb.magic == MAGIC_08 && sb.flags & MDF_AL_CLEAN != 0
}

/// `drbdmeta create-md` on a simulated disk; `presynced` instead leaves the state that
/// `new-current-uuid --clear-bitmap` gives a connected pair: same current UUID, Consistent.
pub fn create_md<T: Clone>(disk: &mut SimDisk<T>, p: &Placement, presynced_uuid: Option<u64>) {
    let mut sb = Superblock::created(p);
    if let Some(uuid) = presynced_uuid {
        sb.uuids = [uuid & !1, 0, 0, 0];
        sb.flags |= MDF_CONSISTENT | MDF_WAS_UP_TO_DATE;
        sb.la_size_sect = p.data_sectors;
    }
    let bm_len = (p.md_offset_bytes - p.bm_offset_bytes()) - 8 * BLOCK;
    disk.write_durable_now(p.bm_offset_bytes(), &vec![0u8; bm_len as usize]);
    let init = al_initialized_block();
    for i in 0..8 {
        disk.write_durable_now(p.al_offset_bytes() + i * BLOCK, &init);
    }
    disk.write_durable_now(p.md_offset_bytes, &sb.encode());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskFaults;
    use crate::prng::Prng;

    fn disk(sectors: u64) -> SimDisk<u32> {
        SimDisk::new(sectors * 512, DiskFaults::default(), Prng::new(1))
    }

    #[test]
    fn initialized_al_block_has_the_kernels_crc() {
        // spec drbd-metadata.md §4.3: every initialised block has crc32c 0x709cc651.
        let b = al_initialized_block();
        assert_eq!(&b[8..12], &0x709c_c651u32.to_be_bytes());
    }

    #[test]
    fn placement_keeps_meta_after_data_and_inside_the_device() {
        for backing in [8192 + 320, 3 * 8192 + 512] {
            let p = Placement::internal(backing);
            assert!(p.data_sectors * 512 <= p.bm_offset_bytes());
            assert!(p.bm_offset_bytes() < p.al_offset_bytes());
            assert_eq!(p.al_offset_bytes() + 8 * BLOCK, p.md_offset_bytes);
            assert!(p.md_offset_bytes + BLOCK <= backing * 512);
            // The bitmap area holds every bit.
            assert!((p.al_offset_bytes() - p.bm_offset_bytes()) * 8 >= p.bits());
        }
    }

    fn al_update_block(tr: u32, slot: u16, extent: u32) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK as usize];
        b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&tr.to_be_bytes());
        b[14..16].copy_from_slice(&1u16.to_be_bytes());
        b[16..18].copy_from_slice(&257u16.to_be_bytes());
        for i in 0..64 {
            b[36 + 2 * i..38 + 2 * i].copy_from_slice(&0xffffu16.to_be_bytes());
            b[164 + 4 * i..168 + 4 * i].copy_from_slice(&u32::MAX.to_be_bytes());
        }
        b[36..38].copy_from_slice(&slot.to_be_bytes());
        b[164..168].copy_from_slice(&extent.to_be_bytes());
        for i in 0..AL_CONTEXT_PER_BLOCK {
            b[420 + 4 * i..424 + 4 * i].copy_from_slice(&u32::MAX.to_be_bytes());
        }
        let crc = crc32c_raw(&b);
        b[8..12].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn crashed_primary_gets_hot_extents_marked_and_torn_blocks_are_ignored() {
        let p = Placement::internal(3 * 8192 + 512);
        let mut d = disk(p.backing_sectors);
        create_md(&mut d, &p, Some(0x1234));
        let mut sb = Superblock::decode(&d.read_visible(p.md_offset_bytes, BLOCK)).expect("valid");
        sb.magic = MAGIC_84_UNCLEAN;
        sb.flags = (sb.flags & !MDF_AL_CLEAN) | MDF_PRIMARY_IND;
        d.write_durable_now(p.md_offset_bytes, &sb.encode());
        d.write_durable_now(p.al_offset_bytes(), &al_update_block(7, 0, 2));
        // A torn transaction (bad CRC) naming extent 1 must not count.
        let mut torn = al_update_block(8, 1, 1);
        torn[600] ^= 0xff;
        d.write_durable_now(p.al_offset_bytes() + BLOCK, &torn);
        let a = apply_al_and_read(&mut d, &p).expect("attach");
        assert_eq!(a.replayed_extents, vec![2]);
        let set: u64 = a
            .bitmap_words
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        assert_eq!(set, 1024);
        assert_eq!(a.bitmap_words[2 * 1024 / 64], u64::MAX);
        // apply-al leaves clean meta-data behind; a second attach finds nothing to replay.
        let again = apply_al_and_read(&mut d, &p).expect("attach");
        assert!(again.replayed_extents.is_empty());
        assert_eq!(again.superblock.magic, MAGIC_08);
        assert_eq!(again.bitmap_words, a.bitmap_words);
    }

    #[test]
    fn rejects_garbage_superblock() {
        let p = Placement::internal(8192 + 320);
        let mut d = disk(p.backing_sectors);
        assert!(apply_al_and_read(&mut d, &p).unwrap_err().contains("magic"));
    }
}
