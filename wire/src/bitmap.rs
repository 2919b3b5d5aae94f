//! Bitmap transfer (spec §11.2–11.4): plain P_BITMAP chunks of little-endian 64-bit words and
//! RLE+VLI P_COMPRESSED_BITMAP packets, plus a sender and a receiver that walk a bitmap the
//! way the kernel does (drbd_main.c: send_bitmap_rle_or_plain; drbd_receiver.c:
//! receive_bitmap), so the packet sequence matches a kernel's bit for bit.
//!
//! ```text
//! P_BITMAP:            word u64 LE, ... (min((4096 - header) / 8, words left) words; 0 = end)
//! P_COMPRESSED_BITMAP: encoding u8 | code bytes (LSB-first VLI stream)
//!   encoding bits 0-3: 2 (RLE_VLI_Bits), bits 4-6: pad bits at the end, bit 7: first run set
//! ```

use bytes::{BufMut, Bytes};

use crate::command::Command;
use crate::error::{bad_field, DecodeError, Expected};
use crate::header::Header;
use crate::packet::Packet;
use crate::reader::Origin;
use crate::vli::{self, BitReader, BitWriter};
use crate::SOCKET_BUFFER_SIZE;

/// RLE_VLI_Bits (drbd_protocol.h: enum drbd_bitmap_code), the only valid encoding.
pub const RLE_VLI_BITS: u8 = 2;

/// A plain P_BITMAP chunk.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PlainBitmap {
    pub words: Vec<u64>,
}

impl PlainBitmap {
    /// Words per packet for a header of `header_size` bytes (511 with h80, 510 with h100).
    pub const fn words_per_packet(header_size: usize) -> usize {
        (SOCKET_BUFFER_SIZE - header_size) / 8
    }

    pub fn decode(header: &Header, payload: &[u8]) -> Result<PlainBitmap, DecodeError> {
        let max = Self::words_per_packet(header.size()) * 8;
        if payload.len() % 8 != 0 || payload.len() > max {
            return Err(DecodeError::PayloadLength {
                command: header.command,
                expected: Expected::MultipleOf(8, max),
                got: payload.len(),
            });
        }
        let words = payload
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect();
        Ok(PlainBitmap { words })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        for w in &self.words {
            buf.put_u64_le(*w);
        }
    }
}

/// A P_COMPRESSED_BITMAP packet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CompressedBitmap {
    /// Bit 7 of the encoding byte: the first run counts set bits.
    pub first_run_set: bool,
    /// Unused bits at the end of the last code byte (0..=7).
    pub pad_bits: u8,
    /// The VLI bit stream.
    pub code: Bytes,
}

impl CompressedBitmap {
    pub fn decode(header: &Header, payload: &[u8]) -> Result<CompressedBitmap, DecodeError> {
        Self::decode_in(header, payload, Origin::default())
    }

    pub(crate) fn decode_in(
        header: &Header,
        payload: &[u8],
        origin: Origin<'_>,
    ) -> Result<CompressedBitmap, DecodeError> {
        let cmd = header.command;
        // drbd_receiver.c: receive_bitmap — more than the encoding byte, and the packet must
        // fit the 4 KiB socket buffer.
        let max = SOCKET_BUFFER_SIZE - header.size();
        if payload.len() < 2 || payload.len() > max {
            return Err(DecodeError::PayloadLength {
                command: cmd,
                expected: Expected::Between(2, max),
                got: payload.len(),
            });
        }
        let enc = payload[0];
        if enc & 0x0f != RLE_VLI_BITS {
            return Err(bad_field(
                cmd,
                "encoding",
                0,
                format!(
                    "unknown bitmap encoding {} (only 2, RLE_VLI_Bits)",
                    enc & 0x0f
                ),
            ));
        }
        Ok(CompressedBitmap {
            first_run_set: enc & 0x80 != 0,
            pad_bits: (enc >> 4) & 0x7,
            code: origin.bytes(&payload[1..]),
        })
    }

    pub fn encoding_byte(&self) -> u8 {
        RLE_VLI_BITS | (self.pad_bits & 0x7) << 4 | if self.first_run_set { 0x80 } else { 0 }
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.encoding_byte());
        buf.put_slice(&self.code);
    }

    /// The run lengths in the code stream, alternating from `first_run_set`.
    pub fn runs(&self) -> Result<Vec<u64>, BitmapError> {
        let mut r = BitReader::new(&self.code, self.pad_bits);
        let mut out = Vec::new();
        while r.remaining() > 0 {
            let (rl, bits) = vli::decode(r.peek64());
            if bits as usize > r.remaining() {
                return Err(BitmapError::TruncatedCode {
                    bit_offset: r.position(),
                });
            }
            r.skip(bits as usize);
            out.push(rl);
        }
        Ok(out)
    }
}

/// Why a bitmap packet could not be merged (the kernel drops the connection).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    #[error("P_BITMAP: want {want} bytes at word {word_offset}, got {got}")]
    PlainLength {
        word_offset: u64,
        want: usize,
        got: usize,
    },
    #[error("P_COMPRESSED_BITMAP: code ends inside a run length at code bit {bit_offset}")]
    TruncatedCode { bit_offset: usize },
    #[error("P_COMPRESSED_BITMAP: run ends at bit {end}, past the last bitmap bit {bm_bits}")]
    Overflow { end: u64, bm_bits: u64 },
    #[error("{0} is not a bitmap packet")]
    NotBitmap(Command),
    #[error("bitmap transfer already complete")]
    AlreadyDone,
}

/// Shared position bookkeeping (drbd_int.h: struct bm_xfer_ctx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct XferPos {
    bm_bits: u64,
    bm_words: u64,
    bit_offset: u64,
    word_offset: u64,
}

impl XferPos {
    fn new(bm_bits: u64) -> XferPos {
        XferPos {
            bm_bits,
            bm_words: bm_bits.div_ceil(64),
            bit_offset: 0,
            word_offset: 0,
        }
    }

    /// Advances by a plain chunk of `n` words.
    fn plain(&mut self, n: u64) {
        self.word_offset += n;
        self.bit_offset = (self.word_offset * 64).min(self.bm_bits);
    }

    /// Moves to a bit position after an RLE packet.
    fn rle(&mut self, bit: u64) {
        self.bit_offset = bit;
        self.word_offset = bit / 64;
    }

    fn plain_words(&self, header_size: usize) -> u64 {
        (PlainBitmap::words_per_packet(header_size) as u64)
            .min(self.bm_words.saturating_sub(self.word_offset))
    }
}

fn bit(bitmap: &[u64], i: u64) -> bool {
    let w = bitmap.get((i / 64) as usize).copied().unwrap_or(0);
    w >> (i % 64) & 1 != 0
}

/// First index >= `from` (and < `end`) whose bit equals `value`, or `end`.
fn find_next(bitmap: &[u64], from: u64, end: u64, value: bool) -> u64 {
    let mut i = from;
    while i < end {
        let word = bitmap.get((i / 64) as usize).copied().unwrap_or(0);
        let w = if value { word } else { !word } >> (i % 64);
        if w == 0 {
            // Nothing in the rest of this word; jump to the next word boundary.
            i = (i / 64 + 1) * 64;
            continue;
        }
        return (i + u64::from(w.trailing_zeros())).min(end);
    }
    end
}

/// Sends a bitmap as a kernel does: RLE packets while they compress, plain chunks otherwise,
/// and a zero-length P_BITMAP after a plain tail.
#[derive(Clone, Debug)]
pub struct BitmapSender {
    pos: XferPos,
    header_size: usize,
    use_rle: bool,
    done: bool,
}

impl BitmapSender {
    /// `use_rle` = the `use-rle` net option and apv >= 90.
    pub fn new(bm_bits: u64, header_size: usize, use_rle: bool) -> BitmapSender {
        BitmapSender {
            pos: XferPos::new(bm_bits),
            header_size,
            use_rle,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next packet, or `None` once the transfer is complete. `bitmap` holds at least
    /// ceil(bm_bits / 64) words (missing words count as zero).
    pub fn next_packet(&mut self, bitmap: &[u64]) -> Option<Packet> {
        if self.done {
            return None;
        }
        if self.use_rle && self.pos.bit_offset < self.pos.bm_bits {
            if let Some(c) = self.try_rle(bitmap) {
                if self.pos.bit_offset >= self.pos.bm_bits {
                    self.done = true;
                }
                return Some(Packet::CompressedBitmap(c));
            }
        }
        let n = self.pos.plain_words(self.header_size);
        let start = self.pos.word_offset;
        let words = (start..start + n)
            .map(|i| bitmap.get(i as usize).copied().unwrap_or(0))
            .collect::<Vec<_>>();
        self.pos.plain(n);
        if n == 0 {
            self.done = true;
        }
        Some(Packet::Bitmap(PlainBitmap { words }))
    }

    /// drbd_main.c: fill_bitmap_rle_bits. Returns `None` (and rewinds to a word boundary) when
    /// the runs do not compress.
    fn try_rle(&mut self, bitmap: &[u64]) -> Option<CompressedBitmap> {
        let cap = SOCKET_BUFFER_SIZE - self.header_size - 1;
        let mut w = BitWriter::new(cap);
        let end = self.pos.bm_bits;
        let start = self.pos.bit_offset;
        let mut at = start;
        let first_run_set = bit(bitmap, at);
        let mut value = first_run_set;
        while at < end {
            let next = find_next(bitmap, at, end, !value);
            let rl = next - at;
            debug_assert!(rl > 0);
            let Some((code, bits)) = vli::encode(rl) else {
                break;
            };
            if !w.put(code, bits) {
                break;
            }
            at = next;
            value = !value;
        }
        let plain_bits = at - start;
        let len = w.bit_len().div_ceil(8) as u64;
        if plain_bits < len * 8 {
            // Incompressible: the plain packet starts at the word holding the old position.
            self.pos.rle(start);
            self.pos.bit_offset = self.pos.word_offset * 64;
            return None;
        }
        self.pos.rle(at);
        let pad_bits = w.pad_bits();
        Some(CompressedBitmap {
            first_run_set,
            pad_bits,
            code: Bytes::from(w.into_bytes()),
        })
    }
}

/// Merges received bitmap packets into a local bitmap (OR), checking each packet as the
/// kernel does.
#[derive(Clone, Debug)]
pub struct BitmapReceiver {
    pos: XferPos,
    header_size: usize,
    done: bool,
}

impl BitmapReceiver {
    pub fn new(bm_bits: u64, header_size: usize) -> BitmapReceiver {
        BitmapReceiver {
            pos: XferPos::new(bm_bits),
            header_size,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// ORs one packet into `bitmap` (ceil(bm_bits / 64) words). Returns `true` when the
    /// transfer is complete.
    pub fn handle(&mut self, packet: &Packet, bitmap: &mut [u64]) -> Result<bool, BitmapError> {
        if self.done {
            return Err(BitmapError::AlreadyDone);
        }
        match packet {
            Packet::Bitmap(p) => {
                let want = self.pos.plain_words(self.header_size);
                if p.words.len() as u64 != want {
                    return Err(BitmapError::PlainLength {
                        word_offset: self.pos.word_offset,
                        want: want as usize * 8,
                        got: p.words.len() * 8,
                    });
                }
                if want == 0 {
                    self.done = true;
                    return Ok(true);
                }
                let start = self.pos.word_offset as usize;
                for (i, w) in p.words.iter().enumerate() {
                    if let Some(dst) = bitmap.get_mut(start + i) {
                        *dst |= w;
                    }
                }
                self.pos.plain(want);
                Ok(false)
            }
            Packet::CompressedBitmap(c) => {
                let mut s = self.pos.bit_offset;
                let mut set = c.first_run_set;
                for rl in c.runs()? {
                    let e = s.saturating_add(rl);
                    if e > self.pos.bm_bits {
                        return Err(BitmapError::Overflow {
                            end: e - 1,
                            bm_bits: self.pos.bm_bits,
                        });
                    }
                    if set {
                        set_bits(bitmap, s, e);
                    }
                    s = e;
                    set = !set;
                }
                self.pos.rle(s);
                self.done = s == self.pos.bm_bits;
                Ok(self.done)
            }
            other => Err(BitmapError::NotBitmap(other.command())),
        }
    }
}

/// Sets bits [from, to).
fn set_bits(bitmap: &mut [u64], from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let word = (i / 64) as usize;
        let lo = i % 64;
        let hi = (to - word as u64 * 64).min(64);
        let mask = if hi - lo == 64 {
            u64::MAX
        } else {
            ((1u64 << (hi - lo)) - 1) << lo
        };
        if let Some(w) = bitmap.get_mut(word) {
            *w |= mask;
        }
        i = word as u64 * 64 + hi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitmap_with(bm_bits: u64, set: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut v = vec![0u64; bm_bits.div_ceil(64) as usize];
        for i in set {
            v[(i / 64) as usize] |= 1 << (i % 64);
        }
        v
    }

    fn payload(c: &CompressedBitmap) -> Vec<u8> {
        let mut b = Vec::new();
        c.encode(&mut b);
        b
    }

    #[test]
    fn spec_vector_200_bits() {
        // Spec §11.4: bits 0-2, 10 and 64-127 set in a 200-bit bitmap.
        let bm = bitmap_with(200, [0, 1, 2, 10].into_iter().chain(64..128));
        let mut s = BitmapSender::new(200, 16, true);
        let Some(Packet::CompressedBitmap(c)) = s.next_packet(&bm) else {
            panic!("expected a compressed packet");
        };
        assert_eq!(
            payload(&c),
            [0xc2, 0x99, 0x7c, 0x04, 0xdf, 0xc3, 0x77, 0x01]
        );
        assert_eq!(c.runs().unwrap(), [3, 7, 1, 53, 64, 72]);
        assert!(s.is_done());
        assert_eq!(s.next_packet(&bm), None);
    }

    #[test]
    fn spec_vector_64_bits() {
        let bm = bitmap_with(64, [5, 6]);
        let mut s = BitmapSender::new(64, 8, true);
        let Some(Packet::CompressedBitmap(c)) = s.next_packet(&bm) else {
            panic!("expected a compressed packet");
        };
        assert_eq!(payload(&c), [0x32, 0xc3, 0x0f, 0x01]);
        assert!(s.is_done());
    }

    fn transfer(bm: &[u64], bm_bits: u64, hdr: usize, rle: bool) -> (Vec<u64>, Vec<Command>) {
        let mut s = BitmapSender::new(bm_bits, hdr, rle);
        let mut r = BitmapReceiver::new(bm_bits, hdr);
        let mut out = vec![0u64; bm_bits.div_ceil(64) as usize];
        let mut cmds = Vec::new();
        while let Some(p) = s.next_packet(bm) {
            cmds.push(p.command());
            let done = r.handle(&p, &mut out).unwrap();
            assert_eq!(done, s.is_done());
            assert!(cmds.len() < 10_000);
        }
        assert!(r.is_done());
        (out, cmds)
    }

    #[test]
    fn incompressible_bitmap_goes_plain_with_empty_terminator() {
        // Alternating bits do not compress: plain chunks, then a zero-length P_BITMAP.
        let bm_bits = 64 * 1200;
        let bm: Vec<u64> = vec![0x5555_5555_5555_5555; 1200];
        let (out, cmds) = transfer(&bm, bm_bits, 16, true);
        assert_eq!(out, bm);
        assert_eq!(
            cmds,
            [
                Command::BITMAP,
                Command::BITMAP,
                Command::BITMAP,
                Command::BITMAP
            ]
        );
    }

    #[test]
    fn mixed_bitmap_round_trips() {
        let bm_bits = 64 * 3000 + 17;
        let mut bm = bitmap_with(bm_bits, (1000..5000).chain([7, 9, 100_000]));
        // An incompressible stretch in the middle.
        for w in &mut bm[1000..1600] {
            *w = 0xa5a5_a5a5_a5a5_a5a5;
        }
        for (hdr, rle) in [(8, true), (16, true), (16, false)] {
            let (out, cmds) = transfer(&bm, bm_bits, hdr, rle);
            assert_eq!(out, bm, "hdr {hdr} rle {rle}");
            assert_eq!(cmds.contains(&Command::COMPRESSED_BITMAP), rle);
        }
    }

    #[test]
    fn empty_and_full_bitmaps() {
        let (out, cmds) = transfer(&[], 0, 16, true);
        assert!(out.is_empty());
        assert_eq!(cmds, [Command::BITMAP]);
        let bm_bits = 1 << 20;
        let bm = vec![u64::MAX; (bm_bits / 64) as usize];
        let (out, cmds) = transfer(&bm, bm_bits, 16, true);
        assert_eq!(out, bm);
        assert_eq!(cmds, [Command::COMPRESSED_BITMAP]);
    }

    #[test]
    fn rejects_run_past_end() {
        let c = CompressedBitmap {
            first_run_set: true,
            pad_bits: 5,
            code: Bytes::from_static(&[0x05]), // one code: 0b101 = run of 4
        };
        let mut r = BitmapReceiver::new(3, 16);
        let mut bm = vec![0u64; 1];
        assert!(matches!(
            r.handle(&Packet::CompressedBitmap(c), &mut bm),
            Err(BitmapError::Overflow { .. })
        ));
    }

    #[test]
    fn rejects_wrong_plain_length() {
        let mut r = BitmapReceiver::new(200, 16);
        let mut bm = vec![0u64; 4];
        let e = r
            .handle(&Packet::Bitmap(PlainBitmap { words: vec![1; 3] }), &mut bm)
            .unwrap_err();
        assert_eq!(
            e,
            BitmapError::PlainLength {
                word_offset: 0,
                want: 32,
                got: 24
            }
        );
    }
}
