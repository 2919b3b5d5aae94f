//! The 4 KiB v08 superblock (spec §2, §3): a raw big-endian view and a validated value.
//!
//! Layout source: `struct meta_data_on_disk` (drbd-8.4 `drbd_main.c`) and `struct md_on_disk_08`
//! (drbd-utils `drbdmeta.c`). Every integer is big-endian.

use crate::error::Error;
use crate::layout::{AlGeometry, Layout, MetaIndex, BLOCK_BYTES, BM_BYTES_PER_BIT, SECTOR_BYTES};
use crate::uuid::Uuids;

/// `DRBD_MD_MAGIC_08`: v08 meta-data whose activity log has been applied (or never used).
pub const DRBD_MD_MAGIC_08: u32 = 0x8374_026b;
/// `DRBD_MD_MAGIC_84_UNCLEAN`: written by an attached 8.4 kernel; AL replay needed.
pub const DRBD_MD_MAGIC_84_UNCLEAN: u32 = 0x8374_026c;
/// `DRBD_MD_MAGIC_07`, `_09`: other formats, recognised only to name them in errors.
pub const DRBD_MD_MAGIC_07: u32 = 0x8374_026a;
pub const DRBD_MD_MAGIC_09: u32 = 0x8374_026d;

/// The superblock magic, as a newtype so unknown values survive and print in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Magic(pub u32);

impl Magic {
    pub const V08: Magic = Magic(DRBD_MD_MAGIC_08);
    pub const V84_UNCLEAN: Magic = Magic(DRBD_MD_MAGIC_84_UNCLEAN);

    pub fn is_v08(self) -> bool {
        self == Magic::V08 || self == Magic::V84_UNCLEAN
    }
}

impl std::fmt::Debug for Magic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Magic::V08 => write!(f, "Magic::V08"),
            Magic::V84_UNCLEAN => write!(f, "Magic::V84_UNCLEAN"),
            Magic(v) => write!(f, "Magic({v:#010x})"),
        }
    }
}

/// The `flags` word (`MDF_*`, spec §3). Unknown bits are kept, never dropped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MdFlags(pub u32);

impl MdFlags {
    /// `MDF_CONSISTENT`: own disk state > Inconsistent.
    pub const CONSISTENT: MdFlags = MdFlags(0x001);
    /// `MDF_PRIMARY_IND`: was Primary (apply-al only replays when this is set).
    pub const PRIMARY_IND: MdFlags = MdFlags(0x002);
    /// `MDF_CONNECTED_IND`: connection state > WFReportParams.
    pub const CONNECTED_IND: MdFlags = MdFlags(0x004);
    /// `MDF_FULL_SYNC`: a set-all-bits operation was in progress.
    pub const FULL_SYNC: MdFlags = MdFlags(0x008);
    /// `MDF_WAS_UP_TO_DATE`: own disk state > Outdated.
    pub const WAS_UP_TO_DATE: MdFlags = MdFlags(0x010);
    /// `MDF_PEER_OUT_DATED`: the peer is Inconsistent or Outdated.
    pub const PEER_OUT_DATED: MdFlags = MdFlags(0x020);
    /// `MDF_CRASHED_PRIMARY`.
    pub const CRASHED_PRIMARY: MdFlags = MdFlags(0x040);
    /// `MDF_AL_CLEAN`: the AL has been applied; the kernel refuses MAGIC_08 without it.
    pub const AL_CLEAN: MdFlags = MdFlags(0x080);
    /// `MDF_AL_DISABLED`: `al-updates no`.
    pub const AL_DISABLED: MdFlags = MdFlags(0x100);

    pub fn contains(self, other: MdFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: MdFlags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: MdFlags) {
        self.0 &= !other.0;
    }

    pub fn set(&mut self, other: MdFlags, on: bool) {
        if on {
            self.insert(other)
        } else {
            self.remove(other)
        }
    }
}

impl std::fmt::Debug for MdFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MdFlags({:#05x})", self.0)
    }
}

/// The superblock exactly as on disk: byte arrays, big-endian.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawSuperblock {
    pub la_size_sect: [u8; 8],
    pub uuid: [[u8; 8]; 4],
    pub device_uuid: [u8; 8],
    pub reserved_u64_1: [u8; 8],
    pub flags: [u8; 4],
    pub magic: [u8; 4],
    pub md_size_sect: [u8; 4],
    pub al_offset: [u8; 4],
    pub al_nr_extents: [u8; 4],
    pub bm_offset: [u8; 4],
    pub bm_bytes_per_bit: [u8; 4],
    pub la_peer_max_bio_size: [u8; 4],
    pub al_stripes: [u8; 4],
    pub al_stripe_size_4k: [u8; 4],
    pub reserved_u32: [u8; 4],
    pub reserved: [u8; 3996],
}

const _: () = assert!(std::mem::size_of::<RawSuperblock>() == 4096);
/// Size of the superblock on disk.
pub const SUPERBLOCK_BYTES: usize = 4096;

impl RawSuperblock {
    /// Copies the first 4096 bytes of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<RawSuperblock, Error> {
        if buf.len() < SUPERBLOCK_BYTES {
            return Err(Error::Truncated {
                what: "superblock",
                need: SUPERBLOCK_BYTES,
                have: buf.len(),
            });
        }
        let b = |o: usize, n: usize| &buf[o..o + n];
        let a4 = |o: usize| -> [u8; 4] { b(o, 4).try_into().expect("4-byte slice") };
        let a8 = |o: usize| -> [u8; 8] { b(o, 8).try_into().expect("8-byte slice") };
        Ok(RawSuperblock {
            la_size_sect: a8(0),
            uuid: [a8(8), a8(16), a8(24), a8(32)],
            device_uuid: a8(40),
            reserved_u64_1: a8(48),
            flags: a4(56),
            magic: a4(60),
            md_size_sect: a4(64),
            al_offset: a4(68),
            al_nr_extents: a4(72),
            bm_offset: a4(76),
            bm_bytes_per_bit: a4(80),
            la_peer_max_bio_size: a4(84),
            al_stripes: a4(88),
            al_stripe_size_4k: a4(92),
            reserved_u32: a4(96),
            reserved: b(100, 3996).try_into().expect("3996-byte slice"),
        })
    }

    pub fn to_bytes(&self) -> Box<[u8; SUPERBLOCK_BYTES]> {
        let mut out = Box::new([0u8; SUPERBLOCK_BYTES]);
        let mut put = |o: usize, v: &[u8]| out[o..o + v.len()].copy_from_slice(v);
        put(0, &self.la_size_sect);
        for (i, u) in self.uuid.iter().enumerate() {
            put(8 + 8 * i, u);
        }
        put(40, &self.device_uuid);
        put(48, &self.reserved_u64_1);
        put(56, &self.flags);
        put(60, &self.magic);
        put(64, &self.md_size_sect);
        put(68, &self.al_offset);
        put(72, &self.al_nr_extents);
        put(76, &self.bm_offset);
        put(80, &self.bm_bytes_per_bit);
        put(84, &self.la_peer_max_bio_size);
        put(88, &self.al_stripes);
        put(92, &self.al_stripe_size_4k);
        put(96, &self.reserved_u32);
        put(100, &self.reserved);
        out
    }

    pub fn magic(&self) -> Magic {
        Magic(u32::from_be_bytes(self.magic))
    }
}

/// A decoded v08 superblock. Reserved fields are not kept: like drbdmeta and the kernel we
/// always write them as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// Last agreed size of the DRBD device in sectors ("effective size").
    pub la_size_sect: u64,
    pub uuids: Uuids,
    pub device_uuid: u64,
    pub flags: MdFlags,
    pub magic: Magic,
    pub md_size_sect: u32,
    pub al_offset: i32,
    /// Number of AL slots ("al-extents") in use when written.
    pub al_nr_extents: u32,
    pub bm_offset: i32,
    pub bm_bytes_per_bit: u32,
    pub la_peer_max_bio_size: u32,
    /// AL geometry; 0/0 on disk (pre-8.4.3) is read as 1 × 8, as kernel and drbdmeta do.
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
}

/// `al_nr_extents` that `create-md` writes (drbdmeta: "arbitrary").
pub const CREATE_MD_AL_NR_EXTENTS: u32 = 257;

impl Superblock {
    /// The superblock `create-md` writes for `layout`.
    pub fn new_created(layout: &Layout, la_peer_max_bio_size: u32) -> Superblock {
        Superblock {
            la_size_sect: 0,
            uuids: Uuids::just_created(),
            device_uuid: 0,
            flags: MdFlags::AL_CLEAN,
            magic: Magic::V08,
            md_size_sect: layout.md_size_sect,
            al_offset: layout.al_offset_sect,
            al_nr_extents: CREATE_MD_AL_NR_EXTENTS,
            bm_offset: layout.bm_offset_sect,
            bm_bytes_per_bit: BM_BYTES_PER_BIT,
            la_peer_max_bio_size,
            al_stripes: layout.al.stripes(),
            al_stripe_size_4k: layout.al.stripe_size_4k(),
        }
    }

    /// Decodes a superblock read from byte `offset` (used in errors). Refuses anything whose
    /// magic is not MAGIC_08 or MAGIC_84_UNCLEAN; field checks against a device are in
    /// [`Superblock::layout`].
    pub fn decode(buf: &[u8], offset: u64) -> Result<Superblock, Error> {
        let raw = RawSuperblock::from_bytes(buf)?;
        let magic = raw.magic();
        if !magic.is_v08() {
            return Err(Error::BadMagic {
                offset,
                found: magic.0,
            });
        }
        let u64be = u64::from_be_bytes;
        let u32be = u32::from_be_bytes;
        let (mut stripes, mut stripe_size) = (u32be(raw.al_stripes), u32be(raw.al_stripe_size_4k));
        // Spec §2: 0 and 0 means the pre-8.4.3 fixed 32 KiB AL.
        if stripes == 0 && stripe_size == 0 {
            stripes = 1;
            stripe_size = 8;
        }
        let sb = Superblock {
            la_size_sect: u64be(raw.la_size_sect),
            uuids: Uuids::from_array(raw.uuid.map(u64be)),
            device_uuid: u64be(raw.device_uuid),
            flags: MdFlags(u32be(raw.flags)),
            magic,
            md_size_sect: u32be(raw.md_size_sect),
            al_offset: i32::from_be_bytes(raw.al_offset),
            al_nr_extents: u32be(raw.al_nr_extents),
            bm_offset: i32::from_be_bytes(raw.bm_offset),
            bm_bytes_per_bit: u32be(raw.bm_bytes_per_bit),
            la_peer_max_bio_size: u32be(raw.la_peer_max_bio_size),
            al_stripes: stripes,
            al_stripe_size_4k: stripe_size,
        };
        debug_assert!(sb.magic.is_v08());
        Ok(sb)
    }

    /// Encodes into the 4 KiB on-disk form; reserved bytes are zero.
    pub fn encode(&self) -> Box<[u8; SUPERBLOCK_BYTES]> {
        assert!(
            self.magic.is_v08(),
            "refusing to encode a v08 superblock with magic {:?}",
            self.magic
        );
        let u = self.uuids.to_array();
        let raw = RawSuperblock {
            la_size_sect: self.la_size_sect.to_be_bytes(),
            uuid: u.map(u64::to_be_bytes),
            device_uuid: self.device_uuid.to_be_bytes(),
            reserved_u64_1: [0; 8],
            flags: self.flags.0.to_be_bytes(),
            magic: self.magic.0.to_be_bytes(),
            md_size_sect: self.md_size_sect.to_be_bytes(),
            al_offset: self.al_offset.to_be_bytes(),
            al_nr_extents: self.al_nr_extents.to_be_bytes(),
            bm_offset: self.bm_offset.to_be_bytes(),
            bm_bytes_per_bit: self.bm_bytes_per_bit.to_be_bytes(),
            la_peer_max_bio_size: self.la_peer_max_bio_size.to_be_bytes(),
            al_stripes: self.al_stripes.to_be_bytes(),
            al_stripe_size_4k: self.al_stripe_size_4k.to_be_bytes(),
            reserved_u32: [0; 4],
            reserved: [0; 3996],
        };
        raw.to_bytes()
    }

    /// What an attached node writes (spec §2.2, like the 8.4 kernel on every superblock
    /// write): `MAGIC_84_UNCLEAN`, `MDF_AL_CLEAN` cleared, and `MDF_PRIMARY_IND` as given.
    /// Write (and flush) it before the first AL transaction.
    pub fn mark_attached(&mut self, primary: bool) {
        self.magic = Magic::V84_UNCLEAN;
        self.flags.remove(MdFlags::AL_CLEAN);
        self.flags.set(MdFlags::PRIMARY_IND, primary);
    }

    /// True if the kernel would attach it without `apply-al` (spec §2.2).
    pub fn is_clean(&self) -> bool {
        self.magic == Magic::V08 && self.flags.contains(MdFlags::AL_CLEAN)
    }

    pub fn al_geometry(&self, offset: u64) -> Result<AlGeometry, Error> {
        AlGeometry::new(self.al_stripes, self.al_stripe_size_4k).map_err(|_| Error::BadField {
            offset,
            field: "al_stripes x al_stripe_size_4k",
            found: format!("{} x {}", self.al_stripes, self.al_stripe_size_4k),
            expected: "between 8 and 8192 blocks of 4 KiB".into(),
        })
    }

    /// Checks the superblock against where it was found (drbdmeta `is_valid_md` for v08 plus
    /// the kernel's `bm_bytes_per_bit` rule) and returns the layout it describes.
    /// `device_bytes` is the size of the device the superblock was read from.
    pub fn layout(&self, index: MetaIndex, device_bytes: u64) -> Result<Layout, Error> {
        let expected = Layout::new(
            index,
            device_bytes,
            self.al_geometry(crate::layout::superblock_offset(index, device_bytes)?)?,
        )?;
        let offset = expected.md_offset;
        let bad = |field: &'static str, found: String, expected: String| Error::BadField {
            offset,
            field,
            found,
            expected,
        };
        if self.bm_bytes_per_bit != BM_BYTES_PER_BIT {
            return Err(bad(
                "bm_bytes_per_bit",
                self.bm_bytes_per_bit.to_string(),
                BM_BYTES_PER_BIT.to_string(),
            ));
        }
        if self.al_offset != expected.al_offset_sect {
            return Err(bad(
                "al_offset",
                self.al_offset.to_string(),
                expected.al_offset_sect.to_string(),
            ));
        }
        if self.bm_offset != expected.bm_offset_sect {
            return Err(bad(
                "bm_offset",
                self.bm_offset.to_string(),
                expected.bm_offset_sect.to_string(),
            ));
        }
        let mut layout = expected;
        match index {
            MetaIndex::Internal => {
                if self.md_size_sect != expected.md_size_sect {
                    return Err(bad(
                        "md_size_sect",
                        self.md_size_sect.to_string(),
                        expected.md_size_sect.to_string(),
                    ));
                }
            }
            // drbdmeta trusts the on-disk md_size_sect for external meta-data: a meta device
            // that grew keeps the size it was created with.
            MetaIndex::FlexExternal | MetaIndex::Indexed(_) => {
                let end = u64::from(self.md_size_sect) * SECTOR_BYTES;
                if i64::from(self.md_size_sect) <= i64::from(self.bm_offset)
                    || layout.md_offset + end > device_bytes.max(BLOCK_BYTES)
                {
                    return Err(bad(
                        "md_size_sect",
                        self.md_size_sect.to_string(),
                        format!(
                            "more than bm_offset {} and at most {} (device size)",
                            self.bm_offset,
                            (device_bytes - layout.md_offset) / SECTOR_BYTES
                        ),
                    ));
                }
                layout.md_size_sect = self.md_size_sect;
                layout.max_usable_sect =
                    u64::from(self.md_size_sect - self.bm_offset as u32) * 32768;
            }
        }
        debug_assert_eq!(layout.al_offset_sect, self.al_offset);
        Ok(layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §8: the superblock drbdmeta writes for 1 GiB internal, field by field.
    #[test]
    fn created_superblock_golden_bytes() {
        let layout = Layout::new(MetaIndex::Internal, 1 << 30, AlGeometry::default()).unwrap();
        let b = Superblock::new_created(&layout, 0).encode();
        let mut want = [0u8; 4096];
        want[8..16].copy_from_slice(&4u64.to_be_bytes()); // current = UUID_JUST_CREATED
        want[56..60].copy_from_slice(&0x80u32.to_be_bytes()); // MDF_AL_CLEAN
        want[60..64].copy_from_slice(&0x8374_026bu32.to_be_bytes()); // MAGIC_08
        want[64..68].copy_from_slice(&0x88u32.to_be_bytes()); // md_size_sect 136
        want[68..72].copy_from_slice(&0xffff_ffc0u32.to_be_bytes()); // al_offset −64
        want[72..76].copy_from_slice(&0x101u32.to_be_bytes()); // al_nr_extents 257
        want[76..80].copy_from_slice(&0xffff_ff80u32.to_be_bytes()); // bm_offset −128
        want[80..84].copy_from_slice(&0x1000u32.to_be_bytes()); // bm_bytes_per_bit
        want[88..92].copy_from_slice(&1u32.to_be_bytes()); // al_stripes
        want[92..96].copy_from_slice(&8u32.to_be_bytes()); // al_stripe_size_4k
        assert_eq!(&b[..], &want[..]);
        let back = Superblock::decode(&b[..], 0).unwrap();
        assert_eq!(back, Superblock::new_created(&layout, 0));
        assert_eq!(back.layout(MetaIndex::Internal, 1 << 30).unwrap(), layout);
    }

    #[test]
    fn rejects_wrong_magic_naming_offset() {
        let mut b = [0u8; 4096];
        b[60..64].copy_from_slice(&DRBD_MD_MAGIC_09.to_be_bytes());
        let e = Superblock::decode(&b, 0x1000).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadMagic {
                    offset: 0x1000,
                    found: DRBD_MD_MAGIC_09
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn rejects_truncated_buffer() {
        let e = Superblock::decode(&[0u8; 100], 0).unwrap_err();
        assert!(matches!(e, Error::Truncated { have: 100, .. }), "{e}");
    }

    #[test]
    fn zero_stripes_read_as_legacy_32k() {
        let layout = Layout::new(MetaIndex::Internal, 1 << 30, AlGeometry::default()).unwrap();
        let mut b = Superblock::new_created(&layout, 0).encode();
        b[88..96].fill(0);
        let sb = Superblock::decode(&b[..], 0).unwrap();
        assert_eq!((sb.al_stripes, sb.al_stripe_size_4k), (1, 8));
    }

    #[test]
    fn rejects_bm_offset_that_does_not_match_device() {
        let layout = Layout::new(MetaIndex::Internal, 1 << 30, AlGeometry::default()).unwrap();
        let sb = Superblock::new_created(&layout, 0);
        let e = sb.layout(MetaIndex::Internal, 2 << 30).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadField {
                    field: "bm_offset",
                    ..
                }
            ),
            "{e}"
        );
    }
}
