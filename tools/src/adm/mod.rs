//! `udrbdadm`: drbdadm's command line over udrbd.
//!
//! [`parse_args`] reads drbdadm's command line, [`Context::load`] reads the configuration and
//! resolves the named resources for this host, then `dump` is answered here and every other
//! verb goes to [`verbs::run`]. Exit codes follow drbdadm: 1 usage, 10 invalid configuration,
//! 20 failure to execute.

pub mod verbs;

use std::path::PathBuf;
use std::process::ExitCode;

use udrbd_config::{Config, ResolvedResource};

/// The verbs udrbdadm knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    CreateMd,
    Up,
    Down,
    Attach,
    Detach,
    Connect,
    Disconnect,
    Primary,
    Secondary,
    Status,
    Cstate,
    Dstate,
    Role,
    Dump,
    Invalidate,
    InvalidateRemote,
    NewCurrentUuid,
    WaitConnect,
    Adjust,
    Events2,
}

impl Verb {
    pub const ALL: [Verb; 20] = [
        Verb::CreateMd,
        Verb::Up,
        Verb::Down,
        Verb::Attach,
        Verb::Detach,
        Verb::Connect,
        Verb::Disconnect,
        Verb::Primary,
        Verb::Secondary,
        Verb::Status,
        Verb::Cstate,
        Verb::Dstate,
        Verb::Role,
        Verb::Dump,
        Verb::Invalidate,
        Verb::InvalidateRemote,
        Verb::NewCurrentUuid,
        Verb::WaitConnect,
        Verb::Adjust,
        Verb::Events2,
    ];

    /// The verb as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::CreateMd => "create-md",
            Verb::Up => "up",
            Verb::Down => "down",
            Verb::Attach => "attach",
            Verb::Detach => "detach",
            Verb::Connect => "connect",
            Verb::Disconnect => "disconnect",
            Verb::Primary => "primary",
            Verb::Secondary => "secondary",
            Verb::Status => "status",
            Verb::Cstate => "cstate",
            Verb::Dstate => "dstate",
            Verb::Role => "role",
            Verb::Dump => "dump",
            Verb::Invalidate => "invalidate",
            Verb::InvalidateRemote => "invalidate-remote",
            Verb::NewCurrentUuid => "new-current-uuid",
            Verb::WaitConnect => "wait-connect",
            Verb::Adjust => "adjust",
            Verb::Events2 => "events2",
        }
    }

    /// Looks a verb up by name (`state` is drbdadm's old name for `role`).
    pub fn from_name(name: &str) -> Option<Verb> {
        if name == "state" {
            return Some(Verb::Role);
        }
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }

    /// Verbs that work without naming a resource (drbdadm then means `all`).
    pub fn resource_optional(&self) -> bool {
        matches!(self, Verb::Dump | Verb::Status | Verb::Events2)
    }
}

/// drbdadm's exit code classes (drbd-utils `E_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 1: bad command line, unknown resource.
    Usage,
    /// 2: syntax error (drbdadm uses it rarely).
    Syntax,
    /// 10: invalid configuration.
    ConfigInvalid,
    /// 20: a step failed to execute.
    Exec,
    /// 0: `-V` / `--version` was asked for; the message is the answer.
    Version,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 1,
            ErrorKind::Syntax => 2,
            ErrorKind::ConfigInvalid => 10,
            ErrorKind::Exec => 20,
            ErrorKind::Version => 0,
        }
    }
}

/// An error with the exit code class drbdadm would use for it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AdmError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl AdmError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AdmError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn exec(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Exec, message)
    }

    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Not an error: `-V` asks for the version, printed like drbdadm's shell variables.
    pub fn version() -> Self {
        AdmError::new(
            ErrorKind::Version,
            format!(
                "UDRBDADM_VERSION={}\nDRBDADM_API_VERSION=1",
                env!("CARGO_PKG_VERSION")
            ),
        )
    }

    pub fn not_implemented(verb: &str) -> Self {
        Self::exec(format!("udrbdadm: '{verb}' is not implemented yet"))
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_code())
    }
}

impl From<udrbd_config::Error> for AdmError {
    fn from(e: udrbd_config::Error) -> Self {
        let kind = match e.exit_code() {
            1 => ErrorKind::Usage,
            20 => ErrorKind::Exec,
            _ => ErrorKind::ConfigInvalid,
        };
        AdmError::new(kind, e.to_string()).with_source(e)
    }
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config_path: PathBuf,
    pub dry_run: bool,
    pub verbose: bool,
    pub verb: Verb,
    /// `--force` (primary, create-md, …).
    pub force: bool,
    /// `--discard-my-data` (connect, adjust).
    pub discard_my_data: bool,
    /// `--clear-bitmap` (new-current-uuid).
    pub clear_bitmap: bool,
    /// Other `--option[=value]` arguments, passed on as drbdadm passes them to drbdsetup.
    pub extra: Vec<String>,
    /// Resource names as given (`RES`, `RES/VOL`, `all`); empty means none given.
    pub resources: Vec<String>,
}

const USAGE: &str =
    "usage: udrbdadm [-c FILE] [-d] [-v] [--] VERB [--force ...] {all|RESOURCE[/VOLUME]...}";

/// Reads drbdadm's command line (`args` without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Args, AdmError> {
    let mut config_path = None;
    let mut dry_run = false;
    let mut verbose = false;
    let mut verb = None;
    let mut force = false;
    let mut discard_my_data = false;
    let mut clear_bitmap = false;
    let mut extra = Vec::new();
    let mut resources = Vec::new();
    let mut only_positional = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        // drbdadm: words after `--` that come before the command are drbdsetup options
        // (`drbdadm -- --verbose --statistics status r0`); after the command, positional.
        let option_here = if only_positional {
            verb.is_none() && a.starts_with("--") && a.len() > 2
        } else {
            a.starts_with('-') && a.len() > 1
        };
        if option_here {
            if a == "--" {
                only_positional = true;
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (a.clone(), None),
            };
            match name.as_str() {
                "-c" | "--config-file" => {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| AdmError::usage(format!("{a} needs a file name")))?,
                    };
                    config_path = Some(PathBuf::from(v));
                }
                _ if name.starts_with("-c") && !name.starts_with("--") => {
                    config_path = Some(PathBuf::from(&a[2..]));
                }
                // drbdadm options that take a value and mean nothing to udrbd (there is no
                // drbdsetup, drbdmeta or proxy to point at, no shell to export to).
                "-n" | "--sh-varname" | "-s" | "--drbdsetup" | "-m" | "--drbdmeta" | "-p"
                | "--drbd-proxy-ctl" | "-W" | "--setup-option" | "-P" | "--peer" => {
                    if inline.is_none() {
                        it.next()
                            .ok_or_else(|| AdmError::usage(format!("{a} needs a value")))?;
                    }
                }
                _ if name.len() > 2
                    && !name.starts_with("--")
                    && matches!(name.get(..2), Some("-n" | "-s" | "-m" | "-p" | "-W" | "-P")) => {}
                "-S" | "--stacked" => {
                    return Err(AdmError::usage(
                        "udrbdadm: stacked resources are not supported by udrbd",
                    ))
                }
                "-t" | "--config-to-test" => {
                    return Err(AdmError::usage(
                        "udrbdadm: --config-to-test is not supported; use -c FILE dump",
                    ))
                }
                "-V" | "--version" => return Err(AdmError::version()),
                "-d" | "--dry-run" => dry_run = true,
                "-v" | "--verbose" => verbose = true,
                "--force" => force = true,
                "--discard-my-data" => discard_my_data = true,
                "--clear-bitmap" => clear_bitmap = true,
                "-h" | "--help" => return Err(AdmError::usage(USAGE)),
                _ if name.starts_with("--") => extra.push(a.clone()),
                _ => {
                    return Err(AdmError::usage(format!(
                        "udrbdadm: unknown option '{a}'\n{USAGE}"
                    )))
                }
            }
            continue;
        }
        if verb.is_none() {
            verb = Some(
                Verb::from_name(&a)
                    .ok_or_else(|| AdmError::usage(format!("udrbdadm: Unknown command '{a}'")))?,
            );
        } else {
            if a.is_empty() {
                return Err(AdmError::usage("Resource name is empty."));
            }
            resources.push(a);
        }
    }
    let verb = verb.ok_or_else(|| AdmError::usage(format!("No command specified\n{USAGE}")))?;
    if resources.is_empty() && !verb.resource_optional() {
        return Err(AdmError::usage(format!(
            "No resource names specified\n{USAGE}"
        )));
    }
    Ok(Args {
        config_path: config_path.unwrap_or_else(|| PathBuf::from(udrbd_config::DEFAULT_CONFIG)),
        dry_run,
        verbose,
        verb,
        force,
        discard_my_data,
        clear_bitmap,
        extra,
        resources,
    })
}

/// One resource (optionally one volume of it) a verb acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: ResolvedResource,
    pub volume: Option<u16>,
}

/// Everything a verb needs: the command line, the configuration, this host's name and the
/// resolved targets (`all` expanded to every resource of this host).
#[derive(Debug, Clone)]
pub struct Context {
    pub args: Args,
    pub config: Config,
    /// The host name sections are selected by (`__DRBD_NODE__` or `uname -n`).
    pub node: String,
    pub targets: Vec<Target>,
}

impl Context {
    /// Loads the configuration named in `args` and resolves the targets for `node`.
    pub fn load(args: Args, node: String) -> Result<Context, AdmError> {
        let config = udrbd_config::load(&args.config_path)?;
        let mut targets = Vec::new();
        if args.verb != Verb::Dump {
            let names: Vec<String> =
                if args.resources.is_empty() || args.resources.iter().any(|r| r == "all") {
                    let names = config.resources_for(&node);
                    if names.is_empty() {
                        return Err(AdmError::usage(format!(
                            "WARN: no normal resources defined for this host ({node})!?"
                        )));
                    }
                    names.into_iter().map(str::to_string).collect()
                } else {
                    args.resources.clone()
                };
            for spec in names {
                let (name, volume) = match spec.split_once('/') {
                    Some((n, v)) => {
                        let v: u16 = v
                            .parse()
                            .map_err(|_| AdmError::usage(format!("'{spec}': bad volume number")))?;
                        (n.to_string(), Some(v))
                    }
                    None => (spec.clone(), None),
                };
                let resource = config.resource(&name, &node)?;
                if let Some(v) = volume {
                    if resource.volume(v).is_none() {
                        return Err(AdmError::usage(format!(
                            "'{spec}' not defined in your config (for this host)."
                        )));
                    }
                }
                targets.push(Target { resource, volume });
            }
        }
        Ok(Context {
            args,
            config,
            node,
            targets,
        })
    }
}

/// `udrbdadm dump`: what `drbdadm dump` prints.
pub fn dump(args: &Args, node: &str) -> Result<String, AdmError> {
    let config = udrbd_config::load(&args.config_path)?;
    // drbdadm prints what it only warns about on stderr, too.
    for w in &config.warnings {
        eprintln!("{w}");
    }
    let opts = udrbd_config::DumpOptions {
        expand_common: args.dry_run || args.verbose,
        verbose: args.verbose,
        verify_ips: !args.dry_run,
    };
    if args.resources.is_empty() || args.resources.iter().any(|r| r == "all") {
        return Ok(config.dump_with(None, node, opts)?);
    }
    let mut out = String::new();
    for r in &args.resources {
        out.push_str(&config.dump_with(Some(r), node, opts)?);
    }
    Ok(out)
}

/// Runs the whole command line; returns the process exit code.
pub fn main_with<I: IntoIterator<Item = String>>(args: I) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) if e.kind == ErrorKind::Version => {
            println!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    let node = udrbd_config::node_name();
    if std::env::var_os(udrbd_config::NODE_ENV).is_some_and(|v| !v.is_empty()) && args.verbose {
        eprintln!(
            "found {} in environment, pretending that I am >>{node}<<",
            udrbd_config::NODE_ENV
        );
    }
    let result = if args.verb == Verb::Dump {
        dump(&args, &node).map(|text| {
            print!("{text}");
            ExitCode::SUCCESS
        })
    } else {
        Context::load(args, node).and_then(|ctx| verbs::run(&ctx, &ctx.args.verb))
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, AdmError> {
        parse_args(s.split_whitespace().map(str::to_string))
    }

    #[test]
    fn parses_drbdadm_command_lines() {
        let a = args("-c /tmp/x.conf -d primary --force r0").unwrap();
        assert_eq!(a.config_path, PathBuf::from("/tmp/x.conf"));
        assert!(a.dry_run && a.force);
        assert_eq!(a.verb, Verb::Primary);
        assert_eq!(a.resources, vec!["r0"]);
        let a = args("--config-file=/y -- new-current-uuid --clear-bitmap r0/0").unwrap();
        assert_eq!(a.config_path, PathBuf::from("/y"));
        assert_eq!(a.verb, Verb::NewCurrentUuid);
        assert_eq!(a.resources, vec!["--clear-bitmap", "r0/0"]);
        // drbdsetup options after `--`, before the command (drbdadm-84 -d: `drbdsetup-84
        // status r0 --verbose --statistics`).
        let a = args("-- --verbose --statistics status r0").unwrap();
        assert_eq!(a.verb, Verb::Status);
        assert!(a.verbose);
        assert_eq!(a.extra, vec!["--statistics"]);
        assert_eq!(a.resources, vec!["r0"]);
        let a = args("new-current-uuid --clear-bitmap r0/0").unwrap();
        assert!(a.clear_bitmap);
        let a = args("-n VAR -sdrbdsetup -P bob dump r0").unwrap();
        assert_eq!(
            (a.verb, a.resources.as_slice()),
            (Verb::Dump, &["r0".to_string()][..])
        );
        assert_eq!(args("-V").unwrap_err().kind, ErrorKind::Version);
        let a = args("dump").unwrap();
        assert_eq!(a.config_path, PathBuf::from("/etc/drbd.conf"));
        assert!(a.resources.is_empty());
        for v in Verb::ALL {
            assert_eq!(Verb::from_name(v.name()), Some(v));
        }
    }

    #[test]
    fn usage_errors_exit_1() {
        for bad in [
            "",
            "frobnicate r0",
            "up",
            "-x up r0",
            "-\u{e9} up r0",
            "-n -c x.conf dump r0",
            "-S up r0",
        ] {
            let e = args(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage, "{bad}");
        }
    }
}
