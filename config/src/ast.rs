//! The configuration as written: sections, statements and option texts, before any
//! inheritance. `dump` prints this; [`crate::resolve`] turns it into typed values.

use crate::error::Location;

/// One `name value;` (or bare `name;`) statement inside an option section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    pub name: String,
    /// `None` only for statements drbdadm stores without a value (`stacked-timeouts`).
    pub value: Option<String>,
    /// Values drbdadm already formatted and prints verbatim (`become-primary-on`).
    pub verbatim: bool,
    pub at: Location,
}

/// `[af] addr:port` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressText {
    /// `ipv4`, `ipv6`, `ssocks` or `sdp`.
    pub af: String,
    pub addr: String,
    pub port: String,
    pub at: Location,
}

/// A `volume N { }` block, or the implicit volume 0 made by statements outside any block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeText {
    /// drbdadm reads volume numbers with `atoi`; range checked on resolution.
    pub vnr: i64,
    pub implicit: bool,
    pub device: Option<String>,
    /// `minor N`, or the minor taken from the device name.
    pub minor: Option<i64>,
    pub disk: Option<String>,
    pub meta_disk: Option<String>,
    /// `internal`, `flexible` or an index.
    pub meta_index: Option<String>,
    pub disk_options: Vec<Opt>,
    pub at: Location,
}

impl VolumeText {
    pub(crate) fn new(vnr: i64, implicit: bool, at: Location) -> Self {
        VolumeText {
            vnr,
            implicit,
            device: None,
            minor: None,
            disk: None,
            meta_disk: None,
            meta_index: None,
            disk_options: Vec::new(),
            at,
        }
    }
}

/// An `on NAMES { }`, `floating ADDR { }` (or `_this_host { }`) section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostText {
    pub names: Vec<String>,
    pub floating: bool,
    pub address: Option<AddressText>,
    pub alt_address: Option<AddressText>,
    pub volumes: Vec<VolumeText>,
    pub options: Vec<Opt>,
    /// Whether drbdadm requires address and complete volumes (`on`, `floating`).
    pub require_all: bool,
    pub at: Location,
}

/// A `resource NAME { }` section, or the `common { }` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceText {
    pub name: String,
    /// Absolute path of the file that defines it, as drbdadm prints it.
    pub file: String,
    /// Line of the opening brace.
    pub start_line: u32,
    pub hosts: Vec<HostText>,
    /// Volume statements at resource level, inherited by host sections that follow them.
    pub volumes: Vec<VolumeText>,
    pub net: Vec<Opt>,
    pub disk: Vec<Opt>,
    pub startup: Vec<Opt>,
    pub options: Vec<Opt>,
    pub handlers: Vec<Opt>,
    pub become_primary_on: Vec<String>,
    pub stacked_timeouts: bool,
    pub at: Location,
}

/// `usage-count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageCount {
    Yes,
    No,
    Ask,
}

/// The `global { }` section as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalText {
    pub usage_count: UsageCount,
    pub minor_count: Option<i64>,
    pub dialog_refresh: Option<i64>,
    pub disable_ip_verification: bool,
    pub udev_always_use_vnr: bool,
    pub cmd_timeout_short: Option<i64>,
    pub cmd_timeout_medium: Option<i64>,
    pub cmd_timeout_long: Option<i64>,
}

impl Default for GlobalText {
    fn default() -> Self {
        GlobalText {
            usage_count: UsageCount::Ask,
            minor_count: None,
            dialog_refresh: None,
            disable_ip_verification: false,
            udev_always_use_vnr: false,
            cmd_timeout_short: None,
            cmd_timeout_medium: None,
            cmd_timeout_long: None,
        }
    }
}
