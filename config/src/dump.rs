//! `drbdadm dump`'s text: the configuration re-printed in drbdadm-84's layout (indentation of
//! four, names padded to columns, values quoted only when needed), so that feeding the output
//! back gives the same output again.

use std::fmt::Write;

use crate::ast::{AddressText, GlobalText, HostText, Opt, ResourceText, UsageCount, VolumeText};

/// drbd-utils' `esc`: quote (escaping `"` and `\`) values that contain characters outside
/// `[a-zA-Z0-9/._-]`, are empty, or are longer than 80 characters.
pub fn esc(s: &str) -> String {
    let plain = !s.is_empty()
        && s.len() <= 80
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'.' | b'_' | b'-'));
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Pads like C's `%*s` with a signed width: negative left-justifies, positive right-justifies.
fn pad(s: &str, width: i32) -> String {
    let w = width.unsigned_abs() as usize;
    if width < 0 {
        format!("{s:<w$}")
    } else {
        format!("{s:>w$}")
    }
}

struct Out {
    text: String,
    indent: i32,
}

impl Out {
    fn ind(&self) -> String {
        " ".repeat((self.indent * 4) as usize)
    }

    /// `printI`: one line at the current indentation.
    fn line(&mut self, s: &str) {
        let ind = self.ind();
        let _ = writeln!(self.text, "{ind}{s}");
    }

    /// `printA`: name padded to column 24, value right-aligned in at least 3 characters.
    fn assign(&mut self, name: &str, value: &str) {
        let ind = self.ind();
        let name = pad(name, -24 + 4 * self.indent);
        let _ = writeln!(self.text, "{ind}{name} {value:>3};");
    }

    fn options(&mut self, name: &str, opts: &[Opt]) {
        if opts.is_empty() {
            return;
        }
        self.line(&format!("{name} {{"));
        self.indent += 1;
        for o in opts {
            match &o.value {
                Some(v) if o.verbatim => self.assign(&o.name, v),
                Some(v) => self.assign(&o.name, &esc(v)),
                None => self.line(&format!("{};", o.name)),
            }
        }
        self.indent -= 1;
        self.line("}");
    }

    fn address(&mut self, name: &str, a: &AddressText) {
        if a.af == "ipv6" {
            self.line(&format!("{name:<16} {} [{}]:{};", a.af, a.addr, a.port));
        } else {
            self.line(&format!("{name:<16} {} {}:{};", a.af, a.addr, a.port));
        }
    }

    fn volume(&mut self, v: &VolumeText) {
        if !v.implicit {
            self.line(&format!("volume {} {{", v.vnr));
            self.indent += 1;
        }
        let empty = v.minor.is_none()
            && v.device.is_none()
            && v.disk.is_none()
            && v.meta_disk.is_none()
            && v.meta_index.is_none();
        if !empty {
            self.options("disk", &v.disk_options);
            let mut s = format!("{}device{}", self.ind(), pad("", -19 + 4 * self.indent));
            if let Some(d) = &v.device {
                s.push_str(&esc(d));
                s.push(' ');
            }
            // drbdadm keeps an unset minor as -1 and prints it signed.
            let minor = v.minor.map_or(-1, |m| m as u32 as i32);
            let _ = writeln!(s, "minor {minor};");
            self.text.push_str(&s);
            self.assign("disk", &esc(v.disk.as_deref().unwrap_or("")));
            let md = v.meta_disk.as_deref().unwrap_or("");
            match v.meta_index.as_deref() {
                Some("flexible") => self.line(&format!("{:<16} {};", "meta-disk", esc(md))),
                Some("internal") => self.assign("meta-disk", "internal"),
                idx => self.line(&format!(
                    "{:<16} {} [{}];",
                    "meta-disk",
                    esc(md),
                    idx.unwrap_or("(null)")
                )),
            }
        }
        if !v.implicit {
            self.indent -= 1;
            self.line("}");
        }
    }

    fn host(&mut self, h: &HostText) {
        if h.floating {
            match &h.address {
                Some(a) if a.af == "ipv6" => {
                    self.line(&format!("floating ipv6 [{}]:{} {{", a.addr, a.port))
                }
                Some(a) => self.line(&format!("floating {} {}:{} {{", a.af, a.addr, a.port)),
                None => self.line("floating {"),
            }
        } else {
            self.line(&format!("on {} {{", h.names.join(" ")));
        }
        self.indent += 1;
        self.options("options", &h.options);
        for v in &h.volumes {
            self.volume(v);
        }
        if !h.floating {
            if let Some(a) = &h.address {
                self.address("address", a);
            }
        }
        if let Some(a) = &h.alt_address {
            self.address("alternate-link-address", a);
        }
        self.indent -= 1;
        self.line("}");
    }

    /// The sections every resource (and `common`) prints after its host sections.
    fn sections(&mut self, r: &ResourceText) {
        let mut startup = r.startup.clone();
        if r.stacked_timeouts {
            startup.push(Opt {
                name: "stacked-timeouts".into(),
                value: None,
                verbatim: false,
                at: r.at.clone(),
            });
        }
        if !r.become_primary_on.is_empty() {
            startup.push(Opt {
                name: "become-primary-on".into(),
                value: Some(r.become_primary_on.join(" ")),
                verbatim: true,
                at: r.at.clone(),
            });
        }
        self.options("options", &r.options);
        self.options("net", &r.net);
        self.options("disk", &r.disk);
        self.options("startup", &startup);
        self.options("handlers", &r.handlers);
    }
}

/// One resource, as `drbdadm dump RES` prints it for host `node` (`ignored` when `node` has no
/// section in it).
pub(crate) fn resource(r: &ResourceText, node: &str, ignored: bool) -> String {
    let mut o = Out {
        text: String::new(),
        indent: 0,
    };
    o.line(&format!(
        "# resource {} on {node}: {}, not stacked",
        esc(&r.name),
        if ignored { "ignored" } else { "not ignored" }
    ));
    o.line(&format!("# defined at {}:{}", r.file, r.start_line));
    o.line(&format!("resource {} {{", esc(&r.name)));
    o.indent += 1;
    for h in &r.hosts {
        o.host(h);
    }
    o.sections(r);
    o.indent -= 1;
    o.text.push_str("}\n\n");
    o.text
}

/// The part of `drbdadm dump all` before the resources: file name, `global`, `common`.
pub(crate) fn header(
    file: &str,
    g: &GlobalText,
    common: Option<&ResourceText>,
    verbose: bool,
) -> String {
    let mut o = Out {
        text: format!("# {file}\n"),
        indent: 0,
    };
    // drbd-utils' initial value for cmd-timeout-medium is overwritten by the long one's
    // default, and cmd-timeout-long starts at 0; dump prints what that leaves.
    let short = g.cmd_timeout_short.unwrap_or(5);
    let medium = g.cmd_timeout_medium.unwrap_or(600);
    let long = g.cmd_timeout_long.unwrap_or(0);
    let refresh = g.dialog_refresh.unwrap_or(1);
    let minor_count = g.minor_count.unwrap_or(0);
    if verbose
        || minor_count != 0
        || g.disable_ip_verification
        || refresh != 1
        || g.usage_count != UsageCount::Ask
    {
        o.line("global {");
        o.indent += 1;
        if g.disable_ip_verification {
            o.line("disable-ip-verification;");
        }
        if minor_count != 0 {
            o.line(&format!("minor-count {minor_count};"));
        }
        if refresh != 1 {
            o.line(&format!("dialog-refresh {refresh};"));
        }
        match g.usage_count {
            UsageCount::Yes => o.line("usage-count yes;"),
            UsageCount::No => o.line("usage-count no;"),
            UsageCount::Ask => {}
        }
        if short != 5 {
            o.line(&format!("cmd-timeout-short {short};"));
        }
        if medium != 121 {
            o.line(&format!("cmd-timeout-medium {medium};"));
        }
        if long != 600 {
            o.line(&format!("cmd-timeout-long {long};"));
        }
        o.indent -= 1;
        o.line("}");
        o.text.push('\n');
    }
    if let Some(c) = common {
        o.line("common {");
        o.indent += 1;
        o.sections(c);
        o.indent -= 1;
        o.text.push_str("}\n\n");
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_quotes_only_when_needed() {
        assert_eq!(esc("/dev/sda7"), "/dev/sda7");
        assert_eq!(esc("a b"), "\"a b\"");
        assert_eq!(esc(""), "\"\"");
        assert_eq!(esc("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(esc(&"x".repeat(81)), format!("\"{}\"", "x".repeat(81)));
    }

    #[test]
    fn padding_follows_c_printf() {
        assert_eq!(pad("ab", -4), "ab  ");
        assert_eq!(pad("ab", 4), "  ab");
        assert_eq!(pad("abcdef", -4), "abcdef");
    }
}
