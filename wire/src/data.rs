//! Data and request packets (spec §5.1, 5.2, 5.4, 5.5, 5.17, §6).
//!
//! ```text
//! p_data (24):       sector u64 | block_id [8] | seq_num u32 | dp_flags u32
//!                    then [integrity digest] then data
//! p_trim (28):       p_data | size u32                      (P_TRIM, P_ZEROES; nothing follows)
//! p_wsame (28):      p_data | size u32 | [digest] | one logical block
//! p_block_req (24):  sector u64 | block_id [8] | blksize u32 | pad u32
//!                    (+ digest for P_OV_REPLY, P_CSUM_RS_REQUEST)
//! p_block_desc (16): sector u64 | blksize u32 | pad u32
//! p_delay_probe93 (8): seq_num u32 | offset u32
//! ```

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::error::{expect_len, expect_min, DecodeError};
use crate::header::Header;
use crate::reader::{Origin, Reader};
use crate::BlockId;

/// dp_flags bits (drbd_protocol.h DP_*).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DpFlags(pub u32);

impl DpFlags {
    pub const HARDBARRIER: DpFlags = DpFlags(1);
    pub const RW_SYNC: DpFlags = DpFlags(2);
    pub const MAY_SET_IN_SYNC: DpFlags = DpFlags(4);
    pub const UNPLUG: DpFlags = DpFlags(8);
    pub const FUA: DpFlags = DpFlags(16);
    pub const FLUSH: DpFlags = DpFlags(32);
    pub const DISCARD: DpFlags = DpFlags(64);
    pub const SEND_RECEIVE_ACK: DpFlags = DpFlags(128);
    pub const SEND_WRITE_ACK: DpFlags = DpFlags(256);
    pub const WSAME: DpFlags = DpFlags(512);
    pub const ZEROES: DpFlags = DpFlags(1024);

    pub const fn contains(self, f: DpFlags) -> bool {
        self.0 & f.0 == f.0
    }

    pub const fn union(self, f: DpFlags) -> DpFlags {
        DpFlags(self.0 | f.0)
    }
}

impl fmt::Debug for DpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 11] = [
            "HARDBARRIER",
            "RW_SYNC",
            "MAY_SET_IN_SYNC",
            "UNPLUG",
            "FUA",
            "FLUSH",
            "DISCARD",
            "SEND_RECEIVE_ACK",
            "SEND_WRITE_ACK",
            "WSAME",
            "ZEROES",
        ];
        write!(f, "DpFlags(0x{:x}", self.0)?;
        for (i, n) in NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, " {n}")?;
            }
        }
        write!(f, ")")
    }
}

/// sizeof(struct p_data).
pub const P_DATA_LEN: usize = 24;
/// sizeof(struct p_trim) = sizeof(struct p_wsame).
pub const P_TRIM_LEN: usize = 28;
/// sizeof(struct p_block_req) = sizeof(struct p_block_ack).
pub const BLOCK_REQ_LEN: usize = 24;
/// sizeof(struct p_block_desc).
pub const BLOCK_DESC_LEN: usize = 16;

/// P_DATA, P_DATA_REPLY, P_RS_DATA_REPLY payload.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Data {
    /// First 512-byte sector.
    pub sector: u64,
    pub block_id: BlockId,
    /// Per-volume sequence number; 0 in replies.
    pub seq_num: u32,
    /// 0 in replies.
    pub dp_flags: DpFlags,
    /// The data-integrity digest (empty without data-integrity-alg).
    pub digest: Bytes,
    pub data: Bytes,
}

impl Data {
    /// Decodes with the agreed data-integrity digest size (drbd_receiver.c: read_in_block).
    pub fn decode(header: &Header, payload: &[u8], digest_len: usize) -> Result<Data, DecodeError> {
        Self::decode_in(header, payload, digest_len, Origin::default())
    }

    pub(crate) fn decode_in(
        header: &Header,
        payload: &[u8],
        digest_len: usize,
        origin: Origin<'_>,
    ) -> Result<Data, DecodeError> {
        expect_min(header.command, payload, P_DATA_LEN + digest_len)?;
        let mut r = Reader::new(header.command, payload);
        Ok(Data {
            sector: r.u64()?,
            block_id: BlockId(r.array()?),
            seq_num: r.u32()?,
            dp_flags: DpFlags(r.u32()?),
            digest: origin.bytes(r.take(digest_len)?),
            data: origin.bytes(r.rest()),
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_slice(&self.block_id.0);
        buf.put_u32(self.seq_num);
        buf.put_u32(self.dp_flags.0);
        buf.put_slice(&self.digest);
        buf.put_slice(&self.data);
    }

    pub fn encoded_len(&self) -> usize {
        P_DATA_LEN + self.digest.len() + self.data.len()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("sector", &self.sector)
            .field("block_id", &self.block_id)
            .field("seq_num", &self.seq_num)
            .field("dp_flags", &self.dp_flags)
            .field("digest_len", &self.digest.len())
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// P_TRIM / P_ZEROES payload: exactly 28 bytes, no data, no digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trim {
    pub sector: u64,
    pub block_id: BlockId,
    pub seq_num: u32,
    pub dp_flags: DpFlags,
    /// Bytes affected.
    pub size: u32,
}

impl Trim {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<Trim, DecodeError> {
        expect_len(header.command, payload, P_TRIM_LEN)?;
        let mut r = Reader::new(header.command, payload);
        Ok(Trim {
            sector: r.u64()?,
            block_id: BlockId(r.array()?),
            seq_num: r.u32()?,
            dp_flags: DpFlags(r.u32()?),
            size: r.u32()?,
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_slice(&self.block_id.0);
        buf.put_u32(self.seq_num);
        buf.put_u32(self.dp_flags.0);
        buf.put_u32(self.size);
    }
}

/// P_WSAME payload: p_wsame, optional digest, one logical block. Never send to a mainline >= 5.18
/// peer (spec §14).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Wsame {
    pub sector: u64,
    pub block_id: BlockId,
    pub seq_num: u32,
    pub dp_flags: DpFlags,
    /// Bytes affected.
    pub size: u32,
    pub digest: Bytes,
    /// The one logical block to repeat.
    pub data: Bytes,
}

impl Wsame {
    pub fn decode(
        header: &Header,
        payload: &[u8],
        digest_len: usize,
    ) -> Result<Wsame, DecodeError> {
        Self::decode_in(header, payload, digest_len, Origin::default())
    }

    pub(crate) fn decode_in(
        header: &Header,
        payload: &[u8],
        digest_len: usize,
        origin: Origin<'_>,
    ) -> Result<Wsame, DecodeError> {
        expect_min(header.command, payload, P_TRIM_LEN + digest_len)?;
        let mut r = Reader::new(header.command, payload);
        Ok(Wsame {
            sector: r.u64()?,
            block_id: BlockId(r.array()?),
            seq_num: r.u32()?,
            dp_flags: DpFlags(r.u32()?),
            size: r.u32()?,
            digest: origin.bytes(r.take(digest_len)?),
            data: origin.bytes(r.rest()),
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_slice(&self.block_id.0);
        buf.put_u32(self.seq_num);
        buf.put_u32(self.dp_flags.0);
        buf.put_u32(self.size);
        buf.put_slice(&self.digest);
        buf.put_slice(&self.data);
    }

    pub fn encoded_len(&self) -> usize {
        P_TRIM_LEN + self.digest.len() + self.data.len()
    }
}

/// p_block_req: P_DATA_REQUEST, P_RS_DATA_REQUEST, P_OV_REQUEST, P_RS_THIN_REQ (exactly 24).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockReq {
    pub sector: u64,
    /// Request cookie; [`BlockId::SYNCER`] for resync and verify.
    pub block_id: BlockId,
    /// Bytes requested.
    pub blksize: u32,
}

impl BlockReq {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<BlockReq, DecodeError> {
        expect_len(header.command, payload, BLOCK_REQ_LEN)?;
        Self::decode_prefix(&mut Reader::new(header.command, payload))
    }

    fn decode_prefix(r: &mut Reader<'_>) -> Result<BlockReq, DecodeError> {
        let req = BlockReq {
            sector: r.u64()?,
            block_id: BlockId(r.array()?),
            blksize: r.u32()?,
        };
        // The pad word is ignored by the kernel.
        let _pad = r.u32()?;
        Ok(req)
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_slice(&self.block_id.0);
        buf.put_u32(self.blksize);
        buf.put_u32(0);
    }
}

/// p_block_req followed by a digest: P_OV_REPLY, P_CSUM_RS_REQUEST (len = 24 + digest).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DigestReq {
    pub req: BlockReq,
    /// verify-alg or csums-alg digest; its length is the rest of the payload.
    pub digest: Bytes,
}

impl DigestReq {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<DigestReq, DecodeError> {
        Self::decode_in(header, payload, Origin::default())
    }

    pub(crate) fn decode_in(
        header: &Header,
        payload: &[u8],
        origin: Origin<'_>,
    ) -> Result<DigestReq, DecodeError> {
        expect_min(header.command, payload, BLOCK_REQ_LEN)?;
        let mut r = Reader::new(header.command, payload);
        let req = BlockReq::decode_prefix(&mut r)?;
        Ok(DigestReq {
            req,
            digest: origin.bytes(r.rest()),
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        self.req.encode(buf);
        buf.put_slice(&self.digest);
    }
}

/// p_block_desc: P_OUT_OF_SYNC, P_RS_DEALLOCATED (exactly 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockDesc {
    pub sector: u64,
    pub blksize: u32,
}

impl BlockDesc {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<BlockDesc, DecodeError> {
        expect_len(header.command, payload, BLOCK_DESC_LEN)?;
        let mut r = Reader::new(header.command, payload);
        let d = BlockDesc {
            sector: r.u64()?,
            blksize: r.u32()?,
        };
        let _pad = r.u32()?;
        Ok(d)
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.sector);
        buf.put_u32(self.blksize);
        buf.put_u32(0);
    }
}

/// p_delay_probe93: legacy 8.3 packet that 8.4 reads and ignores (exactly 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DelayProbe {
    pub seq_num: u32,
    pub offset: u32,
}

impl DelayProbe {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<DelayProbe, DecodeError> {
        expect_len(header.command, payload, 8)?;
        let mut r = Reader::new(header.command, payload);
        Ok(DelayProbe {
            seq_num: r.u32()?,
            offset: r.u32()?,
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.seq_num);
        buf.put_u32(self.offset);
    }
}
