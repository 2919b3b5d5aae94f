//! Test 4: activity logs written by udrbd (our `ActivityLog`) and kernel-style logs (built
//! transaction by transaction as drbd_actlog.c writes them: striped ring, 919-slot context
//! windows, tr_number wrapping past 2^32, a torn newest block) are replayed by
//! `drbdmeta apply-al` and `udrbdmeta apply-al` to the same bytes, and to the bits the hot
//! set says. Also test 5's corrupt-checksum case.

mod udrbdmeta_support;

use std::path::{Path, PathBuf};

use udrbd_metadata::activity_log::{
    AlTransaction, AL_CONTEXT_PER_TRANSACTION, AL_TR_UPDATE, LC_FREE,
};
use udrbd_metadata::io::{BlockIo, FileIo};
use udrbd_metadata::md::{self, CreateOptions, OnDisk};
use udrbd_metadata::{ActivityLog, AlGeometry, Magic, MdFlags, MetaIndex};
use udrbdmeta_support::*;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 256 * MIB;

struct Image {
    dir: tempfile::TempDir,
    path: PathBuf,
}

/// create-md with our crate, then an unclean Primary superblock with `la_size_sect`.
fn primary_image(
    al: AlGeometry,
    la_size: Option<u64>,
    flags: MdFlags,
    magic: Magic,
) -> (Image, OnDisk) {
    let dir = tempfile::tempdir().unwrap();
    let path = sparse(dir.path(), "img", SIZE);
    let mut io = FileIo::open(&path, true).unwrap();
    let mut od = md::create(
        &mut io,
        MetaIndex::Internal,
        &CreateOptions {
            al,
            peer_max_bio_size: 0,
        },
    )
    .unwrap();
    od.superblock.la_size_sect = la_size.unwrap_or(od.layout.max_usable_sect);
    od.superblock.flags = flags;
    od.superblock.magic = magic;
    od.superblock.al_nr_extents = 1237;
    md::write_superblock(&mut io, &od).unwrap();
    (Image { dir, path }, od)
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut io = FileIo::open(path, true).unwrap();
    io.write_at(data, offset).unwrap();
    io.flush().unwrap();
}

/// Sets a scattering of bitmap bits, as a crashed Primary would have left on disk.
fn preexisting_bits(path: &Path, od: &OnDisk, rng: &mut Rng) {
    let bm = md::read_bitmap_bytes(&FileIo::open(path, false).unwrap(), od).unwrap();
    let mut bm = bm;
    for _ in 0..40 {
        let i = rng.below(bm.len() as u64) as usize;
        bm[i] |= 1 << rng.below(8);
    }
    write_at(path, od.layout.bm_offset(), &bm);
}

/// Runs both tools' apply-al on copies of `img`; asserts same exit code and identical
/// bytes; returns (exit code, udrbdmeta's copy).
fn replay_both(img: &Image, minor: &str) -> (i32, PathBuf, PathBuf) {
    let dm = drbdmeta().expect("checked by caller");
    let a = img.dir.path().join("by-drbdmeta");
    let b = img.dir.path().join("by-udrbdmeta");
    std::fs::copy(&img.path, &a).unwrap();
    std::fs::copy(&img.path, &b).unwrap();
    let args = |p: &Path| {
        vec![
            "--force".to_string(),
            minor.to_string(),
            "v08".into(),
            p.to_str().unwrap().to_string(),
            "internal".into(),
            "apply-al".into(),
        ]
    };
    let (va, vb) = (args(&a), args(&b));
    let d = run(&dm, &va.iter().map(String::as_str).collect::<Vec<_>>());
    let u = run(
        &udrbdmeta(),
        &vb.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(
        u.code, d.code,
        "exit codes: drbdmeta {d:?}\nudrbdmeta {u:?}"
    );
    assert_same_range(&a, &b, (0, SIZE), "device after apply-al");
    (d.code, a, b)
}

/// What the bitmap must look like: the bits before, plus 1024 bits (128 bytes) for each hot
/// extent inside the `bm_bytes(la_size)` area.
fn expected_bitmap(before: &[u8], hot: &[u32]) -> Vec<u8> {
    let mut bm = before.to_vec();
    for &e in hot {
        let pos = e as usize * 128;
        if pos < bm.len() {
            let end = (pos + 128).min(bm.len());
            bm[pos..end].fill(0xff);
        }
    }
    bm
}

fn assert_clean_after(path: &Path, od: &OnDisk, bitmap: &[u8]) {
    let io = FileIo::open(path, false).unwrap();
    let after = md::open(&io, MetaIndex::Internal).unwrap();
    assert!(
        after.superblock.is_clean(),
        "MAGIC_08 + AL_CLEAN after apply-al"
    );
    assert_eq!(
        after.superblock.flags.0 & !MdFlags::AL_CLEAN.0,
        od.superblock.flags.0 & !MdFlags::AL_CLEAN.0,
        "other flags kept (PRIMARY_IND too)"
    );
    assert_eq!(
        md::read_bitmap_bytes(&io, &after).unwrap(),
        bitmap,
        "bitmap bits"
    );
    let al = md::read_al(&io, &after.layout).unwrap();
    assert_eq!(
        al,
        udrbd_metadata::activity_log::initialized_area(after.layout.al),
        "AL re-initialised"
    );
}

/// Our ActivityLog, driven like the engine: many writes, evictions, the ring wrapping
/// several times.
#[test]
fn udrbd_written_al_replays_identically_in_both_tools() {
    if drbdmeta().is_none() {
        return;
    }
    clear_minor(220);
    let flags = MdFlags(MdFlags::PRIMARY_IND.0 | MdFlags::CONSISTENT.0 | MdFlags::WAS_UP_TO_DATE.0);
    let (img, od) = primary_image(AlGeometry::default(), None, flags, Magic::V84_UNCLEAN);
    let mut rng = Rng(0xa1);
    preexisting_bits(&img.path, &od, &mut rng);
    let before = md::read_bitmap_bytes(&FileIo::open(&img.path, false).unwrap(), &od).unwrap();
    let mut al = ActivityLog::new(od.layout, 61).unwrap();
    let extents = (od.superblock.la_size_sect / 8192) as u32 + 1;
    let mut writes = 0;
    for _ in 0..500 {
        let e = rng.below(u64::from(extents)) as u32;
        if let Some(w) = al.make_hot(&[e]).unwrap() {
            write_at(&img.path, w.write.offset, &w.write.data);
            al.transaction_written(w.tr_number);
            writes += 1;
        }
        al.release(e);
    }
    assert!(
        writes > 30,
        "the ring wrapped several times ({writes} transactions)"
    );
    let (code, _, b) = replay_both(&img, "220");
    assert_eq!(code, 0);
    assert_clean_after(&b, &od, &expected_bitmap(&before, &al.hot_extents()));
}

/// A kernel-style log: 2 stripes of 8 blocks, 1237 slots (two context windows), tr_number
/// wrapping past 2^32, updates carried explicitly and in context, a torn newest block.
#[test]
fn kernel_style_al_replays_identically_in_both_tools() {
    if drbdmeta().is_none() {
        return;
    }
    clear_minor(221);
    let geo = AlGeometry::new(2, 8).unwrap();
    let flags = MdFlags(MdFlags::PRIMARY_IND.0 | MdFlags::CRASHED_PRIMARY.0);
    let (img, od) = primary_image(geo, None, flags, Magic::V84_UNCLEAN);
    let mut rng = Rng(0xa2);
    let before = md::read_bitmap_bytes(&FileIo::open(&img.path, false).unwrap(), &od).unwrap();
    let nr: usize = 1237;
    let extents = od.superblock.la_size_sect / 8192 + 1;
    let mut slots = vec![LC_FREE; nr];
    let mut state_before_last = Vec::new();
    let first_tr = u32::MAX - 5;
    let mut cycle = 0usize;
    let n_tr = 20u32;
    for k in 0..n_tr {
        let tr = first_tr.wrapping_add(k);
        let n_updates = 1 + rng.below(64) as usize;
        let mut updates = Vec::new();
        for _ in 0..n_updates {
            let slot = rng.below(nr as u64) as usize;
            let ext = if rng.below(10) == 0 {
                LC_FREE
            } else {
                rng.below(extents) as u32
            };
            // As the kernel does: the context carries the slot's old value, the update the new.
            updates.push((slot as u16, ext));
        }
        let mut context = Box::new([LC_FREE; AL_CONTEXT_PER_TRANSACTION]);
        for (i, c) in context.iter_mut().enumerate() {
            if cycle + i < nr {
                *c = slots[cycle + i];
            }
        }
        for &(s, e) in &updates {
            slots[s as usize] = e;
        }
        let t = AlTransaction {
            tr_number: tr,
            transaction_type: AL_TR_UPDATE,
            context_size: nr as u16,
            context_start_slot_nr: cycle as u16,
            updates,
            extra_updates: vec![],
            context,
        };
        cycle += AL_CONTEXT_PER_TRANSACTION;
        if cycle >= nr {
            cycle = 0;
        }
        let mut block = t.encode().to_vec();
        if k == n_tr - 1 {
            // Torn: the crash hit the newest transaction's write.
            block[2000] ^= 0x40;
        } else {
            state_before_last = slots.clone();
        }
        let off = od.layout.al_offset() + u64::from(geo.block_of_transaction(tr)) * 4096;
        write_at(&img.path, off, &block);
    }
    let mut hot: Vec<u32> = state_before_last
        .into_iter()
        .filter(|&e| e != LC_FREE)
        .collect();
    hot.sort_unstable();
    hot.dedup();
    let (code, _, b) = replay_both(&img, "221");
    assert_eq!(code, 0);
    assert_clean_after(&b, &od, &expected_bitmap(&before, &hot));
}

/// Hot extents past the agreed size are skipped ("beyond end of bitmap"), and the extent
/// straddling the end is marked up to the 4 KiB-rounded bitmap end, in both tools.
#[test]
fn extents_beyond_agreed_size_are_clipped_identically() {
    if drbdmeta().is_none() {
        return;
    }
    clear_minor(222);
    let la = 100 * MIB / 512 + 8 * 3; // not a multiple of 4 MiB
    let (img, od) = primary_image(
        AlGeometry::default(),
        Some(la),
        MdFlags::PRIMARY_IND,
        Magic::V84_UNCLEAN,
    );
    let mut al = ActivityLog::new(od.layout, 67).unwrap();
    let w = al.make_hot(&[0, 24, 25, 31, 32, 40, 63]).unwrap().unwrap();
    write_at(&img.path, w.write.offset, &w.write.data);
    let (code, _, b) = replay_both(&img, "222");
    assert_eq!(code, 0);
    let io = FileIo::open(&b, false).unwrap();
    let after = md::open(&io, MetaIndex::Internal).unwrap();
    let bm = md::read_bitmap_bytes(&io, &after).unwrap();
    assert_eq!(bm.len(), 4096, "bm_bytes(la) rounds to one page");
    assert_eq!(
        bm,
        expected_bitmap(&vec![0; 4096], &[0, 24, 25, 31, 32, 40, 63])
    );
}

/// Without MDF_PRIMARY_IND nothing is marked; the AL is still re-initialised and the
/// superblock made clean. A MAGIC_08 superblock without AL_CLEAN over a zeroed (pre-8.4)
/// log takes drbdmeta's conversion path.
#[test]
fn secondary_and_legacy_logs_are_cleaned_identically() {
    if drbdmeta().is_none() {
        return;
    }
    clear_minor(223);
    for (magic, zero_al) in [(Magic::V84_UNCLEAN, false), (Magic::V08, true)] {
        let (img, od) = primary_image(AlGeometry::default(), None, MdFlags::CONSISTENT, magic);
        let mut al = ActivityLog::new(od.layout, 61).unwrap();
        let w = al.make_hot(&[1, 2, 3]).unwrap().unwrap();
        write_at(&img.path, w.write.offset, &w.write.data);
        if zero_al {
            write_at(&img.path, od.layout.al_offset(), &vec![0; 32768]);
        }
        let (code, _, b) = replay_both(&img, "223");
        assert_eq!(code, 0);
        assert_clean_after(&b, &od, &vec![0; od.bm_bytes() as usize]);
    }
}

/// Test 5: a Primary's log whose every block fails its crc32c cannot say which extents may
/// differ: both tools refuse (exit 1) and leave the device as it was.
#[test]
fn rejects_corrupt_al_checksum_without_touching_the_device() {
    if drbdmeta().is_none() {
        return;
    }
    clear_minor(224);
    let (img, od) = primary_image(
        AlGeometry::default(),
        None,
        MdFlags::PRIMARY_IND,
        Magic::V84_UNCLEAN,
    );
    let mut area = udrbd_metadata::activity_log::initialized_area(od.layout.al);
    for b in area.chunks_mut(4096) {
        b[100] = 0x5a; // crc32c no longer matches
    }
    write_at(&img.path, od.layout.al_offset(), &area);
    let before = checksum(&img.path);
    let (code, a, b) = replay_both(&img, "224");
    assert_eq!(code, 1);
    assert_eq!(checksum(&a), before, "drbdmeta left it alone");
    assert_eq!(checksum(&b), before, "udrbdmeta left it alone");
    let u = run(
        &udrbdmeta(),
        &[
            "--force",
            "224",
            "v08",
            b.to_str().unwrap(),
            "internal",
            "apply-al",
        ],
    );
    assert!(
        u.stderr.contains(b.to_str().unwrap()) && u.stderr.contains("activity log"),
        "names the device and the field: {u:?}"
    );
}
