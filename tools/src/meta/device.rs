//! Everything around the meta-data bytes that drbdmeta does too: opening the device, the
//! per-minor lock, the "last known backing device" file, questions, and the check for
//! existing file systems before `create-md`/`restore-md`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use udrbd_metadata::io::{BlockIo, FileIo};
use udrbd_metadata::layout::{Layout, MetaIndex};

use super::{Fail, Invocation};

/// Where drbdmeta keeps "last known" backing-device information (`DRBD_LIB_DIR`).
pub const DRBD_LIB_DIR: &str = "/var/lib/drbd";
/// Where drbdmeta takes its per-minor lock (`DRBD_LOCK_DIR`).
pub const DRBD_LOCK_DIR: &str = "/var/lock";
/// drbdmeta refuses devices smaller than this (`SO_MUCH`): it reads this much from the start
/// to look for existing data.
pub const SO_MUCH: u64 = 68 * 1024;

/// How questions are answered: a terminal, or (in tests) a script.
pub trait Confirm {
    /// Shows `text` and returns the answer; `force` answers yes without asking.
    fn confirmed(&mut self, text: &str, force: bool) -> bool;
}

/// drbdmeta's `confirmed()`: asks on stderr and reads "yes" from a terminal on stdin;
/// without a terminal the answer is no.
pub struct Terminal;

impl Confirm for Terminal {
    fn confirmed(&mut self, text: &str, force: bool) -> bool {
        eprintln!("\n{text}");
        if force {
            eprintln!("*** confirmation forced via --force option ***");
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!("stdin not a TTY, not waiting for confirmation");
            return false;
        }
        eprint!("[need to type 'yes' to confirm] ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let ok = std::io::stdin().lock().read_line(&mut line).is_ok() && line == "yes\n";
        eprintln!();
        ok
    }
}

/// The per-minor lock file `/var/lock/drbd-147-MINOR`, held with an fcntl write lock for the
/// life of the command, so drbdmeta, udrbdmeta and drbdsetup exclude each other.
pub struct MinorLock {
    _file: File,
}

impl MinorLock {
    pub fn take(minor: u32) -> Result<MinorLock, Fail> {
        let path = format!("{DRBD_LOCK_DIR}/drbd-147-{minor}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Fail::new(20, format!("open({path}): {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let fl = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: 0,
                l_len: 0,
                l_pid: 0,
            };
            // SAFETY: `fl` is a valid, initialised flock and the descriptor is open.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
            if r == 0 {
                return Ok(MinorLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            let busy = matches!(
                err.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR)
            );
            if !busy {
                return Err(Fail::new(20, format!("fcntl({path},...): {err}")));
            }
            if Instant::now() >= deadline {
                return Err(Fail::new(
                    20,
                    format!("lock on {path} currently held by another process"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True if a kernel DRBD minor is configured with a disk (drbdmeta asks `drbdsetup dstate`;
/// we read /proc/drbd, which has the same answer without the helper binary).
pub fn kernel_minor_attached(minor: u32) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/drbd") else {
        return false;
    };
    let prefix = format!("{minor}: ");
    s.lines().map(str::trim_start).any(|l| {
        l.starts_with(&prefix)
            && l.split_whitespace()
                .find_map(|w| w.strip_prefix("ds:"))
                .is_some_and(|ds| !ds.starts_with("Diskless") && !ds.starts_with("Unconfigured"))
    })
}

/// Opens the meta-data device as drbdmeta does: `O_DIRECT` (falling back without it), and
/// `O_EXCL` for internal and flex-external meta-data so a device in use is not damaged by a
/// typo; a plain file needs `--force`.
pub fn open_device(
    inv: &Invocation,
    confirm: &mut dyn Confirm,
    writable: bool,
) -> Result<FileIo, Fail> {
    let path = Path::new(&inv.device);
    let exclusive = !matches!(inv.index, MetaIndex::Indexed(_));
    let mut io = match FileIo::open_flags(path, writable, if exclusive { libc::O_EXCL } else { 0 })
    {
        Ok(io) => io,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && exclusive => {
            eprintln!("open({}) failed: {e}", inv.device);
            if (!inv.opts.force && inv.command == "apply-al")
                || !confirm.confirmed("Exclusive open failed. Do it anyways?", inv.opts.force)
            {
                println!("Operation canceled.");
                return Err(Fail::quiet(20));
            }
            FileIo::open(path, writable)
                .map_err(|e| Fail::new(20, format!("open({}) failed: {e}", inv.device)))?
        }
        Err(e) => return Err(Fail::new(20, format!("open({}) failed: {e}", inv.device))),
    };
    if !io.is_block_device() && !inv.opts.force {
        return Err(Fail::new(
            20,
            format!("'{}' is not a block device!", inv.device),
        ));
    }
    let size = io
        .len()
        .map_err(|e| Fail::new(20, format!("{}: cannot determine size: {e}", inv.device)))?;
    if size < SO_MUCH {
        return Err(Fail::new(
            10,
            format!("{} is only {size} bytes. That's not enough.", inv.device),
        ));
    }
    // Keep `io` mutable for callers.
    let _ = &mut io;
    Ok(io)
}

/// Last known backing device of an internal meta-data minor (`drbd-minor-N.lkbd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastKnown {
    pub size: u64,
    pub name: Option<String>,
    pub uuid: u64,
}

fn lk_path(minor: u32) -> PathBuf {
    Path::new(DRBD_LIB_DIR).join(format!("drbd-minor-{minor}.lkbd"))
}

impl LastKnown {
    pub fn load(minor: u32) -> Option<LastKnown> {
        let s = std::fs::read_to_string(lk_path(minor)).ok()?;
        let mut lines = s.lines();
        let first = lines.next()?;
        let mut f = first.split_whitespace();
        let size = f.next()?.parse().ok()?;
        let name = f.next().map(String::from);
        let uuid = lines
            .next()
            .and_then(|l| l.strip_prefix("uuid:"))
            .and_then(|u| u64::from_str_radix(u.trim(), 16).ok())
            .unwrap_or(0);
        Some(LastKnown { size, name, uuid })
    }

    /// Writes the file in drbdmeta's format ("SIZE\tNAME\n" and "uuid:\tHEX\n").
    pub fn save(&self, minor: u32) {
        let mut s = format!("{}\t{}\n", self.size, self.name.as_deref().unwrap_or(""));
        if self.uuid != 0 {
            s.push_str(&format!("uuid:\t{:016X}\n", self.uuid));
        }
        let path = lk_path(minor);
        let r = File::create(&path).and_then(|mut f| {
            f.write_all(s.as_bytes())?;
            f.sync_all()
        });
        if let Err(e) = r {
            eprintln!("lk_bdev_save({}) failed: {e}", path.display());
        }
    }

    pub fn delete(minor: u32) {
        let path = lk_path(minor);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("lk_bdev_delete({}) failed: {e}", path.display());
            }
        }
    }
}

/// After a superblock write: remember (internal) or forget (external) the backing device,
/// as drbdmeta's `v08_md_close` does.
pub fn update_last_known(inv: &Invocation, device_bytes: u64, device_uuid: u64) {
    let Some(minor) = inv.minor else { return };
    if inv.opts.dry_run {
        return;
    }
    if inv.index == MetaIndex::Internal {
        LastKnown {
            size: device_bytes,
            name: Some(inv.device.clone()),
            uuid: device_uuid,
        }
        .save(minor);
    } else {
        LastKnown::delete(minor);
    }
}

/// What `check_for_existing_data` recognised in the first 68 KiB.
struct FsType {
    name: &'static str,
    blocks: u64,
    block_size: u64,
}

/// "Refuse always" block size of drbdmeta (`REFUSE_BSIZE`); `ERR_BSIZE` is one more.
const REFUSE_BSIZE: u64 = 0xFFFF_FFFF_FFFF_0000;
const ERR_BSIZE: u64 = 0xFFFF_FFFF_FFFF_0001;

fn le16(d: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([d[o], d[o + 1]]))
}
fn le32(d: &[u8], o: usize) -> u64 {
    u64::from(u32::from_le_bytes(d[o..o + 4].try_into().expect("4 bytes")))
}
fn be32(d: &[u8], o: usize) -> u64 {
    u64::from(u32::from_be_bytes(d[o..o + 4].try_into().expect("4 bytes")))
}

fn guess_fs(d: &[u8]) -> FsType {
    let at = |o: usize, s: &[u8]| d.get(o..o + s.len()) == Some(s);
    for o in [(1 << 12) - 10, (1 << 13) - 10] {
        if at(o, b"SWAP-SPACE") || at(o, b"SWAPSPACE2") {
            return FsType {
                name: "swap space signature",
                blocks: 1,
                block_size: REFUSE_BSIZE,
            };
        }
    }
    if at(0x218, b"LVM2") {
        // drbdmeta asks `pvs` for the size; we do not run helpers and refuse as it does when
        // the size cannot be determined.
        return FsType {
            name: "LVM2 physical volume signature",
            blocks: 1,
            block_size: ERR_BSIZE,
        };
    }
    if le16(d, 0x438) == 0xEF53 {
        let bs = match le32(d, 0x418) {
            0 => 1024,
            1 => 2048,
            _ => 4096,
        };
        // drbdmeta reads one byte here (its "has journal" test); we do the same.
        let name = if d[0x45c] & 4 == 4 {
            "ext3 filesystem"
        } else {
            "ext2 filesystem"
        };
        return FsType {
            name,
            blocks: le32(d, 0x404),
            block_size: bs,
        };
    }
    if be32(d, 0) == 0x5846_5342 {
        return FsType {
            name: "xfs filesystem",
            blocks: u64::from_be_bytes(d[8..16].try_into().expect("8 bytes")),
            block_size: be32(d, 4),
        };
    }
    if at(0x8000, b"JFS1") {
        return FsType {
            name: "JFS filesystem",
            blocks: u64::from_le_bytes(d[0x8008..0x8010].try_into().expect("8 bytes")),
            block_size: le32(d, 0x8018),
        };
    }
    if at(0x10034, b"ReIsErFs") || at(0x10034, b"ReIsEr2Fs") {
        return FsType {
            name: "reiser filesystem",
            blocks: le32(d, 0x10000),
            block_size: le16(d, 0x1002c),
        };
    }
    FsType {
        name: "some data",
        blocks: 0,
        block_size: 0,
    }
}

/// drbdmeta's `check_for_existing_data`: if the first 68 KiB of the device are not all zero,
/// say what was found, refuse (exit 40) when the meta-data would certainly destroy it, and
/// otherwise ask.
pub fn check_for_existing_data(
    inv: &Invocation,
    io: &FileIo,
    layout: &Layout,
    confirm: &mut dyn Confirm,
) -> Result<(), Fail> {
    let mut d = vec![0u8; SO_MUCH as usize];
    io.read_at(&mut d, 0).map_err(|e| {
        Fail::new(
            10,
            format!("{}: read of first 68 KiB failed: {e}", inv.device),
        )
    })?;
    if d.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let f = guess_fs(&d);
    println!("md_offset {}", layout.md_offset);
    println!("al_offset {}", layout.al_offset());
    println!("bm_offset {}", layout.bm_offset());
    println!("\nFound {}", f.name);
    let refuse = || {
        println!(
            "If you want me to do this, you need to zero out the first part\n\
             of the device (destroy the content).\n\
             You should be very sure that you mean it.\nOperation refused.\n"
        );
        Fail::new(
            40,
            format!(
                "{}: found {} in the first 68 KiB; refusing to place meta-data over it",
                inv.device, f.name
            ),
        )
    };
    if f.blocks != 0 {
        if inv.index != MetaIndex::Internal {
            println!("\nThis would corrupt existing data.");
            if inv.opts.ignore_sanity_checks {
                println!("\nIgnoring sanity check on user request.\n");
                return Ok(());
            }
            return Err(refuse());
        }
        let fs_kb = f.block_size.saturating_mul(f.blocks).div_ceil(1024);
        let max_kb = layout.max_usable_sect >> 1;
        if f.block_size < REFUSE_BSIZE {
            println!("{fs_kb:>12} kB data area apparently used");
        }
        println!("{max_kb:>12} kB left usable by current configuration");
        if f.block_size == ERR_BSIZE {
            println!("Could not determine the size of the actually used data area.\n");
        }
        if f.block_size >= REFUSE_BSIZE {
            println!(
                "Device size would be truncated, which\nwould corrupt data and result in\n\
                 'access beyond end of device' errors."
            );
            if inv.opts.ignore_sanity_checks {
                println!("\nIgnoring sanity check on user request.\n");
                return Ok(());
            }
            return Err(refuse());
        }
        if fs_kb > max_kb {
            println!(
                "\nDevice size would be truncated, which\nwould corrupt data and result in\n\
                 'access beyond end of device' errors.\nYou need to either\n   \
                 * use external meta data (recommended)\n   * shrink that filesystem first\n   \
                 * zero out the device (destroy the filesystem)\nOperation refused.\n"
            );
            return Err(Fail::new(
                40,
                format!(
                    "{}: {} of {fs_kb} kB does not fit in the {max_kb} kB left by internal meta-data",
                    inv.device, f.name
                ),
            ));
        }
        println!(
            "\nEven though it looks like this would place the new meta data into\n\
             unused space, you still need to confirm, as this is only a guess."
        );
    } else {
        println!("\n ==> This might destroy existing data! <==");
    }
    if !confirm.confirmed("Do you want to proceed?", inv.opts.force) {
        println!("Operation canceled.");
        return Err(Fail::quiet(1));
    }
    Ok(())
}
