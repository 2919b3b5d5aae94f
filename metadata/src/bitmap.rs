//! The on-disk bitmap (spec §5): one bit per 4 KiB of the DRBD device, stored as 64-bit
//! little-endian words, read and written in 4 KiB pages.
//!
//! The in-memory copy tracks which pages changed since they were last written, so a flush
//! writes only those pages ([`Bitmap::dirty_writes`]).

use crate::layout::{bm_bits, Layout, BLOCK_BYTES};
use crate::MetaWrite;

/// Bits per 4 KiB bitmap page.
pub const BITS_PER_PAGE: u64 = BLOCK_BYTES * 8;
/// Bitmap bits per activity-log extent (4 MiB / 4 KiB).
pub const BITS_PER_AL_EXTENT: u64 = 1024;
const WORDS_PER_PAGE: usize = (BLOCK_BYTES / 8) as usize;

/// In-memory bitmap for a device of a given number of bits, with per-page dirty tracking.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Whole 4 KiB pages of words; bits at index ≥ `bits` stay 0.
    words: Vec<u64>,
    bits: u64,
    /// Cached number of set bits.
    set: u64,
    /// One flag per page: changed since last `dirty_writes`/`mark_clean`.
    dirty: Vec<bool>,
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmap")
            .field("bits", &self.bits)
            .field("set", &self.set)
            .field("dirty_pages", &self.dirty.iter().filter(|d| **d).count())
            .finish()
    }
}

impl Bitmap {
    /// An all-clear bitmap of `bits` bits (no page dirty).
    pub fn new(bits: u64) -> Bitmap {
        let pages = bits.div_ceil(BITS_PER_PAGE) as usize;
        Bitmap {
            words: vec![0; pages * WORDS_PER_PAGE],
            bits,
            set: 0,
            dirty: vec![false; pages],
        }
    }

    /// An all-clear bitmap for a device of `sectors` sectors.
    pub fn for_sectors(sectors: u64) -> Bitmap {
        Bitmap::new(bm_bits(sectors))
    }

    /// Builds a bitmap from on-disk bytes (little-endian words). Missing bytes read as 0;
    /// bits at or beyond `bits` are dropped, as the kernel clears them on read.
    pub fn from_le_bytes(bytes: &[u8], bits: u64) -> Bitmap {
        let mut bm = Bitmap::new(bits);
        for (w, chunk) in bm.words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        bm.clear_tail();
        bm.set = bm.words.iter().map(|w| u64::from(w.count_ones())).sum();
        bm
    }

    fn clear_tail(&mut self) {
        let full = (self.bits / 64) as usize;
        if full < self.words.len() {
            let rem = self.bits % 64;
            if rem != 0 {
                self.words[full] &= (1u64 << rem) - 1;
            }
            let start = full + usize::from(rem != 0);
            for w in &mut self.words[start..] {
                *w = 0;
            }
        }
    }

    /// Number of bits (4 KiB blocks of the device).
    pub fn bits(&self) -> u64 {
        self.bits
    }

    /// Number of 4 KiB pages the bitmap occupies on disk.
    pub fn pages(&self) -> usize {
        self.dirty.len()
    }

    /// Number of set bits ("out of sync" blocks).
    pub fn count(&self) -> u64 {
        debug_assert_eq!(
            self.set,
            self.words
                .iter()
                .map(|w| u64::from(w.count_ones()))
                .sum::<u64>()
        );
        self.set
    }

    pub fn test(&self, bit: u64) -> bool {
        assert!(
            bit < self.bits,
            "bit {bit} beyond bitmap of {} bits",
            self.bits
        );
        self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    /// Sets one bit; returns whether it was clear before.
    pub fn set(&mut self, bit: u64) -> bool {
        self.set_range(bit, bit + 1) == 1
    }

    /// Clears one bit; returns whether it was set before.
    pub fn clear(&mut self, bit: u64) -> bool {
        self.clear_range(bit, bit + 1) == 1
    }

    /// Sets bits `start..end` (clipped to the bitmap); returns how many changed.
    pub fn set_range(&mut self, start: u64, end: u64) -> u64 {
        self.change_range(start, end, true)
    }

    /// Clears bits `start..end` (clipped to the bitmap); returns how many changed.
    pub fn clear_range(&mut self, start: u64, end: u64) -> u64 {
        self.change_range(start, end, false)
    }

    /// Sets the 1024 bits of AL extent `extent` (what apply-al does for a hot extent).
    pub fn set_extent(&mut self, extent: u32) -> u64 {
        let start = u64::from(extent) * BITS_PER_AL_EXTENT;
        self.set_range(start, start + BITS_PER_AL_EXTENT)
    }

    /// Sets the bits covering sectors `sector..sector + count` of the DRBD device.
    pub fn set_sectors(&mut self, sector: u64, count: u64) -> u64 {
        if count == 0 {
            return 0;
        }
        self.set_range(sector / 8, (sector + count).div_ceil(8))
    }

    fn change_range(&mut self, start: u64, end: u64, on: bool) -> u64 {
        let end = end.min(self.bits);
        if start >= end {
            return 0;
        }
        let mut changed = 0u64;
        let mut bit = start;
        while bit < end {
            let w = (bit / 64) as usize;
            let lo = bit % 64;
            let hi = (end - (bit - lo)).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let old = self.words[w];
            let new = if on { old | mask } else { old & !mask };
            if new != old {
                changed += u64::from((old ^ new).count_ones());
                self.words[w] = new;
                self.dirty[w / WORDS_PER_PAGE] = true;
            }
            bit = bit - lo + 64;
        }
        if on {
            self.set += changed;
        } else {
            self.set -= changed;
        }
        changed
    }

    /// Sets every bit (full sync) and marks every page dirty.
    pub fn set_all(&mut self) {
        self.set_range(0, self.bits);
        self.dirty.fill(true);
    }

    /// The 64-bit words (little-endian on disk), including the padding to whole pages.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Page `page` in on-disk byte order.
    pub fn page_bytes(&self, page: usize) -> Box<[u8; BLOCK_BYTES as usize]> {
        let mut out = Box::new([0u8; BLOCK_BYTES as usize]);
        let words = &self.words[page * WORDS_PER_PAGE..(page + 1) * WORDS_PER_PAGE];
        for (o, w) in out.chunks_exact_mut(8).zip(words) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The whole bitmap in on-disk byte order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn is_dirty(&self, page: usize) -> bool {
        self.dirty[page]
    }

    /// Pages changed since they were last taken.
    pub fn dirty_pages(&self) -> impl Iterator<Item = usize> + '_ {
        self.dirty
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.then_some(i))
    }

    /// Marks every page clean (e.g. after reading it from disk, or after a full write).
    pub fn mark_clean(&mut self) {
        self.dirty.fill(false);
    }

    /// Marks every page dirty (forces the next flush to write everything).
    pub fn mark_all_dirty(&mut self) {
        self.dirty.fill(true);
    }

    /// Page index holding `bit`.
    pub fn page_of_bit(bit: u64) -> usize {
        (bit / BITS_PER_PAGE) as usize
    }

    /// Writes for every dirty page, in page order, and marks them clean. The caller must
    /// make them durable (write + flush) before relying on them, e.g. before an AL transaction
    /// that evicts an extent covered by these pages.
    pub fn dirty_writes(&mut self, layout: &Layout) -> Vec<MetaWrite> {
        let pages: Vec<usize> = self.dirty_pages().collect();
        self.take_pages(layout, pages)
    }

    /// Writes for the dirty pages covering AL extent `extent` (its 1024 bits lie in one page),
    /// and marks them clean. Empty if they are already on disk.
    pub fn extent_writes(&mut self, layout: &Layout, extent: u32) -> Vec<MetaWrite> {
        let bit = u64::from(extent) * BITS_PER_AL_EXTENT;
        if bit >= self.bits {
            return Vec::new();
        }
        let page = Bitmap::page_of_bit(bit);
        if self.dirty[page] {
            self.take_pages(layout, vec![page])
        } else {
            Vec::new()
        }
    }

    fn take_pages(&mut self, layout: &Layout, pages: Vec<usize>) -> Vec<MetaWrite> {
        let area = layout.bm_area_bytes();
        pages
            .into_iter()
            .map(|p| {
                let rel = p as u64 * BLOCK_BYTES;
                assert!(
                    rel + BLOCK_BYTES <= area,
                    "bitmap page {p} beyond the bitmap area of {area} bytes"
                );
                self.dirty[p] = false;
                MetaWrite {
                    offset: layout.bm_offset() + rel,
                    data: self.page_bytes(p).to_vec(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Spec §5: on-disk byte order of the words.
    #[test]
    fn words_are_little_endian_lsb_first() {
        let mut bm = Bitmap::new(4 * 64);
        bm.set_range(0, 64);
        bm.set(64);
        bm.set(3 * 64 - 1);
        bm.set_range(3 * 64, 3 * 64 + 32);
        let b = bm.to_le_bytes();
        assert_eq!(&b[..8], &[0xff; 8]);
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0, 0x80]);
        assert_eq!(&b[24..32], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(bm.count(), 64 + 1 + 1 + 32);
    }

    #[test]
    fn only_changed_pages_are_dirty() {
        let mut bm = Bitmap::new(3 * BITS_PER_PAGE);
        assert_eq!(bm.dirty_pages().count(), 0);
        bm.set(BITS_PER_PAGE + 5);
        assert_eq!(bm.dirty_pages().collect::<Vec<_>>(), [1]);
        bm.mark_clean();
        assert!(!bm.set(BITS_PER_PAGE + 5), "already set");
        assert_eq!(bm.dirty_pages().count(), 0, "no change, no dirty page");
    }

    #[test]
    fn tail_bits_beyond_size_are_dropped_on_load() {
        let bm = Bitmap::from_le_bytes(&[0xff; 16], 70);
        assert_eq!(bm.count(), 70);
        assert_eq!(bm.words()[1], 0x3f);
    }

    #[test]
    fn ranges_clip_to_size() {
        let mut bm = Bitmap::new(100);
        assert_eq!(bm.set_range(90, 1000), 10);
        assert_eq!(bm.set_extent(0), 90);
        assert_eq!(bm.count(), 100);
    }

    proptest! {
        #[test]
        fn range_ops_match_a_naive_model(ops in proptest::collection::vec((any::<bool>(), 0u64..300, 0u64..300), 1..40)) {
            let mut bm = Bitmap::new(257);
            let mut model = vec![false; 257];
            for (on, a, b) in ops {
                let (s, e) = (a.min(b), a.max(b));
                let before = model.clone();
                for m in model.iter_mut().take(e.min(257) as usize).skip(s as usize) { *m = on; }
                let changed = before.iter().zip(&model).filter(|(x, y)| x != y).count() as u64;
                let got = if on { bm.set_range(s, e) } else { bm.clear_range(s, e) };
                prop_assert_eq!(got, changed);
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(bm.test(i as u64), *m);
            }
            prop_assert_eq!(bm.count(), model.iter().filter(|m| **m).count() as u64);
        }
    }
}
