//! Configuration handed to `Resource::new`: net/disk options already resolved from drbd.conf,
//! plus what the daemon read from each volume's meta-data at attach.

/// Replication protocol (`P_PROTOCOL` values 1..3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    A = 1,
    B = 2,
    C = 3,
}

/// After-split-brain policies and rr-conflict (spec §10.4; values as in `P_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSbPolicy {
    Disconnect = 0,
    DiscardYoungerPrimary = 1,
    DiscardOlderPrimary = 2,
    DiscardZeroChanges = 3,
    DiscardLeastChanges = 4,
    DiscardLocal = 5,
    DiscardRemote = 6,
    Consensus = 7,
    DiscardSecondary = 8,
    CallPriLost = 9,
    Violently = 10,
}

impl AfterSbPolicy {
    pub fn from_u32(v: u32) -> Option<AfterSbPolicy> {
        use AfterSbPolicy::*;
        Some(match v {
            0 => Disconnect,
            1 => DiscardYoungerPrimary,
            2 => DiscardOlderPrimary,
            3 => DiscardZeroChanges,
            4 => DiscardLeastChanges,
            5 => DiscardLocal,
            6 => DiscardRemote,
            7 => Consensus,
            8 => DiscardSecondary,
            9 => CallPriLost,
            10 => Violently,
            _ => return None,
        })
    }
}

/// `cram-hmac-alg` values we can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmacAlg {
    Sha1,
    Sha256,
    Md5,
}

impl HmacAlg {
    pub fn digest_len(self) -> usize {
        match self {
            HmacAlg::Sha1 => 20,
            HmacAlg::Sha256 => 32,
            HmacAlg::Md5 => 16,
        }
    }
}

/// `fencing` (disk section in 8.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fencing {
    #[default]
    DontCare,
    ResourceOnly,
    ResourceAndStonith,
}

/// `on-io-error` (disk section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnIoError {
    /// Drop the backing device (kernel default, `DRBD_ON_IO_ERROR_DEF` = EP_DETACH).
    #[default]
    Detach,
    /// Keep the disk but mark it Inconsistent.
    PassOn,
}

/// Deliberate bugs for the simulator's mutation check. Always compiled; `None` in production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Protocol C: complete a write upward after the local write, without the peer's ack.
    AckBeforePeerAck,
    /// On connection loss, do not mark unacknowledged writes out of sync.
    ForgetOutOfSyncOnDisconnect,
    /// Write to cold activity-log extents without an AL transaction first.
    SkipActivityLog,
    /// uuid_compare rule 50 answers +1 instead of −1 (sync in the wrong direction).
    WrongSyncDirection,
    /// SyncTarget clears the bitmap bit when the resync data arrives, before its write is durable.
    ClearBitBeforeResyncWriteDurable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub protocol: Protocol,
    /// `cram-hmac-alg` + `shared-secret` (secret bytes without NUL, ≤ 63).
    pub auth: Option<(HmacAlg, Vec<u8>)>,
    pub after_sb_0pri: AfterSbPolicy,
    pub after_sb_1pri: AfterSbPolicy,
    pub after_sb_2pri: AfterSbPolicy,
    pub rr_conflict: AfterSbPolicy,
    pub allow_two_primaries: bool,
    pub always_asbp: bool,
    /// `data-integrity-alg` name as the kernel spells it ("" = none). Only compared, never computed
    /// (a non-empty value is refused at `Resource::new`: we cannot compute kernel digests yet).
    pub integrity_alg: String,
    pub ping_int_s: u32,
    pub ping_timeout_ds: u32,
    pub timeout_ds: u32,
    pub ko_count: u32,
    pub connect_int_s: u32,
    pub max_buffers: u32,
    pub max_epoch_size: u32,
    pub use_rle: bool,
    /// `verify-alg` / `csums-alg` names sent in `P_SYNC_PARAM89` (not implemented: sent, compared).
    pub verify_alg: String,
    pub csums_alg: String,
}

impl Default for NetConfig {
    fn default() -> Self {
        // Defaults from drbd_limits.h (spec drbd-config-and-tools.md §1.3).
        NetConfig {
            protocol: Protocol::C,
            auth: None,
            after_sb_0pri: AfterSbPolicy::Disconnect,
            after_sb_1pri: AfterSbPolicy::Disconnect,
            after_sb_2pri: AfterSbPolicy::Disconnect,
            rr_conflict: AfterSbPolicy::Disconnect,
            allow_two_primaries: false,
            always_asbp: false,
            integrity_alg: String::new(),
            ping_int_s: 10,
            ping_timeout_ds: 5,
            timeout_ds: 60,
            ko_count: 7,
            connect_int_s: 10,
            max_buffers: 2048,
            max_epoch_size: 2048,
            use_rle: true,
            verify_alg: String::new(),
            csums_alg: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// `resync-rate`, KiB/s (default 250).
    pub resync_rate_kib: u32,
    /// `c-plan-ahead`, 0.1 s; 0 = fixed rate (default 20).
    pub c_plan_ahead_ds: u32,
    /// `c-delay-target`, 0.1 s (default 10).
    pub c_delay_target_ds: u32,
    /// `c-fill-target`, sectors (default 100).
    pub c_fill_target_sect: u32,
    /// `c-max-rate`, KiB/s (default 102400).
    pub c_max_rate_kib: u32,
    /// `al-extents` (default 1237).
    pub al_extents: u32,
    pub fencing: Fencing,
    pub on_io_error: OnIoError,
    /// `disk { size }` in sectors, 0 = none.
    pub u_size_sect: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            resync_rate_kib: 250,
            c_plan_ahead_ds: 20,
            c_delay_target_ds: 10,
            c_fill_target_sect: 100,
            c_max_rate_kib: 102_400,
            al_extents: 1237,
            fencing: Fencing::DontCare,
            on_io_error: OnIoError::Detach,
            u_size_sect: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceConfig {
    pub name: String,
    pub net: NetConfig,
    pub disk: DiskConfig,
    /// Seeds every random choice (new UUIDs, auth challenges).
    pub rng_seed: u64,
    /// Volumes of this resource (each with its own disk, bitmap, UUIDs).
    pub volumes: Vec<crate::input::Volume>,
    /// Start in WFConnection (as `drbdadm up` does) rather than StandAlone.
    pub connect_on_start: bool,
    /// Largest request we accept from the upper layer and the peer, bytes (1 MiB like 8.4).
    pub max_bio_size: u32,
    pub mutation: Option<Mutation>,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig {
            name: "r0".into(),
            net: NetConfig::default(),
            disk: DiskConfig::default(),
            rng_seed: 0,
            volumes: vec![crate::input::Volume(0)],
            connect_on_start: true,
            max_bio_size: 1 << 20,
            mutation: None,
        }
    }
}

/// Where the meta-data area lies (spec drbd-metadata.md §1), as read from the superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaLayout {
    /// Byte offset of the superblock on the meta-data device.
    pub md_offset_bytes: u64,
    /// Signed sector offsets relative to the superblock.
    pub al_offset_sect: i32,
    pub bm_offset_sect: i32,
    pub md_size_sect: u32,
    pub al_stripes: u32,
    pub al_stripe_size_4k: u32,
}

impl MetaLayout {
    /// Internal meta-data for a backing device of `backing_sect` sectors with the default 32 KiB
    /// AL (spec drbd-metadata.md §1.1).
    pub fn internal(backing_sect: u64) -> MetaLayout {
        let md_offset = (backing_sect & !7) - 8;
        let bm_sect = (backing_sect.div_ceil(32768)).div_ceil(8) * 8;
        let al_sect = 64u64;
        let md_size = bm_sect + 8 + al_sect;
        MetaLayout {
            md_offset_bytes: md_offset * 512,
            al_offset_sect: -(al_sect as i32),
            bm_offset_sect: 8 - md_size as i32,
            md_size_sect: md_size as u32,
            al_stripes: 1,
            al_stripe_size_4k: 8,
        }
    }
    /// Usable data sectors with internal meta-data (kernel `drbd_get_max_capacity`).
    pub fn internal_data_sectors(backing_sect: u64) -> u64 {
        let l = MetaLayout::internal(backing_sect);
        (backing_sect & !7) - l.md_size_sect as u64
    }
}

/// A volume's meta-data as read at attach, plus the usable data size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedDisk {
    /// Usable data sectors of the backing device (after meta-data).
    pub size_sectors: u64,
    /// current, bitmap, history[0], history[1].
    pub uuids: [u64; 4],
    /// MDF_* flags word.
    pub flags: u32,
    pub la_size_sect: u64,
    pub device_uuid: u64,
    pub la_peer_max_bio_size: u32,
    /// On-disk bitmap as LE words (as many as the meta-data holds; at least enough for the size).
    pub bitmap: Vec<u64>,
    pub layout: MetaLayout,
}

impl AttachedDisk {
    /// Fresh meta-data as `drbdmeta create-md` leaves it: current UUID 4, AL clean.
    pub fn fresh(size_sectors: u64, layout: MetaLayout) -> AttachedDisk {
        let bits = size_sectors.div_ceil(8);
        AttachedDisk {
            size_sectors,
            uuids: [crate::uuid_compare::UUID_JUST_CREATED, 0, 0, 0],
            flags: crate::resource::MDF_AL_CLEAN,
            la_size_sect: 0,
            device_uuid: 0,
            la_peer_max_bio_size: 0,
            bitmap: vec![0; bits.div_ceil(64) as usize],
            layout,
        }
    }
}

/// One volume at construction: `disk` None means diskless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeOnDisk {
    pub volume: crate::input::Volume,
    pub disk: Option<AttachedDisk>,
}
