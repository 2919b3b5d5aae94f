//! The variable-length integer code and LSB-first bit streams of P_COMPRESSED_BITMAP
//! (spec §11.3, drbd_vli.h). A code is `((value - base) << prefix_len) | prefix`, and its
//! `total` low bits go into the stream least-significant bit first.
//!
//! ```text
//! level total prefix_len prefix  values
//!   1     2      1       0b0     1..=2
//!   2     3      2       0b01    3..=4
//!   3     5      3       0b011   5..=8
//!   4     7      4       0b0111  9..=16
//!   5    10      5       0x0f    17..=48
//!   6    14      6       0x1f    49..=304
//!   7    21      8       0x3f    305..=8496
//!   8    29      8       0x7f    8497..=2105648
//!   9    42      8       0xbf    2105649..=17181974832
//!  10    64      8       0xff    ..=2^56 + 17181974832
//! ```

/// (total bits, prefix bits, prefix value) per level.
const LEVELS: [(u32, u32, u64); 10] = [
    (2, 1, 0x00),
    (3, 2, 0x01),
    (5, 3, 0x03),
    (7, 4, 0x07),
    (10, 5, 0x0f),
    (14, 6, 0x1f),
    (21, 8, 0x3f),
    (29, 8, 0x7f),
    (42, 8, 0xbf),
    (64, 8, 0xff),
];

/// Largest encodable run length.
pub const MAX_VALUE: u64 = (1 << 56) + 17_181_974_832;

/// Encodes `value` (>= 1). Returns the code and its length in bits, or `None` for 0 or a
/// value above [`MAX_VALUE`].
pub fn encode(value: u64) -> Option<(u64, u32)> {
    if value == 0 {
        return None;
    }
    let mut base = 1u64;
    for (total, prefix_len, prefix) in LEVELS {
        let span = 1u64 << (total - prefix_len);
        // base + span - 1 is the level's maximum; compare without overflowing.
        if value - base < span {
            return Some((((value - base) << prefix_len) | prefix, total));
        }
        base += span;
    }
    None
}

/// Decodes the code in the low bits of `lookahead`. Returns the value and the code length in
/// bits. Every bit pattern is some code (the four 8-bit prefixes cover all bytes ending in
/// six ones), so this cannot fail; the caller checks that enough bits were really there.
pub fn decode(lookahead: u64) -> (u64, u32) {
    let mut base = 1u64;
    for (total, prefix_len, prefix) in LEVELS {
        if lookahead & ((1 << prefix_len) - 1) == prefix {
            let mask = if total == 64 {
                u64::MAX
            } else {
                (1u64 << total) - 1
            };
            return (((lookahead & mask) >> prefix_len) + base, total);
        }
        base += 1u64 << (total - prefix_len);
    }
    // Unreachable by the table's construction (see above); return an impossible length so a
    // caller's "enough bits?" check fails instead of panicking.
    (0, u32::MAX)
}

/// An LSB-first bit writer with a fixed byte capacity.
pub struct BitWriter {
    buf: Vec<u8>,
    cap: usize,
    bits: usize,
}

impl BitWriter {
    pub fn new(cap_bytes: usize) -> BitWriter {
        BitWriter {
            buf: Vec::with_capacity(cap_bytes),
            cap: cap_bytes,
            bits: 0,
        }
    }

    /// Appends the low `n` bits of `val`; refuses (writing nothing) if they do not fit.
    pub fn put(&mut self, val: u64, n: u32) -> bool {
        if n == 0 {
            return true;
        }
        if (self.bits + n as usize).div_ceil(8) > self.cap {
            return false;
        }
        for i in 0..n {
            let bit = (val >> i) & 1;
            let pos = self.bits;
            if pos % 8 == 0 {
                self.buf.push(0);
            }
            if bit != 0 {
                if let Some(b) = self.buf.last_mut() {
                    *b |= 1 << (pos % 8);
                }
            }
            self.bits += 1;
        }
        true
    }

    /// Bits written.
    pub fn bit_len(&self) -> usize {
        self.bits
    }

    /// Unused bits in the last byte.
    pub fn pad_bits(&self) -> u8 {
        ((8 - self.bits % 8) % 8) as u8
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// An LSB-first bit reader that ignores `pad_bits` trailing bits.
pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(buf: &'a [u8], pad_bits: u8) -> BitReader<'a> {
        BitReader {
            buf,
            pos: 0,
            end: (buf.len() * 8).saturating_sub(usize::from(pad_bits)),
        }
    }

    /// Bits not yet consumed.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Bit position from the start of the stream.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next up to 64 bits without consuming them (zero beyond the end).
    pub fn peek64(&self) -> u64 {
        let n = self.remaining().min(64);
        let mut v = 0u64;
        let mut i = 0;
        while i < n {
            let p = self.pos + i;
            let byte = self.buf.get(p / 8).copied().unwrap_or(0);
            // Take as many bits as remain in this byte at once.
            let in_byte = (8 - p % 8).min(n - i);
            let chunk = (u64::from(byte) >> (p % 8)) & ((1u64 << in_byte) - 1);
            v |= chunk << i;
            i += in_byte;
        }
        v
    }

    pub fn skip(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §11.4, generated with the kernel's own encoder.
    const VECTORS: [(u64, u32, u64); 18] = [
        (1, 2, 0x0),
        (2, 2, 0x2),
        (3, 3, 0x1),
        (4, 3, 0x5),
        (5, 5, 0x3),
        (8, 5, 0x1b),
        (9, 7, 0x7),
        (16, 7, 0x77),
        (17, 10, 0xf),
        (48, 10, 0x3ef),
        (49, 14, 0x1f),
        (304, 14, 0x3fdf),
        (305, 21, 0x3f),
        (8496, 21, 0x1fff3f),
        (8497, 29, 0x7f),
        (2105648, 29, 0x1fffff7f),
        (2105649, 42, 0xbf),
        (1000000000, 42, 0x3b7aa8cfbf),
    ];

    #[test]
    fn matches_spec_vectors_both_ways() {
        for (value, bits, code) in VECTORS {
            assert_eq!(encode(value), Some((code, bits)), "encode {value}");
            assert_eq!(decode(code), (value, bits), "decode {value}");
            // Garbage above the code must not matter.
            if bits < 64 {
                assert_eq!(decode(code | (u64::MAX << bits)), (value, bits));
            }
        }
    }

    #[test]
    fn range_ends() {
        assert_eq!(encode(0), None);
        let (c, b) = encode(MAX_VALUE).unwrap();
        assert_eq!(b, 64);
        assert_eq!(decode(c), (MAX_VALUE, 64));
        assert_eq!(encode(MAX_VALUE + 1), None);
        assert_eq!(decode(u64::MAX), (MAX_VALUE, 64));
    }

    #[test]
    fn bit_stream_is_lsb_first_and_refuses_overflow() {
        let mut w = BitWriter::new(2);
        assert!(w.put(0b101, 3));
        assert!(w.put(0xff, 8));
        assert!(!w.put(0x3f, 6), "17 bits do not fit 2 bytes");
        assert_eq!(w.pad_bits(), 5);
        let bytes = w.into_bytes();
        assert_eq!(bytes, [0b1111_1101, 0b0000_0111]);
        let mut r = BitReader::new(&bytes, 5);
        assert_eq!(r.remaining(), 11);
        assert_eq!(r.peek64(), 0b111_1111_1101);
        r.skip(3);
        assert_eq!(r.peek64(), 0xff);
    }
}
