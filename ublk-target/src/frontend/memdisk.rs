//! An in-memory [`BlockTarget`]: the smallest target, used by the VM lab to check the ublk path.

use super::{BlockTarget, Errno, Op, Request};
use std::sync::{Mutex, MutexGuard};

/// Bytes per lock stripe: requests to different stripes run in parallel across queues.
const STRIPE_BYTES: usize = 1 << 20;

/// A RAM disk split into 1 MiB stripes, each behind its own lock.
#[derive(Debug)]
pub struct MemDisk {
    stripes: Vec<Mutex<Box<[u8]>>>,
    size_bytes: u64,
}

impl MemDisk {
    /// A zero-filled disk of `size_bytes` (rounded up to a whole stripe internally).
    pub fn new(size_bytes: u64) -> MemDisk {
        let n = usize::try_from(size_bytes.div_ceil(STRIPE_BYTES as u64)).unwrap_or(usize::MAX);
        let stripes = (0..n)
            .map(|_| Mutex::new(vec![0u8; STRIPE_BYTES].into_boxed_slice()))
            .collect();
        MemDisk {
            stripes,
            size_bytes,
        }
    }

    /// The size given to [`MemDisk::new`].
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn stripe(&self, index: usize) -> Result<MutexGuard<'_, Box<[u8]>>, Errno> {
        let m = self.stripes.get(index).ok_or(Errno::EINVAL)?;
        // A poisoned stripe means a panic mid-copy: its contents are unknown, so fail the I/O.
        m.lock().map_err(|_| Errno::EIO)
    }

    /// Visits `[offset, offset+len)` stripe by stripe: `f(stripe_bytes, buffer_range)`.
    fn for_each_piece(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&mut [u8], std::ops::Range<usize>),
    ) -> Result<(), Errno> {
        let end = offset.checked_add(len as u64).ok_or(Errno::EINVAL)?;
        if end > self.size_bytes {
            return Err(Errno::EINVAL);
        }
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let index = usize::try_from(pos / STRIPE_BYTES as u64).map_err(|_| Errno::EINVAL)?;
            let within = (pos % STRIPE_BYTES as u64) as usize;
            let n = (STRIPE_BYTES - within).min(len - done);
            let mut stripe = self.stripe(index)?;
            f(&mut stripe[within..within + n], done..done + n);
            done += n;
        }
        Ok(())
    }
}

impl BlockTarget for MemDisk {
    fn handle(&self, request: &Request, buf: &mut [u8]) -> Result<u32, Errno> {
        let len = request.len_bytes as usize;
        let off = request.offset_bytes;
        match request.op {
            Op::Read => self.for_each_piece(off, len, |disk, r| buf[r].copy_from_slice(disk))?,
            // Memory is as durable as this target gets, so FUA and FLUSH need no extra work.
            Op::Write { .. } => {
                self.for_each_piece(off, len, |disk, r| disk.copy_from_slice(&buf[r]))?
            }
            Op::Flush => {}
            Op::Discard | Op::WriteZeroes => {
                self.for_each_piece(off, len, |disk, _| disk.fill(0))?
            }
        }
        Ok(request.len_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Op, offset_bytes: u64, len_bytes: u32) -> Request {
        Request {
            op,
            offset_bytes,
            len_bytes,
        }
    }

    #[test]
    fn write_across_stripes_reads_back() {
        let disk = MemDisk::new(4 << 20);
        let mut data: Vec<u8> = (0..(STRIPE_BYTES + 8192))
            .map(|i| (i % 251) as u8)
            .collect();
        let off = STRIPE_BYTES as u64 - 4096;
        let w = req(Op::Write { fua: false }, off, data.len() as u32);
        assert_eq!(disk.handle(&w, &mut data).unwrap(), data.len() as u32);
        let mut back = vec![0u8; data.len()];
        disk.handle(&req(Op::Read, off, data.len() as u32), &mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn write_zeroes_clears() {
        let disk = MemDisk::new(1 << 20);
        let mut ones = vec![1u8; 8192];
        disk.handle(&req(Op::Write { fua: true }, 0, 8192), &mut ones)
            .unwrap();
        disk.handle(&req(Op::WriteZeroes, 4096, 4096), &mut [])
            .unwrap();
        let mut back = vec![9u8; 8192];
        disk.handle(&req(Op::Read, 0, 8192), &mut back).unwrap();
        assert!(back[..4096].iter().all(|&b| b == 1));
        assert!(back[4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn rejects_out_of_range() {
        let disk = MemDisk::new(1 << 20);
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            disk.handle(&req(Op::Read, 1 << 20, 4096), &mut buf),
            Err(Errno::EINVAL)
        );
    }
}
