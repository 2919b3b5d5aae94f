//! DRBD 8.4 on-disk meta-data, format "v08": placement, the 4 KiB superblock, the activity
//! log, the bitmap and the `dump-md` text, byte-compatible with the kernel and `drbdmeta`.
//!
//! What this crate never does: it opens no sockets, starts no threads, reads no clock and
//! keeps no global state. Pure parts ([`layout`], [`superblock`], [`bitmap`],
//! [`activity_log`], [`dump`]) only compute bytes and offsets and return them as
//! [`MetaWrite`]s; the caller writes them. [`md`] strings those parts together over the
//! [`io::BlockIo`] trait for tools and for start-up, in the crash-safe order below.
//!
//! # Calling contract
//!
//! 1. Compute the layout: [`Layout::new`] for a new area, or read the superblock with
//!    [`md::open`] (which validates it against the device and returns the [`Layout`]).
//! 2. Before use, run [`md::apply_al`] if the superblock is not clean ([`Superblock::is_clean`]):
//!    it replays the activity log into the bitmap, re-initialises the ring and writes
//!    `MAGIC_08 + MDF_AL_CLEAN` last.
//! 3. A node that will write as Primary writes the superblock with `MAGIC_84_UNCLEAN` and
//!    `MDF_PRIMARY_IND` (and flushes) before its first AL transaction, so a crash leaves
//!    meta-data that `apply-al` will replay.
//! 4. For each application write, [`ActivityLog::make_hot_with`] with the write's extents
//!    (extent = sector / 8192, [`activity_log::extent_of_sector`]). If it returns an
//!    [`AlStep`]: first write (and flush) its `bitmap_writes` (the dirty bitmap pages of the
//!    evicted extents), then write and flush the transaction, then call
//!    [`ActivityLog::transaction_written`], and only then issue the data write.
//!    [`ActivityLog::release`] the extents when the data write completes. Out-of-sync blocks
//!    go into the in-memory [`Bitmap`]; [`Bitmap::dirty_writes`] flushes it lazily.
//!
//! # Write ordering (crash safety)
//!
//! A crash may stop the device at any write and may tear the write in flight at 512-byte
//! boundaries. After recovery ([`md::apply_al`]) no block that might differ between the two
//! nodes may be marked in sync. That holds because:
//!
//! 1. **An AL transaction is durable before any data write it covers.** A data write into an
//!    extent that no durable transaction names could be lost from one node only, and replay
//!    would not mark it.
//! 2. **Bitmap bits are durable before an AL slot is reused.** A transaction that evicts
//!    extent E makes replay forget E; any out-of-sync bits set in memory for E must be on
//!    disk first.
//! 3. **One transaction in flight.** The ring holds the last `blocks` transactions and each
//!    carries a 919-slot window of the whole hot set; al-extents is limited so that the
//!    `blocks − 1` newest transactions cover every slot, so a torn newest block (bad crc32c,
//!    skipped by replay) loses nothing that was durable.
//! 4. **The superblock magic flips last.** `apply_al` writes the replayed bitmap, flushes,
//!    re-initialises the AL, flushes, and only then writes `MAGIC_08 + MDF_AL_CLEAN`. A crash
//!    before that leaves `MAGIC_84_UNCLEAN` and the next `apply_al` replays again (replay is
//!    idempotent: it only sets bits). `create` writes AL and bitmap before the superblock.
//!
//! The tests in `tests/crash_safety.rs` stop or tear the writes at every single write
//! boundary of a workload and check these properties after recovery.
//!
//! ```
//! use udrbd_metadata::{md, io::MemIo, Layout, MetaIndex, AlGeometry, ActivityLog};
//! let mut dev = MemIo::new(64 << 20);
//! let on_disk = md::create(&mut dev, MetaIndex::Internal, &md::CreateOptions::default()).unwrap();
//! assert_eq!(on_disk.layout.max_usable_sect, 130_992);
//! let mut al = ActivityLog::new(on_disk.layout, 61).unwrap();
//! let tr = al.make_hot(&[0]).unwrap().expect("cold extent needs a transaction");
//! md::write_all(&mut dev, &[tr.write.clone()]).unwrap();
//! al.transaction_written(tr.tr_number);
//! ```

pub mod activity_log;
pub mod bitmap;
pub mod dump;
pub mod error;
pub mod io;
pub mod layout;
pub mod md;
pub mod superblock;
pub mod uuid;

pub use activity_log::{ActivityLog, AlStep, AlTransaction, AlWrite};
pub use bitmap::Bitmap;
pub use error::Error;
pub use layout::{AlGeometry, Layout, MetaIndex};
pub use superblock::{Magic, MdFlags, Superblock};
pub use uuid::Uuids;

/// One write the caller must perform: `data` at absolute byte `offset` of the meta device.
#[derive(Clone, PartialEq, Eq)]
pub struct MetaWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for MetaWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MetaWrite {{ offset: {:#x}, len: {} }}",
            self.offset,
            self.data.len()
        )
    }
}
