//! P_BARRIER and P_BARRIER_ACK (spec §5.6, §7). The barrier number is opaque: the kernel
//! writes it in host order and the receiver echoes the four bytes.
//!
//! ```text
//! p_barrier (8):     barrier [4] | pad u32
//! p_barrier_ack (8): barrier [4] | set_size u32
//! ```

use bytes::BufMut;

use crate::error::{expect_len, DecodeError};
use crate::header::Header;
use crate::reader::Reader;
use crate::BarrierNr;

/// P_BARRIER payload: closes the epoch with this number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Barrier {
    pub barrier: BarrierNr,
}

impl Barrier {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<Barrier, DecodeError> {
        expect_len(header.command, payload, 8)?;
        let mut r = Reader::new(header.command, payload);
        let b = Barrier {
            barrier: BarrierNr(r.array()?),
        };
        let _pad = r.u32()?;
        Ok(b)
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.barrier.0);
        buf.put_u32(0);
    }
}

/// P_BARRIER_ACK payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BarrierAck {
    /// Echoed verbatim from the P_BARRIER.
    pub barrier: BarrierNr,
    /// Writes the receiver counted in that epoch.
    pub set_size: u32,
}

impl BarrierAck {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<BarrierAck, DecodeError> {
        expect_len(header.command, payload, 8)?;
        let mut r = Reader::new(header.command, payload);
        Ok(BarrierAck {
            barrier: BarrierNr(r.array()?),
            set_size: r.u32()?,
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.barrier.0);
        buf.put_u32(self.set_size);
    }
}
