//! A bounds-checked big-endian reader over a payload. Every read that would run past the end
//! returns `DecodeError::Truncated` naming the command, so decoders never index blindly.

use crate::command::Command;
use crate::error::DecodeError;

pub(crate) struct Reader<'a> {
    command: Command,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(command: Command, buf: &'a [u8]) -> Self {
        Reader {
            command,
            buf,
            pos: 0,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated {
            command: self.command,
            need: usize::MAX,
            have: self.buf.len(),
        })?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated {
            command: self.command,
            need: end,
            have: self.buf.len(),
        })?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        s
    }
}

/// Where payload slices come from: with a shared `Bytes` buffer, byte fields are cheap
/// sub-slices of it (no copy); without, they are copied out.
#[derive(Clone, Copy, Default)]
pub(crate) struct Origin<'a>(pub(crate) Option<&'a bytes::Bytes>);

impl Origin<'_> {
    /// `s` must lie inside the origin buffer when there is one (all callers slice it from
    /// the payload that was taken from that buffer).
    pub(crate) fn bytes(&self, s: &[u8]) -> bytes::Bytes {
        match self.0 {
            Some(b) if s.is_empty() || contains(b, s) => b.slice_ref(s),
            _ => bytes::Bytes::copy_from_slice(s),
        }
    }
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    i >= o && i + inner.len() <= o + outer.len()
}
