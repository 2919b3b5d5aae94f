//! The tokenizer: drbdadm 8.4's scanner rules (`user/v84/drbdadm_scanner.fl`), re-stated.
//!
//! Like flex, at each place the longest match wins and, between equally long matches, the
//! earlier rule: so `on` is a keyword but `online` a string, `10.1.1.1` an address, `8K` an
//! integer and `123456789` (nine digits) a string.

use std::sync::Arc;

use crate::error::Location;

/// Option keyword classes (the scanner's `TK_*_OPTION` / `_FLAG` families).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    DiskOption,
    DiskFlag,
    DiskNoFlag,
    NetOption,
    NetFlag,
    NetNoFlag,
    NetDelegate,
    ResOption,
    StartupOption,
    StartupFlag,
    StartupDelegate,
    HandlerOption,
    ProxyOption,
    ProxyDelegate,
    Deprecated,
}

/// Values drbdadm range-checks while parsing (`enum range_checks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Range {
    None,
    DiskSize,
    Timeout,
    Protocol,
    KoCount,
    PingInt,
    MaxBuffers,
    SndbufSize,
    RcvbufSize,
    ConnectInt,
    MaxEpochSize,
    CongFill,
    CongExtents,
    Rate,
    AlExtents,
    CPlanAhead,
    CDelayTarget,
    CFillTarget,
    CMaxRate,
    CMinRate,
    WfcTimeout,
    DegrWfcTimeout,
    OutdatedWfcTimeout,
}

/// An option keyword: its class, whether the deprecated `syncer { }` section takes it, whether
/// proxy sections take it, and its parse-time range check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OptKw {
    pub class: Class,
    pub syncer: bool,
    pub proxy: bool,
    pub range: Range,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kw {
    On,
    IgnoreOn,
    StackedOnTopOf,
    Floating,
    No,
    Net,
    Yes,
    Ask,
    Skip,
    Disk,
    Proxy,
    Minor,
    Inside,
    Volume,
    CmdTimeoutShort,
    CmdTimeoutMedium,
    CmdTimeoutLong,
    Syncer,
    Device,
    Global,
    Common,
    Options,
    Outside,
    Address,
    AltAddress,
    Startup,
    Include,
    Handlers,
    MinorCount,
    DisableIpVerification,
    UdevAlwaysUseVnr,
    DialogRefresh,
    Resource,
    MetaDisk,
    FlexMetaDisk,
    UsageCount,
    ThisHost,
    RemoteHost,
    /// `sci` (old name of ssocks), `ssocks`, `sdp`, `ipv4`.
    Af,
    Ipv6,
    Opt(OptKw),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Eof,
    /// One of `{ } ; [ ] :`.
    Op(u8),
    Kw(Kw),
    Ipv4,
    Ipv6Addr,
    Integer,
    Str,
    ErrLongString,
    ErrLongDqString,
    ErrDqString,
    /// Any other character.
    Else,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    /// The token's text; for quoted strings, without quotes and with escapes removed.
    pub text: String,
    pub at: Location,
}

pub(crate) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: u32,
    line_start: usize,
    file: Arc<str>,
}

fn is_string_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'_' | b'-')
}

const fn opt(class: Class, range: Range) -> Kw {
    Kw::Opt(OptKw {
        class,
        syncer: false,
        proxy: false,
        range,
    })
}

const fn sync_opt(class: Class, range: Range) -> Kw {
    Kw::Opt(OptKw {
        class,
        syncer: true,
        proxy: false,
        range,
    })
}

const fn proxy_opt(class: Class, range: Range) -> Kw {
    Kw::Opt(OptKw {
        class,
        syncer: false,
        proxy: true,
        range,
    })
}

fn keyword(word: &str) -> Option<Kw> {
    use Class::*;
    use Range as R;
    let kw = match word {
        "on" => Kw::On,
        "ignore-on" => Kw::IgnoreOn,
        "stacked-on-top-of" => Kw::StackedOnTopOf,
        "floating" => Kw::Floating,
        "no" => Kw::No,
        "net" => Kw::Net,
        "yes" => Kw::Yes,
        "ask" => Kw::Ask,
        "skip" => Kw::Skip,
        "disk" => Kw::Disk,
        "proxy" => Kw::Proxy,
        "minor" => Kw::Minor,
        "inside" => Kw::Inside,
        "volume" => Kw::Volume,
        "cmd-timeout-short" => Kw::CmdTimeoutShort,
        "cmd-timeout-medium" => Kw::CmdTimeoutMedium,
        "cmd-timeout-long" => Kw::CmdTimeoutLong,
        "syncer" => Kw::Syncer,
        "device" => Kw::Device,
        "global" => Kw::Global,
        "common" => Kw::Common,
        "options" => Kw::Options,
        "outside" => Kw::Outside,
        "address" => Kw::Address,
        "alternate-link-address" => Kw::AltAddress,
        "startup" => Kw::Startup,
        "include" => Kw::Include,
        "handlers" => Kw::Handlers,
        "minor-count" => Kw::MinorCount,
        "disable-ip-verification" => Kw::DisableIpVerification,
        "udev-always-use-vnr" => Kw::UdevAlwaysUseVnr,
        "dialog-refresh" => Kw::DialogRefresh,
        "resource" => Kw::Resource,
        "meta-disk" => Kw::MetaDisk,
        "flexible-meta-disk" => Kw::FlexMetaDisk,
        "usage-count" => Kw::UsageCount,
        "_this_host" => Kw::ThisHost,
        "_remote_host" => Kw::RemoteHost,
        "sci" | "ssocks" | "sdp" | "ipv4" => Kw::Af,
        "ipv6" => Kw::Ipv6,
        "size" => opt(DiskOption, R::DiskSize),
        "on-io-error"
        | "fencing"
        | "max-bio-bvecs"
        | "disk-timeout"
        | "read-balancing"
        | "rs-discard-granularity"
        | "resync-after" => opt(DiskOption, R::None),
        "disable-write-same"
        | "use-bmbv"
        | "disk-barrier"
        | "disk-flushes"
        | "disk-drain"
        | "md-flushes"
        | "al-updates"
        | "discard-zeroes-if-aligned" => opt(DiskFlag, R::None),
        "no-disk-barrier" | "no-disk-flushes" | "no-disk-drain" | "no-md-flushes" => {
            opt(DiskNoFlag, R::None)
        }
        "timeout" => opt(NetOption, R::Timeout),
        "protocol" => opt(NetOption, R::Protocol),
        "ko-count" => opt(NetOption, R::KoCount),
        "ping-int" => opt(NetOption, R::PingInt),
        "max-buffers" => opt(NetOption, R::MaxBuffers),
        "sndbuf-size" => proxy_opt(NetOption, R::SndbufSize),
        "rcvbuf-size" => proxy_opt(NetOption, R::RcvbufSize),
        "connect-int" => opt(NetOption, R::ConnectInt),
        "max-epoch-size" => opt(NetOption, R::MaxEpochSize),
        "cram-hmac-alg"
        | "shared-secret"
        | "after-sb-0pri"
        | "after-sb-1pri"
        | "after-sb-2pri"
        | "rr-conflict"
        | "unplug-watermark"
        | "data-integrity-alg"
        | "on-congestion"
        | "socket-check-timeout" => opt(NetOption, R::None),
        "ping-timeout" => proxy_opt(NetOption, R::None),
        "congestion-fill" => opt(NetOption, R::CongFill),
        "congestion-extents" => opt(NetOption, R::CongExtents),
        "allow-two-primaries" | "always-asbp" | "tcp-cork" | "csums-after-crash-only" => {
            opt(NetFlag, R::None)
        }
        "no-tcp-cork" => opt(NetNoFlag, R::None),
        "discard-my-data" => opt(NetDelegate, R::None),
        "rate" => sync_opt(DiskOption, R::Rate),
        "resync-rate" => opt(DiskOption, R::Rate),
        "after" => sync_opt(DiskOption, R::None),
        "verify-alg" | "csums-alg" => sync_opt(NetOption, R::None),
        "al-extents" => sync_opt(DiskOption, R::AlExtents),
        "cpu-mask" | "on-no-data-accessible" => sync_opt(ResOption, R::None),
        "use-rle" => sync_opt(NetFlag, R::None),
        "delay-probe-volume"
        | "delay-probe-interval"
        | "throttle-threshold"
        | "hold-off-threshold" => opt(Deprecated, R::None),
        "c-plan-ahead" => sync_opt(DiskOption, R::CPlanAhead),
        "c-delay-target" => sync_opt(DiskOption, R::CDelayTarget),
        "c-fill-target" => sync_opt(DiskOption, R::CFillTarget),
        "c-max-rate" => sync_opt(DiskOption, R::CMaxRate),
        "c-min-rate" => sync_opt(DiskOption, R::CMinRate),
        "wfc-timeout" => opt(StartupOption, R::WfcTimeout),
        "degr-wfc-timeout" => opt(StartupOption, R::DegrWfcTimeout),
        "outdated-wfc-timeout" => opt(StartupOption, R::OutdatedWfcTimeout),
        "stacked-timeouts" | "become-primary-on" => opt(StartupDelegate, R::None),
        "wait-after-sb" => opt(StartupFlag, R::None),
        "pri-on-incon-degr"
        | "pri-lost-after-sb"
        | "pri-lost"
        | "initial-split-brain"
        | "split-brain"
        | "outdate-peer"
        | "fence-peer"
        | "unfence-peer"
        | "local-io-error"
        | "before-resync-target"
        | "after-resync-target"
        | "before-resync-source"
        | "out-of-sync" => opt(HandlerOption, R::None),
        "memlimit" | "read-loops" | "compression" | "bwlimit" => proxy_opt(ProxyOption, R::None),
        "plugin" => opt(ProxyDelegate, R::None),
        _ => return None,
    };
    Some(kw)
}

/// Longest prefix of `s` matching `({SNUMB}"."){3}{SNUMB}`, SNUMB = 1..3 digits.
fn ipv4_len(s: &[u8]) -> usize {
    // Digits runs are greedy-safe here: a shorter run would leave a digit where '.' is needed.
    let mut i = 0;
    for part in 0..4 {
        let start = i;
        while i < s.len() && i - start < 3 && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return 0;
        }
        if part < 3 {
            if s.get(i) != Some(&b'.') {
                return 0;
            }
            i += 1;
        }
    }
    i
}

fn hex_ends(s: &[u8], i: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut j = i;
    while j < s.len() && j - i < 4 && s[j].is_ascii_hexdigit() {
        j += 1;
        ends.push(j);
    }
    ends
}

/// Ends of `(HEX4 ":"){0,5} HEX4` starting at `i` (for the part before "::").
fn head_ends(s: &[u8], i: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut frontier = vec![i];
    for groups in 0..6 {
        let mut next = Vec::new();
        for &p in &frontier {
            for e in hex_ends(s, p) {
                out.push(e);
                if groups < 5 && s.get(e) == Some(&b':') {
                    next.push(e + 1);
                }
            }
        }
        frontier = next;
    }
    out
}

/// Ends of `HEX4 (":" HEX4){0,5}` starting at `i`.
fn tail_ends(s: &[u8], i: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut frontier = hex_ends(s, i);
    for round in 0..6 {
        out.extend(frontier.iter().copied());
        if round == 5 {
            break;
        }
        let mut next = Vec::new();
        for &p in &frontier {
            if s.get(p) == Some(&b':') {
                next.extend(hex_ends(s, p + 1));
            }
        }
        frontier = next;
    }
    out
}

/// Longest prefix of `s` matching the scanner's IPV6ADDR pattern (0 if none).
fn ipv6_len(s: &[u8]) -> usize {
    let mut best = 0;
    // "::" [fF]{4} ":" IPV4ADDR
    if s.len() >= 7 && &s[..2] == b"::" && s[2..6].eq_ignore_ascii_case(b"ffff") && s[6] == b':' {
        let l = ipv4_len(&s[7..]);
        if l > 0 {
            best = 7 + l;
        }
    }
    // (HEAD)? ":" HEX4? ":" (TAIL)? ("%" STRING)?
    let mut starts = vec![0];
    starts.extend(head_ends(s, 0));
    for a in starts {
        if s.get(a) != Some(&b':') {
            continue;
        }
        let mut mids = vec![a + 1];
        mids.extend(hex_ends(s, a + 1));
        for m in mids {
            if s.get(m) != Some(&b':') {
                continue;
            }
            let mut ends = vec![m + 1];
            ends.extend(tail_ends(s, m + 1));
            for e in ends {
                let mut end = e;
                if s.get(e) == Some(&b'%') {
                    let run = s[e + 1..]
                        .iter()
                        .take(128)
                        .take_while(|&&c| is_string_char(c))
                        .count();
                    if run > 0 {
                        end = e + 1 + run;
                    }
                }
                best = best.max(end);
            }
        }
    }
    best
}

/// `[0-9]{1,8}[MKGs]?` over the whole word.
fn is_num(word: &[u8]) -> bool {
    let digits = word.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 8 {
        return false;
    }
    match &word[digits..] {
        [] => true,
        [u] => matches!(u, b'M' | b'K' | b'G' | b's'),
        _ => false,
    }
}

/// Result of scanning a double-quoted string at `s[0] == '"'`.
enum Dq {
    /// Closed string: total length including quotes.
    Ok(usize),
    TooLong,
    /// Hit a newline or a backslash before newline / end.
    Unterminated,
    /// Unterminated at end of input: flex falls back to the one-character rule.
    NoMatch,
}

fn scan_dq(s: &[u8]) -> Dq {
    let mut i = 1;
    let mut units = 0;
    loop {
        match s.get(i) {
            None => return Dq::NoMatch,
            Some(b'"') => {
                return Dq::Ok(i + 1);
            }
            Some(b'\n') => return Dq::Unterminated,
            Some(b'\\') => match s.get(i + 1) {
                None | Some(b'\n') => return Dq::Unterminated,
                Some(_) => i += 2,
            },
            Some(_) => i += 1,
        }
        units += 1;
        if units == 255 {
            // LONG_DQSTRING: 255 units followed by any character but a newline, which
            // beats a closing quote only when that character is not the quote.
            return match s.get(i) {
                Some(b'"') => Dq::Ok(i + 1),
                Some(b'\n') => Dq::Unterminated,
                Some(_) => Dq::TooLong,
                None => Dq::NoMatch,
            };
        }
    }
}

/// drbd-utils' `unescape`: drop every double quote; a backslash keeps the next character.
fn unescape(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'"' {
            i += 1;
            continue;
        }
        if c == b'\\' {
            i += 1;
            if i >= raw.len() {
                break;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str, file: Arc<str>) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
            line: 1,
            line_start: 0,
            file,
        }
    }

    pub fn here(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
            column: (self.pos - self.line_start) as u32 + 1,
        }
    }

    pub fn next_token(&mut self) -> Token {
        loop {
            let Some(&c) = self.src.get(self.pos) else {
                return Token {
                    tok: Tok::Eof,
                    text: String::new(),
                    at: self.here(),
                };
            };
            match c {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.line_start = self.pos;
                }
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => return self.scan(),
            }
        }
    }

    fn take(&mut self, tok: Tok, len: usize, text: String) -> Token {
        let at = self.here();
        self.pos += len;
        Token { tok, text, at }
    }

    fn scan(&mut self) -> Token {
        let rest = &self.src[self.pos..];
        let c = rest[0];
        let run = rest.iter().take_while(|&&c| is_string_char(c)).count();
        let v6 = ipv6_len(rest);
        let raw = |n: usize| String::from_utf8_lossy(&rest[..n]).into_owned();

        if c == b'"' {
            return match scan_dq(rest) {
                Dq::Ok(n) => {
                    let text = unescape(&rest[..n]);
                    self.take(Tok::Str, n, text)
                }
                Dq::TooLong => self.take(Tok::ErrLongDqString, 257, raw(257.min(rest.len()))),
                Dq::Unterminated => {
                    let n = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                    self.take(Tok::ErrDqString, n, raw(n))
                }
                Dq::NoMatch => self.take(Tok::Else, 1, raw(1)),
            };
        }
        if run == 0 {
            if v6 > 0 {
                return self.take(Tok::Ipv6Addr, v6, raw(v6));
            }
            if matches!(c, b'{' | b'}' | b';' | b'[' | b']' | b':') {
                return self.take(Tok::Op(c), 1, raw(1));
            }
            // One character of whatever it is (a UTF-8 sequence counts as one).
            let n = std::str::from_utf8(&rest[..rest.len().min(4)])
                .ok()
                .or_else(|| std::str::from_utf8(&rest[..1]).ok())
                .and_then(|s| s.chars().next())
                .map_or(1, char::len_utf8);
            return self.take(Tok::Else, n, raw(n));
        }
        // Among same-length matches the earlier rule wins: keywords, IPv4, IPv6, numbers,
        // strings. IPv6 may run past the word (it contains ':').
        let word_len = run.min(129);
        if v6 > word_len {
            return self.take(Tok::Ipv6Addr, v6, raw(v6));
        }
        if run >= 129 {
            return self.take(Tok::ErrLongString, 129, raw(129));
        }
        let word = &rest[..run];
        let text = raw(run);
        if let Some(kw) = keyword(&text) {
            return self.take(Tok::Kw(kw), run, text);
        }
        if ipv4_len(word) == run {
            return self.take(Tok::Ipv4, run, text);
        }
        if v6 == run {
            return self.take(Tok::Ipv6Addr, run, text);
        }
        if is_num(word) {
            return self.take(Tok::Integer, run, text);
        }
        self.take(Tok::Str, run, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<(Tok, String)> {
        let mut l = Lexer::new(s, Arc::from("t"));
        let mut v = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                return v;
            }
            v.push((t.tok, t.text));
        }
    }

    #[test]
    fn longest_match_and_rule_order() {
        let t = toks("on online 10.1.1.31:7789 8K 123456789 /dev/drbd0");
        assert_eq!(t[0].0, Tok::Kw(Kw::On));
        assert_eq!(t[1], (Tok::Str, "online".into()));
        assert_eq!(t[2], (Tok::Ipv4, "10.1.1.31".into()));
        assert_eq!(t[3].0, Tok::Op(b':'));
        assert_eq!(t[4], (Tok::Integer, "7789".into()));
        assert_eq!(t[5], (Tok::Integer, "8K".into()));
        assert_eq!(t[6], (Tok::Str, "123456789".into()));
        assert_eq!(t[7], (Tok::Str, "/dev/drbd0".into()));
    }

    #[test]
    fn ipv6_addresses() {
        let t = toks("[fd00::1]:7789 [::1] ::ffff:10.0.0.1 fe80::1%eth0");
        assert_eq!(t[1], (Tok::Ipv6Addr, "fd00::1".into()));
        assert_eq!(t[2].0, Tok::Op(b']'));
        assert_eq!(t[3].0, Tok::Op(b':'));
        assert_eq!(t[4].0, Tok::Integer);
        assert_eq!(t[6], (Tok::Ipv6Addr, "::1".into()));
        assert_eq!(t[8], (Tok::Ipv6Addr, "::ffff:10.0.0.1".into()));
        assert_eq!(t[9], (Tok::Ipv6Addr, "fe80::1%eth0".into()));
    }

    #[test]
    fn quoted_strings_and_positions() {
        let mut l = Lexer::new("# c\n  \"a b\\\"c\" x", Arc::from("f"));
        let t = l.next_token();
        assert_eq!((t.tok, t.text.as_str()), (Tok::Str, "a b\"c"));
        assert_eq!((t.at.line, t.at.column), (2, 3));
        let t = l.next_token();
        assert_eq!((t.at.line, t.at.column), (2, 12));
        assert_eq!(toks("\"abc\ndef\"")[0].0, Tok::ErrDqString);
        assert_eq!(
            toks(&format!("\"{}\"", "x".repeat(300)))[0].0,
            Tok::ErrLongDqString
        );
        assert_eq!(toks(&format!("\"{}\"", "x".repeat(255)))[0].0, Tok::Str);
        assert_eq!(toks(&"y".repeat(129))[0].0, Tok::ErrLongString);
        assert_eq!(toks(&"y".repeat(128))[0].0, Tok::Str);
    }
}
