//! `Resource`: one DRBD resource (one or more volumes) and its single peer. Inputs go in through
//! `handle`/`handle_timeout`, actions come out of `poll_output`; see the crate docs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self, cmd, dp, Frame, Reader, StreamDecoder, ID_SYNCER};
use crate::config::{AttachedDisk, Fencing, Mutation, Protocol, ResourceConfig, VolumeOnDisk};
use crate::epoch::RxEpochs;
use crate::error::{Error, PeerIncompatible, PeerMisbehaved};
use crate::handshake::{self, Agreed, ExpectAuth, Handshake, PeerSyncParams, Sizes};
use crate::input::{AdminCommand, Input, IoErrorKind, IoId, RequestId, RequestOp, Socket, Volume};
use crate::meta::{self, ActivityLog, AlNeed, Bitmap, SuperblockImage};
use crate::output::{
    AdminRefusal, LogLevel, MetaUpdate, MetaWrite, Output, RequestError, StateChange,
};
use crate::request::{Local, Net, ReqKind, Request, TransferLog};
use crate::resync::{BmCursor, RateSettings, Resync, RS_EXTENT_BITS, RS_MAX_REQUEST_BITS};
use crate::states::{ConnState, DiskState, DrbdState, Role};
use crate::timer::{Instant, Timer, TimerTable, DECISECOND_NS, RESYNC_TICK_NS, SECOND_NS};
use crate::uuid_compare::{
    self as uc, CompareInput, UI_BITMAP, UI_CURRENT, UI_HISTORY_END, UI_HISTORY_START,
};

/// MDF_* superblock flags (spec drbd-metadata.md §3).
pub const MDF_CONSISTENT: u32 = 0x001;
pub const MDF_PRIMARY_IND: u32 = 0x002;
pub const MDF_CONNECTED_IND: u32 = 0x004;
pub const MDF_FULL_SYNC: u32 = 0x008;
pub const MDF_WAS_UP_TO_DATE: u32 = 0x010;
pub const MDF_PEER_OUT_DATED: u32 = 0x020;
pub const MDF_CRASHED_PRIMARY: u32 = 0x040;
pub const MDF_AL_CLEAN: u32 = 0x080;

/// `enum drbd_state_rv` values we return (spec §9.4).
pub mod rv {
    pub const SUCCESS: i32 = 1;
    pub const NOTHING_TO_DO: i32 = 2;
    pub const TWO_PRIMARIES: i32 = -1;
    pub const NO_UP_TO_DATE_DISK: i32 = -2;
    pub const NO_LOCAL_DISK: i32 = -4;
    pub const NO_REMOTE_DISK: i32 = -5;
    pub const CONNECTED_OUTDATES: i32 = -6;
    pub const PRIMARY_NOP: i32 = -7;
    pub const RESYNC_RUNNING: i32 = -8;
    pub const ALREADY_STANDALONE: i32 = -9;
    pub const CW_FAILED_BY_PEER: i32 = -10;
    pub const IS_DISKLESS: i32 = -11;
    pub const DEVICE_IN_USE: i32 = -12;
    pub const NEED_CONNECTION: i32 = -15;
    pub const LOWER_THAN_OUTDATED: i32 = -16;
    pub const IN_TRANSIENT_STATE: i32 = -18;
    pub const CONCURRENT_ST_CHG: i32 = -19;
}

/// drbd_strings.c `drbd_state_sw_errors`.
pub fn state_error_text(code: i32) -> &'static str {
    match code {
        -1 => "Multiple primaries not allowed by config",
        -2 => "Need access to UpToDate data",
        -4 => "Can not resync without local disk",
        -5 => "Can not resync without remote disk",
        -6 => "Refusing to be Outdated while Connected",
        -7 => "Refusing to be Primary while peer is not outdated",
        -8 => "Can not start OV/resync since it is already active",
        -9 => "Can not disconnect a StandAlone device",
        -10 => "State change was refused by peer node",
        -11 => "Device is diskless, the requested operation requires a disk",
        -12 => "Device is held open by someone",
        -13 => "Have no net/connection configuration",
        -15 => "Need a connection to start verify or resync",
        -16 => "Disk state is lower than outdated",
        -17 => "Peer does not support protocol",
        -18 => "In transient state, retry after next state change",
        -19 => "Concurrent state changes detected and aborted",
        -21 => "Need a connection for a graceful disconnect/outdate peer",
        _ => "unknown error",
    }
}

/// A refusal of a state change, as drbdsetup reports it (exit code 11).
pub fn state_refusal(code: i32) -> AdminRefusal {
    AdminRefusal {
        code,
        text: state_error_text(code).to_string(),
        exit_code: 11,
    }
}

/// A refusal with a `drbd_ret_code` (≥ 100; drbdsetup exit code 10).
pub fn ret_refusal(code: i32, text: &str) -> AdminRefusal {
    AdminRefusal {
        code,
        text: text.to_string(),
        exit_code: 10,
    }
}

/// An attached backing device.
#[derive(Clone, Debug)]
struct LocalDisk {
    d: AttachedDisk,
    bitmap: Bitmap,
    al: ActivityLog,
    crashed_primary: bool,
}

/// What the peer told us about one volume.
#[derive(Clone, Debug, Default)]
struct PeerView {
    uuids: Option<[u64; 4]>,
    bits: u64,
    flags: u64,
    sizes: Option<Sizes>,
}

#[derive(Clone, Debug)]
struct Device {
    st: DrbdState,
    ld: Option<LocalDisk>,
    peer: PeerView,
    /// Agreed capacity in sectors.
    capacity: u64,
    /// `packet_seq` for P_DATA and acks we send.
    seq: u32,
    rs: Resync,
    bm_tx: BmCursor,
    bm_rx: BmCursor,
    consider_resync: bool,
    /// The SyncTarget finishes once the ping with this number is answered (drbd_resync_finished
    /// pings first, so every P_RS_WRITE_ACK sent before has reached the SyncSource).
    finish_at_ping_ack: Option<u64>,
    sb_in_flight: bool,
    sb_again: bool,
    /// MDF flags of the last superblock known durable.
    durable_flags: u32,
    /// A just-detached disk whose last meta-data writes are still to be issued.
    retired: Option<LocalDisk>,
    /// A superblock write waits for the bitmap write in flight.
    sb_after_bm: bool,
    /// `ed_uuid`: current UUID of the data this node exposes (its own, or a diskless Primary's
    /// peer's).
    ed_uuid: u64,
    bm_in_flight: bool,
    bm_again: bool,
    /// `new_state_tmp.disk` while Negotiating.
    negotiated_disk: DiskState,
    /// Peer's state word was seen in this connection.
    got_state: bool,
    /// Bitmap pages captured when their preflush was issued: bits cleared by writes that
    /// complete later are not covered by that flush and wait for the next bitmap write.
    bm_snapshot: Vec<(u64, Vec<u64>)>,
    /// Data payload sectors sent / received (P_DATA, P_DATA_REPLY, P_RS_DATA_REPLY): the
    /// kernel's send_cnt / recv_cnt behind `drbdsetup status --statistics` sent:/received:.
    send_cnt: u64,
    recv_cnt: u64,
}

/// Why a local I/O was issued.
#[derive(Clone, Debug)]
enum Io {
    App {
        cookie: u64,
    },
    /// A write received from the peer (application data or resync data).
    PeerWrite {
        vol: u16,
        sector: u64,
        len: u32,
        block_id: [u8; 8],
        epoch: Option<u64>,
        flags: u32,
        resync: bool,
    },
    /// A read to answer the peer.
    PeerRead {
        vol: u16,
        sector: u64,
        len: u32,
        block_id: [u8; 8],
        reply: u16,
    },
    EpochFlush {
        epoch: u64,
    },
    /// An empty flush from the upper layer.
    AppFlush {
        request: RequestId,
    },
    AlTransaction {
        vol: u16,
        slot: usize,
        extent: u32,
        evicted: Option<u32>,
    },
    Superblock {
        vol: u16,
        flags: u32,
    },
    Bitmap {
        vol: u16,
    },
    /// The data flush that precedes a bitmap write.
    BitmapPreflush {
        vol: u16,
    },
}

/// A peer write deferred because it overlaps one in flight (spec §11.5).
#[derive(Clone, Debug)]
struct DeferredPeerWrite {
    io: Io,
    data: Bytes,
    fua: bool,
    preflush: bool,
}

/// An upper-layer flush waiting for its local flush and the peer's barrier ack.
#[derive(Clone, Debug)]
struct PendingFlush {
    request: RequestId,
    local_pending: bool,
    local_ok: bool,
    /// Barrier number whose ack completes the remote half.
    wait_epoch: Option<u32>,
    remote_ok: bool,
}

/// A peer write that must wait for our activity log (we hold the only good copy).
#[derive(Clone, Debug)]
struct PeerAlWait {
    io: Io,
    data: Option<Bytes>,
    fua: bool,
    preflush: bool,
    discard: bool,
}

/// A state change we asked the peer to agree to.
#[derive(Clone, Debug)]
struct PendingChange {
    command: AdminCommand,
    vol: u16,
    mask: u32,
    /// Replies still expected (one request per volume).
    outstanding: u32,
    /// The first refusal among the replies.
    failed: Option<i32>,
}

pub struct Resource {
    cfg: ResourceConfig,
    rng: u64,
    conn: ConnState,
    hs: Handshake,
    agreed: Agreed,
    resolve_conflicts: bool,
    discard_my_data: bool,
    peer_discard_my_data: bool,
    peer_params: Option<PeerSyncParams>,
    dec: [StreamDecoder; 2],
    devs: BTreeMap<u16, Device>,
    out: VecDeque<Output>,
    /// Sends held back until these meta-data writes are durable.
    gate: BTreeSet<IoId>,
    held: VecDeque<Output>,
    timers: TimerTable,
    next_io: u64,
    ios: BTreeMap<IoId, Io>,
    tl: TransferLog,
    rx: RxEpochs,
    deferred: VecDeque<DeferredPeerWrite>,
    /// Requests waiting for a free AL slot.
    al_waiters: VecDeque<u64>,
    /// Resync read requests from the peer waiting for overlapping local writes.
    rs_waiting: VecDeque<(u16, u64, u32)>,
    /// Application writes waiting for resync reads of the same blocks.
    app_waiting: VecDeque<u64>,
    /// New application requests held while the state is not stable (inc_ap_bio).
    ap_held: VecDeque<(RequestId, Volume, RequestOp)>,
    pending_change: Option<PendingChange>,
    ping_outstanding: bool,
    pings_sent: u64,
    ping_acks: u64,
    flushes: Vec<PendingFlush>,
    peer_al_waiting: VecDeque<PeerAlWait>,
    /// AL references held by peer writes in flight: (volume, sector, bytes, extents).
    peer_al_refs: Vec<(u16, u64, u32, Vec<u32>)>,
    /// Parked writes should be retried after the current meta-data completion.
    al_retry_soon: bool,
    /// Set by `disconnect`: after the sockets close, stay StandAlone.
    stay_standalone: bool,
    now: Instant,
}

impl Resource {
    /// Builds a resource from resolved configuration and the meta-data read at attach.
    pub fn new(
        config: ResourceConfig,
        on_disk: Vec<VolumeOnDisk>,
        now: Instant,
    ) -> Result<Resource, Error> {
        if config.volumes.is_empty() {
            return Err(Error::Config("a resource needs at least one volume".into()));
        }
        if config.net.allow_two_primaries {
            // Dual-primary conflict resolution (spec §7.4) is not implemented; refusing beats
            // silently diverging.
            return Err(Error::Config("allow-two-primaries is not supported".into()));
        }
        if !config.net.csums_alg.is_empty() {
            // Checksum-based resync (P_CSUM_RS_REQUEST) is not implemented.
            return Err(Error::Config(format!(
                "csums-alg {:?} is not supported",
                config.net.csums_alg
            )));
        }
        if !config.net.integrity_alg.is_empty() {
            return Err(Error::Config(format!(
                "data-integrity-alg {:?} is not supported",
                config.net.integrity_alg
            )));
        }
        if let Some((_, secret)) = &config.net.auth {
            if secret.len() > 63 {
                return Err(Error::Config(
                    "shared-secret is longer than 63 characters".into(),
                ));
            }
        }
        let mut devs = BTreeMap::new();
        for v in &config.volumes {
            let ld = on_disk
                .iter()
                .find(|o| o.volume == *v)
                .and_then(|o| o.disk.clone())
                .map(|d| LocalDisk::attach(d, config.disk.al_extents));
            let disk = ld
                .as_ref()
                .map(|l| l.disk_state_at_attach(config.disk.fencing))
                .unwrap_or(DiskState::Diskless);
            let capacity = ld
                .as_ref()
                .map(|l| l.initial_capacity(config.disk.u_size_sect))
                .unwrap_or(0);
            devs.insert(
                v.0,
                Device {
                    st: DrbdState::standalone(disk),
                    ld,
                    peer: PeerView::default(),
                    capacity,
                    seq: 0,
                    rs: Resync::default(),
                    bm_tx: BmCursor::default(),
                    bm_rx: BmCursor::default(),
                    consider_resync: false,
                    finish_at_ping_ack: None,
                    sb_in_flight: false,
                    sb_again: false,
                    durable_flags: 0,
                    retired: None,
                    sb_after_bm: false,
                    ed_uuid: 0,
                    bm_in_flight: false,
                    bm_again: false,
                    negotiated_disk: disk,
                    got_state: false,
                    bm_snapshot: Vec::new(),
                    send_cnt: 0,
                    recv_cnt: 0,
                },
            );
        }
        for o in &on_disk {
            if !devs.contains_key(&o.volume.0) {
                return Err(Error::Config(format!(
                    "meta-data for volume {} which is not configured",
                    o.volume.0
                )));
            }
        }
        let seed = config.rng_seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut r = Resource {
            cfg: config,
            rng: seed,
            conn: ConnState::StandAlone,
            hs: Handshake::Idle,
            agreed: Agreed {
                apv: 0,
                features: 0,
            },
            resolve_conflicts: false,
            discard_my_data: false,
            peer_discard_my_data: false,
            peer_params: None,
            dec: [StreamDecoder::default(), StreamDecoder::default()],
            devs,
            out: VecDeque::new(),
            gate: BTreeSet::new(),
            held: VecDeque::new(),
            timers: TimerTable::default(),
            next_io: 1,
            ios: BTreeMap::new(),
            tl: TransferLog::new(0),
            rx: RxEpochs::default(),
            deferred: VecDeque::new(),
            al_waiters: VecDeque::new(),
            rs_waiting: VecDeque::new(),
            app_waiting: VecDeque::new(),
            ap_held: VecDeque::new(),
            pending_change: None,
            ping_outstanding: false,
            pings_sent: 0,
            ping_acks: 0,
            flushes: Vec::new(),
            peer_al_waiting: VecDeque::new(),
            peer_al_refs: Vec::new(),
            al_retry_soon: false,
            stay_standalone: false,
            now,
        };
        let first_epoch = r.random() as u32;
        r.tl = TransferLog::new(first_epoch);
        r.rx.reset();
        // A crashed Primary (PRIMARY_IND still set) remembers it (drbd_nl.c attach).
        for d in r.devs.values_mut() {
            if let Some(ld) = &mut d.ld {
                d.durable_flags = ld.d.flags;
                d.ed_uuid = ld.d.uuids[UI_CURRENT] & !1;
                if ld.d.flags & (MDF_PRIMARY_IND | MDF_CRASHED_PRIMARY) != 0 {
                    ld.crashed_primary = true;
                }
            }
        }
        if r.cfg.connect_on_start {
            r.start_connecting();
        }
        Ok(r)
    }

    // ---------------------------------------------------------------- getters

    pub fn role(&self) -> Role {
        self.first().st.role
    }
    pub fn peer_role(&self) -> Role {
        self.first().st.peer
    }
    /// The connection state (volume 0's replication state once established).
    pub fn conn_state(&self) -> ConnState {
        if self.conn.is_established() {
            self.first().st.conn
        } else {
            self.conn
        }
    }
    pub fn conn_state_of(&self, v: Volume) -> Option<ConnState> {
        self.devs.get(&v.0).map(|d| d.st.conn)
    }
    pub fn disk_state(&self, v: Volume) -> Option<DiskState> {
        self.devs.get(&v.0).map(|d| d.st.disk)
    }
    pub fn peer_disk_state(&self, v: Volume) -> Option<DiskState> {
        self.devs.get(&v.0).map(|d| d.st.pdsk)
    }
    pub fn state(&self, v: Volume) -> Option<DrbdState> {
        self.devs.get(&v.0).map(|d| d.st)
    }
    /// current, bitmap, history[0], history[1] of a volume with a disk.
    pub fn uuids(&self, v: Volume) -> Option<[u64; 4]> {
        self.devs.get(&v.0)?.ld.as_ref().map(|l| l.d.uuids)
    }
    /// Out-of-sync blocks (4 KiB) of a volume.
    pub fn out_of_sync_blocks(&self, v: Volume) -> Option<u64> {
        self.devs.get(&v.0)?.ld.as_ref().map(|l| l.bitmap.weight())
    }
    /// Whether a 4 KiB block is marked out of sync (None: no such volume or no disk).
    pub fn out_of_sync(&self, v: Volume, block_4k: u64) -> Option<bool> {
        self.devs
            .get(&v.0)?
            .ld
            .as_ref()
            .map(|l| l.bitmap.test(block_4k))
    }
    /// The in-memory bitmap (LE words as on disk).
    pub fn bitmap_words(&self, v: Volume) -> Option<&[u64]> {
        self.devs.get(&v.0)?.ld.as_ref().map(|l| l.bitmap.words())
    }
    /// Agreed device size in sectors.
    /// Sectors of data payload sent to and received from the peer on this volume (P_DATA,
    /// P_DATA_REPLY, P_RS_DATA_REPLY; digests and every other packet excluded), counted like the
    /// kernel's send_cnt / recv_cnt and reset when a disk is attached. `status --statistics`
    /// prints them in KiB (`sent:` = sent / 2, `received:` = received / 2).
    pub fn data_sectors_sent_received(&self, v: Volume) -> Option<(u64, u64)> {
        self.devs.get(&v.0).map(|d| (d.send_cnt, d.recv_cnt))
    }

    pub fn capacity_sectors(&self, v: Volume) -> Option<u64> {
        self.devs.get(&v.0).map(|d| d.capacity)
    }
    pub fn agreed_protocol_version(&self) -> Option<u32> {
        (self.agreed.apv != 0).then_some(self.agreed.apv)
    }
    /// A snapshot for `drbdadm status`.
    pub fn status(&self) -> Status {
        Status {
            name: self.cfg.name.clone(),
            role: self.role(),
            conn: self.conn_state(),
            peer_role: self.peer_role(),
            volumes: self
                .devs
                .iter()
                .map(|(v, d)| VolumeStatus {
                    volume: Volume(*v),
                    disk: d.st.disk,
                    peer_disk: d.st.pdsk,
                    replication: d.st.conn,
                    out_of_sync_kib: d.ld.as_ref().map(|l| l.bitmap.weight() * 4).unwrap_or(0),
                    size_sectors: d.capacity,
                    resync_total_blocks: d.rs.total,
                })
                .collect(),
        }
    }
    /// Outputs waiting for a meta-data write to become durable (diagnostics).
    pub fn held_outputs(&self) -> usize {
        self.held.len()
    }

    // ---------------------------------------------------------------- inputs / outputs

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = self.now.max(now);
        match input {
            Input::Connected { resolve_conflicts } => self.on_connected(resolve_conflicts),
            Input::Received { socket, bytes } => self.on_received(socket, &bytes),
            Input::ConnectionLost { timed_out } => {
                if self.conn >= ConnState::WFConnection || self.hs != Handshake::Idle {
                    let c = if timed_out {
                        ConnState::Timeout
                    } else {
                        ConnState::BrokenPipe
                    };
                    self.connection_lost(c);
                }
            }
            Input::DiskDone { io, result } => self.on_disk_done(io, result),
            Input::MetaDone { io, result } => self.on_meta_done(io, result),
            Input::Request { id, volume, op } => self.on_request(id, volume, op),
            Input::Admin(cmd) => self.on_admin(cmd),
        }
        self.release_ap_held();
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.timers.take_expired(Timer::Handshake, now) && self.hs != Handshake::Done {
            self.log(LogLevel::Error, None, "Handshake timed out".into());
            self.connection_lost(ConnState::NetworkFailure);
        }
        if self.timers.take_expired(Timer::PingTimeout, now) && self.ping_outstanding {
            self.log(
                LogLevel::Error,
                None,
                "PingAck did not arrive in time.".into(),
            );
            self.connection_lost(ConnState::NetworkFailure);
        }
        if self.timers.take_expired(Timer::PingInterval, now)
            && self.conn >= ConnState::WFReportParams
        {
            self.send_ping();
        }
        if self.timers.take_expired(Timer::RequestTimeout, now) {
            self.check_request_timeouts();
        }
        if self.timers.take_expired(Timer::ResyncTick, now) {
            self.resync_tick();
        }
        self.release_ap_held();
    }

    /// drbd_state_is_stable: no new application I/O starts while the bitmap exchange or the
    /// sync-UUID hand-over is under way, or while a disk attaches/negotiates (the kernel's
    /// inc_ap_bio waits). Such I/O would reach a disk whose role in the resync is not settled.
    fn state_is_stable(&self, v: u16) -> bool {
        let Some(d) = self.devs.get(&v) else {
            return true;
        };
        let conn_ok = match d.st.conn {
            ConnState::WFBitMapT | ConnState::WFSyncUUID => false,
            ConnState::WFBitMapS => self.agreed.apv >= 96,
            _ => true,
        };
        conn_ok
            && !matches!(
                d.st.disk,
                DiskState::Attaching | DiskState::Negotiating | DiskState::DUnknown
            )
    }

    /// Starts held application requests, in arrival order, once their volume is stable.
    fn release_ap_held(&mut self) {
        while let Some((_, volume, _)) = self.ap_held.front() {
            if !self.state_is_stable(volume.0) {
                return;
            }
            let (id, volume, op) = self.ap_held.pop_front().expect("front exists");
            self.start_request(id, volume, op);
        }
    }

    // ---------------------------------------------------------------- small helpers

    fn first(&self) -> &Device {
        // Invariant: `new` refuses a resource without volumes and volumes are never removed.
        self.devs.values().next().expect("at least one volume")
    }

    fn random(&mut self) -> u64 {
        // splitmix64: deterministic from rng_seed.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn io_id(&mut self, what: Io) -> IoId {
        let id = IoId(self.next_io);
        self.next_io += 1;
        self.ios.insert(id, what);
        id
    }

    fn emit(&mut self, o: Output) {
        if !self.gate.is_empty() && matches!(o, Output::Send { .. }) {
            self.held.push_back(o);
        } else {
            self.out.push_back(o);
        }
    }

    fn log(&mut self, level: LogLevel, volume: Option<Volume>, message: String) {
        self.out.push_back(Output::Log {
            level,
            volume,
            message,
        });
    }

    fn send(&mut self, socket: Socket, command: u16, vol: u16, payload: &[u8]) {
        let bytes = codec::frame(self.agreed.apv, command, vol, payload);
        self.emit(Output::Send { socket, bytes });
    }

    fn send_data_with(&mut self, command: u16, vol: u16, head: &[u8], data: &[u8]) {
        let mut b = BytesMut::with_capacity(16 + head.len() + data.len());
        codec::put_header(
            &mut b,
            self.agreed.apv,
            command,
            vol,
            (head.len() + data.len()) as u32,
        );
        b.extend_from_slice(head);
        b.extend_from_slice(data);
        if matches!(command, cmd::DATA | cmd::DATA_REPLY | cmd::RS_DATA_REPLY) {
            if let Some(d) = self.devs.get_mut(&vol) {
                d.send_cnt += data.len() as u64 / 512;
            }
        }
        self.emit(Output::Send {
            socket: Socket::Data,
            bytes: b.freeze(),
        });
    }

    fn next_seq(&mut self, vol: u16) -> u32 {
        let d = self.devs.get_mut(&vol).expect("caller checked the volume");
        d.seq = d.seq.wrapping_add(1);
        d.seq
    }

    fn send_ack(&mut self, command: u16, vol: u16, sector: u64, block_id: [u8; 8], blksize: u32) {
        let seq = self.next_seq(vol);
        let mut p = BytesMut::with_capacity(24);
        p.put_u64(sector);
        p.extend_from_slice(&block_id);
        p.put_u32(blksize);
        p.put_u32(seq);
        self.send(Socket::Meta, command, vol, &p);
    }

    /// Applies `f` to one volume's state and reports the change (kernel __drbd_set_state).
    fn set_state(&mut self, vol: u16, f: impl FnOnce(&mut DrbdState)) {
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        let old = d.st;
        let mut new = old;
        f(&mut new);
        // Implicit rules of the kernel's sanitize_state.
        // Abort resync (and bitmap exchange) if a disk fails or detaches.
        if new.conn > ConnState::Connected
            && new.conn < ConnState::Ahead
            && (new.disk <= DiskState::Failed || new.pdsk <= DiskState::Failed)
        {
            new.conn = ConnState::Connected;
        }
        // Becoming SyncTarget implies a usable (Inconsistent) disk: a disk still Negotiating is
        // raised (sanitize_state's disk_min for WFBitMapT .. WFSyncUUID).
        if matches!(
            new.conn,
            ConnState::WFBitMapT
                | ConnState::PausedSyncT
                | ConnState::StartingSyncT
                | ConnState::WFSyncUUID
                | ConnState::Behind
        ) && matches!(new.disk, DiskState::Attaching | DiskState::Negotiating)
        {
            new.disk = DiskState::Inconsistent;
        }
        // The connection broke before "Negotiating" finished (sanitize_state): keep the disk
        // with its attach-time state, unless a Primary exposes other data (then detach).
        let mut drop_disk = false;
        if new.conn < ConnState::Connected && new.disk == DiskState::Negotiating {
            let same_data = d.ld.as_ref().is_some_and(|l| {
                new.role != Role::Primary
                    || d.ed_uuid == 0
                    || l.d.uuids[UI_CURRENT] & !1 == d.ed_uuid & !1
            });
            if same_data {
                new.disk = d.negotiated_disk;
            } else {
                new.disk = DiskState::Diskless;
                new.pdsk = DiskState::DUnknown;
                drop_disk = true;
            }
        }
        if new.conn < ConnState::WFReportParams {
            new.peer = Role::Unknown;
            if new.pdsk > DiskState::Outdated || new.pdsk == DiskState::Inconsistent {
                new.pdsk = DiskState::DUnknown;
            }
        }
        if new.disk == DiskState::Diskless {
            if let Some(ld) = &d.ld {
                let _ = ld;
            }
        }
        if new == old {
            return;
        }
        if drop_disk {
            d.retired = d.ld.take();
        }
        d.st = new;
        let line = DrbdState::change_line(&old, &new);
        self.out.push_back(Output::StateChanged(StateChange {
            volume: Volume(vol),
            old,
            new,
        }));
        self.log(LogLevel::Info, Some(Volume(vol)), line);
        self.after_state_change(vol, old, new);
    }

    fn set_conn_all(&mut self, c: ConnState) {
        self.conn = c;
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        for v in vols {
            self.set_state(v, |s| s.conn = c);
        }
    }

    /// Side effects of a state change (drbd_state.c after_state_ch, the parts we model).
    fn after_state_change(&mut self, vol: u16, old: DrbdState, new: DrbdState) {
        // Lost contact to the peer's data while Primary (or peer Primary): new current UUID.
        let lost = |o: DiskState, n: DiskState| {
            (o >= DiskState::Inconsistent
                && o != DiskState::DUnknown
                && (n < DiskState::Inconsistent
                    || n == DiskState::Outdated
                    || n == DiskState::DUnknown))
                || (o == DiskState::DUnknown
                    && matches!(
                        n,
                        DiskState::Diskless | DiskState::Failed | DiskState::Outdated
                    ))
        };
        if lost(old.pdsk, new.pdsk)
            && (new.role == Role::Primary || new.peer == Role::Primary)
            && new.disk >= DiskState::UpToDate
        {
            let bm0 = self
                .devs
                .get(&vol)
                .and_then(|d| d.ld.as_ref())
                .map(|l| l.d.uuids[UI_BITMAP] == 0)
                .unwrap_or(false);
            if bm0 {
                self.new_current_uuid(vol);
                if new.conn >= ConnState::WFReportParams {
                    self.send_uuids(vol, 0);
                }
            }
        }
        // A diskless peer became Primary: its writes land only here, so start a new data
        // generation (after_state_ch: ns.pdsk < D_INCONSISTENT && peer promoted).
        if new.pdsk < DiskState::Inconsistent
            && old.peer != Role::Primary
            && new.peer == Role::Primary
            && new.disk >= DiskState::UpToDate
        {
            let bm0 = self
                .devs
                .get(&vol)
                .and_then(|d| d.ld.as_ref())
                .is_some_and(|l| l.d.uuids[UI_BITMAP] == 0);
            if bm0 {
                self.new_current_uuid(vol);
                if new.conn >= ConnState::WFReportParams {
                    self.send_uuids(vol, 0);
                }
            }
        }
        // The peer attached a disk: tell it our UUIDs and state so it can negotiate.
        if old.pdsk == DiskState::Diskless
            && new.pdsk > DiskState::Diskless
            && new.pdsk != DiskState::DUnknown
            && new.conn >= ConnState::Connected
            && self.agreed.apv != 0
        {
            self.send_uuids(vol, 0);
            self.send_state(vol);
        }
        self.update_md_flags(vol);
        // Promotion/demotion while connected is announced with P_STATE by the caller.
        if old.conn == ConnState::WFReportParams && new.conn >= ConnState::Connected {
            self.send_state(vol);
        }
        // Every bitmap exchange starts from bit 0: a connection that outlived an earlier
        // exchange (detach and re-attach while connected) must not resume the old cursors.
        let exchange = |c: ConnState| matches!(c, ConnState::WFBitMapS | ConnState::WFBitMapT);
        if exchange(new.conn) && !exchange(old.conn) {
            if let Some(d) = self.devs.get_mut(&vol) {
                d.bm_rx = BmCursor::default();
                d.bm_tx = BmCursor::default();
            }
        }
        if new.conn == ConnState::WFBitMapS && old.conn != ConnState::WFBitMapS {
            self.send_bitmap(vol);
        }
        if !new.conn.is_resync() && old.conn.is_resync() {
            self.timers_for_resync();
        }
    }

    fn update_md_flags(&mut self, vol: u16) {
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        let st = d.st;
        let Some(ld) = &mut d.ld else { return };
        let keep = ld.d.flags
            & !(MDF_CONSISTENT
                | MDF_PRIMARY_IND
                | MDF_CONNECTED_IND
                | MDF_WAS_UP_TO_DATE
                | MDF_PEER_OUT_DATED
                | MDF_CRASHED_PRIMARY
                | MDF_AL_CLEAN);
        let mut f = keep;
        if ld.crashed_primary {
            f |= MDF_CRASHED_PRIMARY;
        }
        if st.role == Role::Primary
            || (st.pdsk < DiskState::Inconsistent && st.peer == Role::Primary)
        {
            f |= MDF_PRIMARY_IND;
        }
        if st.conn > ConnState::WFReportParams {
            f |= MDF_CONNECTED_IND;
        }
        if st.disk > DiskState::Inconsistent {
            f |= MDF_CONSISTENT;
        }
        if st.disk > DiskState::Outdated {
            f |= MDF_WAS_UP_TO_DATE;
        }
        if st.pdsk <= DiskState::Outdated && st.pdsk >= DiskState::Inconsistent {
            f |= MDF_PEER_OUT_DATED;
        }
        if st.disk <= DiskState::Failed {
            return;
        }
        if f != ld.d.flags {
            ld.d.flags = f;
            self.write_superblock(vol, false);
        }
    }

    /// Persists the superblock. With `gate`, later sends wait until it is durable (the kernel's
    /// synchronous drbd_md_sync before telling the peer).
    fn write_superblock(&mut self, vol: u16, gate: bool) {
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        if d.ld.is_none() && d.retired.is_none() {
            return;
        }
        // Dropping MDF_PRIMARY_IND ends apply-al's protection of the hot extents: the bitmap
        // must be on disk first (after_state_ch writes it on demote before the meta-data).
        let drops_primary = d.durable_flags & MDF_PRIMARY_IND != 0
            && d.ld
                .as_ref()
                .or(d.retired.as_ref())
                .is_some_and(|l| l.d.flags & MDF_PRIMARY_IND == 0);
        let bm_busy = d.bm_in_flight
            || d.ld
                .as_ref()
                .or(d.retired.as_ref())
                .is_some_and(|l| l.bitmap.has_dirty());
        if drops_primary && bm_busy {
            d.sb_after_bm = true;
            if gate {
                self.gate.insert(sb_token(vol));
            }
            self.write_bitmap(vol);
            return;
        }
        let d = self.devs.get_mut(&vol).expect("checked above");
        // One superblock write in flight at a time: two writes to the same sectors could land in
        // either order. A later change is written when the current one is durable.
        if d.sb_in_flight {
            d.sb_again = true;
            if gate {
                self.gate.insert(sb_token(vol));
            }
            return;
        }
        d.sb_in_flight = true;
        let d = &self.devs[&vol];
        // A detached disk's last state still goes to its meta-data (drbd_md_sync on detach).
        let Some(ld) = d.ld.as_ref().or(d.retired.as_ref()) else {
            return;
        };
        let sb = SuperblockImage {
            layout: &ld.d.layout,
            la_size_sect: d.capacity,
            uuids: ld.d.uuids,
            device_uuid: ld.d.device_uuid,
            flags: ld.d.flags,
            al_nr_extents: self.cfg.disk.al_extents,
            la_peer_max_bio_size: ld.d.la_peer_max_bio_size,
        }
        .encode();
        let update = MetaUpdate::Superblock {
            uuids: ld.d.uuids,
            flags: ld.d.flags,
            la_size_sect: d.capacity,
        };
        let io = self.io_id(Io::Superblock {
            vol,
            flags: ld.d.flags,
        });
        if gate {
            self.gate.insert(io);
        }
        self.out.push_back(Output::WriteMeta {
            io,
            volume: Volume(vol),
            writes: vec![sb],
            flush: true,
            update,
        });
    }

    /// Writes the dirty bitmap pages.
    fn write_bitmap(&mut self, vol: u16) {
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        if d.bm_in_flight {
            // Pages stay dirty and go out with the next write (same-page ordering).
            d.bm_again = true;
            return;
        }
        let pages = match (&mut d.ld, &mut d.retired) {
            (Some(l), _) | (None, Some(l)) => l.bitmap.take_dirty(),
            _ => Vec::new(),
        };
        if pages.is_empty() {
            return;
        }
        d.bm_snapshot = pages;
        // Cleared bits may only reach the disk after the data that cleared them: the kernel's
        // meta-data writes carry REQ_PREFLUSH, so first flush the data device.
        d.bm_in_flight = true;
        let io = self.io_id(Io::BitmapPreflush { vol });
        self.out.push_back(Output::DiskFlush {
            io,
            volume: Volume(vol),
        });
    }

    /// The bitmap write proper, after its preflush.
    fn write_bitmap_pages(&mut self, vol: u16) {
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        let pages = std::mem::take(&mut d.bm_snapshot);
        if pages.is_empty() || (d.ld.is_none() && d.retired.is_none()) {
            // Nothing left to write (or the disk is gone): the write is over all the same.
            self.bitmap_write_finished(vol, Ok(()));
            return;
        }
        let d = &self.devs[&vol];
        let Some(layout) = d.ld.as_ref().or(d.retired.as_ref()).map(|l| l.d.layout) else {
            return;
        };
        let mut writes: Vec<MetaWrite> = Vec::new();
        let mut first_word = u64::MAX;
        let mut all = Vec::new();
        for (fw, words) in pages {
            first_word = first_word.min(fw);
            writes.push(meta::bitmap_writes(&layout, fw, &words));
            all.push((fw, words));
        }
        // The semantic update covers the span of written pages.
        let last = all
            .last()
            .map(|(fw, w)| fw + w.len() as u64)
            .unwrap_or(first_word);
        let mut words = self.devs[&vol]
            .ld
            .as_ref()
            .map(|l| l.bitmap.words()[first_word as usize..last as usize].to_vec())
            .unwrap_or_default();
        // What is written is the snapshot, not what memory holds now.
        for (fw, w) in &all {
            let at = (fw - first_word) as usize;
            if let Some(dst) = words.get_mut(at..at + w.len()) {
                dst.copy_from_slice(w);
            }
        }
        self.devs.get_mut(&vol).expect("exists").bm_in_flight = true;
        let io = self.io_id(Io::Bitmap { vol });
        self.out.push_back(Output::WriteMeta {
            io,
            volume: Volume(vol),
            writes,
            flush: true,
            update: MetaUpdate::Bitmap { first_word, words },
        });
    }

    fn new_current_uuid(&mut self, vol: u16) {
        let val = self.random() & !1;
        let Some(d) = self.devs.get_mut(&vol) else {
            return;
        };
        let primary = d.st.role == Role::Primary;
        let Some(ld) = &mut d.ld else { return };
        // drbd_uuid_new_current: bitmap := current (no rotation), current := new.
        ld.d.uuids[UI_BITMAP] = ld.d.uuids[UI_CURRENT] & !1;
        ld.d.uuids[UI_CURRENT] = val | primary as u64;
        d.ed_uuid = val;
        let u = ld.d.uuids;
        self.log(
            LogLevel::Info,
            Some(Volume(vol)),
            format!(
                "new current UUID {:016X}:{:016X}:{:016X}:{:016X}",
                u[0], u[1], u[2], u[3]
            ),
        );
        self.write_superblock(vol, true);
    }

    // ---------------------------------------------------------------- connection set-up

    fn start_connecting(&mut self) {
        self.stay_standalone = false;
        self.set_conn_all(ConnState::Unconnected);
        self.set_conn_all(ConnState::WFConnection);
        self.out.push_back(Output::Connect);
    }

    fn on_connected(&mut self, resolve_conflicts: bool) {
        if self.conn != ConnState::WFConnection {
            // Not expecting a connection (StandAlone or already connected): drop it.
            self.out.push_back(Output::Disconnect);
            return;
        }
        self.resolve_conflicts = resolve_conflicts;
        self.agreed = Agreed {
            apv: 0,
            features: 0,
        };
        self.dec = [StreamDecoder::default(), StreamDecoder::default()];
        self.hs = Handshake::ExpectFeatures;
        self.send(
            Socket::Data,
            cmd::CONNECTION_FEATURES,
            0,
            &handshake::features_payload(),
        );
        let t = self.cfg.net.ping_timeout_ds as u64 * 4 * DECISECOND_NS;
        self.timers
            .set(Timer::Handshake, self.now.saturating_add_ns(t));
    }

    fn on_received(&mut self, socket: Socket, bytes: &[u8]) {
        if self.hs == Handshake::Idle {
            return;
        }
        let i = (socket == Socket::Meta) as usize;
        self.dec[i].push(bytes);
        // Any packet resets the keep-alive interval (drbd_asender idle timeout).
        self.arm_ping_interval();
        loop {
            if self.hs == Handshake::Idle {
                return;
            }
            let frame = match self.dec[i].next(self.agreed.apv) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    self.fail(PeerMisbehaved::Framing(e.to_string()).into());
                    return;
                }
            };
            if let Err(e) = self.on_frame(socket, frame) {
                self.fail(e);
                return;
            }
        }
    }

    /// Applies an error's consequence (error.rs decides).
    fn fail(&mut self, e: Error) {
        use crate::error::Consequence;
        self.log(LogLevel::Error, None, e.to_string());
        match e.consequence() {
            Consequence::Reconnect(c) => self.connection_lost(c),
            Consequence::StandAlone => {
                self.stay_standalone = true;
                self.connection_lost(ConnState::Disconnecting);
            }
            Consequence::Detach | Consequence::Refuse => {}
        }
    }

    fn on_frame(&mut self, socket: Socket, f: Frame) -> Result<(), Error> {
        match self.hs.clone() {
            Handshake::Idle => Ok(()),
            Handshake::ExpectFeatures => {
                if f.cmd != cmd::CONNECTION_FEATURES {
                    return Err(
                        PeerIncompatible::Protocol("expected ConnectionFeatures packet").into(),
                    );
                }
                let a = handshake::receive_features(&f.payload)?;
                self.agreed = a;
                self.log(
                    LogLevel::Info,
                    None,
                    format!(
                        "Handshake successful: Agreed network protocol version {}",
                        a.apv
                    ),
                );
                match self.cfg.net.auth.clone() {
                    Some((alg, secret)) => {
                        let mut ch = [0u8; handshake::CHALLENGE_LEN];
                        for c in ch.chunks_mut(8) {
                            c.copy_from_slice(&self.random().to_le_bytes());
                        }
                        self.send(Socket::Data, cmd::AUTH_CHALLENGE, 0, &ch);
                        self.hs = Handshake::ExpectAuthChallenge(ExpectAuth {
                            alg,
                            secret,
                            my_challenge: ch,
                        });
                    }
                    None => self.send_parameters(),
                }
                Ok(())
            }
            Handshake::ExpectAuthChallenge(a) => {
                if f.cmd != cmd::AUTH_CHALLENGE {
                    return Err(PeerIncompatible::NoAuth(cmd::name(f.cmd), f.cmd).into());
                }
                let resp = handshake::check_challenge(&a, &f.payload)?;
                self.send(Socket::Data, cmd::AUTH_RESPONSE, 0, &resp);
                self.hs = Handshake::ExpectAuthResponse(a);
                Ok(())
            }
            Handshake::ExpectAuthResponse(a) => {
                if f.cmd != cmd::AUTH_RESPONSE {
                    return Err(PeerMisbehaved::UnexpectedPacket {
                        expected: "P_AUTH_RESPONSE",
                        got: cmd::name(f.cmd),
                    }
                    .into());
                }
                handshake::check_response(&a, &f.payload)?;
                self.log(
                    LogLevel::Info,
                    None,
                    format!("Peer authenticated using {} bytes HMAC", f.payload.len()),
                );
                self.send_parameters();
                Ok(())
            }
            Handshake::ExpectProtocol => {
                if f.cmd != cmd::PROTOCOL {
                    return Err(PeerMisbehaved::UnexpectedPacket {
                        expected: "P_PROTOCOL",
                        got: cmd::name(f.cmd),
                    }
                    .into());
                }
                self.peer_discard_my_data =
                    handshake::check_protocol(&self.cfg.net, self.discard_my_data, &f.payload)?;
                self.hs = Handshake::Done;
                Ok(())
            }
            Handshake::Done => self.dispatch(socket, f),
        }
    }

    /// conn_connect after auth: P_PROTOCOL, then per volume P_SYNC_PARAM89, P_SIZES, P_UUIDS,
    /// P_STATE (drbd_connected), then WFReportParams.
    fn send_parameters(&mut self) {
        let p = handshake::protocol_payload(&self.cfg.net, self.discard_my_data);
        self.send(Socket::Data, cmd::PROTOCOL, 0, &p);
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        for v in &vols {
            let sp = handshake::sync_param_payload(&self.cfg.net, &self.cfg.disk);
            self.send(Socket::Data, cmd::SYNC_PARAM89, *v, &sp);
            self.send_sizes(*v);
            self.send_uuids(*v, 0);
            self.send_state(*v);
        }
        self.hs = Handshake::ExpectProtocol;
        let nr = self.random() as u32;
        self.tl.reset_epochs(nr);
        self.rx.reset();
        for d in self.devs.values_mut() {
            d.seq = 0;
            d.peer = PeerView::default();
            d.got_state = false;
            d.bm_rx = BmCursor::default();
            d.bm_tx = BmCursor::default();
        }
        self.set_conn_all(ConnState::WFReportParams);
        self.arm_ping_interval();
    }

    fn send_sizes(&mut self, vol: u16) {
        let d = &self.devs[&vol];
        let d_size = d.ld.as_ref().map(|l| l.d.size_sectors).unwrap_or(0);
        let s = Sizes {
            d_size,
            u_size: if d.ld.is_some() {
                self.cfg.disk.u_size_sect
            } else {
                0
            },
            c_size: d.capacity,
            max_bio_size: self.cfg.max_bio_size,
            dds_flags: 0,
        };
        let p = handshake::sizes_payload(&s, self.agreed.features);
        self.send(Socket::Data, cmd::SIZES, vol, &p);
    }

    fn send_uuids(&mut self, vol: u16, extra_flags: u64) {
        let d = &self.devs[&vol];
        let (uuids, bits, mut flags) = match &d.ld {
            Some(l) => (l.d.uuids, l.bitmap.weight(), 0u64),
            None => ([0; 4], 0, 0),
        };
        if self.discard_my_data {
            flags |= uc::UUID_FLAG_DISCARD_MY_DATA;
        }
        if d.ld.as_ref().map(|l| l.crashed_primary).unwrap_or(false) {
            flags |= uc::UUID_FLAG_CRASHED_PRIMARY;
        }
        if d.negotiated_disk == DiskState::Inconsistent && d.st.disk == DiskState::Negotiating {
            flags |= uc::UUID_FLAG_INCONSISTENT;
        }
        flags |= extra_flags;
        let p = handshake::uuids_payload(&uuids, bits, flags);
        self.send(Socket::Data, cmd::UUIDS, vol, &p);
    }

    fn send_state(&mut self, vol: u16) {
        let w = self.devs[&vol].st.to_word();
        self.send(Socket::Data, cmd::STATE, vol, &w.to_be_bytes());
    }

    fn arm_ping_interval(&mut self) {
        if self.conn >= ConnState::WFReportParams || self.hs == Handshake::ExpectProtocol {
            let t = self.cfg.net.ping_int_s as u64 * SECOND_NS;
            self.timers
                .set(Timer::PingInterval, self.now.saturating_add_ns(t));
        }
    }

    fn send_ping(&mut self) {
        if self.ping_outstanding {
            return;
        }
        self.send_ping_now();
    }

    fn send_ping_now(&mut self) {
        self.ping_outstanding = true;
        self.pings_sent += 1;
        self.send(Socket::Meta, cmd::PING, 0, &[]);
        let t = self.cfg.net.ping_timeout_ds as u64 * DECISECOND_NS;
        self.timers
            .set(Timer::PingTimeout, self.now.saturating_add_ns(t));
    }

    /// Socket loss, timeout, protocol error or a deliberate disconnect (spec §12).
    fn connection_lost(&mut self, reason: ConnState) {
        if self.hs == Handshake::Idle
            && self.conn < ConnState::WFConnection
            && self.conn != ConnState::Disconnecting
        {
            return;
        }
        let was_established = self.conn >= ConnState::WFReportParams;
        self.hs = Handshake::Idle;
        self.dec = [StreamDecoder::default(), StreamDecoder::default()];
        self.timers.stop_all();
        self.ping_outstanding = false;
        self.pings_sent = 0;
        self.ping_acks = 0;
        self.pending_change_failed();
        self.out.push_back(Output::Disconnect);
        self.set_conn_all(reason);
        // Every write not confirmed by a barrier ack is out of sync (spec §12).
        self.tl_clear();
        for f in self.flushes.iter_mut() {
            if f.wait_epoch.take().is_some() {
                f.remote_ok = false;
            }
        }
        self.check_flushes();
        // Resync requests in flight are forgotten; held data/state is dropped.
        for d in self.devs.values_mut() {
            d.rs.in_flight.clear();
            d.finish_at_ping_ack = None;
            d.bm_rx = BmCursor::default();
            d.bm_tx = BmCursor::default();
        }
        self.rs_waiting.clear();
        self.retry_app_waiting();
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        for v in &vols {
            self.set_state(*v, |s| {
                s.pdsk = DiskState::DUnknown;
                s.peer = Role::Unknown;
                s.peer_isp = false;
            });
            // An interrupted SyncTarget stays Inconsistent; the bitmap keeps what is left.
            if was_established {
                self.write_bitmap(*v);
            }
        }
        self.agreed = Agreed {
            apv: 0,
            features: 0,
        };
        // Packets held for a meta-data write belong to the dead connection.
        self.held.retain(|o| !matches!(o, Output::Send { .. }));
        if self.stay_standalone || reason == ConnState::Disconnecting {
            self.set_conn_all(ConnState::StandAlone);
        } else {
            self.set_conn_all(ConnState::Unconnected);
            self.set_conn_all(ConnState::WFConnection);
            self.out.push_back(Output::Connect);
        }
        self.release_held();
    }

    /// tl_clear: writes that lost their network half complete locally and are marked out of sync.
    fn tl_clear(&mut self) {
        let forget = self.cfg.mutation == Some(Mutation::ForgetOutOfSyncOnDisconnect);
        let cookies: Vec<u64> = self.tl.reqs.keys().copied().collect();
        for c in cookies {
            let Some(r) = self.tl.reqs.get_mut(&c) else {
                continue;
            };
            // Not submitted yet (waiting for the activity log or resync traffic): it belongs to
            // whatever connection exists when it starts, not to this one.
            if r.kind != ReqKind::Read && r.local == Local::WaitAl && r.net == Net::None {
                continue;
            }
            if r.kind != ReqKind::Read && !r.barrier_acked && r.net != Net::None {
                let (v, s, l) = (r.volume.0, r.sector, r.len_bytes);
                r.net = Net::Lost;
                if !forget {
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.set_range(s, l);
                    }
                }
            } else if r.kind == ReqKind::Read && matches!(r.net, Net::Sent) {
                r.net = Net::Lost;
            }
            let r = &mut self.tl.reqs.get_mut(&c).expect("present");
            r.barrier_acked = true;
            self.try_complete(c);
        }
        let nr = self.random() as u32;
        self.tl.reset_epochs(nr);
        self.rx.reset();
    }

    fn release_held(&mut self) {
        if self.gate.is_empty() {
            while let Some(o) = self.held.pop_front() {
                self.out.push_back(o);
            }
        }
    }

    fn check_request_timeouts(&mut self) {
        // ko-count × timeout: the peer sat on a request too long.
        if self.cfg.net.ko_count == 0 || self.conn < ConnState::Connected {
            return;
        }
        let waiting = self.tl.reqs.values().any(|r| matches!(r.net, Net::Sent));
        if waiting {
            self.log(
                LogLevel::Error,
                None,
                "Remote failed to finish a request within ko-count * timeout".into(),
            );
            self.connection_lost(ConnState::Timeout);
        }
    }

    fn arm_request_timer(&mut self) {
        if self.cfg.net.ko_count > 0 && self.timers.get(Timer::RequestTimeout).is_none() {
            let t = self.cfg.net.ko_count as u64 * self.cfg.net.timeout_ds as u64 * DECISECOND_NS;
            self.timers
                .set(Timer::RequestTimeout, self.now.saturating_add_ns(t));
        }
    }

    fn rearm_request_timer(&mut self) {
        self.timers.stop(Timer::RequestTimeout);
        if self.tl.reqs.values().any(|r| matches!(r.net, Net::Sent)) {
            self.arm_request_timer();
        }
    }

    // ---------------------------------------------------------------- packet dispatch

    fn dev_for(&self, f: &Frame) -> Result<u16, Error> {
        if self.devs.contains_key(&f.volume) {
            Ok(f.volume)
        } else {
            Err(PeerMisbehaved::UnknownVolume {
                cmd: cmd::name(f.cmd),
                volume: f.volume,
            }
            .into())
        }
    }

    fn dispatch(&mut self, socket: Socket, f: Frame) -> Result<(), Error> {
        let expect_len = |f: &Frame, n: usize| -> Result<(), Error> {
            if f.payload.len() == n {
                Ok(())
            } else {
                Err(PeerMisbehaved::PayloadLength {
                    cmd: cmd::name(f.cmd),
                    expected: n.to_string(),
                    got: f.payload.len(),
                }
                .into())
            }
        };
        match (socket, f.cmd) {
            (Socket::Meta, cmd::PING) => {
                expect_len(&f, 0)?;
                self.send(Socket::Meta, cmd::PING_ACK, 0, &[]);
                Ok(())
            }
            (Socket::Meta, cmd::PING_ACK) => {
                self.ping_outstanding = false;
                self.timers.stop(Timer::PingTimeout);
                self.maybe_finish_resync_after_ping();
                Ok(())
            }
            (Socket::Data, cmd::SYNC_PARAM89) => {
                let v = self.dev_for(&f)?;
                let p = handshake::receive_sync_param(&f.payload)?;
                if self.conn == ConnState::WFReportParams
                    && (p.verify_alg != self.cfg.net.verify_alg
                        || p.csums_alg != self.cfg.net.csums_alg)
                {
                    return Err(PeerIncompatible::Protocol(
                        "different verify-alg or csums-alg settings",
                    )
                    .into());
                }
                let d = self.devs.get_mut(&v).expect("checked");
                if d.ld.is_some() {
                    d.rs.settings = Some(RateSettings::from(&p));
                }
                self.peer_params = Some(p);
                Ok(())
            }
            (Socket::Data, cmd::SIZES) => self.receive_sizes(&f),
            (Socket::Data, cmd::UUIDS) => self.receive_uuids(&f),
            (Socket::Data, cmd::STATE) => self.receive_state(&f),
            (Socket::Data, cmd::SYNC_UUID) => self.receive_sync_uuid(&f),
            (Socket::Data, cmd::DATA) => self.receive_data(&f),
            (Socket::Data, cmd::TRIM) | (Socket::Data, cmd::ZEROES) => self.receive_data(&f),
            (Socket::Data, cmd::BARRIER) => {
                expect_len(&f, 8)?;
                let mut nr = [0u8; 4];
                nr.copy_from_slice(&f.payload[..4]);
                self.rx.barrier(nr);
                self.flush_ready_epochs();
                Ok(())
            }
            (Socket::Data, cmd::UNPLUG_REMOTE) => Ok(()),
            (_, cmd::DELAY_PROBE) => Ok(()),
            // P_RS_THIN_REQ may always be answered with plain resync data (spec §11.5).
            (Socket::Data, cmd::DATA_REQUEST)
            | (Socket::Data, cmd::RS_DATA_REQUEST)
            | (Socket::Data, cmd::RS_THIN_REQ) => self.receive_data_request(&f),
            (Socket::Data, cmd::DATA_REPLY) => self.receive_data_reply(&f),
            (Socket::Data, cmd::RS_DATA_REPLY) => self.receive_rs_data_reply(&f),
            (Socket::Data, cmd::BITMAP) | (Socket::Data, cmd::COMPRESSED_BITMAP) => {
                self.receive_bitmap(&f)
            }
            (Socket::Data, cmd::OUT_OF_SYNC) => {
                let v = self.dev_for(&f)?;
                expect_len(&f, 16)?;
                let mut r = Reader::new(&f.payload);
                let (s, l) = (r.u64().unwrap_or(0), r.u32().unwrap_or(0));
                if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                    ld.bitmap.set_range(s, l);
                }
                Ok(())
            }
            (Socket::Data, cmd::STATE_CHG_REQ) | (Socket::Data, cmd::CONN_ST_CHG_REQ) => {
                self.receive_state_change_request(&f)
            }
            (Socket::Meta, cmd::STATE_CHG_REPLY) | (Socket::Meta, cmd::CONN_ST_CHG_REPLY) => {
                expect_len(&f, 4)?;
                let code =
                    i32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
                self.state_change_reply(code);
                Ok(())
            }
            (Socket::Meta, cmd::WRITE_ACK)
            | (Socket::Meta, cmd::RS_WRITE_ACK)
            | (Socket::Meta, cmd::RECV_ACK)
            | (Socket::Meta, cmd::SUPERSEDED)
            | (Socket::Meta, cmd::RETRY_WRITE)
            | (Socket::Meta, cmd::NEG_ACK)
            | (Socket::Meta, cmd::NEG_DREPLY)
            | (Socket::Meta, cmd::NEG_RS_DREPLY)
            | (Socket::Meta, cmd::RS_IS_IN_SYNC)
            | (Socket::Meta, cmd::RS_CANCEL) => {
                expect_len(&f, 24)?;
                self.receive_ack(&f)
            }
            (Socket::Meta, cmd::BARRIER_ACK) => {
                expect_len(&f, 8)?;
                self.receive_barrier_ack(&f)
            }
            (Socket::Data, cmd::PROTOCOL_UPDATE) => Ok(()),
            (Socket::Data, cmd::PROTOCOL) => Err(PeerMisbehaved::UnexpectedPacket {
                expected: "no second P_PROTOCOL",
                got: "P_PROTOCOL",
            }
            .into()),
            _ => Err(PeerMisbehaved::UnknownCommand(f.cmd).into()),
        }
    }

    fn receive_sizes(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        let s = handshake::receive_sizes(&f.payload, self.agreed.features)?;
        let u_size_cfg = self.cfg.disk.u_size_sect;
        let d = self.devs.get_mut(&v).expect("checked");
        d.peer.sizes = Some(s);
        let cur = d.capacity;
        let new_size = match &d.ld {
            Some(ld) => {
                // p_usize := min_not_zero(my u_size, peer u_size) during the first exchange.
                let usize = match (u_size_cfg, s.u_size) {
                    (0, x) | (x, 0) => x,
                    (a, b) => a.min(b),
                };
                let m = ld.d.size_sectors;
                let p = s.d_size;
                let mut size = if p != 0 && m != 0 {
                    p.min(m)
                } else if ld.d.la_size_sect != 0 {
                    let mut x = ld.d.la_size_sect;
                    if m != 0 && m < x {
                        x = m;
                    }
                    if p != 0 && p < x {
                        x = p;
                    }
                    x
                } else {
                    m.max(p)
                };
                if usize != 0 && usize <= size {
                    size = usize;
                }
                // Never shrink a device with usable data during connect (receive_sizes).
                if size < cur
                    && d.st.disk >= DiskState::Outdated
                    && (d.st.conn < ConnState::Connected || d.st.pdsk == DiskState::Diskless)
                {
                    return Err(PeerIncompatible::DiskTooSmall {
                        peer: size,
                        mine: cur,
                    }
                    .into());
                }
                size
            }
            // A diskless node takes the peer's current size, else its u_size, else d_size.
            None => [s.c_size, s.u_size, s.d_size]
                .into_iter()
                .find(|x| *x != 0)
                .unwrap_or(0),
        };
        if new_size != d.capacity {
            let old = d.capacity;
            d.capacity = new_size;
            if let Some(ld) = &mut d.ld {
                let words = ld.bitmap.words().to_vec();
                ld.bitmap = Bitmap::new(words, new_size);
                // Growing beyond the last agreed size: the new area is out of sync.
                if old != 0 && new_size > old {
                    ld.bitmap
                        .set_range(old, ((new_size - old) * 512).min(u32::MAX as u64) as u32);
                }
            }
            self.log(
                LogLevel::Info,
                Some(Volume(v)),
                format!("size = {} KB ({} sectors)", new_size / 2, new_size),
            );
            self.write_superblock(v, false);
        }
        Ok(())
    }

    fn receive_uuids(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        let (uuids, bits, flags) = handshake::receive_uuids(&f.payload)?;
        let d = self.devs.get_mut(&v).expect("checked");
        // A diskless Primary only talks to the data it exposes (receive_uuids).
        if (d.st.conn < ConnState::Connected || d.st.pdsk == DiskState::Diskless)
            && d.st.disk < DiskState::Inconsistent
            && d.st.role == Role::Primary
            && d.ed_uuid & !1 != uuids[UI_CURRENT] & !1
        {
            return Err(PeerIncompatible::SyncHandshake(format!(
                "Can only connect to data with current UUID={:016X}",
                d.ed_uuid
            ))
            .into());
        }
        if d.ld.is_none() && d.st.role == Role::Primary {
            d.ed_uuid = uuids[UI_CURRENT] & !1;
        }
        d.peer.uuids = Some(uuids);
        d.peer.bits = bits;
        d.peer.flags = flags;
        // Skip-initial-sync from a peer with fresh meta-data on both sides (spec §10.1).
        if flags & uc::UUID_FLAG_SKIP_INITIAL_SYNC != 0
            && d.st.conn == ConnState::Connected
            && d.st.disk == DiskState::Inconsistent
        {
            if let Some(ld) = &mut d.ld {
                if ld.d.uuids[UI_CURRENT] == uc::UUID_JUST_CREATED {
                    ld.d.uuids[UI_CURRENT] = uuids[UI_CURRENT];
                    ld.d.uuids[UI_BITMAP] = 0;
                    ld.bitmap.clear_all();
                    self.write_bitmap(v);
                    self.write_superblock(v, true);
                    self.set_state(v, |s| {
                        s.disk = DiskState::UpToDate;
                        s.pdsk = DiskState::UpToDate;
                    });
                }
            }
        }
        Ok(())
    }

    fn receive_state(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        if f.payload.len() != 4 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: "P_STATE",
                expected: "4".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let w = u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
        let peer = DrbdState::from_word(w & !((1 << 17) | (1 << 21) | (1 << 22)))
            .ok_or(PeerMisbehaved::BadStateWord(w))?;
        let d = &self.devs[&v];
        let os = d.st;
        let mut real_pdsk = peer.disk;
        if peer.disk == DiskState::Negotiating {
            real_pdsk = if d.peer.flags & uc::UUID_FLAG_INCONSISTENT != 0 {
                DiskState::Inconsistent
            } else {
                DiskState::Consistent
            };
        }
        if os.conn <= ConnState::TearDown {
            return Ok(());
        }
        // End-of-sync confirmation from the SyncTarget (receive_state).
        if (os.pdsk == DiskState::Inconsistent || os.pdsk == DiskState::Consistent)
            && real_pdsk == DiskState::UpToDate
            && os.conn > ConnState::Connected
            && os.disk == DiskState::UpToDate
        {
            if peer.conn > ConnState::Connected && peer.conn < ConnState::SyncSource {
                real_pdsk = DiskState::Inconsistent;
            } else if os.conn >= ConnState::SyncSource && peer.conn == ConnState::Connected {
                let left = d.ld.as_ref().map(|l| l.bitmap.weight()).unwrap_or(0);
                if left <= d.rs.failed {
                    self.resync_finished(v);
                }
                return Ok(());
            }
        }
        if os.pdsk == DiskState::UpToDate
            && real_pdsk == DiskState::Inconsistent
            && os.conn == ConnState::Connected
            && peer.conn > ConnState::SyncSource
        {
            real_pdsk = DiskState::UpToDate;
        }
        let mut ns_conn = if os.conn == ConnState::WFReportParams {
            ConnState::Connected
        } else {
            os.conn
        };
        if peer.conn == ConnState::Ahead {
            ns_conn = ConnState::Behind;
        }
        let d = self.devs.get_mut(&v).expect("checked");
        d.got_state = true;
        if d.peer.uuids.is_some()
            && peer.disk >= DiskState::Negotiating
            && d.ld.is_some()
            && d.st.disk >= DiskState::Negotiating
        {
            let mut cr = os.conn < ConnState::Connected;
            cr |= os.conn == ConnState::Connected
                && (peer.disk == DiskState::Negotiating || os.disk == DiskState::Negotiating);
            cr |= d.consider_resync;
            cr |= os.conn == ConnState::Connected
                && (peer.conn >= ConnState::StartingSyncS && peer.conn <= ConnState::WFBitMapT);
            if cr {
                match self.sync_handshake(v, peer.role, real_pdsk) {
                    Some(c) => ns_conn = c,
                    None => {
                        self.stay_standalone = true;
                        self.connection_lost(ConnState::Disconnecting);
                        return Ok(());
                    }
                }
            }
        }
        let d = self.devs.get_mut(&v).expect("checked");
        d.consider_resync = false;
        let negotiated = d.negotiated_disk;
        self.set_state(v, |s| {
            s.conn = ns_conn;
            s.peer = peer.role;
            s.pdsk = real_pdsk;
            s.peer_isp = peer.aftr_isp | peer.user_isp;
            if (ns_conn == ConnState::Connected || ns_conn == ConnState::WFBitMapS)
                && s.disk == DiskState::Negotiating
            {
                s.disk = negotiated;
            }
            // While connected, Consistent/Outdated are promoted when the other side is UpToDate
            // or both agree there is nothing to sync.
            if ns_conn == ConnState::Connected {
                if (s.disk == DiskState::Consistent || s.disk == DiskState::Outdated)
                    && (s.pdsk == DiskState::UpToDate
                        || s.pdsk == DiskState::Consistent
                        || s.pdsk == DiskState::Outdated)
                {
                    s.disk = DiskState::UpToDate;
                }
                if (s.pdsk == DiskState::Consistent || s.pdsk == DiskState::Outdated)
                    && s.disk == DiskState::UpToDate
                {
                    s.pdsk = DiskState::UpToDate;
                }
            }
        });
        if self.conn < ConnState::Connected
            && self
                .devs
                .values()
                .all(|d| d.st.conn >= ConnState::Connected)
        {
            self.conn = ConnState::Connected;
            self.timers.stop(Timer::Handshake);
        }
        if os.conn > ConnState::WFReportParams
            && ns_conn > ConnState::Connected
            && peer.conn <= ConnState::Connected
            && peer.disk != DiskState::Negotiating
        {
            self.send_uuids(v, 0);
            self.send_state(v);
        }
        self.discard_my_data = false;
        Ok(())
    }

    /// drbd_sync_handshake: the uuid decision plus post-processing (spec §10.3). Returns the new
    /// connection state, or None to disconnect.
    fn sync_handshake(
        &mut self,
        v: u16,
        peer_role: Role,
        peer_disk: DiskState,
    ) -> Option<ConnState> {
        let d = &self.devs[&v];
        let ld = d.ld.as_ref()?;
        let peer_uuids = d.peer.uuids?;
        let mydisk = if d.st.disk == DiskState::Negotiating {
            d.negotiated_disk
        } else {
            d.st.disk
        };
        let input = CompareInput {
            own: ld.d.uuids,
            peer: peer_uuids,
            peer_flags: d.peer.flags,
            own_crashed_primary: ld.crashed_primary,
            own_primary: d.st.role == Role::Primary,
            peer_primary: peer_role == Role::Primary,
            apv: self.agreed.apv,
            features: self.agreed.features,
            resolve_conflicts: self.resolve_conflicts,
        };
        let own_bits = ld.bitmap.weight();
        let peer_bits = d.peer.bits;
        let own_primary = d.st.role == Role::Primary;
        let role_is_primary_consistent =
            d.st.role == Role::Primary && d.st.disk >= DiskState::Consistent;
        let dec = uc::uuid_compare(
            &input,
            self.cfg.mutation == Some(Mutation::WrongSyncDirection),
        );
        let u = ld.d.uuids;
        self.log(
            LogLevel::Info,
            Some(Volume(v)),
            format!(
                "self {:016X}:{:016X}:{:016X}:{:016X} bits:{} flags:0",
                u[0], u[1], u[2], u[3], own_bits
            ),
        );
        let p = peer_uuids;
        self.log(
            LogLevel::Info,
            Some(Volume(v)),
            format!(
                "peer {:016X}:{:016X}:{:016X}:{:016X} bits:{} flags:{:X}",
                p[0], p[1], p[2], p[3], peer_bits, self.devs[&v].peer.flags
            ),
        );
        self.log(
            LogLevel::Info,
            Some(Volume(v)),
            format!("uuid_compare()={} by rule {}", dec.hg, dec.rule),
        );
        // Apply the kernel's corrections of own/peer UUIDs.
        {
            let d = self.devs.get_mut(&v).expect("exists");
            d.peer.uuids = Some(dec.peer);
            if let Some(ld) = &mut d.ld {
                if ld.d.uuids != dec.own {
                    ld.d.uuids = dec.own;
                }
            }
        }
        let mut hg = dec.hg;
        if hg == -1000 {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                "Unrelated data, aborting!".into(),
            );
            return None;
        }
        if hg < -0x10000 {
            let x = -hg;
            self.log(LogLevel::Error, Some(Volume(v)), format!("To resolve this both sides have to support at least protocol {} and feature flags 0x{:x}", x & 0xff, (x >> 8) & 0xff));
            return None;
        }
        if hg < -1000 {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                format!(
                    "To resolve this both sides have to support at least protocol {}",
                    -hg - 1000
                ),
            );
            return None;
        }
        if (mydisk == DiskState::Inconsistent && peer_disk > DiskState::Inconsistent)
            || (peer_disk == DiskState::Inconsistent && mydisk > DiskState::Inconsistent)
        {
            let full = hg == -100 || hg.abs() == 2;
            hg = if mydisk > DiskState::Inconsistent {
                1
            } else {
                -1
            };
            if full {
                hg *= 2;
            }
            self.log(
                LogLevel::Info,
                Some(Volume(v)),
                format!(
                    "Becoming sync {} due to disk states.",
                    if hg > 0 { "source" } else { "target" }
                ),
            );
        }
        let net = self.cfg.net.clone();
        if hg == 100 || (hg == -100 && net.always_asbp) {
            let pcount = own_primary as u32 + (peer_role == Role::Primary) as u32;
            let forced = hg == -100;
            let a = uc::AsbInput {
                own_bitmap_uuid: u[UI_BITMAP],
                peer_bitmap_uuid: p[UI_BITMAP],
                own_changes: own_bits,
                peer_changes: peer_bits,
                resolve_conflicts: self.resolve_conflicts,
                own_primary,
            };
            hg = match pcount {
                0 => uc::asb_recover_0p(net.after_sb_0pri, &a),
                1 => uc::asb_recover_1p(net.after_sb_0pri, net.after_sb_1pri, &a),
                _ => uc::asb_recover_2p(net.after_sb_0pri, net.after_sb_2pri, &a),
            };
            if hg.abs() < 100 {
                self.log(LogLevel::Warn, Some(Volume(v)), format!("Split-Brain detected, {} primaries, automatically solved. Sync from {} node", pcount, if hg < 0 { "peer" } else { "this" }));
                if forced {
                    hg *= 2;
                }
            }
        }
        if hg == -100 {
            let mine = self.discard_my_data;
            let theirs = self.devs[&v].peer.flags & uc::UUID_FLAG_DISCARD_MY_DATA != 0;
            if mine && !theirs {
                hg = -1;
            }
            if !mine && theirs {
                hg = 1;
            }
            if hg.abs() < 100 {
                self.log(
                    LogLevel::Warn,
                    Some(Volume(v)),
                    format!(
                        "Split-Brain detected, manually solved. Sync from {} node",
                        if hg < 0 { "peer" } else { "this" }
                    ),
                );
            }
        }
        if hg == -100 || hg == 100 {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                "Split-Brain detected but unresolved, dropping connection!".into(),
            );
            return None;
        }
        if hg > 0 && mydisk <= DiskState::Inconsistent {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                "I shall become SyncSource, but I am inconsistent!".into(),
            );
            return None;
        }
        if hg < 0 && role_is_primary_consistent {
            match net.rr_conflict {
                crate::config::AfterSbPolicy::Violently => {
                    self.log(
                        LogLevel::Warn,
                        Some(Volume(v)),
                        "Becoming SyncTarget, violating the stable-data assumption".into(),
                    );
                }
                _ => {
                    self.log(
                        LogLevel::Error,
                        Some(Volume(v)),
                        "I shall become SyncTarget, but I am primary!".into(),
                    );
                    return None;
                }
            }
        }
        if hg.abs() >= 2 {
            self.log(
                LogLevel::Info,
                Some(Volume(v)),
                "Writing the whole bitmap, full sync required after drbd_sync_handshake.".into(),
            );
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.set_all();
            }
            self.write_bitmap(v);
        }
        // Corrections above must be durable before the peer hears of them.
        if dec.own != u {
            self.write_superblock(v, true);
        }
        Some(if hg > 0 {
            ConnState::WFBitMapS
        } else if hg < 0 {
            ConnState::WFBitMapT
        } else {
            ConnState::Connected
        })
    }
}

/// Gate token standing for "the superblock write queued behind the one in flight".
fn sb_token(vol: u16) -> IoId {
    IoId(u64::MAX - vol as u64)
}

impl LocalDisk {
    fn attach(d: AttachedDisk, al_extents: u32) -> LocalDisk {
        let size = if d.la_size_sect != 0 {
            d.la_size_sect.min(d.size_sectors)
        } else {
            d.size_sectors
        };
        let mut bitmap = Bitmap::new(d.bitmap.clone(), size);
        if d.flags & MDF_FULL_SYNC != 0 {
            bitmap.set_all();
        }
        // A crashed Primary remembers it across detach/attach and restarts (drbd_adm_attach:
        // MDF_CRASHED_PRIMARY, or MDF_PRIMARY_IND still set).
        let crashed_primary = d.flags & (MDF_PRIMARY_IND | MDF_CRASHED_PRIMARY) != 0;
        LocalDisk {
            d,
            bitmap,
            al: ActivityLog::new(al_extents),
            crashed_primary,
        }
    }

    /// Disk state at attach (spec drbd-metadata.md §3).
    fn disk_state_at_attach(&self, fencing: Fencing) -> DiskState {
        let f = self.d.flags;
        if f & MDF_CONSISTENT == 0 {
            DiskState::Inconsistent
        } else if f & MDF_WAS_UP_TO_DATE == 0 {
            DiskState::Outdated
        } else if f & MDF_PEER_OUT_DATED != 0 || fencing == Fencing::DontCare {
            DiskState::UpToDate
        } else {
            DiskState::Consistent
        }
    }

    fn initial_capacity(&self, u_size: u64) -> u64 {
        let mut s = if self.d.la_size_sect != 0 {
            self.d.la_size_sect.min(self.d.size_sectors)
        } else {
            self.d.size_sectors
        };
        if u_size != 0 && u_size < s {
            s = u_size;
        }
        s
    }
}

/// `drbdadm status` material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub role: Role,
    pub conn: ConnState,
    pub peer_role: Role,
    pub volumes: Vec<VolumeStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeStatus {
    pub volume: Volume,
    pub disk: DiskState,
    pub peer_disk: DiskState,
    pub replication: ConnState,
    pub out_of_sync_kib: u64,
    pub size_sectors: u64,
    pub resync_total_blocks: u64,
}

// ---------------------------------------------------------------- data path
impl Resource {
    fn protocol(&self) -> Protocol {
        self.cfg.net.protocol
    }

    /// drbd_should_do_remote / drbd_should_send_out_of_sync for one volume.
    fn remote_mode(&self, v: u16) -> (bool, bool) {
        let st = self.devs[&v].st;
        let remote = st.pdsk == DiskState::UpToDate
            || (st.pdsk >= DiskState::Inconsistent
                && st.conn >= ConnState::WFBitMapT
                && st.conn < ConnState::Ahead);
        let oos = st.conn == ConnState::Ahead || st.conn == ConnState::WFBitMapS;
        (remote && st.conn >= ConnState::Connected, oos)
    }

    fn on_request(&mut self, id: RequestId, volume: Volume, op: RequestOp) {
        if !self.ap_held.is_empty() || !self.state_is_stable(volume.0) {
            self.ap_held.push_back((id, volume, op));
            return;
        }
        self.start_request(id, volume, op);
    }

    fn start_request(&mut self, id: RequestId, volume: Volume, op: RequestOp) {
        let v = volume.0;
        let Some(d) = self.devs.get(&v) else {
            self.out.push_back(Output::Complete {
                request: id,
                result: Err(RequestError::Invalid),
            });
            return;
        };
        let cap = d.capacity;
        let in_range =
            |sector: u64, len: u32| len % 512 == 0 && len > 0 && sector + len as u64 / 512 <= cap;
        match op {
            RequestOp::Write {
                sector,
                data,
                fua,
                preflush,
            } => {
                if !in_range(sector, data.len() as u32)
                    || data.len() > self.cfg.max_bio_size as usize
                {
                    self.out.push_back(Output::Complete {
                        request: id,
                        result: Err(RequestError::Invalid),
                    });
                    return;
                }
                if d.st.role != Role::Primary {
                    self.out.push_back(Output::Complete {
                        request: id,
                        result: Err(RequestError::ReadOnly),
                    });
                    return;
                }
                self.start_write(
                    id,
                    v,
                    ReqKind::Write,
                    sector,
                    data.len() as u32,
                    Some(data),
                    fua,
                    preflush,
                );
            }
            RequestOp::Discard { sector, len_bytes } => {
                if !in_range(sector, len_bytes) || d.st.role != Role::Primary {
                    self.out.push_back(Output::Complete {
                        request: id,
                        result: Err(RequestError::Invalid),
                    });
                    return;
                }
                self.start_write(
                    id,
                    v,
                    ReqKind::Discard,
                    sector,
                    len_bytes,
                    None,
                    false,
                    false,
                );
            }
            RequestOp::Read { sector, len_bytes } => {
                if !in_range(sector, len_bytes) {
                    self.out.push_back(Output::Complete {
                        request: id,
                        result: Err(RequestError::Invalid),
                    });
                    return;
                }
                self.start_read(id, v, sector, len_bytes);
            }
            RequestOp::Flush => {
                // An empty flush closes the epoch (spec §7.1 4c): it is done when the local disk
                // flushed and the peer barrier-acked every epoch up to here.
                let has_disk = d.ld.is_some() && d.st.disk >= DiskState::Inconsistent;
                let (remote, _) = self.remote_mode(v);
                if !has_disk && !remote {
                    self.out.push_back(Output::Complete {
                        request: id,
                        result: Err(RequestError::NoData),
                    });
                    return;
                }
                if let Some(nr) = self.tl.close_epoch() {
                    self.send_barrier(nr);
                }
                let wait_epoch = if remote {
                    self.tl
                        .epochs
                        .iter()
                        .rev()
                        .find(|e| e.barrier_sent)
                        .map(|e| e.nr)
                } else {
                    None
                };
                self.flushes.push(PendingFlush {
                    request: id,
                    local_pending: has_disk,
                    local_ok: has_disk,
                    wait_epoch,
                    remote_ok: remote,
                });
                if has_disk {
                    let io = self.io_id(Io::AppFlush { request: id });
                    self.out.push_back(Output::DiskFlush { io, volume });
                }
                self.check_flushes();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_write(
        &mut self,
        id: RequestId,
        v: u16,
        kind: ReqKind,
        sector: u64,
        len: u32,
        data: Option<Bytes>,
        fua: bool,
        preflush: bool,
    ) {
        let has_disk =
            self.devs[&v].ld.is_some() && self.devs[&v].st.disk >= DiskState::Inconsistent;
        let (remote, _) = self.remote_mode(v);
        // Writes need a path to current data (drbd_req.c may_do_writes): an Inconsistent
        // Primary that lost its UpToDate peer fails them rather than diverge unseen.
        let st = self.devs[&v].st;
        let current = st.disk == DiskState::UpToDate || st.pdsk == DiskState::UpToDate;
        if (!has_disk && !remote) || !current {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                format!(
                    "IO ERROR: neither local nor remote data, sector {sector}+{}",
                    len / 512
                ),
            );
            self.out.push_back(Output::Complete {
                request: id,
                result: Err(RequestError::NoData),
            });
            return;
        }
        let cookie = self.tl.cookie();
        let req = Request {
            id,
            volume: Volume(v),
            kind,
            sector,
            len_bytes: len,
            data,
            fua,
            preflush,
            epoch: 0,
            local: if has_disk { Local::WaitAl } else { Local::None },
            net: Net::None,
            al_extents: Vec::new(),
            al_pending: 0,
            al_wait: Vec::new(),
            completed: false,
            barrier_acked: false,
            read_data: None,
            may_set_in_sync: false,
        };
        self.tl.reqs.insert(cookie, req);
        // A Primary's first write waits until MDF_PRIMARY_IND is on disk: after a crash, apply-al
        // replays the activity log only for meta-data that says Primary (drbd_set_role syncs the
        // meta-data before returning).
        let primary_durable = self.devs[&v].ld.as_ref().map_or(true, |ld| {
            ld.d.flags & MDF_PRIMARY_IND == 0 || self.primary_ind_durable(v)
        });
        if has_disk && !primary_durable {
            self.write_superblock(v, false);
            self.al_waiters.push_back(cookie);
            self.tl.reqs.get_mut(&cookie).expect("inserted").al_pending = u32::MAX;
            return;
        }
        if has_disk && self.cfg.mutation != Some(Mutation::SkipActivityLog) {
            // Activity log: every extent hot and durable before the first write into it.
            let first = meta::al_extent(sector);
            let last = meta::al_extent(sector + len as u64 / 512 - 1);
            let mut held = Vec::new();
            let mut wait = Vec::new();
            for e in first..=last {
                match self.al_begin(v, e) {
                    Some(true) => held.push(e),
                    Some(false) => wait.push(e),
                    None => {
                        // AL busy or full: give back what we hold, wait, then start over.
                        if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                            for x in &held {
                                ld.al.release(*x);
                            }
                        }
                        self.al_waiters.push_back(cookie);
                        let r = self.tl.reqs.get_mut(&cookie).expect("inserted");
                        r.al_pending = u32::MAX;
                        return;
                    }
                }
            }
            let r = self.tl.reqs.get_mut(&cookie).expect("inserted");
            r.al_extents = held;
            r.al_pending = wait.len() as u32;
            r.al_wait = wait;
            if r.al_pending > 0 {
                return;
            }
        }
        self.submit_write(cookie);
    }

    /// MDF_PRIMARY_IND is on disk and stays there: a superblock still in flight from before a
    /// quick demote/promote may clear it again when it lands.
    fn primary_ind_durable(&self, v: u16) -> bool {
        self.devs[&v].durable_flags & MDF_PRIMARY_IND != 0
            && !self.ios.values().any(|io| {
                matches!(io, Io::Superblock { vol, flags } if *vol == v && flags & MDF_PRIMARY_IND == 0)
            })
    }

    /// Takes an AL reference: Some(true) hot now, Some(false) transaction issued, None full.
    fn al_begin(&mut self, v: u16, extent: u32) -> Option<bool> {
        // AL transactions are written one at a time (their context windows describe the hot
        // set as of their writing; two in flight could contradict each other on replay).
        let in_flight = self.ios.values().find_map(|io| match io {
            Io::AlTransaction { vol, extent: e, .. } if *vol == v => Some(*e),
            _ => None,
        });
        let d = self.devs.get_mut(&v)?;
        let bm_busy = d.bm_in_flight;
        let ld = d.ld.as_mut()?;
        if ld.al.is_hot(extent) {
            let _ = ld.al.begin(extent);
            return Some(true);
        }
        if let Some(e) = in_flight {
            return if e == extent { Some(false) } else { None };
        }
        // Before evicting, the bitmap must be on disk: the evicted extent's bits are no longer
        // recovered by apply-al (drbd_actlog.c writes the bitmap pages first).
        if ld.al.needs_eviction(extent) && (ld.bitmap.has_dirty() || bm_busy) {
            self.write_bitmap(v);
            return None;
        }
        let ld = self.devs.get_mut(&v)?.ld.as_mut()?;
        match ld.al.begin(extent) {
            AlNeed::Hot => Some(true),
            AlNeed::Full => None,
            AlNeed::Transaction {
                slot,
                extent,
                evicted,
            } => {
                let layout = ld.d.layout;
                let (tr, w) = ld.al.transaction(&layout, slot, extent);
                let mut hot = ld.al.hot_extents();
                hot.push(extent);
                if let Some(o) = evicted {
                    hot.retain(|x| *x != o);
                }
                let io = self.io_id(Io::AlTransaction {
                    vol: v,
                    slot,
                    extent,
                    evicted,
                });
                self.out.push_back(Output::WriteMeta {
                    io,
                    volume: Volume(v),
                    writes: vec![w],
                    flush: true,
                    update: MetaUpdate::ActivityLog {
                        tr_number: tr,
                        hot_extents: hot,
                    },
                });
                Some(false)
            }
        }
    }

    /// All AL extents are hot: submit locally and replicate (drbd_send_and_submit).
    fn submit_write(&mut self, cookie: u64) {
        let Some(r) = self.tl.reqs.get(&cookie) else {
            return;
        };
        let (v, sector, len, kind, fua, preflush) =
            (r.volume.0, r.sector, r.len_bytes, r.kind, r.fua, r.preflush);
        let data = r.data.clone();
        // A disk detached while the write waited (activity log, resync) is not written: its
        // data would exist only on a disk that no longer belongs to the device.
        let disk_usable =
            self.devs[&v].ld.is_some() && self.devs[&v].st.disk >= DiskState::Inconsistent;
        let has_local = r.local != Local::None && disk_usable;
        let (remote, oos) = self.remote_mode(v);
        let st = self.devs[&v].st;
        let in_sync_state = st.conn.is_sync();
        // Application writes vs resync: on the SyncSource wait for resync reads of the range, on
        // the SyncTarget for requested resync data not yet written (the kernel locks the resync
        // extent against application writes, BME_NO_WRITES).
        if self.rs_read_in_flight(v, sector, len) || self.rs_target_busy(v, sector, len) {
            self.app_waiting.push_back(cookie);
            return;
        }
        let epoch = self.tl.current;
        {
            let r = self.tl.reqs.get_mut(&cookie).expect("present");
            r.epoch = epoch;
            r.local = if has_local {
                Local::Pending
            } else {
                Local::None
            };
        }
        if has_local {
            let io = self.io_id(Io::App { cookie });
            match kind {
                ReqKind::Discard => self.out.push_back(Output::DiskDiscard {
                    io,
                    volume: Volume(v),
                    sector,
                    len_bytes: len,
                }),
                _ => self.out.push_back(Output::DiskWrite {
                    io,
                    volume: Volume(v),
                    sector,
                    data: data.clone().unwrap_or_default(),
                    fua,
                    preflush,
                }),
            }
        }
        if remote {
            let seq = self.next_seq(v);
            let mut flags = match self.protocol() {
                Protocol::C => dp::SEND_WRITE_ACK,
                Protocol::B => dp::SEND_RECEIVE_ACK,
                Protocol::A => 0,
            };
            if fua {
                flags |= dp::FUA;
            }
            if preflush {
                flags |= dp::FLUSH;
            }
            if in_sync_state {
                flags |= dp::MAY_SET_IN_SYNC | dp::SEND_WRITE_ACK;
            }
            let mut head = BytesMut::with_capacity(28);
            head.put_u64(sector);
            head.put_u64(cookie);
            head.put_u32(seq);
            if kind == ReqKind::Discard {
                head.put_u32(flags | dp::DISCARD);
                head.put_u32(len);
                self.send_data_with(cmd::TRIM, v, &head, &[]);
            } else {
                head.put_u32(flags);
                self.send_data_with(cmd::DATA, v, &head, data.as_deref().unwrap_or(&[]));
            }
            self.tl.count_write();
            let r = self.tl.reqs.get_mut(&cookie).expect("present");
            r.may_set_in_sync = in_sync_state;
            r.net = if self.cfg.net.protocol == Protocol::A {
                Net::Acked { in_sync: false }
            } else {
                Net::Sent
            };
            self.arm_request_timer();
            // max-epoch-size writes close the epoch.
            if self.tl.current_writes() >= self.cfg.net.max_epoch_size {
                if let Some(nr) = self.tl.close_epoch() {
                    self.send_barrier(nr);
                }
            }
        } else {
            if oos {
                let mut p = BytesMut::with_capacity(16);
                p.put_u64(sector);
                p.put_u32(len);
                p.put_u32(0);
                self.send(Socket::Data, cmd::OUT_OF_SYNC, v, &p);
            }
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.set_range(sector, len);
            }
        }
        let r = self.tl.reqs.get_mut(&cookie).expect("present");
        r.data = None;
        self.try_complete(cookie);
    }

    fn send_barrier(&mut self, nr: u32) {
        // Our own barrier numbers go out in host (little-endian) order like an x86 kernel.
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&nr.to_le_bytes());
        self.send(Socket::Data, cmd::BARRIER, 0, &p);
    }

    fn start_read(&mut self, id: RequestId, v: u16, sector: u64, len: u32) {
        let d = &self.devs[&v];
        // drbd_may_do_local_read: UpToDate, or Inconsistent/Consistent with the range in sync.
        let local_ok = d.ld.as_ref().is_some_and(|ld| {
            d.st.disk == DiskState::UpToDate
                || (d.st.disk >= DiskState::Inconsistent && {
                    let first = sector / 8;
                    let last = (sector + len as u64 / 512 - 1) / 8;
                    (first..=last).all(|b| !ld.bitmap.test(b))
                })
        });
        let remote_ok = d.st.conn >= ConnState::Connected && d.st.pdsk == DiskState::UpToDate;
        if !local_ok && !remote_ok {
            self.out.push_back(Output::Complete {
                request: id,
                result: Err(RequestError::NoData),
            });
            return;
        }
        let cookie = self.tl.cookie();
        self.tl.reqs.insert(
            cookie,
            Request {
                id,
                volume: Volume(v),
                kind: ReqKind::Read,
                sector,
                len_bytes: len,
                data: None,
                fua: false,
                preflush: false,
                epoch: self.tl.current,
                local: Local::None,
                net: Net::None,
                al_extents: Vec::new(),
                al_pending: 0,
                al_wait: Vec::new(),
                completed: false,
                barrier_acked: true,
                read_data: None,
                may_set_in_sync: false,
            },
        );
        if local_ok {
            self.tl.reqs.get_mut(&cookie).expect("inserted").local = Local::Pending;
            let io = self.io_id(Io::App { cookie });
            self.out.push_back(Output::DiskRead {
                io,
                volume: Volume(v),
                sector,
                len_bytes: len,
            });
        } else {
            self.send_read_request(cookie);
        }
    }

    fn send_read_request(&mut self, cookie: u64) {
        let Some(r) = self.tl.reqs.get_mut(&cookie) else {
            return;
        };
        r.net = Net::Sent;
        let (v, s, l) = (r.volume.0, r.sector, r.len_bytes);
        let mut p = BytesMut::with_capacity(24);
        p.put_u64(s);
        p.put_u64(cookie);
        p.put_u32(l);
        p.put_u32(0);
        self.send(Socket::Data, cmd::DATA_REQUEST, v, &p);
        self.arm_request_timer();
    }

    /// Completes a request upward when its protocol's condition holds (spec §7.1 5), and drops
    /// it once its epoch is barrier-acked.
    fn try_complete(&mut self, cookie: u64) {
        let proto = self.protocol();
        let ack_early = self.cfg.mutation == Some(Mutation::AckBeforePeerAck);
        let Some(r) = self.tl.reqs.get_mut(&cookie) else {
            return;
        };
        let local_done = matches!(r.local, Local::None | Local::Done { .. });
        let local_ok = matches!(r.local, Local::Done { ok: true });
        if !r.completed {
            let ready = match r.kind {
                ReqKind::Read => matches!(
                    (r.local, r.net),
                    (Local::Done { ok: true }, _)
                        | (Local::Done { ok: false }, Net::None)
                        | (_, Net::Acked { .. })
                        | (_, Net::Failed)
                        | (_, Net::Lost)
                ),
                _ => {
                    let net_done = match r.net {
                        Net::None | Net::Acked { .. } | Net::Failed | Net::Lost => true,
                        Net::RecvAcked => proto != Protocol::C,
                        Net::Sent => proto == Protocol::A || ack_early,
                    };
                    local_done && net_done
                }
            };
            if ready {
                r.completed = true;
                let result = match r.kind {
                    ReqKind::Read => match r.read_data.take() {
                        Some(b) => Ok(Some(b)),
                        None => Err(RequestError::Io),
                    },
                    _ => {
                        let remote_ok = matches!(r.net, Net::Acked { .. } | Net::RecvAcked);
                        if local_ok || remote_ok {
                            Ok(None)
                        } else {
                            Err(RequestError::Io)
                        }
                    }
                };
                let (id, epoch, kind) = (r.id, r.epoch, r.kind);
                if kind != ReqKind::Read && local_ok && r.net == (Net::Acked { in_sync: true }) {
                    let (v, s, l) = (r.volume.0, r.sector, r.len_bytes);
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.clear_range(s, l);
                    }
                }
                self.out.push_back(Output::Complete {
                    request: id,
                    result,
                });
                // A write completing while its epoch is current starts a new epoch (spec §7.1 4a).
                if kind != ReqKind::Read && epoch == self.tl.current {
                    if let Some(nr) = self.tl.close_epoch() {
                        self.send_barrier(nr);
                    }
                }
            }
        }
        let Some(r) = self.tl.reqs.get(&cookie) else {
            return;
        };
        let done = r.completed
            && local_done
            && (r.barrier_acked || matches!(r.net, Net::None | Net::Lost));
        let waiting_ack = matches!(r.net, Net::Sent | Net::RecvAcked);
        if done && !waiting_ack {
            let r = self.tl.reqs.remove(&cookie).expect("present");
            let v = r.volume.0;
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                for e in &r.al_extents {
                    ld.al.release(*e);
                }
            }
            if !r.al_extents.is_empty() {
                self.retry_al_waiters();
            }
            self.retry_rs_waiting();
        }
    }

    /// Starts peer writes whose AL extents can be made hot; the rest keep waiting.
    fn retry_peer_al_waiting(&mut self) {
        let waiting: Vec<PeerAlWait> = self.peer_al_waiting.drain(..).collect();
        for w in waiting {
            let Io::PeerWrite {
                vol, sector, len, ..
            } = w.io
            else {
                continue;
            };
            if self.devs.get(&vol).and_then(|d| d.ld.as_ref()).is_none() {
                // Detached meanwhile: no AL to take; write-through fails at the disk layer.
                self.submit_peer_write(w.io, w.data, w.fua, w.preflush, w.discard);
                continue;
            }
            let first = meta::al_extent(sector);
            let last = meta::al_extent(sector + (len as u64 / 512).max(1) - 1);
            let mut held = Vec::new();
            let mut ok = true;
            for e in first..=last {
                match self.al_begin(vol, e) {
                    Some(true) => held.push(e),
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                self.peer_al_refs.push((vol, sector, len, held));
                self.submit_peer_write(w.io, w.data, w.fua, w.preflush, w.discard);
            } else {
                if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                    for x in &held {
                        ld.al.release(*x);
                    }
                }
                self.peer_al_waiting.push_back(w);
            }
        }
    }

    fn release_peer_al(&mut self, vol: u16, sector: u64, len: u32) {
        if let Some(i) = self
            .peer_al_refs
            .iter()
            .position(|(v, s, l, _)| *v == vol && *s == sector && *l == len)
        {
            let (_, _, _, exts) = self.peer_al_refs.remove(i);
            if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                for e in exts {
                    ld.al.release(e);
                }
            }
            self.retry_al_waiters();
            self.retry_peer_al_waiting();
        }
    }

    fn retry_al_waiters(&mut self) {
        let waiters: Vec<u64> = self.al_waiters.drain(..).collect();
        for c in waiters {
            let Some(r) = self.tl.reqs.remove(&c) else {
                continue;
            };
            let (id, v, kind, s, l, data, fua, pf) = (
                r.id,
                r.volume.0,
                r.kind,
                r.sector,
                r.len_bytes,
                r.data,
                r.fua,
                r.preflush,
            );
            self.start_write(id, v, kind, s, l, data, fua, pf);
        }
    }

    fn bitmap_write_finished(&mut self, vol: u16, result: Result<(), IoErrorKind>) {
        let d = self.devs.get_mut(&vol).expect("volumes are never removed");
        d.bm_in_flight = false;
        if std::mem::take(&mut d.bm_again) {
            self.write_bitmap(vol);
        }
        let d = self.devs.get_mut(&vol).expect("volumes are never removed");
        // A failed bitmap write must not be followed by the superblock that stops apply-al
        // from replaying the activity log: keep MDF_PRIMARY_IND on disk.
        if result.is_err() {
            d.sb_after_bm = false;
            self.gate.remove(&sb_token(vol));
        } else if d.sb_after_bm && !d.bm_in_flight {
            d.sb_after_bm = false;
            let gated = self.gate.remove(&sb_token(vol));
            self.write_superblock(vol, gated);
        }
        self.retry_al_waiters();
        self.retry_peer_al_waiting();
    }

    fn on_meta_done(&mut self, io: IoId, result: Result<(), IoErrorKind>) {
        let Some(what) = self.ios.remove(&io) else {
            return;
        };
        let was_gate = self.gate.remove(&io);
        match what {
            Io::Superblock { vol, flags } => {
                let d = self.devs.get_mut(&vol).expect("volumes are never removed");
                d.sb_in_flight = false;
                if result.is_ok() {
                    d.durable_flags = flags;
                }
                // Writes may be waiting for "Primary" to be on disk.
                self.al_retry_soon = true;
                if std::mem::take(&mut d.sb_again) {
                    let gated = self.gate.remove(&sb_token(vol));
                    self.write_superblock(vol, gated);
                }
            }
            Io::Bitmap { vol } => self.bitmap_write_finished(vol, result),
            _ => {}
        }
        if was_gate {
            self.release_held();
        }
        if std::mem::take(&mut self.al_retry_soon) {
            self.retry_al_waiters();
            self.retry_peer_al_waiting();
        }
        if result.is_err() {
            // Meta-data I/O errors always detach (drbd_chk_io_error with DRBD_META_IO_ERROR).
            let vol = match what {
                Io::AlTransaction { vol, .. } | Io::Superblock { vol, .. } | Io::Bitmap { vol } => {
                    vol
                }
                _ => *self.devs.keys().next().expect("one volume"),
            };
            self.log(
                LogLevel::Error,
                Some(Volume(vol)),
                "meta-data IO error".into(),
            );
            // A lost bitmap write leaves the on-disk bitmap unreliable: ask for a full sync on the
            // next attach (MDF_FULL_SYNC sets every bit) rather than trust it.
            if matches!(what, Io::Bitmap { .. }) {
                if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                    ld.d.flags |= MDF_FULL_SYNC;
                }
            }
            self.detach_on_error(vol, "META");
            // Writes waiting for the activity log go on without the local disk.
            let waiting: Vec<u64> = self
                .tl
                .reqs
                .iter()
                .filter(|(_, r)| {
                    r.volume.0 == vol && r.local == Local::WaitAl && r.al_pending != u32::MAX
                })
                .map(|(c, _)| *c)
                .collect();
            for c in waiting {
                let r = self.tl.reqs.get_mut(&c).expect("listed");
                r.local = Local::None;
                r.al_extents.clear();
                r.al_wait.clear();
                r.al_pending = 0;
                self.submit_write(c);
            }
            self.retry_al_waiters();
            return;
        }
        if let Io::AlTransaction {
            vol,
            slot,
            extent,
            evicted,
        } = what
        {
            if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                ld.al.commit(slot, extent, evicted);
            }
            let waiting: Vec<u64> = self
                .tl
                .reqs
                .iter()
                .filter(|(_, r)| {
                    r.volume.0 == vol
                        && r.local == Local::WaitAl
                        && r.al_pending != u32::MAX
                        && r.al_wait.contains(&extent)
                })
                .map(|(c, _)| *c)
                .collect();
            for c in waiting {
                if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                    let _ = ld.al.begin(extent);
                }
                let r = self.tl.reqs.get_mut(&c).expect("listed");
                r.al_wait.retain(|x| *x != extent);
                r.al_extents.push(extent);
                r.al_pending = r.al_pending.saturating_sub(1);
                if r.al_pending == 0 {
                    self.submit_write(c);
                }
            }
            self.retry_al_waiters();
            self.retry_peer_al_waiting();
        }
    }

    fn on_disk_done(&mut self, io: IoId, result: Result<Option<Bytes>, IoErrorKind>) {
        let Some(what) = self.ios.remove(&io) else {
            return;
        };
        match what {
            Io::App { cookie } => {
                let Some(r) = self.tl.reqs.get_mut(&cookie) else {
                    return;
                };
                let ok = result.is_ok();
                r.local = Local::Done { ok };
                if r.kind == ReqKind::Read {
                    match result {
                        Ok(Some(b)) => r.read_data = Some(b),
                        _ => {
                            // Local read failed: retry at the peer if it has good data.
                            let v = r.volume.0;
                            self.local_io_error(v, "READ");
                            let d = &self.devs[&v];
                            if d.st.conn >= ConnState::Connected && d.st.pdsk == DiskState::UpToDate
                            {
                                self.send_read_request(cookie);
                                return;
                            }
                        }
                    }
                } else if !ok {
                    let (v, s, l) = (r.volume.0, r.sector, r.len_bytes);
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.set_range(s, l);
                    }
                    self.log(
                        LogLevel::Error,
                        Some(Volume(v)),
                        format!("local WRITE IO error sector {s}+{}", l / 512),
                    );
                    self.local_io_error(v, "WRITE");
                }
                self.try_complete(cookie);
                self.retry_rs_waiting();
            }
            Io::AppFlush { request } => {
                if let Some(f) = self.flushes.iter_mut().find(|f| f.request == request) {
                    f.local_pending = false;
                    f.local_ok = result.is_ok();
                }
                self.check_flushes();
            }
            Io::PeerWrite {
                vol,
                sector,
                len,
                block_id,
                epoch,
                flags,
                resync,
            } => {
                // A disk detached meanwhile has no bitmap to remember the block by: the write
                // counts as failed (NEG_ACK), so the peer keeps it out of sync.
                let ok = result.is_ok() && self.devs.get(&vol).is_some_and(|d| d.ld.is_some());
                if let Some(e) = epoch {
                    self.rx.write_done(e);
                }
                if !resync {
                    self.release_peer_al(vol, sector, len);
                }
                if self.conn >= ConnState::Connected && self.agreed.apv != 0 {
                    if resync {
                        if ok {
                            if self.cfg.mutation != Some(Mutation::ClearBitBeforeResyncWriteDurable)
                            {
                                if let Some(ld) =
                                    self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut())
                                {
                                    ld.bitmap.clear_range(sector, len);
                                }
                            }
                            self.send_ack(cmd::RS_WRITE_ACK, vol, sector, block_id, len);
                        } else {
                            self.devs.get_mut(&vol).expect("exists").rs.failed +=
                                (len as u64).div_ceil(4096);
                            self.send_ack(cmd::NEG_ACK, vol, sector, block_id, len);
                        }
                        self.devs.get_mut(&vol).expect("exists").rs.sect_in += len as u64 / 512;
                        self.check_resync_done(vol);
                    } else {
                        let want_ack = flags & dp::SEND_WRITE_ACK != 0;
                        let in_sync =
                            flags & dp::MAY_SET_IN_SYNC != 0 && self.devs[&vol].st.conn.is_sync();
                        if !ok {
                            self.send_ack(cmd::NEG_ACK, vol, sector, block_id, len);
                        } else if in_sync {
                            if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                                ld.bitmap.clear_range(sector, len);
                            }
                            self.send_ack(cmd::RS_WRITE_ACK, vol, sector, block_id, len);
                        } else if want_ack {
                            self.send_ack(cmd::WRITE_ACK, vol, sector, block_id, len);
                        }
                    }
                }
                if !ok {
                    if let Some(ld) = self.devs.get_mut(&vol).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.set_range(sector, len);
                    }
                    self.local_io_error(vol, "WRITE");
                }
                self.flush_ready_epochs();
                self.start_deferred();
                self.retry_rs_waiting();
                if resync {
                    self.retry_app_waiting();
                }
            }
            Io::PeerRead {
                vol,
                sector,
                len,
                block_id,
                reply,
            } => {
                // The reply goes out before any waiting application write is sent.
                let connected = self.conn >= ConnState::Connected && self.agreed.apv != 0;
                match result {
                    _ if !connected => {}
                    Ok(Some(data)) if data.len() == len as usize => {
                        let mut head = BytesMut::with_capacity(24);
                        head.put_u64(sector);
                        head.extend_from_slice(&block_id);
                        head.put_u32(0);
                        head.put_u32(0);
                        self.send_data_with(reply, vol, &head, &data);
                    }
                    _ => {
                        self.local_io_error(vol, "READ");
                        let neg = if reply == cmd::RS_DATA_REPLY {
                            cmd::NEG_RS_DREPLY
                        } else {
                            cmd::NEG_DREPLY
                        };
                        self.send_ack(neg, vol, sector, block_id, len);
                    }
                }
                self.retry_app_waiting();
            }
            Io::EpochFlush { epoch } => {
                if result.is_err() {
                    let v = *self.devs.keys().next().expect("one volume");
                    self.local_io_error(v, "FLUSH");
                }
                if let Some((nr, size)) = self.rx.flushed(epoch) {
                    if self.conn >= ConnState::Connected {
                        let mut p = [0u8; 8];
                        p[..4].copy_from_slice(&nr);
                        p[4..].copy_from_slice(&size.to_be_bytes());
                        self.send(Socket::Meta, cmd::BARRIER_ACK, 0, &p);
                    }
                }
                self.flush_ready_epochs();
            }
            Io::BitmapPreflush { vol } => {
                if result.is_err() {
                    self.local_io_error(vol, "FLUSH");
                }
                self.write_bitmap_pages(vol);
            }
            Io::AlTransaction { .. } | Io::Superblock { .. } | Io::Bitmap { .. } => {}
        }
    }

    /// A local I/O error: `on-io-error detach` drops the backing device (Failed → Diskless),
    /// `pass_on` marks it Inconsistent (drbd_chk_io_error).
    fn local_io_error(&mut self, v: u16, what: &str) {
        let Some(d) = self.devs.get(&v) else { return };
        if d.ld.is_none() || d.st.disk <= DiskState::Failed {
            return;
        }
        match self.cfg.disk.on_io_error {
            crate::config::OnIoError::Detach => self.detach_on_error(v, what),
            crate::config::OnIoError::PassOn => {
                self.log(
                    LogLevel::Error,
                    Some(Volume(v)),
                    format!("Local IO failed in {what}."),
                );
                if self.devs[&v].st.disk > DiskState::Inconsistent {
                    self.set_state(v, |s| s.disk = DiskState::Inconsistent);
                }
                if self.conn >= ConnState::Connected && self.agreed.apv != 0 {
                    self.send_state(v);
                }
            }
        }
    }

    fn detach_on_error(&mut self, v: u16, what: &str) {
        let Some(d) = self.devs.get(&v) else { return };
        if d.ld.is_none() || d.st.disk <= DiskState::Failed {
            return;
        }
        self.log(
            LogLevel::Error,
            Some(Volume(v)),
            format!("Local IO failed in {what}. Detaching..."),
        );
        self.write_bitmap(v);
        self.write_superblock(v, false);
        self.set_state(v, |s| s.disk = DiskState::Failed);
        let d = self.devs.get_mut(&v).expect("exists");
        d.retired = d.ld.take();
        self.set_state(v, |s| s.disk = DiskState::Diskless);
        if self.conn >= ConnState::Connected && self.agreed.apv != 0 {
            self.send_state(v);
        }
    }

    /// Completes flushes whose local and remote halves are done.
    fn check_flushes(&mut self) {
        let mut i = 0;
        while i < self.flushes.len() {
            let f = &self.flushes[i];
            if f.local_pending || f.wait_epoch.is_some() {
                i += 1;
                continue;
            }
            let f = self.flushes.remove(i);
            let result = if f.local_ok || f.remote_ok {
                Ok(None)
            } else {
                Err(RequestError::Io)
            };
            self.out.push_back(Output::Complete {
                request: f.request,
                result,
            });
        }
    }

    /// Issues the write-ordering flush for every complete epoch, oldest first.
    fn flush_ready_epochs(&mut self) {
        while let Some(id) = self.rx.ready_to_flush() {
            let vol = *self.devs.keys().next().expect("at least one volume");
            let has_disk = self.devs.values().any(|d| d.ld.is_some());
            if has_disk {
                let io = self.io_id(Io::EpochFlush { epoch: id });
                self.out.push_back(Output::DiskFlush {
                    io,
                    volume: Volume(vol),
                });
                // One flush at a time keeps acks strictly ordered.
                return;
            }
            // Diskless: nothing to flush; ack at once.
            let io = self.io_id(Io::EpochFlush { epoch: id });
            self.on_disk_done(io, Ok(None));
        }
    }

    /// P_DATA / P_TRIM / P_ZEROES from the Primary (receive_Data, spec §7.2).
    fn receive_data(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        let head = if f.cmd == cmd::DATA { 24 } else { 28 };
        if f.payload.len() < head {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: cmd::name(f.cmd),
                expected: format!("≥ {head}"),
                got: f.payload.len(),
            }
            .into());
        }
        let mut r = Reader::new(&f.payload);
        let sector = r.u64().unwrap_or(0);
        let block_id = r.raw8().unwrap_or([0; 8]);
        let _seq = r.u32();
        let flags = r.u32().unwrap_or(0);
        let (len, data) = if f.cmd == cmd::DATA {
            let data = f.payload.slice(24..);
            (data.len() as u32, Some(data))
        } else {
            (r.u32().unwrap_or(0), None)
        };
        let cap = self.devs[&v].capacity;
        if len % 512 != 0 || sector + len as u64 / 512 > cap {
            return Err(PeerMisbehaved::BeyondCapacity {
                cmd: cmd::name(f.cmd),
                sector,
                len,
                capacity: cap,
            }
            .into());
        }
        if let Some(d) = &data {
            self.devs.get_mut(&v).expect("checked").recv_cnt += d.len() as u64 / 512;
        }
        let has_disk =
            self.devs[&v].ld.is_some() && self.devs[&v].st.disk >= DiskState::Inconsistent;
        if flags & dp::SEND_RECEIVE_ACK != 0 {
            self.send_ack(cmd::RECV_ACK, v, sector, block_id, len);
        }
        if !has_disk {
            // No local disk: the write counts in the epoch and is refused.
            let _ = self.rx.add_write(false);
            self.send_ack(cmd::NEG_ACK, v, sector, block_id, len);
            self.flush_ready_epochs();
            return Ok(());
        }
        // Our peer's disk is unusable, so this node holds the only good copy: mark the range out
        // of sync and cover it with our own activity log (spec §7.2 1, receive_Data).
        let only_copy = self.devs[&v].st.pdsk < DiskState::Inconsistent;
        if only_copy {
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.set_range(sector, len);
            }
        }
        let epoch = self.rx.add_write(true);
        if only_copy && self.cfg.mutation != Some(Mutation::SkipActivityLog) {
            let io = Io::PeerWrite {
                vol: v,
                sector,
                len,
                block_id,
                epoch: Some(epoch),
                flags,
                resync: false,
            };
            self.peer_al_waiting.push_back(PeerAlWait {
                io,
                data,
                fua: flags & dp::FUA != 0,
                preflush: flags & dp::FLUSH != 0,
                discard: f.cmd != cmd::DATA,
            });
            self.retry_peer_al_waiting();
            return Ok(());
        }
        let io = Io::PeerWrite {
            vol: v,
            sector,
            len,
            block_id,
            epoch: Some(epoch),
            flags,
            resync: false,
        };
        self.submit_peer_write(
            io,
            data,
            flags & dp::FUA != 0,
            flags & dp::FLUSH != 0,
            f.cmd != cmd::DATA,
        );
        Ok(())
    }

    /// Submits a peer write, or defers it behind an overlapping one in flight (writes to the same
    /// blocks must land in arrival order).
    fn submit_peer_write(
        &mut self,
        io: Io,
        data: Option<Bytes>,
        fua: bool,
        preflush: bool,
        discard: bool,
    ) {
        let Io::PeerWrite {
            vol, sector, len, ..
        } = &io
        else {
            return;
        };
        let (vol, sector, len) = (*vol, *sector, *len);
        let end = sector + len as u64 / 512;
        let overlaps = |x: &Io| matches!(x, Io::PeerWrite { vol: v2, sector: s2, len: l2, .. } if *v2 == vol && *s2 < end && sector < *s2 + *l2 as u64 / 512);
        let busy = self.ios.values().any(overlaps) || self.deferred.iter().any(|d| overlaps(&d.io));
        if busy {
            self.deferred.push_back(DeferredPeerWrite {
                io,
                data: data.unwrap_or_default(),
                fua,
                preflush,
            });
            return;
        }
        let id = self.io_id(io);
        if discard {
            self.out.push_back(Output::DiskDiscard {
                io: id,
                volume: Volume(vol),
                sector,
                len_bytes: len,
            });
        } else {
            self.out.push_back(Output::DiskWrite {
                io: id,
                volume: Volume(vol),
                sector,
                data: data.unwrap_or_default(),
                fua,
                preflush,
            });
        }
    }

    fn start_deferred(&mut self) {
        let pending: Vec<DeferredPeerWrite> = self.deferred.drain(..).collect();
        for d in pending {
            let discard = d.data.is_empty();
            self.submit_peer_write(d.io, Some(d.data), d.fua, d.preflush, discard);
        }
    }

    /// P_DATA_REQUEST / P_RS_DATA_REQUEST (receive_DataRequest).
    fn receive_data_request(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        if f.payload.len() != 24 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: cmd::name(f.cmd),
                expected: "24".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let mut r = Reader::new(&f.payload);
        let sector = r.u64().unwrap_or(0);
        let block_id = r.raw8().unwrap_or([0; 8]);
        let len = r.u32().unwrap_or(0);
        let cap = self.devs[&v].capacity;
        if len == 0 || len % 512 != 0 || len > 1 << 20 || sector + len as u64 / 512 > cap {
            return Err(PeerMisbehaved::BeyondCapacity {
                cmd: cmd::name(f.cmd),
                sector,
                len,
                capacity: cap,
            }
            .into());
        }
        let reply = if f.cmd == cmd::DATA_REQUEST {
            cmd::DATA_REPLY
        } else {
            cmd::RS_DATA_REPLY
        };
        let up_to_date = self.devs[&v].st.disk == DiskState::UpToDate && self.devs[&v].ld.is_some();
        if !up_to_date {
            let neg = if reply == cmd::RS_DATA_REPLY {
                cmd::NEG_RS_DREPLY
            } else {
                cmd::NEG_DREPLY
            };
            self.send_ack(neg, v, sector, block_id, len);
            return Ok(());
        }
        if reply == cmd::RS_DATA_REPLY {
            self.rs_waiting.push_back((v, sector, len));
            self.retry_rs_waiting();
            return Ok(());
        }
        let io = self.io_id(Io::PeerRead {
            vol: v,
            sector,
            len,
            block_id,
            reply,
        });
        self.out.push_back(Output::DiskRead {
            io,
            volume: Volume(v),
            sector,
            len_bytes: len,
        });
        Ok(())
    }

    /// Resync reads wait for local application writes to the same blocks (the kernel locks the
    /// resync extent), so resync data is never older than a P_DATA sent before it.
    fn retry_rs_waiting(&mut self) {
        let waiting: Vec<(u16, u64, u32)> = self.rs_waiting.drain(..).collect();
        for (v, sector, len) in waiting {
            let busy = self.tl.overlaps(Volume(v), sector, len).any(|r| {
                r.kind != ReqKind::Read && matches!(r.local, Local::Pending | Local::WaitAl)
            });
            if busy || self.conn < ConnState::Connected {
                if self.conn >= ConnState::Connected {
                    self.rs_waiting.push_back((v, sector, len));
                }
                continue;
            }
            let io = self.io_id(Io::PeerRead {
                vol: v,
                sector,
                len,
                block_id: ID_SYNCER.to_be_bytes(),
                reply: cmd::RS_DATA_REPLY,
            });
            self.out.push_back(Output::DiskRead {
                io,
                volume: Volume(v),
                sector,
                len_bytes: len,
            });
        }
    }

    /// The SyncTarget has requested these blocks and not yet written the reply.
    fn rs_target_busy(&self, v: u16, sector: u64, len: u32) -> bool {
        let end = sector + len as u64 / 512;
        let hit = |s: u64, l: u32| s < end && sector < s + l as u64 / 512;
        let resync_write = |x: &Io| matches!(x, Io::PeerWrite { vol, sector: s, len: l, resync: true, .. } if *vol == v && hit(*s, *l));
        self.devs
            .get(&v)
            .is_some_and(|d| d.rs.in_flight.iter().any(|(s, l)| hit(*s, *l)))
            || self.ios.values().any(resync_write)
            || self.deferred.iter().any(|x| resync_write(&x.io))
    }

    /// Application writes parked behind resync traffic try again.
    fn retry_app_waiting(&mut self) {
        let waiting: Vec<u64> = self.app_waiting.drain(..).collect();
        for c in waiting {
            self.submit_write(c);
        }
    }

    fn rs_read_in_flight(&self, v: u16, sector: u64, len: u32) -> bool {
        let end = sector + len as u64 / 512;
        self.ios.values().any(|x| matches!(x, Io::PeerRead { vol, sector: s, len: l, reply, .. } if *vol == v && *reply == cmd::RS_DATA_REPLY && *s < end && sector < *s + *l as u64 / 512))
    }

    fn receive_data_reply(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        if f.payload.len() < 24 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: "P_DATA_REPLY",
                expected: "≥ 24".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let mut r = Reader::new(&f.payload);
        let sector = r.u64().unwrap_or(0);
        let cookie = r.u64().unwrap_or(0);
        let data = f.payload.slice(24..);
        match self.tl.reqs.get_mut(&cookie) {
            Some(req)
                if req.kind == ReqKind::Read
                    && req.sector == sector
                    && data.len() == req.len_bytes as usize =>
            {
                let n = data.len() as u64 / 512;
                req.read_data = Some(data);
                req.net = Net::Acked { in_sync: false };
                self.devs.get_mut(&v).expect("checked").recv_cnt += n;
                self.try_complete(cookie);
                Ok(())
            }
            _ => Err(PeerMisbehaved::UnknownRequest {
                cmd: "P_DATA_REPLY",
                block_id: cookie,
                sector,
            }
            .into()),
        }
    }

    /// P_RS_DATA_REPLY on the SyncTarget: write it, then ack and clear the bits.
    fn receive_rs_data_reply(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        if f.payload.len() < 24 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: "P_RS_DATA_REPLY",
                expected: "≥ 24".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let mut r = Reader::new(&f.payload);
        let sector = r.u64().unwrap_or(0);
        let block_id = r.raw8().unwrap_or([0; 8]);
        let data = f.payload.slice(24..);
        let len = data.len() as u32;
        let cap = self.devs[&v].capacity;
        if len % 512 != 0 || sector + len as u64 / 512 > cap {
            return Err(PeerMisbehaved::BeyondCapacity {
                cmd: "P_RS_DATA_REPLY",
                sector,
                len,
                capacity: cap,
            }
            .into());
        }
        self.devs.get_mut(&v).expect("checked").recv_cnt += len as u64 / 512;
        // Without a local disk the block cannot be written: refuse it, so the SyncSource keeps
        // the range out of sync (receive_RSDataReply without ldev).
        if self.devs[&v].ld.is_none() || self.devs[&v].st.disk < DiskState::Inconsistent {
            self.send_ack(cmd::NEG_ACK, v, sector, block_id, len);
            return Ok(());
        }
        let d = self.devs.get_mut(&v).expect("checked");
        let pos = d.rs.in_flight.iter().position(|(s, _)| *s == sector);
        if let Some(p) = pos {
            d.rs.in_flight.swap_remove(p);
        }
        if self.cfg.mutation == Some(Mutation::ClearBitBeforeResyncWriteDurable) {
            if let Some(ld) = d.ld.as_mut() {
                ld.bitmap.clear_range(sector, len);
            }
        }
        let io = Io::PeerWrite {
            vol: v,
            sector,
            len,
            block_id,
            epoch: None,
            flags: 0,
            resync: true,
        };
        self.submit_peer_write(io, Some(data), false, false, false);
        Ok(())
    }

    /// Acks on the meta socket (got_BlockAck / got_NegAck / got_NegDReply / got_NegRSDReply).
    fn receive_ack(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        let mut r = Reader::new(&f.payload);
        let sector = r.u64().unwrap_or(0);
        let block_id = r.u64().unwrap_or(0);
        let blksize = r.u32().unwrap_or(0);
        if block_id == ID_SYNCER {
            // Resync traffic.
            match f.cmd {
                cmd::RS_WRITE_ACK | cmd::WRITE_ACK | cmd::RS_IS_IN_SYNC => {
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.clear_range(sector, blksize);
                    }
                }
                cmd::NEG_ACK => {
                    self.devs.get_mut(&v).expect("checked").rs.failed +=
                        (blksize as u64).div_ceil(4096);
                }
                cmd::NEG_RS_DREPLY | cmd::RS_CANCEL => {
                    let d = self.devs.get_mut(&v).expect("checked");
                    if let Some(p) = d.rs.in_flight.iter().position(|(s, _)| *s == sector) {
                        d.rs.in_flight.swap_remove(p);
                    }
                    if f.cmd == cmd::NEG_RS_DREPLY {
                        d.rs.failed += (blksize as u64).div_ceil(4096);
                    }
                    self.check_resync_done(v);
                    self.retry_app_waiting();
                }
                _ => {}
            }
            return Ok(());
        }
        let known = self
            .tl
            .reqs
            .get(&block_id)
            .is_some_and(|r| r.sector == sector && r.volume.0 == v);
        if !known {
            if f.cmd == cmd::NEG_ACK {
                if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                    ld.bitmap.set_range(sector, blksize);
                }
                return Ok(());
            }
            return Err(PeerMisbehaved::UnknownRequest {
                cmd: cmd::name(f.cmd),
                block_id,
                sector,
            }
            .into());
        }
        let req = self.tl.reqs.get_mut(&block_id).expect("known");
        match f.cmd {
            cmd::WRITE_ACK | cmd::SUPERSEDED => req.net = Net::Acked { in_sync: false },
            cmd::RS_WRITE_ACK => {
                // In sync on both sides only once our own write is done too (the kernel sets
                // RQ_NET_SIS and clears the bits when the request completes).
                req.net = Net::Acked { in_sync: true };
                let (s, l, local_ok) = (
                    req.sector,
                    req.len_bytes,
                    req.local == Local::Done { ok: true },
                );
                if local_ok {
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.clear_range(s, l);
                    }
                }
            }
            cmd::RECV_ACK if req.net == Net::Sent => req.net = Net::RecvAcked,
            cmd::NEG_ACK | cmd::NEG_DREPLY => {
                req.net = Net::Failed;
                let (s, l, k) = (req.sector, req.len_bytes, req.kind);
                if k != ReqKind::Read {
                    if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                        ld.bitmap.set_range(s, l);
                    }
                }
            }
            cmd::RETRY_WRITE => req.net = Net::Failed,
            _ => {}
        }
        self.try_complete(block_id);
        self.rearm_request_timer();
        Ok(())
    }

    /// P_BARRIER_ACK: must name the oldest open epoch with its exact write count (tl_release).
    fn receive_barrier_ack(&mut self, f: &Frame) -> Result<(), Error> {
        let nr = u32::from_le_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
        let set_size = u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
        let Some(oldest) = self.tl.epochs.front().copied() else {
            return Err(PeerMisbehaved::BarrierAckMismatch {
                got: nr,
                set_size,
                expected: 0,
                expected_size: 0,
            }
            .into());
        };
        if oldest.nr != nr || oldest.writes != set_size || !oldest.barrier_sent {
            return Err(PeerMisbehaved::BarrierAckMismatch {
                got: nr,
                set_size,
                expected: oldest.nr,
                expected_size: oldest.writes,
            }
            .into());
        }
        self.tl.epochs.pop_front();
        // Flushes waiting for this (or an older) epoch's barrier ack.
        let still_open: Vec<u32> = self.tl.epochs.iter().map(|e| e.nr).collect();
        for f in self.flushes.iter_mut() {
            if f.wait_epoch.is_some_and(|w| !still_open.contains(&w)) {
                f.wait_epoch = None;
            }
        }
        self.check_flushes();
        let cookies: Vec<u64> = self
            .tl
            .reqs
            .iter()
            .filter(|(_, r)| r.epoch == nr && r.kind != ReqKind::Read)
            .map(|(c, _)| *c)
            .collect();
        for c in cookies {
            if let Some(r) = self.tl.reqs.get_mut(&c) {
                r.barrier_acked = true;
                // Protocol A/B: the barrier ack is the write ack.
                if matches!(r.net, Net::Sent | Net::RecvAcked) {
                    r.net = Net::Acked { in_sync: false };
                }
            }
            self.try_complete(c);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- bitmap exchange and resync
impl Resource {
    /// Sends our whole bitmap: compressed packets when smaller, plain otherwise (spec §11.2).
    fn send_bitmap(&mut self, v: u16) {
        let hdr = codec::header_len(self.agreed.apv);
        let use_rle = self.cfg.net.use_rle && self.agreed.apv >= 90;
        let Some(ld) = self.devs.get(&v).and_then(|d| d.ld.as_ref()) else {
            return;
        };
        let words = ld.bitmap.words().to_vec();
        let nbits = ld.bitmap.nbits();
        let nwords = words.len() as u64;
        let plain_max = ((4096 - hdr) / 8) as u64;
        let mut bit = 0u64;
        let mut word = 0u64;
        let mut packets: Vec<(u16, Vec<u8>)> = Vec::new();
        loop {
            if use_rle && bit < nbits {
                if let Some((payload, next)) = codec::rle_encode(&words, nbits, bit, 4096 - hdr - 1)
                {
                    packets.push((cmd::COMPRESSED_BITMAP, payload));
                    bit = next;
                    word = bit / 64;
                    if bit >= nbits {
                        break;
                    }
                    continue;
                }
            }
            // Plain packet from the word containing the current bit.
            let n = plain_max.min(nwords.saturating_sub(word));
            let mut p = Vec::with_capacity(n as usize * 8);
            for w in &words[word as usize..(word + n) as usize] {
                p.extend_from_slice(&w.to_le_bytes());
            }
            packets.push((cmd::BITMAP, p));
            if n == 0 {
                break;
            }
            word += n;
            bit = (word * 64).min(nbits);
        }
        for (c, p) in packets {
            self.send(Socket::Data, c, v, &p);
        }
        self.devs.get_mut(&v).expect("exists").bm_tx = BmCursor {
            bit: nbits,
            word: nwords,
            done: true,
        };
    }

    fn receive_bitmap(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        let st = self.devs[&v].st.conn;
        if st != ConnState::WFBitMapS && st != ConnState::WFBitMapT {
            return Err(PeerMisbehaved::UnexpectedPacket {
                expected: "bitmap only in WFBitMapS/T",
                got: cmd::name(f.cmd),
            }
            .into());
        }
        let hdr = codec::header_len(self.agreed.apv) as u64;
        let d = self.devs.get_mut(&v).expect("checked");
        let Some(ld) = d.ld.as_mut() else {
            return Ok(());
        };
        let nbits = ld.bitmap.nbits();
        let nwords = ld.bitmap.words().len() as u64;
        let mut cur = d.bm_rx;
        if f.cmd == cmd::BITMAP {
            let want = ((4096 - hdr) / 8).min(nwords.saturating_sub(cur.word));
            if f.payload.len() as u64 != want * 8 {
                return Err(PeerMisbehaved::PayloadLength {
                    cmd: "P_BITMAP",
                    expected: (want * 8).to_string(),
                    got: f.payload.len(),
                }
                .into());
            }
            if want == 0 {
                cur.done = true;
            } else {
                let words = ld.bitmap.words_mut();
                for (i, c) in f.payload.chunks_exact(8).enumerate() {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    words[(cur.word + i as u64) as usize] |= u64::from_le_bytes(a);
                }
                cur.word += want;
                cur.bit = (cur.word * 64).min(nbits);
            }
        } else {
            let mut words = ld.bitmap.words().to_vec();
            let next = codec::rle_decode(&f.payload, &mut words, nbits, cur.bit)
                .map_err(|e| PeerMisbehaved::Bitmap(e.to_string()))?;
            ld.bitmap.words_mut().copy_from_slice(&words);
            cur.bit = next;
            cur.word = next / 64;
            if next >= nbits {
                cur.done = true;
            }
        }
        d.bm_rx = cur;
        if !cur.done {
            return Ok(());
        }
        self.write_bitmap(v);
        if st == ConnState::WFBitMapT {
            self.send_bitmap(v);
            self.set_state(v, |s| s.conn = ConnState::WFSyncUUID);
        } else {
            self.start_resync(v, ConnState::SyncSource);
        }
        Ok(())
    }

    /// drbd_uuid_set with history rotation.
    fn uuid_set(ld: &mut LocalDisk, idx: usize, val: u64) {
        if ld.d.uuids[idx] != 0 {
            ld.d.uuids[UI_HISTORY_END] = ld.d.uuids[UI_HISTORY_START];
            ld.d.uuids[UI_HISTORY_START] = ld.d.uuids[idx];
        }
        ld.d.uuids[idx] = val;
    }

    /// drbd_uuid_set_bm(0): rotate the bitmap UUID into history.
    fn uuid_clear_bm(ld: &mut LocalDisk) {
        if ld.d.uuids[UI_BITMAP] == 0 {
            return;
        }
        ld.d.uuids[UI_HISTORY_END] = ld.d.uuids[UI_HISTORY_START];
        ld.d.uuids[UI_HISTORY_START] = ld.d.uuids[UI_BITMAP];
        ld.d.uuids[UI_BITMAP] = 0;
    }

    /// drbd_start_resync.
    fn start_resync(&mut self, v: u16, side: ConnState) {
        // drbd_start_resync needs the local disk and a peer disk (get_ldev_if_state).
        let d = &self.devs[&v];
        if d.ld.is_none() || d.st.pdsk <= DiskState::Failed || d.st.conn < ConnState::Connected {
            return;
        }
        let weight = self.devs[&v]
            .ld
            .as_ref()
            .map(|l| l.bitmap.weight())
            .unwrap_or(0);
        {
            let d = self.devs.get_mut(&v).expect("exists");
            d.rs.total = weight;
            d.rs.cursor = 0;
            d.rs.failed = 0;
            d.rs.in_flight.clear();
            d.rs.sect_in = 0;
            d.rs.controller.reset();
        }
        let paused = self.devs[&v].st.user_isp || self.devs[&v].st.peer_isp;
        if side == ConnState::SyncSource {
            let conn = if paused {
                ConnState::PausedSyncS
            } else {
                ConnState::SyncSource
            };
            self.set_state(v, |s| {
                s.conn = conn;
                s.pdsk = DiskState::Inconsistent;
            });
            // drbd_gen_and_send_sync_uuid (apv ≥ 96: right when entering SyncSource).
            let rnd = self.random() & !1;
            let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) else {
                return;
            };
            let bm = ld.d.uuids[UI_BITMAP];
            let uuid = if bm != 0 && bm != uc::UUID_JUST_CREATED {
                bm.wrapping_add(uc::UUID_NEW_BM_OFFSET)
            } else {
                rnd
            };
            Self::uuid_set(ld, UI_BITMAP, uuid);
            self.write_superblock(v, true);
            self.send(Socket::Data, cmd::SYNC_UUID, v, &uuid.to_be_bytes());
        } else {
            let conn = if paused {
                ConnState::PausedSyncT
            } else {
                ConnState::SyncTarget
            };
            self.set_state(v, |s| {
                s.conn = conn;
                s.disk = DiskState::Inconsistent;
            });
            self.timers.set(Timer::ResyncTick, self.now);
        }
        self.log(
            LogLevel::Info,
            Some(Volume(v)),
            format!(
                "Began resync as {} (will sync {} KB [{} bits set]).",
                self.devs[&v].st.conn,
                weight * 4,
                weight
            ),
        );
        self.check_resync_done(v);
    }

    fn receive_sync_uuid(&mut self, f: &Frame) -> Result<(), Error> {
        let v = self.dev_for(f)?;
        if f.payload.len() != 8 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: "P_SYNC_UUID",
                expected: "8".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let u = u64::from_be_bytes(f.payload[..8].try_into().expect("length checked"));
        // A disk detached while the P_SYNC_UUID was on its way: the resync is off, the packet is
        // ignored (receive_sync_uuid without get_ldev_if_state(D_NEGOTIATING)).
        let d = &self.devs[&v];
        if d.ld.is_none() || d.st.disk < DiskState::Negotiating {
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                "Ignoring SyncUUID packet!".into(),
            );
            return Ok(());
        }
        if self.devs[&v].st.conn != ConnState::WFSyncUUID
            && self.devs[&v].st.conn != ConnState::Behind
        {
            return Err(PeerMisbehaved::UnexpectedPacket {
                expected: "P_SYNC_UUID only in WFSyncUUID",
                got: "P_SYNC_UUID",
            }
            .into());
        }
        match self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
            Some(ld) => {
                ld.d.uuids[UI_CURRENT] = u;
                ld.d.uuids[UI_BITMAP] = 0;
            }
            None => {
                self.log(
                    LogLevel::Error,
                    Some(Volume(v)),
                    "Ignoring SyncUUID packet!".into(),
                );
                return Ok(());
            }
        }
        self.write_superblock(v, true);
        self.start_resync(v, ConnState::SyncTarget);
        Ok(())
    }

    fn timers_for_resync(&mut self) {
        if !self
            .devs
            .values()
            .any(|d| d.st.conn == ConnState::SyncTarget)
        {
            self.timers.stop(Timer::ResyncTick);
        }
    }

    /// The SyncTarget's 100 ms planner (make_resync_request).
    fn resync_tick(&mut self) {
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        let mut active = false;
        for v in vols {
            if self.devs[&v].st.conn != ConnState::SyncTarget {
                continue;
            }
            active = true;
            let settings = self.devs[&v].rs.settings.unwrap_or(RateSettings {
                resync_rate_kib: self.cfg.disk.resync_rate_kib,
                c_plan_ahead_ds: self.cfg.disk.c_plan_ahead_ds,
                c_delay_target_ds: self.cfg.disk.c_delay_target_ds,
                c_fill_target_sect: self.cfg.disk.c_fill_target_sect,
                c_max_rate_kib: self.cfg.disk.c_max_rate_kib,
            });
            let max_in_flight = self.cfg.net.max_buffers as u64 / 2 * 8;
            let d = self.devs.get_mut(&v).expect("listed");
            let in_flight = d.rs.in_flight_sectors();
            let sect_in = std::mem::take(&mut d.rs.sect_in);
            let mut budget =
                d.rs.controller
                    .sectors_this_tick(&settings, sect_in, in_flight)
                    .max(8);
            let mut reqs = Vec::new();
            let Some(ld) = d.ld.as_ref() else { continue };
            // Blocks with an application write still under way are not requested yet (the
            // kernel's drbd_try_rs_begin_io waits for the extent's application I/O to drain).
            let tl = &self.tl;
            let app_busy = |sector: u64, len: u32| {
                tl.overlaps(Volume(v), sector, len)
                    .any(|r| r.kind != ReqKind::Read && !r.completed)
            };
            while budget >= 8
                && d.rs.in_flight_sectors()
                    + reqs
                        .iter()
                        .map(|(_, l): &(u64, u32)| *l as u64 / 512)
                        .sum::<u64>()
                    < max_in_flight
            {
                let Some(bit) = ld.bitmap.find_next_set(d.rs.cursor) else {
                    d.rs.cursor = ld.bitmap.nbits();
                    break;
                };
                // Merge adjacent set bits, aligned, never across a 16 MiB resync extent.
                let mut n = 1;
                while n < RS_MAX_REQUEST_BITS
                    && (bit + n) % RS_EXTENT_BITS != 0
                    && ld.bitmap.test(bit + n)
                    && (n * 8) < budget
                {
                    n += 1;
                }
                let sector = bit * 8;
                let len = ((n * 8).min(d.capacity - sector) * 512) as u32;
                if app_busy(sector, len) {
                    break;
                }
                reqs.push((sector, len));
                d.rs.cursor = bit + n;
                budget = budget.saturating_sub(n * 8);
            }
            for (sector, len) in reqs {
                self.devs
                    .get_mut(&v)
                    .expect("listed")
                    .rs
                    .in_flight
                    .push((sector, len));
                let mut p = BytesMut::with_capacity(24);
                p.put_u64(sector);
                p.put_u64(ID_SYNCER);
                p.put_u32(len);
                p.put_u32(0);
                self.send(Socket::Data, cmd::RS_DATA_REQUEST, v, &p);
            }
            self.check_resync_done(v);
        }
        if active {
            self.timers.set(
                Timer::ResyncTick,
                self.now.saturating_add_ns(RESYNC_TICK_NS),
            );
        }
    }

    /// The SyncTarget is done when nothing is left to request and nothing is in flight.
    fn check_resync_done(&mut self, v: u16) {
        let d = &self.devs[&v];
        if d.st.conn != ConnState::SyncTarget {
            return;
        }
        let Some(ld) = d.ld.as_ref() else { return };
        let writes_pending = self
            .ios
            .values()
            .any(|x| matches!(x, Io::PeerWrite { vol, resync: true, .. } if *vol == v))
            || self
                .deferred
                .iter()
                .any(|x| matches!(x.io, Io::PeerWrite { vol, resync: true, .. } if vol == v));
        let scanned = ld.bitmap.weight() <= d.rs.failed || d.rs.cursor >= ld.bitmap.nbits();
        if scanned && d.rs.in_flight.is_empty() && !writes_pending {
            if ld.bitmap.weight() > d.rs.failed && d.rs.cursor >= ld.bitmap.nbits() {
                // Bits set behind the cursor by application writes: scan again.
                self.devs.get_mut(&v).expect("exists").rs.cursor = 0;
                return;
            }
            if self.devs[&v].finish_at_ping_ack.is_none() {
                self.send_ping_now();
                let n = self.pings_sent;
                self.devs.get_mut(&v).expect("exists").finish_at_ping_ack = Some(n);
            }
        }
    }

    fn maybe_finish_resync_after_ping(&mut self) {
        self.ping_acks += 1;
        let acks = self.ping_acks;
        // A connection being torn down cannot tell the peer the resync finished: declaring our
        // disk UpToDate now would let the SyncSource go on writing unaware (and us be promoted).
        let tearing_down = self.devs.values().any(|d| d.st.conn <= ConnState::TearDown)
            || matches!(
                self.pending_change,
                Some(PendingChange {
                    command: AdminCommand::Disconnect { .. },
                    ..
                })
            );
        if tearing_down {
            return;
        }
        let ready: Vec<u16> = self
            .devs
            .iter()
            .filter(|(_, d)| d.finish_at_ping_ack.is_some_and(|n| n <= acks))
            .map(|(v, _)| *v)
            .collect();
        for v in ready {
            self.devs.get_mut(&v).expect("listed").finish_at_ping_ack = None;
            if self.devs[&v].st.conn == ConnState::SyncTarget {
                self.resync_finished(v);
            }
        }
    }

    /// drbd_resync_finished: UUID hand-over and the new disk states (spec §10.1, §11.5).
    fn resync_finished(&mut self, v: u16) {
        let conn = self.devs[&v].st.conn;
        let failed = self.devs[&v].rs.failed;
        let peer_uuids = self.devs[&v].peer.uuids;
        let target = matches!(conn, ConnState::SyncTarget | ConnState::PausedSyncT);
        let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) else {
            return;
        };
        if target {
            if failed == 0 {
                if let Some(p) = peer_uuids {
                    ld.d.uuids[UI_BITMAP] = p[UI_BITMAP];
                    ld.d.uuids[UI_HISTORY_START] = p[UI_HISTORY_START];
                    ld.d.uuids[UI_HISTORY_END] = p[UI_HISTORY_END];
                    let cur = ld.d.uuids[UI_CURRENT];
                    Self::uuid_set(ld, UI_BITMAP, cur);
                    ld.d.uuids[UI_CURRENT] = p[UI_CURRENT];
                }

                Self::uuid_clear_bm(ld);
            }
        } else {
            Self::uuid_clear_bm(ld);
        }
        let both_ok = failed == 0;
        if both_ok {
            // The full sync MDF_FULL_SYNC asked for is done.
            ld.d.flags &= !MDF_FULL_SYNC;
            ld.crashed_primary = false;
        }
        self.log(
            LogLevel::Info,
            Some(Volume(v)),
            format!("Resync done ({} failed blocks)", failed),
        );
        let cur = self.devs[&v]
            .ld
            .as_ref()
            .map(|l| l.d.uuids[UI_CURRENT] & !1);
        if let Some(cur) = cur {
            self.devs.get_mut(&v).expect("exists").ed_uuid = cur;
        }
        self.write_bitmap(v);
        self.write_superblock(v, true);
        let was_target = target;
        self.set_state(v, |s| {
            s.conn = ConnState::Connected;
            if was_target {
                if both_ok {
                    s.disk = DiskState::UpToDate;
                }
                s.pdsk = DiskState::UpToDate;
            } else if both_ok {
                s.pdsk = DiskState::UpToDate;
            }
        });
        if was_target {
            self.send_state(v);
        }
        self.timers_for_resync();
    }
}

// ---------------------------------------------------------------- administration
impl Resource {
    fn admin_done(&mut self, command: AdminCommand, result: Result<(), AdminRefusal>) {
        self.out.push_back(Output::AdminDone { command, result });
    }

    fn on_admin(&mut self, command: AdminCommand) {
        if self.pending_change.is_some() {
            self.admin_done(command, Err(state_refusal(rv::IN_TRANSIENT_STATE)));
            return;
        }
        // While the handshake's P_UUIDS/P_STATE are out and the peer's answer is pending, only
        // the connection state may change (is_valid_soft_transition, STATE_SENT).
        let state_sent = self.hs == Handshake::ExpectProtocol
            || (self.hs == Handshake::Done
                && self
                    .devs
                    .values()
                    .any(|d| d.st.conn == ConnState::WFReportParams));
        let touches_state = !matches!(
            command,
            AdminCommand::Connect { .. } | AdminCommand::Disconnect { .. }
        );
        if state_sent && touches_state {
            self.admin_done(command, Err(state_refusal(rv::IN_TRANSIENT_STATE)));
            return;
        }
        let r = match command.clone() {
            AdminCommand::Primary { force } => self.admin_primary(&command, force),
            AdminCommand::Secondary => self.admin_secondary(),
            AdminCommand::Connect { discard_my_data } => {
                if self.conn != ConnState::StandAlone {
                    Err(ret_refusal(
                        125,
                        "Device has a net-config (use disconnect first)",
                    ))
                } else {
                    self.discard_my_data = discard_my_data;
                    self.start_connecting();
                    Ok(())
                }
            }
            AdminCommand::Disconnect { force } => {
                if self.conn == ConnState::StandAlone {
                    Ok(())
                } else if self.conn >= ConnState::Connected && !force {
                    // Graceful: ask the peer (P_CONN_ST_CHG_REQ conn=Disconnecting).
                    let mask = 0x1f << 4;
                    let val = (ConnState::Disconnecting as u32) << 4;
                    self.request_change(command, 0, mask, val, true);
                    return;
                } else {
                    self.stay_standalone = true;
                    self.connection_lost(ConnState::Disconnecting);
                    Ok(())
                }
            }
            AdminCommand::Attach { volume, disk } => self.admin_attach(volume.0, *disk),
            AdminCommand::Detach { volume } => self.admin_detach(volume.0),
            AdminCommand::Invalidate { volume } => self.admin_invalidate(&command, volume.0, false),
            AdminCommand::InvalidateRemote { volume } => {
                self.admin_invalidate(&command, volume.0, true)
            }
            AdminCommand::Outdate { volume } => self.admin_outdate(volume.0),
            AdminCommand::NewCurrentUuid {
                volume,
                clear_bitmap,
            } => self.admin_new_current_uuid(volume.0, clear_bitmap),
            AdminCommand::PauseSync { volume } | AdminCommand::ResumeSync { volume } => {
                let pause = matches!(command, AdminCommand::PauseSync { .. });
                if !self.devs.contains_key(&volume.0) {
                    Err(ret_refusal(127, "Device minor not allocated"))
                } else {
                    self.set_state(volume.0, |s| s.user_isp = pause);
                    if self.conn >= ConnState::Connected {
                        self.send_state(volume.0);
                    }
                    Ok(())
                }
            }
        };
        if self.pending_change.is_none() {
            self.admin_done(command, r);
        }
    }

    /// Sends a cluster-wide state change request and parks the admin command until the reply.
    fn request_change(
        &mut self,
        command: AdminCommand,
        vol: u16,
        mask: u32,
        val: u32,
        conn_wide: bool,
    ) {
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&mask.to_be_bytes());
        p[4..].copy_from_slice(&val.to_be_bytes());
        let c = if conn_wide {
            cmd::CONN_ST_CHG_REQ
        } else {
            cmd::STATE_CHG_REQ
        };
        self.send(Socket::Data, c, vol, &p);
        match &mut self.pending_change {
            // One request per volume (drbdadm runs drbdsetup per minor); replies come in order.
            Some(pc) if pc.command == command => {
                pc.outstanding += 1;
            }
            _ => {
                self.pending_change = Some(PendingChange {
                    command,
                    vol,
                    mask,
                    outstanding: 1,
                    failed: None,
                })
            }
        }
    }

    fn pending_change_failed(&mut self) {
        if let Some(pc) = self.pending_change.take() {
            // Lost the connection while waiting: a disconnect has happened anyway.
            let r = if matches!(pc.command, AdminCommand::Disconnect { .. }) {
                Ok(())
            } else {
                Err(state_refusal(rv::CW_FAILED_BY_PEER))
            };
            self.admin_done(pc.command, r);
        }
    }

    fn state_change_reply(&mut self, code: i32) {
        let Some(pc) = self.pending_change.as_mut() else {
            return;
        };
        pc.outstanding = pc.outstanding.saturating_sub(1);
        if code < rv::SUCCESS && pc.failed.is_none() {
            pc.failed = Some(code);
        }
        if pc.outstanding > 0 {
            return;
        }
        let Some(pc) = self.pending_change.take() else {
            return;
        };
        let code = pc.failed.unwrap_or(code);
        if code < rv::SUCCESS {
            self.log(
                LogLevel::Error,
                Some(Volume(pc.vol)),
                format!(
                    "Requested state change failed by peer: {} ({})",
                    state_error_text(code),
                    code
                ),
            );
            if matches!(pc.command, AdminCommand::Disconnect { .. }) {
                // Fall back to a hard disconnect, as drbdsetup does.
                self.stay_standalone = true;
                self.connection_lost(ConnState::Disconnecting);
                self.admin_done(pc.command, Ok(()));
                return;
            }
            self.admin_done(pc.command, Err(state_refusal(rv::CW_FAILED_BY_PEER)));
            return;
        }
        let r = match pc.command.clone() {
            AdminCommand::Primary { .. } => {
                let forced = pc.mask & (0xf << 9) != 0;
                self.finish_primary(forced);
                Ok(())
            }
            AdminCommand::Disconnect { .. } => {
                self.stay_standalone = true;
                self.connection_lost(ConnState::Disconnecting);
                Ok(())
            }
            AdminCommand::Invalidate { volume } => {
                self.begin_full_sync(volume.0, ConnState::StartingSyncT);
                Ok(())
            }
            AdminCommand::InvalidateRemote { volume } => {
                self.begin_full_sync(volume.0, ConnState::StartingSyncS);
                Ok(())
            }
            _ => Ok(()),
        };
        self.admin_done(pc.command, r);
    }

    fn admin_primary(&mut self, command: &AdminCommand, force: bool) -> Result<(), AdminRefusal> {
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        if vols.iter().all(|v| self.devs[v].st.role == Role::Primary) {
            return Ok(());
        }
        let mut forced = false;
        for v in &vols {
            let st = self.devs[v].st;
            if st.peer == Role::Primary && !self.cfg.net.allow_two_primaries {
                return Err(state_refusal(rv::TWO_PRIMARIES));
            }
            let peer_good = st.conn >= ConnState::Connected && st.pdsk == DiskState::UpToDate;
            if st.disk < DiskState::UpToDate {
                if force && st.disk >= DiskState::Inconsistent {
                    forced = true;
                } else if !(st.disk == DiskState::Diskless && peer_good) {
                    return Err(state_refusal(rv::NO_UP_TO_DATE_DISK));
                }
            }
            // Fencing: a disconnected Primary needs an outdated peer (is_valid_state).
            if self.cfg.disk.fencing != Fencing::DontCare
                && st.conn < ConnState::Connected
                && st.pdsk == DiskState::DUnknown
                && !force
            {
                return Err(state_refusal(rv::PRIMARY_NOP));
            }
        }
        if self.conn >= ConnState::Connected {
            let mut mask = 0x3;
            let mut val = Role::Primary as u32;
            if forced {
                mask |= 0xf << 9;
                val |= (DiskState::UpToDate as u32) << 9;
            }
            for v in &vols {
                self.request_change(command.clone(), *v, mask, val, false);
            }
            return Ok(());
        }
        self.finish_primary(forced);
        Ok(())
    }

    /// drbd_set_role after the state change succeeded.
    fn finish_primary(&mut self, forced: bool) {
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        for v in vols {
            if forced
                && self.devs[&v].st.disk < DiskState::UpToDate
                && self.devs[&v].st.disk >= DiskState::Inconsistent
            {
                self.log(
                    LogLevel::Warn,
                    Some(Volume(v)),
                    "Forced to consider local data as UpToDate!".into(),
                );
                self.set_state(v, |s| s.disk = DiskState::UpToDate);
            }
            self.set_state(v, |s| s.role = Role::Primary);
            self.discard_my_data = false;
            let st = self.devs[&v].st;
            let need_new = self.devs[&v].ld.as_ref().is_some_and(|l| {
                ((st.conn < ConnState::Connected || st.pdsk <= DiskState::Failed)
                    && l.d.uuids[UI_BITMAP] == 0)
                    || forced
            });
            if need_new {
                self.new_current_uuid(v);
            }
            let d = self.devs.get_mut(&v).expect("listed");
            if let Some(ld) = d.ld.as_mut() {
                ld.d.uuids[UI_CURRENT] |= 1;
                d.ed_uuid = ld.d.uuids[UI_CURRENT] & !1;
            }
            self.write_superblock(v, true);
            if st.conn >= ConnState::WFReportParams {
                if forced {
                    self.send_uuids(v, 0);
                }
                self.send_state(v);
            }
        }
    }

    fn admin_secondary(&mut self) -> Result<(), AdminRefusal> {
        let vols: Vec<u16> = self.devs.keys().copied().collect();
        if self.tl.reqs.values().any(|r| !r.completed) {
            return Err(state_refusal(rv::DEVICE_IN_USE));
        }
        for v in vols {
            if self.devs[&v].st.role != Role::Primary {
                continue;
            }
            self.set_state(v, |s| s.role = Role::Secondary);
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.d.uuids[UI_CURRENT] &= !1;
            }
            self.write_bitmap(v);
            self.write_superblock(v, true);
            if self.devs[&v].st.conn >= ConnState::WFReportParams {
                self.send_state(v);
            }
        }
        Ok(())
    }

    fn admin_attach(&mut self, v: u16, disk: AttachedDisk) -> Result<(), AdminRefusal> {
        let Some(d) = self.devs.get(&v) else {
            return Err(ret_refusal(127, "Device minor not allocated"));
        };
        if d.ld.is_some() {
            return Err(ret_refusal(
                124,
                "Device is attached to a disk (use detach first)",
            ));
        }
        // A disconnected Primary may only attach the data it exposes (drbd_nl.c attach).
        let st = d.st;
        if st.conn < ConnState::Connected
            && st.role == Role::Primary
            && d.ed_uuid != 0
            && d.ed_uuid & !1 != disk.uuids[UI_CURRENT] & !1
        {
            let ed = d.ed_uuid;
            self.log(
                LogLevel::Error,
                Some(Volume(v)),
                format!("Can only attach to data with current UUID={ed:016X}"),
            );
            return Err(ret_refusal(
                150,
                "Can only attach to the data we lost last (see kernel log).",
            ));
        }
        let ld = LocalDisk::attach(disk, self.cfg.disk.al_extents);
        let ds = ld.disk_state_at_attach(self.cfg.disk.fencing);
        let cap = ld.initial_capacity(self.cfg.disk.u_size_sect);
        let connected = self.conn >= ConnState::Connected;
        let d = self.devs.get_mut(&v).expect("checked");
        d.durable_flags = ld.d.flags;
        d.retired = None;
        d.send_cnt = 0;
        d.recv_cnt = 0;
        d.ld = Some(ld);
        if d.capacity == 0 {
            d.capacity = cap;
        }
        d.negotiated_disk = ds;
        self.set_state(v, |s| s.disk = DiskState::Attaching);
        if connected {
            self.set_state(v, |s| s.disk = DiskState::Negotiating);
            self.send_sizes(v);
            self.send_uuids(v, 0);
            self.send_state(v);
        } else {
            self.set_state(v, |s| s.disk = ds);
            // A disconnected Primary writing to a freshly attached disk starts a new data
            // generation, as a promotion while disconnected does (drbd_set_role).
            let d = &self.devs[&v];
            let bm0 = d.ld.as_ref().is_some_and(|l| l.d.uuids[UI_BITMAP] == 0);
            if d.st.role == Role::Primary && d.st.disk >= DiskState::UpToDate && bm0 {
                self.new_current_uuid(v);
                if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                    ld.d.uuids[UI_CURRENT] |= 1;
                }
                self.write_superblock(v, true);
            }
        }
        Ok(())
    }

    fn admin_detach(&mut self, v: u16) -> Result<(), AdminRefusal> {
        let Some(d) = self.devs.get(&v) else {
            return Err(ret_refusal(127, "Device minor not allocated"));
        };
        if d.ld.is_none() {
            return Ok(());
        }
        if d.st.role == Role::Primary && d.st.pdsk != DiskState::UpToDate {
            return Err(state_refusal(rv::NO_UP_TO_DATE_DISK));
        }
        self.write_bitmap(v);
        self.write_superblock(v, false);
        self.set_state(v, |s| s.disk = DiskState::Failed);
        let d = self.devs.get_mut(&v).expect("checked");
        d.retired = d.ld.take();
        self.set_state(v, |s| s.disk = DiskState::Diskless);
        if self.conn >= ConnState::Connected {
            self.send_state(v);
        }
        Ok(())
    }

    fn admin_invalidate(
        &mut self,
        command: &AdminCommand,
        v: u16,
        remote: bool,
    ) -> Result<(), AdminRefusal> {
        let Some(d) = self.devs.get(&v) else {
            return Err(ret_refusal(127, "Device minor not allocated"));
        };
        let st = d.st;
        if d.ld.is_none() {
            return Err(state_refusal(rv::NO_LOCAL_DISK));
        }
        if st.conn.is_sync() {
            return Err(state_refusal(rv::RESYNC_RUNNING));
        }
        if st.conn >= ConnState::Connected {
            // Either direction starts a resync, which needs the peer's disk (is_valid_state).
            if st.pdsk < DiskState::Inconsistent {
                return Err(state_refusal(rv::NO_REMOTE_DISK));
            }
            if st.disk < DiskState::Inconsistent {
                return Err(state_refusal(rv::NO_LOCAL_DISK));
            }
            if !remote && st.role == Role::Primary {
                return Err(state_refusal(rv::NO_UP_TO_DATE_DISK));
            }
            let target = if remote {
                ConnState::StartingSyncS
            } else {
                ConnState::StartingSyncT
            };
            self.request_change(command.clone(), v, 0x1f << 4, (target as u32) << 4, false);
            return Ok(());
        }
        if remote {
            if st.role != Role::Primary {
                return Err(state_refusal(rv::NEED_CONNECTION));
            }
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.set_all();
            }
            self.write_bitmap(v);
            return Ok(());
        }
        if st.role == Role::Primary {
            return Err(state_refusal(rv::NO_UP_TO_DATE_DISK));
        }
        if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
            ld.bitmap.set_all();
        }
        self.write_bitmap(v);
        self.set_state(v, |s| s.disk = DiskState::Inconsistent);
        Ok(())
    }

    /// StartingSyncS/T: set all bits locally, then become SyncSource / wait for the sync UUID.
    fn begin_full_sync(&mut self, v: u16, side: ConnState) {
        if self.devs[&v].ld.is_none() {
            return;
        }
        self.set_state(v, |s| s.conn = side);
        if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
            ld.bitmap.set_all();
        }
        self.write_bitmap(v);
        if side == ConnState::StartingSyncT {
            self.set_state(v, |s| {
                s.conn = ConnState::WFSyncUUID;
                s.disk = DiskState::Inconsistent;
            });
        } else {
            self.start_resync(v, ConnState::SyncSource);
        }
    }

    fn admin_outdate(&mut self, v: u16) -> Result<(), AdminRefusal> {
        let Some(d) = self.devs.get(&v) else {
            return Err(ret_refusal(127, "Device minor not allocated"));
        };
        let st = d.st;
        if st.conn >= ConnState::Connected {
            return Err(state_refusal(rv::CONNECTED_OUTDATES));
        }
        if st.disk < DiskState::Outdated {
            return Err(state_refusal(rv::LOWER_THAN_OUTDATED));
        }
        if st.role == Role::Primary {
            return Err(state_refusal(rv::NO_UP_TO_DATE_DISK));
        }
        self.set_state(v, |s| s.disk = DiskState::Outdated);
        Ok(())
    }

    fn admin_new_current_uuid(&mut self, v: u16, clear_bitmap: bool) -> Result<(), AdminRefusal> {
        let Some(d) = self.devs.get(&v) else {
            return Err(ret_refusal(127, "Device minor not allocated"));
        };
        if d.ld.is_none() {
            return Err(ret_refusal(138, "Device does not have a disk-config"));
        }
        let st = d.st;
        let fresh =
            d.ld.as_ref()
                .is_some_and(|l| l.d.uuids[UI_CURRENT] == uc::UUID_JUST_CREATED);
        if clear_bitmap && st.conn == ConnState::Connected && fresh {
            // Skip the initial sync of a fresh pair (drbd_adm_new_c_uuid).
            self.new_current_uuid(v);
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.clear_all();
                ld.d.uuids[UI_BITMAP] = 0;
            }
            self.write_bitmap(v);
            self.write_superblock(v, true);
            self.send_uuids(v, uc::UUID_FLAG_SKIP_INITIAL_SYNC);
            self.set_state(v, |s| {
                s.disk = DiskState::UpToDate;
                s.pdsk = DiskState::UpToDate;
            });
            return Ok(());
        }
        if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
            Self::uuid_clear_bm(ld);
        }
        self.new_current_uuid(v);
        if clear_bitmap {
            if let Some(ld) = self.devs.get_mut(&v).and_then(|d| d.ld.as_mut()) {
                ld.bitmap.clear_all();
                ld.d.uuids[UI_BITMAP] = 0;
            }
            self.write_bitmap(v);
        }
        Ok(())
    }

    /// A cluster-wide request from the peer (receive_req_state): convert to our view, check,
    /// apply, reply on the meta socket.
    fn receive_state_change_request(&mut self, f: &Frame) -> Result<(), Error> {
        if f.payload.len() != 8 {
            return Err(PeerMisbehaved::PayloadLength {
                cmd: cmd::name(f.cmd),
                expected: "8".into(),
                got: f.payload.len(),
            }
            .into());
        }
        let mask = u32::from_be_bytes([f.payload[0], f.payload[1], f.payload[2], f.payload[3]]);
        let val = u32::from_be_bytes([f.payload[4], f.payload[5], f.payload[6], f.payload[7]]);
        let conn_wide = f.cmd == cmd::CONN_ST_CHG_REQ;
        let reply_cmd = if conn_wide {
            cmd::CONN_ST_CHG_REPLY
        } else {
            cmd::STATE_CHG_REPLY
        };
        let v = if conn_wide {
            *self.devs.keys().next().expect("one volume")
        } else {
            self.dev_for(f)?
        };
        let field = |m: u32, shift: u32, width: u32| -> Option<u32> {
            (m >> shift & ((1 << width) - 1) != 0).then_some(val >> shift & ((1 << width) - 1))
        };
        let mut code = rv::SUCCESS;
        let st = self.devs[&v].st;
        let peer_role = field(mask, 0, 2).and_then(Role::from_u32);
        let peer_disk = field(mask, 9, 4).and_then(DiskState::from_u32);
        let my_disk_req = field(mask, 13, 4).and_then(DiskState::from_u32);
        let conn_req = field(mask, 4, 5).and_then(ConnState::from_u32);
        if peer_role == Some(Role::Primary)
            && st.role == Role::Primary
            && !self.cfg.net.allow_two_primaries
        {
            code = rv::TWO_PRIMARIES;
        }
        if self.resolve_conflicts && self.pending_change.is_some() {
            code = rv::CONCURRENT_ST_CHG;
        }
        // A resync start needs both disks usable (is_valid_state: conn > Connected with a disk
        // below Inconsistent), e.g. not while our freshly attached disk still negotiates.
        if matches!(
            conn_req,
            Some(ConnState::StartingSyncS | ConnState::StartingSyncT)
        ) {
            if st.disk < DiskState::Inconsistent {
                code = rv::NO_LOCAL_DISK;
            } else if st.pdsk < DiskState::Inconsistent {
                code = rv::NO_REMOTE_DISK;
            }
        }
        let mut reply = [0u8; 4];
        reply.copy_from_slice(&code.to_be_bytes());
        if code < rv::SUCCESS {
            self.send(
                Socket::Meta,
                reply_cmd,
                if conn_wide { 0 } else { v },
                &reply,
            );
            return Ok(());
        }
        self.send(
            Socket::Meta,
            reply_cmd,
            if conn_wide { 0 } else { v },
            &reply,
        );
        if let Some(r) = peer_role {
            let vols: Vec<u16> = if conn_wide {
                self.devs.keys().copied().collect()
            } else {
                vec![v]
            };
            for x in vols {
                self.set_state(x, |s| s.peer = r);
            }
        }
        if let Some(dsk) = peer_disk {
            // The peer was forced UpToDate & Primary: consider resync (drbd_state.c).
            let d = &self.devs[&v];
            if d.st.disk == DiskState::Inconsistent && d.st.pdsk == DiskState::Inconsistent {
                self.devs.get_mut(&v).expect("exists").consider_resync = true;
            }
            self.set_state(v, |s| s.pdsk = dsk);
        }
        if let Some(dsk) = my_disk_req {
            if dsk == DiskState::Outdated && st.disk > DiskState::Outdated {
                self.set_state(v, |s| s.disk = DiskState::Outdated);
            }
        }
        match conn_req {
            Some(ConnState::Disconnecting) => {
                // Our side of a graceful disconnect: TearDown, then the peer closes the sockets.
                self.set_conn_all(ConnState::TearDown);
            }
            Some(ConnState::StartingSyncS) => self.begin_full_sync(v, ConnState::StartingSyncT),
            Some(ConnState::StartingSyncT) => self.begin_full_sync(v, ConnState::StartingSyncS),
            _ => {}
        }
        Ok(())
    }
}
