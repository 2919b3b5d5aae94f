//! p_block_ack (spec §5.3): every block ack on the meta socket — P_RECV_ACK, P_WRITE_ACK,
//! P_RS_WRITE_ACK, P_SUPERSEDED, P_NEG_ACK, P_NEG_DREPLY, P_NEG_RS_DREPLY, P_OV_RESULT,
//! P_RS_IS_IN_SYNC, P_RS_CANCEL, P_RETRY_WRITE (len = 24).
//!
//! ```text
//! sector u64 | block_id [8] (echoed) | blksize u32 | seq_num u32
//! ```

use bytes::BufMut;

use crate::data::BLOCK_REQ_LEN;
use crate::error::{expect_len, DecodeError};
use crate::header::Header;
use crate::reader::Reader;
use crate::BlockId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockAck {
    /// Copied from the request.
    pub sector: u64,
    /// Copied verbatim from the request; [`BlockId::OV_IN_SYNC`] / [`BlockId::OV_OUT_OF_SYNC`]
    /// in P_OV_RESULT.
    pub block_id: BlockId,
    /// Data bytes (excluding any digest).
    pub blksize: u32,
    /// The sender's per-volume sequence number (spec §6.4).
    pub seq_num: u32,
}

impl BlockAck {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<BlockAck, DecodeError> {
        expect_len(header.command, payload, BLOCK_REQ_LEN)?;
        let mut r = Reader::new(header.command, payload);
        Ok(BlockAck {
            sector: r.u64()?,
            block_id: BlockId(r.array()?),
            blksize: r.u32()?,
            seq_num: r.u32()?,
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_slice(&self.block_id.0);
        buf.put_u32(self.blksize);
        buf.put_u32(self.seq_num);
    }
}
