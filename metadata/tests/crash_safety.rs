//! Crash safety of the write ordering in the crate docs, by exhaustive fault injection.
//!
//! A simulated Primary runs a fixed workload through the documented API (superblock marked
//! unclean, AL transactions before data writes, bitmap pages of evicted extents before the
//! evicting transaction), over a device that crashes at write number k — for every k — either
//! stopping before the write or tearing it at a 512-byte boundary, and then loses all, none or
//! every other write that was not yet flushed. `apply_al` recovers the image (itself crashed
//! at each of its own writes once and re-run). The check: every block that might differ
//! between the nodes at the crash — writes in flight, writes done while disconnected — is
//! marked out of sync in the recovered bitmap.
//!
//! Each deliberate ordering bug in `Bug` must be caught by at least one crash point, so the
//! checker is known to be able to fail.

use std::collections::BTreeSet;
use std::io;

use udrbd_metadata::activity_log::AL_EXTENT_SECT;
use udrbd_metadata::io::{BlockIo, MemIo};
use udrbd_metadata::md::{self, CreateOptions};
use udrbd_metadata::{ActivityLog, Bitmap, Error, Magic, MdFlags, MetaIndex, MetaWrite};

const DEV_BYTES: u64 = 64 << 20;
const SECTOR: usize = 512;

/// How a crash treats the write in progress.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// The k-th write never reaches the device.
    Stop,
    /// Only its first n sectors do.
    Tear(usize),
}

/// Which unflushed writes survive the crash.
#[derive(Debug, Clone, Copy)]
enum Volatile {
    KeepAll,
    LoseAll,
    LoseEveryOther,
}

/// A device that crashes at write number `crash_at`. Until then it behaves like `MemIo`;
/// it remembers which writes were not yet flushed so the crash can drop them.
struct FaultIo {
    durable: MemIo,
    pending: Vec<(u64, Vec<u8>)>,
    writes: u64,
    crash_at: u64,
    crash: Crash,
    crashed: bool,
    torn: Option<(u64, Vec<u8>)>,
}

impl FaultIo {
    fn new(base: MemIo, crash_at: u64, crash: Crash) -> FaultIo {
        FaultIo {
            durable: base,
            pending: Vec::new(),
            writes: 0,
            crash_at,
            crash,
            crashed: false,
            torn: None,
        }
    }

    fn dead() -> io::Error {
        io::Error::other("device crashed")
    }

    /// The device contents after the crash (or now, if it did not crash).
    fn recovered(&self, v: Volatile) -> MemIo {
        let mut img = self.durable.clone();
        for (i, (off, data)) in self.pending.iter().enumerate() {
            let keep = match v {
                Volatile::KeepAll => true,
                Volatile::LoseAll => false,
                Volatile::LoseEveryOther => i % 2 == 0,
            };
            if keep {
                img.write_at(data, *off).unwrap();
            }
        }
        if let Some((off, data)) = &self.torn {
            img.write_at(data, *off).unwrap();
        }
        img
    }
}

impl BlockIo for FaultIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.crashed {
            return Err(Self::dead());
        }
        // Reads see every completed write, flushed or not.
        let mut img = self.durable.clone();
        for (off, data) in &self.pending {
            img.write_at(data, *off)?;
        }
        img.read_at(buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.crashed {
            return Err(Self::dead());
        }
        if self.writes == self.crash_at {
            self.crashed = true;
            if let Crash::Tear(n) = self.crash {
                let n = (n * SECTOR).min(buf.len());
                self.torn = Some((offset, buf[..n].to_vec()));
            }
            return Err(Self::dead());
        }
        self.writes += 1;
        self.pending.push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(Self::dead());
        }
        for (off, data) in self.pending.drain(..) {
            self.durable.write_at(&data, off)?;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.durable.len()
    }
}

/// Deliberate ordering bugs the checker must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    None,
    /// Issue the data write before the AL transaction that covers it.
    DataBeforeTransaction,
    /// Evict extents without first writing their bitmap pages.
    NoBitmapBeforeEviction,
    /// Do not record MDF_PRIMARY_IND before writing as Primary (apply-al then skips replay).
    NoPrimaryMark,
}

/// Small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Blocks (4 KiB bitmap bits) that may differ between the nodes at the crash.
#[derive(Default)]
struct MayDiffer {
    in_flight: Vec<(u64, u64, Vec<u32>)>,
    bits: BTreeSet<u64>,
}

/// The Primary's workload. Returns when the device fails; `MayDiffer` describes the moment.
fn primary(io: &mut FaultIo, bug: Bug, seed: u64, st: &mut MayDiffer) -> Result<(), Error> {
    // Set-up as `udrbd` attach does it: fresh meta-data, agreed size, unclean + Primary.
    let mut od = md::create(io, MetaIndex::Internal, &CreateOptions::default())?;
    od.superblock.la_size_sect = od.layout.max_usable_sect;
    od.superblock.magic = Magic::V84_UNCLEAN;
    od.superblock.flags.remove(MdFlags::AL_CLEAN);
    if bug != Bug::NoPrimaryMark {
        od.superblock.flags.insert(MdFlags::PRIMARY_IND);
    }
    md::write_superblock(io, &od)?;
    let layout = od.layout;
    // Few slots, so extents are evicted often.
    let mut al = ActivityLog::new(layout, 5).unwrap();
    let mut bm = Bitmap::for_sectors(od.superblock.la_size_sect);
    let data_sect = od.superblock.la_size_sect;
    let mut rng = Rng(seed);
    let mut connected = true;
    run_ops(
        io,
        bug,
        &mut al,
        &mut bm,
        &layout,
        data_sect,
        &mut rng,
        &mut connected,
        st,
    )
}

#[allow(clippy::too_many_arguments)] // A test driver: the simulated node's whole state.
fn run_ops(
    io: &mut FaultIo,
    bug: Bug,
    al: &mut ActivityLog,
    bm: &mut Bitmap,
    layout: &udrbd_metadata::Layout,
    data_sect: u64,
    rng: &mut Rng,
    connected: &mut bool,
    st: &mut MayDiffer,
) -> Result<(), Error> {
    // Writes land in 12 extents, so the 5 slots churn.
    let extents = 12u64.min(data_sect / AL_EXTENT_SECT);
    for _ in 0..60 {
        match rng.below(10) {
            0 => {
                *connected = !*connected;
                if !*connected {
                    // Connection lost: writes the peer has not acked are out of sync.
                    for &(s, n, _) in &st.in_flight {
                        bm.set_sectors(s, n);
                        st.bits.extend(s / 8..(s + n).div_ceil(8));
                    }
                }
            }
            1 | 2 => {
                // Complete the oldest write: local disk done (flush) and peer acked.
                if !st.in_flight.is_empty() {
                    io.flush().map_err(ioerr("flush"))?;
                    let (s, n, ext) = st.in_flight.remove(0);
                    for e in ext {
                        al.release(e);
                    }
                    let _ = (s, n);
                }
            }
            3 => {
                // Lazy bitmap writeout.
                md::write_all(io, &bm.dirty_writes(layout))?;
            }
            _ => {
                let e = rng.below(extents);
                let sector = e * AL_EXTENT_SECT + rng.below(AL_EXTENT_SECT - 64) / 8 * 8;
                let count = 8 * (1 + rng.below(8));
                let mut ext = vec![(sector / AL_EXTENT_SECT) as u32];
                let last = ((sector + count - 1) / AL_EXTENT_SECT) as u32;
                if last != ext[0] {
                    ext.push(last);
                }
                issue_write(io, bug, al, bm, layout, st, *connected, sector, count, ext)?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // A test driver: the simulated node's whole state.
fn issue_write(
    io: &mut FaultIo,
    bug: Bug,
    al: &mut ActivityLog,
    bm: &mut Bitmap,
    layout: &udrbd_metadata::Layout,
    st: &mut MayDiffer,
    connected: bool,
    sector: u64,
    count: u64,
    ext: Vec<u32>,
) -> Result<(), Error> {
    let data = vec![0xd5u8; (count * 512) as usize];
    let tr = loop {
        match al.make_hot(&ext) {
            Ok(t) => break t,
            Err(Error::AlBusy { .. }) => {
                // Wait for in-flight writes to finish, freeing slots.
                io.flush().map_err(ioerr("flush"))?;
                for (_, _, e) in st.in_flight.drain(..) {
                    for x in e {
                        al.release(x);
                    }
                }
            }
            Err(e) => panic!("unexpected {e}"),
        }
    };
    let data_write = |io: &mut FaultIo, st: &mut MayDiffer| -> Result<(), Error> {
        // From the moment it is issued, the block may differ from the peer.
        st.in_flight.push((sector, count, ext.clone()));
        io.write_at(&data, sector * 512)
            .map_err(ioerr("data write"))
    };
    if let Some(tr) = tr {
        if bug == Bug::DataBeforeTransaction {
            data_write(io, st)?;
        }
        if bug != Bug::NoBitmapBeforeEviction {
            let mut writes: Vec<MetaWrite> = Vec::new();
            for &e in &tr.evicted {
                writes.extend(bm.extent_writes(layout, e));
            }
            md::write_all(io, &writes)?;
        }
        md::write_all(io, std::slice::from_ref(&tr.write))?;
        al.transaction_written(tr.tr_number);
        if bug == Bug::DataBeforeTransaction {
            mark_if_disconnected(bm, st, connected, sector, count);
            return Ok(());
        }
    }
    mark_if_disconnected(bm, st, connected, sector, count);
    data_write(io, st)
}

fn mark_if_disconnected(
    bm: &mut Bitmap,
    st: &mut MayDiffer,
    connected: bool,
    sector: u64,
    count: u64,
) {
    if !connected {
        // The peer will not get this write: out of sync, in memory first.
        bm.set_sectors(sector, count);
        for b in sector / 8..(sector + count).div_ceil(8) {
            st.bits.insert(b);
        }
    }
}

fn ioerr(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        op,
        offset: 0,
        len: 0,
        source,
    }
}

/// Runs the workload crashing at write `k`; returns None if it finished without crashing.
fn crashed_run(k: u64, crash: Crash, bug: Bug, seed: u64) -> Option<(FaultIo, MayDiffer)> {
    let mut io = FaultIo::new(MemIo::new(DEV_BYTES), k, crash);
    let mut st = MayDiffer::default();
    let r = primary(&mut io, bug, seed, &mut st);
    match r {
        Ok(()) => None,
        Err(_) => {
            assert!(
                io.crashed,
                "only the injected crash may fail the workload: {r:?}"
            );
            Some((io, st))
        }
    }
}

/// After recovery, every block that may differ is marked. Returns a description of the first
/// violation, if any.
fn check(img: &mut MemIo, st: &MayDiffer, crash_recovery_at: Option<u64>) -> Result<(), String> {
    if let Some(k) = crash_recovery_at {
        // apply-al itself crashes at its k-th write; the next attach runs it again.
        let mut f = FaultIo::new(img.clone(), k, Crash::Tear(3));
        let _ = md::apply_al(&mut f, MetaIndex::Internal);
        *img = f.recovered(Volatile::LoseEveryOther);
    }
    match md::open(&*img, MetaIndex::Internal) {
        Ok(_) => {}
        // Crash before the superblock existed: nothing was written as Primary yet.
        Err(Error::BadMagic { .. }) if st.in_flight.is_empty() && st.bits.is_empty() => {
            return Ok(())
        }
        Err(e) => return Err(format!("open after crash: {e}")),
    };
    md::apply_al(img, MetaIndex::Internal).map_err(|e| format!("apply-al: {e}"))?;
    let od = md::open(&*img, MetaIndex::Internal).map_err(|e| e.to_string())?;
    assert!(od.superblock.is_clean());
    let bm = md::read_bitmap(&*img, &od).map_err(|e| e.to_string())?;
    for &(s, n, _) in &st.in_flight {
        for b in s / 8..(s + n).div_ceil(8) {
            if !bm.test(b) {
                return Err(format!(
                    "in-flight write at sector {s} (+{n}): block {b} marked in sync"
                ));
            }
        }
    }
    for &b in &st.bits {
        if !bm.test(b) {
            return Err(format!(
                "block {b} written while disconnected is marked in sync"
            ));
        }
    }
    Ok(())
}

fn total_writes(bug: Bug, seed: u64) -> u64 {
    let mut io = FaultIo::new(MemIo::new(DEV_BYTES), u64::MAX, Crash::Stop);
    primary(&mut io, bug, seed, &mut MayDiffer::default()).unwrap();
    io.writes
}

/// Number of (crash point × mode) cases that violate the property.
fn violations(bug: Bug, seed: u64, recovery_crashes: bool) -> (u64, u64, Option<String>) {
    let n = total_writes(bug, seed);
    let mut bad = 0;
    let mut cases = 0;
    let mut first = None;
    for k in 0..n {
        for crash in [Crash::Stop, Crash::Tear(1), Crash::Tear(7)] {
            let Some((io, st)) = crashed_run(k, crash, bug, seed) else {
                continue;
            };
            for v in [
                Volatile::KeepAll,
                Volatile::LoseAll,
                Volatile::LoseEveryOther,
            ] {
                // apply-al writes at most ~12 blocks here: crash it at each of them.
                let recov: Vec<Option<u64>> = if recovery_crashes && k % 5 == 0 {
                    std::iter::once(None).chain((0..14).map(Some)).collect()
                } else {
                    vec![None]
                };
                for rc in recov {
                    cases += 1;
                    let mut img = io.recovered(v);
                    if let Err(e) = check(&mut img, &st, rc) {
                        bad += 1;
                        first.get_or_insert(format!(
                            "crash at write {k} ({crash:?}, {v:?}, recovery crash {rc:?}): {e}"
                        ));
                    }
                }
            }
        }
    }
    (cases, bad, first)
}

#[test]
fn every_crash_point_leaves_differing_blocks_marked() {
    for seed in [1, 2, 3] {
        let n = total_writes(Bug::None, seed);
        assert!(n > 40, "workload too small: {n} writes");
        let (cases, bad, first) = violations(Bug::None, seed, true);
        assert!(cases > 300, "seed {seed}: only {cases} crash cases");
        assert_eq!(bad, 0, "seed {seed}: {first:?}");
    }
}

#[test]
fn checker_catches_data_before_transaction() {
    let (_, bad, _) = violations(Bug::DataBeforeTransaction, 1, false);
    assert!(
        bad > 0,
        "the checker must notice data written before its AL transaction"
    );
}

#[test]
fn checker_catches_eviction_without_bitmap_writeout() {
    let caught = [1, 2, 3, 4]
        .iter()
        .any(|&s| violations(Bug::NoBitmapBeforeEviction, s, false).1 > 0);
    assert!(
        caught,
        "the checker must notice bits lost when an extent is evicted"
    );
}

#[test]
fn checker_catches_missing_primary_mark() {
    let (_, bad, _) = violations(Bug::NoPrimaryMark, 1, false);
    assert!(
        bad > 0,
        "the checker must notice a Primary that does not say so on disk"
    );
}
