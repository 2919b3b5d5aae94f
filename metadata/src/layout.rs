//! Where the meta-data lives: placement variants, offsets and sizes (spec §1, §8).
//!
//! All arithmetic follows drbdmeta's `re_initialize_md_offsets`, `max_usable_sectors` and
//! `bm_bytes` (drbd-utils `user/shared/drbdmeta.c`) and the kernel's `drbd_md_set_sector_offsets`.
//! Offsets inside the superblock are signed sector offsets relative to the superblock; the
//! `*_bytes` accessors here are absolute byte offsets on the meta-data device.

use crate::error::Error;

/// Bytes per sector; every sector count in the meta-data uses 512-byte sectors.
pub const SECTOR_BYTES: u64 = 0x200;
/// Size of the superblock and of one activity-log transaction block (4 KiB).
pub const BLOCK_BYTES: u64 = 0x1000;
/// The superblock occupies 8 sectors (`MD_AL_OFFSET_07` in drbdmeta: the AL follows it).
pub const SUPERBLOCK_SECT: u32 = 8;
/// Fixed slot size of indexed external meta-data: 128 MiB in sectors (`MD_RESERVED_SECT_07`).
pub const INDEXED_SLOT_SECT: u32 = 0x4_0000;
/// Largest bitmap drbdmeta accepts for one peer: 2^35 bytes (`MD_BM_MAX_BYTE_FLEX`, 64-bit hosts).
pub const BM_MAX_BYTES_FLEX: u64 = 1 << 35;
/// Largest device `bm_bytes` accepts: 2^41 sectors = 1 PiB (drbdmeta asserts this).
pub const MAX_DEVICE_SECT: u64 = 1 << 41;
/// Bytes of storage covered by one bitmap bit (`BM_BLOCK_SIZE`, the only value 8.4 accepts).
pub const BM_BYTES_PER_BIT: u32 = 0x1000;
/// Default activity-log geometry: one stripe of 8 blocks of 4 KiB (32 KiB).
pub const DEFAULT_AL_STRIPES: u32 = 1;
pub const DEFAULT_AL_STRIPE_SIZE_4K: u32 = 8;
/// Largest AL drbdmeta handles: its 32 MiB I/O buffer, in 4 KiB blocks.
pub const MAX_AL_BLOCKS: u32 = 0x2000;
/// Smallest AL: 32 KiB in 4 KiB blocks (kernel `check_activity_log_stripe_size`).
pub const MIN_AL_BLOCKS: u32 = 8;

/// Which placement variant ("meta-disk" in drbd.conf, `index` argument of drbdmeta).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaIndex {
    /// `internal` / `flex-internal`: at the end of the backing device (kernel index −3).
    Internal,
    /// `flex-external`: the whole separate meta device (kernel index −2).
    FlexExternal,
    /// `meta-disk /dev/X [i]`: fixed 128 MiB slot `i` on a shared meta device.
    Indexed(u8),
}

impl MetaIndex {
    /// Parses drbdmeta's index argument: `internal`, `flex-internal`, `flex-external` or 0–255.
    pub fn parse(s: &str) -> Option<MetaIndex> {
        match s {
            "internal" | "flex-internal" => Some(MetaIndex::Internal),
            "flex-external" => Some(MetaIndex::FlexExternal),
            _ => parse_c_long(s)
                .and_then(|v| u8::try_from(v).ok())
                .map(MetaIndex::Indexed),
        }
    }

    /// The kernel's number for this variant (`DRBD_MD_INDEX_FLEX_INT` = −3, `FLEX_EXT` = −2).
    pub fn kernel_index(self) -> i32 {
        match self {
            MetaIndex::Internal => -3,
            MetaIndex::FlexExternal => -2,
            MetaIndex::Indexed(i) => i32::from(i),
        }
    }

    pub fn is_internal(self) -> bool {
        self == MetaIndex::Internal
    }
}

/// strtol(s, &end, 0) with "whole string must be consumed": decimal, 0x hex or 0 octal.
fn parse_c_long(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        body.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Activity-log geometry: `stripes` stripes of `stripe_size_4k` blocks of 4 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlGeometry {
    stripes: u32,
    stripe_size_4k: u32,
}

impl Default for AlGeometry {
    fn default() -> Self {
        AlGeometry {
            stripes: DEFAULT_AL_STRIPES,
            stripe_size_4k: DEFAULT_AL_STRIPE_SIZE_4K,
        }
    }
}

impl AlGeometry {
    /// Checks drbdmeta's limits: 8 ≤ stripes × stripe_size_4k ≤ 8192 blocks (32 KiB … 32 MiB).
    pub fn new(stripes: u32, stripe_size_4k: u32) -> Result<AlGeometry, Error> {
        let blocks = u64::from(stripes) * u64::from(stripe_size_4k);
        if blocks > u64::from(MAX_AL_BLOCKS) {
            return Err(Error::InvalidArgument {
                field: "al-stripes x al-stripe-size",
                value: format!("{stripes} x {stripe_size_4k} x 4 KiB"),
                reason: "activity log larger than 32 MiB",
            });
        }
        if blocks < u64::from(MIN_AL_BLOCKS) {
            return Err(Error::InvalidArgument {
                field: "al-stripes x al-stripe-size",
                value: format!("{stripes} x {stripe_size_4k} x 4 KiB"),
                reason: "activity log smaller than 32 KiB",
            });
        }
        Ok(AlGeometry {
            stripes,
            stripe_size_4k,
        })
    }

    pub fn stripes(self) -> u32 {
        self.stripes
    }

    pub fn stripe_size_4k(self) -> u32 {
        self.stripe_size_4k
    }

    /// Number of 4 KiB transaction blocks in the ring.
    pub fn blocks(self) -> u32 {
        self.stripes * self.stripe_size_4k
    }

    /// AL size in sectors.
    pub fn size_sect(self) -> u32 {
        self.blocks() * 8
    }

    pub fn size_bytes(self) -> u64 {
        u64::from(self.blocks()) * BLOCK_BYTES
    }

    /// 4 KiB block (relative to the AL start) that holds transaction number `tr_number`
    /// (kernel `al_tr_number_to_on_disk_sector`, drbdmeta `al_tr_number_to_on_disk_slot`).
    pub fn block_of_transaction(self, tr_number: u32) -> u32 {
        let i = tr_number % self.blocks();
        (i % self.stripes) * self.stripe_size_4k + i / self.stripes
    }

    /// Largest number of AL slots ("al-extents") this ring can describe safely: every slot
    /// must appear in the context of the last `blocks − 1` transactions, because the newest
    /// one may be torn (kernel `drbd_al_extents_max`).
    pub fn max_al_extents(self) -> u32 {
        let by_ring = (self.blocks() - 1) * crate::activity_log::AL_CONTEXT_PER_TRANSACTION as u32;
        by_ring.min(crate::activity_log::AL_EXTENTS_MAX)
    }
}

/// drbdmeta's `bm_bytes`: bitmap bytes for a device of `sectors` sectors, one bit per 4 KiB,
/// rounded up to 64-bit words and then to whole 4 KiB blocks.
pub fn bm_bytes(sectors: u64) -> u64 {
    let bits = sectors.div_ceil(8);
    let bits = bits.next_multiple_of(64);
    (bits / 8).next_multiple_of(BLOCK_BYTES)
}

/// Number of valid bitmap bits for a device of `sectors` sectors.
pub fn bm_bits(sectors: u64) -> u64 {
    sectors.div_ceil(8)
}

/// The computed placement of one v08 meta-data area on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub index: MetaIndex,
    /// Size of the meta-data device (for internal: the backing device) in bytes.
    pub device_bytes: u64,
    /// Absolute byte offset of the superblock.
    pub md_offset: u64,
    /// Size of the whole meta-data area in sectors (superblock field `md_size_sect`).
    pub md_size_sect: u32,
    /// AL start in sectors relative to the superblock (signed; negative for internal).
    pub al_offset_sect: i32,
    /// Bitmap start in sectors relative to the superblock (signed; negative for internal).
    pub bm_offset_sect: i32,
    pub al: AlGeometry,
    /// Largest usable data size in sectors this meta-data can describe (for internal: the data
    /// area in front of the meta-data; for external: what the bitmap area can cover).
    pub max_usable_sect: u64,
}

impl Layout {
    /// Computes the layout drbdmeta's `create-md` would produce for a device of
    /// `device_bytes` bytes.
    pub fn new(index: MetaIndex, device_bytes: u64, al: AlGeometry) -> Result<Layout, Error> {
        let md_offset = superblock_offset(index, device_bytes)?;
        let al_sect = al.size_sect();
        let (md_size_sect, al_offset_sect, bm_offset_sect) = match index {
            MetaIndex::Indexed(_) => (INDEXED_SLOT_SECT, 8i64, 8 + i64::from(al_sect)),
            MetaIndex::FlexExternal => {
                let sect = device_bytes / SECTOR_BYTES;
                let md_size = u32::try_from(sect).map_err(|_| Error::InvalidArgument {
                    field: "meta-data device size",
                    value: format!("{device_bytes} bytes"),
                    reason: "flex-external meta-data larger than 2 TiB cannot be described",
                })?;
                (md_size, 8i64, 8 + i64::from(al_sect))
            }
            MetaIndex::Internal => {
                let device_sect = device_bytes / SECTOR_BYTES;
                if device_sect > MAX_DEVICE_SECT {
                    return Err(Error::InvalidArgument {
                        field: "backing device size",
                        value: format!("{device_bytes} bytes"),
                        reason: "larger than 1 PiB, bitmap would exceed 32 GiB",
                    });
                }
                let bm_sect = (bm_bytes(device_sect) / SECTOR_BYTES).next_multiple_of(8);
                if bm_sect > BM_MAX_BYTES_FLEX / SECTOR_BYTES {
                    return Err(Error::InvalidArgument {
                        field: "backing device size",
                        value: format!("{device_bytes} bytes"),
                        reason: "bitmap for that device got too large",
                    });
                }
                let md_size = bm_sect + u64::from(SUPERBLOCK_SECT) + u64::from(al_sect);
                // bm_sect ≤ 2^26 and al_sect ≤ 2^16, so this fits u32 and i32.
                let md_size = md_size as u32;
                (
                    md_size,
                    -i64::from(al_sect),
                    i64::from(SUPERBLOCK_SECT) - i64::from(md_size),
                )
            }
        };
        let layout = Layout {
            index,
            device_bytes,
            md_offset,
            md_size_sect,
            al_offset_sect: al_offset_sect as i32,
            bm_offset_sect: bm_offset_sect as i32,
            al,
            max_usable_sect: 0,
        };
        let max_usable_sect = layout.compute_max_usable()?;
        Ok(Layout {
            max_usable_sect,
            ..layout
        })
    }

    fn compute_max_usable(&self) -> Result<u64, Error> {
        match self.index {
            MetaIndex::Internal => {
                // The first meta-data byte (the bitmap start) limits the data area.
                let first = self.md_offset as i64 + i64::from(self.bm_offset_sect) * 512;
                if first < 0 {
                    return Err(Error::DeviceTooSmall {
                        what: "internal meta-data (superblock, activity log and bitmap)",
                        need_bytes: u64::from(self.md_size_sect) * SECTOR_BYTES,
                        have_bytes: self.device_bytes,
                    });
                }
                Ok(first as u64 / SECTOR_BYTES)
            }
            MetaIndex::FlexExternal | MetaIndex::Indexed(_) => {
                let bm_sect = i64::from(self.md_size_sect) - i64::from(self.bm_offset_sect);
                if bm_sect <= 0 {
                    return Err(Error::DeviceTooSmall {
                        what: "external meta-data (superblock, activity log and bitmap)",
                        need_bytes: (u64::from(self.bm_offset_sect as u32) + 8) * SECTOR_BYTES,
                        have_bytes: self.device_bytes,
                    });
                }
                if let MetaIndex::Indexed(_) = self.index {
                    let end = self.md_offset + u64::from(self.md_size_sect) * SECTOR_BYTES;
                    if end > self.device_bytes {
                        return Err(Error::DeviceTooSmall {
                            what: "indexed meta-data slot (128 MiB)",
                            need_bytes: end,
                            have_bytes: self.device_bytes,
                        });
                    }
                }
                // One bitmap sector (4096 bits) covers 4096 × 4 KiB = 32768 sectors.
                Ok(bm_sect as u64 * 32768)
            }
        }
    }

    /// Absolute byte offset of the activity log.
    pub fn al_offset(&self) -> u64 {
        (self.md_offset as i64 + i64::from(self.al_offset_sect) * 512) as u64
    }

    /// Absolute byte offset of the bitmap.
    pub fn bm_offset(&self) -> u64 {
        (self.md_offset as i64 + i64::from(self.bm_offset_sect) * 512) as u64
    }

    /// Bytes reserved for the bitmap in this layout.
    pub fn bm_area_bytes(&self) -> u64 {
        match self.index {
            MetaIndex::Internal => {
                (i64::from(self.al_offset_sect) - i64::from(self.bm_offset_sect)) as u64 * 512
            }
            _ => (i64::from(self.md_size_sect) - i64::from(self.bm_offset_sect)) as u64 * 512,
        }
    }

    /// Bitmap bytes `create-md` zeroes: sized for the whole device (internal) or meta device.
    pub fn bm_bytes_for_device(&self) -> u64 {
        bm_bytes(self.device_bytes / SECTOR_BYTES)
    }

    /// Lowest and one-past-highest byte of the meta-data area.
    pub fn area(&self) -> (u64, u64) {
        let lo = self.md_offset.min(self.al_offset()).min(self.bm_offset());
        (lo, lo + u64::from(self.md_size_sect) * SECTOR_BYTES)
    }

    /// Absolute byte offset of the 4 KiB block that holds AL transaction `tr_number`.
    pub fn al_transaction_offset(&self, tr_number: u32) -> u64 {
        self.al_offset() + u64::from(self.al.block_of_transaction(tr_number)) * BLOCK_BYTES
    }

    /// Usable data size in sectors for a data device of `data_dev_sect` sectors: internal
    /// meta-data ignores the argument (the data device is the meta device).
    pub fn usable_sectors(&self, data_dev_sect: u64) -> u64 {
        match self.index {
            MetaIndex::Internal => self.max_usable_sect,
            _ => self.max_usable_sect.min(data_dev_sect),
        }
    }
}

/// Absolute byte offset of the superblock (drbdmeta `v07_style_md_get_byte_offset`), checked
/// against the device size.
pub fn superblock_offset(index: MetaIndex, device_bytes: u64) -> Result<u64, Error> {
    let offset = match index {
        MetaIndex::Indexed(i) => u64::from(i) * u64::from(INDEXED_SLOT_SECT) * SECTOR_BYTES,
        MetaIndex::FlexExternal => 0,
        MetaIndex::Internal => {
            if device_bytes < BLOCK_BYTES {
                return Err(Error::DeviceTooSmall {
                    what: "superblock",
                    need_bytes: BLOCK_BYTES,
                    have_bytes: device_bytes,
                });
            }
            (device_bytes - BLOCK_BYTES) & !(BLOCK_BYTES - 1)
        }
    };
    if device_bytes < BLOCK_BYTES || offset > device_bytes - BLOCK_BYTES {
        return Err(Error::DeviceTooSmall {
            what: "superblock",
            need_bytes: offset + BLOCK_BYTES,
            have_bytes: device_bytes,
        });
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(bytes: u64) -> Layout {
        Layout::new(MetaIndex::Internal, bytes, AlGeometry::default()).unwrap()
    }

    /// Spec §8: 1 GiB backing device.
    #[test]
    fn internal_1gib_matches_worked_example() {
        let l = internal(1 << 30);
        assert_eq!(l.md_offset, 1_073_737_728);
        assert_eq!(l.md_size_sect, 136);
        assert_eq!(l.al_offset_sect, -64);
        assert_eq!(l.bm_offset_sect, -128);
        assert_eq!(l.al_offset(), 1_073_704_960);
        assert_eq!(l.bm_offset(), 1_073_672_192);
        assert_eq!(l.max_usable_sect, 2_097_016);
        assert_eq!(bm_bytes(l.max_usable_sect), 32768);
    }

    /// Spec §8: N = 2 097 155 sectors (not a multiple of 8).
    #[test]
    fn internal_odd_sector_count() {
        let l = internal(2_097_155 * 512);
        assert_eq!(l.md_size_sect, 144);
        assert_eq!(l.max_usable_sect, 2_097_008);
    }

    /// Spec §8: 100 GiB.
    #[test]
    fn internal_100gib() {
        let l = internal(100 << 30);
        assert_eq!(l.md_size_sect, 6472);
        assert_eq!(l.max_usable_sect, 209_708_728);
    }

    /// Spec §8 general formula, for a spread of sizes including ones not a multiple of 512.
    #[test]
    fn internal_general_formula() {
        for bytes in [68 << 10, (64 << 20) + 1234, 3 << 30, (1 << 40) + 4095] {
            let n = bytes / 512;
            let l = internal(bytes);
            let bm = n.div_ceil(32768).next_multiple_of(8);
            assert_eq!(u64::from(l.md_size_sect), bm + 8 + 64, "{bytes}");
            assert_eq!(l.max_usable_sect, (n & !7) - (bm + 8 + 64), "{bytes}");
        }
    }

    /// Spec §1.2: a 1 MiB flex-external meta device.
    #[test]
    fn flex_external_1mib() {
        let l = Layout::new(MetaIndex::FlexExternal, 1 << 20, AlGeometry::default()).unwrap();
        assert_eq!(l.md_size_sect, 2048);
        assert_eq!(l.al_offset(), 4096);
        assert_eq!(l.bm_offset(), 36864);
        assert_eq!(l.bm_offset_sect, 72);
        assert_eq!(l.max_usable_sect, (2048 - 72) * 32768);
    }

    /// Spec §1.3: slot 1 of a 300 MiB file.
    #[test]
    fn indexed_slot_1() {
        let l = Layout::new(MetaIndex::Indexed(1), 300 << 20, AlGeometry::default()).unwrap();
        assert_eq!(l.md_offset, 134_217_728);
        assert_eq!(l.al_offset(), 134_221_824);
        assert_eq!(l.bm_offset(), 134_254_592);
        assert_eq!(l.max_usable_sect, 8_587_575_296);
    }

    #[test]
    fn rejects_indexed_slot_past_device_end() {
        let e = Layout::new(MetaIndex::Indexed(3), 300 << 20, AlGeometry::default());
        assert!(matches!(e, Err(Error::DeviceTooSmall { .. })), "{e:?}");
    }

    #[test]
    fn rejects_internal_too_small_for_large_al() {
        let al = AlGeometry::new(4, 64).unwrap();
        let e = Layout::new(MetaIndex::Internal, 512 << 10, al);
        assert!(matches!(e, Err(Error::DeviceTooSmall { .. })), "{e:?}");
    }

    #[test]
    fn striped_ring_slots_follow_kernel_formula() {
        let al = AlGeometry::new(3, 4).unwrap();
        let slots: Vec<u32> = (0..12).map(|t| al.block_of_transaction(t)).collect();
        assert_eq!(slots, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        assert_eq!(AlGeometry::default().max_al_extents(), 6433);
    }

    #[test]
    fn parses_index_arguments_like_strtol() {
        assert_eq!(MetaIndex::parse("internal"), Some(MetaIndex::Internal));
        assert_eq!(MetaIndex::parse("flex-internal"), Some(MetaIndex::Internal));
        assert_eq!(
            MetaIndex::parse("flex-external"),
            Some(MetaIndex::FlexExternal)
        );
        assert_eq!(MetaIndex::parse("0x10"), Some(MetaIndex::Indexed(16)));
        assert_eq!(MetaIndex::parse("255"), Some(MetaIndex::Indexed(255)));
        assert_eq!(MetaIndex::parse("256"), None);
        assert_eq!(MetaIndex::parse("-1"), None);
        assert_eq!(MetaIndex::parse("1x"), None);
    }
}
