//! A resource's state as one snapshot, and the texts drbd-utils prints from it: `drbdsetup-84
//! status` (spec drbd-config-and-tools.md §4), `drbdsetup events2` lines (§5), and the one-word
//! answers of `role`, `cstate` and `dstate` (§2).
//!
//! The snapshot travels over the control socket as JSON, so every state is kept as the kernel
//! spells it (`WFConnection`, `UpToDate`), never as a number.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub name: String,
    /// `Primary` / `Secondary` / `Unknown`.
    pub role: String,
    /// Suspension reasons (`user`, `no-data`, `fencing`); empty when running.
    pub suspended: Vec<String>,
    pub volumes: Vec<VolumeStatus>,
    /// None when the resource has no network configuration (StandAlone after disconnect).
    pub connection: Option<ConnectionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeStatus {
    pub volume: u16,
    pub minor: u32,
    /// Local disk state.
    pub disk: String,
    /// `upper`, `lower`; empty when not blocked.
    pub blocked: Vec<String>,
    /// The 8.4 connection state of this device (`Connected`, `SyncSource`, `WFConnection`, ...).
    pub cstate: String,
    pub peer_disk: String,
    /// Resync pause reasons (`user`, `peer`, `dependency`); empty when not paused.
    pub resync_suspended: Vec<String>,
    pub size_kib: u64,
    pub out_of_sync_kib: u64,
    pub stats: VolumeStats,
}

/// Counters in KiB (as `--statistics` prints them) unless said otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeStats {
    pub received_kib: u64,
    pub sent_kib: u64,
    pub read_kib: u64,
    pub written_kib: u64,
    pub al_writes: u64,
    pub bm_writes: u64,
    pub upper_pending: u64,
    pub lower_pending: u64,
    pub pending: u64,
    pub unacked: u64,
    /// KiB moved by resyncs since the daemon started (both directions), for tests and logs.
    pub resynced_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionStatus {
    /// Connection-wide 8.4 state.
    pub cstate: String,
    pub peer_role: String,
}

/// Connection states in which the peer is reachable (`>= Connected`, plus `WFReportParams`,
/// which status reports as connected).
fn is_established(cstate: &str) -> bool {
    !matches!(
        cstate,
        "StandAlone"
            | "Disconnecting"
            | "Unconnected"
            | "Timeout"
            | "BrokenPipe"
            | "NetworkFailure"
            | "ProtocolError"
            | "TearDown"
            | "WFConnection"
    )
}

fn is_sync_state(cstate: &str) -> bool {
    matches!(
        cstate,
        "SyncSource" | "SyncTarget" | "VerifyS" | "VerifyT" | "PausedSyncS" | "PausedSyncT"
    )
}

/// The `connection:` word: `Connecting` for WFConnection, otherwise the 8.4 name.
fn connection_word(cstate: &str) -> &str {
    match cstate {
        "WFConnection" => "Connecting",
        "WFReportParams" => "Connected",
        s if is_established(s) => "Connected",
        s => s,
    }
}

/// The `connection:` word of events2: there the handshake (WFReportParams) still counts as
/// `Connecting`, so that `Connected` arrives together with the peer's role.
fn events2_connection_word(cstate: &str) -> &str {
    match cstate {
        "WFReportParams" => "Connecting",
        s => connection_word(s),
    }
}

/// The `replication:` word: `Established` for Connected, `Off` before the handshake.
fn replication_word(cstate: &str) -> &str {
    match cstate {
        "Connected" => "Established",
        s if !is_established(s) || s == "WFReportParams" => "Off",
        s => s,
    }
}

/// `wrap_printf`: items start with a space and wrap at `width`, continuing indented.
struct Wrapper {
    out: String,
    col: usize,
    width: usize,
    indent: usize,
}

impl Wrapper {
    fn line(&mut self, indent: usize, first: &str) {
        for _ in 0..indent {
            self.out.push(' ');
        }
        self.out.push_str(first);
        self.col = indent + first.len();
        self.indent = indent;
    }

    fn item(&mut self, item: &str) {
        if self.col + 1 + item.len() > self.width && self.col > self.indent {
            self.out.push('\n');
            for _ in 0..self.indent + 2 {
                self.out.push(' ');
            }
            self.col = self.indent + 2;
            self.out.push_str(item);
            self.col += item.len();
        } else {
            self.out.push(' ');
            self.out.push_str(item);
            self.col += 1 + item.len();
        }
    }

    fn end(&mut self) {
        self.out.push('\n');
        self.col = 0;
    }
}

impl StatusSnapshot {
    /// `drbdsetup-84 status RES` text, including the blank line that ends the resource.
    pub fn render_status(&self, verbose: bool, statistics: bool) -> String {
        let mut w = Wrapper {
            out: String::new(),
            col: 0,
            width: 80,
            indent: 0,
        };
        w.line(0, &self.name);
        w.item(&format!("role:{}", self.role));
        if !self.suspended.is_empty() || verbose {
            let s = if self.suspended.is_empty() {
                "no".to_string()
            } else {
                self.suspended.join(",")
            };
            w.item(&format!("suspended:{s}"));
        }
        w.end();
        let single = self.volumes.len() == 1 && self.volumes[0].volume == 0;
        for v in &self.volumes {
            if single {
                w.line(2, &format!("disk:{}", v.disk));
            } else {
                w.line(2, &format!("volume:{}", v.volume));
                w.item(&format!("disk:{}", v.disk));
            }
            if verbose {
                w.item(&format!("minor:{}", v.minor));
            }
            if !v.blocked.is_empty() {
                w.item(&format!("blocked:{}", v.blocked.join(",")));
            } else if verbose {
                w.item("blocked:no");
            }
            w.end();
            if statistics {
                let s = &v.stats;
                w.line(4, &format!("size:{}", v.size_kib));
                for item in [
                    format!("read:{}", s.read_kib),
                    format!("written:{}", s.written_kib),
                    format!("al-writes:{}", s.al_writes),
                    format!("bm-writes:{}", s.bm_writes),
                    format!("upper-pending:{}", s.upper_pending),
                    format!("lower-pending:{}", s.lower_pending),
                ] {
                    w.item(&item);
                }
                w.end();
            }
        }
        if let Some(c) = &self.connection {
            w.line(2, "peer");
            if is_established(&c.cstate) {
                w.item(&format!("role:{}", c.peer_role));
            } else {
                w.item(&format!("connection:{}", connection_word(&c.cstate)));
            }
            w.end();
            if is_established(&c.cstate) {
                for v in &self.volumes {
                    if single {
                        w.line(4, &format!("replication:{}", replication_word(&v.cstate)));
                    } else {
                        w.line(4, &format!("volume:{}", v.volume));
                        w.item(&format!("replication:{}", replication_word(&v.cstate)));
                    }
                    w.item(&format!("peer-disk:{}", v.peer_disk));
                    if is_sync_state(&v.cstate) {
                        w.item(&format!("done:{:.2}", v.done_percent()));
                    }
                    if !v.resync_suspended.is_empty() {
                        w.item(&format!(
                            "resync-suspended:{}",
                            v.resync_suspended.join(",")
                        ));
                    } else if verbose {
                        w.item("resync-suspended:no");
                    }
                    w.end();
                    if statistics {
                        let s = &v.stats;
                        w.line(6, &format!("received:{}", s.received_kib));
                        for item in [
                            format!("sent:{}", s.sent_kib),
                            format!("out-of-sync:{}", v.out_of_sync_kib),
                            format!("pending:{}", s.pending),
                            format!("unacked:{}", s.unacked),
                        ] {
                            w.item(&item);
                        }
                        w.end();
                    }
                }
            }
        }
        w.out.push('\n');
        w.out
    }

    /// `drbdsetup events2 --now` lines for this snapshot, ending with `exists -`.
    pub fn events2_exists(&self, statistics: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let susp = if self.suspended.is_empty() {
            "no".to_string()
        } else {
            self.suspended.join(",")
        };
        lines.push(format!(
            "exists resource name:{} role:{} suspended:{susp}",
            self.name, self.role
        ));
        for v in &self.volumes {
            let mut l = format!(
                "exists device name:{} volume:{} minor:{} disk:{}",
                self.name, v.volume, v.minor, v.disk
            );
            if statistics {
                let s = &v.stats;
                l.push_str(&format!(
                    " read:{} written:{} al-writes:{} bm-writes:{} upper-pending:{} lower-pending:{} al-suspended:no blocked:{}",
                    s.read_kib,
                    s.written_kib,
                    s.al_writes,
                    s.bm_writes,
                    s.upper_pending,
                    s.lower_pending,
                    if v.blocked.is_empty() { "no".to_string() } else { v.blocked.join(",") }
                ));
            }
            lines.push(l);
        }
        if let Some(c) = &self.connection {
            lines.push(format!(
                "exists connection name:{} peer-node-id:0 conn-name:peer connection:{} role:{}",
                self.name,
                events2_connection_word(&c.cstate),
                c.peer_role
            ));
            for v in &self.volumes {
                let rs = if v.resync_suspended.is_empty() {
                    "no".to_string()
                } else {
                    v.resync_suspended.join(",")
                };
                let mut l = format!(
                    "exists peer-device name:{} peer-node-id:0 conn-name:peer volume:{} replication:{} peer-disk:{} resync-suspended:{rs}",
                    self.name,
                    v.volume,
                    replication_word(&v.cstate),
                    v.peer_disk
                );
                if statistics {
                    let s = &v.stats;
                    l.push_str(&format!(
                        " received:{} sent:{} out-of-sync:{} pending:{} unacked:{}",
                        s.received_kib, s.sent_kib, v.out_of_sync_kib, s.pending, s.unacked
                    ));
                }
                lines.push(l);
            }
        }
        lines.push("exists -".to_string());
        lines
    }

    /// `change` lines for what differs between `old` and `self` (only the changed attributes).
    pub fn events2_changes(&self, old: &StatusSnapshot) -> Vec<String> {
        let mut lines = Vec::new();
        let susp = |s: &StatusSnapshot| {
            if s.suspended.is_empty() {
                "no".to_string()
            } else {
                s.suspended.join(",")
            }
        };
        let mut attrs = Vec::new();
        if self.role != old.role {
            attrs.push(format!("role:{}", self.role));
        }
        if susp(self) != susp(old) {
            attrs.push(format!("suspended:{}", susp(self)));
        }
        if !attrs.is_empty() {
            lines.push(format!(
                "change resource name:{} {}",
                self.name,
                attrs.join(" ")
            ));
        }
        for v in &self.volumes {
            let ov = old.volumes.iter().find(|o| o.volume == v.volume);
            if ov.map(|o| &o.disk) != Some(&v.disk) {
                lines.push(format!(
                    "change device name:{} volume:{} minor:{} disk:{}",
                    self.name, v.volume, v.minor, v.disk
                ));
            }
        }
        match (&old.connection, &self.connection) {
            (None, Some(c)) => lines.push(format!(
                "create connection name:{} peer-node-id:0 conn-name:peer connection:{} role:{}",
                self.name,
                events2_connection_word(&c.cstate),
                c.peer_role
            )),
            (Some(_), None) => lines.push(format!(
                "destroy connection name:{} peer-node-id:0 conn-name:peer",
                self.name
            )),
            (Some(o), Some(c)) => {
                let mut attrs = Vec::new();
                if events2_connection_word(&o.cstate) != events2_connection_word(&c.cstate) {
                    attrs.push(format!("connection:{}", events2_connection_word(&c.cstate)));
                }
                if o.peer_role != c.peer_role {
                    attrs.push(format!("role:{}", c.peer_role));
                }
                if !attrs.is_empty() {
                    lines.push(format!(
                        "change connection name:{} peer-node-id:0 conn-name:peer {}",
                        self.name,
                        attrs.join(" ")
                    ));
                }
            }
            (None, None) => {}
        }
        if self.connection.is_some() {
            for v in &self.volumes {
                let ov = old.volumes.iter().find(|o| o.volume == v.volume);
                let mut attrs = Vec::new();
                let (orep, opd) = match (ov, &old.connection) {
                    (Some(o), Some(_)) => (replication_word(&o.cstate), o.peer_disk.as_str()),
                    _ => ("", ""),
                };
                if orep != replication_word(&v.cstate) {
                    attrs.push(format!("replication:{}", replication_word(&v.cstate)));
                }
                if opd != v.peer_disk {
                    attrs.push(format!("peer-disk:{}", v.peer_disk));
                }
                if !attrs.is_empty() {
                    lines.push(format!(
                        "change peer-device name:{} peer-node-id:0 conn-name:peer volume:{} {}",
                        self.name,
                        v.volume,
                        attrs.join(" ")
                    ));
                }
            }
        }
        lines
    }

    /// `drbdsetup role`: `Local/Peer`.
    pub fn role_text(&self) -> String {
        let peer = self
            .connection
            .as_ref()
            .map(|c| c.peer_role.as_str())
            .unwrap_or("Unknown");
        format!("{}/{}", self.role, peer)
    }
}

impl VolumeStatus {
    /// `done:` of the status text: 100 × (1 − out-of-sync / size).
    pub fn done_percent(&self) -> f64 {
        if self.size_kib == 0 {
            return 100.0;
        }
        100.0 * (1.0 - self.out_of_sync_kib as f64 / self.size_kib as f64)
    }

    /// `drbdsetup dstate`: `Local/Peer`.
    pub fn dstate_text(&self) -> String {
        format!("{}/{}", self.disk, self.peer_disk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(volume: u16, disk: &str, cstate: &str, peer_disk: &str) -> VolumeStatus {
        VolumeStatus {
            volume,
            minor: 1 + volume as u32,
            disk: disk.into(),
            blocked: vec![],
            cstate: cstate.into(),
            peer_disk: peer_disk.into(),
            resync_suspended: vec![],
            size_kib: 1 << 20,
            out_of_sync_kib: 0,
            stats: VolumeStats::default(),
        }
    }

    fn snap(role: &str, volumes: Vec<VolumeStatus>, conn: Option<(&str, &str)>) -> StatusSnapshot {
        StatusSnapshot {
            name: if volumes.len() > 1 {
                "r1".into()
            } else {
                "r0".into()
            },
            role: role.into(),
            suspended: vec![],
            volumes,
            connection: conn.map(|(c, p)| ConnectionStatus {
                cstate: c.into(),
                peer_role: p.into(),
            }),
        }
    }

    // Spec drbd-config-and-tools.md §4, first example.
    #[test]
    fn status_connected_primary() {
        let s = snap(
            "Primary",
            vec![vol(0, "UpToDate", "Connected", "UpToDate")],
            Some(("Connected", "Secondary")),
        );
        assert_eq!(
            s.render_status(false, false),
            "r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:Established peer-disk:UpToDate\n\n"
        );
    }

    // §4, second example: done = 100 × (1 − oos/size).
    #[test]
    fn status_sync_source_with_done() {
        let mut v = vol(0, "UpToDate", "SyncSource", "Inconsistent");
        v.size_kib = 1_000_000;
        v.out_of_sync_kib = 578_300;
        let s = snap("Primary", vec![v], Some(("SyncSource", "Secondary")));
        assert_eq!(
            s.render_status(false, false),
            "r0 role:Primary\n  disk:UpToDate\n  peer role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:42.17\n\n"
        );
    }

    // §4, third example.
    #[test]
    fn status_connecting() {
        let s = snap(
            "Secondary",
            vec![vol(0, "UpToDate", "WFConnection", "DUnknown")],
            Some(("WFConnection", "Unknown")),
        );
        assert_eq!(
            s.render_status(false, false),
            "r0 role:Secondary\n  disk:UpToDate\n  peer connection:Connecting\n\n"
        );
    }

    // §4, fourth example: two volumes.
    #[test]
    fn status_two_volumes() {
        let s = snap(
            "Secondary",
            vec![
                vol(0, "UpToDate", "Connected", "UpToDate"),
                vol(1, "UpToDate", "Connected", "UpToDate"),
            ],
            Some(("Connected", "Secondary")),
        );
        assert_eq!(
            s.render_status(false, false),
            "r1 role:Secondary\n  volume:0 disk:UpToDate\n  volume:1 disk:UpToDate\n  peer role:Secondary\n    volume:0 replication:Established peer-disk:UpToDate\n    volume:1 replication:Established peer-disk:UpToDate\n\n"
        );
    }

    #[test]
    fn status_standalone_has_no_peer_line() {
        let s = snap(
            "Secondary",
            vec![vol(0, "UpToDate", "StandAlone", "DUnknown")],
            None,
        );
        assert_eq!(
            s.render_status(false, false),
            "r0 role:Secondary\n  disk:UpToDate\n\n"
        );
        let s = snap(
            "Secondary",
            vec![vol(0, "UpToDate", "StandAlone", "DUnknown")],
            Some(("StandAlone", "Unknown")),
        );
        assert_eq!(
            s.render_status(false, false),
            "r0 role:Secondary\n  disk:UpToDate\n  peer connection:StandAlone\n\n"
        );
    }

    // Spec §5.1 example (first four lines and the end marker).
    #[test]
    fn events2_exists_lines() {
        let s = snap(
            "Secondary",
            vec![vol(0, "UpToDate", "Connected", "UpToDate")],
            Some(("Connected", "Primary")),
        );
        assert_eq!(
            s.events2_exists(false),
            vec![
                "exists resource name:r0 role:Secondary suspended:no",
                "exists device name:r0 volume:0 minor:1 disk:UpToDate",
                "exists connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Primary",
                "exists peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:Established peer-disk:UpToDate resync-suspended:no",
                "exists -",
            ]
        );
    }

    // Spec §5.1 example (the two change lines).
    #[test]
    fn events2_change_lines() {
        let old = snap(
            "Secondary",
            vec![vol(0, "UpToDate", "Connected", "UpToDate")],
            Some(("Connected", "Primary")),
        );
        let new = snap(
            "Secondary",
            vec![vol(0, "Inconsistent", "SyncTarget", "UpToDate")],
            Some(("SyncTarget", "Primary")),
        );
        assert_eq!(
            new.events2_changes(&old),
            vec![
                "change device name:r0 volume:0 minor:1 disk:Inconsistent",
                "change peer-device name:r0 peer-node-id:0 conn-name:peer volume:0 replication:SyncTarget",
            ]
        );
    }

    #[test]
    fn role_and_dstate_texts() {
        let s = snap(
            "Primary",
            vec![vol(0, "UpToDate", "SyncSource", "Inconsistent")],
            Some(("SyncSource", "Secondary")),
        );
        assert_eq!(s.role_text(), "Primary/Secondary");
        assert_eq!(s.volumes[0].dstate_text(), "UpToDate/Inconsistent");
    }
}
