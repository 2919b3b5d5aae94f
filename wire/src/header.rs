//! The three packet headers (spec §3) and the rule that picks one for an agreed protocol
//! version.
//!
//! ```text
//! h80  (8):  magic u32 0x83740267 | command u16 | length u16
//! h95  (8):  magic u16 0x835a     | command u16 | length u32
//! h100 (16): magic u32 0x8620ec20 | volume u16 | command u16 | length u32 | pad u32 (= 0)
//! ```

use bytes::BufMut;

use crate::command::Command;
use crate::error::{DecodeError, EncodeError};
use crate::Volume;

/// DRBD_MAGIC (drbd.h): the h80 magic.
pub const MAGIC_80: u32 = 0x8374_0267;
/// DRBD_MAGIC_BIG (drbd.h): the h95 magic (16 bits).
pub const MAGIC_95: u16 = 0x835a;
/// DRBD_MAGIC_100 (drbd.h): the h100 magic.
pub const MAGIC_100: u32 = 0x8620_ec20;
/// DRBD_MAX_SIZE_H80_PACKET (drbd_int.h): above this payload size a 95..99 sender uses h95.
pub const MAX_SIZE_H80_PACKET: usize = 0x8000;

/// Which of the three header layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderKind {
    H80,
    H95,
    H100,
}

/// A decoded packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    pub kind: HeaderKind,
    /// Always 0 for h80/h95.
    pub volume: Volume,
    pub command: Command,
    /// Payload bytes following the header.
    pub length: u32,
}

impl HeaderKind {
    /// Bytes on the wire.
    pub const fn size(self) -> usize {
        match self {
            HeaderKind::H80 | HeaderKind::H95 => 8,
            HeaderKind::H100 => 16,
        }
    }

    /// Largest payload the length field can carry.
    pub const fn max_payload(self) -> u64 {
        match self {
            HeaderKind::H80 => u16::MAX as u64,
            HeaderKind::H95 | HeaderKind::H100 => u32::MAX as u64,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            HeaderKind::H80 => "h80",
            HeaderKind::H95 => "h95",
            HeaderKind::H100 => "h100",
        }
    }

    /// The header a kernel sender uses at agreed protocol version `apv` for a payload of
    /// `len` bytes (drbd_main.c: prepare_header). Before feature negotiation apv is 80.
    pub fn for_sending(apv: u32, len: usize) -> HeaderKind {
        if apv >= 100 {
            HeaderKind::H100
        } else if apv >= 95 && len > MAX_SIZE_H80_PACKET {
            HeaderKind::H95
        } else {
            HeaderKind::H80
        }
    }

    /// Whether a receiver at `apv` accepts this header (drbd_receiver.c: decode_header): the
    /// header size follows apv (16 from 100 on, else 8), and an 8-byte header may be either
    /// h80 or h95.
    pub fn accepted_at(self, apv: u32) -> bool {
        match self {
            HeaderKind::H100 => apv >= 100,
            HeaderKind::H80 | HeaderKind::H95 => apv < 100,
        }
    }

    /// Header kinds that may carry a payload of `len` bytes at `apv`, as a sender of that
    /// version might produce them (for tests: h95 is legal for any size from 95 on).
    pub fn possible(apv: u32, len: usize) -> Vec<HeaderKind> {
        if apv >= 100 {
            vec![HeaderKind::H100]
        } else if apv >= 95 {
            let mut v = vec![HeaderKind::H95];
            if len <= MAX_SIZE_H80_PACKET {
                v.insert(0, HeaderKind::H80);
            }
            v
        } else {
            vec![HeaderKind::H80]
        }
    }
}

const _: () = assert!(HeaderKind::H80.size() == 8);
const _: () = assert!(HeaderKind::H95.size() == 8);
const _: () = assert!(HeaderKind::H100.size() == 16);

impl Header {
    /// Builds the header a kernel sender at `apv` would use.
    pub fn for_sending(
        apv: u32,
        volume: Volume,
        command: Command,
        len: usize,
    ) -> Result<Header, EncodeError> {
        Header::with_kind(HeaderKind::for_sending(apv, len), volume, command, len)
    }

    /// Builds a header of an explicit kind, checking that the volume and length fit.
    pub fn with_kind(
        kind: HeaderKind,
        volume: Volume,
        command: Command,
        len: usize,
    ) -> Result<Header, EncodeError> {
        if kind != HeaderKind::H100 && volume.0 != 0 {
            return Err(EncodeError::VolumeNeedsH100 {
                command,
                volume: volume.0,
            });
        }
        if len as u64 > kind.max_payload() {
            return Err(EncodeError::PayloadTooLong {
                command,
                header: kind.name(),
                len,
                max: kind.max_payload(),
            });
        }
        Ok(Header {
            kind,
            volume,
            command,
            // Fits: checked against max_payload just above.
            length: len as u32,
        })
    }

    pub fn size(&self) -> usize {
        self.kind.size()
    }

    /// Decodes a header as a receiver at `apv` does. Needs `header_size(apv)` bytes; fewer
    /// gives `Truncated`.
    pub fn decode(apv: u32, buf: &[u8]) -> Result<Header, DecodeError> {
        let size = header_size(apv);
        let Some(h) = buf.get(..size) else {
            return Err(DecodeError::Truncated {
                command: Command(0xffff),
                need: size,
                have: buf.len(),
            });
        };
        let magic32 = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        if size == 16 {
            // drbd_receiver.c: decode_header — apv >= 100 takes only h100, pad must be 0.
            if magic32 != MAGIC_100 {
                return Err(DecodeError::BadMagic(magic32));
            }
            let pad = be32(12);
            if pad != 0 {
                return Err(DecodeError::HeaderPad { pad });
            }
            return Ok(Header {
                kind: HeaderKind::H100,
                volume: Volume(be16(4)),
                command: Command(be16(6)),
                length: be32(8),
            });
        }
        // 8-byte headers: h95 is recognised by its 16-bit magic, h80 by its 32-bit one.
        if be16(0) == MAGIC_95 {
            return Ok(Header {
                kind: HeaderKind::H95,
                volume: Volume(0),
                command: Command(be16(2)),
                length: be32(4),
            });
        }
        if magic32 == MAGIC_80 {
            return Ok(Header {
                kind: HeaderKind::H80,
                volume: Volume(0),
                command: Command(be16(4)),
                length: u32::from(be16(6)),
            });
        }
        Err(DecodeError::BadMagic(magic32))
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        match self.kind {
            HeaderKind::H80 => {
                debug_assert_eq!(self.volume.0, 0);
                buf.put_u32(MAGIC_80);
                buf.put_u16(self.command.0);
                // Checked in with_kind; a hand-built Header with a larger length is truncated.
                buf.put_u16(self.length as u16);
            }
            HeaderKind::H95 => {
                debug_assert_eq!(self.volume.0, 0);
                buf.put_u16(MAGIC_95);
                buf.put_u16(self.command.0);
                buf.put_u32(self.length);
            }
            HeaderKind::H100 => {
                buf.put_u32(MAGIC_100);
                buf.put_u16(self.volume.0);
                buf.put_u16(self.command.0);
                buf.put_u32(self.length);
                buf.put_u32(0);
            }
        }
    }
}

/// Header size a receiver at `apv` reads (drbd_int.h: drbd_header_size).
pub const fn header_size(apv: u32) -> usize {
    if apv >= 100 {
        16
    } else {
        8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_rule_follows_spec_section_3() {
        assert_eq!(HeaderKind::for_sending(80, 72), HeaderKind::H80);
        assert_eq!(HeaderKind::for_sending(94, 0x8001), HeaderKind::H80);
        assert_eq!(HeaderKind::for_sending(95, 0x8000), HeaderKind::H80);
        assert_eq!(HeaderKind::for_sending(95, 0x8001), HeaderKind::H95);
        assert_eq!(HeaderKind::for_sending(99, 0x10000), HeaderKind::H95);
        assert_eq!(HeaderKind::for_sending(100, 0), HeaderKind::H100);
        assert_eq!(HeaderKind::for_sending(101, 0x8001), HeaderKind::H100);
    }

    #[test]
    fn receiver_between_95_and_99_accepts_h80_and_h95() {
        let h80 = [0x83, 0x74, 0x02, 0x67, 0x00, 0x13, 0x00, 0x00];
        let h95 = [0x83, 0x5a, 0x00, 0x13, 0x00, 0x00, 0x00, 0x00];
        for apv in [86, 95, 99] {
            assert_eq!(Header::decode(apv, &h80).unwrap().kind, HeaderKind::H80);
            assert_eq!(Header::decode(apv, &h95).unwrap().kind, HeaderKind::H95);
        }
    }

    #[test]
    fn rejects_h80_at_protocol_100() {
        let mut b = vec![0x83, 0x74, 0x02, 0x67, 0x00, 0x13, 0x00, 0x00];
        b.extend_from_slice(&[0; 8]);
        assert_eq!(
            Header::decode(101, &b),
            Err(DecodeError::BadMagic(MAGIC_80))
        );
    }

    #[test]
    fn rejects_nonzero_h100_pad() {
        let b = [
            0x86, 0x20, 0xec, 0x20, 0, 0, 0, 0x13, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        assert_eq!(
            Header::decode(100, &b),
            Err(DecodeError::HeaderPad { pad: 1 })
        );
    }

    #[test]
    fn rejects_bad_magic() {
        assert_eq!(
            Header::decode(90, &[1, 2, 3, 4, 5, 6, 7, 8]),
            Err(DecodeError::BadMagic(0x0102_0304))
        );
    }

    #[test]
    fn rejects_truncated_header() {
        assert!(matches!(
            Header::decode(101, &[0x86, 0x20, 0xec]),
            Err(DecodeError::Truncated {
                need: 16,
                have: 3,
                ..
            })
        ));
    }

    #[test]
    fn volume_needs_h100() {
        assert!(matches!(
            Header::for_sending(99, Volume(1), Command::STATE, 4),
            Err(EncodeError::VolumeNeedsH100 { volume: 1, .. })
        ));
        assert!(matches!(
            Header::with_kind(HeaderKind::H80, Volume(0), Command::DATA, 70000),
            Err(EncodeError::PayloadTooLong { .. })
        ));
    }
}
