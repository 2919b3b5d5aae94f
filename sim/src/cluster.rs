//! The simulated cluster: two engines, their disks, the network, the clock, the workload and
//! the checkers, driven by one seed.
//!
//! Each node plays the daemon's part: it executes the engine's outputs on its simulated backing
//! device (data area at sector 0, internal meta-data at the end) and sockets, and feeds the
//! completions back. A crash drops the `Resource`, applies crash semantics to the disk, and later
//! re-creates the `Resource` from what the meta-data area holds (after `apply-al`).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use udrbd_engine::{
    AdminCommand, AfterSbPolicy, AttachedDisk, ConnState, DiskConfig, DiskState, Input, Instant,
    IoErrorKind, IoId, MetaLayout, Mutation, NetConfig, Output, Protocol, RequestId, RequestOp,
    Resource, ResourceConfig, Role, Socket, Volume, VolumeOnDisk,
};

use crate::checkers::{
    block_pattern, identify, BlockValue, Failure, FailureClass, Model, BLOCK_BYTES,
};
use crate::clock::NodeClock;
use crate::disk::{DiskFaults, DiskOp, DiskResult, SimDisk};
use crate::md::{self, Placement};
use crate::net::{Net, NetEvent, Sock};
use crate::options::{Options, Start, NODES};
use crate::prng::Prng;
use crate::workload::{Action, View, Workload};

const VOL: Volume = Volume(0);
const SECTORS_PER_BLOCK: u64 = BLOCK_BYTES / 512;

#[derive(Clone, Debug)]
enum Tag {
    Data(IoId),
    /// The flush that must precede a REQ_PREFLUSH write.
    PreFlush(IoId),
    Meta(IoId),
    MetaFlush(IoId),
}

struct MetaPending {
    remaining: usize,
    flush: bool,
    failed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub role: Option<Role>,
    pub conn: Option<ConnState>,
    pub disk: Option<DiskState>,
    pub pdsk: Option<DiskState>,
}

struct Node {
    disk: SimDisk<Tag>,
    engine: Option<Resource>,
    clock: NodeClock,
    incarnation: u64,
    meta_pending: BTreeMap<IoId, MetaPending>,
    preflush_waiting: BTreeMap<IoId, DiskOp>,
    /// Latest submitted bytes of each meta-data sector (for read-modify-write).
    meta_shadow: BTreeMap<u64, Vec<u8>>,
    restart_at_ns: Option<u64>,
    disk_errors: bool,
    /// Written by the upper layer as Primary since the last restart (for the crash checks).
    wrote_as_primary: bool,
    /// Blocks whose visible content changed on this node's disk since the last check.
    dirty_blocks: BTreeSet<u64>,
    /// Data writes submitted to the disk and not completed, as block ranges.
    pending_writes: BTreeMap<IoId, std::ops::Range<u64>>,
    /// Blocks of data writes submitted since the last check (a bit cleared too early shows
    /// while its write is still on the way).
    fresh_writes: BTreeSet<u64>,
    /// Blocks a crash of this node changed (lost or tore), checked against the AL at restart.
    crash_changed: Vec<u64>,
    crashed_as_primary: bool,
    logs: Vec<String>,
}

enum ReqKind {
    /// `replicating`: id of the connection that replicated writes at submission (0: none).
    Write {
        id: u64,
        blocks: Vec<u64>,
        replicating: u64,
    },
    Read {
        blocks: Vec<u64>,
    },
    Flush {
        gen: u64,
    },
}

struct Req {
    node: usize,
    kind: ReqKind,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub steps: u64,
    pub actions: u64,
    pub writes_completed: u64,
    pub reads_checked: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub resyncs_seen: u64,
    pub steady_checks: u64,
    pub split_brains_resolved: u64,
    /// Meta-data writes the engine asked for that were not whole sectors.
    pub unaligned_meta_writes: u64,
    pub sim_time_ns: u64,
}

impl Stats {
    /// Adds another run's counters (for sweep summaries).
    pub fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.actions += o.actions;
        self.writes_completed += o.writes_completed;
        self.reads_checked += o.reads_checked;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.resyncs_seen += o.resyncs_seen;
        self.steady_checks += o.steady_checks;
        self.split_brains_resolved += o.split_brains_resolved;
        self.unaligned_meta_writes += o.unaligned_meta_writes;
        self.sim_time_ns += o.sim_time_ns;
    }
}

/// Every map here is ordered: iteration order must not depend on a per-process hash seed, or a
/// seed would not replay.
pub struct Cluster {
    pub options: Options,
    mutation: Option<Mutation>,
    now_ns: u64,
    nodes: Vec<Node>,
    net: Net,
    placement: Placement,
    workload: Workload,
    model: Model,
    requests: BTreeMap<u64, Req>,
    busy: BTreeSet<u64>,
    next_request: u64,
    next_write_id: u64,
    next_action_ns: u64,
    liveness: bool,
    was_steady: bool,
    heal_prng: Prng,
    next_heal_ns: u64,
    liveness_since_ns: u64,
    /// Each node's current UUID when the pair was last in sync (or at creation).
    synced_uuid: [Option<u64>; NODES],
    split_brain_seen: bool,
    /// The handshake of the current connection: split brain expected, which sides decided, and
    /// the current UUIDs when the first side decided.
    handshake: Option<(bool, [bool; NODES], [Option<u64>; NODES])>,
    heal_connects: [u32; NODES],
    pub stats: Stats,
    /// Recent history, printed with a failure.
    pub trace: Vec<String>,
    pub trace_cap: usize,
}

impl Cluster {
    pub fn new(options: Options, mutation: Option<Mutation>) -> Result<Cluster, Failure> {
        let mut prng = Prng::new(options.seed ^ 0x5eed_c1a5_7e12_0000);
        let placement = Placement::internal(options.backing_sectors);
        let engine_layout = MetaLayout::internal(options.backing_sectors);
        let data_sectors = MetaLayout::internal_data_sectors(options.backing_sectors);
        if data_sectors != placement.data_sectors
            || engine_layout.md_offset_bytes != placement.md_offset_bytes
        {
            return Err(fail(FailureClass::Crash, "layout", format!(
                "engine layout {engine_layout:?} / {data_sectors} data sectors differs from the simulator's {placement:?}"
            ), 0));
        }
        let net = Net::new(options.net.clone(), prng.fork());
        let data_blocks = placement.data_sectors / SECTORS_PER_BLOCK;
        let workload = Workload::new(&options, data_blocks, prng.fork());
        let presynced_uuid = (options.start == Start::PreSynced).then(|| prng.next_u64() | 0x100);
        let mut nodes = Vec::with_capacity(NODES);
        for n in 0..NODES {
            let mut disk = SimDisk::new(
                options.backing_sectors * 512,
                options.disk[n].clone(),
                prng.fork(),
            );
            md::create_md(&mut disk, &placement, presynced_uuid);
            nodes.push(Node {
                disk,
                engine: None,
                clock: options.clock[n],
                incarnation: 0,
                meta_pending: BTreeMap::new(),
                preflush_waiting: BTreeMap::new(),
                meta_shadow: BTreeMap::new(),
                restart_at_ns: None,
                disk_errors: false,
                wrote_as_primary: false,
                dirty_blocks: BTreeSet::new(),
                pending_writes: BTreeMap::new(),
                fresh_writes: BTreeSet::new(),
                crash_changed: Vec::new(),
                crashed_as_primary: false,
                logs: Vec::new(),
            });
        }
        let mut c = Cluster {
            options,
            mutation,
            now_ns: 0,
            nodes,
            net,
            placement,
            workload,
            model: Model::default(),
            requests: BTreeMap::new(),
            busy: BTreeSet::new(),
            next_request: 1,
            next_write_id: 1,
            next_action_ns: 0,
            liveness: false,
            was_steady: false,
            heal_prng: prng.fork(),
            next_heal_ns: 0,
            liveness_since_ns: 0,
            synced_uuid: [None; NODES],
            split_brain_seen: false,
            handshake: None,
            heal_connects: [0; NODES],
            stats: Stats::default(),
            trace: Vec::new(),
            trace_cap: 400,
        };
        for n in 0..NODES {
            c.restart(n)?;
        }
        if c.options.start == Start::ForcedFullSync {
            c.admin(0, AdminCommand::Primary { force: true })?;
        }
        Ok(c)
    }

    /// Runs the safety phase, then the liveness phase.
    pub fn run(&mut self) -> Result<Stats, Failure> {
        while self.stats.actions < u64::from(self.options.actions) {
            self.step()?;
        }
        self.begin_liveness()?;
        let deadline = self.now_ns + self.options.liveness_budget_ns;
        loop {
            if self.converged() {
                self.check_steady(true)?;
                self.stats.sim_time_ns = self.now_ns;
                return Ok(self.stats.clone());
            }
            if self.now_ns > deadline {
                return Err(self.fail(
                    FailureClass::Liveness,
                    "converge",
                    format!(
                        "not Connected UpToDate/UpToDate after {} s of healing: {}",
                        self.options.liveness_budget_ns / 1_000_000_000,
                        self.describe()
                    ),
                ));
            }
            if !self.step()? {
                return Err(self.fail(
                    FailureClass::Liveness,
                    "stuck",
                    format!("nothing left to happen: {}", self.describe()),
                ));
            }
        }
    }

    // ---- the event loop ----

    /// Advances to the next event and processes it. Returns false if nothing can ever happen.
    fn step(&mut self) -> Result<bool, Failure> {
        self.stats.steps += 1;
        if self.stats.steps > self.options.max_steps {
            return Err(self.fail(
                FailureClass::Liveness,
                "steps",
                format!(
                    "more than {} steps: {}",
                    self.options.max_steps,
                    self.describe()
                ),
            ));
        }
        let mut next: Option<(u64, u8, usize)> = None;
        let mut consider = |t: Option<u64>, kind: u8, n: usize| {
            if let Some(t) = t {
                if next.map_or(true, |(nt, nk, nn)| (t, kind, n) < (nt, nk, nn)) {
                    next = Some((t, kind, n));
                }
            }
        };
        for (n, node) in self.nodes.iter().enumerate() {
            consider(node.restart_at_ns, 0, n);
            consider(node.disk.next_completion_ns(), 1, n);
            let timer = node
                .engine
                .as_ref()
                .and_then(|e| e.poll_timeout())
                .map(|t| node.clock.global_at(t.0));
            consider(timer, 3, n);
        }
        consider(self.net.next_event_ns(), 2, 0);
        if self.liveness {
            consider(Some(self.next_heal_ns), 4, 0);
        } else {
            consider(Some(self.next_action_ns), 4, 0);
        }
        let Some((t, kind, n)) = next else {
            return Ok(false);
        };
        self.now_ns = self.now_ns.max(t);
        match kind {
            0 => {
                self.nodes[n].restart_at_ns = None;
                self.restart(n)?;
            }
            1 => self.disk_completions(n)?,
            2 => {
                if let Some((to, ev)) = self.net.poll(self.now_ns) {
                    self.net_event(to, ev)?;
                }
            }
            3 => {
                let local = self.local_now(n);
                self.with_engine(n, |e| e.handle_timeout(local))?;
                self.drain(n)?;
            }
            _ if self.liveness => self.heal_tick()?,
            _ => {
                self.next_action_ns = self.now_ns + self.workload.gap_ns(&self.options);
                self.stats.actions += 1;
                self.act()?;
            }
        }
        self.check_step()?;
        Ok(true)
    }

    fn local_now(&self, n: usize) -> Instant {
        Instant(self.nodes[n].clock.local(self.now_ns))
    }

    fn with_engine<R>(
        &mut self,
        n: usize,
        f: impl FnOnce(&mut Resource) -> R,
    ) -> Result<Option<R>, Failure> {
        let Some(engine) = self.nodes[n].engine.as_mut() else {
            return Ok(None);
        };
        match catch_unwind(AssertUnwindSafe(|| f(engine))) {
            Ok(r) => Ok(Some(r)),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(self.fail(
                    FailureClass::Crash,
                    "panic",
                    format!("engine on node {n} panicked: {msg}"),
                ))
            }
        }
    }

    fn handle(&mut self, n: usize, input: Input) -> Result<(), Failure> {
        let now = self.local_now(n);
        self.with_engine(n, |e| e.handle(now, input))?;
        self.drain(n)
    }

    fn admin(&mut self, n: usize, cmd: AdminCommand) -> Result<(), Failure> {
        self.note(format!("node {n}: admin {cmd:?}"));
        self.handle(n, Input::Admin(cmd))
    }

    fn disk_completions(&mut self, n: usize) -> Result<(), Failure> {
        let done = self.nodes[n].disk.poll(self.now_ns);
        for c in done {
            if self.nodes[n].engine.is_none() {
                break;
            }
            match c.tag {
                Tag::Data(io) => {
                    if let Some(r) = self.nodes[n].pending_writes.remove(&io) {
                        if self.trace_cap > 400 {
                            self.note(format!(
                                "node {n}: disk: write of blocks {r:?} done: {:?}",
                                c.result
                            ));
                        }
                        self.nodes[n].dirty_blocks.extend(r);
                    }
                    let result = match c.result {
                        DiskResult::Read(bytes) => Ok(Some(Bytes::from(bytes))),
                        DiskResult::Written | DiskResult::Flushed => Ok(None),
                        DiskResult::Error => Err(IoErrorKind::Io),
                    };
                    self.handle(n, Input::DiskDone { io, result })?;
                }
                Tag::PreFlush(io) => {
                    let Some(op) = self.nodes[n].preflush_waiting.remove(&io) else {
                        continue;
                    };
                    if c.result == DiskResult::Error {
                        self.handle(
                            n,
                            Input::DiskDone {
                                io,
                                result: Err(IoErrorKind::Io),
                            },
                        )?;
                    } else {
                        self.submit_data(n, io, op);
                    }
                }
                Tag::Meta(io) => {
                    let Some(p) = self.nodes[n].meta_pending.get_mut(&io) else {
                        continue;
                    };
                    p.remaining -= 1;
                    p.failed |= c.result == DiskResult::Error;
                    if p.remaining == 0 {
                        let p = self.nodes[n]
                            .meta_pending
                            .remove(&io)
                            .expect("present above");
                        if p.failed {
                            self.handle(
                                n,
                                Input::MetaDone {
                                    io,
                                    result: Err(IoErrorKind::Io),
                                },
                            )?;
                        } else if p.flush {
                            self.nodes[n].disk.submit(
                                self.now_ns,
                                Tag::MetaFlush(io),
                                DiskOp::Flush,
                            );
                        } else {
                            self.handle(n, Input::MetaDone { io, result: Ok(()) })?;
                        }
                    }
                }
                Tag::MetaFlush(io) => {
                    let result = if c.result == DiskResult::Error {
                        Err(IoErrorKind::Io)
                    } else {
                        Ok(())
                    };
                    self.handle(n, Input::MetaDone { io, result })?;
                }
            }
        }
        Ok(())
    }

    fn submit_data(&mut self, n: usize, io: IoId, op: DiskOp) {
        if let DiskOp::Write { offset, data, .. } = &op {
            let first = offset / BLOCK_BYTES;
            let last = (offset + data.len() as u64).div_ceil(BLOCK_BYTES);
            self.nodes[n].pending_writes.insert(io, first..last);
            self.nodes[n].fresh_writes.extend(first..last);
        }
        self.nodes[n].disk.submit(self.now_ns, Tag::Data(io), op);
    }

    fn net_event(&mut self, to: usize, ev: NetEvent) -> Result<(), Failure> {
        if self.nodes[to].engine.is_none() {
            return Ok(());
        }
        match &ev {
            NetEvent::Received { sock, bytes } => {
                if self.trace_cap > 400 {
                    self.note(format!("node {to}: net: {} bytes on {sock:?}", bytes.len()));
                }
            }
            other => self.note(format!("node {to}: net: {other:?}")),
        }
        let input = match ev {
            // The node that accepted the meta socket resolves conflicts; we let node 0 accept.
            NetEvent::Connected => {
                self.handshake = None;
                Input::Connected {
                    resolve_conflicts: to == 0,
                }
            }
            NetEvent::Received { sock, bytes } => {
                let socket = if sock == Sock::Data {
                    Socket::Data
                } else {
                    Socket::Meta
                };
                Input::Received {
                    socket,
                    bytes: Bytes::from(bytes),
                }
            }
            NetEvent::ConnectionLost => Input::ConnectionLost { timed_out: false },
        };
        self.handle(to, input)
    }

    /// Executes everything the engine on node `n` asked for.
    fn drain(&mut self, n: usize) -> Result<(), Failure> {
        loop {
            let Some(out) = self.with_engine(n, |e| e.poll_output())?.flatten() else {
                return Ok(());
            };
            self.output(n, out)?;
        }
    }

    fn output(&mut self, n: usize, out: Output) -> Result<(), Failure> {
        let data_bytes = self.placement.data_sectors * 512;
        match out {
            Output::Send { socket, bytes } => {
                let sock = if socket == Socket::Data {
                    Sock::Data
                } else {
                    Sock::Meta
                };
                self.net.send(self.now_ns, n, sock, bytes.to_vec());
            }
            Output::Connect => {
                self.note(format!("node {n}: out: Connect"));
                self.net.want_connect(self.now_ns, n, true);
            }
            Output::Disconnect => {
                self.note(format!("node {n}: out: Disconnect"));
                self.net.close(self.now_ns, n);
            }
            Output::DiskRead {
                io,
                sector,
                len_bytes,
                ..
            } => {
                self.check_data_io(n, sector, u64::from(len_bytes), data_bytes)?;
                self.submit_data(
                    n,
                    io,
                    DiskOp::Read {
                        offset: sector * 512,
                        len: u64::from(len_bytes),
                    },
                );
            }
            Output::DiskWrite {
                io,
                sector,
                data,
                fua,
                preflush,
                ..
            } => {
                self.check_data_io(n, sector, data.len() as u64, data_bytes)?;
                let op = DiskOp::Write {
                    offset: sector * 512,
                    data: data.to_vec(),
                    fua,
                };
                if preflush {
                    self.nodes[n].preflush_waiting.insert(io, op);
                    self.nodes[n]
                        .disk
                        .submit(self.now_ns, Tag::PreFlush(io), DiskOp::Flush);
                } else {
                    self.submit_data(n, io, op);
                }
            }
            Output::DiskFlush { io, .. } => {
                self.nodes[n]
                    .disk
                    .submit(self.now_ns, Tag::Data(io), DiskOp::Flush)
            }
            Output::DiskDiscard {
                io,
                sector,
                len_bytes,
                ..
            } => {
                self.check_data_io(n, sector, u64::from(len_bytes), data_bytes)?;
                let op = DiskOp::Write {
                    offset: sector * 512,
                    data: vec![0; len_bytes as usize],
                    fua: false,
                };
                self.submit_data(n, io, op);
            }
            Output::WriteMeta {
                io, writes, flush, ..
            } => {
                let range = self.placement.meta_range();
                for w in &writes {
                    let end = w.offset_bytes + w.data.len() as u64;
                    if w.offset_bytes < range.start || end > range.end {
                        return Err(self.fail(FailureClass::Crash, "meta-io", format!(
                            "node {n}: meta-data write at {:#x}+{} outside the meta-data area {range:x?} or unaligned",
                            w.offset_bytes, w.data.len()
                        )));
                    }
                }
                if writes.is_empty() {
                    if flush {
                        self.nodes[n]
                            .disk
                            .submit(self.now_ns, Tag::MetaFlush(io), DiskOp::Flush);
                    } else {
                        self.handle(n, Input::MetaDone { io, result: Ok(()) })?;
                    }
                    return Ok(());
                }
                self.nodes[n].meta_pending.insert(
                    io,
                    MetaPending {
                        remaining: writes.len(),
                        flush,
                        failed: false,
                    },
                );
                for w in writes {
                    // A sub-sector write is done the way a daemon on O_DIRECT must: read, modify,
                    // write whole sectors (the read sees what is visible now).
                    let (offset, data) = self.sector_aligned(n, w.offset_bytes, &w.data);
                    let op = DiskOp::Write {
                        offset,
                        data,
                        fua: false,
                    };
                    self.nodes[n].disk.submit(self.now_ns, Tag::Meta(io), op);
                }
            }
            Output::Complete { request, result } => {
                if self.trace_cap > 400 {
                    self.note(format!(
                        "node {n}: complete request {} ok={}",
                        request.0,
                        result.is_ok()
                    ));
                }
                self.complete(n, request, result.map_err(|e| format!("{e:?}")))?
            }
            Output::AdminDone { command, result } => {
                self.note(format!("node {n}: admin {command:?} -> {result:?}"));
            }
            Output::StateChanged(change) => {
                if change.new.conn.is_resync() && !change.old.conn.is_resync() {
                    self.stats.resyncs_seen += 1;
                }
                self.note(format!("node {n}: {}", change.log_line()));
                let connected = change.new.conn.is_established();
                if change.new.disk == DiskState::Failed && change.old.disk != DiskState::Failed {
                    // A failing disk takes its data with it. Unless the peer is connected and
                    // UpToDate, promised writes may now exist nowhere (a double fault): the
                    // model stops judging values until the pair is in sync again.
                    let p = self.snapshot(1 - n);
                    let peer_safe =
                        p.conn == Some(ConnState::Connected) && p.disk == Some(DiskState::UpToDate);
                    if !peer_safe && !self.model.diverged {
                        self.model.diverged = true;
                        self.note(format!("model: node {n}'s disk failed without an UpToDate peer; values unjudged until in sync"));
                    }
                }
                if connected && change.new.role == Role::Primary && change.old.role != Role::Primary
                {
                    self.check_primary_data(n, "promote-from-older")?;
                }
                // "Older than its peer's": only a peer with a disk has data to compare with.
                let peer_has_disk = change.new.pdsk >= DiskState::Inconsistent
                    && change.new.pdsk != DiskState::DUnknown;
                if connected
                    && peer_has_disk
                    && change.new.disk == DiskState::UpToDate
                    && change.old.disk != DiskState::UpToDate
                {
                    self.check_node_data(n, "uptodate-from-older")?;
                }
                if change.old.conn == ConnState::WFReportParams
                    && change.new.conn >= ConnState::Connected
                {
                    self.handshake_decided(n)?;
                }
                if change.new.conn.is_resync() && !change.old.conn.is_resync() {
                    // Starting a resync (after any handshake, also one an attach started) hands
                    // the target the source's generation: the two agree on UUIDs from here.
                    if self.handshake.is_none() {
                        self.note_agreed_uuids();
                    }
                    // Everything that differs must be marked on the side that starts resyncing.
                    let blocks: BTreeSet<u64> = self.model.blocks().collect();
                    self.check_marked(&blocks)?;
                }
                let was_target = matches!(
                    change.old.conn,
                    ConnState::SyncTarget | ConnState::PausedSyncT
                );
                if was_target
                    && change.new.conn == ConnState::Connected
                    && change.new.disk == DiskState::UpToDate
                {
                    self.check_identical(n, "resync-identical")?;
                    // The target took over the source's UUIDs: the two agree again.
                    if !self.split_brain_seen {
                        self.note_agreed_uuids();
                    }
                }
            }
            Output::Log { message, .. } => {
                if message.contains("Split-Brain detected") {
                    // Whatever the after-sb policy decides, one side's writes may be discarded:
                    // that is the configured outcome, not a lost write.
                    self.split_brain_seen = true;
                    self.model.diverged = true;
                }
                let node = &mut self.nodes[n];
                if node.logs.len() > 200 {
                    node.logs.remove(0);
                }
                node.logs.push(message.clone());
                self.note(format!("node {n}: log: {message}"));
            }
        }
        Ok(())
    }

    fn sector_aligned(&mut self, n: usize, offset: u64, data: &[u8]) -> (u64, Vec<u8>) {
        let start = offset / 512 * 512;
        let end = (offset + data.len() as u64).div_ceil(512) * 512;
        if start == offset && end == offset + data.len() as u64 {
            for (i, chunk) in data.chunks(512).enumerate() {
                self.nodes[n]
                    .meta_shadow
                    .insert(start / 512 + i as u64, chunk.to_vec());
            }
            return (offset, data.to_vec());
        }
        self.stats.unaligned_meta_writes += 1;
        // Base on what was last submitted for each sector, not what has landed, so two
        // overlapping sub-sector writes in flight do not undo each other.
        let mut buf = self.nodes[n].disk.read_visible(start, end - start);
        for (i, chunk) in buf.chunks_mut(512).enumerate() {
            if let Some(s) = self.nodes[n].meta_shadow.get(&(start / 512 + i as u64)) {
                chunk.copy_from_slice(s);
            }
        }
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(data);
        for (i, chunk) in buf.chunks(512).enumerate() {
            self.nodes[n]
                .meta_shadow
                .insert(start / 512 + i as u64, chunk.to_vec());
        }
        (start, buf)
    }

    fn check_data_io(
        &self,
        n: usize,
        sector: u64,
        len: u64,
        data_bytes: u64,
    ) -> Result<(), Failure> {
        if sector * 512 + len > data_bytes || len % 512 != 0 || len == 0 {
            return Err(self.fail(FailureClass::Crash, "data-io", format!(
                "node {n}: data I/O at sector {sector} len {len} outside the data area ({data_bytes} bytes) or unaligned"
            )));
        }
        Ok(())
    }
}

/// Connection states in which a Primary sends its writes to the peer (spec §7.3: not in
/// WFBitMapS or Ahead, where only P_OUT_OF_SYNC goes out).
fn replicates(c: ConnState) -> bool {
    matches!(
        c,
        ConnState::Connected
            | ConnState::SyncSource
            | ConnState::SyncTarget
            | ConnState::PausedSyncS
            | ConnState::PausedSyncT
            | ConnState::WFBitMapT
            | ConnState::WFSyncUUID
            | ConnState::VerifyS
            | ConnState::VerifyT
    )
}

pub(crate) fn fail(
    class: FailureClass,
    check: &'static str,
    detail: String,
    at_ns: u64,
) -> Failure {
    Failure {
        class,
        check,
        detail,
        at_ns,
    }
}

impl Cluster {
    // ---- node life cycle ----

    fn engine_config(&self, n: usize) -> ResourceConfig {
        let net = NetConfig {
            protocol: Protocol::C,
            after_sb_0pri: AfterSbPolicy::from_u32(self.options.after_sb_0pri)
                .unwrap_or(AfterSbPolicy::Disconnect),
            ..NetConfig::default()
        };
        let disk = DiskConfig {
            resync_rate_kib: self.options.resync_rate_kib,
            c_plan_ahead_ds: 0,
            ..DiskConfig::default()
        };
        ResourceConfig {
            name: "r0".into(),
            net,
            disk,
            rng_seed: self.options.seed
                ^ ((n as u64 + 1) << 56)
                ^ (self.nodes[n].incarnation << 40),
            volumes: vec![VOL],
            connect_on_start: true,
            max_bio_size: 1 << 20,
            mutation: self.mutation,
        }
    }

    /// Attach from what the disk holds (apply-al first, as `drbdadm up` does) and start.
    fn restart(&mut self, n: usize) -> Result<(), Failure> {
        self.stats.restarts += 1;
        self.nodes[n].incarnation += 1;
        let p = self.placement;
        let before = self.nodes[n].disk.read_visible(p.md_offset_bytes, 4096);
        let flags_before = md::Superblock::decode(&before)
            .map(|s| s.flags)
            .unwrap_or(0);
        let attached = match md::apply_al_and_read(&mut self.nodes[n].disk, &p) {
            Ok(a) => a,
            Err(e) => {
                return Err(self.fail(
                    FailureClass::Correctness,
                    "meta-data",
                    format!("node {n}: meta-data unreadable after crash: {e}"),
                ))
            }
        };
        if self.nodes[n].crashed_as_primary {
            self.check_crash_recovery(n, flags_before, &attached)?;
        }
        let sb = &attached.superblock;
        self.synced_uuid[n].get_or_insert(attached.superblock.uuids[0] & !1);
        let disk = self.attached_disk(&attached);
        let config = self.engine_config(n);
        let now = self.local_now(n);
        let created = catch_unwind(AssertUnwindSafe(|| {
            Resource::new(
                config,
                vec![VolumeOnDisk {
                    volume: VOL,
                    disk: Some(disk),
                }],
                now,
            )
        }));
        let engine = match created {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                return Err(self.fail(FailureClass::Correctness, "meta-data", format!(
                    "node {n}: engine refused the meta-data left on disk (flags {:#x}, uuids {:x?}): {e}",
                    sb.flags, sb.uuids
                )))
            }
            Err(_) => return Err(self.fail(FailureClass::Crash, "panic", format!("node {n}: Resource::new panicked"))),
        };
        self.note(format!(
            "node {n}: started (incarnation {}), flags {:#x} uuids {:x?}, {} bits set",
            self.nodes[n].incarnation,
            sb.flags,
            sb.uuids,
            attached
                .bitmap_words
                .iter()
                .map(|w| w.count_ones())
                .sum::<u32>()
        ));
        let node = &mut self.nodes[n];
        node.engine = Some(engine);
        node.wrote_as_primary = false;
        node.crashed_as_primary = false;
        node.crash_changed.clear();
        // No data check here: with `fencing dont-care` (the default) a rebooted node whose meta-data
        // says Consistent + WasUpToDate attaches UpToDate even if its peer moved on while they
        // were apart (spec drbd-metadata.md §3). What must hold is checked once they talk.
        self.drain(n)?;
        // What the node brought back from its disk must be marked where it differs.
        let blocks: BTreeSet<u64> = self.model.blocks().collect();
        self.check_marked(&blocks)
    }

    fn attached_disk(&self, attached: &md::Attached) -> AttachedDisk {
        let p = self.placement;
        let sb = &attached.superblock;
        AttachedDisk {
            size_sectors: p.data_sectors,
            uuids: sb.uuids,
            flags: sb.flags,
            la_size_sect: sb.la_size_sect,
            device_uuid: sb.device_uuid,
            la_peer_max_bio_size: sb.la_peer_max_bio_size,
            bitmap: attached.bitmap_words.clone(),
            layout: MetaLayout::internal(p.backing_sectors),
        }
    }

    fn crash(&mut self, n: usize) -> Result<(), Failure> {
        self.stats.crashes += 1;
        let was_primary_role = self.snapshot(n).role == Some(Role::Primary);
        let was_primary = was_primary_role && self.nodes[n].wrote_as_primary;
        // Remember what the upper layer's blocks held, to see what the crash changed.
        let blocks: Vec<u64> = self.model.blocks().collect();
        let before: Vec<Vec<u8>> = blocks.iter().map(|b| self.read_block(n, *b)).collect();
        self.note(format!(
            "node {n}: CRASH (primary with writes: {was_primary})"
        ));
        let node = &mut self.nodes[n];
        node.engine = None;
        node.disk.crash();
        node.meta_pending.clear();
        node.preflush_waiting.clear();
        node.meta_shadow.clear();
        node.pending_writes.clear();
        node.fresh_writes.clear();
        node.crashed_as_primary = was_primary;
        let changed: Vec<u64> = blocks
            .iter()
            .zip(&before)
            .filter(|(b, old)| self.read_block(n, **b) != **old)
            .map(|(b, _)| *b)
            .collect();
        self.nodes[n].crash_changed = changed;
        let lost: Vec<(u64, Req)> = {
            let ids: Vec<u64> = self
                .requests
                .iter()
                .filter(|(_, r)| r.node == n)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| self.requests.remove(&id).map(|r| (id, r)))
                .collect()
        };
        for (_, r) in lost {
            match r.kind {
                ReqKind::Write { id, blocks, .. } => {
                    self.model.write_abandoned(id, &blocks);
                    self.release(&blocks);
                }
                ReqKind::Read { blocks } => self.release(&blocks),
                ReqKind::Flush { .. } => {}
            }
        }
        // The promised data survives a Secondary's crash on the Primary; any other crash may take
        // unflushed writes with it.
        let other = 1 - n;
        let primary_survives =
            !was_primary_role && self.snapshot(other).role == Some(Role::Primary);
        if !primary_survives {
            self.model.crashed();
        }
        // Its sockets die with it; the peer notices after a short while.
        self.net.cut(self.now_ns);
        // The dead incarnation is not told; the next one starts without that connection.
        self.net.close(self.now_ns, n);
        let delay = self.heal_prng.range(1, self.options.restart_delay_max_ns);
        self.nodes[n].restart_at_ns = Some(self.now_ns + delay);
        Ok(())
    }

    fn release(&mut self, blocks: &[u64]) {
        for b in blocks {
            self.busy.remove(b);
        }
    }

    pub fn snapshot(&self, n: usize) -> Snapshot {
        let Some(e) = self.nodes[n].engine.as_ref() else {
            return Snapshot::default();
        };
        Snapshot {
            role: Some(e.role()),
            conn: Some(e.conn_state()),
            disk: e.disk_state(VOL),
            pdsk: e.peer_disk_state(VOL),
        }
    }

    fn read_block(&self, n: usize, block: u64) -> Vec<u8> {
        self.nodes[n]
            .disk
            .read_visible(block * BLOCK_BYTES, BLOCK_BYTES)
    }

    // ---- the workload ----

    fn act(&mut self) -> Result<(), Failure> {
        let mut current = [false; NODES];
        for (n, c) in current.iter_mut().enumerate() {
            *c = self.nodes[n].engine.is_some() && self.data_matches(n).is_none();
        }
        let up: [bool; NODES] = std::array::from_fn(|n| self.nodes[n].engine.is_some());
        let primary: [bool; NODES] =
            std::array::from_fn(|n| self.snapshot(n).role == Some(Role::Primary));
        let disk_errors: [bool; NODES] = std::array::from_fn(|n| self.nodes[n].disk_errors);
        let view = View {
            up,
            primary,
            current,
            in_flight: self.requests.len(),
            busy: &self.busy,
            partitioned: self.net.is_partitioned(),
            disk_errors,
            diskless: std::array::from_fn(|n| {
                self.snapshot(n).disk == Some(DiskState::Diskless)
                    && self.nodes[n].disk.in_flight_len() == 0
                    && self.nodes[n].meta_pending.is_empty()
            }),
            in_sync_secondary: std::array::from_fn(|n| {
                let s = self.snapshot(n);
                s.role == Some(Role::Secondary)
                    && s.conn == Some(ConnState::Connected)
                    && s.disk == Some(DiskState::UpToDate)
                    && s.pdsk == Some(DiskState::UpToDate)
            }),
        };
        let action = self.workload.next(&self.options, &view);
        self.do_action(action, current)
    }

    fn do_action(&mut self, action: Action, current: [bool; NODES]) -> Result<(), Failure> {
        if action != Action::Idle {
            self.note(format!("action {action:?}"));
        }
        match action {
            Action::Write {
                node,
                block,
                count,
                fua,
            } => {
                let id = self.next_write_id;
                self.note(format!("write {id} is request {}", self.next_request));
                self.next_write_id += 1;
                let blocks: Vec<u64> = (block..block + count).collect();
                let mut data = Vec::with_capacity((count * BLOCK_BYTES) as usize);
                for b in &blocks {
                    data.extend_from_slice(&block_pattern(id, *b));
                }
                self.model.write_issued(id, &blocks);
                self.busy.extend(blocks.iter().copied());
                self.nodes[node].wrote_as_primary = true;
                // Which connection it may be replicated over (0: none).
                let replicating =
                    if self.snapshot(node).conn.is_some_and(replicates) && self.net.is_up() {
                        self.net.connection_id()
                    } else {
                        0
                    };
                let rid = self.new_request(
                    node,
                    ReqKind::Write {
                        id,
                        blocks,
                        replicating,
                    },
                );
                let op = RequestOp::Write {
                    sector: block * SECTORS_PER_BLOCK,
                    data: Bytes::from(data),
                    fua,
                    preflush: self.workload.preflush(&self.options),
                };
                self.handle(
                    node,
                    Input::Request {
                        id: rid,
                        volume: VOL,
                        op,
                    },
                )?;
            }
            Action::Read { node, block, count } => {
                let blocks: Vec<u64> = (block..block + count).collect();
                self.busy.extend(blocks.iter().copied());
                let rid = self.new_request(node, ReqKind::Read { blocks });
                let op = RequestOp::Read {
                    sector: block * SECTORS_PER_BLOCK,
                    len_bytes: (count * BLOCK_BYTES) as u32,
                };
                self.handle(
                    node,
                    Input::Request {
                        id: rid,
                        volume: VOL,
                        op,
                    },
                )?;
            }
            Action::Flush { node } => {
                let gen = self.model.flush_issued();
                let rid = self.new_request(node, ReqKind::Flush { gen });
                self.handle(
                    node,
                    Input::Request {
                        id: rid,
                        volume: VOL,
                        op: RequestOp::Flush,
                    },
                )?;
            }
            Action::Promote { node } => {
                if !current[node] {
                    // A deliberate user error: Primary from data that misses acknowledged writes.
                    self.model.diverged = true;
                }
                self.admin(node, AdminCommand::Primary { force: false })?;
            }
            Action::Demote { node } => self.admin(node, AdminCommand::Secondary)?,
            Action::AdminDisconnect { node } => {
                self.admin(node, AdminCommand::Disconnect { force: false })?
            }
            Action::AdminConnect { node } => {
                if self.snapshot(node).conn == Some(ConnState::StandAlone) {
                    self.admin(
                        node,
                        AdminCommand::Connect {
                            discard_my_data: false,
                        },
                    )?;
                }
            }
            Action::Cut => self.net.cut(self.now_ns),
            Action::Partition { on } => self.net.set_partitioned(self.now_ns, on),
            Action::Crash { node } => self.crash(node)?,
            Action::DiskErrors { node, on } => {
                self.nodes[node].disk_errors = on;
                let ppm = if on { self.options.disk_error_ppm } else { 0 };
                let faults = DiskFaults {
                    read_error_ppm: ppm,
                    write_error_ppm: ppm,
                    ..self.options.disk[node].clone()
                };
                self.nodes[node].disk.set_faults(faults);
            }
            Action::Idle => {}
            Action::Discard { node, block, count } => {
                // Discarded blocks read back as zeros, which the model calls write 0.
                let blocks: Vec<u64> = (block..block + count).collect();
                self.model.write_issued(0, &blocks);
                self.busy.extend(blocks.iter().copied());
                let replicating =
                    if self.snapshot(node).conn.is_some_and(replicates) && self.net.is_up() {
                        self.net.connection_id()
                    } else {
                        0
                    };
                let rid = self.new_request(
                    node,
                    ReqKind::Write {
                        id: 0,
                        blocks,
                        replicating,
                    },
                );
                let op = RequestOp::Discard {
                    sector: block * SECTORS_PER_BLOCK,
                    len_bytes: (count * BLOCK_BYTES) as u32,
                };
                self.handle(
                    node,
                    Input::Request {
                        id: rid,
                        volume: VOL,
                        op,
                    },
                )?;
            }
            Action::Invalidate { node } => {
                self.admin(node, AdminCommand::Invalidate { volume: VOL })?
            }
            Action::Detach { node } => self.admin(node, AdminCommand::Detach { volume: VOL })?,
            Action::Attach { node } => {
                let p = self.placement;
                let attached = match md::apply_al_and_read(&mut self.nodes[node].disk, &p) {
                    Ok(a) => a,
                    Err(e) => {
                        return Err(self.fail(
                            FailureClass::Correctness,
                            "meta-data",
                            format!("node {node}: meta-data unreadable at attach: {e}"),
                        ))
                    }
                };
                let disk = self.attached_disk(&attached);
                self.admin(
                    node,
                    AdminCommand::Attach {
                        volume: VOL,
                        disk: Box::new(disk),
                    },
                )?;
                let blocks: BTreeSet<u64> = self.model.blocks().collect();
                self.check_marked(&blocks)?;
            }
        }
        Ok(())
    }

    fn new_request(&mut self, node: usize, kind: ReqKind) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, Req { node, kind });
        RequestId(id)
    }

    fn complete(
        &mut self,
        n: usize,
        request: RequestId,
        result: Result<Option<Bytes>, String>,
    ) -> Result<(), Failure> {
        let Some(req) = self.requests.remove(&request.0) else {
            return Err(self.fail(
                FailureClass::Crash,
                "complete",
                format!("node {n}: completion of unknown request {}", request.0),
            ));
        };
        if req.node != n {
            return Err(self.fail(
                FailureClass::Crash,
                "complete",
                format!("node {n}: completed a request of node {}", req.node),
            ));
        }
        match req.kind {
            ReqKind::Write {
                id,
                blocks,
                replicating,
            } => {
                self.release(&blocks);
                let ok = result.is_ok();
                self.model.write_completed(id, &blocks, ok);
                if ok {
                    self.stats.writes_completed += 1;
                    self.check_acked_write(n, id, &blocks, replicating)?;
                }
            }
            ReqKind::Read { blocks } => {
                self.release(&blocks);
                if let Ok(Some(data)) = result {
                    self.check_read(n, &blocks, &data)?;
                }
            }
            ReqKind::Flush { gen } => {
                if result.is_ok() {
                    self.model.flush_completed(gen);
                }
            }
        }
        Ok(())
    }
}

impl Cluster {
    // ---- checkers ----

    /// Cheap checks after every step.
    fn check_step(&mut self) -> Result<(), Failure> {
        let dirty: [BTreeSet<u64>; NODES] =
            std::array::from_fn(|n| std::mem::take(&mut self.nodes[n].dirty_blocks));
        self.check_sync_direction()?;
        let mut watch: BTreeSet<u64> = dirty.iter().flatten().copied().collect();
        for node in &mut self.nodes {
            watch.append(&mut node.fresh_writes);
        }
        self.check_marked(&watch)?;
        // The Primary's data holds every acknowledged write (only blocks its disk changed).
        for (n, dirty) in dirty.into_iter().enumerate() {
            let s = self.snapshot(n);
            if self.model.diverged
                || s.role != Some(Role::Primary)
                || s.disk != Some(DiskState::UpToDate)
            {
                continue;
            }
            for b in dirty {
                if self.model.in_flight(b) || self.busy.contains(&b) {
                    continue;
                }
                let data = self.read_block(n, b);
                let v = identify(&data, b);
                if !self.model.allows_data(b, &data) {
                    return Err(self.fail(
                        FailureClass::Correctness,
                        "primary-data",
                        format!(
                            "node {n} (Primary, UpToDate) block {b} holds {v:?}, expected {}",
                            self.model.expected(b)
                        ),
                    ));
                }
            }
        }
        let steady = self.steady();
        if steady && !self.was_steady {
            self.split_brain_seen = false;
            for n in 0..NODES {
                let uuid = self.nodes[n]
                    .engine
                    .as_ref()
                    .and_then(|e| e.uuids(VOL))
                    .map(|u| u[0] & !1);
                self.synced_uuid[n] = uuid.or(self.synced_uuid[n]);
            }
            self.check_steady(false)?;
        }
        self.was_steady = steady;
        Ok(())
    }

    /// The two sides never both think they are the sync source (or both the target): each
    /// side's uuid_compare must come out as the other's mirror image (spec §10.2).
    fn check_sync_direction(&self) -> Result<(), Failure> {
        if !self.net.is_up() {
            return Ok(());
        }
        let c: [Option<ConnState>; NODES] = std::array::from_fn(|n| self.snapshot(n).conn);
        let source = |c: Option<ConnState>| {
            matches!(
                c,
                Some(ConnState::WFBitMapS | ConnState::SyncSource | ConnState::PausedSyncS)
            )
        };
        let target = |c: Option<ConnState>| {
            matches!(
                c,
                Some(
                    ConnState::WFBitMapT
                        | ConnState::WFSyncUUID
                        | ConnState::SyncTarget
                        | ConnState::PausedSyncT
                )
            )
        };
        if (source(c[0]) && source(c[1])) || (target(c[0]) && target(c[1])) {
            return Err(self.fail(
                FailureClass::Correctness,
                "sync-direction",
                format!(
                    "both nodes chose the same sync direction: {:?} / {:?}",
                    c[0], c[1]
                ),
            ));
        }
        Ok(())
    }

    /// A block that differs between the two disks is marked out of sync: by a node in a resync
    /// state itself (it drives or serves the resync from its bitmap), otherwise by at least one
    /// node. Blocks with upper-layer requests in flight are in motion and skipped, and so is the
    /// moment between a crash and the survivor noticing the lost connection.
    fn check_marked(&self, blocks: &BTreeSet<u64>) -> Result<(), Failure> {
        if blocks.is_empty() || self.nodes.iter().any(|n| n.engine.is_none()) {
            return Ok(());
        }
        let s: [Snapshot; NODES] = std::array::from_fn(|n| self.snapshot(n));
        let unsettled =
            s.iter().any(|x| x.conn.is_some_and(|c| c.is_established())) && !self.net.is_up();
        if unsettled {
            return Ok(());
        }
        let data_blocks = self.placement.data_sectors / SECTORS_PER_BLOCK;
        for &b in blocks
            .iter()
            .filter(|b| **b < data_blocks && !self.busy.contains(b))
        {
            if self.nodes[0].disk.same_visible(
                &self.nodes[1].disk,
                b * SECTORS_PER_BLOCK,
                SECTORS_PER_BLOCK,
            ) {
                continue;
            }
            let marks: [Option<bool>; NODES] = std::array::from_fn(|n| {
                self.nodes[n]
                    .engine
                    .as_ref()
                    .and_then(|e| e.out_of_sync(VOL, b))
            });
            if marks.iter().any(|m| m.is_none()) {
                continue;
            }
            // Both sides in resync states with each other: each drives or serves the resync
            // from its own bitmap. (A side already tearing down may write without replicating;
            // then only "at least one marks" holds.)
            let both_resyncing = s.iter().all(|x| x.conn.is_some_and(|c| c.is_resync()));
            for n in 0..NODES {
                let resyncing = both_resyncing;
                if resyncing && marks[n] == Some(false) {
                    return Err(self.fail(FailureClass::Correctness, "out-of-sync-marked", format!(
                        "node {n} is {:?} but block {b}, which differs from its peer (node 0 {:?}, node 1 {:?}), is not marked out of sync",
                        s[n].conn,
                        identify(&self.read_block(0, b), b),
                        identify(&self.read_block(1, b), b)
                    )));
                }
            }
            if marks.iter().all(|m| *m == Some(false)) {
                return Err(self.fail(
                    FailureClass::Correctness,
                    "out-of-sync-marked",
                    format!(
                    "block {b} differs (node 0 {:?}, node 1 {:?}) but neither bitmap marks it: {}",
                    identify(&self.read_block(0, b), b),
                    identify(&self.read_block(1, b), b),
                    self.describe_states()
                ),
                ));
            }
        }
        Ok(())
    }

    fn marks(&self, b: u64) -> [Option<bool>; NODES] {
        std::array::from_fn(|n| {
            self.nodes[n]
                .engine
                .as_ref()
                .and_then(|e| e.out_of_sync(VOL, b))
        })
    }

    /// Both nodes up, Connected, UpToDate/UpToDate on both sides.
    fn steady(&self) -> bool {
        (0..NODES).all(|n| {
            let s = self.snapshot(n);
            s.conn == Some(ConnState::Connected)
                && s.disk == Some(DiskState::UpToDate)
                && s.pdsk == Some(DiskState::UpToDate)
        })
    }

    fn converged(&self) -> bool {
        self.steady() && self.requests.is_empty()
    }

    /// In sync: the two data areas are byte-identical (apart from blocks with requests in
    /// flight), and hold what the upper layer was promised.
    fn check_steady(&mut self, is_final: bool) -> Result<(), Failure> {
        self.stats.steady_checks += 1;
        let data_sectors = self.placement.data_sectors;
        let mut sectors: Vec<u64> = self.nodes[0]
            .disk
            .touched_sectors()
            .chain(self.nodes[1].disk.touched_sectors())
            .collect();
        sectors.sort_unstable();
        sectors.dedup();
        for s in sectors.into_iter().take_while(|s| *s < data_sectors) {
            if self.busy.contains(&(s / SECTORS_PER_BLOCK)) {
                continue;
            }
            if self.nodes[0].disk.sector_visible(s) != self.nodes[1].disk.sector_visible(s) {
                let b = s / SECTORS_PER_BLOCK;
                let v0 = identify(&self.read_block(0, b), b);
                let v1 = identify(&self.read_block(1, b), b);
                return Err(self.fail(FailureClass::Correctness, "in-sync-identical", format!(
                    "Connected UpToDate/UpToDate{} but sector {s} (block {b}) differs: node 0 {v0:?}, node 1 {v1:?}; expected {}",
                    if is_final { " after healing" } else { "" },
                    self.model.expected(b)
                )));
            }
        }
        if self.model.diverged {
            // The split brain was resolved one way or the other; what both hold is now the truth.
            let blocks: Vec<u64> = self
                .model
                .blocks()
                .filter(|b| !self.busy.contains(b))
                .collect();
            for b in blocks {
                let data = self.read_block(0, b);
                self.model.rebase_block(b, &data);
            }
            self.model.diverged = false;
            self.stats.split_brains_resolved += 1;
            self.note("model: divergence resolved, rebased on the synced data".into());
        }
        for n in 0..NODES {
            self.check_node_data(n, "in-sync")?;
        }
        Ok(())
    }

    /// A handshake on node `n` just decided (sync, no sync, or split brain). If both nodes
    /// changed their current UUID since they last agreed, each started a data generation the
    /// other cannot know (a Primary that lost its peer, a promotion while apart; spec §10.1), and
    /// the handshake must call it a split brain (§10.2 rules 90/100), never merge silently.
    /// (A new UUID that never became durable vanishes with a crash, and then is not counted.)
    fn handshake_decided(&mut self, n: usize) -> Result<(), Failure> {
        let current: [Option<u64>; NODES] = std::array::from_fn(|m| {
            self.nodes[m]
                .engine
                .as_ref()
                .and_then(|e| e.uuids(VOL))
                .map(|u| u[0] & !1)
        });
        // Judged from the UUIDs when the first side decides; either side may be the one that
        // notices (a promotion racing the handshake is seen by one side only).
        if self.handshake.is_none() {
            let changed = |m: usize| matches!((current[m], self.synced_uuid[m]), (Some(c), Some(s)) if c != s);
            self.handshake = Some((changed(0) && changed(1), [false; NODES], current));
        }
        let Some((expected, mut decided, at_first)) = self.handshake else {
            return Ok(());
        };
        decided[n] = true;
        self.handshake = Some((expected, decided, at_first));
        if !decided.iter().all(|d| *d) {
            return Ok(());
        }
        self.handshake = None;
        if expected && !self.split_brain_seen {
            return Err(self.fail(FailureClass::Correctness, "split-brain-detected", format!(
                "both nodes started new data generations while apart (current UUIDs {:x?}, last agreed {:x?}), yet neither handshake found a split brain: {}",
                at_first, self.synced_uuid, self.describe()
            )));
        }
        if !self.split_brain_seen {
            for (synced, now) in self.synced_uuid.iter_mut().zip(current) {
                *synced = now.or(*synced);
            }
        }
        Ok(())
    }

    fn note_agreed_uuids(&mut self) {
        for m in 0..NODES {
            let uuid = self.nodes[m]
                .engine
                .as_ref()
                .and_then(|e| e.uuids(VOL))
                .map(|u| u[0] & !1);
            self.synced_uuid[m] = uuid.or(self.synced_uuid[m]);
        }
    }

    /// Right when a SyncTarget declares its resync done, both data areas must be identical
    /// (apart from blocks with upper-layer requests in flight): every resync write is done.
    fn check_identical(&self, target: usize, check: &'static str) -> Result<(), Failure> {
        if self.nodes.iter().any(|n| n.engine.is_none()) {
            return Ok(());
        }
        let data_sectors = self.placement.data_sectors;
        let mut sectors: Vec<u64> = self.nodes[0]
            .disk
            .touched_sectors()
            .chain(self.nodes[1].disk.touched_sectors())
            .collect();
        sectors.sort_unstable();
        sectors.dedup();
        for s in sectors.into_iter().take_while(|s| *s < data_sectors) {
            let b = s / SECTORS_PER_BLOCK;
            if self.busy.contains(&b) {
                continue;
            }
            if self.nodes[0].disk.sector_visible(s) != self.nodes[1].disk.sector_visible(s) {
                return Err(self.fail(FailureClass::Correctness, check, format!(
                    "node {target} finished its resync but sector {s} (block {b}) differs: node 0 {:?}, node 1 {:?}; marked out of sync: {:?}",
                    identify(&self.read_block(0, b), b),
                    identify(&self.read_block(1, b), b),
                    self.marks(b)
                )));
            }
        }
        Ok(())
    }

    /// Whether node `n`'s data misses something the upper layer was promised (first such block).
    fn data_matches(&self, n: usize) -> Option<(u64, BlockValue)> {
        self.model
            .blocks()
            .filter(|b| !self.busy.contains(b) && !self.model.in_flight(*b))
            .find_map(|b| {
                let data = self.read_block(n, b);
                (!self.model.allows_data(b, &data)).then(|| (b, identify(&data, b)))
            })
    }

    fn check_node_data(&self, n: usize, check: &'static str) -> Result<(), Failure> {
        if self.model.diverged {
            return Ok(());
        }
        if let Some((b, v)) = self.data_matches(n) {
            return Err(self.fail(
                FailureClass::Correctness,
                check,
                format!(
                    "node {n} ({:?}) block {b} holds {v:?}, expected {}",
                    self.snapshot(n),
                    self.model.expected(b)
                ),
            ));
        }
        Ok(())
    }

    /// A node that becomes Primary without --force must hold the newest data (unless the
    /// workload deliberately promoted stale data, which the model then treats as a split brain).
    fn check_primary_data(&self, n: usize, why: &'static str) -> Result<(), Failure> {
        if self.snapshot(n).disk != Some(DiskState::UpToDate) {
            return Ok(());
        }
        self.check_node_data(n, why)
    }

    /// Protocol C: when a write completes upward, it is on both disks, or the connection is
    /// gone (and then the Primary must have marked it out of sync; the final in-sync check sees
    /// that it did).
    fn check_acked_write(
        &self,
        n: usize,
        id: u64,
        blocks: &[u64],
        replicating: u64,
    ) -> Result<(), Failure> {
        let peer = 1 - n;
        let s = self.snapshot(n);
        for b in blocks {
            let local = identify(&self.read_block(n, *b), *b);
            if local != BlockValue::Write(id)
                && s.disk == Some(DiskState::UpToDate)
                && !self.nodes[n].disk_errors
            {
                return Err(self.fail(
                    FailureClass::Correctness,
                    "acked-local",
                    format!(
                    "node {n}: write {id} completed but block {b} holds {local:?} on the local disk"
                ),
                ));
            }
        }
        // In WFBitMapS / Ahead a write is not replicated: the peer gets P_OUT_OF_SYNC instead
        // (spec §7.3), so only writes submitted and completed while replicating are checked.
        // The same connection from submission to completion (a write that straddles a
        // reconnect was marked out of sync instead, spec §12).
        let connected = replicating != 0
            && replicating == self.net.connection_id()
            && s.conn.is_some_and(replicates)
            && self.net.is_up();
        let peer_s = self.snapshot(peer);
        if !connected || self.nodes[peer].engine.is_none() || self.nodes[peer].disk_errors {
            return Ok(());
        }
        if !matches!(
            peer_s.disk,
            Some(DiskState::UpToDate)
                | Some(DiskState::Inconsistent)
                | Some(DiskState::Outdated)
                | Some(DiskState::Consistent)
        ) {
            return Ok(());
        }
        for b in blocks {
            let remote = identify(&self.read_block(peer, *b), *b);
            if remote != BlockValue::Write(id) {
                return Err(self.fail(FailureClass::Correctness, "acked-replicated", format!(
                    "node {n}: write {id} completed (protocol C) while connected, but block {b} on node {peer} holds {remote:?}"
                )));
            }
        }
        Ok(())
    }

    fn check_read(&mut self, n: usize, blocks: &[u64], data: &[u8]) -> Result<(), Failure> {
        if self.model.diverged {
            return Ok(());
        }
        self.stats.reads_checked += 1;
        for (i, b) in blocks.iter().enumerate() {
            let chunk = &data[i * BLOCK_BYTES as usize..(i + 1) * BLOCK_BYTES as usize];
            let v = identify(chunk, *b);
            if !self.model.allows_data(*b, chunk) {
                return Err(self.fail(
                    FailureClass::Correctness,
                    "read",
                    format!(
                        "node {n}: read of block {b} returned {v:?}, expected {}",
                        self.model.expected(*b)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After a Primary crashed: its meta-data must say so, and the activity log (replayed into
    /// the bitmap) must cover every block the crash changed.
    fn check_crash_recovery(
        &self,
        n: usize,
        flags_before: u32,
        attached: &md::Attached,
    ) -> Result<(), Failure> {
        let changed = &self.nodes[n].crash_changed;
        if !changed.is_empty()
            && flags_before & (md::MDF_PRIMARY_IND | md::MDF_CRASHED_PRIMARY) == 0
        {
            return Err(self.fail(FailureClass::Correctness, "crashed-primary-flag", format!(
                "node {n} crashed as a Primary and lost or tore blocks {changed:?}, but its superblock flags {flags_before:#x} do not say Primary, so apply-al replays nothing"
            )));
        }
        for b in &self.nodes[n].crash_changed {
            let bit = b * BLOCK_BYTES / 4096;
            let set = attached
                .bitmap_words
                .get((bit / 64) as usize)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0);
            if !set {
                return Err(self.fail(FailureClass::Correctness, "activity-log", format!(
                    "node {n} crashed as Primary and lost or tore block {b}, but after apply-al its bit is clear (hot extents {:?}; AL: {})",
                    attached.replayed_extents, md::al_describe(&attached.al_before)
                )));
            }
        }
        Ok(())
    }

    // ---- liveness ----

    fn begin_liveness(&mut self) -> Result<(), Failure> {
        self.liveness = true;
        self.liveness_since_ns = self.now_ns;
        self.note("LIVENESS: healing network, disks and nodes".into());
        self.net.set_partitioned(self.now_ns, false);
        for n in 0..NODES {
            self.nodes[n].disk_errors = false;
            let faults = self.options.disk[n].clone();
            self.nodes[n].disk.set_faults(faults);
            if self.nodes[n].engine.is_none() {
                self.nodes[n].restart_at_ns = Some(self.now_ns);
            }
        }
        self.heal()
    }

    /// What an administrator does to bring a pair back: reconnect, resolve a split brain by
    /// discarding the Secondary's (or node 1's) data, re-attach lost disks.
    fn heal(&mut self) -> Result<(), Failure> {
        for n in 0..NODES {
            if self.nodes[n].engine.is_none() {
                continue;
            }
            let s = self.snapshot(n);
            if matches!(s.disk, Some(DiskState::Diskless) | Some(DiskState::Failed)) {
                // Re-attach: simplest as a clean restart from the meta-data.
                self.note(format!("heal: node {n} lost its disk, restarting it"));
                self.crash(n)?;
                self.nodes[n].restart_at_ns = Some(self.now_ns);
            }
        }
        Ok(())
    }

    /// Re-applied every couple of simulated seconds while healing.
    fn heal_tick(&mut self) -> Result<(), Failure> {
        if self.now_ns < self.next_heal_ns {
            return Ok(());
        }
        self.next_heal_ns = self.now_ns + 2_000_000_000;
        self.heal()?;
        let current: [bool; NODES] = std::array::from_fn(|n| {
            self.nodes[n].engine.is_some() && self.data_matches(n).is_none()
        });
        for n in 0..NODES {
            if self.snapshot(n).conn != Some(ConnState::StandAlone) {
                continue;
            }
            self.heal_connects[n] += 1;
            let peer = 1 - n;
            // A node that keeps falling back to StandAlone saw a split brain (or a refused
            // handshake): discard the data of the side that misses promised writes, else of the
            // Secondary, else of node 1.
            let victim = if current[n] != current[peer] {
                if current[n] {
                    peer
                } else {
                    n
                }
            } else if self.snapshot(n).role == Some(Role::Primary) {
                peer
            } else if self.snapshot(peer).role == Some(Role::Primary) {
                n
            } else {
                1
            };
            let discard = self.heal_connects[n] >= 2 && n == victim;
            if discard {
                if current[n] {
                    self.model.diverged = true;
                }
                if self.snapshot(n).role == Some(Role::Primary) {
                    self.admin(n, AdminCommand::Secondary)?;
                }
            }
            self.admin(
                n,
                AdminCommand::Connect {
                    discard_my_data: discard,
                },
            )?;
        }
        // Nobody has good data but both are connected: the operator forces the most current.
        let both_connected =
            (0..NODES).all(|n| self.snapshot(n).conn == Some(ConnState::Connected));
        let none_up_to_date =
            (0..NODES).all(|n| self.snapshot(n).disk != Some(DiskState::UpToDate));
        // Still not healed after a minute: do what an administrator does next. A Primary that
        // would have to become SyncTarget refuses ("I shall become SyncTarget, but I am
        // primary!"), so demote it; if no node has good data at all, force the most current one.
        let stuck = self.now_ns.saturating_sub(self.liveness_since_ns) > 60_000_000_000;
        let both_up = self.nodes.iter().all(|n| n.engine.is_some());
        let force = (both_connected || (stuck && both_up)) && none_up_to_date;
        if force && self.requests.is_empty() {
            let n = if current[0] || !current[1] { 0 } else { 1 };
            if !current[n] {
                self.model.diverged = true;
            }
            self.admin(n, AdminCommand::Primary { force: true })?;
        } else if stuck && self.requests.is_empty() {
            for n in 0..NODES {
                if self.snapshot(n).role == Some(Role::Primary) {
                    self.admin(n, AdminCommand::Secondary)?;
                }
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let mut reqs: Vec<String> = self
            .requests
            .iter()
            .map(|(id, r)| {
                let what = match &r.kind {
                    ReqKind::Write { id: w, blocks, .. } => format!("write {w} {blocks:?}"),
                    ReqKind::Read { blocks } => format!("read {blocks:?}"),
                    ReqKind::Flush { .. } => "flush".into(),
                };
                format!("req {id} on node {}: {what}", r.node)
            })
            .collect();
        reqs.sort();
        let held: Vec<String> = (0..NODES)
            .map(|n| {
                let h = self.nodes[n]
                    .engine
                    .as_ref()
                    .map_or(0, |e| e.held_outputs());
                let oos = self.nodes[n]
                    .engine
                    .as_ref()
                    .and_then(|e| e.out_of_sync_blocks(VOL));
                format!(
                    "node {n}: {h} held outputs, {} disk ops, out-of-sync {oos:?}",
                    self.nodes[n].disk.in_flight_len()
                )
            })
            .collect();
        format!(
            "{} [{}] [{}]",
            self.describe_states(),
            reqs.join("; "),
            held.join("; ")
        )
    }

    fn describe_states(&self) -> String {
        let states: Vec<String> = (0..NODES)
            .map(|n| format!("node {n}: {:?}", self.snapshot(n)))
            .collect();
        format!(
            "{}; net up {} partitioned {}; {} requests in flight",
            states.join(", "),
            self.net.is_up(),
            self.net.is_partitioned(),
            self.requests.len()
        )
    }

    fn note(&mut self, line: String) {
        if self.trace.len() >= self.trace_cap {
            self.trace.drain(..self.trace_cap / 4);
        }
        self.trace.push(format!("{:>14} {line}", self.now_ns));
    }

    fn fail(&self, class: FailureClass, check: &'static str, detail: String) -> Failure {
        fail(class, check, detail, self.now_ns)
    }
}
