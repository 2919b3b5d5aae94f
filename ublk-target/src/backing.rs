//! The backing device: positioned reads and writes, executed on one I/O thread per device.
//!
//! The fast path is io_uring with `O_DIRECT` (data goes through 4 KiB-aligned bounce buffers).
//! Where that is not available — io_uring disabled, or a file system without `O_DIRECT` such as
//! tmpfs — the same thread falls back to plain `pread`/`pwrite` on a buffered descriptor. The
//! backend never reorders anything the caller depends on: the engine only issues what may run
//! concurrently, and each request completes exactly once through the sink.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tracing::{info, warn};

/// One positioned operation on the device. Offsets and lengths are in bytes.
#[derive(Debug, Clone)]
pub enum IoOp {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Bytes,
    },
    /// Several writes made durable together (meta-data updates), then an fdatasync if `flush`.
    WriteBatch {
        writes: Vec<(u64, Bytes)>,
        flush: bool,
    },
    Flush,
}

#[derive(Debug)]
pub struct IoCompletion {
    pub token: u64,
    /// A read returns its bytes; everything else `None`.
    pub result: io::Result<Option<Bytes>>,
}

/// How the device ended up being driven; reported in the daemon's log and `status --verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IoMode {
    UringDirect,
    UringBuffered,
    Sync,
}

pub type Sink = Box<dyn Fn(IoCompletion) + Send>;

/// Handle to a device's I/O thread. Dropping it drains and stops the thread.
pub struct Backing {
    path: PathBuf,
    size_bytes: u64,
    mode: IoMode,
    tx: Option<Sender<(u64, IoOp)>>,
    thread: Option<JoinHandle<()>>,
}

/// Alignment of `O_DIRECT` buffers, offsets and lengths we use (the common logical block size
/// bound; a device needing more gets EINVAL and the request is redone buffered).
const DIRECT_ALIGN: usize = 0x1000;
/// io_uring queue depth per device.
const RING_ENTRIES: u32 = 0x80;

impl Backing {
    /// Opens `path` read-write. `prefer_uring` false forces the synchronous path (tests).
    pub fn open(path: &Path, prefer_uring: bool, sink: Sink) -> io::Result<Backing> {
        Self::open_with(path, prefer_uring, true, sink)
    }

    /// `try_direct` false behaves like a file system that refuses `O_DIRECT` (tests: tmpfs
    /// accepts it on current kernels, so the fallback cannot be provoked there).
    fn open_with(
        path: &Path,
        prefer_uring: bool,
        try_direct: bool,
        sink: Sink,
    ) -> io::Result<Backing> {
        let buffered = OpenOptions::new().read(true).write(true).open(path)?;
        let size_bytes = device_size(&buffered)?;
        let direct = if try_direct {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        } else {
            None
        };
        let ring = if prefer_uring {
            io_uring::IoUring::new(RING_ENTRIES).ok()
        } else {
            None
        };
        let mode = match (&ring, &direct) {
            (Some(_), Some(_)) => IoMode::UringDirect,
            (Some(_), None) => IoMode::UringBuffered,
            (None, _) => IoMode::Sync,
        };
        info!(path = %path.display(), ?mode, size_bytes, "backing device opened");
        let (tx, rx) = crossbeam_channel::unbounded();
        let files = Files {
            buffered,
            direct: if mode == IoMode::UringDirect {
                direct
            } else {
                None
            },
        };
        let thread = std::thread::Builder::new()
            .name(format!("io:{}", path.display()))
            .spawn(move || match ring {
                Some(ring) => run_uring(ring, files, rx, sink),
                None => run_sync(files, rx, sink),
            })?;
        Ok(Backing {
            path: path.to_owned(),
            size_bytes,
            mode,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn submit(&self, token: u64, op: IoOp) {
        if let Some(tx) = &self.tx {
            // The I/O thread lives as long as `self`; a send error means it panicked, and the
            // request is then lost with it — the engine's timeouts notice.
            let _ = tx.send((token, op));
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn mode(&self) -> IoMode {
        self.mode
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Size of a regular file or a block device in bytes.
pub fn device_size(f: &File) -> io::Result<u64> {
    let md = f.metadata()?;
    if md.is_file() {
        return Ok(md.len());
    }
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer we pass, which points at `size`.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

struct Files {
    buffered: File,
    direct: Option<File>,
}

impl Files {
    fn run_sync_op(&self, op: IoOp) -> io::Result<Option<Bytes>> {
        let f = &self.buffered;
        match op {
            IoOp::Read { offset, len } => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset)?;
                Ok(Some(Bytes::from(buf)))
            }
            IoOp::Write { offset, data } => {
                f.write_all_at(&data, offset)?;
                Ok(None)
            }
            IoOp::WriteBatch { writes, flush } => {
                for (offset, data) in writes {
                    f.write_all_at(&data, offset)?;
                }
                if flush {
                    f.sync_data()?;
                }
                Ok(None)
            }
            IoOp::Flush => {
                // Writes through the O_DIRECT descriptor share the inode; one fdatasync covers both.
                f.sync_data()?;
                Ok(None)
            }
        }
    }
}

fn run_sync(files: Files, rx: Receiver<(u64, IoOp)>, sink: Sink) {
    for (token, op) in rx {
        let result = files.run_sync_op(op);
        sink(IoCompletion { token, result });
    }
}

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is exclusively owned; it is only shared with the kernel while an SQE that
// references it is in flight, during which we do not touch it.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(DIRECT_ALIGN), DIRECT_ALIGN)
            .expect("invariant: len is a multiple of DIRECT_ALIGN and far below isize::MAX");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }

    fn as_mut_slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.layout.size());
        // SAFETY: ptr is valid for layout.size() bytes and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

struct InFlight {
    token: u64,
    op: IoOp,
    buf: Option<AlignedBuf>,
    len: usize,
    /// Submitted on the O_DIRECT descriptor.
    direct: bool,
}

fn aligned(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN) && len > 0
}

fn run_uring(mut ring: io_uring::IoUring, files: Files, rx: Receiver<(u64, IoOp)>, sink: Sink) {
    use io_uring::{opcode, types};
    let mut slots: Vec<Option<InFlight>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut inflight = 0usize;
    let mut open = true;
    let mut direct_ok = files.direct.is_some();
    loop {
        // Collect new requests: block only when nothing is in flight.
        let mut batch = Vec::new();
        if inflight == 0 {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(r) => batch.push(r),
                Err(_) => return,
            }
        }
        while inflight + batch.len() < RING_ENTRIES as usize {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        for (token, op) in batch {
            // O_DIRECT for aligned data; everything else through the buffered descriptor, still
            // on the ring. Buffers are 4 KiB-aligned either way.
            let pick = |offset: u64, len: usize| match &files.direct {
                Some(d) if direct_ok && aligned(offset, len) => (d.as_raw_fd(), true),
                _ => (files.buffered.as_raw_fd(), false),
            };
            let (fd, entry, buf, len, direct) = match &op {
                IoOp::Read { offset, len } if *len > 0 => {
                    let (fd, direct) = pick(*offset, *len);
                    let mut buf = AlignedBuf::new(*len);
                    let ptr = buf.as_mut_slice(*len).as_mut_ptr();
                    let e = opcode::Read::new(types::Fd(fd), ptr, *len as u32)
                        .offset(*offset)
                        .build();
                    (fd, e, Some(buf), *len, direct)
                }
                IoOp::Write { offset, data } if !data.is_empty() => {
                    let (fd, direct) = pick(*offset, data.len());
                    let mut buf = AlignedBuf::new(data.len());
                    buf.as_mut_slice(data.len()).copy_from_slice(data);
                    let ptr = buf.as_mut_slice(data.len()).as_ptr();
                    let e = opcode::Write::new(types::Fd(fd), ptr, data.len() as u32)
                        .offset(*offset)
                        .build();
                    (fd, e, Some(buf), data.len(), direct)
                }
                IoOp::Flush => {
                    let fd = files.buffered.as_raw_fd();
                    let e = opcode::Fsync::new(types::Fd(fd))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build();
                    (fd, e, None, 0, false)
                }
                // Meta-data batches (a few small writes and a flush, made durable together) and
                // empty transfers take the synchronous path on this thread.
                _ => {
                    let result = files.run_sync_op(op);
                    sink(IoCompletion { token, result });
                    continue;
                }
            };
            debug_assert!(fd >= 0);
            let slot = free.pop().unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            slots[slot] = Some(InFlight {
                token,
                op,
                buf,
                len,
                direct,
            });
            let entry = entry.user_data(slot as u64);
            // SAFETY: the buffer referenced by the SQE lives in `slots[slot]` until its CQE is
            // reaped below; the fd lives in `files` for the whole thread.
            if unsafe { ring.submission().push(&entry) }.is_err() {
                // Queue full cannot happen: we never hold more than RING_ENTRIES in flight.
                let f = slots[slot].take().expect("invariant: slot was just filled");
                free.push(slot);
                let result = files.run_sync_op(f.op);
                sink(IoCompletion {
                    token: f.token,
                    result,
                });
                continue;
            }
            inflight += 1;
        }
        if inflight == 0 {
            continue;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!("io_uring submit failed: {e}");
            }
            continue;
        }
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (slot, res) in cqes {
            let Some(f) = slots.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            free.push(slot as usize);
            inflight -= 1;
            let result = if res == -libc::EINVAL && f.direct {
                // The device wants a larger alignment than we use: stop using O_DIRECT.
                warn!("O_DIRECT refused (EINVAL); falling back to buffered I/O");
                direct_ok = false;
                files.run_sync_op(f.op)
            } else if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else if (res as usize) < f.len {
                // A short transfer: finish it the simple way.
                files.run_sync_op(f.op)
            } else {
                match (f.op, f.buf) {
                    (IoOp::Read { len, .. }, Some(mut buf)) => {
                        Ok(Some(Bytes::copy_from_slice(buf.as_mut_slice(len))))
                    }
                    _ => Ok(None),
                }
            };
            sink(IoCompletion {
                token: f.token,
                result,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn roundtrip(prefer_uring: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let b = Backing::open(
            &path,
            prefer_uring,
            Box::new(move |c| tx.lock().unwrap().send(c).unwrap()),
        )
        .unwrap();
        assert_eq!(b.size_bytes(), 1 << 20);
        let data = Bytes::from((0..8192u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        b.submit(
            1,
            IoOp::Write {
                offset: 4096,
                data: data.clone(),
            },
        );
        // An unaligned write goes through the buffered descriptor.
        b.submit(
            2,
            IoOp::Write {
                offset: 512 * 3,
                data: Bytes::from_static(b"hello, sector 3!"),
            },
        );
        b.submit(
            3,
            IoOp::WriteBatch {
                writes: vec![(0x80000, Bytes::from_static(b"meta"))],
                flush: true,
            },
        );
        for _ in 0..3 {
            assert!(rx.recv().unwrap().result.unwrap().is_none());
        }
        b.submit(4, IoOp::Flush);
        assert!(rx.recv().unwrap().result.is_ok());
        b.submit(
            5,
            IoOp::Read {
                offset: 4096,
                len: 8192,
            },
        );
        let c = rx.recv().unwrap();
        assert_eq!(c.token, 5);
        assert_eq!(c.result.unwrap().unwrap(), data);
        drop(b);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[4096..4096 + 8192], &data[..]);
        assert_eq!(&on_disk[1536..1552], b"hello, sector 3!");
        assert_eq!(&on_disk[0x80000..0x80004], b"meta");
    }

    #[test]
    fn uring_backend_writes_and_reads_back() {
        roundtrip(true);
    }

    #[test]
    fn sync_backend_writes_and_reads_back() {
        roundtrip(false);
    }

    /// Where O_DIRECT is refused, io_uring still drives the device, buffered.
    #[test]
    fn without_o_direct_uring_runs_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 1 << 16]).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let b = Backing::open_with(
            &path,
            true,
            false,
            Box::new(move |c| tx.lock().unwrap().send(c).unwrap()),
        )
        .unwrap();
        assert_eq!(b.mode(), IoMode::UringBuffered);
        b.submit(
            1,
            IoOp::Write {
                offset: 4096,
                data: Bytes::from(vec![7u8; 4096]),
            },
        );
        assert!(rx.recv().unwrap().result.is_ok());
        b.submit(
            2,
            IoOp::Read {
                offset: 4096,
                len: 4096,
            },
        );
        assert_eq!(
            rx.recv().unwrap().result.unwrap().unwrap(),
            Bytes::from(vec![7u8; 4096])
        );
        drop(b);
        assert_eq!(&std::fs::read(&path).unwrap()[4096..8192], &[7u8; 4096][..]);
    }

    #[test]
    fn read_past_end_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let b = Backing::open(
            &path,
            true,
            Box::new(move |c| tx.lock().unwrap().send(c).unwrap()),
        )
        .unwrap();
        b.submit(
            9,
            IoOp::Read {
                offset: 8192,
                len: 4096,
            },
        );
        assert!(rx.recv().unwrap().result.is_err());
    }
}
