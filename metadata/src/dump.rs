//! The `dump-md` text format (spec §7): writing it exactly as drbdmeta does and parsing it
//! with drbdmeta's lexical rules (`drbdmeta_scanner.fl`) and grammar
//! (`verify_dumpfile_or_restore`), v08 only.

use std::fmt::Write as _;

use crate::md::OnDisk;
use crate::superblock::MdFlags;
use crate::uuid::Uuids;

/// The junk line drbdmeta puts into a forced dump of unclean meta-data so that it cannot be
/// restored.
pub const UNCLEAN_MARKER: &str = "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n\
# You should \"apply-al\" first, if you plan to restore this.\n\n";

/// Formats the body of a v08 dump (everything after the comment header) into `out`.
/// `bitmap` holds the on-disk bitmap bytes for the agreed size (`od.bm_bytes()` bytes).
/// Returns the number of set bits, wrapped to 32 bits as drbdmeta counts them.
pub fn format(out: &mut String, od: &OnDisk, bitmap: &[u8], unclean: bool) -> u32 {
    let sb = &od.superblock;
    let l = &od.layout;
    out.push_str("version \"v08\";\n\n");
    if unclean {
        out.push_str(UNCLEAN_MARKER);
    }
    let _ = writeln!(out, "# md_size_sect {}", sb.md_size_sect);
    let _ = writeln!(out, "# md_offset {}", l.md_offset);
    let _ = writeln!(out, "# al_offset {}", l.al_offset());
    let _ = writeln!(out, "# bm_offset {}", l.bm_offset());
    out.push('\n');
    let u = sb.uuids.to_array();
    let _ = writeln!(
        out,
        "uuid {{\n    0x{:016X}; 0x{:016X}; 0x{:016X}; 0x{:016X};",
        u[0], u[1], u[2], u[3]
    );
    // drbd-utils before 9.33 printed 0 here (the unused v09 peer flags); we print the
    // superblock flags, as 9.33 and later do, so that restore-md keeps them.
    let _ = writeln!(out, "    flags 0x{:08X};\n}}", sb.flags.0);
    let _ = writeln!(out, "# al-extents {};", sb.al_nr_extents);
    let _ = writeln!(out, "la-size-sect {};", sb.la_size_sect);
    let _ = writeln!(out, "bm-byte-per-bit {};", sb.bm_bytes_per_bit);
    let _ = writeln!(out, "device-uuid 0x{:016X};", sb.device_uuid);
    let _ = writeln!(
        out,
        "la-peer-max-bio-size {};",
        sb.la_peer_max_bio_size as i32
    );
    let _ = writeln!(out, "al-stripes {};", sb.al_stripes);
    let _ = writeln!(out, "al-stripe-size-4k {};", sb.al_stripe_size_4k);
    let _ = writeln!(out, "# bm-bytes {};", od.bm_bytes());
    out.push_str("bm ");
    let bits = format_bitmap(out, bitmap);
    let _ = writeln!(out, "# bits-set {bits};");
    bits
}

/// drbdmeta reads the bitmap in chunks of this many bytes; runs are cut at chunk ends.
const CHUNK_BYTES: usize = 32 << 20;

/// drbdmeta's `fprintf_bm` for one peer: lines of four 64-bit words, `# at NkB` every 32
/// words, run-length `N times 0x…;` for runs of more than 8 identical 32-bit words that
/// start a line. Works on 32-bit little-endian words like the original, including its
/// chunk-boundary behaviour. Returns the set-bit count (wrapping at 2^32).
pub fn format_bitmap(out: &mut String, bitmap: &[u8]) -> u32 {
    const WPL: usize = 8; // 32-bit words per line
    let n = bitmap.len() / 4;
    let word = |k: usize| u32::from_le_bytes(bitmap[4 * k..4 * k + 4].try_into().expect("4"));
    let chunk_words = CHUNK_BYTES / 4;
    let mut bits: u32 = 0;
    let mut r = 0usize; // absolute 32-bit word index
    let mut count = 0usize; // pending run length in 32-bit words
    let mut cw = 0u32;
    let mut lw = 0u32;
    out.push('{');
    while r < n {
        // The chunk the original would have in its buffer when looking at word r.
        let chunk_end = ((r / chunk_words) + 1) * chunk_words;
        let buf_end = chunk_end.min(n);
        if count == 0 {
            cw = word(r);
        }
        if r.is_multiple_of(WPL) {
            if count == 0 {
                if r & 63 == 0 {
                    let _ = write!(out, "\n   # at {}kB\n   ", 128 * r as u64);
                } else {
                    out.push_str("\n   ");
                }
            }
            let mut j = r;
            while j < buf_end && word(j) == cw {
                j += 1;
            }
            let tmp = (j - r) / WPL * WPL;
            if tmp > WPL {
                count += tmp;
                r += tmp;
                if j >= buf_end && r < n {
                    // Run reaches the chunk end: the original continues it in the next chunk.
                    continue;
                }
            }
            if count != 0 {
                let _ = write!(out, " {} times 0x{cw:08X}{cw:08X};", count / 2);
                bits = bits.wrapping_add((count as u32).wrapping_mul(cw.count_ones()));
                count = 0;
                if r >= n {
                    break;
                }
                continue;
            }
        }
        let w = word(r);
        if r & 1 == 0 {
            lw = w;
        } else {
            let _ = write!(out, " 0x{w:08X}{lw:08X};");
        }
        bits = bits.wrapping_add(w.count_ones());
        r += 1;
    }
    out.push_str("\n}\n");
    bits
}

/// A parsed v08 dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub uuids: Uuids,
    pub flags: MdFlags,
    pub la_size_sect: u64,
    pub bm_bytes_per_bit: u64,
    pub device_uuid: u64,
    /// Stored as drbdmeta stores it: truncated to 32 bits.
    pub la_peer_max_bio_size: u32,
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
    /// Bitmap words in order, run-length encoded.
    pub bitmap: Vec<BmRun>,
}

/// `count` consecutive identical 64-bit bitmap words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BmRun {
    pub count: u64,
    pub word: u64,
}

impl Dump {
    /// Total number of 64-bit words in the `bm` block.
    pub fn words(&self) -> u64 {
        self.bitmap
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.count))
    }

    /// The first `len` bytes of the bitmap as written to disk: the words in little-endian
    /// order, zero-padded.
    pub fn bitmap_bytes(&self, len: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len as usize);
        'outer: for r in &self.bitmap {
            let b = r.word.to_le_bytes();
            for _ in 0..r.count {
                if v.len() as u64 >= len {
                    break 'outer;
                }
                v.extend_from_slice(&b);
            }
        }
        v.truncate(len as usize);
        v.resize(len as usize, 0);
        v
    }
}

/// A dump that does not follow the grammar: where, in which field, what was expected and
/// what was found. The wording of `expected` follows drbdmeta's messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {expected} expected, found {found}")]
pub struct ParseError {
    pub line: u32,
    /// The dump field being read (`uuid`, `la-size-sect`, `bm`, …).
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Op(u8),
    Str(String),
    U64(u64),
    U32(u64),
    Num(u64),
    Kw(&'static str),
    /// A scanner error (`bad_token`): message and the offending text.
    Invalid(&'static str, String),
    InvalidChar(u8),
    Eof,
}

const KEYWORDS: [&str; 22] = [
    "gc",
    "bm",
    "uuid",
    "version",
    "la-size-sect",
    "bm-byte-per-bit",
    "device-uuid",
    "times",
    "flags",
    "al-stripes",
    "al-stripe-size-4k",
    "la-peer-max-bio-size",
    "node-id",
    "current-uuid",
    "bitmap",
    "bitmap-uuid",
    "bitmap-dagtag",
    "history-uuids",
    "peer",
    "hash",
    "max-peers",
    "bitmap-index",
];

/// The flex scanner's rules, applied by longest match with the earlier rule winning ties.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    line: u32,
}

fn is_ident(b: u8) -> bool {
    b == b'-' || b == b'_' || b.is_ascii_alphanumeric()
}

impl<'a> Lexer<'a> {
    fn run(&self, from: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
        self.s[from.min(self.s.len())..]
            .iter()
            .take(max)
            .take_while(|&&b| f(b))
            .count()
    }

    fn next(&mut self) -> Tok {
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Tok::Eof;
            };
            let p = self.pos;
            if matches!(c, b' ' | b'\r' | b'\t' | b'\n') {
                if c == b'\n' {
                    self.line += 1;
                }
                self.pos += 1;
                continue;
            }
            if c == b'#' {
                self.pos += 1 + self.run(p + 1, usize::MAX, |b| b != b'\n');
                continue;
            }
            if matches!(c, b'{' | b'}' | b';' | b'[' | b']') {
                self.pos += 1;
                return Tok::Op(c);
            }
            // Candidates: (length, rule order, token builder).
            let mut best: Option<(usize, usize, Tok)> = None;
            let mut offer = |len: usize, order: usize, tok: &dyn Fn() -> Tok| {
                if len == 0 {
                    return;
                }
                match &best {
                    Some((l, o, _)) if *l > len || (*l == len && *o < order) => {}
                    _ => best = Some((len, order, tok())),
                }
            };
            let text = |len: usize| String::from_utf8_lossy(&self.s[p..p + len]).into_owned();
            if c == b'"' {
                let q = self.run(p + 1, 21, |b| b != b'"' && b != b'\r' && b != b'\n');
                if (1..=20).contains(&q) && self.s.get(p + 1 + q) == Some(&b'"') {
                    let inner = unescape(&self.s[p..p + q + 2]);
                    offer(q + 2, 4, &|| Tok::Str(inner.clone()));
                }
                if q >= 1 {
                    let l = 1 + q.min(20);
                    offer(l, 9, &|| Tok::Invalid("invalid string", text(l)));
                }
                let l = if self.s.get(p + 1) == Some(&b'"') {
                    2
                } else {
                    1
                };
                offer(l, 10, &|| Tok::Invalid("invalid string", text(l)));
            }
            if c == b'0' && self.s.get(p + 1) == Some(&b'x') {
                let h = self.run(p + 2, 18, |b| b.is_ascii_hexdigit());
                let hex = |len: usize| {
                    u64::from_str_radix(
                        std::str::from_utf8(&self.s[p + 2..p + 2 + len]).expect("hex digits"),
                        16,
                    )
                    .expect("at most 16 hex digits")
                };
                if h >= 16 {
                    let v = hex(16);
                    offer(18, 5, &|| Tok::U64(v));
                }
                if h >= 8 {
                    let v = hex(8);
                    offer(10, 6, &|| Tok::U32(v));
                }
                let l = 2 + h.min(17);
                offer(l, 11, &|| {
                    Tok::Invalid(
                        "invalid hex number (only 8 or 16 hex digits accepted)",
                        text(l),
                    )
                });
            }
            let neg = usize::from(c == b'-');
            let d = self.run(p + neg, 21, |b| b.is_ascii_digit());
            if d >= 1 {
                let l = neg + d.min(19);
                let digits = std::str::from_utf8(&self.s[p + neg..p + l]).expect("digits");
                let v: u64 = digits.parse().expect("at most 19 digits fit u64");
                let v = if neg == 1 { v.wrapping_neg() } else { v };
                offer(l, 7, &|| Tok::Num(v));
            }
            if d >= 2 {
                let l = neg + d.min(20);
                offer(l, 12, &|| Tok::Invalid("number too big", text(l)));
            }
            let ident = self.run(p, 100, is_ident);
            for (i, kw) in KEYWORDS.iter().enumerate() {
                if self.s[p..].starts_with(kw.as_bytes()) {
                    offer(kw.len(), 8 + i, &|| Tok::Kw(kw));
                }
            }
            // Keywords share rule 8 in flex; give them a rank before the error rules.
            offer(ident, 13 + KEYWORDS.len(), &|| {
                Tok::Invalid("unknown token", text(ident))
            });
            if !is_ident(c) && !matches!(c, b'"' | b';' | b'{' | b'}') {
                offer(1, 14 + KEYWORDS.len(), &|| Tok::InvalidChar(c));
            }
            let (len, _, tok) = best.expect("every byte matches some scanner rule");
            self.pos += len;
            return tok;
        }
    }
}

/// drbd-utils `unescape`: drop double quotes, a backslash keeps the next character.
fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => {}
            b'\\' => {
                if let Some(&n) = s.get(i + 1) {
                    out.push(n);
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn describe(expected: &Tok) -> String {
    match expected {
        Tok::Op(b';') => "semicolon (;)".into(),
        Tok::Op(b'{') => "opening brace ({)".into(),
        Tok::Op(b'}') => "closing brace (})".into(),
        Tok::Kw(k) => format!("keyword '{k}'"),
        Tok::Num(_) => "number ([0-9], up to 20 digits)".into(),
        Tok::Str(_) => "short quoted string (\"..up to 20 characters, no newline..\")".into(),
        Tok::U32(_) => "an 8-digit hex number".into(),
        Tok::U64(_) => "a 16-digit hex number".into(),
        Tok::Eof => "end of file".into(),
        _ => "token".into(),
    }
}

fn found(tok: &Tok) -> String {
    match tok {
        Tok::Eof => "end of file".into(),
        Tok::Op(c) => format!("'{}'", *c as char),
        Tok::Num(_) | Tok::U32(_) | Tok::U64(_) => "some number".into(),
        Tok::Invalid(msg, text) => format!("{msg}: {text}"),
        Tok::InvalidChar(c) => format!("invalid input character '\\x{c:02x}'"),
        Tok::Kw(k) => format!("'{k}'"),
        Tok::Str(s) => format!("'{s}'"),
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    field: &'static str,
}

impl Parser<'_> {
    fn err(&self, expected: String, got: &Tok) -> ParseError {
        ParseError {
            line: self.lex.line,
            field: self.field,
            expected,
            found: found(got),
        }
    }

    fn expect(&mut self, want: Tok) -> Result<Tok, ParseError> {
        let got = self.lex.next();
        let ok = match (&want, &got) {
            (Tok::Op(a), Tok::Op(b)) => a == b,
            (Tok::Kw(a), Tok::Kw(b)) => a == b,
            (Tok::Num(_), Tok::Num(_))
            | (Tok::U32(_), Tok::U32(_))
            | (Tok::U64(_), Tok::U64(_))
            | (Tok::Str(_), Tok::Str(_))
            | (Tok::Eof, Tok::Eof) => true,
            _ => false,
        };
        if ok {
            Ok(got)
        } else {
            Err(self.err(describe(&want), &got))
        }
    }

    fn semi(&mut self) -> Result<(), ParseError> {
        self.expect(Tok::Op(b';')).map(|_| ())
    }

    fn u64_item(&mut self) -> Result<u64, ParseError> {
        match self.expect(Tok::U64(0))? {
            Tok::U64(v) => {
                self.semi()?;
                Ok(v)
            }
            _ => unreachable!("expect returned the token kind it was asked for"),
        }
    }

    fn num_field(&mut self, kw: &'static str) -> Result<u64, ParseError> {
        self.field = kw;
        self.expect(Tok::Kw(kw))?;
        let Tok::Num(v) = self.expect(Tok::Num(0))? else {
            unreachable!("expect returned the token kind it was asked for")
        };
        self.semi()?;
        Ok(v)
    }
}

/// Largest repeat count accepted: drbdmeta keeps it in a C `int`.
const MAX_TIMES: u64 = i32::MAX as u64;

/// Parses a v08 dump. Nothing is written anywhere; a caller restores only what parsed
/// completely.
pub fn parse(text: &[u8]) -> Result<Dump, ParseError> {
    let mut p = Parser {
        lex: Lexer {
            s: text,
            pos: 0,
            line: 1,
        },
        field: "version",
    };
    p.expect(Tok::Kw("version"))?;
    let Tok::Str(v) = p.expect(Tok::Str(String::new()))? else {
        unreachable!("expect returned the token kind it was asked for")
    };
    if v != "v08" {
        return Err(ParseError {
            line: p.lex.line,
            field: "version",
            expected: "\"v08\" (dump is for another format)".into(),
            found: format!("\"{v}\""),
        });
    }
    p.semi()?;
    p.field = "uuid";
    p.expect(Tok::Kw("uuid"))?;
    p.expect(Tok::Op(b'{'))?;
    let mut u = [0u64; 4];
    for x in &mut u {
        *x = p.u64_item()?;
    }
    p.field = "flags";
    p.expect(Tok::Kw("flags"))?;
    let Tok::U32(flags) = p.expect(Tok::U32(0))? else {
        unreachable!("expect returned the token kind it was asked for")
    };
    p.semi()?;
    p.field = "uuid";
    p.expect(Tok::Op(b'}'))?;
    let la_size_sect = p.num_field("la-size-sect")?;
    let bpb = p.num_field("bm-byte-per-bit")?;
    if bpb < 4096 || !bpb.is_power_of_two() {
        return Err(ParseError {
            line: p.lex.line,
            field: "bm-byte-per-bit",
            expected: "a power-of-two multiple of 4096".into(),
            found: bpb.to_string(),
        });
    }
    p.field = "device-uuid";
    p.expect(Tok::Kw("device-uuid"))?;
    let device_uuid = p.u64_item()?;
    let la_peer_max_bio_size = p.num_field("la-peer-max-bio-size")? as u32;
    let al_stripes = p.num_field("al-stripes")? as u32;
    let al_stripe_size_4k = p.num_field("al-stripe-size-4k")? as u32;
    p.field = "bm";
    p.expect(Tok::Kw("bm"))?;
    p.expect(Tok::Op(b'{'))?;
    let mut bitmap: Vec<BmRun> = Vec::new();
    let mut push = |run: BmRun| match bitmap.last_mut() {
        Some(last) if last.word == run.word => last.count = last.count.saturating_add(run.count),
        _ if run.count == 0 => {}
        _ => bitmap.push(run),
    };
    loop {
        match p.lex.next() {
            Tok::U64(word) => {
                p.semi()?;
                push(BmRun { count: 1, word });
            }
            Tok::Num(times) => {
                if times > MAX_TIMES {
                    return Err(ParseError {
                        line: p.lex.line,
                        field: "bm",
                        expected: format!("a repeat count of at most {MAX_TIMES}"),
                        found: times.to_string(),
                    });
                }
                p.expect(Tok::Kw("times"))?;
                let word = p.u64_item()?;
                push(BmRun { count: times, word });
            }
            Tok::Op(b'}') => break,
            other => {
                return Err(p.err(
                    "repeat count, 16-digit hex number, or closing brace (})".into(),
                    &other,
                ))
            }
        }
    }
    p.field = "end of dump";
    p.expect(Tok::Eof)?;
    Ok(Dump {
        uuids: Uuids::from_array(u),
        flags: MdFlags(flags as u32),
        la_size_sect,
        bm_bytes_per_bit: bpb,
        device_uuid,
        la_peer_max_bio_size,
        al_stripes,
        al_stripe_size_4k,
        bitmap,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"# DRBD meta data dump
# 2026-11-25 12:56:15 +0000 [1795611375]
# vm> drbdmeta --force 0 v08 /dev/vg0/disk1 internal dump-md
#

version "v08";

# md_size_sect 136
# md_offset 1073737728
# al_offset 1073704960
# bm_offset 1073672192

uuid {
    0x1234567890ABCDEF; 0x0000000000000000; 0x0000000000000000; 0x0000000000000000;
    flags 0x00000000;
}
# al-extents 257;
la-size-sect 2097016;
bm-byte-per-bit 4096;
device-uuid 0xAAAABBBBCCCCDDDD;
la-peer-max-bio-size 1048576;
al-stripes 1;
al-stripe-size-4k 8;
# bm-bytes 32768;
bm {
   # at 0kB
    0xFFFFFFFFFFFFFFFF; 0x0000000000000001; 0x8000000000000000; 0x00000000FFFFFFFF;
    100 times 0x0000000000000000;
    0x0123456789ABCDEF; 0xFFFFFFFFFFFFFFFF; 0xFFFFFFFFFFFFFFFF; 0xFFFFFFFFFFFFFFFF;
    3988 times 0xFFFFFFFFFFFFFFFF;
}
# bits-set 255554;
"#;

    /// Spec §7.1 example.
    #[test]
    fn parses_spec_example() {
        let d = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.uuids.current, 0x1234_5678_90AB_CDEF);
        assert_eq!(d.la_size_sect, 2_097_016);
        assert_eq!(d.device_uuid, 0xAAAA_BBBB_CCCC_DDDD);
        assert_eq!(d.la_peer_max_bio_size, 1 << 20);
        assert_eq!(d.words(), 4 + 100 + 4 + 3988);
        let b = d.bitmap_bytes(32);
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[0, 0, 0, 0, 0, 0, 0, 0x80]);
    }

    /// Spec §7.1: formatting the example's bitmap gives the example's text back.
    #[test]
    fn formats_spec_example_bitmap() {
        let d = parse(EXAMPLE.as_bytes()).unwrap();
        let bytes = d.bitmap_bytes(32768);
        let mut s = String::new();
        let bits = format_bitmap(&mut s, &bytes);
        let want = "{\n   # at 0kB\n    0xFFFFFFFFFFFFFFFF; 0x0000000000000001; 0x8000000000000000; 0x00000000FFFFFFFF;\n    100 times 0x0000000000000000;\n    0x0123456789ABCDEF; 0xFFFFFFFFFFFFFFFF; 0xFFFFFFFFFFFFFFFF; 0xFFFFFFFFFFFFFFFF;\n    3988 times 0xFFFFFFFFFFFFFFFF;\n}\n";
        assert_eq!(s, want);
        assert_eq!(bits, 255_554);
    }

    #[test]
    fn empty_bitmap_formats_as_empty_block() {
        let mut s = String::new();
        assert_eq!(format_bitmap(&mut s, &[]), 0);
        assert_eq!(s, "{\n}\n");
    }

    fn err(text: &str) -> ParseError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn rejects_bad_token_naming_line_and_field() {
        let bad = EXAMPLE.replace("la-size-sect 2097016;", "la-size-sect 2097016x;");
        let e = err(&bad);
        assert_eq!((e.line, e.field), (18, "la-size-sect"));
        assert!(e.found.contains("unknown token: 2097016x"), "{e}");
    }

    #[test]
    fn rejects_wrong_hex_width() {
        let bad = EXAMPLE.replace(
            "device-uuid 0xAAAABBBBCCCCDDDD",
            "device-uuid 0xAAAABBBBCCCCDDD",
        );
        let e = err(&bad);
        assert_eq!((e.line, e.field), (20, "device-uuid"));
        assert!(e.found.starts_with("invalid hex number"), "{e}");
    }

    #[test]
    fn rejects_truncated_dump() {
        let cut = &EXAMPLE[..EXAMPLE.find("    3988").unwrap()];
        let e = err(cut);
        assert_eq!(e.field, "bm");
        assert_eq!(e.found, "end of file");
    }

    #[test]
    fn rejects_trailing_garbage() {
        let e = err(&format!("{EXAMPLE}\nextra"));
        assert_eq!(e.field, "end of dump");
    }

    #[test]
    fn rejects_unclean_marker() {
        let bad = EXAMPLE.replace(
            "version \"v08\";\n",
            &format!("version \"v08\";\n\n{UNCLEAN_MARKER}"),
        );
        let e = err(&bad);
        assert_eq!(e.field, "uuid");
        assert!(e.found.contains("unknown token"), "{e}");
    }

    #[test]
    fn scanner_longest_match_rules() {
        let toks = |s: &str| {
            let mut l = Lexer {
                s: s.as_bytes(),
                pos: 0,
                line: 1,
            };
            let mut v = Vec::new();
            loop {
                let t = l.next();
                if t == Tok::Eof {
                    return v;
                }
                v.push(t);
            }
        };
        assert_eq!(toks("bm"), [Tok::Kw("bm")]);
        assert_eq!(toks("bm-byte-per-bit"), [Tok::Kw("bm-byte-per-bit")]);
        assert!(matches!(
            &toks("bm-bytes")[..],
            [Tok::Invalid("unknown token", _)]
        ));
        assert_eq!(toks("-5"), [Tok::Num(5u64.wrapping_neg())]);
        assert_eq!(toks("0x0000000A"), [Tok::U32(10)]);
        assert!(matches!(
            &toks("12345678901234567890")[..],
            [Tok::Invalid("number too big", _)]
        ));
        assert!(matches!(
            &toks("0x0000000000000000g")[..],
            [Tok::Invalid("unknown token", _)]
        ));
        // As in flex: the string ends at the first quote; unescape then keeps it.
        assert!(matches!(
            &toks("\"v\\\"8\"")[..],
            [Tok::Str(s), Tok::Num(8), Tok::Invalid("invalid string", _)] if s == "v\""
        ));
        assert_eq!(toks("[ ]"), [Tok::Op(b'['), Tok::Op(b']')]);
        assert_eq!(
            toks("\u{e9}"),
            [Tok::InvalidChar(0xc3), Tok::InvalidChar(0xa9)]
        );
    }
}
