//! Whole-device operations over [`BlockIo`]: create, open, apply-al, restore. These are what
//! `udrbdmeta` runs and what the daemon runs at attach; each writes in the crash-safe order
//! described in the crate docs and flushes between the steps that depend on each other.

use crate::activity_log::{self, ReplayOutcome, LC_FREE};
use crate::bitmap::Bitmap;
use crate::dump::Dump;
use crate::error::Error;
use crate::io::BlockIo;
use crate::layout::{
    bm_bits, bm_bytes, superblock_offset, AlGeometry, Layout, MetaIndex, BLOCK_BYTES, SECTOR_BYTES,
};
use crate::superblock::{Magic, MdFlags, Superblock, SUPERBLOCK_BYTES};
use crate::MetaWrite;

/// A validated superblock and the layout it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDisk {
    pub superblock: Superblock,
    pub layout: Layout,
    /// `la_size_sect` as stored, when it exceeded what the layout can hold; the superblock
    /// value has then been clipped to `layout.max_usable_sect` (drbdmeta does the same and
    /// prints "la-size-sect was too big").
    pub la_size_clipped_from: Option<u64>,
}

impl OnDisk {
    /// Bytes of bitmap in use for the agreed size (drbdmeta `bm_bytes`).
    pub fn bm_bytes(&self) -> u64 {
        bm_bytes(self.superblock.la_size_sect)
    }
}

/// Options of `create-md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreateOptions {
    pub al: AlGeometry,
    /// `--peer-max-bio-size` (0 = unknown).
    pub peer_max_bio_size: u32,
}

fn read(io: &impl BlockIo, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    io.read_at(&mut buf, offset)
        .map_err(Error::io("read", offset, len))?;
    Ok(buf)
}

fn write(io: &mut impl BlockIo, offset: u64, data: &[u8]) -> Result<(), Error> {
    io.write_at(data, offset)
        .map_err(Error::io("write", offset, data.len()))
}

fn flush(io: &mut impl BlockIo) -> Result<(), Error> {
    io.flush().map_err(Error::io("flush", 0, 0))
}

fn device_len(io: &impl BlockIo) -> Result<u64, Error> {
    io.len().map_err(Error::io("size query", 0, 0))
}

/// Writes every `MetaWrite` in order, then flushes once.
pub fn write_all(io: &mut impl BlockIo, writes: &[MetaWrite]) -> Result<(), Error> {
    for w in writes {
        write(io, w.offset, &w.data)?;
    }
    flush(io)
}

/// Reads and validates the superblock for placement `index` on `io`.
pub fn open(io: &impl BlockIo, index: MetaIndex) -> Result<OnDisk, Error> {
    open_sized(io, index, device_len(io)?)
}

/// Opens internal meta-data where it would be on a backing device of `device_bytes` bytes:
/// the "last known" position after an offline resize (drbdmeta `v08_check_for_resize`).
pub fn open_at_size(io: &impl BlockIo, device_bytes: u64) -> Result<OnDisk, Error> {
    let real = device_len(io)?;
    if device_bytes > real {
        return Err(Error::DeviceTooSmall {
            what: "last known backing device size",
            need_bytes: device_bytes,
            have_bytes: real,
        });
    }
    open_sized(io, MetaIndex::Internal, device_bytes)
}

fn open_sized(io: &impl BlockIo, index: MetaIndex, size: u64) -> Result<OnDisk, Error> {
    let offset = superblock_offset(index, size)?;
    let buf = read(io, offset, SUPERBLOCK_BYTES)?;
    let mut superblock = Superblock::decode(&buf, offset)?;
    let layout = superblock.layout(index, size)?;
    let mut la_size_clipped_from = None;
    if superblock.la_size_sect > layout.max_usable_sect {
        la_size_clipped_from = Some(superblock.la_size_sect);
        superblock.la_size_sect = layout.max_usable_sect;
    }
    Ok(OnDisk {
        superblock,
        layout,
        la_size_clipped_from,
    })
}

/// Writes the superblock and flushes.
pub fn write_superblock(io: &mut impl BlockIo, od: &OnDisk) -> Result<(), Error> {
    let bytes = od.superblock.encode();
    // Pair with decode: what we write must read back as the same layout.
    debug_assert_eq!(
        Superblock::decode(&bytes[..], od.layout.md_offset)
            .map(|s| s.layout(od.layout.index, od.layout.device_bytes).is_ok())
            .ok(),
        Some(true)
    );
    write(io, od.layout.md_offset, &bytes[..])?;
    flush(io)
}

/// `create-md`: initialised AL, zeroed bitmap area, then the superblock (magic last).
pub fn create(
    io: &mut impl BlockIo,
    index: MetaIndex,
    opts: &CreateOptions,
) -> Result<OnDisk, Error> {
    let size = device_len(io)?;
    let layout = Layout::new(index, size, opts.al)?;
    let od = OnDisk {
        superblock: Superblock::new_created(&layout, opts.peer_max_bio_size),
        layout,
        la_size_clipped_from: None,
    };
    // Invalidate any old superblock first so a crash in between leaves no stale meta-data
    // that would claim the new (zeroed) bitmap describes it.
    write(io, layout.md_offset, &[0u8; SUPERBLOCK_BYTES])?;
    flush(io)?;
    write(
        io,
        layout.al_offset(),
        &activity_log::initialized_area(layout.al),
    )?;
    zero(
        io,
        layout.bm_offset(),
        layout.bm_bytes_for_device().min(layout.bm_area_bytes()),
    )?;
    flush(io)?;
    write_superblock(io, &od)?;
    Ok(od)
}

/// Writes `len` zero bytes at `offset` in chunks of at most 1 MiB.
fn zero(io: &mut impl BlockIo, offset: u64, len: u64) -> Result<(), Error> {
    const CHUNK: u64 = 1 << 20;
    let buf = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done);
        write(io, offset + done, &buf[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// The raw AL area.
pub fn read_al(io: &impl BlockIo, layout: &Layout) -> Result<Vec<u8>, Error> {
    read(io, layout.al_offset(), layout.al.size_bytes() as usize)
}

/// The raw bitmap bytes in use for the agreed size (`bm_bytes(la_size_sect)`).
pub fn read_bitmap_bytes(io: &impl BlockIo, od: &OnDisk) -> Result<Vec<u8>, Error> {
    read(io, od.layout.bm_offset(), od.bm_bytes() as usize)
}

/// The bitmap for the agreed size, all pages clean.
pub fn read_bitmap(io: &impl BlockIo, od: &OnDisk) -> Result<Bitmap, Error> {
    let bytes = read_bitmap_bytes(io, od)?;
    Ok(Bitmap::from_le_bytes(
        &bytes,
        bm_bits(od.superblock.la_size_sect),
    ))
}

/// Which AL format `apply_al` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlFormat {
    /// 8.4: 4 KiB transactions with crc32c.
    V84,
    /// Pre-8.4: 512-byte sectors with an XOR checksum (converted on the way).
    V07,
}

/// What [`apply_al`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyAl {
    pub format: AlFormat,
    /// Extents found hot by replay, ascending.
    pub hot: Vec<u32>,
    /// Whether the hot extents were marked in the bitmap (only when `MDF_PRIMARY_IND`).
    pub applied: bool,
    /// Bits newly set in the bitmap.
    pub additional_bits: u64,
    pub reinitialized_al: bool,
    pub superblock_written: bool,
    /// Lines drbdmeta prints on stderr for the same situation.
    pub messages: Vec<String>,
}

/// `apply-al` (spec §4.4): replay the AL into the bitmap if `MDF_PRIMARY_IND` is set,
/// re-initialise the AL, then write `MAGIC_08 + MDF_AL_CLEAN`. Mirrors drbdmeta's
/// `meta_apply_al` so both tools leave identical bytes.
pub fn apply_al(io: &mut impl BlockIo, index: MetaIndex) -> Result<ApplyAl, Error> {
    let mut od = open(io, index)?;
    let layout = od.layout;
    let area = read_al(io, &layout)?;
    let primary = od.superblock.flags.contains(MdFlags::PRIMARY_IND);
    let al_magic_at = |b: usize| {
        area.len() >= (b + 1) * 4096
            && area[b * 4096..b * 4096 + 4] == activity_log::DRBD_AL_MAGIC.to_be_bytes()
    };
    let mut messages = Vec::new();
    let mut reinit = false;
    // drbdmeta's choice of format: an unclean 8.4 superblock, an AL magic in one of the first
    // two blocks, or a non-default geometry means 8.4 transactions.
    let is_84 = od.superblock.magic == Magic::V84_UNCLEAN
        || al_magic_at(0)
        || al_magic_at(1)
        || layout.al != AlGeometry::default();
    // (> 0: apply; 0: clean; < 0: error) as in drbdmeta.
    let (format, slots, status) = if is_84 {
        let r = activity_log::replay(&area, layout.al);
        messages.extend(r.warnings.iter().cloned());
        let status = match r.outcome {
            ReplayOutcome::NoUsableLog => {
                messages.push("No usable activity log found. Do you need to create-md?".into());
                -1
            }
            other => {
                if r.corrupt_blocks != 0 {
                    messages.push(format!(
                        "{} corrupt AL transactions found",
                        r.corrupt_blocks
                    ));
                }
                match other {
                    ReplayOutcome::Updates { transactions } => transactions as i64,
                    ReplayOutcome::Clean => 0,
                    _ => {
                        messages.push("No valid AL update transaction found.".into());
                        -2
                    }
                }
            }
        };
        (AlFormat::V84, r.slots, status)
    } else {
        let (slots, found) = activity_log::replay_v07(&area, od.superblock.al_nr_extents);
        if found == 0 {
            messages.push("No usable activity log found.".into());
        }
        reinit = true;
        (AlFormat::V07, slots, i64::from(found))
    };
    if status < 0 {
        if primary {
            return Err(Error::ActivityLog {
                offset: layout.al_offset(),
                reason: format!(
                    "{} and MDF_PRIMARY_IND is set: cannot tell which extents may differ",
                    messages.last().map_or("unusable log", String::as_str)
                ),
            });
        }
        messages.push("Error ignored, no need to apply the AL".into());
        reinit = true;
    }
    let mut hot: Vec<u32> = slots.iter().copied().filter(|&e| e != LC_FREE).collect();
    hot.sort_unstable();
    hot.dedup();
    let mut applied = false;
    let mut additional_bits = 0;
    let mut need_sb = false;
    if status > 0 && primary {
        let (bits, msgs) = mark_extents(io, &od, &hot)?;
        additional_bits = bits;
        messages.extend(msgs);
        applied = true;
        need_sb = true;
        flush(io)?;
    }
    if reinit || status > 0 {
        reinit_al(io, &layout, &area)?;
    }
    if !od.superblock.flags.contains(MdFlags::AL_CLEAN) || od.superblock.magic != Magic::V08 {
        need_sb = true;
    }
    if need_sb {
        // Rule 4: the clean magic goes last, after bitmap and AL are durable.
        od.superblock.flags.insert(MdFlags::AL_CLEAN);
        od.superblock.magic = Magic::V08;
        write_superblock(io, &od)?;
    }
    Ok(ApplyAl {
        format,
        hot,
        applied,
        additional_bits,
        reinitialized_al: reinit || status > 0,
        superblock_written: need_sb,
        messages,
    })
}

/// Re-initialises the AL so that a crash at any point leaves a ring that replays cleanly
/// (drbdmeta and we refuse a Primary's ring with corrupt blocks but no update transaction,
/// which a torn 32 KiB rewrite would leave behind). The bitmap already holds every hot
/// extent, so replaying any subset later is harmless. Order, one flushed 4 KiB block at a
/// time:
///
/// 1. If logical block 0 is not an update transaction, copy one there (a torn copy leaves
///    the original).
/// 2. Initialise every other block (block 0 still carries an update).
/// 3. Initialise block 0 last: torn, it is the single invalid first block replay accepts as
///    "the first transaction failed", i.e. clean.
fn reinit_al(io: &mut impl BlockIo, layout: &Layout, area: &[u8]) -> Result<(), Error> {
    const B: usize = BLOCK_BYTES as usize;
    let init = activity_log::initialized_block();
    let blocks = layout.al.blocks() as usize;
    let first = layout.al.block_of_transaction(0) as usize;
    let block = |i: usize| &area[i * B..(i + 1) * B];
    let is_update = |i: usize| {
        activity_log::AlTransaction::decode(block(i))
            .is_ok_and(|t| t.transaction_type != activity_log::AL_TR_INITIALIZED)
    };
    let at = |i: usize| layout.al_offset() + (i * B) as u64;
    if !is_update(first) {
        if let Some(u) = (0..blocks).find(|&i| is_update(i)) {
            write(io, at(first), block(u))?;
            flush(io)?;
        }
    }
    for i in (0..blocks).filter(|&i| i != first) {
        if block(i) != &init[..] {
            write(io, at(i), &init[..])?;
            flush(io)?;
        }
    }
    write(io, at(first), &init[..])?;
    flush(io)
}

/// Sets the 128 bitmap bytes of each hot extent, as drbdmeta's `apply_al` does: whole
/// extents, clipped to `bm_bytes(la_size)` (so bits just past the device end in the last
/// 4 KiB page may be set too); writes only the pages that changed.
fn mark_extents(
    io: &mut impl BlockIo,
    od: &OnDisk,
    hot: &[u32],
) -> Result<(u64, Vec<String>), Error> {
    const EXTENT_BYTES: u64 = 128;
    let total = od.bm_bytes();
    let mut msgs = Vec::new();
    if hot.is_empty() {
        msgs.push("Nothing to do.".into());
        return Ok((0, msgs));
    }
    let mut bm = read_bitmap_bytes(io, od)?;
    let mut changed_pages = std::collections::BTreeSet::new();
    let mut additional = 0u64;
    for &e in hot {
        let pos = u64::from(e) * EXTENT_BYTES;
        if pos >= total {
            msgs.push(format!(
                "extent {e} beyond end of bitmap! ({pos} >= {total})"
            ));
            continue;
        }
        let end = (pos + EXTENT_BYTES).min(total);
        for b in &mut bm[pos as usize..end as usize] {
            additional += u64::from(b.count_zeros());
            if *b != 0xff {
                changed_pages.insert(pos / BLOCK_BYTES);
                *b = 0xff;
            }
        }
    }
    for p in changed_pages {
        let o = (p * BLOCK_BYTES) as usize;
        write(
            io,
            od.layout.bm_offset() + o as u64,
            &bm[o..o + BLOCK_BYTES as usize],
        )?;
    }
    msgs.push(format!(
        "Marked additional {} as out-of-sync based on AL.",
        ppsize(additional * 4)
    ));
    Ok((additional, msgs))
}

/// drbd-utils `ppsize`: a size in KiB, printed with a unit so it stays below 10000.
pub fn ppsize(kib: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    let mut size = kib;
    let mut base = 0;
    while size >= 10000 && base < UNITS.len() - 1 {
        size = (size >> 10) + u64::from(size & (1 << 9) != 0);
        base += 1;
    }
    format!("{} {}B", size as u32, UNITS[base])
}

/// Moves internal meta-data written for a backing device of `old_size` bytes to where it
/// belongs on the (grown) device (drbdmeta `v08_move_internal_md_after_resize`): AL, then
/// bitmap (copied from its end, as the areas may overlap), then the new superblock, then the
/// old superblock is wiped if it now lies in the data area. Unlike drbdmeta, which aligns the
/// old bitmap with the end of the new one, the bitmap keeps bit i at bit i.
pub fn move_internal(io: &mut impl BlockIo, old_size: u64) -> Result<OnDisk, Error> {
    let old = open_at_size(io, old_size)?;
    let new_size = device_len(io)?;
    let layout = Layout::new(MetaIndex::Internal, new_size, old.layout.al)?;
    if layout.md_offset <= old.layout.md_offset {
        return Err(Error::InvalidArgument {
            field: "backing device size",
            value: format!("{new_size} bytes (was {old_size})"),
            reason: "moving internal meta-data is only possible after the device grew",
        });
    }
    let al = read_al(io, &old.layout)?;
    write(io, layout.al_offset(), &al)?;
    let old_bm = old.layout.bm_offset();
    let len = old.layout.bm_area_bytes().min(layout.bm_area_bytes());
    const CHUNK: u64 = 1 << 20;
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let buf = read(io, old_bm + start, (end - start) as usize)?;
        write(io, layout.bm_offset() + start, &buf)?;
        end = start;
    }
    flush(io)?;
    let mut sb = old.superblock;
    sb.md_size_sect = layout.md_size_sect;
    sb.al_offset = layout.al_offset_sect;
    sb.bm_offset = layout.bm_offset_sect;
    let od = OnDisk {
        superblock: sb,
        layout,
        la_size_clipped_from: None,
    };
    write_superblock(io, &od)?;
    if old.layout.md_offset < layout.bm_offset() {
        write(io, old.layout.md_offset, &[0u8; SUPERBLOCK_BYTES])?;
        flush(io)?;
    }
    Ok(od)
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub on_disk: OnDisk,
    /// Bitmap bytes written (from the start of the bitmap area).
    pub bitmap_bytes_written: u64,
    /// The dump had more bitmap words than the agreed size needs.
    pub bitmap_truncated: bool,
    /// `la-size-sect` as dumped, when it had to be clipped to the device.
    pub la_size_clipped_from: Option<u64>,
}

/// `restore-md`: writes the dumped bitmap words and then a superblock built from the dump,
/// with offsets recomputed for this device (spec §7.3). `al_override` is
/// `--al-stripes/--al-stripe-size-kB`. The dump is fully parsed before this is called, so a
/// bad dump never reaches the disk.
pub fn restore(
    io: &mut impl BlockIo,
    index: MetaIndex,
    dump: &Dump,
    al_override: Option<AlGeometry>,
) -> Result<Restored, Error> {
    if dump.bm_bytes_per_bit != u64::from(crate::layout::BM_BYTES_PER_BIT) {
        return Err(Error::InvalidArgument {
            field: "bm-byte-per-bit",
            value: dump.bm_bytes_per_bit.to_string(),
            reason: "DRBD 8.4 meta-data needs 4096",
        });
    }
    let al = match al_override {
        Some(al) => al,
        None => AlGeometry::new(dump.al_stripes, dump.al_stripe_size_4k).map_err(|_| {
            Error::InvalidArgument {
                field: "al-stripes / al-stripe-size-4k",
                value: format!("{} / {}", dump.al_stripes, dump.al_stripe_size_4k),
                reason: "activity log must be 32 KiB .. 32 MiB",
            }
        })?,
    };
    let size = device_len(io)?;
    let layout = Layout::new(index, size, al)?;
    let mut la = dump.la_size_sect;
    let mut la_size_clipped_from = None;
    if la > layout.max_usable_sect {
        la_size_clipped_from = Some(la);
        la = layout.max_usable_sect;
    }
    let limit = bm_bytes(la);
    let words = dump.words();
    let mut truncated = false;
    let mut written = 0;
    if words > 0 {
        if limit == 0 {
            return Err(Error::InvalidArgument {
                field: "bm",
                value: format!("{words} words"),
                reason: "bitmap words given for la-size-sect 0 (drbdmeta: offset > limit)",
            });
        }
        let mut len = (words * 8).next_multiple_of(SECTOR_BYTES);
        if len > limit {
            len = limit;
            truncated = true;
        }
        let bytes = dump.bitmap_bytes(len);
        write(io, layout.bm_offset(), &bytes)?;
        written = len;
        flush(io)?;
    }
    let mut sb = Superblock::new_created(&layout, dump.la_peer_max_bio_size);
    sb.la_size_sect = la;
    sb.uuids = dump.uuids;
    sb.flags = dump.flags;
    sb.device_uuid = dump.device_uuid;
    let on_disk = OnDisk {
        superblock: sb,
        layout,
        la_size_clipped_from: None,
    };
    write_superblock(io, &on_disk)?;
    Ok(Restored {
        on_disk,
        bitmap_bytes_written: written,
        bitmap_truncated: truncated,
        la_size_clipped_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;

    #[test]
    fn create_then_open_round_trips() {
        let mut dev = MemIo::new(1 << 30);
        let od = create(&mut dev, MetaIndex::Internal, &CreateOptions::default()).unwrap();
        assert_eq!(open(&dev, MetaIndex::Internal).unwrap(), od);
        assert!(od.superblock.is_clean());
    }

    /// Spec §2.2: created clean, unclean while attached, clean again after apply-al.
    #[test]
    fn clean_unclean_life_cycle() {
        let mut dev = MemIo::new(256 << 20);
        let mut od = create(&mut dev, MetaIndex::Internal, &CreateOptions::default()).unwrap();
        assert!(od.superblock.is_clean());
        od.superblock.la_size_sect = od.layout.max_usable_sect;
        od.superblock.mark_attached(true);
        write_superblock(&mut dev, &od).unwrap();
        let back = open(&dev, MetaIndex::Internal).unwrap();
        assert!(!back.superblock.is_clean());
        assert_eq!(back.superblock.magic, Magic::V84_UNCLEAN);
        let mut al = crate::ActivityLog::new(od.layout, 61).unwrap();
        let w = al.make_hot(&[2]).unwrap().unwrap();
        write_all(&mut dev, &[w.write]).unwrap();
        let r = apply_al(&mut dev, MetaIndex::Internal).unwrap();
        assert_eq!(r.hot, [2]);
        assert!(r.applied && r.superblock_written);
        let after = open(&dev, MetaIndex::Internal).unwrap();
        assert!(after.superblock.is_clean());
        assert!(
            after.superblock.flags.contains(MdFlags::PRIMARY_IND),
            "apply-al keeps it"
        );
        let bm = read_bitmap(&dev, &after).unwrap();
        assert_eq!(bm.count(), 1024);
        assert!(bm.test(2 * 1024) && bm.test(3 * 1024 - 1));
        // A second apply-al finds a clean, initialised log: nothing to do, nothing written.
        let writes = dev.writes;
        let r = apply_al(&mut dev, MetaIndex::Internal).unwrap();
        assert!(!r.superblock_written && !r.reinitialized_al);
        assert_eq!(dev.writes, writes);
    }

    #[test]
    fn open_rejects_blank_device() {
        let dev = MemIo::new(1 << 30);
        let e = open(&dev, MetaIndex::Internal).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadMagic {
                    offset: 1_073_737_728,
                    found: 0
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn ppsize_matches_drbd_utils() {
        assert_eq!(ppsize(4), "4 KB");
        assert_eq!(ppsize(9999), "9999 KB");
        assert_eq!(ppsize(10000), "10 MB");
        assert_eq!(ppsize(4096 * 4), "16 MB");
        assert_eq!(ppsize(1 << 20), "1024 MB");
    }
}
