//! `udrbdmeta`: drbdmeta's command line for v08 meta-data, on top of `udrbd-metadata`.
//!
//! `udrbdmeta [--force] MINOR v08 DEVICE INDEX COMMAND [ARGS]` with the commands, messages,
//! questions and exit codes of drbd-utils' `drbdmeta` (read from `user/shared/drbdmeta.c`,
//! v9.22.0, and checked by running it):
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | success (also: `set-gi` answered "no", `wipe-md` with nothing to wipe) |
//! | 1 | command failed: no valid meta-data, unclean meta-data for `dump-md`, a question answered "no" |
//! | 5 | `outdate` of an inconsistent device |
//! | 10 | bad input: device too small, parse error in a dump, bad `set-gi` value, write failure |
//! | 20 | usage error, cannot open the device or the lock, not a block device without `--force` |
//! | 30 | `create-md` asked to change AL striping in place (not implemented, as in drbdmeta) |
//! | 40 | `create-md` refused: a file system or signature the meta-data would destroy |
//!
//! Every error names the device (or the dump file and line) and the field.

mod commands;
mod device;

use std::ffi::OsString;
use std::io::Write;

pub use device::Confirm;

/// A command's failure: the exit code and the message for stderr (if not already printed).
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    pub msg: Option<String>,
}

impl Fail {
    pub fn new(code: i32, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: Some(msg.into()),
        }
    }

    /// Exit with `code`; everything was already printed.
    pub fn quiet(code: i32) -> Fail {
        Fail { code, msg: None }
    }
}

/// Parsed global options (drbdmeta's `metaopt`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub force: bool,
    pub verbose: u32,
    pub ignore_sanity_checks: bool,
    pub dry_run: bool,
    pub peer_max_bio_size: Option<u32>,
    pub al_stripes: Option<u32>,
    pub al_stripe_size_4k: Option<u32>,
    pub node_id: Option<i64>,
}

/// One parsed command line.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub opts: Options,
    /// The DRBD device argument (minor, `/dev/drbdN` or `-`).
    pub drbd_dev: String,
    pub minor: Option<u32>,
    pub device: String,
    pub index: udrbd_metadata::MetaIndex,
    pub command: String,
    pub args: Vec<String>,
    /// The whole command line, for the dump header.
    pub argv: Vec<String>,
}

const LONG_OPTS: &[(&str, bool)] = &[
    ("ignore-sanity-checks", false),
    ("dry-run", false),
    ("force", false),
    ("verbose", false),
    ("peer-max-bio-size", true),
    ("node-id", true),
    ("al-stripes", true),
    ("al-stripe-size-kB", true),
    ("initialize-bitmap", true),
];

/// Commands and whether they modify the meta-data (drbdmeta `cmds[]`).
const COMMANDS: &[(&str, &str, bool)] = &[
    ("get-gi", "", false),
    ("show-gi", "", false),
    ("dump-md", "", false),
    ("restore-md", "file", true),
    ("verify-dump", "file", false),
    ("apply-al", "", true),
    ("wipe-md", "", true),
    ("outdate", "", true),
    ("invalidate", "", true),
    ("dstate", "", false),
    ("read-dev-uuid", "", false),
    ("write-dev-uuid", "VAL", true),
    ("set-gi", ":::VAL:VAL:...", true),
    ("check-resize", "", true),
    (
        "create-md",
        "[--peer-max-bio-size {val}] [--al-stripes {val}] [--al-stripe-size-kB {val}]",
        true,
    ),
];

fn usage(progname: &str) -> Fail {
    let mut s = format!(
        "\nUSAGE: {progname} [--force] DEVICE FORMAT [FORMAT ARGS...] COMMAND [CMD ARGS...]\n\n\
         FORMATS:\n  v08 device index\n\nCOMMANDS:\n"
    );
    for (name, args, _) in COMMANDS {
        if *name == "read-dev-uuid" || *name == "write-dev-uuid" || *name == "set-gi" {
            continue;
        }
        s.push_str(&format!("  {name} {args}\n"));
    }
    print!("{s}");
    Fail::quiet(20)
}

/// drbd-utils `m_strtoll`: a number with an optional unit suffix (k, M, G, T; s = sectors),
/// returned in units of `def_unit` (`1` = bytes/plain, `b'k'` = KiB).
fn strtoll_unit(s: &str, def_unit: u8) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: u64 = num
        .parse()
        .map_err(|_| format!("{s} is not a valid number"))?;
    let shift_of = |u: u8| -> Option<u32> {
        Some(match u {
            1 => 0,
            b's' => 9,
            b'k' | b'K' => 10,
            b'M' => 20,
            b'G' => 30,
            b'T' => 40,
            _ => return None,
        })
    };
    let unit_shift = match unit.as_bytes() {
        [] => shift_of(def_unit).unwrap_or(0),
        [u] => shift_of(*u).ok_or_else(|| format!("{s}: unknown unit '{}'", *u as char))?,
        _ => return Err(format!("{s}: unknown unit '{unit}'")),
    };
    let def_shift = shift_of(def_unit).unwrap_or(0);
    let bytes = v
        .checked_shl(unit_shift)
        .filter(|b| b >> unit_shift == v)
        .ok_or_else(|| format!("{s} is out of range"))?;
    Ok(bytes >> def_shift)
}

/// Parses the command line like drbdmeta's `getopt_long` loop (options may appear anywhere;
/// long options may be abbreviated; `--` ends them).
pub fn parse_args(argv: &[String]) -> Result<Invocation, Fail> {
    let progname = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
        .unwrap_or_else(|| "udrbdmeta".into());
    if argv.len() < 4 {
        return Err(usage(&progname));
    }
    let mut opts = Options::default();
    let mut positional = Vec::new();
    let mut i = 1;
    let mut only_positional = false;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if only_positional || !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            continue;
        }
        if a == "--" {
            only_positional = true;
            continue;
        }
        let (name, inline): (String, Option<String>) = if let Some(long) = a.strip_prefix("--") {
            let (n, v) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let exact = LONG_OPTS.iter().find(|(o, _)| *o == n);
            let prefixed: Vec<&(&str, bool)> =
                LONG_OPTS.iter().filter(|(o, _)| o.starts_with(n)).collect();
            let opt = match (exact, prefixed.as_slice()) {
                (Some((o, _)), _) => *o,
                (None, [(o, _)]) if !n.is_empty() => *o,
                _ => {
                    eprintln!("{progname}: unrecognized option '{a}'");
                    return Err(usage(&progname));
                }
            };
            (opt.to_string(), v)
        } else {
            // `a` starts with '-' and is longer than one byte, so there is a second char.
            let c = a[1..].chars().next().unwrap_or('-');
            let long = match c {
                'f' => "force",
                'v' => "verbose",
                'p' => "peer-max-bio-size",
                'i' => "node-id",
                's' => "al-stripes",
                'z' => "al-stripe-size-kB",
                'b' => "initialize-bitmap",
                _ => {
                    eprintln!("{progname}: invalid option -- '{c}'");
                    return Err(usage(&progname));
                }
            };
            let rest = &a[1 + c.len_utf8()..];
            (
                long.to_string(),
                (!rest.is_empty()).then(|| rest.to_string()),
            )
        };
        let takes_arg = LONG_OPTS
            .iter()
            .find(|(o, _)| *o == name)
            .map(|(_, t)| *t)
            .unwrap_or(false);
        let value = if takes_arg {
            match inline {
                Some(v) => Some(v),
                None if i < argv.len() => {
                    i += 1;
                    Some(argv[i - 1].clone())
                }
                None => {
                    eprintln!("{progname}: option '--{name}' requires an argument");
                    return Err(usage(&progname));
                }
            }
        } else {
            None
        };
        let value = value.unwrap_or_default();
        let num = |def: u8| {
            strtoll_unit(&value, def).map_err(|e| Fail::new(10, format!("--{name}: {e}")))
        };
        match name.as_str() {
            "force" => opts.force = true,
            "verbose" => opts.verbose += 1,
            "ignore-sanity-checks" => opts.ignore_sanity_checks = true,
            "dry-run" => opts.dry_run = true,
            "peer-max-bio-size" => {
                let v = num(1)?;
                if v > 1 << 20 {
                    return Err(Fail::new(10, "peer-max-bio-size out of range (0...1M)"));
                }
                opts.peer_max_bio_size = Some(v as u32);
            }
            "node-id" => {
                let v = num(1)?;
                if v > 31 {
                    return Err(Fail::new(10, "node-id out of range (0...31)"));
                }
                opts.node_id = Some(v as i64);
            }
            "al-stripes" => {
                opts.al_stripes = Some(
                    u32::try_from(num(1)?)
                        .map_err(|_| Fail::new(10, "invalid (too large) al-stripe* settings"))?,
                )
            }
            "al-stripe-size-kB" => {
                opts.al_stripe_size_4k = Some(
                    u32::try_from(num(b'k')? / 4)
                        .map_err(|_| Fail::new(10, "invalid (too large) al-stripe* settings"))?,
                )
            }
            "initialize-bitmap" => {
                if !matches!(value.as_str(), "automatic" | "zeroout" | "pwrite" | "skip") {
                    return Err(Fail::new(
                        10,
                        format!(
                            "invalid initialize-bitmap-mode \"{value}\", should be one of automatic|zeroout|pwrite|skip"
                        ),
                    ));
                }
                if value == "skip" {
                    return Err(Fail::new(
                        10,
                        "--initialize-bitmap=skip is not supported by udrbdmeta: the bitmap area is always zeroed",
                    ));
                }
            }
            _ => unreachable!("option table and match agree"),
        }
    }
    let mut pos = positional.into_iter();
    let drbd_dev = pos.next().ok_or_else(|| usage(&progname))?;
    let Some(format) = pos.next() else {
        return Err(Fail::new(20, "Format identifier missing"));
    };
    match format.as_str() {
        "v08" => {}
        "v06" | "v07" | "v09" => {
            return Err(Fail::new(
                20,
                format!("Format '{format}' is not supported by udrbdmeta (only v08)."),
            ))
        }
        _ => return Err(Fail::new(20, format!("Unknown format '{format}'."))),
    }
    let (Some(device), Some(index_arg)) = (pos.next(), pos.next()) else {
        return Err(Fail::new(20, "Too few arguments for format"));
    };
    let index = udrbd_metadata::MetaIndex::parse(&index_arg)
        .ok_or_else(|| Fail::new(20, format!("'{index_arg}' is not a valid index number.")))?;
    let Some(command) = pos.next() else {
        return Err(Fail::new(20, "command missing"));
    };
    let Some(&(_, _, _)) = COMMANDS.iter().find(|(n, _, _)| *n == command) else {
        if command == "forget-peer" {
            return Err(Fail::new(
                20,
                "forget-peer is a v09 command; not supported for v08",
            ));
        }
        return Err(Fail::new(20, format!("Unknown command '{command}'.")));
    };
    let args: Vec<String> = pos.collect();
    let minor = if drbd_dev == "-" {
        None
    } else {
        Some(minor_of_dev(&drbd_dev).ok_or_else(|| {
            Fail::new(
                20,
                format!("Cannot determine minor device number of drbd device '{drbd_dev}'"),
            )
        })?)
    };
    if opts.peer_max_bio_size.is_some_and(|v| v != 0) && command != "create-md" {
        return Err(Fail::new(
            10,
            "The --peer-max-bio-size option is only allowed with create-md",
        ));
    }
    if (opts.al_stripes.is_some() || opts.al_stripe_size_4k.is_some())
        && command != "create-md"
        && command != "restore-md"
    {
        return Err(Fail::new(
            10,
            "The --al-stripe* options are only allowed with create-md and restore-md",
        ));
    }
    let blocks =
        u64::from(opts.al_stripes.unwrap_or(1)) * u64::from(opts.al_stripe_size_4k.unwrap_or(8));
    if blocks > 8192 {
        return Err(Fail::new(10, "invalid (too large) al-stripe* settings"));
    }
    if blocks < 8 {
        return Err(Fail::new(10, "invalid (too small) al-stripe* settings"));
    }
    if opts.node_id.is_some() && !matches!(command.as_str(), "get-gi" | "show-gi" | "set-gi") {
        return Err(Fail::new(
            10,
            format!("The {command} command does not accept the --node-id option"),
        ));
    }
    if opts.node_id.is_some_and(|n| n != 0) {
        eprintln!("Not v09, implicitly set --node-id = 0");
    }
    let mut full = vec![progname];
    full.extend(argv[1..].iter().cloned());
    Ok(Invocation {
        opts,
        drbd_dev,
        minor,
        device,
        index,
        command,
        args,
        argv: full,
    })
}

/// drbd-utils `dt_minor_of_dev`: digits, or `/dev/drbd` + digits, or a block device node
/// with the DRBD major (147).
fn minor_of_dev(dev: &str) -> Option<u32> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(dev) {
        return dev.parse().ok();
    }
    if let Some(rest) = dev.strip_prefix("/dev/drbd") {
        if digits(rest) {
            return rest.parse().ok();
        }
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(dev).ok()?;
    if md.file_type().is_block_device() {
        let rdev = md.rdev();
        // SAFETY-free decoding of dev_t (glibc layout): major in bits 8..20 and 32..44.
        let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
        let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
        if major == 147 {
            return u32::try_from(minor).ok();
        }
    }
    None
}

/// Runs `udrbdmeta` with `argv` (including the program name); returns the exit code.
pub fn main_with(argv: Vec<OsString>, confirm: &mut dyn Confirm) -> i32 {
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let result = parse_args(&argv).and_then(|inv| commands::run(&inv, confirm));
    let _ = std::io::stdout().flush();
    match result {
        Ok(code) => code,
        Err(f) => {
            if let Some(m) = f.msg {
                eprintln!("{m}");
            }
            f.code
        }
    }
}

/// Entry point of the `udrbdmeta` binary.
pub fn main() -> i32 {
    main_with(std::env::args_os().collect(), &mut device::Terminal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_may_follow_positionals_and_be_abbreviated() {
        let inv = parse_args(&args(
            "udrbdmeta 3 v08 /dev/x internal create-md --forc --al-stripes=2 --al-stripe-size-kB 64",
        ))
        .unwrap();
        assert!(inv.opts.force);
        assert_eq!(inv.opts.al_stripes, Some(2));
        assert_eq!(inv.opts.al_stripe_size_4k, Some(16));
        assert_eq!(inv.minor, Some(3));
        assert_eq!(inv.command, "create-md");
    }

    #[test]
    fn rejects_unknown_short_option_without_panicking() {
        let e = parse_args(&args("udrbdmeta 0 v08 /dev/x internal dump-md -é")).unwrap_err();
        assert_eq!(e.code, 20);
    }

    #[test]
    fn rejects_unknown_command_with_exit_20() {
        let e = parse_args(&args("udrbdmeta 0 v08 /dev/x internal frobnicate")).unwrap_err();
        assert_eq!(e.code, 20);
        assert_eq!(e.msg.as_deref(), Some("Unknown command 'frobnicate'."));
    }

    #[test]
    fn rejects_stripes_outside_create_and_restore() {
        let e = parse_args(&args(
            "udrbdmeta 0 v08 /dev/x internal dump-md --al-stripes 2",
        ))
        .unwrap_err();
        assert_eq!(e.code, 10);
    }

    #[test]
    fn minor_forms() {
        assert_eq!(minor_of_dev("7"), Some(7));
        assert_eq!(minor_of_dev("/dev/drbd12"), Some(12));
        assert_eq!(minor_of_dev("/dev/sda"), None);
    }

    #[test]
    fn units() {
        assert_eq!(strtoll_unit("64", b'k').unwrap(), 64);
        assert_eq!(strtoll_unit("1M", b'k').unwrap(), 1024);
        assert_eq!(strtoll_unit("1M", 1).unwrap(), 1 << 20);
        assert!(strtoll_unit("1Q", 1).is_err());
    }
}
