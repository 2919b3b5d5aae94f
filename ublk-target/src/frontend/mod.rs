//! The ublk frontend: turns `/dev/ublkbN` requests into work for a target and completes them.
//!
//! This is the only module that talks to libublk, so a later move to libublk 0.5 stays local.
//! It never decides anything about replication: it decodes a ublk I/O descriptor into a
//! [`Request`] (bytes, not sectors; FLUSH and FUA kept), hands it on, and commits the result.
//!
//! Two ways to serve, same device set-up ([`DeviceConfig`]: queues, depth, size, 512-byte
//! logical and 4096-byte physical blocks, volatile write cache + FUA advertised):
//! - [`serve`] with a [`BlockTarget`]: handled inline on the queue thread ([`MemDisk`]).
//! - [`serve_dispatch`] with a [`RequestSink`]: each request leaves the queue thread as a
//!   [`PendingIo`] (owning its data buffer) and comes back with [`PendingIo::complete`] from
//!   any thread; this is where the daemon plugs the engine in (requests in, completions out).
//!   A [`Gate`] switches to fail-fast (a Secondary fails every request at once).
//!
//! Both add the device, run one thread per queue, call `on_started` with the device id once
//! `/dev/ublkb<id>` exists, and return, deleting the device, when it is stopped
//! ([`Stopper::stop`], a signal via [`Signals`], or `ublk del`).
//!
//! # When the server dies: no `UBLK_F_USER_RECOVERY`
//!
//! The device is added without any recovery flag (`ctrl_flags` 0), on purpose. If the process
//! exits or crashes, the driver then fails every request it had handed to us, and every later
//! one, with EIO and deletes the device. A request is only ever reported done by our own
//! COMMIT, which the engine path sends only after `Output::Complete` (protocol C: local disk
//! and peer), so a write is never reported done unless it is durable on both nodes; an
//! interrupted write is reported failed, which is the truth as far as the kernel knows.
//! The recovery modes were rejected because each keeps the device (and its mount) alive across
//! a restart in which the cluster may have promoted the peer: plain `USER_RECOVERY` parks new
//! I/O until a restarted server (which comes back Secondary, and may never be allowed to be
//! Primary again) takes the device over; `USER_RECOVERY_REISSUE` also re-sends the writes in
//! flight at the crash, which may then land on a node that is no longer the up-to-date one;
//! `USER_RECOVERY_FAIL_IO` (6.13+, not in the lab's 6.12) fails I/O like no recovery but keeps
//! the stale device around. DRBD itself has no "resume after the module died" either.

mod dispatch;
mod memdisk;
mod request;

pub use dispatch::{serve_dispatch, Gate, PendingIo, RequestSink, ThreadedSink};
pub use memdisk::MemDisk;
pub use request::{Op, Request};

use std::sync::Arc;

/// Limits from the kernel's ublk driver (include/uapi/linux/ublk_cmd.h, UBLK_MAX_*).
pub const MAX_QUEUES: u16 = 4096;
/// Largest queue depth the driver accepts (UBLK_MAX_QUEUE_DEPTH).
pub const MAX_QUEUE_DEPTH: u16 = 4096;
/// Largest I/O buffer per request the driver accepts (UBLK_MAX_IO_BUF_BYTES, 32 MiB).
pub const MAX_IO_BUF_BYTES: u32 = 32 << 20;

/// UBLK_ATTR_VOLATILE_CACHE: the device has a write cache, so the kernel sends FLUSH.
const ATTR_VOLATILE_CACHE: u32 = 1 << 2;
/// UBLK_ATTR_FUA: the device honours REQ_FUA on writes.
const ATTR_FUA: u32 = 1 << 3;

/// How the device looks to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Device id for `/dev/ublkb<id>`; `None` lets the driver pick one.
    pub dev_id: Option<u32>,
    /// Hardware queues; each gets its own thread.
    pub nr_queues: u16,
    /// Requests in flight per queue.
    pub queue_depth: u16,
    /// Largest request in bytes (also the per-tag buffer size).
    pub io_buf_bytes: u32,
    /// Device size in bytes; a multiple of the physical block size.
    pub size_bytes: u64,
    /// log2 of the logical block size (9: 512 bytes, what DRBD exposes).
    pub logical_block_shift: u8,
    /// log2 of the physical block size (12: 4096 bytes).
    pub physical_block_shift: u8,
    /// Advertise a volatile write cache (the kernel then sends FLUSH) and FUA.
    pub write_cache: bool,
    /// Target name shown by `ublk list`.
    pub name: String,
}

impl DeviceConfig {
    /// A config with the house defaults: 1 queue, depth 128, 512 KiB requests, 512/4096 blocks.
    pub fn new(name: &str, size_bytes: u64) -> Self {
        DeviceConfig {
            dev_id: None,
            nr_queues: 1,
            queue_depth: 128,
            io_buf_bytes: 512 << 10,
            size_bytes,
            logical_block_shift: 9,
            physical_block_shift: 12,
            write_cache: true,
            name: name.to_owned(),
        }
    }

    /// Checks the limits the kernel would otherwise reject with a bare errno.
    pub fn validate(&self) -> Result<(), FrontendError> {
        let bad = |what: &'static str, value: u64| Err(FrontendError::Config { what, value });
        if self.nr_queues == 0 || self.nr_queues > MAX_QUEUES {
            return bad("nr_queues (1..=4096)", self.nr_queues.into());
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return bad("queue_depth (1..=4096)", self.queue_depth.into());
        }
        if !(9..=12).contains(&self.logical_block_shift) {
            return bad(
                "logical_block_shift (9..=12)",
                self.logical_block_shift.into(),
            );
        }
        if self.physical_block_shift < self.logical_block_shift || self.physical_block_shift > 16 {
            return bad("physical_block_shift", self.physical_block_shift.into());
        }
        let pbs = 1u64 << self.physical_block_shift;
        if self.size_bytes == 0 || !self.size_bytes.is_multiple_of(pbs) {
            return bad(
                "size_bytes (non-zero multiple of the physical block)",
                self.size_bytes,
            );
        }
        if self.io_buf_bytes < 4096
            || self.io_buf_bytes > MAX_IO_BUF_BYTES
            || !u64::from(self.io_buf_bytes).is_multiple_of(pbs)
        {
            return bad("io_buf_bytes", self.io_buf_bytes.into());
        }
        Ok(())
    }
}

/// An errno-style failure a target returns for one request; the kernel sees `-errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// EIO: the request failed.
    pub const EIO: Errno = Errno(libc::EIO);
    /// EINVAL: the request is malformed (out of range, bad op).
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// EOPNOTSUPP: the target does not do this operation.
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
}

/// Something that serves block requests. Called from the queue threads, one request at a time
/// per thread; the buffer is the request's data (filled by `read`, consumed by `write`).
pub trait BlockTarget: Send + Sync + 'static {
    /// Handles one decoded request; returns the number of bytes done.
    fn handle(&self, request: &Request, buf: &mut [u8]) -> Result<u32, Errno>;
}

/// Why the frontend could not serve.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A config value is outside what the kernel accepts.
    #[error("ublk device config: {what} is {value}")]
    Config {
        /// The field and its allowed range.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// libublk or the driver refused (no ublk_drv, no permission, bad flags).
    #[error("ublk {op}: {source}")]
    Ublk {
        /// What we were doing.
        op: &'static str,
        /// libublk's error.
        source: libublk::UblkError,
    },
}

/// Stops a running device from any thread (ublk `STOP_DEV`).
///
/// With [`serve_dispatch`], requests already handed to the sink must still be completed (or
/// dropped, which fails them with EIO): the kernel waits for them before the queues end.
#[derive(Debug, Clone)]
pub struct Stopper {
    dev_id: u32,
}

impl Stopper {
    /// Asks the driver to stop the device; [`serve`] then returns and deletes it.
    pub fn stop(&self) -> Result<(), FrontendError> {
        // A fresh control handle: libublk's control ring is thread-local.
        let ctrl = libublk::ctrl::UblkCtrl::new_simple(self.dev_id as i32).map_err(|source| {
            FrontendError::Ublk {
                op: "open control",
                source,
            }
        })?;
        ctrl.kill_dev().map_err(|source| FrontendError::Ublk {
            op: "stop device",
            source,
        })?;
        Ok(())
    }
}

/// Adds the device and serves it with `target`, inline on the queue threads, until it is
/// stopped. `on_started` runs on the calling thread once the block device exists; returning
/// from it does not stop the device.
pub fn serve<T, F>(
    config: &DeviceConfig,
    target: Arc<T>,
    on_started: F,
) -> Result<(), FrontendError>
where
    T: BlockTarget,
    F: FnOnce(u32, Stopper) + Send + Sync + 'static,
{
    run_device(config, on_started, move |qid, dev| {
        serve_queue(qid, dev, &*target)
    })
}

/// Adds the device, runs `queue_fn` on one thread per queue, calls `on_started` once the
/// block device exists, and returns (after deleting the device) when the queues end.
fn run_device<F, Q>(config: &DeviceConfig, on_started: F, queue_fn: Q) -> Result<(), FrontendError>
where
    F: FnOnce(u32, Stopper) + Send + Sync + 'static,
    Q: Fn(u16, &libublk::io::UblkDev) + Send + Sync + Clone + 'static,
{
    config.validate()?;
    // No ctrl flags: plain per-tag buffers work on every kernel with ublk (6.0+), and no
    // USER_RECOVERY (see the module docs: a dead server's requests fail, never complete).
    let ctrl = libublk::ctrl::UblkCtrlBuilder::default()
        .name(&config.name)
        .id(config.dev_id.map_or(-1, |id| id as i32))
        .nr_queues(config.nr_queues)
        .depth(config.queue_depth)
        .io_buf_bytes(config.io_buf_bytes)
        .ctrl_flags(0)
        .dev_flags(libublk::UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(|source| FrontendError::Ublk {
            op: "add device",
            source,
        })?;

    let params = config.clone();
    let tgt_init = move |dev: &mut libublk::io::UblkDev| {
        dev.set_default_params(params.size_bytes);
        let basic = &mut dev.tgt.params.basic;
        basic.logical_bs_shift = params.logical_block_shift;
        basic.physical_bs_shift = params.physical_block_shift;
        basic.io_min_shift = params.physical_block_shift;
        basic.io_opt_shift = params.physical_block_shift;
        basic.attrs = if params.write_cache {
            ATTR_VOLATILE_CACHE | ATTR_FUA
        } else {
            0
        };
        Ok(())
    };
    let device_fn = move |ctrl: &libublk::ctrl::UblkCtrl| {
        let dev_id = ctrl.dev_info().dev_id;
        on_started(dev_id, Stopper { dev_id });
    };
    ctrl.run_target(tgt_init, queue_fn, device_fn)
        .map_err(|source| FrontendError::Ublk {
            op: "run device",
            source,
        })?;
    Ok(())
}

/// [`serve`], stopping the device on SIGTERM or SIGINT. `on_started` gets the device id.
pub fn serve_until_signal<T, F>(
    config: &DeviceConfig,
    target: Arc<T>,
    on_started: F,
) -> Result<(), FrontendError>
where
    T: BlockTarget,
    F: FnOnce(u32) + Send + Sync + 'static,
{
    let signals = Signals::block(&[libc::SIGTERM, libc::SIGINT]);
    serve(config, target, move |dev_id, stopper| {
        on_started(dev_id);
        signals.wait();
        // The device may already be gone (`ublk del`); then there is nothing to stop.
        let _ = stopper.stop();
    })
}

/// Signals taken synchronously with sigwait instead of killing the process mid-request.
#[derive(Clone, Copy)]
pub struct Signals(libc::sigset_t);

impl Signals {
    /// Blocks `signals` in this thread and in the threads it spawns later (the queue threads),
    /// so only [`Signals::wait`] receives them. Call before starting the device.
    pub fn block(signals: &[libc::c_int]) -> Signals {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t for every call.
        unsafe {
            libc::sigemptyset(&mut set);
            for &s in signals {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        Signals(set)
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> libc::c_int {
        let mut sig: libc::c_int = 0;
        // SAFETY: the set was initialised by `block` and `sig` is a valid out pointer.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }
}

/// One queue thread: fetch, decode, call the target, commit; until the queue is stopped.
fn serve_queue<T: BlockTarget + ?Sized>(qid: u16, dev: &libublk::io::UblkDev, target: &T) {
    let bufs = std::rc::Rc::new(dev.alloc_queue_io_bufs());
    let handler_bufs = bufs.clone();
    let lbs_shift = dev.tgt.params.basic.logical_bs_shift;
    let dev_sectors = dev.tgt.params.basic.dev_sectors;
    let handler = move |q: &libublk::io::UblkQueue, tag: u16, _ctx: &libublk::io::UblkIOCtx| {
        let iod = q.get_iod(tag);
        let buf = &handler_bufs[usize::from(tag)];
        // SAFETY: the buffer for `tag` is only touched by this queue thread, and the kernel
        // copies into or out of it only between FETCH/COMMIT, i.e. not while we run.
        let data = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut u8, buf.len()) };
        let decoded = Request::decode(
            iod.op_flags,
            iod.start_sector,
            iod.nr_sectors,
            dev_sectors,
            lbs_shift,
        );
        let res = match decoded {
            Ok(req) => {
                let len = req.len_bytes as usize;
                if len > data.len() {
                    -libc::EINVAL
                } else {
                    match target.handle(&req, &mut data[..len]) {
                        Ok(done) => done as i32,
                        Err(Errno(e)) => -e,
                    }
                }
            }
            Err(Errno(e)) => -e,
        };
        if let Err(e) = q.complete_io_cmd_unified(
            tag,
            libublk::BufDesc::Slice(buf.as_slice()),
            Ok(libublk::UblkIORes::Result(res)),
        ) {
            eprintln!("ublk queue {qid}: completing tag {tag}: {e}");
        }
    };
    let queue = match libublk::io::UblkQueue::new(qid, dev).and_then(|q| {
        q.submit_fetch_commands_unified(libublk::io::BufDescList::Slices(Some(&bufs)))
    }) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("ublk queue {qid}: setup failed: {e}");
            return;
        }
    };
    queue.wait_and_handle_io(handler);
}
