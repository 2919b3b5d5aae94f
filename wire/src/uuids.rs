//! P_UUIDS (spec §5.10) and P_SYNC_UUID (spec §5.15).
//!
//! ```text
//! p_uuids (48): current u64 | bitmap u64 | history[0] u64 | history[1] u64
//!               | dirty_bits u64 (UI_SIZE) | flags u64 (UI_FLAGS)
//! p_rs_uuid (8): uuid u64
//! ```

use bytes::BufMut;

use crate::error::{expect_len, DecodeError};
use crate::header::Header;
use crate::reader::Reader;

/// P_UUIDS payload size.
pub const UUIDS_LEN: usize = 48;

/// UI_FLAGS bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct UuidFlags(pub u64);

impl UuidFlags {
    /// The sender has discard-my-data set.
    pub const DISCARD_MY_DATA: UuidFlags = UuidFlags(1);
    /// The sender is a crashed primary.
    pub const CRASHED_PRIMARY: UuidFlags = UuidFlags(2);
    /// The sender's disk will be Inconsistent once negotiated.
    pub const INCONSISTENT: UuidFlags = UuidFlags(4);
    /// Skip the initial sync (`new-current-uuid --clear-bitmap`, apv >= 90).
    pub const SKIP_INITIAL_SYNC: UuidFlags = UuidFlags(8);

    pub fn contains(self, f: UuidFlags) -> bool {
        self.0 & f.0 == f.0
    }
}

/// P_UUIDS payload: the sender's generation identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Uuids {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
    /// Number of set bits in the sender's bitmap.
    pub dirty_bits: u64,
    pub flags: UuidFlags,
}

impl Uuids {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<Uuids, DecodeError> {
        expect_len(header.command, payload, UUIDS_LEN)?;
        let mut r = Reader::new(header.command, payload);
        Ok(Uuids {
            current: r.u64()?,
            bitmap: r.u64()?,
            history: [r.u64()?, r.u64()?],
            dirty_bits: r.u64()?,
            flags: UuidFlags(r.u64()?),
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64(self.current);
        buf.put_u64(self.bitmap);
        buf.put_u64(self.history[0]);
        buf.put_u64(self.history[1]);
        buf.put_u64(self.dirty_bits);
        buf.put_u64(self.flags.0);
    }
}

/// P_SYNC_UUID payload size.
pub const SYNC_UUID_LEN: usize = 8;

pub(crate) fn decode_sync_uuid(header: &Header, payload: &[u8]) -> Result<u64, DecodeError> {
    expect_len(header.command, payload, SYNC_UUID_LEN)?;
    Reader::new(header.command, payload).u64()
}
