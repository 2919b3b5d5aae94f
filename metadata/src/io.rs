//! Positioned I/O: the one trait the meta-data code reads and writes through, with
//! implementations for files and block devices ([`FileIo`]) and memory ([`MemIo`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::layout::BLOCK_BYTES;

/// Positioned block I/O on the meta-data device.
pub trait BlockIo {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until [`BlockIo::flush`] returns.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync / cache flush).
    fn flush(&mut self) -> io::Result<()>;
    /// Size of the device in bytes.
    fn len(&self) -> io::Result<u64>;

    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl<T: BlockIo + ?Sized> BlockIo for &mut T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }
}

/// A file or block device, opened with `O_DIRECT` where the file system supports it.
///
/// With `O_DIRECT`, every transfer goes through a 4 KiB-aligned bounce buffer; requests that
/// are not 4 KiB aligned are widened (read-modify-write for writes). Where `O_DIRECT` is
/// refused at open (tmpfs, some FUSE file systems) or on the first transfer (`EINVAL`), the
/// file is reopened without it and `flush` does `fdatasync`.
#[derive(Debug)]
pub struct FileIo {
    file: File,
    /// A second descriptor without `O_DIRECT`, for transfers that cannot be aligned (the
    /// partial last block of a regular file whose size is not a multiple of 4 KiB).
    buffered: Option<File>,
    direct: bool,
    writable: bool,
    is_block_device: bool,
    path: std::path::PathBuf,
}

/// Alignment used for `O_DIRECT` transfers (covers 512-byte and 4 KiB logical sectors).
const DIRECT_ALIGN: u64 = BLOCK_BYTES;

impl FileIo {
    /// Opens `path` read-write (or read-only), trying `O_DIRECT` first.
    pub fn open(path: &Path, writable: bool) -> io::Result<FileIo> {
        Self::open_flags(path, writable, 0)
    }

    /// Like [`FileIo::open`] with extra `open(2)` flags, e.g. `O_EXCL` to fail with `EBUSY`
    /// on a block device that is in use.
    pub fn open_flags(path: &Path, writable: bool, flags: i32) -> io::Result<FileIo> {
        match Self::open_with(path, writable, true, flags) {
            Ok(f) => Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                Self::open_with(path, writable, false, flags)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens without `O_DIRECT` (page cache; `flush` is `fdatasync`).
    pub fn open_buffered(path: &Path, writable: bool) -> io::Result<FileIo> {
        Self::open_with(path, writable, false, 0)
    }

    fn open_with(path: &Path, writable: bool, direct: bool, flags: i32) -> io::Result<FileIo> {
        let mut o = OpenOptions::new();
        o.read(true).write(writable);
        o.custom_flags(flags | if direct { libc::O_DIRECT } else { 0 });
        let file = o.open(path)?;
        let is_block_device = file.metadata()?.file_type().is_block_device();
        let buffered = if direct {
            Some(OpenOptions::new().read(true).write(writable).open(path)?)
        } else {
            None
        };
        Ok(FileIo {
            file,
            buffered,
            direct,
            writable,
            is_block_device,
            path: path.to_path_buf(),
        })
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fall_back_to_buffered(&mut self) -> io::Result<()> {
        let f = Self::open_with(&self.path, self.writable, false, 0)?;
        self.file = f.file;
        self.buffered = None;
        self.direct = false;
        Ok(())
    }

    /// The descriptor to use for a transfer of `len` bytes at `offset`, and whether it is the
    /// `O_DIRECT` one.
    fn pick(&self, offset: u64, len: usize) -> io::Result<(&File, bool)> {
        if !self.direct {
            return Ok((&self.file, false));
        }
        let (start, span) = Self::aligned_span(offset, len);
        if !self.is_block_device && start + span as u64 > self.file.metadata()?.len() {
            let b = self
                .buffered
                .as_ref()
                .expect("direct FileIo keeps a buffered descriptor");
            return Ok((b, false));
        }
        Ok((&self.file, true))
    }

    fn aligned_span(offset: u64, len: usize) -> (u64, usize) {
        let start = offset & !(DIRECT_ALIGN - 1);
        let end = (offset + len as u64).next_multiple_of(DIRECT_ALIGN);
        (start, (end - start) as usize)
    }

    fn direct_read(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (start, len) = Self::aligned_span(offset, buf.len());
        let mut bounce = AlignedBuf::new(len);
        read_exact_at(file, bounce.as_mut(), start)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&bounce.as_ref()[skip..skip + buf.len()]);
        Ok(())
    }

    fn direct_write(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let (start, len) = Self::aligned_span(offset, buf.len());
        let mut bounce = AlignedBuf::new(len);
        let skip = (offset - start) as usize;
        if skip != 0 || len != buf.len() {
            // Read-modify-write the partial blocks at either end.
            read_exact_at(file, bounce.as_mut(), start)?;
        }
        bounce.as_mut()[skip..skip + buf.len()].copy_from_slice(buf);
        file.write_all_at(bounce.as_ref(), start)
    }
}

/// `read_exact_at`, but reading past the end of a regular file is an error naming it.
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

impl BlockIo for FileIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (file, direct) = self.pick(offset, buf.len())?;
        if direct {
            match Self::direct_read(file, buf, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The file system accepted O_DIRECT at open but not the transfer.
                    let b = self
                        .buffered
                        .as_ref()
                        .expect("direct FileIo keeps a buffered descriptor");
                    return read_exact_at(b, buf, offset);
                }
                r => return r,
            }
        }
        read_exact_at(file, buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let (file, direct) = self.pick(offset, buf.len())?;
        if !direct {
            return file.write_all_at(buf, offset);
        }
        match Self::direct_write(file, buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // The file system accepted O_DIRECT at open but not the transfer.
                self.fall_back_to_buffered()?;
                self.file.write_all_at(buf, offset)
            }
            r => r,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // fdatasync also flushes the device cache for block devices and O_DIRECT files.
        if let Some(b) = &self.buffered {
            b.sync_data()?;
        }
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        if self.is_block_device {
            // Seeking to the end reports a block device's size without an ioctl.
            let mut f = &self.file;
            f.seek(SeekFrom::End(0))
        } else {
            Ok(self.file.metadata()?.len())
        }
    }
}

/// A heap buffer aligned to 4 KiB, for `O_DIRECT`.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let align = DIRECT_ALIGN as usize;
        let storage = vec![0u8; len + align];
        let start = storage.as_ptr().align_offset(align);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    fn as_ref(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// An in-memory device of any size, stored sparsely in 4 KiB pages (unwritten pages read as
/// zero), so tests can use 100 GiB devices cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemIo {
    len: u64,
    pages: BTreeMap<u64, Box<[u8; BLOCK_BYTES as usize]>>,
    /// Number of `write_at` calls so far.
    pub writes: u64,
    /// Number of `flush` calls so far.
    pub flushes: u64,
}

impl MemIo {
    pub fn new(len: u64) -> MemIo {
        MemIo {
            len,
            ..MemIo::default()
        }
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{len} bytes at offset {offset:#x} beyond end of device ({} bytes)",
                    self.len
                ),
            )),
        }
    }

    /// Bytes `offset..offset + len` (test helper).
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read_at(&mut v, offset).expect("range inside device");
        v
    }
}

impl BlockIo for MemIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let page = pos / BLOCK_BYTES;
            let in_page = (pos % BLOCK_BYTES) as usize;
            let n = (BLOCK_BYTES as usize - in_page).min(buf.len() - done);
            match self.pages.get(&page) {
                Some(p) => buf[done..done + n].copy_from_slice(&p[in_page..in_page + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        self.writes += 1;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let page = pos / BLOCK_BYTES;
            let in_page = (pos % BLOCK_BYTES) as usize;
            let n = (BLOCK_BYTES as usize - in_page).min(buf.len() - done);
            let src = &buf[done..done + n];
            if src.iter().all(|&b| b == 0) && !self.pages.contains_key(&page) {
                // Keep zero pages sparse.
            } else {
                let p = self
                    .pages
                    .entry(page)
                    .or_insert_with(|| Box::new([0; BLOCK_BYTES as usize]));
                p[in_page..in_page + n].copy_from_slice(src);
            }
            done += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_io_is_sparse_and_bounded() {
        let mut m = MemIo::new(100 << 30);
        m.write_at(&[1, 2, 3], (50 << 30) - 1).unwrap();
        assert_eq!(m.bytes((50 << 30) - 2, 5), [0, 1, 2, 3, 0]);
        assert_eq!(m.pages.len(), 2);
        assert!(m.write_at(&[0], 100 << 30).is_err());
    }

    /// tmpfs (no O_DIRECT on older kernels) must work too, with or without O_DIRECT.
    #[test]
    fn file_io_works_on_tmpfs() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm here; nothing to check");
            return;
        };
        let p = dir.path().join("dev");
        std::fs::write(&p, vec![0u8; 64 << 10]).unwrap();
        let mut f = FileIo::open(&p, true).unwrap();
        f.write_at(&[7; 4096], 8192).unwrap();
        f.write_at(&[9; 10], 100).unwrap();
        f.flush().unwrap();
        let mut b = [0u8; 4096];
        f.read_at(&mut b, 8192).unwrap();
        assert_eq!(b, [7; 4096]);
        let all = std::fs::read(&p).unwrap();
        assert_eq!(&all[100..110], &[9; 10]);
    }

    #[test]
    fn file_io_handles_unaligned_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev");
        std::fs::write(&p, vec![0xaau8; 3 * 4096 + 100]).unwrap();
        let mut f = FileIo::open(&p, true).unwrap();
        assert_eq!(f.len().unwrap(), 3 * 4096 + 100);
        f.write_at(&[1, 2, 3, 4, 5], 4094).unwrap();
        f.flush().unwrap();
        let mut b = [0u8; 7];
        f.read_at(&mut b, 4093).unwrap();
        assert_eq!(b, [0xaa, 1, 2, 3, 4, 5, 0xaa]);
        let all = std::fs::read(&p).unwrap();
        assert_eq!(&all[4093..4100], &b);
        assert_eq!(all.len(), 3 * 4096 + 100, "no growth past the end");
    }
}
