//! The drbd.conf 8.4 grammar, statement for statement as drbdadm-84 parses it
//! (`user/v84/drbdadm_parser.c`), including its uniqueness checks and parse-time range checks.
//! The first error ends parsing; drbdadm would exit with an invalid configuration as well.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ast::{AddressText, GlobalText, HostText, Opt, ResourceText, UsageCount, VolumeText};
use crate::error::{Error, Location};
use crate::lexer::{Class, Kw, Lexer, OptKw, Range, Tok, Token};
use crate::units::{parse_number, Unit};

/// Everything parsed from one top-level file and its includes.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub global: GlobalText,
    pub common: Option<ResourceText>,
    pub resources: Vec<ResourceText>,
    pub warnings: Vec<String>,
    /// The first error drbdadm reports but parses on after (it exits once the file is read,
    /// unless a fatal error comes first).
    deferred: Option<Error>,
    /// Keys of drbdadm's global uniqueness table, with where each was first used.
    uniq: HashMap<String, Location>,
    seen_files: HashSet<PathBuf>,
}

/// drbdadm's `canonify_path`: the directory made absolute, the file name kept.
pub(crate) fn canonify(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// Parses `text` as the file `path` (shown as `display` in messages), following includes.
pub(crate) fn parse_top(path: &Path, display: &str, text: &str) -> Result<Parsed, Error> {
    let mut parsed = Parsed::default();
    let canonical = canonify(path);
    parsed
        .seen_files
        .insert(std::fs::canonicalize(path).unwrap_or(canonical.clone()));
    parse_file(&mut parsed, &canonical, display, text)?;
    match parsed.deferred.take() {
        Some(e) => Err(e),
        None => Ok(parsed),
    }
}

fn parse_file(
    parsed: &mut Parsed,
    canonical: &Path,
    display: &str,
    text: &str,
) -> Result<(), Error> {
    let mut p = Parser {
        lex: Lexer::new(text, Arc::from(display)),
        out: parsed,
        canonical: canonical.to_path_buf(),
        upr: HashMap::new(),
    };
    p.top()
}

const NONE_H_ALLOWED: u8 = 4;

/// Sections' option classes: flag, no-flag, option, delegate.
struct Section {
    flag: Option<Class>,
    no_flag: Option<Class>,
    option: Class,
    delegate: Option<Class>,
}

const NET: Section = Section {
    flag: Some(Class::NetFlag),
    no_flag: Some(Class::NetNoFlag),
    option: Class::NetOption,
    delegate: Some(Class::NetDelegate),
};
const DISK: Section = Section {
    flag: Some(Class::DiskFlag),
    no_flag: Some(Class::DiskNoFlag),
    option: Class::DiskOption,
    delegate: None,
};
const STARTUP: Section = Section {
    flag: Some(Class::StartupFlag),
    no_flag: None,
    option: Class::StartupOption,
    delegate: Some(Class::StartupDelegate),
};
const HANDLERS: Section = Section {
    flag: None,
    no_flag: None,
    option: Class::HandlerOption,
    delegate: None,
};
const RES_OPTIONS: Section = Section {
    flag: None,
    no_flag: None,
    option: Class::ResOption,
    delegate: None,
};

struct Parser<'a, 'p> {
    lex: Lexer<'a>,
    out: &'p mut Parsed,
    canonical: PathBuf,
    /// drbdadm's per-resource uniqueness table.
    upr: HashMap<String, Location>,
}

fn describe(t: &Token) -> String {
    match t.tok {
        Tok::Eof => "end of file".to_string(),
        _ => {
            let shown: String = t.text.chars().take(20).collect();
            let more = if t.text.chars().count() > 20 {
                "..."
            } else {
                ""
            };
            format!("'{shown}{more}'")
        }
    }
}

fn only_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// C `atoi`: leading digits, 0 if none.
fn atoi(s: &str) -> i64 {
    let d: String = s
        .chars()
        .take_while(char::is_ascii_digit)
        .take(18)
        .collect();
    d.parse().unwrap_or(0)
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .map(|a| a.is_loopback())
        .unwrap_or(false)
}

impl<'p> Parser<'_, 'p> {
    fn next(&mut self) -> Token {
        self.lex.next_token()
    }

    fn expected(&self, what: &str, got: &Token) -> Error {
        Error::syntax(
            &got.at,
            format!("expected {what}, but got {}", describe(got)),
        )
    }

    /// drbdadm's `check_string_error`: tokens that are broken strings get their own message.
    fn string_error(&self, got: &Token) -> Option<Error> {
        let msg = match got.tok {
            Tok::ErrLongString => "token too long (at most 128 characters)",
            Tok::ErrLongDqString => "double quoted string too long (at most 255 characters)",
            Tok::ErrDqString => "unterminated double quoted string (no embedded newlines allowed)",
            _ => return None,
        };
        let shown: String = got.text.chars().take(20).collect();
        Some(Error::syntax(&got.at, format!("{msg}: >>>{shown}...<<<")))
    }

    fn expect_op(&mut self, op: u8) -> Result<Token, Error> {
        let t = self.next();
        if t.tok == Tok::Op(op) {
            Ok(t)
        } else {
            Err(self.expected(&format!("'{}'", op as char), &t))
        }
    }

    fn expect_string(&mut self) -> Result<Token, Error> {
        let t = self.next();
        if t.tok == Tok::Str {
            return Ok(t);
        }
        Err(self
            .string_error(&t)
            .unwrap_or_else(|| self.expected("a string", &t)))
    }

    fn expect_integer(&mut self) -> Result<Token, Error> {
        let t = self.next();
        if t.tok == Tok::Integer {
            Ok(t)
        } else {
            Err(self.expected("an integer", &t))
        }
    }

    /// drbdadm's `expect_STRING_or_INT` (which also takes the word `on`).
    fn expect_value(&mut self) -> Result<Token, Error> {
        let t = self.next();
        match t.tok {
            Tok::Integer | Tok::Str | Tok::Kw(Kw::On) => Ok(t),
            _ => Err(self
                .string_error(&t)
                .unwrap_or_else(|| self.expected("a string or an integer", &t))),
        }
    }

    /// Notes an error drbdadm reports and parses on after (it sets `config_valid = 0`).
    fn soft(&mut self, e: Error) {
        if self.out.deferred.is_none() {
            self.out.deferred = Some(e);
        }
    }

    /// Passes fatal errors on; keeps going after range errors, like drbdadm.
    fn keep_going(&mut self, r: Result<(), Error>) -> Result<(), Error> {
        match r {
            Err(e @ Error::Invalid { .. }) => {
                self.soft(e);
                Ok(())
            }
            other => other,
        }
    }

    fn uniq(&mut self, what: &str, key: String, at: &Location) -> Result<(), Error> {
        if let Some(first) = self.out.uniq.get(&key) {
            return Err(Error::invalid(
                at,
                format!("conflicting use of {what} '{key}'; first used at {first}"),
            ));
        }
        self.out.uniq.insert(key, at.clone());
        Ok(())
    }

    fn upr(&mut self, what: &str, key: String, at: &Location) -> Result<(), Error> {
        if let Some(first) = self.upr.get(&key) {
            return Err(Error::invalid(
                at,
                format!("conflicting use of {what} '{key}'; first used at {first}"),
            ));
        }
        self.upr.insert(key, at.clone());
        Ok(())
    }

    /// drbdadm's parse-time range check (`range_check`), on the option's value token.
    fn range_check(&self, range: Range, name: &str, value: &mut Token) -> Result<(), Error> {
        let (unit, min, max) = match range {
            Range::None | Range::AlExtents => return Ok(()),
            Range::Protocol => {
                let up = value.text.to_ascii_uppercase();
                if matches!(up.as_str(), "A" | "B" | "C") {
                    value.text = up;
                    return Ok(());
                }
                return Err(Error::invalid(
                    &value.at,
                    format!("unknown protocol '{}', should be one of A,B,C", value.text),
                ));
            }
            Range::DiskSize => (Unit::Sectors, 0, 2u64 << 40),
            Range::Timeout => (Unit::One, 1, 600),
            Range::KoCount => (Unit::One, 0, 200),
            Range::PingInt => (Unit::One, 1, 120),
            Range::MaxBuffers => (Unit::One, 32, 131072),
            Range::SndbufSize | Range::RcvbufSize => (Unit::One, 0, 10 << 20),
            Range::ConnectInt => (Unit::One, 1, 120),
            Range::MaxEpochSize => (Unit::One, 1, 20000),
            Range::CongFill => (Unit::Sectors, 0, 10 << 21),
            Range::CongExtents => (Unit::One, 67, 0xfffe),
            Range::Rate => (Unit::Kilo, 1, 4 << 20),
            Range::CPlanAhead => (Unit::One, 0, 300),
            Range::CDelayTarget => (Unit::One, 1, 100),
            Range::CFillTarget => (Unit::Sectors, 0, 1 << 20),
            Range::CMaxRate => (Unit::Kilo, 250, 4 << 20),
            Range::CMinRate => (Unit::Kilo, 0, 4 << 20),
            Range::WfcTimeout | Range::DegrWfcTimeout | Range::OutdatedWfcTimeout => {
                (Unit::One, 0, 300000)
            }
        };
        check_range(name, value, unit, min, max)
    }

    fn top(&mut self) -> Result<(), Error> {
        loop {
            let t = self.next();
            match t.tok {
                Tok::Kw(Kw::Global) => self.global(&t)?,
                Tok::Kw(Kw::Common) => {
                    self.expect_op(b'{')?;
                    let res = self.resource("common".to_string(), &t, NONE_H_ALLOWED)?;
                    self.out.common = Some(res);
                }
                Tok::Kw(Kw::Resource) => {
                    let name = self.expect_string()?;
                    // drbdadm exits with a usage error (1) for these.
                    if name.text.is_empty() {
                        return Err(Error::Usage(format!("{}: resource name is empty", name.at)));
                    }
                    if name.text.chars().any(|c| c < ' ' || c == '\x7f') {
                        return Err(Error::Usage(format!(
                            "{}: resource name is invalid: it contains control characters",
                            name.at
                        )));
                    }
                    self.expect_op(b'{')?;
                    let res = self.resource(name.text, &t, 0)?;
                    self.out.resources.push(res);
                }
                Tok::Kw(Kw::Skip) => self.skip(&t)?,
                Tok::Kw(Kw::Include) => {
                    let pattern = self.expect_string()?;
                    self.expect_op(b';')?;
                    self.include(&pattern)?;
                }
                Tok::Eof => return Ok(()),
                _ => return Err(self.expected("global | common | resource | skip | include", &t)),
            }
        }
    }

    fn global(&mut self, kw: &Token) -> Result<(), Error> {
        self.uniq("global section", "global".to_string(), &kw.at)?;
        if !self.out.resources.is_empty() {
            self.out.warnings.push(format!(
                "{}: you should put the global {{}} section in front of any resource {{}} section",
                kw.at
            ));
        }
        self.expect_op(b'{')?;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Kw(Kw::UdevAlwaysUseVnr) => self.out.global.udev_always_use_vnr = true,
                Tok::Kw(Kw::DisableIpVerification) => {
                    self.out.global.disable_ip_verification = true
                }
                Tok::Kw(
                    k @ (Kw::MinorCount
                    | Kw::DialogRefresh
                    | Kw::CmdTimeoutShort
                    | Kw::CmdTimeoutMedium
                    | Kw::CmdTimeoutLong),
                ) => {
                    let v = self.expect_integer()?;
                    let (min, max) = match k {
                        Kw::MinorCount => (1, 255),
                        Kw::DialogRefresh => (0, 600),
                        _ => (0, 900),
                    };
                    let r = check_range(&t.text, &v, Unit::One, min, max);
                    self.keep_going(r)?;
                    let n = Some(atoi(&v.text));
                    let g = &mut self.out.global;
                    match k {
                        Kw::MinorCount => g.minor_count = n,
                        Kw::DialogRefresh => g.dialog_refresh = n,
                        Kw::CmdTimeoutShort => g.cmd_timeout_short = n,
                        Kw::CmdTimeoutMedium => g.cmd_timeout_medium = n,
                        _ => g.cmd_timeout_long = n,
                    }
                }
                Tok::Kw(Kw::UsageCount) => {
                    let v = self.next();
                    self.out.global.usage_count = match v.tok {
                        Tok::Kw(Kw::Yes) => UsageCount::Yes,
                        Tok::Kw(Kw::No) => UsageCount::No,
                        Tok::Kw(Kw::Ask) => UsageCount::Ask,
                        _ => return Err(self.expected("yes | no | ask", &v)),
                    };
                }
                Tok::Op(b'}') => return Ok(()),
                _ => {
                    return Err(self.expected(
                        "usage-count | minor-count | dialog-refresh | disable-ip-verification \
                         | udev-always-use-vnr | cmd-timeout-short | cmd-timeout-medium \
                         | cmd-timeout-long",
                        &t,
                    ))
                }
            }
            self.expect_op(b';')?;
        }
    }

    fn skip(&mut self, kw: &Token) -> Result<(), Error> {
        let t = self.next();
        match t.tok {
            Tok::Str => {
                self.expect_op(b'{')?;
            }
            Tok::Op(b'{') => {}
            _ => {
                return Err(self
                    .string_error(&t)
                    .unwrap_or_else(|| self.expected("[ some_text ] {", &t)))
            }
        }
        let mut level = 1;
        while level > 0 {
            let t = self.next();
            match t.tok {
                Tok::Op(b'{') => level += 1,
                Tok::Op(b'}') => level -= 1,
                Tok::Eof => {
                    return Err(Error::syntax(
                        &kw.at,
                        "reached end of file while parsing this skip block",
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn include(&mut self, pattern: &Token) -> Result<(), Error> {
        let dir = self
            .canonical
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        // drbdadm globs relative to the including file's directory; that directory's own name
        // is literal, whatever characters it holds.
        let full = if Path::new(&pattern.text).is_absolute() {
            pattern.text.clone()
        } else {
            let dir = glob::Pattern::escape(&dir.to_string_lossy());
            format!("{}/{}", dir.trim_end_matches('/'), pattern.text)
        };
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let has_magic = pattern.text.contains(['*', '?', '[']);
        let mut matches: Vec<PathBuf> = match glob::glob_with(&full, opts) {
            Ok(paths) => paths.filter_map(Result::ok).collect(),
            Err(e) => {
                return Err(Error::invalid(
                    &pattern.at,
                    format!("bad include pattern '{}': {e}", pattern.text),
                ))
            }
        };
        matches.sort();
        if matches.is_empty() && !has_magic {
            self.soft(Error::Include {
                at: pattern.at.clone(),
                pattern: pattern.text.clone(),
            });
        }
        for path in matches {
            let real = std::fs::canonicalize(&path).unwrap_or(path.clone());
            if !self.out.seen_files.insert(real) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::InvalidData {
                    Error::invalid(&pattern.at, format!("{} is not UTF-8 text", path.display()))
                } else {
                    Error::Include {
                        at: pattern.at.clone(),
                        pattern: format!("{} ({source})", path.display()),
                    }
                }
            })?;
            let canonical = canonify(&path);
            let display = path.to_string_lossy().into_owned();
            parse_file(self.out, &canonical, &display, &text)?;
        }
        Ok(())
    }

    fn resource(&mut self, name: String, kw: &Token, flags: u8) -> Result<ResourceText, Error> {
        self.upr.clear();
        self.uniq("resource section", name.clone(), &kw.at)?;
        let mut res = ResourceText {
            name,
            file: self.canonical.to_string_lossy().into_owned(),
            start_line: self.lex.here().line,
            hosts: Vec::new(),
            volumes: Vec::new(),
            net: Vec::new(),
            disk: Vec::new(),
            startup: Vec::new(),
            options: Vec::new(),
            handlers: Vec::new(),
            become_primary_on: Vec::new(),
            stacked_timeouts: false,
            at: kw.at.clone(),
        };
        let rn = res.name.clone();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Kw(Kw::Opt(OptKw {
                    class: Class::NetOption,
                    ..
                })) if t.text == "protocol" => {
                    self.upr("protocol statement", format!("{rn}: protocol"), &t.at)?;
                    let mut v = self.expect_string()?;
                    let r = self.range_check(Range::Protocol, "protocol", &mut v);
                    self.keep_going(r)?;
                    res.net.push(Opt {
                        name: t.text.clone(),
                        value: Some(v.text),
                        verbatim: false,
                        at: t.at.clone(),
                    });
                    self.expect_op(b';')?;
                }
                Tok::Kw(Kw::On) => {
                    let names = self.hosts(b'{')?;
                    self.host_section(&mut res, names, &t, true, false)?;
                }
                Tok::Kw(Kw::StackedOnTopOf) => {
                    return Err(Error::Unsupported {
                        at: t.at,
                        what: "stacked-on-top-of (stacked resources)".into(),
                    })
                }
                Tok::Kw(Kw::Proxy) => {
                    return Err(Error::Unsupported {
                        at: t.at,
                        what: "proxy (DRBD Proxy)".into(),
                    })
                }
                Tok::Kw(Kw::IgnoreOn) => {
                    self.expect_string()?;
                    self.out.warnings.push(format!(
                        "{}: in resource {rn}, the 'ignore-on' keyword is deprecated",
                        t.at
                    ));
                    self.expect_op(b';')?;
                }
                Tok::Kw(Kw::ThisHost) | Tok::Kw(Kw::RemoteHost) => {
                    self.expect_op(b'{')?;
                    let names = vec![t.text.clone()];
                    self.host_section(&mut res, names, &t, false, false)?;
                }
                Tok::Kw(Kw::Floating) => {
                    self.host_section(&mut res, Vec::new(), &t, true, true)?;
                }
                Tok::Kw(Kw::Disk) => {
                    let v = self.next();
                    match v.tok {
                        Tok::Str => {
                            let (vol, e) = volume0(&mut res.volumes, &v.at);
                            vol.disk = Some(v.text);
                            if let Some(e) = e {
                                self.soft(e);
                            }
                            self.expect_op(b';')?;
                        }
                        Tok::Op(b'{') => {
                            self.upr("disk section", format!("{rn}:disk"), &t.at)?;
                            let opts = self.options(&DISK, None)?;
                            res.disk.extend(opts);
                        }
                        _ => {
                            return Err(self
                                .string_error(&v)
                                .unwrap_or_else(|| self.expected("a string | {", &v)))
                        }
                    }
                }
                Tok::Kw(Kw::Net) => {
                    self.upr("net section", format!("{rn}:net"), &t.at)?;
                    self.expect_op(b'{')?;
                    let opts = self.options(&NET, None)?;
                    res.net.extend(opts);
                }
                Tok::Kw(Kw::Syncer) => {
                    self.upr("syncer section", format!("{rn}:syncer"), &t.at)?;
                    self.expect_op(b'{')?;
                    self.syncer(&mut res)?;
                }
                Tok::Kw(Kw::Startup) => {
                    self.upr("startup section", format!("{rn}:startup"), &t.at)?;
                    self.expect_op(b'{')?;
                    res.startup = self.options(&STARTUP, Some(&mut res_delegate(&mut res)))?;
                }
                Tok::Kw(Kw::Handlers) => {
                    self.upr("handlers section", format!("{rn}:handlers"), &t.at)?;
                    self.expect_op(b'{')?;
                    res.handlers = self.options(&HANDLERS, None)?;
                }
                Tok::Kw(Kw::Device) | Tok::Kw(Kw::MetaDisk) | Tok::Kw(Kw::FlexMetaDisk) => {
                    if t.tok == Tok::Kw(Kw::Device) {
                        self.upr("device statement", format!("{rn}:device"), &t.at)?;
                    }
                    let (vol, e) = volume0(&mut res.volumes, &t.at);
                    if let Some(e) = e {
                        self.soft(e);
                    }
                    self.volume_stmt(vol, &[], &t)?;
                }
                Tok::Kw(Kw::Volume) => {
                    let n = self.expect_integer()?;
                    let vol = self.volume(atoi(&n.text), &[], &t)?;
                    insert_sorted(&mut res.volumes, vol);
                }
                Tok::Kw(Kw::Options) => {
                    self.upr(
                        "resource options section",
                        format!("{rn}:res_options"),
                        &t.at,
                    )?;
                    self.expect_op(b'{')?;
                    let opts = self.options(&RES_OPTIONS, None)?;
                    res.options.extend(opts);
                }
                // drbdadm ends a resource silently at the end of its file, too.
                Tok::Op(b'}') | Tok::Eof => break,
                _ => {
                    return Err(self.expected(
                        "protocol | on | floating | disk | net | syncer | startup | handlers | \
                         options | device | meta-disk | volume | ignore-on | }",
                        &t,
                    ))
                }
            }
        }
        if flags == NONE_H_ALLOWED {
            if let Some(h) = res.hosts.first() {
                let e = Error::invalid(
                    &h.at,
                    format!(
                        "in the {} section, there are no host sections allowed",
                        res.name
                    ),
                );
                self.soft(e);
            }
        }
        let r = check_volumes_hosts(&res);
        self.keep_going(r)?;
        Ok(res)
    }

    /// Host names up to `delim` (at least one).
    fn hosts(&mut self, delim: u8) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Str => names.push(t.text),
                Tok::Op(d) if d == delim => {
                    if names.is_empty() {
                        return Err(self.expected("a host name", &t));
                    }
                    return Ok(names);
                }
                _ => return Err(self.expected(&format!("a host name | '{}'", delim as char), &t)),
            }
        }
    }

    fn address(&mut self) -> Result<AddressText, Error> {
        let t = self.next();
        let (af, addr) = match t.tok {
            Tok::Kw(Kw::Af) => {
                let af = if t.text == "sci" {
                    "ssocks".to_string()
                } else {
                    t.text.clone()
                };
                let a = self.next();
                if a.tok != Tok::Ipv4 {
                    return Err(self.expected("an IPv4 address", &a));
                }
                (af, a)
            }
            Tok::Kw(Kw::Ipv6) => {
                self.expect_op(b'[')?;
                let a = self.next();
                if a.tok != Tok::Ipv6Addr {
                    return Err(self.expected("an IPv6 address", &a));
                }
                self.expect_op(b']')?;
                ("ipv6".to_string(), a)
            }
            Tok::Ipv4 => ("ipv4".to_string(), t.clone()),
            _ => return Err(self.expected("ssocks | sdp | ipv4 | ipv6 | <ipv4 address>", &t)),
        };
        self.expect_op(b':')?;
        let port = self.expect_integer()?;
        let r = check_range("port", &port, Unit::One, 1, 0xffff);
        self.keep_going(r)?;
        Ok(AddressText {
            af,
            addr: addr.text,
            port: port.text,
            at: t.at,
        })
    }

    /// `address …;` inside a host section, with drbdadm's uniqueness rule: loopback
    /// addresses are unique per host name, others across the whole file.
    fn host_address(&mut self, names: &[String]) -> Result<AddressText, Error> {
        let a = self.address()?;
        if is_loopback(&a.addr) {
            for h in names {
                self.uniq("IP", format!("{h}:{}:{}", a.addr, a.port), &a.at)?;
            }
        } else {
            self.uniq("IP", format!("{}:{}", a.addr, a.port), &a.at)?;
        }
        self.expect_op(b';')?;
        Ok(a)
    }

    fn host_section(
        &mut self,
        res: &mut ResourceText,
        mut names: Vec<String>,
        kw: &Token,
        require_all: bool,
        floating: bool,
    ) -> Result<(), Error> {
        let rn = res.name.clone();
        let mut host = HostText {
            names: Vec::new(),
            floating,
            address: None,
            alt_address: None,
            volumes: Vec::new(),
            options: Vec::new(),
            require_all,
            at: kw.at.clone(),
        };
        let mut in_braces = true;
        if floating {
            let a = self.address()?;
            self.uniq("IP", format!("{}:{}", a.addr, a.port), &a.at)?;
            names = vec![if a.af == "ipv6" {
                format!("ipv6 [{}]:{}", a.addr, a.port)
            } else {
                format!("{}:{}", a.addr, a.port)
            }];
            host.address = Some(a);
            let t = self.next();
            match t.tok {
                Tok::Op(b'{') => {}
                Tok::Op(b';') => in_braces = false,
                _ => return Err(self.expected("{ | ;", &t)),
            }
        }
        host.names = names.clone();
        for h in &names {
            self.upr("host section", format!("{rn}: on {h}"), &kw.at)?;
        }
        while in_braces {
            let t = self.next();
            match t.tok {
                Tok::Kw(k @ (Kw::Disk | Kw::Device | Kw::MetaDisk | Kw::FlexMetaDisk)) => {
                    let (what, key) = match k {
                        Kw::Disk => ("disk statement", "disk"),
                        Kw::Device => ("device statement", "device"),
                        _ => ("meta-disk statement", "meta-disk"),
                    };
                    for h in &names {
                        self.upr(what, format!("{rn}:{h}:{key}"), &t.at)?;
                    }
                    let (vol, e) = volume0(&mut host.volumes, &t.at);
                    if let Some(e) = e {
                        self.soft(e);
                    }
                    self.volume_stmt(vol, &names, &t)?;
                }
                Tok::Kw(k @ (Kw::Address | Kw::AltAddress)) => {
                    if floating {
                        return Err(Error::invalid(
                            &t.at,
                            "address statement not allowed for floating {} host sections",
                        ));
                    }
                    let (what, key) = if k == Kw::Address {
                        ("address statement", "address")
                    } else {
                        ("alt-address statement", "alt-address")
                    };
                    for h in &names {
                        self.upr(what, format!("{rn}:{h}:{key}"), &t.at)?;
                    }
                    let a = self.host_address(&names)?;
                    if k == Kw::Address {
                        host.address = Some(a);
                    } else {
                        host.alt_address = Some(a);
                    }
                }
                Tok::Kw(Kw::Proxy) => {
                    return Err(Error::Unsupported {
                        at: t.at,
                        what: "proxy (DRBD Proxy)".into(),
                    })
                }
                Tok::Kw(Kw::Volume) => {
                    let n = self.expect_integer()?;
                    let vol = self.volume(atoi(&n.text), &names, &t)?;
                    insert_sorted(&mut host.volumes, vol);
                }
                Tok::Kw(Kw::Options) => {
                    self.expect_op(b'{')?;
                    host.options = self.options(&RES_OPTIONS, None)?;
                }
                Tok::Op(b'}') => in_braces = false,
                _ => {
                    return Err(self.expected(
                        "disk | device | address | meta-disk | flexible-meta-disk | volume | \
                         options | }",
                        &t,
                    ))
                }
            }
        }
        // Volumes given at resource level so far fill in what this host leaves out.
        for s in &res.volumes {
            let idx = match host.volumes.iter().position(|v| v.vnr == s.vnr) {
                Some(i) => i,
                None => {
                    let t = VolumeText::new(s.vnr, s.implicit, s.at.clone());
                    insert_sorted(&mut host.volumes, t);
                    host.volumes
                        .iter()
                        .rposition(|v| v.vnr == s.vnr)
                        .expect("just inserted")
                }
            };
            let t = &mut host.volumes[idx];
            if t.disk.is_none() {
                if let Some(d) = &s.disk {
                    t.disk = Some(d.clone());
                    for h in &names {
                        let key = format!("disk:{h}:{d}");
                        if let Some(first) = self.out.uniq.get(&key) {
                            return Err(Error::invalid(
                                &s.at,
                                format!("conflicting use of disk '{key}'; first used at {first}"),
                            ));
                        }
                        self.out.uniq.insert(key, s.at.clone());
                    }
                }
            }
            if t.device.is_none() {
                t.device.clone_from(&s.device);
            }
            if t.minor.is_none() {
                if let Some(m) = s.minor {
                    t.minor = Some(m);
                    for h in &names {
                        let key = format!("device-minor:{h}:{m}");
                        if let Some(first) = self.out.uniq.get(&key) {
                            return Err(Error::invalid(
                                &s.at,
                                format!(
                                    "conflicting use of device-minor '{key}'; first used at {first}"
                                ),
                            ));
                        }
                        self.out.uniq.insert(key, s.at.clone());
                    }
                }
            }
            if t.meta_disk.is_none() && s.meta_disk.is_some() {
                t.meta_disk.clone_from(&s.meta_disk);
                t.meta_index.clone_from(&s.meta_index);
            }
        }
        for i in 0..host.volumes.len() {
            let (md, idx, at) = {
                let v = &host.volumes[i];
                (v.meta_disk.clone(), v.meta_index.clone(), v.at.clone())
            };
            if let Some(md) = md {
                if md != "internal" {
                    for h in &names {
                        let key = format!("{h}:{md}[{}]", idx.as_deref().unwrap_or("(null)"));
                        self.uniq("meta-disk", key, &at)?;
                    }
                }
            }
        }
        if require_all {
            let desc = if floating {
                format!("floating {}", names.join(" "))
            } else {
                format!("on {}", names.join(" "))
            };
            let missing = |what: &str| {
                Error::invalid(
                    &kw.at,
                    format!("in resource {rn}, {desc} {{ ... }}: '{what}' keyword missing"),
                )
            };
            if host.address.is_none() {
                self.soft(missing("address"));
            }
            let mut any_implicit = false;
            let mut any_nonzero = false;
            for v in &host.volumes {
                any_implicit |= v.implicit;
                any_nonzero |= v.vnr != 0;
                if v.device.is_none() && v.minor.is_none() {
                    self.soft(missing("device"));
                }
                if v.disk.is_none() {
                    self.soft(missing("disk"));
                }
                if v.meta_disk.is_none() {
                    self.soft(missing("meta-disk"));
                }
            }
            if any_implicit && any_nonzero {
                self.soft(Error::invalid(
                    &kw.at,
                    format!("in resource {rn}: you must not mix implicit and explicit volumes"),
                ));
            }
        }
        res.hosts.push(host);
        Ok(())
    }

    /// `volume N { … }`.
    fn volume(&mut self, vnr: i64, names: &[String], kw: &Token) -> Result<VolumeText, Error> {
        let mut vol = VolumeText::new(vnr, false, kw.at.clone());
        self.expect_op(b'{')?;
        loop {
            let t = self.next();
            match t.tok {
                Tok::Op(b'}') => return Ok(vol),
                Tok::Kw(Kw::Disk | Kw::Device | Kw::MetaDisk | Kw::FlexMetaDisk) => {
                    self.volume_stmt(&mut vol, names, &t)?;
                }
                _ => {
                    return Err(
                        self.expected("device | disk | meta-disk | flexible-meta-disk | }", &t)
                    )
                }
            }
        }
    }

    /// One of `disk`, `device`, `meta-disk`, `flexible-meta-disk` (keyword in `kw`).
    fn volume_stmt(
        &mut self,
        vol: &mut VolumeText,
        names: &[String],
        kw: &Token,
    ) -> Result<(), Error> {
        match kw.tok {
            Tok::Kw(Kw::Disk) => {
                let t = self.next();
                match t.tok {
                    Tok::Str => {
                        vol.disk = Some(t.text);
                        self.expect_op(b';')?;
                    }
                    Tok::Op(b'{') => vol.disk_options = self.options(&DISK, None)?,
                    _ => {
                        return Err(self
                            .string_error(&t)
                            .unwrap_or_else(|| self.expected("a string | {", &t)))
                    }
                }
            }
            Tok::Kw(Kw::Device) => self.device(vol, names, kw)?,
            Tok::Kw(Kw::MetaDisk) => {
                let t = self.expect_string()?;
                if t.text == "internal" {
                    vol.meta_disk = Some(t.text);
                    vol.meta_index = Some("internal".into());
                    self.expect_op(b';')?;
                } else {
                    vol.meta_disk = Some(t.text);
                    let n = self.next();
                    match n.tok {
                        Tok::Op(b'[') => {
                            let i = self.expect_integer()?;
                            vol.meta_index = Some(i.text);
                            self.expect_op(b']')?;
                            self.expect_op(b';')?;
                        }
                        Tok::Op(b';') => vol.meta_index = Some("flexible".into()),
                        _ => return Err(self.expected("[ | ;", &n)),
                    }
                }
            }
            Tok::Kw(Kw::FlexMetaDisk) => {
                let t = self.expect_string()?;
                vol.meta_index = Some(
                    if t.text == "internal" {
                        "internal"
                    } else {
                        "flexible"
                    }
                    .into(),
                );
                vol.meta_disk = Some(t.text);
                self.expect_op(b';')?;
            }
            _ => unreachable!("volume_stmt is only called for volume statement keywords"),
        }
        Ok(())
    }

    fn device(&mut self, vol: &mut VolumeText, names: &[String], kw: &Token) -> Result<(), Error> {
        let t = self.next();
        let mut explicit_minor = false;
        match t.tok {
            Tok::Str => {
                let dev = if t.text.starts_with("drbd") {
                    format!("/dev/{}", t.text)
                } else {
                    t.text.clone()
                };
                if !dev.starts_with("/dev/drbd") {
                    self.soft(Error::invalid(
                        &t.at,
                        "device name must start with /dev/drbd (/dev/ is optional, but drbd is required)",
                    ));
                }
                vol.device = Some(dev.clone());
                let n = self.next();
                match n.tok {
                    Tok::Op(b';') => {
                        let tail = dev.strip_prefix("/dev/drbd").unwrap_or("");
                        if only_digits(tail) {
                            vol.minor = Some(atoi(tail));
                        } else {
                            self.soft(Error::invalid(
                                &t.at,
                                "no minor given nor device name contains a minor number",
                            ));
                        }
                    }
                    Tok::Kw(Kw::Minor) => explicit_minor = true,
                    _ => return Err(self.expected("minor | ;", &n)),
                }
            }
            Tok::Kw(Kw::Minor) => explicit_minor = true,
            // drbdadm consumes anything else silently; the completeness check reports it.
            _ => {}
        }
        if explicit_minor {
            let m = self.expect_integer()?;
            vol.minor = Some(atoi(&m.text));
            self.expect_op(b';')?;
            if let (Some(dev), Some(minor)) = (vol.device.clone(), vol.minor) {
                let tail = dev.strip_prefix("/dev/drbd").unwrap_or("");
                if only_digits(tail) {
                    if atoi(tail) != minor {
                        self.soft(Error::invalid(
                            &m.at,
                            format!(
                                "explicit minor number must match with device name; try \
                                 \"device /dev/drbd{minor} minor {minor};\", or leave off either \
                                 device name or explicit minor"
                            ),
                        ));
                    }
                } else if tail.starts_with('_') {
                    self.out.warnings.push(format!(
                        "{}: arbitrary device names (/dev/drbd_...) are no longer generated \
                         from current udev rules",
                        t.at
                    ));
                } else {
                    self.soft(Error::invalid(
                        &t.at,
                        "explicit device names should be of the form /dev/drbd<minor>",
                    ));
                }
            }
        }
        let minor_key = vol.minor.map_or(u32::MAX as i64, |m| m as u32 as i64);
        for h in names {
            self.uniq(
                "device-minor",
                format!("device-minor:{h}:{minor_key}"),
                &kw.at,
            )?;
            if let Some(dev) = vol.device.clone() {
                self.uniq("device", format!("device:{h}:{dev}"), &kw.at)?;
            }
        }
        Ok(())
    }

    /// An option section after its `{`, up to and including `}` (`parse_options_d`).
    fn options(
        &mut self,
        sec: &Section,
        mut delegate: Option<&mut ResDelegate<'_>>,
    ) -> Result<Vec<Opt>, Error> {
        let mut opts = Vec::new();
        loop {
            let t = self.next();
            let class = match t.tok {
                Tok::Kw(Kw::Opt(o)) => Some(o.class),
                _ => None,
            };
            if t.tok == Tok::Eof {
                return Err(self.expected("an option", &t));
            }
            if class.is_some() && class == sec.flag {
                let v = self.next();
                let value = match v.tok {
                    Tok::Kw(Kw::Yes) => "yes",
                    Tok::Kw(Kw::No) => "no",
                    Tok::Op(b';') => {
                        opts.push(opt(&t, "yes"));
                        continue;
                    }
                    _ => return Err(self.expected("yes | no | ;", &v)),
                };
                opts.push(opt(&t, value));
            } else if class.is_some() && class == sec.no_flag {
                let mut o = opt(&t, "no");
                o.name = t.text[3..].to_string();
                opts.push(o);
            } else if class == Some(sec.option) {
                let Tok::Kw(Kw::Opt(kw)) = t.tok else {
                    unreachable!("class is only set for option keywords")
                };
                let name = alias(sec.option, &t.text);
                let mut v = self.expect_value()?;
                let r = self.range_check(kw.range, name, &mut v);
                self.keep_going(r)?;
                let mut o = opt(&t, &v.text);
                o.name = name.to_string();
                opts.push(o);
            } else if class.is_some() && class == sec.delegate && delegate.is_some() {
                let d = delegate.as_deref_mut().expect("checked above");
                self.startup_delegate(&t, d)?;
                continue;
            } else if class == Some(Class::Deprecated) {
                self.expect_value()?;
                self.out
                    .warnings
                    .push(format!("{}: ignoring deprecated option '{}'", t.at, t.text));
            } else if t.tok == Tok::Op(b'}') {
                return Ok(opts);
            } else {
                return Err(self.expected("an option keyword", &t));
            }
            self.expect_op(b';')?;
        }
    }

    fn startup_delegate(&mut self, t: &Token, d: &mut ResDelegate<'_>) -> Result<(), Error> {
        match t.text.as_str() {
            "become-primary-on" => {
                let names = self.hosts(b';')?;
                d.become_primary_on.extend(names);
                Ok(())
            }
            "stacked-timeouts" => {
                *d.stacked_timeouts = true;
                self.expect_op(b';')?;
                Ok(())
            }
            _ => Err(self.expected("an option keyword", t)),
        }
    }

    /// The deprecated `syncer { }` section: its options go to `net`, `disk` or `options`.
    fn syncer(&mut self, res: &mut ResourceText) -> Result<(), Error> {
        loop {
            let t = self.next();
            let kw = match t.tok {
                Tok::Op(b'}') => return Ok(()),
                Tok::Kw(Kw::Opt(o)) if o.syncer => o,
                _ => return Err(self.expected("a syncer option keyword", &t)),
            };
            let list = match kw.class {
                Class::NetFlag | Class::NetNoFlag | Class::NetOption => &mut res.net,
                Class::DiskFlag | Class::DiskNoFlag | Class::DiskOption => &mut res.disk,
                _ => &mut res.options,
            };
            let end;
            match kw.class {
                Class::NetFlag | Class::DiskFlag => {
                    let v = self.next();
                    match v.tok {
                        Tok::Kw(Kw::No) => {
                            list.push(opt(&t, "no"));
                            end = self.next();
                        }
                        Tok::Kw(Kw::Yes) => {
                            list.push(opt(&t, "yes"));
                            end = self.next();
                        }
                        _ => {
                            list.push(opt(&t, "yes"));
                            end = v;
                        }
                    }
                }
                _ => {
                    let name = alias(kw.class, &t.text);
                    let mut v = self.expect_value()?;
                    let r = self.range_check(kw.range, name, &mut v);
                    self.keep_going(r)?;
                    let mut o = opt(&t, &v.text);
                    o.name = name.to_string();
                    let list = match kw.class {
                        Class::NetOption => &mut res.net,
                        Class::DiskOption => &mut res.disk,
                        _ => &mut res.options,
                    };
                    list.push(o);
                    end = self.next();
                }
            }
            if end.tok != Tok::Op(b';') {
                return Err(self.expected("';'", &end));
            }
        }
    }
}

/// What the startup section's delegate statements write into.
struct ResDelegate<'r> {
    become_primary_on: &'r mut Vec<String>,
    stacked_timeouts: &'r mut bool,
}

fn res_delegate(res: &mut ResourceText) -> ResDelegate<'_> {
    ResDelegate {
        become_primary_on: &mut res.become_primary_on,
        stacked_timeouts: &mut res.stacked_timeouts,
    }
}

fn opt(t: &Token, value: &str) -> Opt {
    Opt {
        name: t.text.clone(),
        value: Some(value.to_string()),
        verbatim: false,
        at: t.at.clone(),
    }
}

/// Old option names drbdadm renames (`check_and_change_deprecated_alias`).
fn alias(section: Class, name: &str) -> &str {
    match (section, name) {
        (Class::HandlerOption, "outdate-peer") => "fence-peer",
        (Class::DiskOption, "rate") => "resync-rate",
        (Class::DiskOption, "after") => "resync-after",
        _ => name,
    }
}

/// `m_strtoll_range`: unreadable numbers are fatal (exit 20), out-of-range ones invalid.
fn check_range(name: &str, value: &Token, unit: Unit, min: u64, max: u64) -> Result<(), Error> {
    let n = parse_number(&value.text, unit).map_err(|e| Error::BadNumber {
        at: value.at.clone(),
        message: format!("{name}: {e}"),
    })?;
    if n < min || n > max {
        let u = unit.suffix();
        return Err(Error::invalid(
            &value.at,
            format!(
                "{name} {} => {n}{u} out of range [{min}..{max}]{u}",
                value.text
            ),
        ));
    }
    Ok(())
}

/// drbdadm's `volume0`: the implicit volume 0, which explicit volumes may not accompany
/// (drbdadm reports that and goes on with the first volume).
fn volume0<'v>(
    vols: &'v mut Vec<VolumeText>,
    at: &Location,
) -> (&'v mut VolumeText, Option<Error>) {
    let mut err = None;
    if vols.is_empty() {
        vols.push(VolumeText::new(0, true, at.clone()));
    } else if !(vols.len() == 1 && vols[0].vnr == 0 && vols[0].implicit) {
        err = Some(Error::invalid(
            at,
            "mixing explicit and implicit volumes is not allowed",
        ));
    }
    (&mut vols[0], err)
}

/// Inserts after every volume with a number not above `vol`'s (drbdadm's `INSERT_SORTED`).
fn insert_sorted(vols: &mut Vec<VolumeText>, vol: VolumeText) {
    let i = vols
        .iter()
        .position(|v| v.vnr > vol.vnr)
        .unwrap_or(vols.len());
    vols.insert(i, vol);
}

/// Every host section of a resource defines the same volumes (`check_volumes_hosts`).
fn check_volumes_hosts(res: &ResourceText) -> Result<(), Error> {
    let Some(first) = res.hosts.first() else {
        return Ok(());
    };
    for other in &res.hosts[1..] {
        let a: Vec<(i64, bool)> = first.volumes.iter().map(|v| (v.vnr, v.implicit)).collect();
        let b: Vec<(i64, bool)> = other.volumes.iter().map(|v| (v.vnr, v.implicit)).collect();
        for (vnr, _) in &a {
            if !b.iter().any(|(n, _)| n == vnr) {
                return Err(Error::invalid(
                    &other.at,
                    format!(
                        "in resource {}, on {} {{ ... }}: volume {vnr} missing (present on {})",
                        res.name,
                        other.names.join(" "),
                        first.names.join(" ")
                    ),
                ));
            }
        }
        for (vnr, imp) in &b {
            match a.iter().find(|(n, _)| n == vnr) {
                None => {
                    return Err(Error::invalid(
                        &other.at,
                        format!(
                            "in resource {}, on {} {{ ... }}: volume {vnr} not defined on {}",
                            res.name,
                            other.names.join(" "),
                            first.names.join(" ")
                        ),
                    ))
                }
                Some((_, i)) if i != imp => {
                    return Err(Error::invalid(
                        &other.at,
                        format!(
                            "in resource {}, on {} resp. {}: volume {vnr} must not be implicit \
                             on one but not the other",
                            res.name,
                            first.names.join(" "),
                            other.names.join(" ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}
