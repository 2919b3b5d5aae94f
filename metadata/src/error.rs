//! One error type for the crate; every variant names the field, the value and where it was found.

use std::io;

/// Everything that can go wrong reading, validating or writing v08 meta-data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device (or meta-data device) cannot hold what was asked of it.
    #[error("device too small: {what} needs {need_bytes} bytes, device has {have_bytes} bytes")]
    DeviceTooSmall {
        what: &'static str,
        need_bytes: u64,
        have_bytes: u64,
    },
    /// The superblock does not carry a v08 magic.
    #[error("superblock at byte offset {offset:#x}: magic {found:#010x} is not a v08 magic (expected 0x8374026b or 0x8374026c)")]
    BadMagic { offset: u64, found: u32 },
    /// A superblock field is inconsistent with the layout or with the kernel's attach checks.
    #[error("superblock at byte offset {offset:#x}: field {field} = {found}, expected {expected}")]
    BadField {
        offset: u64,
        field: &'static str,
        found: String,
        expected: String,
    },
    /// A buffer had the wrong length for the structure it should hold.
    #[error("{what}: need {need} bytes, got {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// An argument from the caller is out of range.
    #[error("invalid {field}: {value} ({reason})")]
    InvalidArgument {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// The activity log could not be interpreted (§4.4 of the spec).
    #[error("activity log at byte offset {offset:#x}: {reason}")]
    ActivityLog { offset: u64, reason: String },
    /// The activity log has no free or idle slot for a new extent.
    #[error("activity log: all {slots} slots hold extents with I/O in flight")]
    AlBusy { slots: u32 },
    /// A transaction was requested while the previous one is not yet on disk.
    #[error("activity log: transaction {tr_number} is still in flight")]
    AlInFlight { tr_number: u32 },
    /// A dump-md text could not be parsed.
    #[error(transparent)]
    Parse(#[from] crate::dump::ParseError),
    /// An I/O operation on the device failed.
    #[error("{op} of {len} bytes at byte offset {offset:#x} failed: {source}")]
    Io {
        op: &'static str,
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, offset: u64, len: usize) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io {
            op,
            offset,
            len,
            source,
        }
    }
}
