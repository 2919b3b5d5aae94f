//! Incremental decoding of a byte stream into frames.
//!
//! Feed whatever bytes have arrived; get back "need N bytes in total", one frame and how many
//! bytes it used, or an error. The decoder keeps no buffer of its own and never looks past the
//! announced length; an announced length above the configured maximum is refused as soon as
//! the header is complete, before the caller buffers (or allocates for) the payload.

use crate::command::Command;
use crate::error::DecodeError;
use crate::header::Header;
use bytes::Bytes;

use crate::packet::{Frame, Packet};
use crate::reader::Origin;
use crate::Dialect;

/// Outcome of one decode step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Not enough bytes: a whole frame needs `need` bytes (header included) from the start of
    /// the buffer.
    NeedMore { need: usize },
    /// One frame, which used the first `consumed` bytes of the buffer.
    Frame {
        frame: Frame,
        header: Header,
        consumed: usize,
    },
}

/// A stateless-per-call stream decoder configured with the dialect and a payload limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamDecoder {
    dialect: Dialect,
    max_payload: usize,
}

impl StreamDecoder {
    /// `max_payload`: the largest payload accepted (e.g. MAX_BIO_SIZE + digest + 28 on the
    /// data socket; far less on the meta socket).
    pub fn new(dialect: Dialect, max_payload: usize) -> StreamDecoder {
        StreamDecoder {
            dialect,
            max_payload,
        }
    }

    /// A limit for the data socket at this dialect: one maximal P_DATA with digest.
    pub fn data_socket(dialect: Dialect) -> StreamDecoder {
        let max = crate::MAX_BIO_SIZE + crate::data::P_TRIM_LEN + dialect.digest_len;
        StreamDecoder::new(dialect, max)
    }

    pub fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    /// Switch after feature negotiation or once the integrity algorithm is known.
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }

    /// Decodes the first frame in `buf`, if complete.
    pub fn decode(&self, buf: &[u8]) -> Result<Decoded, DecodeError> {
        self.decode_in(buf, Origin::default())
    }

    /// Like [`StreamDecoder::decode`], but byte fields (data, digests) are zero-copy slices of
    /// `buf` (for a receive buffer kept as `Bytes`, e.g. from `BytesMut::freeze`).
    pub fn decode_shared(&self, buf: &Bytes) -> Result<Decoded, DecodeError> {
        self.decode_in(buf, Origin(Some(buf)))
    }

    fn decode_in(&self, buf: &[u8], origin: Origin<'_>) -> Result<Decoded, DecodeError> {
        let header_size = self.dialect.header_size();
        if buf.len() < header_size {
            // Reject a wrong magic as soon as its bytes are there: no point waiting for more.
            self.check_magic_prefix(buf)?;
            return Ok(Decoded::NeedMore { need: header_size });
        }
        let header = Header::decode(self.dialect.apv, buf)?;
        let len = header.length as usize;
        if u64::from(header.length) > self.max_payload as u64 {
            return Err(DecodeError::TooLong {
                command: header.command,
                length: u64::from(header.length),
                max: self.max_payload,
            });
        }
        let total = header_size + len;
        let Some(payload) = buf.get(header_size..total) else {
            return Ok(Decoded::NeedMore { need: total });
        };
        let packet = Packet::decode_in(&header, payload, &self.dialect, origin)?;
        debug_assert!(total <= buf.len());
        Ok(Decoded::Frame {
            frame: Frame {
                volume: header.volume,
                packet,
            },
            header,
            consumed: total,
        })
    }

    /// Given fewer bytes than a header, fails early if they cannot start any valid header.
    fn check_magic_prefix(&self, buf: &[u8]) -> Result<(), DecodeError> {
        let candidates: &[&[u8]] = if self.dialect.apv >= 100 {
            &[&crate::header::MAGIC_100.to_be_bytes()]
        } else {
            &[
                &crate::header::MAGIC_80.to_be_bytes(),
                &crate::header::MAGIC_95.to_be_bytes(),
            ]
        };
        let ok = candidates.iter().any(|m| {
            let n = buf.len().min(m.len());
            buf[..n] == m[..n]
        });
        if ok {
            return Ok(());
        }
        let mut m = [0u8; 4];
        let n = buf.len().min(4);
        m[..n].copy_from_slice(&buf[..n]);
        Err(DecodeError::BadMagic(u32::from_be_bytes(m)))
    }
}

/// Decodes every complete frame in `buf` (handy in tests and tools). Returns the frames and
/// the number of bytes they used.
pub fn decode_all(dec: &StreamDecoder, mut buf: &[u8]) -> Result<(Vec<Frame>, usize), DecodeError> {
    let mut frames = Vec::new();
    let mut used = 0;
    while let Decoded::Frame {
        frame, consumed, ..
    } = dec.decode(buf)?
    {
        frames.push(frame);
        used += consumed;
        buf = &buf[consumed..];
    }
    Ok((frames, used))
}

/// The command a partial header announces, for error messages (best effort).
pub fn peek_command(dialect: &Dialect, buf: &[u8]) -> Option<Command> {
    Header::decode(dialect.apv, buf).ok().map(|h| h.command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Volume;

    #[test]
    fn asks_for_header_then_payload() {
        let d = Dialect::KERNEL_101;
        let dec = StreamDecoder::new(d, 4096);
        let bytes = Frame::new(Volume(3), Packet::State(crate::State::default()))
            .to_vec(&d)
            .unwrap();
        assert_eq!(
            dec.decode(&bytes[..5]).unwrap(),
            Decoded::NeedMore { need: 16 }
        );
        assert_eq!(
            dec.decode(&bytes[..17]).unwrap(),
            Decoded::NeedMore { need: 20 }
        );
        let Decoded::Frame {
            frame, consumed, ..
        } = dec.decode(&bytes).unwrap()
        else {
            panic!("frame expected")
        };
        assert_eq!(consumed, 20);
        assert_eq!(frame.volume, Volume(3));
    }

    #[test]
    fn rejects_announced_length_above_limit_before_payload_arrives() {
        let dec = StreamDecoder::new(Dialect::KERNEL_101, 1000);
        let hdr = [
            0x86, 0x20, 0xec, 0x20, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ];
        assert_eq!(
            dec.decode(&hdr),
            Err(DecodeError::TooLong {
                command: Command::DATA,
                length: 0xffff_ffff,
                max: 1000
            })
        );
    }

    #[test]
    fn shared_decode_slices_instead_of_copying() {
        let d = Dialect::KERNEL_101;
        let data = crate::Data {
            sector: 8,
            block_id: crate::BlockId::from_u64(1),
            seq_num: 1,
            dp_flags: crate::DpFlags(0),
            digest: Bytes::new(),
            data: Bytes::from(vec![7u8; 4096]),
        };
        let wire = Bytes::from(
            Frame::new(Volume(0), Packet::Data(data))
                .to_vec(&d)
                .unwrap(),
        );
        let dec = StreamDecoder::new(d, 1 << 20);
        let (Decoded::Frame { frame: a, .. }, Decoded::Frame { frame: b, .. }) = (
            dec.decode(&wire).unwrap(),
            dec.decode_shared(&wire).unwrap(),
        ) else {
            panic!("frames expected")
        };
        assert_eq!(a, b);
        let Packet::Data(shared) = &b.packet else {
            panic!()
        };
        // 16-byte header + 24-byte p_data precede the data in the same allocation.
        assert_eq!(shared.data.as_ptr(), wire[40..].as_ptr());
    }

    #[test]
    fn rejects_bad_magic_from_first_byte() {
        let dec = StreamDecoder::new(Dialect::INITIAL, 1000);
        assert!(matches!(dec.decode(&[0x47]), Err(DecodeError::BadMagic(_))));
        assert_eq!(dec.decode(&[0x83]).unwrap(), Decoded::NeedMore { need: 8 });
    }
}
