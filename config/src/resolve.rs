//! The resolved, typed view of one resource for one host: what `drbdadm up` would hand to
//! drbdsetup, with every option the kernel would otherwise default (drbd_limits.h, spec §1.3).

use std::net::{IpAddr, SocketAddr};

use crate::ast::{AddressText, HostText, Opt, ResourceText, VolumeText};
use crate::error::{Error, Location};
use crate::units::{parse_number, Unit};
use crate::Selection;

/// Replication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    A,
    B,
    C,
}

/// Address family of an `address` statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
    Ssocks,
    Sdp,
}

/// `[af] host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub family: AddressFamily,
    /// The address as written (an IPv6 address may carry a `%scope`).
    pub host: String,
    pub port: u16,
}

impl Address {
    /// The socket address, for IPv4 and IPv6 (without a scope suffix).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.split('%').next()?.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

/// Where a volume's meta-data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing device.
    Internal,
    /// On its own device, sized to the data (`meta-disk /dev/x;`).
    FlexExternal(String),
    /// Slot `index` of 128 MiB on a shared meta-data device (`meta-disk /dev/x [index];`).
    Indexed { device: String, index: u32 },
}

/// One volume of this host (or of the peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub number: u16,
    pub minor: u32,
    /// `/dev/drbdN` unless the configuration names the device.
    pub device: String,
    pub disk: String,
    pub meta_disk: MetaDisk,
    /// Disk options for this volume (resource-level and `common` ones inherited).
    pub disk_options: DiskOptions,
}

/// A host section, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The names after `on` (for `floating`, `addr:port`).
    pub names: Vec<String>,
    pub floating: bool,
    pub address: Address,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSb0Pri {
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    /// `discard-node-NAME` naming this host.
    DiscardLocal,
    /// `discard-node-NAME` naming the peer.
    DiscardRemote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSb1Pri {
    Disconnect,
    Consensus,
    DiscardSecondary,
    CallPriLostAfterSb,
    ViolentlyAs0p,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSb2Pri {
    Disconnect,
    CallPriLostAfterSb,
    ViolentlyAs0p,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrConflict {
    Disconnect,
    CallPriLost,
    Violently,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCongestion {
    Block,
    PullAhead,
    Disconnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnIoError {
    PassOn,
    CallLocalIoError,
    Detach,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fencing {
    DontCare,
    ResourceOnly,
    ResourceAndStonith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBalancing {
    PreferLocal,
    PreferRemote,
    RoundRobin,
    LeastPending,
    WhenCongestedRemote,
    /// `32K-striping` … `1M-striping`: the stripe size in KiB.
    Striping(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNoDataAccessible {
    IoError,
    SuspendIo,
}

/// `net { }` (drbdsetup `connect` options); units in the field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOptions {
    pub protocol: Protocol,
    pub timeout_ds: u32,
    pub max_epoch_size: u32,
    pub max_buffers: u32,
    pub unplug_watermark: u32,
    pub connect_int_s: u32,
    pub ping_int_s: u32,
    pub sndbuf_size_bytes: u32,
    pub rcvbuf_size_bytes: u32,
    pub ko_count: u32,
    pub allow_two_primaries: bool,
    pub cram_hmac_alg: Option<String>,
    pub shared_secret: Option<String>,
    pub after_sb_0pri: AfterSb0Pri,
    pub after_sb_1pri: AfterSb1Pri,
    pub after_sb_2pri: AfterSb2Pri,
    pub always_asbp: bool,
    pub rr_conflict: RrConflict,
    pub ping_timeout_ds: u32,
    pub data_integrity_alg: Option<String>,
    pub tcp_cork: bool,
    pub on_congestion: OnCongestion,
    pub congestion_fill_sectors: u32,
    pub congestion_extents: u32,
    pub csums_alg: Option<String>,
    pub csums_after_crash_only: bool,
    pub verify_alg: Option<String>,
    pub use_rle: bool,
    pub socket_check_timeout_ds: u32,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            protocol: Protocol::C,
            timeout_ds: 60,
            max_epoch_size: 2048,
            max_buffers: 2048,
            unplug_watermark: 128,
            connect_int_s: 10,
            ping_int_s: 10,
            sndbuf_size_bytes: 0,
            rcvbuf_size_bytes: 0,
            ko_count: 7,
            allow_two_primaries: false,
            cram_hmac_alg: None,
            shared_secret: None,
            after_sb_0pri: AfterSb0Pri::Disconnect,
            after_sb_1pri: AfterSb1Pri::Disconnect,
            after_sb_2pri: AfterSb2Pri::Disconnect,
            always_asbp: false,
            rr_conflict: RrConflict::Disconnect,
            ping_timeout_ds: 5,
            data_integrity_alg: None,
            tcp_cork: true,
            on_congestion: OnCongestion::Block,
            congestion_fill_sectors: 0,
            congestion_extents: 1237,
            csums_alg: None,
            csums_after_crash_only: false,
            verify_alg: None,
            use_rle: true,
            socket_check_timeout_ds: 0,
        }
    }
}

/// `disk { }` (drbdsetup `attach` / `disk-options`); units in the field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// User-requested size; 0 = the whole backing device.
    pub size_sectors: u64,
    pub max_bio_bvecs: u32,
    pub on_io_error: OnIoError,
    pub fencing: Fencing,
    pub disk_barrier: bool,
    pub disk_flushes: bool,
    pub disk_drain: bool,
    pub md_flushes: bool,
    pub resync_rate_kib: u32,
    /// `resync-after RES[/VOL]`: the minor of that volume on this host.
    pub resync_after_minor: Option<u32>,
    pub al_extents: u32,
    pub al_updates: bool,
    pub discard_zeroes_if_aligned: bool,
    pub disable_write_same: bool,
    pub c_plan_ahead_ds: u32,
    pub c_delay_target_ds: u32,
    pub c_fill_target_sectors: u32,
    pub c_max_rate_kib: u32,
    pub c_min_rate_kib: u32,
    pub disk_timeout_ds: u32,
    pub read_balancing: ReadBalancing,
    pub rs_discard_granularity_bytes: u32,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            size_sectors: 0,
            max_bio_bvecs: 0,
            on_io_error: OnIoError::Detach,
            fencing: Fencing::DontCare,
            disk_barrier: false,
            disk_flushes: true,
            disk_drain: true,
            md_flushes: true,
            resync_rate_kib: 250,
            resync_after_minor: None,
            al_extents: 1237,
            al_updates: true,
            discard_zeroes_if_aligned: true,
            disable_write_same: false,
            c_plan_ahead_ds: 20,
            c_delay_target_ds: 10,
            c_fill_target_sectors: 100,
            c_max_rate_kib: 102400,
            c_min_rate_kib: 250,
            disk_timeout_ds: 0,
            read_balancing: ReadBalancing::PreferLocal,
            rs_discard_granularity_bytes: 0,
        }
    }
}

/// `startup { }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupOptions {
    /// 0 = wait forever.
    pub wfc_timeout_s: u32,
    pub degr_wfc_timeout_s: u32,
    pub outdated_wfc_timeout_s: u32,
    pub wait_after_sb: bool,
    pub become_primary_on: Vec<String>,
    pub stacked_timeouts: bool,
}

/// `options { }` (drbdsetup `resource-options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOptions {
    pub cpu_mask: Option<String>,
    pub on_no_data_accessible: OnNoDataAccessible,
}

impl Default for ResourceOptions {
    fn default() -> Self {
        ResourceOptions {
            cpu_mask: None,
            on_no_data_accessible: OnNoDataAccessible::IoError,
        }
    }
}

/// `handlers { }`: the shell command for each handler that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handlers {
    pub pri_on_incon_degr: Option<String>,
    pub pri_lost_after_sb: Option<String>,
    pub pri_lost: Option<String>,
    pub fence_peer: Option<String>,
    pub unfence_peer: Option<String>,
    pub local_io_error: Option<String>,
    pub initial_split_brain: Option<String>,
    pub split_brain: Option<String>,
    pub before_resync_target: Option<String>,
    pub after_resync_target: Option<String>,
    pub before_resync_source: Option<String>,
    pub out_of_sync: Option<String>,
}

impl Handlers {
    /// The command for a handler by its drbd.conf name (`fence-peer`, …).
    pub fn get(&self, name: &str) -> Option<&str> {
        let h = match name {
            "pri-on-incon-degr" => &self.pri_on_incon_degr,
            "pri-lost-after-sb" => &self.pri_lost_after_sb,
            "pri-lost" => &self.pri_lost,
            "fence-peer" | "outdate-peer" => &self.fence_peer,
            "unfence-peer" => &self.unfence_peer,
            "local-io-error" => &self.local_io_error,
            "initial-split-brain" => &self.initial_split_brain,
            "split-brain" => &self.split_brain,
            "before-resync-target" => &self.before_resync_target,
            "after-resync-target" => &self.after_resync_target,
            "before-resync-source" => &self.before_resync_source,
            "out-of-sync" => &self.out_of_sync,
            _ => return None,
        };
        h.as_deref()
    }
}

/// One resource as this host runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedResource {
    pub name: String,
    /// Where the `resource` keyword is.
    pub defined_at: Location,
    /// The host name the resource was resolved for.
    pub node: String,
    pub local: Host,
    /// The other host section (8.4 has at most one peer); `None` if the resource has only
    /// this host's section, or more than two.
    pub peer: Option<Host>,
    pub net: NetOptions,
    /// Resource-level disk options (each volume carries its own, see [`Volume`]).
    pub disk: DiskOptions,
    pub startup: StartupOptions,
    pub options: ResourceOptions,
    pub handlers: Handlers,
}

impl ResolvedResource {
    /// This host's volumes, by number.
    pub fn volumes(&self) -> &[Volume] {
        &self.local.volumes
    }

    /// This host's volume `number`.
    pub fn volume(&self, number: u16) -> Option<&Volume> {
        self.local.volumes.iter().find(|v| v.number == number)
    }
}

fn bad(o: &Opt, what: &str) -> Error {
    Error::invalid(
        &o.at,
        format!(
            "{} {}: {what}",
            o.name,
            o.value.as_deref().map(crate::dump::esc).unwrap_or_default()
        ),
    )
}

fn value(o: &Opt) -> &str {
    o.value.as_deref().unwrap_or("")
}

fn num(o: &Opt, unit: Unit, min: u64, max: u64) -> Result<u64, Error> {
    let n = parse_number(value(o), unit).map_err(|e| bad(o, &e.to_string()))?;
    if n < min || n > max {
        let u = unit.suffix();
        return Err(bad(o, &format!("{n}{u} out of range [{min}..{max}]{u}")));
    }
    Ok(n)
}

fn num32(o: &Opt, unit: Unit, min: u64, max: u64) -> Result<u32, Error> {
    num(o, unit, min, max).map(|n| n as u32)
}

fn flag(o: &Opt) -> Result<bool, Error> {
    match value(o) {
        "yes" | "" => Ok(true),
        "no" => Ok(false),
        _ => Err(bad(o, "expected yes or no")),
    }
}

fn choose<T: Copy>(o: &Opt, table: &[(&str, T)]) -> Result<T, Error> {
    let v = value(o);
    table
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            bad(o, &format!("expected one of {}", names.join(", ")))
        })
}

fn net_options(opts: &[Opt], me: &HostText, peer: Option<&HostText>) -> Result<NetOptions, Error> {
    let mut n = NetOptions::default();
    for o in opts {
        let s = || Some(value(o).to_string());
        match o.name.as_str() {
            "protocol" => {
                n.protocol = choose(
                    o,
                    &[("A", Protocol::A), ("B", Protocol::B), ("C", Protocol::C)],
                )?
            }
            "timeout" => n.timeout_ds = num32(o, Unit::One, 1, 600)?,
            "max-epoch-size" => n.max_epoch_size = num32(o, Unit::One, 1, 20000)?,
            "max-buffers" => n.max_buffers = num32(o, Unit::One, 32, 131072)?,
            "unplug-watermark" => n.unplug_watermark = num32(o, Unit::One, 1, 131072)?,
            "connect-int" => n.connect_int_s = num32(o, Unit::One, 1, 120)?,
            "ping-int" => n.ping_int_s = num32(o, Unit::One, 1, 120)?,
            "sndbuf-size" => n.sndbuf_size_bytes = num32(o, Unit::One, 0, 10 << 20)?,
            "rcvbuf-size" => n.rcvbuf_size_bytes = num32(o, Unit::One, 0, 10 << 20)?,
            "ko-count" => n.ko_count = num32(o, Unit::One, 0, 200)?,
            "allow-two-primaries" => n.allow_two_primaries = flag(o)?,
            "cram-hmac-alg" => n.cram_hmac_alg = s(),
            "shared-secret" => {
                // The kernel's field holds 63 characters and a NUL (SHARED_SECRET_MAX).
                if value(o).len() > 63 {
                    return Err(bad(o, "longer than 63 characters"));
                }
                n.shared_secret = s()
            }
            "after-sb-0pri" => {
                n.after_sb_0pri = match value(o).strip_prefix("discard-node-") {
                    Some(node) if me.names.iter().any(|x| x == node) => AfterSb0Pri::DiscardLocal,
                    Some(node) if peer.is_some_and(|p| p.names.iter().any(|x| x == node)) => {
                        AfterSb0Pri::DiscardRemote
                    }
                    Some(_) => {
                        return Err(bad(
                            o,
                            "the node name in this option is not a host of the resource",
                        ))
                    }
                    None => choose(
                        o,
                        &[
                            ("disconnect", AfterSb0Pri::Disconnect),
                            (
                                "discard-younger-primary",
                                AfterSb0Pri::DiscardYoungerPrimary,
                            ),
                            ("discard-older-primary", AfterSb0Pri::DiscardOlderPrimary),
                            ("discard-zero-changes", AfterSb0Pri::DiscardZeroChanges),
                            ("discard-least-changes", AfterSb0Pri::DiscardLeastChanges),
                            ("discard-local", AfterSb0Pri::DiscardLocal),
                            ("discard-remote", AfterSb0Pri::DiscardRemote),
                        ],
                    )?,
                }
            }
            "after-sb-1pri" => {
                n.after_sb_1pri = choose(
                    o,
                    &[
                        ("disconnect", AfterSb1Pri::Disconnect),
                        ("consensus", AfterSb1Pri::Consensus),
                        ("discard-secondary", AfterSb1Pri::DiscardSecondary),
                        ("call-pri-lost-after-sb", AfterSb1Pri::CallPriLostAfterSb),
                        ("violently-as0p", AfterSb1Pri::ViolentlyAs0p),
                    ],
                )?
            }
            "after-sb-2pri" => {
                n.after_sb_2pri = choose(
                    o,
                    &[
                        ("disconnect", AfterSb2Pri::Disconnect),
                        ("call-pri-lost-after-sb", AfterSb2Pri::CallPriLostAfterSb),
                        ("violently-as0p", AfterSb2Pri::ViolentlyAs0p),
                    ],
                )?
            }
            "always-asbp" => n.always_asbp = flag(o)?,
            "rr-conflict" => {
                n.rr_conflict = choose(
                    o,
                    &[
                        ("disconnect", RrConflict::Disconnect),
                        ("call-pri-lost", RrConflict::CallPriLost),
                        ("violently", RrConflict::Violently),
                    ],
                )?
            }
            "ping-timeout" => n.ping_timeout_ds = num32(o, Unit::One, 1, 300)?,
            "data-integrity-alg" => n.data_integrity_alg = s(),
            "tcp-cork" => n.tcp_cork = flag(o)?,
            "on-congestion" => {
                n.on_congestion = choose(
                    o,
                    &[
                        ("block", OnCongestion::Block),
                        ("pull-ahead", OnCongestion::PullAhead),
                        ("disconnect", OnCongestion::Disconnect),
                    ],
                )?
            }
            "congestion-fill" => n.congestion_fill_sectors = num32(o, Unit::Sectors, 0, 10 << 21)?,
            "congestion-extents" => n.congestion_extents = num32(o, Unit::One, 67, 0xfffe)?,
            "csums-alg" => n.csums_alg = s(),
            "csums-after-crash-only" => n.csums_after_crash_only = flag(o)?,
            "verify-alg" => n.verify_alg = s(),
            "use-rle" => n.use_rle = flag(o)?,
            "socket-check-timeout" => n.socket_check_timeout_ds = num32(o, Unit::One, 0, 300)?,
            _ => return Err(bad(o, "unknown net option")),
        }
    }
    Ok(n)
}

/// Disk options; `resync_after` maps `RES[/VOL]` to that volume's minor on this host.
fn disk_options(
    opts: &[Opt],
    resync_after: &dyn Fn(&Opt) -> Result<Option<u32>, Error>,
) -> Result<DiskOptions, Error> {
    let mut d = DiskOptions::default();
    for o in opts {
        match o.name.as_str() {
            "size" => d.size_sectors = num(o, Unit::Sectors, 0, 2 << 40)?,
            "max-bio-bvecs" => d.max_bio_bvecs = num32(o, Unit::One, 0, 128)?,
            "on-io-error" => {
                d.on_io_error = choose(
                    o,
                    &[
                        ("pass_on", OnIoError::PassOn),
                        ("call-local-io-error", OnIoError::CallLocalIoError),
                        ("detach", OnIoError::Detach),
                    ],
                )?
            }
            "fencing" => {
                d.fencing = choose(
                    o,
                    &[
                        ("dont-care", Fencing::DontCare),
                        ("resource-only", Fencing::ResourceOnly),
                        ("resource-and-stonith", Fencing::ResourceAndStonith),
                    ],
                )?
            }
            "disk-barrier" => d.disk_barrier = flag(o)?,
            "disk-flushes" => d.disk_flushes = flag(o)?,
            "disk-drain" => d.disk_drain = flag(o)?,
            "md-flushes" => d.md_flushes = flag(o)?,
            "resync-rate" => d.resync_rate_kib = num32(o, Unit::Kilo, 1, 4 << 20)?,
            "resync-after" => d.resync_after_minor = resync_after(o)?,
            "al-extents" => d.al_extents = num32(o, Unit::One, 67, 0xfffe)?,
            "al-updates" => d.al_updates = flag(o)?,
            "discard-zeroes-if-aligned" => d.discard_zeroes_if_aligned = flag(o)?,
            "disable-write-same" => d.disable_write_same = flag(o)?,
            "c-plan-ahead" => d.c_plan_ahead_ds = num32(o, Unit::One, 0, 300)?,
            "c-delay-target" => d.c_delay_target_ds = num32(o, Unit::One, 1, 100)?,
            "c-fill-target" => d.c_fill_target_sectors = num32(o, Unit::Sectors, 0, 1 << 20)?,
            "c-max-rate" => d.c_max_rate_kib = num32(o, Unit::Kilo, 250, 4 << 20)?,
            "c-min-rate" => d.c_min_rate_kib = num32(o, Unit::Kilo, 0, 4 << 20)?,
            "disk-timeout" => d.disk_timeout_ds = num32(o, Unit::One, 0, 6000)?,
            "read-balancing" => {
                d.read_balancing = choose(
                    o,
                    &[
                        ("prefer-local", ReadBalancing::PreferLocal),
                        ("prefer-remote", ReadBalancing::PreferRemote),
                        ("round-robin", ReadBalancing::RoundRobin),
                        ("least-pending", ReadBalancing::LeastPending),
                        ("when-congested-remote", ReadBalancing::WhenCongestedRemote),
                        ("32K-striping", ReadBalancing::Striping(32)),
                        ("64K-striping", ReadBalancing::Striping(64)),
                        ("128K-striping", ReadBalancing::Striping(128)),
                        ("256K-striping", ReadBalancing::Striping(256)),
                        ("512K-striping", ReadBalancing::Striping(512)),
                        ("1M-striping", ReadBalancing::Striping(1024)),
                    ],
                )?
            }
            "rs-discard-granularity" => {
                d.rs_discard_granularity_bytes = num32(o, Unit::One, 0, 1 << 20)?
            }
            // Obsolete; drbdadm still parses it and the kernel ignores it.
            "use-bmbv" => {}
            _ => return Err(bad(o, "unknown disk option")),
        }
    }
    Ok(d)
}

fn startup_options(r: &ResourceText) -> Result<StartupOptions, Error> {
    let mut s = StartupOptions {
        become_primary_on: r.become_primary_on.clone(),
        stacked_timeouts: r.stacked_timeouts,
        ..StartupOptions::default()
    };
    for o in &r.startup {
        match o.name.as_str() {
            "wfc-timeout" => s.wfc_timeout_s = num32(o, Unit::One, 0, 300000)?,
            "degr-wfc-timeout" => s.degr_wfc_timeout_s = num32(o, Unit::One, 0, 300000)?,
            "outdated-wfc-timeout" => s.outdated_wfc_timeout_s = num32(o, Unit::One, 0, 300000)?,
            "wait-after-sb" => s.wait_after_sb = flag(o)?,
            _ => return Err(bad(o, "unknown startup option")),
        }
    }
    Ok(s)
}

fn resource_options(opts: &[Opt]) -> Result<ResourceOptions, Error> {
    let mut r = ResourceOptions::default();
    for o in opts {
        match o.name.as_str() {
            "cpu-mask" => r.cpu_mask = Some(value(o).to_string()),
            "on-no-data-accessible" => {
                r.on_no_data_accessible = choose(
                    o,
                    &[
                        ("io-error", OnNoDataAccessible::IoError),
                        ("suspend-io", OnNoDataAccessible::SuspendIo),
                    ],
                )?
            }
            _ => return Err(bad(o, "unknown resource option")),
        }
    }
    Ok(r)
}

fn handlers(opts: &[Opt]) -> Result<Handlers, Error> {
    let mut h = Handlers::default();
    for o in opts {
        let v = Some(value(o).to_string());
        match o.name.as_str() {
            "pri-on-incon-degr" => h.pri_on_incon_degr = v,
            "pri-lost-after-sb" => h.pri_lost_after_sb = v,
            "pri-lost" => h.pri_lost = v,
            "fence-peer" => h.fence_peer = v,
            "unfence-peer" => h.unfence_peer = v,
            "local-io-error" => h.local_io_error = v,
            "initial-split-brain" => h.initial_split_brain = v,
            "split-brain" => h.split_brain = v,
            "before-resync-target" => h.before_resync_target = v,
            "after-resync-target" => h.after_resync_target = v,
            "before-resync-source" => h.before_resync_source = v,
            "out-of-sync" => h.out_of_sync = v,
            _ => return Err(bad(o, "unknown handler")),
        }
    }
    Ok(h)
}

fn address(a: &AddressText) -> Result<Address, Error> {
    let family = match a.af.as_str() {
        "ipv4" => AddressFamily::Ipv4,
        "ipv6" => AddressFamily::Ipv6,
        "ssocks" => AddressFamily::Ssocks,
        _ => AddressFamily::Sdp,
    };
    let port = parse_number(&a.port, Unit::One)
        .ok()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| Error::invalid(&a.at, format!("port {} out of range [1..65535]", a.port)))?;
    if matches!(family, AddressFamily::Ipv4 | AddressFamily::Ipv6)
        && a.addr
            .split('%')
            .next()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_none()
    {
        return Err(Error::invalid(
            &a.at,
            format!("'{}' is not a valid IP address", a.addr),
        ));
    }
    Ok(Address {
        family,
        host: a.addr.clone(),
        port,
    })
}

fn volume(
    v: &VolumeText,
    resync_after: &dyn Fn(&Opt) -> Result<Option<u32>, Error>,
) -> Result<Volume, Error> {
    let number = u16::try_from(v.vnr).map_err(|_| {
        Error::invalid(
            &v.at,
            format!("volume number {} out of range [0..65535]", v.vnr),
        )
    })?;
    let minor = v
        .minor
        .and_then(|m| u32::try_from(m).ok())
        .filter(|&m| m < (1 << 20))
        .ok_or_else(|| {
            Error::invalid(
                &v.at,
                "device minor number missing or out of range [0..1048575]",
            )
        })?;
    let disk = v
        .disk
        .clone()
        .ok_or_else(|| Error::invalid(&v.at, format!("volume {number}: 'disk' keyword missing")))?;
    let md = v.meta_disk.clone().ok_or_else(|| {
        Error::invalid(
            &v.at,
            format!("volume {number}: 'meta-disk' keyword missing"),
        )
    })?;
    let meta_disk = match v.meta_index.as_deref() {
        Some("internal") => MetaDisk::Internal,
        Some("flexible") | None => MetaDisk::FlexExternal(md),
        Some(i) => MetaDisk::Indexed {
            device: md,
            index: parse_number(i, Unit::One)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::invalid(&v.at, format!("meta-disk index {i} is not a number"))
                })?,
        },
    };
    Ok(Volume {
        number,
        minor,
        device: v
            .device
            .clone()
            .unwrap_or_else(|| format!("/dev/drbd{minor}")),
        disk,
        meta_disk,
        disk_options: disk_options(&v.disk_options, resync_after)?,
    })
}

fn host(
    h: &HostText,
    resync_after: &dyn Fn(&Opt) -> Result<Option<u32>, Error>,
) -> Result<Host, Error> {
    let a = h.address.as_ref().ok_or_else(|| {
        Error::invalid(
            &h.at,
            format!(
                "on {} {{ ... }}: 'address' keyword missing",
                h.names.join(" ")
            ),
        )
    })?;
    let mut volumes = Vec::with_capacity(h.volumes.len());
    for v in &h.volumes {
        let vol = volume(v, resync_after)?;
        if volumes.iter().any(|x: &Volume| x.number == vol.number) {
            return Err(Error::invalid(
                &v.at,
                format!("volume {} defined twice", vol.number),
            ));
        }
        volumes.push(vol);
    }
    Ok(Host {
        names: h.names.clone(),
        floating: h.floating,
        address: address(a)?,
        volumes,
    })
}

pub(crate) fn resolve(
    r: &ResourceText,
    sel: Selection,
    all: &[ResourceText],
    sels: &[Selection],
) -> Result<ResolvedResource, Error> {
    let me_idx = sel
        .me
        .expect("resolve is called for resources with a local host section");
    let me = &r.hosts[me_idx];
    let peer = sel.peer.map(|p| &r.hosts[p]);
    // drbdadm's convert_after_option: `resync-after RES[/VOL]` becomes that volume's minor on
    // this host (volume 0 when none is given).
    let resync_after = |o: &Opt| -> Result<Option<u32>, Error> {
        let v = value(o);
        let (name, vnr) = match v.split_once('/') {
            Some((n, x)) => (
                n,
                parse_number(x, Unit::One).map_err(|e| bad(o, &e.to_string()))?,
            ),
            None => (v, 0),
        };
        let found = all.iter().zip(sels).find(|(x, _)| x.name == name);
        let Some((res, Selection { me: Some(m), .. })) = found else {
            return Err(bad(o, "resource not defined for this host"));
        };
        let vol = res.hosts[*m]
            .volumes
            .iter()
            .find(|x| x.vnr as u64 == vnr)
            .ok_or_else(|| bad(o, "no such volume"))?;
        Ok(vol.minor.and_then(|m| u32::try_from(m).ok()))
    };
    let local = host(me, &resync_after)?;
    let peer_host = match peer {
        Some(p) => Some(host(p, &resync_after)?),
        None => None,
    };
    Ok(ResolvedResource {
        name: r.name.clone(),
        defined_at: r.at.clone(),
        node: String::new(),
        net: net_options(&r.net, me, peer)?,
        disk: disk_options(&r.disk, &resync_after)?,
        startup: startup_options(r)?,
        options: {
            let mut opts = r.options.clone();
            opts.extend(me.options.iter().cloned());
            resource_options(&opts)?
        },
        handlers: handlers(&r.handlers)?,
        local,
        peer: peer_host,
    })
}
