//! What can be wrong with bytes from a peer (`DecodeError`) and with a packet we were asked to
//! send (`EncodeError`). Decode errors name the command, the field and the byte offset inside
//! the payload, so a log line is enough to find the culprit in a capture.

use std::fmt;

use crate::command::Command;

/// What the kernel would have accepted for a payload length (spec §5, "len" column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this many bytes.
    Exactly(usize),
    /// At least this many bytes.
    AtLeast(usize),
    /// Between the two bounds, inclusive.
    Between(usize, usize),
    /// One of two exact sizes.
    OneOf(usize, usize),
    /// A whole number of units of this size, at most the second value in total.
    MultipleOf(usize, usize),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Expected::Exactly(n) => write!(f, "exactly {n}"),
            Expected::AtLeast(n) => write!(f, "at least {n}"),
            Expected::Between(a, b) => write!(f, "{a}..={b}"),
            Expected::OneOf(a, b) => write!(f, "{a} or {b}"),
            Expected::MultipleOf(u, max) => write!(f, "a multiple of {u} up to {max}"),
        }
    }
}

/// Bytes that do not form a valid packet. Sorted as rustls does: everything here is "the bytes
/// are wrong"; whether that ends the connection is the engine's call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a complete header or payload needs. From the stream decoder this is
    /// never returned (it asks for more instead); from `Packet::decode` it means the caller
    /// passed a short payload.
    #[error("{command}: truncated, need {need} bytes, have {have}")]
    Truncated {
        command: Command,
        need: usize,
        have: usize,
    },
    /// The first bytes match no header magic allowed for the agreed protocol version.
    #[error("bad header magic 0x{0:08x}")]
    BadMagic(u32),
    /// An h100 header whose pad word is not zero (drbd_receiver.c: decode_header).
    #[error("h100 header pad is 0x{pad:08x}, must be 0")]
    HeaderPad { pad: u32 },
    /// The announced payload length breaks the kernel's length rule for this command.
    #[error("{command}: payload length {got}, expected {expected}")]
    PayloadLength {
        command: Command,
        expected: Expected,
        got: usize,
    },
    /// The announced payload length is above the configured maximum; refused before any
    /// allocation.
    #[error("{command}: announced payload length {length} exceeds the limit of {max} bytes")]
    TooLong {
        command: Command,
        length: u64,
        max: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{command}: field {field} at payload offset {offset}: {reason}")]
    BadField {
        command: Command,
        field: &'static str,
        offset: usize,
        reason: String,
    },
}

/// A packet that cannot be put on the wire as asked (caller error, never peer input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload does not fit the length field of the header the agreed version requires.
    #[error("{command}: payload of {len} bytes does not fit a {header} header (max {max})")]
    PayloadTooLong {
        command: Command,
        header: &'static str,
        len: usize,
        max: u64,
    },
    /// Only the h100 header carries a volume number (apv >= 100).
    #[error("{command}: volume {volume} needs protocol 100 or later (h100 header)")]
    VolumeNeedsH100 { command: Command, volume: u16 },
    /// A field value that the wire format cannot carry.
    #[error("{command}: field {field}: {reason}")]
    BadField {
        command: Command,
        field: &'static str,
        reason: String,
    },
}

pub(crate) fn bad_field(
    command: Command,
    field: &'static str,
    offset: usize,
    reason: impl Into<String>,
) -> DecodeError {
    DecodeError::BadField {
        command,
        field,
        offset,
        reason: reason.into(),
    }
}

/// Checks an exact payload length.
pub(crate) fn expect_len(command: Command, payload: &[u8], n: usize) -> Result<(), DecodeError> {
    if payload.len() != n {
        return Err(DecodeError::PayloadLength {
            command,
            expected: Expected::Exactly(n),
            got: payload.len(),
        });
    }
    Ok(())
}

/// Checks a minimum payload length.
pub(crate) fn expect_min(command: Command, payload: &[u8], n: usize) -> Result<(), DecodeError> {
    if payload.len() < n {
        return Err(DecodeError::PayloadLength {
            command,
            expected: Expected::AtLeast(n),
            got: payload.len(),
        });
    }
    Ok(())
}
