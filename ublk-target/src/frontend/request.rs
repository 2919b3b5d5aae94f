//! Decoding one ublk I/O descriptor (`struct ublksrv_io_desc`) into a [`Request`].

use super::Errno;

/// What the kernel asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `len_bytes` at `offset_bytes` into the buffer.
    Read,
    /// Write the buffer; with `fua` it must be durable before completing.
    Write {
        /// REQ_FUA was set.
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
    /// The range's contents may be dropped.
    Discard,
    /// The range must read back as zeroes.
    WriteZeroes,
}

/// One decoded request. Offsets and lengths are in bytes; ublk itself counts 512-byte
/// sectors whatever the logical block size is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// Byte offset on the device.
    pub offset_bytes: u64,
    /// Length in bytes (0 for Flush).
    pub len_bytes: u32,
}

/// ublk counts in 512-byte sectors (include/uapi/linux/ublk_cmd.h, `ublksrv_io_desc`).
const SECTOR_SHIFT: u32 = 9;
/// UBLK_IO_F_FUA in `op_flags` (ublk_cmd.h).
const IO_F_FUA: u32 = 1 << 13;

impl Request {
    /// Decodes `op_flags`, `start_sector` and `nr_sectors` and checks them against the device:
    /// the range must lie inside `dev_sectors` and be aligned to the logical block.
    pub fn decode(
        op_flags: u32,
        start_sector: u64,
        nr_sectors: u32,
        dev_sectors: u64,
        logical_block_shift: u8,
    ) -> Result<Request, Errno> {
        let op = match op_flags & 0xff {
            libublk::sys::UBLK_IO_OP_READ => Op::Read,
            libublk::sys::UBLK_IO_OP_WRITE => Op::Write {
                fua: op_flags & IO_F_FUA != 0,
            },
            libublk::sys::UBLK_IO_OP_FLUSH => Op::Flush,
            libublk::sys::UBLK_IO_OP_DISCARD => Op::Discard,
            libublk::sys::UBLK_IO_OP_WRITE_ZEROES => Op::WriteZeroes,
            _ => return Err(Errno::EOPNOTSUPP),
        };
        if op == Op::Flush {
            return Ok(Request {
                op,
                offset_bytes: 0,
                len_bytes: 0,
            });
        }
        let end = start_sector
            .checked_add(u64::from(nr_sectors))
            .ok_or(Errno::EINVAL)?;
        if nr_sectors == 0 || end > dev_sectors {
            return Err(Errno::EINVAL);
        }
        // A logical block is 2^(shift-9) sectors; both ends must sit on one.
        let per_block = (1u64 << logical_block_shift.saturating_sub(SECTOR_SHIFT as u8)) - 1;
        if start_sector & per_block != 0 || u64::from(nr_sectors) & per_block != 0 {
            return Err(Errno::EINVAL);
        }
        let len_bytes = nr_sectors
            .checked_shl(SECTOR_SHIFT)
            .filter(|l| l >> SECTOR_SHIFT == nr_sectors);
        Ok(Request {
            op,
            offset_bytes: start_sector << SECTOR_SHIFT,
            len_bytes: len_bytes.ok_or(Errno::EINVAL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP_WRITE: u32 = libublk::sys::UBLK_IO_OP_WRITE;

    #[test]
    fn decodes_fua_write_in_bytes() {
        let r = Request::decode(OP_WRITE | IO_F_FUA, 8, 16, 1024, 9).unwrap();
        assert_eq!(
            r,
            Request {
                op: Op::Write { fua: true },
                offset_bytes: 4096,
                len_bytes: 8192
            }
        );
    }

    #[test]
    fn flush_has_no_range() {
        let r = Request::decode(libublk::sys::UBLK_IO_OP_FLUSH, 0, 0, 1024, 9).unwrap();
        assert_eq!(r.op, Op::Flush);
        assert_eq!(r.len_bytes, 0);
    }

    #[test]
    fn rejects_range_past_end() {
        assert_eq!(
            Request::decode(OP_WRITE, 1020, 8, 1024, 9),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            Request::decode(OP_WRITE, u64::MAX, 8, 1024, 9),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn rejects_unaligned_to_logical_block() {
        assert_eq!(
            Request::decode(OP_WRITE, 1, 8, 1024, 12),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            Request::decode(OP_WRITE, 8, 4, 1024, 12),
            Err(Errno::EINVAL)
        );
        assert!(Request::decode(OP_WRITE, 8, 8, 1024, 12).is_ok());
    }

    #[test]
    fn rejects_unknown_op() {
        assert_eq!(Request::decode(0x7f, 0, 8, 1024, 9), Err(Errno::EOPNOTSUPP));
    }
}
