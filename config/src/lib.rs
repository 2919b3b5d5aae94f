//! udrbd-config: reads DRBD 8.4 `drbd.conf` files the way drbd-utils' `drbdadm-84` does, and
//! gives the daemon a typed, per-host view of a resource.
//!
//! It never touches devices or the network: it reads the configuration files (and, to match
//! `floating` sections, the list of local IP addresses) and nothing else.
//!
//! Calling contract:
//! 1. [`load`] (or [`parse_str`]) parses a file and its includes; syntax and static errors come
//!    back with file, line and column.
//! 2. [`node_name`] gives the host name to select sections by: `uname -n`, or `__DRBD_NODE__`
//!    from the environment as drbdadm allows (so two nodes can share one file on one machine).
//! 3. [`Config::resource`] resolves one resource for that host: inheritance from `common`,
//!    volumes, this host's and the peer's addresses, every option typed with the kernel's
//!    defaults (spec §1.3).
//! 4. [`Config::dump`] prints what `drbdadm dump` prints.
//!
//! ```
//! let text = r#"
//!     common { net { protocol C; } }
//!     resource r0 {
//!         disk { resync-rate 10M; }
//!         on alice { device minor 1; disk /dev/sda7; meta-disk internal; address 10.1.1.31:7789; }
//!         on bob   { device minor 1; disk /dev/sda7; meta-disk internal; address 10.1.1.32:7789; }
//!     }"#;
//! let cfg = udrbd_config::parse_str(text, "/etc/drbd.conf").unwrap();
//! let r0 = cfg.resource("r0", "alice").unwrap();
//! assert_eq!(r0.local.address.port, 7789);
//! assert_eq!(r0.peer.as_ref().unwrap().address.host, "10.1.1.32");
//! assert_eq!(r0.volumes()[0].minor, 1);
//! assert_eq!(r0.disk.resync_rate_kib, 10 * 1024);
//! assert_eq!(r0.net.protocol, udrbd_config::Protocol::C);
//! assert_eq!(r0.net.ko_count, 7); // kernel default
//! ```

pub mod ast;
mod dump;
mod error;
mod lexer;
mod parser;
mod resolve;
pub mod units;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use error::{Error, Location};
pub use resolve::*;

use ast::{GlobalText, Opt, ResourceText};

/// The environment variable drbdadm reads to pretend to be another host.
pub const NODE_ENV: &str = "__DRBD_NODE__";

/// The default configuration file, as for drbdadm.
pub const DEFAULT_CONFIG: &str = "/etc/drbd.conf";

/// A parsed configuration file with everything it includes.
#[derive(Debug, Clone)]
pub struct Config {
    /// The top file's path, absolute, as drbdadm prints it.
    pub path: PathBuf,
    pub global: GlobalText,
    pub common: Option<ResourceText>,
    pub resources: Vec<ResourceText>,
    /// Things drbdadm only warns about (deprecated keywords and the like).
    pub warnings: Vec<String>,
}

/// Reads and parses `path` and every file it includes.
pub fn load(path: impl AsRef<Path>) -> Result<Config, Error> {
    let path = path.as_ref();
    let text = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&text);
    parse_at(&text, path)
}

/// Parses `text` as if read from `path` (includes are relative to its directory).
pub fn parse_str(text: &str, path: impl AsRef<Path>) -> Result<Config, Error> {
    parse_at(text, path.as_ref())
}

fn parse_at(text: &str, path: &Path) -> Result<Config, Error> {
    let display = path.to_string_lossy().into_owned();
    let parsed = parser::parse_top(path, &display, text)?;
    Ok(Config {
        path: parser::canonify(path),
        global: parsed.global,
        common: parsed.common,
        resources: parsed.resources,
        warnings: parsed.warnings,
    })
}

/// The name this machine selects `on` sections by: `__DRBD_NODE__` if set and not empty,
/// otherwise the kernel's node name (`uname -n`).
pub fn node_name() -> String {
    match std::env::var(NODE_ENV) {
        Ok(n) if !n.is_empty() => n,
        _ => uname_nodename(),
    }
}

fn uname_nodename() -> String {
    // SAFETY: `utsname` is plain old data, so all-zero bytes are a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname for uname(2) to fill in.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .nodename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The IP addresses of this machine's interfaces (for `floating` sections).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `ifap`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `ifap` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// Which host sections of a resource are this node's and the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Selection {
    pub me: Option<usize>,
    pub peer: Option<usize>,
}

/// Variants of [`Config::dump_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpOptions {
    /// Print what every other command sees: `common` merged into each resource, device
    /// names filled in (drbdadm `-d` or `-v`).
    pub expand_common: bool,
    /// Print `global { }` even when nothing in it differs from the defaults (drbdadm `-v`).
    pub verbose: bool,
    /// For `dump all`, refuse when this host does not own the addresses of its sections
    /// (drbdadm does, unless `-d` or `disable-ip-verification`).
    pub verify_ips: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            expand_common: false,
            verbose: false,
            verify_ips: true,
        }
    }
}

/// The resources after drbdadm's post-parse checks for one host.
pub(crate) struct Checked {
    resources: Vec<ResourceText>,
    selections: Vec<Selection>,
    warnings: Vec<String>,
}

impl Config {
    /// Names of all resources, in file order.
    pub fn resource_names(&self) -> Vec<&str> {
        self.resources.iter().map(|r| r.name.as_str()).collect()
    }

    /// Names of the resources that have a host section for `node`.
    pub fn resources_for(&self, node: &str) -> Vec<&str> {
        let addrs = local_addresses();
        self.resources
            .iter()
            .filter(|r| matches!(select_me(r, node, &addrs), Ok(Some(_))))
            .map(|r| r.name.as_str())
            .collect()
    }

    fn text(&self, name: &str) -> Option<&ResourceText> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// drbdadm's post-parse checks for host `node`, over every resource (as drbdadm does
    /// before any command). With `expanded`, options inherited from `common` count (every
    /// command but `dump`). Returns the resources as checked (unknown `resync-after` targets
    /// removed, like drbdadm without a terminal) and warnings.
    pub(crate) fn checked(&self, node: &str, expanded: bool) -> Result<Checked, Error> {
        let addrs = local_addresses();
        let mut sels = Vec::with_capacity(self.resources.len());
        for r in &self.resources {
            let me = select_me(r, node, &addrs)?;
            let peer = match me {
                Some(m) if r.hosts.len() == 2 => Some(1 - m),
                _ => None,
            };
            sels.push(Selection { me, peer });
        }
        let mut out = self.resources.clone();
        if expanded {
            for r in &mut out {
                expand_common(r, self.common.as_ref());
            }
        }
        let mut warnings = Vec::new();
        let known: HashSet<&str> = self
            .resources
            .iter()
            .zip(&sels)
            .filter(|(_, s)| s.me.is_some())
            .map(|(r, _)| r.name.as_str())
            .collect();
        let all: HashSet<&str> = self.resources.iter().map(|r| r.name.as_str()).collect();
        for (r, sel) in out.iter_mut().zip(&sels) {
            r.disk.retain(|o| {
                if o.name != "resync-after" {
                    return true;
                }
                let target = o.value.as_deref().unwrap_or("");
                let target = target.split('/').next().unwrap_or("");
                if known.contains(target) {
                    return true;
                }
                warnings.push(format!(
                    "{}: in resource {}: resource '{}' mentioned in 'resync-after' option is \
                     not known{}; ignoring it",
                    o.at,
                    r.name,
                    o.value.as_deref().unwrap_or(""),
                    if all.contains(target) {
                        " on this host"
                    } else {
                        ""
                    }
                ));
                false
            });
            let Some(me) = sel.me else { continue };
            let two_primaries = r.net.iter().any(|o| o.name == "allow-two-primaries");
            if r.become_primary_on.iter().any(|n| n == "both") && !two_primaries {
                return Err(Error::invalid(
                    &r.at,
                    format!(
                        "in resource {}: become-primary-on is set to both, but \
                         allow-two-primaries is not set",
                        r.name
                    ),
                ));
            }
            if let Some(p) = sel.peer {
                for n in &r.become_primary_on {
                    if n != "both"
                        && !r.hosts[me].names.contains(n)
                        && !r.hosts[p].names.contains(n)
                    {
                        return Err(Error::invalid(
                            &r.at,
                            format!(
                                "in resource {}: become-primary-on contains '{n}', which is not \
                                 named with the 'on' sections",
                                r.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Checked {
            resources: out,
            selections: sels,
            warnings,
        })
    }

    /// Runs drbdadm's checks for host `node` without resolving anything; returns the
    /// warnings drbdadm would print (deprecated keywords, unknown `resync-after` targets).
    pub fn check(&self, node: &str) -> Result<Vec<String>, Error> {
        let checked = self.checked(node, true)?;
        let mut w = self.warnings.clone();
        w.extend(checked.warnings);
        Ok(w)
    }

    /// What `drbdadm dump RES` prints (`RES` = `None` or `"all"`: `drbdadm dump all`) for
    /// host `node`.
    pub fn dump(&self, resource: Option<&str>, node: &str) -> Result<String, Error> {
        self.dump_with(resource, node, DumpOptions::default())
    }

    /// [`Config::dump`] with drbdadm's `-d` / `-v` variants (`common` merged into each
    /// resource; `global` always shown).
    pub fn dump_with(
        &self,
        resource: Option<&str>,
        node: &str,
        opts: DumpOptions,
    ) -> Result<String, Error> {
        let Checked {
            resources: checked,
            selections: sels,
            ..
        } = self.checked(node, opts.expand_common)?;
        match resource {
            None | Some("all") => {
                // drbdadm verifies, for `all`, that this host owns each of its addresses.
                if opts.verify_ips && !self.global.disable_ip_verification {
                    let addrs = local_addresses();
                    for (r, sel) in checked.iter().zip(&sels) {
                        let Some(me) = sel.me else { continue };
                        let h = &r.hosts[me];
                        if let Some(a) = &h.address {
                            if !have_ip(a, &addrs) {
                                return Err(Error::invalid(
                                    &a.at,
                                    format!(
                                        "in resource {}, on {}: IP {} not found on this host",
                                        r.name,
                                        h.names.join(" "),
                                        a.addr
                                    ),
                                ));
                            }
                        }
                    }
                }
                let mut s = dump::header(
                    &self.path.to_string_lossy(),
                    &self.global,
                    self.common.as_ref(),
                    opts.verbose,
                );
                for (r, sel) in checked.iter().zip(&sels) {
                    s.push_str(&dump::resource(r, node, sel.me.is_none()));
                }
                Ok(s)
            }
            Some(spec) => {
                let (name, vol) = match spec.split_once('/') {
                    Some((n, v)) => (n, Some(v)),
                    None => (spec, None),
                };
                let found = checked
                    .iter()
                    .zip(&sels)
                    .find(|(r, s)| r.name == name && s.me.is_some());
                let Some((r, sel)) = found else {
                    return Err(Error::NotDefined {
                        name: spec.to_string(),
                        host: node.to_string(),
                    });
                };
                if let Some(v) = vol {
                    let me = &r.hosts[sel.me.unwrap_or(0)];
                    let n = units::parse_number(v, units::Unit::One).ok();
                    let hit = me.volumes.iter().find(|x| Some(x.vnr as u64) == n);
                    match hit {
                        None => {
                            return Err(Error::NotDefined {
                                name: spec.to_string(),
                                host: node.to_string(),
                            })
                        }
                        Some(x) if !x.implicit => {
                            return Err(Error::Usage(
                                "dump operates on whole resources, but you specified a \
                                 specific volume!"
                                    .into(),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                Ok(dump::resource(r, node, false))
            }
        }
    }

    /// Resolves resource `name` for host `node`: this host's section, the peer's, and every
    /// option typed, with `common` inherited and kernel defaults filled in.
    pub fn resource(&self, name: &str, node: &str) -> Result<ResolvedResource, Error> {
        if self.text(name).is_none() {
            return Err(Error::NotDefined {
                name: name.to_string(),
                host: node.to_string(),
            });
        }
        let Checked {
            resources: checked,
            selections: sels,
            ..
        } = self.checked(node, true)?;
        let idx = checked
            .iter()
            .position(|r| r.name == name)
            .expect("checked keeps every resource");
        let sel = sels[idx];
        if sel.me.is_none() {
            return Err(Error::NotDefined {
                name: name.to_string(),
                host: node.to_string(),
            });
        }
        let mut r = resolve::resolve(&checked[idx], sel, &checked, &sels)?;
        r.node = node.to_string();
        Ok(r)
    }
}

/// drbdadm's `set_me_in_resource`: the one host section naming `node` (or, for `floating`,
/// holding one of our addresses or `node` itself).
fn select_me(r: &ResourceText, node: &str, addrs: &[IpAddr]) -> Result<Option<usize>, Error> {
    let mut me: Option<usize> = None;
    for (i, h) in r.hosts.iter().enumerate() {
        let hit = if h.floating {
            h.address
                .as_ref()
                .is_some_and(|a| a.addr == node || have_ip(a, addrs))
        } else {
            h.names.iter().any(|n| n == node) || h.names.first().is_some_and(|n| n == "_this_host")
        };
        if !hit {
            continue;
        }
        if let Some(first) = me {
            return Err(Error::invalid(
                &h.at,
                format!(
                    "in resource {}, on {} {{ ... }} ... on {} {{ ... }}: there are multiple \
                     host sections for this node",
                    r.name,
                    r.hosts[first].names.join(" "),
                    h.names.join(" ")
                ),
            ));
        }
        me = Some(i);
    }
    Ok(me)
}

/// drbdadm's `have_ip`: whether an interface of this machine has the address (families other
/// than ipv4 and ipv6 always count as present).
fn have_ip(a: &ast::AddressText, addrs: &[IpAddr]) -> bool {
    match a.af.as_str() {
        "ipv4" | "ipv6" => a
            .addr
            .split('%')
            .next()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|ip| addrs.contains(&ip)),
        _ => true,
    }
}

/// drbdadm's `expand_common`: options from `common` that the resource does not set, then
/// resource-level disk options into every volume.
fn expand_common(r: &mut ResourceText, common: Option<&ResourceText>) {
    fn inherit(from: &[Opt], to: &mut Vec<Opt>) {
        for o in from {
            if !to.iter().any(|x| x.name == o.name) {
                to.insert(0, o.clone());
            }
        }
    }
    if let Some(c) = common {
        inherit(&c.net, &mut r.net);
        inherit(&c.disk, &mut r.disk);
        inherit(&c.startup, &mut r.startup);
        inherit(&c.handlers, &mut r.handlers);
        inherit(&c.options, &mut r.options);
        r.stacked_timeouts |= c.stacked_timeouts;
        if r.become_primary_on.is_empty() {
            r.become_primary_on.clone_from(&c.become_primary_on);
        }
    }
    for h in &mut r.hosts {
        for v in &mut h.volumes {
            if v.device.is_none() {
                v.device = Some(format!("/dev/drbd{}", v.minor.unwrap_or(-1) as u32));
            }
        }
    }
    let res_disk = r.disk.clone();
    let res_vols = r.volumes.clone();
    for h in &mut r.hosts {
        for v in &mut h.volumes {
            inherit(&res_disk, &mut v.disk_options);
        }
        for rv in &res_vols {
            if let Some(hv) = h.volumes.iter_mut().find(|v| v.vnr == rv.vnr) {
                inherit(&rv.disk_options, &mut hv.disk_options);
            }
        }
    }
}
