//! The engine-facing path: each ublk request leaves the queue thread as a [`PendingIo`] and
//! comes back through [`PendingIo::complete`], from any thread, whenever the engine is done
//! (for a protocol-C write: after the local disk and the peer acknowledged).
//!
//! Per queue thread (libublk's async API on a smol `LocalExecutor`):
//! - one task per tag: fetch a request, decode it, either fail it at once (the [`Gate`] is in
//!   fail-fast mode, as on a Secondary) or hand it to the [`RequestSink`], wait for its
//!   completion, commit the result and fetch the next;
//! - one reaper task: a read on an eventfd sits in the queue's io_uring; `complete` pushes
//!   `(tag, result)` on a channel and bumps the eventfd, the reaper drains the channel and
//!   wakes the tag tasks.
//!
//! So the queue thread never blocks on the engine, and the engine never touches io_uring.

use super::{BlockTarget, DeviceConfig, Errno, FrontendError, Request, Stopper};
use crossbeam_channel::{Receiver, Sender};
use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Receives requests; implemented by the daemon's bridge to the engine (or a test target).
pub trait RequestSink: Send + Sync + 'static {
    /// Takes one request. It must be completed exactly once, from any thread; dropping it
    /// completes it with EIO so a tag is never lost.
    fn submit(&self, io: PendingIo);
}

/// One request in flight, owning its tag's data buffer until completed.
pub struct PendingIo {
    request: Request,
    buf: *mut u8,
    done: Option<Completer>,
}

// SAFETY: `buf` points into the queue's per-tag buffer. The queue thread does not touch that
// buffer (and the kernel does not either) from submit until the completion is reaped, so
// this value is the only user of it for its whole life, on whichever thread it is.
unsafe impl Send for PendingIo {}

impl PendingIo {
    /// What the kernel asked for.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The data of a write (or the space for a read): exactly `len_bytes`.
    pub fn data(&self) -> &[u8] {
        // SAFETY: see the Send impl; `len_bytes` was checked against the buffer size.
        unsafe { std::slice::from_raw_parts(self.buf, self.request.len_bytes as usize) }
    }

    /// The buffer to fill for a read.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes this the only live borrow.
        unsafe { std::slice::from_raw_parts_mut(self.buf, self.request.len_bytes as usize) }
    }

    /// Completes the request: `Ok(bytes done)` or an errno for the kernel.
    pub fn complete(mut self, result: Result<u32, Errno>) {
        if let Some(done) = self.done.take() {
            done.send(result);
        }
    }
}

impl Drop for PendingIo {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.send(Err(Errno::EIO));
        }
    }
}

impl std::fmt::Debug for PendingIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingIo")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// The way back to one queue thread.
struct Completer {
    tag: u16,
    tx: Sender<(u16, i32)>,
    wake: Arc<OwnedFd>,
}

impl Completer {
    fn send(self, result: Result<u32, Errno>) {
        let res = match result {
            Ok(n) => i32::try_from(n).unwrap_or(-libc::EOVERFLOW),
            Err(Errno(e)) => -e,
        };
        // The queue thread is gone only when the device is; nothing is waiting then.
        if self.tx.send((self.tag, res)).is_ok() {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live array to an eventfd we own a reference to.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }
}

/// Serve or fail fast. A Secondary fails every request at once (DRBD refuses I/O there);
/// switching is immediate and does not wait for requests already in the sink.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicI32>);

impl Gate {
    /// Requests go to the sink.
    pub fn serve(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// New requests fail with `errno` without reaching the sink.
    pub fn fail_fast(&self, errno: Errno) {
        debug_assert!(errno.0 > 0);
        self.0.store(errno.0.max(1), Ordering::Release);
    }

    /// The errno new requests fail with, if failing fast.
    pub fn failing(&self) -> Option<Errno> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            e => Some(Errno(e)),
        }
    }
}

/// Adds the device and serves it through `sink` until stopped. `on_started` gets the device
/// id and a [`Stopper`] on the calling thread once `/dev/ublkb<id>` exists.
pub fn serve_dispatch<S, F>(
    config: &DeviceConfig,
    sink: Arc<S>,
    gate: Gate,
    on_started: F,
) -> Result<(), FrontendError>
where
    S: RequestSink,
    F: FnOnce(u32, Stopper) + Send + Sync + 'static,
{
    super::run_device(config, on_started, move |qid, dev| {
        dispatch_queue(qid, dev, sink.clone(), gate.clone());
    })
}

/// Completions reaped but not yet taken by their tag task, and who to wake.
struct Slots {
    results: Vec<Option<i32>>,
    wakers: Vec<Option<Waker>>,
    /// Requests handed to the sink and not yet taken back by their tag task.
    in_flight: usize,
}

struct WaitFor {
    slots: Rc<RefCell<Slots>>,
    tag: usize,
}

impl Future for WaitFor {
    type Output = i32;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        let mut slots = self.slots.borrow_mut();
        match slots.results[self.tag].take() {
            Some(res) => {
                slots.in_flight -= 1;
                Poll::Ready(res)
            }
            None => {
                slots.wakers[self.tag] = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn dispatch_queue<S: RequestSink>(qid: u16, dev: &libublk::io::UblkDev, sink: Arc<S>, gate: Gate) {
    // SAFETY: eventfd has no memory preconditions; the result is checked below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        eprintln!(
            "ublk queue {qid}: eventfd: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: `efd` is a fresh descriptor nobody else owns.
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(efd) });
    let (tx, rx) = crossbeam_channel::unbounded::<(u16, i32)>();
    let depth = usize::from(dev.dev_info.queue_depth);
    let slots = Rc::new(RefCell::new(Slots {
        results: vec![None; depth],
        wakers: vec![None; depth],
        in_flight: 0,
    }));
    // Buffers live here, not in the tasks, so that they can outlive a queue that stops while
    // the sink still holds requests (see the end of this function).
    let bufs = Rc::new(dev.alloc_queue_io_bufs());
    let queue = match libublk::io::UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            eprintln!("ublk queue {qid}: setup failed: {e}");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tag_tasks = Vec::with_capacity(depth);
    for tag in 0..depth as u16 {
        let ctx = TagCtx {
            q: queue.clone(),
            tag,
            sink: sink.clone(),
            gate: gate.clone(),
            slots: slots.clone(),
            tx: tx.clone(),
            wake: wake.clone(),
            bufs: bufs.clone(),
        };
        tag_tasks.push(exe.spawn(async move {
            match tag_task(ctx).await {
                Ok(()) | Err(libublk::UblkError::QueueIsDown) => {}
                Err(e) => eprintln!("ublk queue {qid} tag {tag}: {e}"),
            }
        }));
    }
    // The reaper is never joined: it waits on the eventfd until the queue's ring goes away.
    exe.spawn(reaper(rx, wake.clone(), slots.clone())).detach();
    let runner = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while runner.try_tick() {};
        let done = || tag_tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&queue, Some(20), run_ops, done).await {
            eprintln!("ublk queue {qid}: {e}");
        }
    }));
    drop(exe);
    if slots.borrow().in_flight > 0 {
        // A PendingIo still points into these buffers; leaking them keeps that pointer valid.
        std::mem::forget(bufs);
    }
}

struct TagCtx<'a, S> {
    q: Rc<libublk::io::UblkQueue<'a>>,
    tag: u16,
    sink: Arc<S>,
    gate: Gate,
    slots: Rc<RefCell<Slots>>,
    tx: Sender<(u16, i32)>,
    wake: Arc<OwnedFd>,
    bufs: Rc<Vec<libublk::helpers::IoBuf<u8>>>,
}

async fn tag_task<S: RequestSink>(ctx: TagCtx<'_, S>) -> Result<(), libublk::UblkError> {
    let q = &ctx.q;
    let buf = &ctx.bufs[usize::from(ctx.tag)];
    q.submit_io_prep_cmd(
        ctx.tag,
        libublk::BufDesc::Slice(buf.as_slice()),
        0,
        Some(buf),
    )
    .await?;
    let basic = q.dev.tgt.params.basic;
    loop {
        let iod = q.get_iod(ctx.tag);
        let decoded = Request::decode(
            iod.op_flags,
            iod.start_sector,
            iod.nr_sectors,
            basic.dev_sectors,
            basic.logical_bs_shift,
        );
        let res = match (ctx.gate.failing(), decoded) {
            (Some(Errno(e)), _) | (None, Err(Errno(e))) => -e,
            (None, Ok(req)) if req.len_bytes as usize > buf.len() => -libc::EINVAL,
            (None, Ok(request)) => {
                let done = Completer {
                    tag: ctx.tag,
                    tx: ctx.tx.clone(),
                    wake: ctx.wake.clone(),
                };
                ctx.slots.borrow_mut().in_flight += 1;
                // The kernel's data sits in this buffer between FETCH and COMMIT; the sink
                // writes read data into it through the pointer.
                let ptr = buf.as_slice().as_ptr().cast_mut();
                ctx.sink.submit(PendingIo {
                    request,
                    buf: ptr,
                    done: Some(done),
                });
                WaitFor {
                    slots: ctx.slots.clone(),
                    tag: usize::from(ctx.tag),
                }
                .await
            }
        };
        q.submit_io_commit_cmd(ctx.tag, libublk::BufDesc::Slice(buf.as_slice()), res)
            .await?;
    }
}

/// Waits on the eventfd through the queue's own io_uring and hands completions to tag tasks.
async fn reaper(rx: Receiver<(u16, i32)>, wake: Arc<OwnedFd>, slots: Rc<RefCell<Slots>>) {
    // Leaked on purpose: a read may still be queued on the ring when this task is dropped,
    // and the ring (thread-local in libublk) outlives the executor. 8 bytes per queue.
    let counter: &'static mut [u8; 8] = Box::leak(Box::new([0u8; 8]));
    loop {
        let sqe = io_uring::opcode::Read::new(
            io_uring::types::Fd(wake.as_raw_fd()),
            counter.as_mut_ptr(),
            counter.len() as u32,
        )
        .build();
        let res =
            libublk::uring_async::ublk_submit_sqe_async(sqe, libublk::UblkUringData::Target as u64)
                .await;
        if !matches!(res, Ok(8)) {
            eprintln!("ublk: completion eventfd read failed: {res:?}");
            return;
        }
        let mut s = slots.borrow_mut();
        for (tag, result) in rx.try_iter() {
            let tag = usize::from(tag);
            debug_assert!(s.results[tag].is_none(), "two completions for tag {tag}");
            s.results[tag] = Some(result);
            if let Some(w) = s.wakers[tag].take() {
                w.wake();
            }
        }
    }
}

/// A [`RequestSink`] that runs a [`BlockTarget`] on its own worker threads: requests cross
/// threads and complete asynchronously exactly as they will with the engine, so the lab can
/// test the dispatch path without one.
pub struct ThreadedSink {
    tx: Sender<PendingIo>,
}

impl ThreadedSink {
    /// Starts `workers` threads serving `target`; they end when the sink is dropped.
    pub fn new<T: BlockTarget>(target: Arc<T>, workers: usize) -> ThreadedSink {
        let (tx, rx) = crossbeam_channel::unbounded::<PendingIo>();
        for _ in 0..workers.max(1) {
            let rx = rx.clone();
            let target = target.clone();
            std::thread::spawn(move || {
                for mut io in rx {
                    let request = *io.request();
                    let result = target.handle(&request, io.data_mut());
                    io.complete(result);
                }
            });
        }
        ThreadedSink { tx }
    }
}

impl RequestSink for ThreadedSink {
    fn submit(&self, io: PendingIo) {
        // If the workers are gone the request comes back here and its drop fails it with EIO.
        let _ = self.tx.send(io);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{MemDisk, Op};

    fn pending(
        buf: &mut [u8],
        op: Op,
        tag: u16,
    ) -> (PendingIo, Receiver<(u16, i32)>, Arc<OwnedFd>) {
        // SAFETY: plain syscall, result checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (tx, rx) = crossbeam_channel::unbounded();
        let request = Request {
            op,
            offset_bytes: 4096,
            len_bytes: buf.len() as u32,
        };
        let done = Completer {
            tag,
            tx,
            wake: wake.clone(),
        };
        (
            PendingIo {
                request,
                buf: buf.as_mut_ptr(),
                done: Some(done),
            },
            rx,
            wake,
        )
    }

    fn eventfd_count(fd: &OwnedFd) -> u64 {
        let mut v = [0u8; 8];
        // SAFETY: reads 8 bytes into a live array.
        let n = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 8);
        u64::from_ne_bytes(v)
    }

    #[test]
    fn completion_reaches_the_queue_and_bumps_the_eventfd() {
        let mut buf = vec![0u8; 4096];
        let (io, rx, wake) = pending(&mut buf, Op::Read, 7);
        io.complete(Ok(4096));
        assert_eq!(rx.try_recv().unwrap(), (7, 4096));
        assert_eq!(eventfd_count(&wake), 1);
    }

    #[test]
    fn dropped_request_fails_with_eio() {
        let mut buf = vec![0u8; 512];
        let (io, rx, _wake) = pending(&mut buf, Op::Flush, 3);
        drop(io);
        assert_eq!(rx.try_recv().unwrap(), (3, -libc::EIO));
        assert!(rx.try_recv().is_err(), "exactly one completion");
    }

    #[test]
    fn threaded_sink_serves_on_another_thread() {
        let disk = Arc::new(MemDisk::new(1 << 20));
        let sink = ThreadedSink::new(disk.clone(), 2);
        let mut data = vec![0xabu8; 8192];
        let (io, rx, _w) = pending(&mut data, Op::Write { fua: true }, 1);
        sink.submit(io);
        let got = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(got, (1, 8192));
        let mut back = vec![0u8; 8192];
        let (io, rx, _w) = pending(&mut back, Op::Read, 2);
        sink.submit(io);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
            (2, 8192)
        );
        assert!(back.iter().all(|&b| b == 0xab));
    }

    #[test]
    fn gate_switches_between_serving_and_failing() {
        let gate = Gate::default();
        assert_eq!(gate.failing(), None);
        gate.fail_fast(Errno::EIO);
        assert_eq!(gate.clone().failing(), Some(Errno::EIO));
        gate.serve();
        assert_eq!(gate.failing(), None);
    }
}
