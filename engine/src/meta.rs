//! In-memory bitmap and activity log of one attached volume, and the byte images the engine asks
//! its driver to persist (spec drbd-metadata.md §2, §4, §5).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::MetaLayout;
use crate::output::MetaWrite;

/// `DRBD_MD_MAGIC_84_UNCLEAN`: what the 8.4 kernel writes while attached.
pub const MD_MAGIC_84_UNCLEAN: u32 = 0x8374_026c;
/// `DRBD_AL_MAGIC`.
pub const AL_MAGIC: u32 = 0x69cb_65a2;
/// One bit per 4 KiB (`BM_BLOCK_SIZE`): 8 sectors.
pub const SECTORS_PER_BIT: u64 = 8;
/// Bits per 4 KiB bitmap page (on-disk write unit).
pub const BITS_PER_PAGE: u64 = 4096 * 8;
/// AL extent: 4 MiB = 1024 bits (`AL_EXTENT_SHIFT` 22).
pub const AL_EXTENT_SECTORS: u64 = 8192;
/// Context slots per AL transaction (`AL_CONTEXT_PER_TRANSACTION`).
const AL_CONTEXT_PER_TR: usize = 919;
/// Update slots per AL transaction (`AL_UPDATES_PER_TRANSACTION`).
const AL_UPDATES_PER_TR: usize = 64;

/// The out-of-sync bitmap: bit i covers sectors 8i..8i+7.
#[derive(Clone, Debug)]
pub struct Bitmap {
    words: Vec<u64>,
    nbits: u64,
    /// Pages (4 KiB of bitmap) changed since the last write-out.
    dirty_pages: std::collections::BTreeSet<u64>,
}

impl Bitmap {
    pub fn new(words: Vec<u64>, size_sectors: u64) -> Bitmap {
        let nbits = size_sectors.div_ceil(SECTORS_PER_BIT);
        let mut words = words;
        let need = nbits.div_ceil(64) as usize;
        words.resize(need, 0);
        // Bits past the device end must be clear (spec drbd-metadata.md §5).
        if nbits % 64 != 0 {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (nbits % 64)) - 1;
            }
        }
        Bitmap {
            words,
            nbits,
            dirty_pages: Default::default(),
        }
    }
    pub fn nbits(&self) -> u64 {
        self.nbits
    }
    pub fn words(&self) -> &[u64] {
        &self.words
    }
    pub fn words_mut(&mut self) -> &mut [u64] {
        self.mark_all_dirty();
        &mut self.words
    }
    pub fn test(&self, bit: u64) -> bool {
        bit < self.nbits && (self.words[(bit / 64) as usize] >> (bit % 64)) & 1 == 1
    }
    pub fn weight(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }
    fn set_bit(&mut self, bit: u64, v: bool) -> bool {
        let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let was = self.words[w] & m != 0;
        if was != v {
            if v {
                self.words[w] |= m;
            } else {
                self.words[w] &= !m;
            }
            self.dirty_pages.insert(bit / BITS_PER_PAGE);
        }
        was != v
    }
    /// Marks every block touched by the range out of sync (rounds outward, like
    /// `drbd_set_out_of_sync`). Returns the number of newly set bits.
    pub fn set_range(&mut self, sector: u64, len_bytes: u32) -> u64 {
        if len_bytes == 0 || self.nbits == 0 {
            return 0;
        }
        let first = sector / SECTORS_PER_BIT;
        let last = ((sector + len_bytes as u64 / 512 - 1) / SECTORS_PER_BIT).min(self.nbits - 1);
        (first..=last).filter(|&b| self.set_bit(b, true)).count() as u64
    }
    /// Marks blocks fully inside the range in sync (rounds inward, like `drbd_set_in_sync`).
    pub fn clear_range(&mut self, sector: u64, len_bytes: u32) -> u64 {
        let end = sector + len_bytes as u64 / 512;
        let first = sector.div_ceil(SECTORS_PER_BIT);
        let last_excl = (end / SECTORS_PER_BIT).min(self.nbits);
        (first..last_excl)
            .filter(|&b| self.set_bit(b, false))
            .count() as u64
    }
    pub fn set_all(&mut self) {
        for b in 0..self.nbits {
            self.set_bit(b, true);
        }
    }
    pub fn clear_all(&mut self) {
        for b in 0..self.nbits {
            self.set_bit(b, false);
        }
    }
    /// First set bit at or after `from`.
    pub fn find_next_set(&self, from: u64) -> Option<u64> {
        let mut b = from;
        while b < self.nbits {
            let w = self.words[(b / 64) as usize] >> (b % 64);
            if w == 0 {
                b = (b / 64 + 1) * 64;
                continue;
            }
            let r = b + w.trailing_zeros() as u64;
            return (r < self.nbits).then_some(r);
        }
        None
    }
    pub fn has_dirty(&self) -> bool {
        !self.dirty_pages.is_empty()
    }
    pub fn mark_all_dirty(&mut self) {
        let pages = self.nbits.div_ceil(BITS_PER_PAGE);
        self.dirty_pages.extend(0..pages);
    }
    /// Write-out of the dirty pages: (first word, words) per page.
    pub fn take_dirty(&mut self) -> Vec<(u64, Vec<u64>)> {
        let pages = std::mem::take(&mut self.dirty_pages);
        pages
            .into_iter()
            .map(|p| {
                let first = (p * BITS_PER_PAGE / 64) as usize;
                let end = (first + 512).min(self.words.len());
                (first as u64, self.words[first.min(end)..end].to_vec())
            })
            .collect()
    }
}

/// Byte images of bitmap words at their on-disk place.
pub fn bitmap_writes(layout: &MetaLayout, first_word: u64, words: &[u64]) -> MetaWrite {
    let base = layout.md_offset_bytes as i64 + layout.bm_offset_sect as i64 * 512;
    let mut b = BytesMut::with_capacity(words.len() * 8);
    for w in words {
        b.put_u64_le(*w);
    }
    MetaWrite {
        offset_bytes: (base + first_word as i64 * 8).max(0) as u64,
        data: b.freeze(),
    }
}

/// The 4 KiB superblock (spec drbd-metadata.md §2), magic 84_UNCLEAN as the attached kernel
/// writes it.
pub struct SuperblockImage<'a> {
    pub layout: &'a MetaLayout,
    pub la_size_sect: u64,
    pub uuids: [u64; 4],
    pub device_uuid: u64,
    pub flags: u32,
    pub al_nr_extents: u32,
    pub la_peer_max_bio_size: u32,
}

impl SuperblockImage<'_> {
    pub fn encode(&self) -> MetaWrite {
        let mut b = BytesMut::with_capacity(4096);
        b.put_u64(self.la_size_sect);
        for u in self.uuids {
            b.put_u64(u);
        }
        b.put_u64(self.device_uuid);
        b.put_u64(0);
        b.put_u32(self.flags);
        b.put_u32(MD_MAGIC_84_UNCLEAN);
        b.put_u32(self.layout.md_size_sect);
        b.put_i32(self.layout.al_offset_sect);
        b.put_u32(self.al_nr_extents);
        b.put_i32(self.layout.bm_offset_sect);
        b.put_u32(4096);
        b.put_u32(self.la_peer_max_bio_size);
        b.put_u32(self.layout.al_stripes);
        b.put_u32(self.layout.al_stripe_size_4k);
        debug_assert_eq!(b.len(), 96);
        b.resize(4096, 0);
        MetaWrite {
            offset_bytes: self.layout.md_offset_bytes,
            data: b.freeze(),
        }
    }
}

/// CRC32C as the AL uses it: initial value 0, no final inversion (spec drbd-metadata.md §4.3).
pub fn al_crc(block: &[u8]) -> u32 {
    !crc32c::crc32c_append(0xffff_ffff, block)
}

/// The activity log: which 4 MiB extents are hot, with reference counts.
#[derive(Clone, Debug)]
pub struct ActivityLog {
    /// Slot → extent.
    slots: Vec<Option<u32>>,
    /// Extent → (slot, in-flight references, last use).
    hot: BTreeMap<u32, (usize, u32, u64)>,
    tick: u64,
    tr_number: u32,
    context_start: usize,
}

/// What it takes to make an extent hot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlNeed {
    /// Already hot; the reference is taken.
    Hot,
    /// Write this transaction first (reference taken once it is durable: `commit`).
    Transaction {
        slot: usize,
        extent: u32,
        evicted: Option<u32>,
    },
    /// Every slot is referenced: wait for a release.
    Full,
}

impl ActivityLog {
    pub fn new(nr_slots: u32) -> ActivityLog {
        let n = (nr_slots.clamp(7, 65534)) as usize;
        ActivityLog {
            slots: vec![None; n],
            hot: BTreeMap::new(),
            tick: 0,
            tr_number: 0,
            context_start: 0,
        }
    }
    pub fn hot_extents(&self) -> Vec<u32> {
        self.hot.keys().copied().collect()
    }
    /// Takes a reference on `extent` if it is hot, else plans the transaction.
    pub fn begin(&mut self, extent: u32) -> AlNeed {
        self.tick += 1;
        if let Some(e) = self.hot.get_mut(&extent) {
            e.1 += 1;
            e.2 = self.tick;
            return AlNeed::Hot;
        }
        if let Some(slot) = self.slots.iter().position(|s| s.is_none()) {
            return AlNeed::Transaction {
                slot,
                extent,
                evicted: None,
            };
        }
        // Evict the least recently used unreferenced extent.
        let victim = self
            .hot
            .iter()
            .filter(|(_, v)| v.1 == 0)
            .min_by_key(|(_, v)| v.2)
            .map(|(k, v)| (*k, v.0));
        match victim {
            Some((old, slot)) => {
                // The victim stops being hot now, so no new write can start in it; the on-disk
                // log keeps covering it until the transaction is durable.
                self.hot.remove(&old);
                AlNeed::Transaction {
                    slot,
                    extent,
                    evicted: Some(old),
                }
            }
            None => AlNeed::Full,
        }
    }
    pub fn is_hot(&self, extent: u32) -> bool {
        self.hot.contains_key(&extent)
    }
    /// Whether making `extent` hot needs an eviction.
    pub fn needs_eviction(&self, extent: u32) -> bool {
        !self.hot.contains_key(&extent) && self.slots.iter().all(|s| s.is_some())
    }
    /// Applies a planned transaction once its write is durable (no reference taken).
    pub fn commit(&mut self, slot: usize, extent: u32, evicted: Option<u32>) {
        if let Some(old) = evicted {
            self.hot.remove(&old);
        }
        if self.hot.contains_key(&extent) {
            return;
        }
        self.slots[slot] = Some(extent);
        self.hot.insert(extent, (slot, 0, self.tick));
    }
    pub fn release(&mut self, extent: u32) {
        if let Some(e) = self.hot.get_mut(&extent) {
            e.1 = e.1.saturating_sub(1);
        }
    }
    /// Encodes the transaction block putting `extent` into `slot` (spec drbd-metadata.md §4.3).
    pub fn transaction(
        &mut self,
        layout: &MetaLayout,
        slot: usize,
        extent: u32,
    ) -> (u32, MetaWrite) {
        let tr = self.tr_number;
        self.tr_number = self.tr_number.wrapping_add(1);
        let mut b = BytesMut::with_capacity(4096);
        b.put_u32(AL_MAGIC);
        b.put_u32(tr);
        b.put_u32(0); // crc, filled below
        b.put_u16(0); // AL_TR_UPDATE
        b.put_u16(1); // n_updates
        b.put_u16(self.slots.len() as u16);
        b.put_u16(self.context_start as u16);
        b.put_bytes(0, 16);
        b.put_u16(slot as u16);
        b.put_bytes(0xff, (AL_UPDATES_PER_TR - 1) * 2);
        b.put_u32(extent);
        b.put_bytes(0xff, (AL_UPDATES_PER_TR - 1) * 4);
        for i in 0..AL_CONTEXT_PER_TR {
            let s = self.context_start + i;
            let v = if s == slot {
                extent
            } else {
                self.slots.get(s).copied().flatten().unwrap_or(u32::MAX)
            };
            b.put_u32(v);
        }
        debug_assert_eq!(b.len(), 4096);
        self.context_start += AL_CONTEXT_PER_TR;
        if self.context_start >= self.slots.len() {
            self.context_start = 0;
        }
        let crc = al_crc(&b);
        b[8..12].copy_from_slice(&crc.to_be_bytes());
        let ring = (layout.al_stripes.max(1) * layout.al_stripe_size_4k.max(1)) as u64;
        let i = tr as u64 % ring;
        let stripes = layout.al_stripes.max(1) as u64;
        let ring_slot = (i % stripes) * layout.al_stripe_size_4k.max(1) as u64 + i / stripes;
        let off = layout.md_offset_bytes as i64
            + layout.al_offset_sect as i64 * 512
            + ring_slot as i64 * 4096;
        (
            tr,
            MetaWrite {
                offset_bytes: off.max(0) as u64,
                data: Bytes::from(b),
            },
        )
    }
}

/// Extent of a sector.
pub fn al_extent(sector: u64) -> u32 {
    (sector / AL_EXTENT_SECTORS) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn al_crc_matches_initialised_block() {
        // spec drbd-metadata.md §4.3: an initialised AL block has crc32c 0x709cc651.
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&AL_MAGIC.to_be_bytes());
        b[12..14].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(al_crc(&b), 0x709c_c651);
    }

    #[test]
    fn set_rounds_out_clear_rounds_in() {
        let mut bm = Bitmap::new(vec![], 64);
        assert_eq!(bm.set_range(4, 1024), 1); // sectors 4..5 touch bit 0 only
        bm.clear_all();
        assert_eq!(bm.set_range(7, 1024), 2); // sectors 7,8 → bits 0 and 1
        assert_eq!(bm.clear_range(4, 4096), 0); // sectors 4..11 cover no whole block
        assert_eq!(bm.clear_range(0, 8192), 2);
        assert_eq!(bm.weight(), 0);
    }

    #[test]
    fn superblock_image_layout() {
        let l = MetaLayout::internal(131072);
        let sb = SuperblockImage {
            layout: &l,
            la_size_sect: 1,
            uuids: [4, 0, 0, 0],
            device_uuid: 0,
            flags: 0x81,
            al_nr_extents: 1237,
            la_peer_max_bio_size: 1 << 20,
        }
        .encode();
        assert_eq!(sb.offset_bytes, (131072 - 8) * 512);
        assert_eq!(&sb.data[56..64], &[0, 0, 0, 0x81, 0x83, 0x74, 0x02, 0x6c]);
        assert_eq!(sb.data.len(), 4096);
    }
}
