//! A small private packet codec (headers §3, stream reassembly, payload helpers, bitmap RLE/VLI
//! §11.3). The shared `udrbd-wire` crate was not in the tree when the engine was started; this
//! module keeps the engine self-contained and byte-exact with the spec.

use bytes::{BufMut, Bytes, BytesMut};

/// `DRBD_MAGIC` (h80).
pub const MAGIC_80: u32 = 0x8374_0267;
/// `DRBD_MAGIC_BIG` (h95).
pub const MAGIC_95: u16 = 0x835a;
/// `DRBD_MAGIC_100` (h100).
pub const MAGIC_100: u32 = 0x8620_ec20;

/// Command codes (spec §4), kernel names.
pub mod cmd {
    pub const DATA: u16 = 0x00;
    pub const DATA_REPLY: u16 = 0x01;
    pub const RS_DATA_REPLY: u16 = 0x02;
    pub const BARRIER: u16 = 0x03;
    pub const BITMAP: u16 = 0x04;
    pub const UNPLUG_REMOTE: u16 = 0x07;
    pub const DATA_REQUEST: u16 = 0x08;
    pub const RS_DATA_REQUEST: u16 = 0x09;
    pub const SYNC_PARAM: u16 = 0x0a;
    pub const PROTOCOL: u16 = 0x0b;
    pub const UUIDS: u16 = 0x0c;
    pub const SIZES: u16 = 0x0d;
    pub const STATE: u16 = 0x0e;
    pub const SYNC_UUID: u16 = 0x0f;
    pub const AUTH_CHALLENGE: u16 = 0x10;
    pub const AUTH_RESPONSE: u16 = 0x11;
    pub const STATE_CHG_REQ: u16 = 0x12;
    pub const PING: u16 = 0x13;
    pub const PING_ACK: u16 = 0x14;
    pub const RECV_ACK: u16 = 0x15;
    pub const WRITE_ACK: u16 = 0x16;
    pub const RS_WRITE_ACK: u16 = 0x17;
    pub const SUPERSEDED: u16 = 0x18;
    pub const NEG_ACK: u16 = 0x19;
    pub const NEG_DREPLY: u16 = 0x1a;
    pub const NEG_RS_DREPLY: u16 = 0x1b;
    pub const BARRIER_ACK: u16 = 0x1c;
    pub const STATE_CHG_REPLY: u16 = 0x1d;
    pub const RS_IS_IN_SYNC: u16 = 0x22;
    pub const SYNC_PARAM89: u16 = 0x23;
    pub const COMPRESSED_BITMAP: u16 = 0x24;
    pub const DELAY_PROBE: u16 = 0x27;
    pub const OUT_OF_SYNC: u16 = 0x28;
    pub const RS_CANCEL: u16 = 0x29;
    pub const CONN_ST_CHG_REQ: u16 = 0x2a;
    pub const CONN_ST_CHG_REPLY: u16 = 0x2b;
    pub const RETRY_WRITE: u16 = 0x2c;
    pub const PROTOCOL_UPDATE: u16 = 0x2d;
    pub const TRIM: u16 = 0x31;
    pub const RS_THIN_REQ: u16 = 0x32;
    pub const RS_DEALLOCATED: u16 = 0x33;
    pub const WSAME: u16 = 0x34;
    pub const ZEROES: u16 = 0x36;
    pub const INITIAL_META: u16 = 0xfff1;
    pub const INITIAL_DATA: u16 = 0xfff2;
    pub const CONNECTION_FEATURES: u16 = 0xfffe;

    pub fn name(c: u16) -> &'static str {
        match c {
            DATA => "P_DATA",
            DATA_REPLY => "P_DATA_REPLY",
            RS_DATA_REPLY => "P_RS_DATA_REPLY",
            BARRIER => "P_BARRIER",
            BITMAP => "P_BITMAP",
            UNPLUG_REMOTE => "P_UNPLUG_REMOTE",
            DATA_REQUEST => "P_DATA_REQUEST",
            RS_DATA_REQUEST => "P_RS_DATA_REQUEST",
            SYNC_PARAM => "P_SYNC_PARAM",
            PROTOCOL => "P_PROTOCOL",
            UUIDS => "P_UUIDS",
            SIZES => "P_SIZES",
            STATE => "P_STATE",
            SYNC_UUID => "P_SYNC_UUID",
            AUTH_CHALLENGE => "P_AUTH_CHALLENGE",
            AUTH_RESPONSE => "P_AUTH_RESPONSE",
            STATE_CHG_REQ => "P_STATE_CHG_REQ",
            PING => "P_PING",
            PING_ACK => "P_PING_ACK",
            RECV_ACK => "P_RECV_ACK",
            WRITE_ACK => "P_WRITE_ACK",
            RS_WRITE_ACK => "P_RS_WRITE_ACK",
            SUPERSEDED => "P_SUPERSEDED",
            NEG_ACK => "P_NEG_ACK",
            NEG_DREPLY => "P_NEG_DREPLY",
            NEG_RS_DREPLY => "P_NEG_RS_DREPLY",
            BARRIER_ACK => "P_BARRIER_ACK",
            STATE_CHG_REPLY => "P_STATE_CHG_REPLY",
            RS_IS_IN_SYNC => "P_RS_IS_IN_SYNC",
            SYNC_PARAM89 => "P_SYNC_PARAM89",
            COMPRESSED_BITMAP => "P_COMPRESSED_BITMAP",
            DELAY_PROBE => "P_DELAY_PROBE",
            OUT_OF_SYNC => "P_OUT_OF_SYNC",
            RS_CANCEL => "P_RS_CANCEL",
            CONN_ST_CHG_REQ => "P_CONN_ST_CHG_REQ",
            CONN_ST_CHG_REPLY => "P_CONN_ST_CHG_REPLY",
            RETRY_WRITE => "P_RETRY_WRITE",
            PROTOCOL_UPDATE => "P_PROTOCOL_UPDATE",
            TRIM => "P_TRIM",
            RS_THIN_REQ => "P_RS_THIN_REQ",
            RS_DEALLOCATED => "P_RS_DEALLOCATED",
            WSAME => "P_WSAME",
            ZEROES => "P_ZEROES",
            INITIAL_META => "P_INITIAL_META",
            INITIAL_DATA => "P_INITIAL_DATA",
            CONNECTION_FEATURES => "P_CONNECTION_FEATURES",
            _ => "P_UNKNOWN",
        }
    }
}

/// `ID_SYNCER`: block_id of resync traffic.
pub const ID_SYNCER: u64 = u64::MAX;

/// `dp_flags` bits (spec §6.1).
pub mod dp {
    pub const RW_SYNC: u32 = 2;
    pub const MAY_SET_IN_SYNC: u32 = 4;
    pub const FUA: u32 = 16;
    pub const FLUSH: u32 = 32;
    pub const DISCARD: u32 = 64;
    pub const SEND_RECEIVE_ACK: u32 = 128;
    pub const SEND_WRITE_ACK: u32 = 256;
}

/// One received packet: header fields and the whole payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub cmd: u16,
    pub volume: u16,
    pub payload: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad packet magic 0x{0:08x}")]
    BadMagic(u32),
    #[error("h100 header with non-zero pad 0x{0:08x}")]
    BadPad(u32),
    #[error("{what} header while protocol {apv} requires {expect}")]
    WrongHeader {
        what: &'static str,
        apv: u32,
        expect: &'static str,
    },
    #[error("packet {cmd} of {len} bytes exceeds the limit {max}")]
    TooLong {
        cmd: &'static str,
        len: u32,
        max: u32,
    },
}

/// Reassembles packets from one socket's byte stream.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: BytesMut,
}

/// The largest payload we accept: 1 MiB of data plus a struct and a digest.
const MAX_PAYLOAD: u32 = (1 << 20) + 4096;

impl StreamDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Next whole packet. `apv` 0 means "not yet negotiated" (h80 only).
    pub fn next(&mut self, apv: u32) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let b = &self.buf[..];
        let m32 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let m16 = u16::from_be_bytes([b[0], b[1]]);
        let (hlen, cmd, volume, len) = if m32 == MAGIC_100 {
            if apv < 100 {
                return Err(FrameError::WrongHeader {
                    what: "h100",
                    apv,
                    expect: "h80/h95",
                });
            }
            if b.len() < 16 {
                return Ok(None);
            }
            let pad = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
            if pad != 0 {
                return Err(FrameError::BadPad(pad));
            }
            (
                16,
                u16::from_be_bytes([b[6], b[7]]),
                u16::from_be_bytes([b[4], b[5]]),
                u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            )
        } else if m32 == MAGIC_80 {
            let cmd = u16::from_be_bytes([b[4], b[5]]);
            // Features and initial packets always use h80; afterwards apv ≥ 100 requires h100.
            if apv >= 100 && cmd != cmd::CONNECTION_FEATURES {
                return Err(FrameError::WrongHeader {
                    what: "h80",
                    apv,
                    expect: "h100",
                });
            }
            (8, cmd, 0, u16::from_be_bytes([b[6], b[7]]) as u32)
        } else if m16 == MAGIC_95 {
            if !(95..100).contains(&apv) {
                return Err(FrameError::WrongHeader {
                    what: "h95",
                    apv,
                    expect: "h80/h100",
                });
            }
            (
                8,
                u16::from_be_bytes([b[2], b[3]]),
                0,
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            )
        } else {
            return Err(FrameError::BadMagic(m32));
        };
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong {
                cmd: cmd::name(cmd),
                len,
                max: MAX_PAYLOAD,
            });
        }
        let total = hlen + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut pkt = self.buf.split_to(total);
        let payload = pkt.split_off(hlen).freeze();
        Ok(Some(Frame {
            cmd,
            volume,
            payload,
        }))
    }
}

/// Header size for `apv` (0 = before negotiation).
pub fn header_len(apv: u32) -> usize {
    if apv >= 100 {
        16
    } else {
        8
    }
}

/// Encodes one packet with the header `apv` calls for (spec §3).
pub fn frame(apv: u32, command: u16, volume: u16, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + payload.len());
    put_header(&mut b, apv, command, volume, payload.len() as u32);
    b.extend_from_slice(payload);
    b.freeze()
}

pub fn put_header(b: &mut BytesMut, apv: u32, command: u16, volume: u16, len: u32) {
    if apv >= 100 && command != cmd::CONNECTION_FEATURES {
        b.put_u32(MAGIC_100);
        b.put_u16(volume);
        b.put_u16(command);
        b.put_u32(len);
        b.put_u32(0);
    } else if apv >= 95 && len > 32768 {
        b.put_u16(MAGIC_95);
        b.put_u16(command);
        b.put_u32(len);
    } else {
        debug_assert!(len <= 0xffff);
        b.put_u32(MAGIC_80);
        b.put_u16(command);
        b.put_u16(len as u16);
    }
}

/// Big-endian field reader over a payload, reporting truncation instead of panicking.
pub struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(s)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_be_bytes(a)
        })
    }
    pub fn raw8(&mut self) -> Option<[u8; 8]> {
        self.take(8).map(|s| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            a
        })
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        self.take(n)
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.b[self.pos.min(self.b.len())..]
    }
}

/// A NUL-padded / NUL-terminated string field as text (lossy, for comparison and logs).
pub fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

// ---- bitmap RLE + VLI (spec §11.3) ----

/// Encodes `value` (≥ 1) as one VLI code: (bits, code).
fn vli_encode(value: u64) -> Option<(u32, u64)> {
    // (total bits, prefix_len, prefix, base, max)
    const LEVELS: [(u32, u32, u64, u64, u64); 10] = [
        (2, 1, 0x0, 1, 2),
        (3, 2, 0x1, 3, 4),
        (5, 3, 0x3, 5, 8),
        (7, 4, 0x7, 9, 16),
        (10, 5, 0xf, 17, 48),
        (14, 6, 0x1f, 49, 304),
        (21, 8, 0x3f, 305, 8496),
        (29, 8, 0x7f, 8497, 2_105_648),
        (42, 8, 0xbf, 2_105_649, 17_181_974_832),
        (64, 8, 0xff, 17_181_974_833, (1u64 << 56) + 17_181_974_832),
    ];
    for (total, plen, prefix, base, max) in LEVELS {
        if value >= base && value <= max {
            return Some((total, ((value - base) << plen) | prefix));
        }
    }
    None
}

/// Decodes one VLI code from the low bits of `w`: (bits consumed, value).
fn vli_decode(w: u64) -> Option<(u32, u64)> {
    if w & 1 == 0 {
        return Some((2, 1 + ((w >> 1) & 1)));
    }
    if w & 3 == 1 {
        return Some((3, 3 + ((w >> 2) & 1)));
    }
    if w & 7 == 3 {
        return Some((5, 5 + ((w >> 3) & 3)));
    }
    if w & 0xf == 7 {
        return Some((7, 9 + ((w >> 4) & 7)));
    }
    if w & 0x1f == 0xf {
        return Some((10, 17 + ((w >> 5) & 0x1f)));
    }
    if w & 0x3f == 0x1f {
        return Some((14, 49 + ((w >> 6) & 0xff)));
    }
    match w & 0xff {
        0x3f => Some((21, 305 + ((w >> 8) & 0x1fff))),
        0x7f => Some((29, 8497 + ((w >> 8) & 0x1f_ffff))),
        0xbf => Some((42, 2_105_649 + ((w >> 8) & 0x3_ffff_ffff))),
        0xff => Some((64, 17_181_974_833 + (w >> 8))),
        _ => None,
    }
}

struct BitWriter {
    out: Vec<u8>,
    cur: u64,
    nbits: u32,
    limit_bytes: usize,
}

impl BitWriter {
    fn put(&mut self, bits: u32, code: u64) -> bool {
        let total = self.out.len() * 8 + self.nbits as usize + bits as usize;
        if total > self.limit_bytes * 8 {
            return false;
        }
        let mut bits = bits;
        let mut code = code;
        while bits > 0 {
            let room = 64 - self.nbits;
            let n = bits.min(room);
            let part = if n == 64 {
                code
            } else {
                code & ((1u64 << n) - 1)
            };
            self.cur |= part << self.nbits;
            self.nbits += n;
            bits -= n;
            code = if n == 64 { 0 } else { code >> n };
            while self.nbits >= 8 {
                self.out.push(self.cur as u8);
                self.cur >>= 8;
                self.nbits -= 8;
            }
        }
        true
    }
}

fn bit_at(words: &[u64], i: u64) -> bool {
    (words[(i / 64) as usize] >> (i % 64)) & 1 == 1
}

/// Tries to RLE-encode bits `start..nbits` into at most `max_code_bytes` code bytes.
/// Returns (payload incl. the encoding byte, next bit position) or None when the packet would
/// cover fewer bits than a plain packet would carry (incompressible, spec §11.2).
pub fn rle_encode(
    words: &[u64],
    nbits: u64,
    start: u64,
    max_code_bytes: usize,
) -> Option<(Vec<u8>, u64)> {
    if start >= nbits {
        return None;
    }
    let first = bit_at(words, start);
    let mut w = BitWriter {
        out: Vec::new(),
        cur: 0,
        nbits: 0,
        limit_bytes: max_code_bytes,
    };
    let mut pos = start;
    let mut val = first;
    while pos < nbits {
        let mut end = pos;
        while end < nbits && bit_at(words, end) == val {
            end += 1;
        }
        let run = end - pos;
        let Some((bits, code)) = vli_encode(run) else {
            break;
        };
        if !w.put(bits, code) {
            break;
        }
        pos = end;
        val = !val;
    }
    let mut code = w.out;
    let pad = if w.nbits > 0 {
        code.push(w.cur as u8);
        8 - w.nbits
    } else {
        0
    };
    // Incompressible: the codes cover fewer bitmap bits than they take (kernel fill_bitmap_rle_bits).
    if code.is_empty() || pos - start < code.len() as u64 * 8 {
        return None;
    }
    let mut payload = Vec::with_capacity(code.len() + 1);
    payload.push(((first as u8) << 7) | ((pad as u8) << 4) | 2);
    payload.extend_from_slice(&code);
    Some((payload, pos))
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("compressed bitmap encoding {0} is not RLE_VLI_Bits (2)")]
    Encoding(u8),
    #[error("compressed bitmap has an invalid VLI code at bit {0}")]
    BadCode(u64),
    #[error("compressed bitmap run ends at bit {end}, past the bitmap's {nbits} bits")]
    PastEnd { end: u64, nbits: u64 },
}

/// Decodes a `P_COMPRESSED_BITMAP` payload, setting bits in `words` (OR) from `start`.
/// Returns the next bit position.
pub fn rle_decode(
    payload: &[u8],
    words: &mut [u64],
    nbits: u64,
    start: u64,
) -> Result<u64, RleError> {
    let Some((&enc, code)) = payload.split_first() else {
        return Err(RleError::Encoding(0));
    };
    if enc & 0x0f != 2 {
        return Err(RleError::Encoding(enc & 0x0f));
    }
    let pad = ((enc >> 4) & 7) as u64;
    let mut val = enc & 0x80 != 0;
    let total_bits = (code.len() as u64 * 8).saturating_sub(pad);
    let mut bitpos = 0u64;
    let mut pos = start;
    while bitpos < total_bits {
        // Gather the next 64 stream bits (LSB first).
        let mut w = 0u64;
        for k in 0..64u64 {
            let bp = bitpos + k;
            if bp >= code.len() as u64 * 8 {
                break;
            }
            if (code[(bp / 8) as usize] >> (bp % 8)) & 1 == 1 {
                w |= 1 << k;
            }
        }
        let (bits, run) = vli_decode(w).ok_or(RleError::BadCode(bitpos))?;
        if bitpos + bits as u64 > total_bits {
            return Err(RleError::BadCode(bitpos));
        }
        bitpos += bits as u64;
        let end = pos + run;
        if end > nbits {
            return Err(RleError::PastEnd { end, nbits });
        }
        if val {
            for i in pos..end {
                words[(i / 64) as usize] |= 1 << (i % 64);
            }
        }
        pos = end;
        val = !val;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vli_matches_kernel_vectors() {
        // spec §11.4 (generated with the kernel's encoder).
        let v: [(u64, u32, u64); 8] = [
            (1, 2, 0x0),
            (2, 2, 0x2),
            (4, 3, 0x5),
            (8, 5, 0x1b),
            (16, 7, 0x77),
            (304, 14, 0x3fdf),
            (8496, 21, 0x1fff3f),
            (1_000_000_000, 42, 0x3b7aa8cfbf),
        ];
        for (value, bits, code) in v {
            assert_eq!(vli_encode(value), Some((bits, code)), "value {value}");
            assert_eq!(vli_decode(code), Some((bits, value)), "value {value}");
        }
    }

    #[test]
    fn rle_matches_spec_examples() {
        // 200-bit bitmap, bits 0–2, 10 and 64–127 set → c2 99 7c 04 df c3 77 01 (spec §11.4).
        let mut words = vec![0u64; 4];
        words[0] = 0b111 | 1 << 10;
        words[1] = u64::MAX;
        let (p, next) = rle_encode(&words, 200, 0, 4000).expect("compressible");
        assert_eq!(p, [0xc2, 0x99, 0x7c, 0x04, 0xdf, 0xc3, 0x77, 0x01]);
        assert_eq!(next, 200);
        let mut back = vec![0u64; 4];
        assert_eq!(rle_decode(&p, &mut back, 200, 0), Ok(200));
        assert_eq!(back, words);
        // 64-bit bitmap with bits 5–6 set → 32 c3 0f 01.
        let words = vec![0b110_0000u64];
        let (p, _) = rle_encode(&words, 64, 0, 4000).expect("compressible");
        assert_eq!(p, [0x32, 0xc3, 0x0f, 0x01]);
    }

    #[test]
    fn rejects_run_past_end() {
        let mut w = vec![0u64; 1];
        assert!(matches!(
            rle_decode(&[0x32, 0xc3, 0x0f, 0x01], &mut w, 10, 0),
            Err(RleError::PastEnd { .. })
        ));
    }

    #[test]
    fn decoder_reassembles_split_packets() {
        let p = frame(101, cmd::PING, 0, &[]);
        let mut d = StreamDecoder::default();
        d.push(&p[..5]);
        assert_eq!(d.next(101), Ok(None));
        d.push(&p[5..]);
        let f = d.next(101).expect("valid").expect("whole");
        assert_eq!(f.cmd, cmd::PING);
        assert!(f.payload.is_empty());
    }

    #[test]
    fn rejects_bad_magic() {
        let mut d = StreamDecoder::default();
        d.push(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        assert_eq!(d.next(0), Err(FrameError::BadMagic(0xdeadbeef)));
    }
}
