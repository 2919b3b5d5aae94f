//! P_SIZES (spec §5.11): 32 bytes, or 56 with the o_qlim extension when DRBD_FF_WSAME was
//! agreed.
//!
//! ```text
//! d_size u64 | u_size u64 | c_size u64 | max_bio_size u32 | queue_order_type u16 | dds_flags u16
//! [o_qlim: physical_block_size u32 | logical_block_size u32 | alignment_offset u32
//!          | io_min u32 | io_opt u32 | discard_enabled u8 | discard_zeroes_data u8
//!          | write_same_capable u8 | pad u8]
//! ```

use bytes::BufMut;

use crate::error::{DecodeError, Expected};
use crate::header::Header;
use crate::reader::Reader;

/// sizeof(struct p_sizes).
pub const SIZES_LEN: usize = 32;
/// sizeof(struct p_sizes) + sizeof(struct o_qlim).
pub const SIZES_QLIM_LEN: usize = 56;

/// enum dds_flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DdsFlags(pub u16);

impl DdsFlags {
    /// DDSF_FORCED: resize --assume-peer-has-space.
    pub const FORCED: DdsFlags = DdsFlags(1);
    /// DDSF_NO_RESYNC: resize --assume-clean.
    pub const NO_RESYNC: DdsFlags = DdsFlags(2);
}

/// struct o_qlim: the sender's queue limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct QueueLimits {
    pub physical_block_size: u32,
    pub logical_block_size: u32,
    pub alignment_offset: u32,
    pub io_min: u32,
    pub io_opt: u32,
    pub discard_enabled: u8,
    pub discard_zeroes_data: u8,
    pub write_same_capable: u8,
}

/// P_SIZES payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Sizes {
    /// Usable backing size, sectors (0 if diskless).
    pub d_size_sectors: u64,
    /// User-requested size, sectors (0 = none).
    pub u_size_sectors: u64,
    /// Current device capacity, sectors.
    pub c_size_sectors: u64,
    /// Largest request the sender accepts, bytes.
    pub max_bio_size: u32,
    /// Unused by 8.4 (0); kept for round trips.
    pub queue_order_type: u16,
    pub dds_flags: DdsFlags,
    /// Present iff DRBD_FF_WSAME was agreed.
    pub qlim: Option<QueueLimits>,
}

impl Sizes {
    /// Decodes a P_SIZES payload; `with_qlim` is whether DRBD_FF_WSAME was agreed, which fixes
    /// the exact length the kernel requires (drbd_receiver.c: drbdd, `shs += sizeof(o_qlim)`).
    pub fn decode(header: &Header, payload: &[u8], with_qlim: bool) -> Result<Sizes, DecodeError> {
        let cmd = header.command;
        let want = if with_qlim { SIZES_QLIM_LEN } else { SIZES_LEN };
        if payload.len() != want {
            return Err(DecodeError::PayloadLength {
                command: cmd,
                expected: Expected::Exactly(want),
                got: payload.len(),
            });
        }
        let mut r = Reader::new(cmd, payload);
        let mut s = Sizes {
            d_size_sectors: r.u64()?,
            u_size_sectors: r.u64()?,
            c_size_sectors: r.u64()?,
            max_bio_size: r.u32()?,
            queue_order_type: r.u16()?,
            dds_flags: DdsFlags(r.u16()?),
            qlim: None,
        };
        if with_qlim {
            let q = QueueLimits {
                physical_block_size: r.u32()?,
                logical_block_size: r.u32()?,
                alignment_offset: r.u32()?,
                io_min: r.u32()?,
                io_opt: r.u32()?,
                discard_enabled: r.u8()?,
                discard_zeroes_data: r.u8()?,
                write_same_capable: r.u8()?,
            };
            // The pad byte is ignored by the kernel.
            let _pad = r.u8()?;
            s.qlim = Some(q);
        }
        Ok(s)
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.d_size_sectors);
        buf.put_u64(self.u_size_sectors);
        buf.put_u64(self.c_size_sectors);
        buf.put_u32(self.max_bio_size);
        buf.put_u16(self.queue_order_type);
        buf.put_u16(self.dds_flags.0);
        if let Some(q) = &self.qlim {
            buf.put_u32(q.physical_block_size);
            buf.put_u32(q.logical_block_size);
            buf.put_u32(q.alignment_offset);
            buf.put_u32(q.io_min);
            buf.put_u32(q.io_opt);
            buf.put_u8(q.discard_enabled);
            buf.put_u8(q.discard_zeroes_data);
            buf.put_u8(q.write_same_capable);
            buf.put_u8(0);
        }
    }

    pub fn encoded_len(&self) -> usize {
        if self.qlim.is_some() {
            SIZES_QLIM_LEN
        } else {
            SIZES_LEN
        }
    }
}
