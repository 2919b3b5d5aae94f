//! One resource's driver, quinn-style: it decides nothing. It turns socket bytes, disk
//! completions, upper-layer requests and admin commands into engine inputs, executes the engine's
//! outputs (socket writes, disk I/O, meta-data writes, completions), and arms one timer.
//!
//! Threads: the driver thread owns the engine. Each socket has a reader and a writer thread, each
//! backing device an I/O thread, the transport a connect thread; all of them report to the driver
//! through one channel, so the engine sees one ordered stream of events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tracing::{debug, error, info, warn};
use udrbd_engine as engine;
use udrbd_engine::{AdminCommand, Input, IoId, Output, RequestId, RequestOp, Socket, Volume};

use crate::attach::{self, AttachSpec};
use crate::backing::{Backing, IoCompletion, IoOp};
use crate::control::{self, DiskOptions, NetOptions, Request, Response};
use crate::status::{ConnectionStatus, StatusSnapshot, VolumeStats, VolumeStatus};
use crate::transport::{self, ConnectParams};

mod expose;

/// What the driver thread reacts to.
// Events are moved once through a channel; boxing the large ones would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Control {
        request: Request,
        reply: Sender<Response>,
    },
    Upper {
        volume: u16,
        op: RequestOp,
        reply: Sender<Result<Option<Bytes>, String>>,
    },
    Subscribe {
        tx: Sender<String>,
        now: bool,
        statistics: bool,
    },
    Io {
        token: u64,
        result: io::Result<Option<Bytes>>,
    },
    Established {
        gen: u64,
        pair: transport::SocketPair,
    },
    ConnectFailed {
        gen: u64,
        reason: String,
    },
    Received {
        gen: u64,
        socket: Socket,
        bytes: Bytes,
    },
    /// The ublk upper layer (node/expose.rs).
    Ublk(expose::UblkEvent),
    Lost {
        gen: u64,
        why: String,
        /// A send did not finish within `timeout` × `ko-count` (the peer stopped reading).
        timed_out: bool,
    },
}

/// Options of one node (one daemon process, or one in-process node in tests).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub resource: String,
    /// Try io_uring first (falls back by itself); false forces plain pread/pwrite.
    pub prefer_uring: bool,
    /// Where the daemon keeps pid file and control socket (only used by the daemon binary).
    pub run_dir: PathBuf,
}

/// The in-process API: a running driver for one resource.
pub struct Node {
    tx: Sender<Event>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Failed(String),
    #[error("the node has stopped")]
    Stopped,
}

impl Node {
    pub fn start(opts: NodeOptions) -> io::Result<Node> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let driver = Driver::new(opts, tx.clone(), rx);
        let thread = std::thread::Builder::new()
            .name("driver".into())
            .spawn(move || driver.run())?;
        Ok(Node {
            tx,
            thread: Some(thread),
        })
    }

    pub fn sender(&self) -> Sender<Event> {
        self.tx.clone()
    }

    /// One control request, answered as the control socket would.
    pub fn call(&self, request: Request) -> Response {
        let (reply, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Event::Control { request, reply }).is_err() {
            return Response::Error {
                message: "node stopped".into(),
            };
        }
        rx.recv().unwrap_or(Response::Error {
            message: "node stopped".into(),
        })
    }

    /// Writes `data` at `sector` of `volume`; returns when the engine completes the request
    /// (protocol C: on the local disk and acknowledged by the peer).
    pub fn write(&self, volume: u16, sector: u64, data: Bytes) -> Result<(), NodeError> {
        let op = RequestOp::Write {
            sector,
            data,
            fua: false,
            preflush: false,
        };
        self.upper(volume, op).map(|_| ())
    }

    pub fn read(&self, volume: u16, sector: u64, len_bytes: u32) -> Result<Bytes, NodeError> {
        self.upper(volume, RequestOp::Read { sector, len_bytes })?
            .ok_or_else(|| NodeError::Failed("read returned no data".into()))
    }

    pub fn flush(&self, volume: u16) -> Result<(), NodeError> {
        self.upper(volume, RequestOp::Flush).map(|_| ())
    }

    fn upper(&self, volume: u16, op: RequestOp) -> Result<Option<Bytes>, NodeError> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send(Event::Upper { volume, op, reply })
            .map_err(|_| NodeError::Stopped)?;
        rx.recv()
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Failed)
    }

    pub fn status(&self) -> Option<StatusSnapshot> {
        match self.call(Request::Status) {
            Response::Status(s) => Some(*s),
            _ => None,
        }
    }

    /// events2 lines: first the `exists` dump, then `change` lines as they happen.
    pub fn subscribe(&self, now: bool, statistics: bool) -> Receiver<String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let _ = self.tx.send(Event::Subscribe {
            tx,
            now,
            statistics,
        });
        rx
    }

    /// `down` and wait for the driver thread.
    pub fn shutdown(mut self) {
        let _ = self.call(Request::Down);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let (reply, _rx) = crossbeam_channel::bounded(1);
            let _ = self.tx.send(Event::Control {
                request: Request::Down,
                reply,
            });
            let _ = t.join();
        }
    }
}

struct Vol {
    minor: u32,
    spec: AttachSpec,
    data: Backing,
    /// External meta-data device; None for internal meta-data (same device as `data`).
    meta: Option<Backing>,
}

enum Pending {
    Disk(IoId, Kind),
    Meta(IoId, u64),
}

#[derive(Clone, Copy)]
enum Kind {
    Read(u16, u64),
    Write(u16, u64),
    Other,
}

struct Conn {
    gen: u64,
    cancel: Arc<AtomicBool>,
    data_tx: Option<Sender<Bytes>>,
    meta_tx: Option<Sender<Bytes>>,
    streams: Vec<TcpStream>,
}

impl Conn {
    fn close(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.data_tx = None;
        self.meta_tx = None;
        for s in self.streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

enum Waiter {
    Connect {
        reply: Sender<Response>,
        deadline: Option<std::time::Instant>,
    },
    Synced {
        reply: Sender<Response>,
        deadline: Option<std::time::Instant>,
    },
}

struct Driver {
    opts: NodeOptions,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    clock: std::time::Instant,
    engine: Option<engine::Resource>,
    net: Option<(std::net::SocketAddr, std::net::SocketAddr, NetOptions)>,
    disk_opts: DiskOptions,
    vols: BTreeMap<u16, Vol>,
    conn: Option<Conn>,
    gen: u64,
    next_token: u64,
    io: HashMap<u64, Pending>,
    next_request: u64,
    requests: HashMap<u64, Sender<Result<Option<Bytes>, String>>>,
    admin: VecDeque<Sender<Response>>,
    waiters: Vec<Waiter>,
    subs: Vec<Sender<String>>,
    last: Option<StatusSnapshot>,
    stats: BTreeMap<u16, VolumeStats>,
    down: bool,
    pending_attach: Option<(u16, engine::AttachedDisk)>,
    down_at: Option<(Sender<Response>, std::time::Instant)>,
    /// Minor numbers of the volumes ever attached (they outlive a detach).
    minors: BTreeMap<u16, u32>,
    /// Volumes exposed through ublk (node/expose.rs).
    ublk: expose::Ublk,
    /// New net options waiting for the disconnect that precedes applying them.
    pending_net: Option<(NetOptions, Sender<Response>)>,
    /// `down` waiting for its graceful disconnect: the reply, the disconnect's own answer, and
    /// when to stop waiting and force it.
    pending_down: Option<(Sender<Response>, Receiver<Response>, std::time::Instant)>,
}

impl Driver {
    fn new(opts: NodeOptions, tx: Sender<Event>, rx: Receiver<Event>) -> Driver {
        Driver {
            opts,
            tx,
            rx,
            clock: std::time::Instant::now(),
            engine: None,
            net: None,
            disk_opts: DiskOptions::default(),
            vols: BTreeMap::new(),
            conn: None,
            gen: 0,
            next_token: 1,
            io: HashMap::new(),
            next_request: 1,
            requests: HashMap::new(),
            admin: VecDeque::new(),
            waiters: Vec::new(),
            subs: Vec::new(),
            last: None,
            stats: BTreeMap::new(),
            down: false,
            pending_attach: None,
            down_at: None,
            minors: BTreeMap::new(),
            ublk: expose::Ublk::default(),
            pending_net: None,
            pending_down: None,
        }
    }

    fn now(&self) -> engine::Instant {
        engine::Instant(self.clock.elapsed().as_nanos() as u64)
    }

    fn run(mut self) {
        while !self.down {
            let timeout = self.next_wakeup();
            let ev = match timeout {
                Some(d) => self.rx.recv_timeout(d),
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match ev {
                Ok(ev) => self.on_event(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = self.now();
            if let Some(e) = self.engine.as_mut() {
                if e.poll_timeout().is_some_and(|t| t <= now) {
                    e.handle_timeout(now);
                }
            }
            self.drain();
            self.ublk_after_step();
            self.after_step();
        }
        if let Some(mut c) = self.conn.take() {
            c.close();
        }
        info!("drbd {}: daemon stopped", self.opts.resource);
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let mut best: Option<Duration> = (self.down_at.is_some() || self.pending_down.is_some())
            .then(|| Duration::from_millis(100));
        if let Some(t) = self.engine.as_ref().and_then(|e| e.poll_timeout()) {
            let now = self.now().0;
            best = Some(Duration::from_nanos(t.0.saturating_sub(now)));
        }
        let now = std::time::Instant::now();
        for w in &self.waiters {
            let (Waiter::Connect { deadline, .. } | Waiter::Synced { deadline, .. }) = w;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(now);
                best = Some(best.map_or(left, |b| b.min(left)));
            }
        }
        best
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        if let Some(e) = self.engine.as_mut() {
            e.handle(now, input);
        }
        self.drain();
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Control { request, reply } => self.on_control(request, reply),
            Event::Upper { volume, op, reply } => {
                if self.engine.is_none() || !self.minors.contains_key(&volume) {
                    let _ = reply.send(Err(format!("volume {volume} is not attached")));
                    return;
                }
                let id = self.next_request;
                self.next_request += 1;
                self.requests.insert(id, reply);
                self.handle(Input::Request {
                    id: RequestId(id),
                    volume: Volume(volume),
                    op,
                });
            }
            Event::Subscribe {
                tx,
                now,
                statistics,
            } => {
                let snap = self.snapshot();
                for l in snap.events2_exists(statistics) {
                    let _ = tx.send(l);
                }
                if !now {
                    self.subs.push(tx);
                    self.last = Some(snap);
                }
            }
            Event::Io { token, result } => self.on_io(token, result),
            Event::Ublk(ev) => self.on_ublk(ev),
            Event::Established { gen, pair } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                let resolve_conflicts = pair.resolve_conflicts;
                // Spec §2.2 step 4: sends time out after `timeout`; like the kernel's ko-count,
                // we give up on the peer only after ko-count such periods (0: never).
                let send_timeout = self.net.as_ref().and_then(|(_, _, o)| {
                    let ms = u64::from(o.timeout_ds) * 100 * u64::from(o.ko_count);
                    (ms > 0).then(|| Duration::from_millis(ms))
                });
                conn.data_tx = Some(spawn_writer(
                    pair.data.try_clone(),
                    self.tx.clone(),
                    gen,
                    send_timeout,
                ));
                conn.meta_tx = Some(spawn_writer(
                    pair.meta.try_clone(),
                    self.tx.clone(),
                    gen,
                    send_timeout,
                ));
                spawn_reader(pair.data.try_clone(), Socket::Data, self.tx.clone(), gen);
                spawn_reader(pair.meta.try_clone(), Socket::Meta, self.tx.clone(), gen);
                conn.streams = vec![pair.data, pair.meta];
                self.handle(Input::Connected { resolve_conflicts });
            }
            Event::ConnectFailed { gen, reason } => {
                if self.conn.as_ref().is_some_and(|c| c.gen == gen) {
                    error!("drbd {}: {reason}", self.opts.resource);
                    self.conn = None;
                }
            }
            Event::Received { gen, socket, bytes } => {
                if self.conn.as_ref().is_some_and(|c| c.gen == gen) {
                    let n = bytes.len() as u64;
                    if let Some(s) = self.stats.get_mut(&0) {
                        s.received_kib += n;
                    }
                    self.handle(Input::Received { socket, bytes });
                }
            }
            Event::Lost {
                gen,
                why,
                timed_out,
            } => {
                if let Some(mut c) = self.conn.take_if(|c| c.gen == gen) {
                    warn!("drbd {}: {why}", self.opts.resource);
                    c.close();
                    self.handle(Input::ConnectionLost { timed_out });
                }
            }
        }
    }

    fn on_io(&mut self, token: u64, result: io::Result<Option<Bytes>>) {
        let Some(p) = self.io.remove(&token) else {
            return;
        };
        match p {
            Pending::Disk(io, kind) => {
                if let (Ok(_), Kind::Read(v, n) | Kind::Write(v, n)) = (&result, kind) {
                    let s = self.stats.entry(v).or_default();
                    if matches!(kind, Kind::Read(..)) {
                        s.read_kib += n;
                    } else {
                        s.written_kib += n;
                    }
                }
                let result = result.map_err(|e| {
                    error!("drbd {}: local disk I/O error: {e}", self.opts.resource);
                    engine::IoErrorKind::Io
                });
                self.handle(Input::DiskDone { io, result });
            }
            Pending::Meta(io, vol) => {
                let result = result.map(|_| ()).map_err(|e| {
                    error!("drbd {}: meta-data I/O error: {e}", self.opts.resource);
                    engine::IoErrorKind::Io
                });
                self.stats.entry(vol as u16).or_default().al_writes += 1;
                self.handle(Input::MetaDone { io, result });
            }
        }
    }

    fn submit(&mut self, volume: Volume, meta: bool, pending: Pending, op: IoOp) {
        let token = self.next_token;
        self.next_token += 1;
        let Some(v) = self.vols.get(&volume.0) else {
            // The engine addressed a volume we have no device for: fail it like a disk error.
            let result = Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no device for volume {}", volume.0),
            ));
            self.io.insert(token, pending);
            let _ = self.tx.send(Event::Io { token, result });
            return;
        };
        self.io.insert(token, pending);
        let dev = if meta {
            v.meta.as_ref().unwrap_or(&v.data)
        } else {
            &v.data
        };
        dev.submit(token, op);
    }

    /// Execute every output the engine has.
    fn drain(&mut self) {
        loop {
            let Some(out) = self.engine.as_mut().and_then(|e| e.poll_output()) else {
                break;
            };
            self.execute(out);
        }
    }

    fn execute(&mut self, out: Output) {
        let name = self.opts.resource.clone();
        match out {
            Output::Send { socket, bytes } => {
                let Some(c) = self.conn.as_ref() else { return };
                let tx = match socket {
                    Socket::Data => &c.data_tx,
                    Socket::Meta => &c.meta_tx,
                };
                if let Some(tx) = tx {
                    if let Some(s) = self.stats.get_mut(&0) {
                        s.sent_kib += bytes.len() as u64;
                    }
                    let _ = tx.send(bytes);
                }
            }
            Output::Connect => self.start_connect(),
            Output::Disconnect => {
                if let Some(mut c) = self.conn.take() {
                    c.close();
                }
            }
            Output::DiskRead {
                io,
                volume,
                sector,
                len_bytes,
            } => {
                let op = IoOp::Read {
                    offset: sector * 512,
                    len: len_bytes as usize,
                };
                self.submit(
                    volume,
                    false,
                    Pending::Disk(io, Kind::Read(volume.0, len_bytes as u64)),
                    op,
                );
            }
            Output::DiskWrite {
                io,
                volume,
                sector,
                data,
                fua,
                preflush,
            } => {
                let n = data.len() as u64;
                if preflush {
                    // Ordering is the engine's: it only asks for a preflush write when nothing
                    // it depends on is in flight, so a synchronous flush first is enough.
                    let t = self.next_token;
                    self.next_token += 1;
                    if let Some(v) = self.vols.get(&volume.0) {
                        v.data.submit(t, IoOp::Flush);
                    }
                    self.io
                        .insert(t, Pending::Disk(IoId(u64::MAX), Kind::Other));
                }
                let op = if fua {
                    IoOp::WriteBatch {
                        writes: vec![(sector * 512, data)],
                        flush: true,
                    }
                } else {
                    IoOp::Write {
                        offset: sector * 512,
                        data,
                    }
                };
                self.submit(
                    volume,
                    false,
                    Pending::Disk(io, Kind::Write(volume.0, n)),
                    op,
                );
            }
            Output::DiskFlush { io, volume } => {
                self.submit(volume, false, Pending::Disk(io, Kind::Other), IoOp::Flush);
            }
            Output::DiskDiscard {
                io,
                volume,
                sector,
                len_bytes,
            } => {
                // Discard as zero-fill: correct for a file backing, and what a peer reading the
                // range back expects.
                let op = IoOp::Write {
                    offset: sector * 512,
                    data: Bytes::from(vec![0u8; len_bytes as usize]),
                };
                self.submit(volume, false, Pending::Disk(io, Kind::Other), op);
            }
            Output::WriteMeta {
                io,
                volume,
                writes,
                flush,
                ..
            } => {
                let writes = writes
                    .into_iter()
                    .map(|w| (w.offset_bytes, w.data))
                    .collect();
                self.submit(
                    volume,
                    true,
                    Pending::Meta(io, volume.0 as u64),
                    IoOp::WriteBatch { writes, flush },
                );
            }
            Output::Complete { request, result } => {
                if self.ublk_complete(request.0, &result) {
                    return;
                }
                if let Some(reply) = self.requests.remove(&request.0) {
                    let _ = reply.send(result.map_err(|e| format!("{e:?}")));
                }
            }
            Output::AdminDone { command, result } => {
                // A detached volume's devices are closed; its minor stays for status.
                match (&command, &result) {
                    (AdminCommand::Detach { volume }, Ok(()))
                    | (AdminCommand::Attach { volume, .. }, Err(_)) => {
                        self.vols.remove(&volume.0);
                    }
                    _ => {}
                }
                let resp = match result {
                    Ok(()) => Response::Ok,
                    Err(r) => Response::Refused {
                        code: r.code,
                        text: r.text,
                        exit_code: r.exit_code,
                    },
                };
                if let Some(reply) = self.admin.pop_front() {
                    let _ = reply.send(resp);
                }
            }
            Output::StateChanged(change) => {
                // The engine also emits the kernel's log line for every change as `Log`; this
                // copy is for debugging only (events2 is computed from snapshots).
                let minor = self
                    .vols
                    .get(&change.volume.0)
                    .map(|v| v.minor)
                    .unwrap_or(0);
                debug!("block drbd{minor}: state change {}", change.log_line());
            }
            Output::Log {
                level,
                volume,
                message,
            } => {
                let prefix = match volume.and_then(|v| self.vols.get(&v.0)) {
                    Some(v) => format!("block drbd{}", v.minor),
                    None => format!("drbd {name}"),
                };
                match level {
                    engine::LogLevel::Error => error!("{prefix}: {message}"),
                    engine::LogLevel::Warn => warn!("{prefix}: {message}"),
                    engine::LogLevel::Info => info!("{prefix}: {message}"),
                }
            }
        }
    }

    fn start_connect(&mut self) {
        let Some((local, peer, opts)) = self.net.clone() else {
            warn!(
                "drbd {}: engine asked to connect without a network configuration",
                self.opts.resource
            );
            return;
        };
        if let Some(mut c) = self.conn.take() {
            c.close();
        }
        self.gen += 1;
        let gen = self.gen;
        let cancel = Arc::new(AtomicBool::new(false));
        self.conn = Some(Conn {
            gen,
            cancel: cancel.clone(),
            data_tx: None,
            meta_tx: None,
            streams: Vec::new(),
        });
        let params = ConnectParams {
            resource: self.opts.resource.clone(),
            local,
            peer,
            connect_int: Duration::from_secs(opts.connect_int_s.max(1) as u64),
            ping_timeout: Duration::from_millis(opts.ping_timeout_ds as u64 * 100),
            socket_check_timeout: Duration::from_millis(opts.socket_check_timeout_ds as u64 * 100),
            sndbuf_size: opts.sndbuf_size as usize,
            rcvbuf_size: opts.rcvbuf_size as usize,
        };
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                // The kernel retries a failed bind every connect-int; so do we.
                let listener = loop {
                    match transport::listen(local) {
                        Ok(l) => break l,
                        Err(e) => {
                            warn!("{e}; retrying");
                            let deadline = std::time::Instant::now() + params.connect_int;
                            while std::time::Instant::now() < deadline {
                                if cancel.load(Ordering::Relaxed) {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                };
                match transport::establish(&params, &listener, &cancel) {
                    Ok(pair) => {
                        let _ = tx.send(Event::Established { gen, pair });
                    }
                    Err(transport::TransportError::Cancelled) => {}
                    Err(e) => {
                        let _ = tx.send(Event::ConnectFailed {
                            gen,
                            reason: e.to_string(),
                        });
                    }
                }
            });
        if let Err(e) = spawned {
            error!(
                "drbd {}: cannot start the connect thread: {e}",
                self.opts.resource
            );
        }
    }

    fn on_control(&mut self, request: Request, reply: Sender<Response>) {
        match request {
            Request::Ping => {
                let mode = self
                    .vols
                    .values()
                    .next()
                    .map(|v| format!("{:?}", v.data.mode()))
                    .unwrap_or_default();
                let _ = reply.send(Response::Pong {
                    resource: self.opts.resource.clone(),
                    pid: std::process::id(),
                    io_mode: mode,
                });
            }
            Request::Status => {
                let _ = reply.send(Response::Status(Box::new(self.snapshot())));
            }
            Request::Attach {
                volume,
                minor,
                disk,
                meta_disk,
                meta_index,
                options,
            } => {
                let spec = AttachSpec {
                    volume,
                    minor,
                    disk: disk.into(),
                    meta_disk: meta_disk.into(),
                    meta_index,
                };
                match self.attach(spec, options) {
                    Some(r) => {
                        let _ = reply.send(r);
                    }
                    None => {
                        if let Some((v, disk)) = self.pending_attach.take() {
                            self.admin_cmd(
                                AdminCommand::Attach {
                                    volume: Volume(v),
                                    disk: Box::new(disk),
                                },
                                reply,
                            );
                        }
                    }
                }
            }
            Request::Connect {
                local,
                peer,
                options,
            } => {
                let discard = options.discard_my_data;
                match &self.net {
                    Some((l, p, o)) if *l == local && *p == peer && same_net(o, &options) => {}
                    _ => {
                        if let Err(e) = self.set_net(local, peer, options) {
                            let _ = reply.send(e);
                            return;
                        }
                    }
                }
                self.admin_cmd(
                    AdminCommand::Connect {
                        discard_my_data: discard,
                    },
                    reply,
                );
            }
            Request::NetOptions { options } => {
                let Some((l, p, current)) = self.net.clone() else {
                    let _ = reply.send(refused(
                        10,
                        102,
                        "Resource is not configured for networking",
                    ));
                    return;
                };
                let live = self
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.conn_state() != engine::ConnState::StandAlone);
                if live && !same_net(&current, &options) {
                    // The engine takes net options at construction: a Secondary reconnects with
                    // the new ones (disconnect, rebuild from the on-disk state, connect).
                    if self
                        .engine
                        .as_ref()
                        .is_some_and(|e| e.role() != engine::Role::Secondary)
                    {
                        let _ = reply.send(refused(
                            10,
                            151,
                            "changing net options of a connected Primary is not supported yet; disconnect first",
                        ));
                        return;
                    }
                    if let Err(m) = net_config(&options) {
                        let _ = reply.send(Response::Error { message: m });
                        return;
                    }
                    info!(
                        "drbd {}: net options changed; reconnecting with them",
                        self.opts.resource
                    );
                    self.pending_net = Some((options, reply));
                    let (tx, _rx) = crossbeam_channel::unbounded();
                    self.admin_cmd(AdminCommand::Disconnect { force: false }, tx);
                    return;
                }
                match self.set_net(l, p, options) {
                    Ok(()) => {
                        let _ = reply.send(Response::Ok);
                    }
                    Err(e) => {
                        let _ = reply.send(e);
                    }
                }
            }
            Request::Disconnect => self.admin_cmd(AdminCommand::Disconnect { force: false }, reply),
            Request::Detach { volume } => self.admin_cmd(
                AdminCommand::Detach {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::Primary { force } => self.admin_cmd(AdminCommand::Primary { force }, reply),
            Request::Secondary => {
                if !self.ublk_check_open(Request::Secondary, reply.clone()) {
                    self.admin_cmd(AdminCommand::Secondary, reply);
                }
            }
            Request::Invalidate { volume } => self.admin_cmd(
                AdminCommand::Invalidate {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::InvalidateRemote { volume } => self.admin_cmd(
                AdminCommand::InvalidateRemote {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::NewCurrentUuid {
                volume,
                clear_bitmap,
            } => self.admin_cmd(
                AdminCommand::NewCurrentUuid {
                    volume: Volume(volume),
                    clear_bitmap,
                },
                reply,
            ),
            Request::Outdate { volume } => self.admin_cmd(
                AdminCommand::Outdate {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::PauseSync { volume } => self.admin_cmd(
                AdminCommand::PauseSync {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::ResumeSync { volume } => self.admin_cmd(
                AdminCommand::ResumeSync {
                    volume: Volume(volume),
                },
                reply,
            ),
            Request::WaitConnect { timeout_s } => {
                let deadline = (timeout_s > 0)
                    .then(|| std::time::Instant::now() + Duration::from_secs(timeout_s));
                self.waiters.push(Waiter::Connect { reply, deadline });
            }
            Request::WaitSynced { timeout_s } => {
                let deadline = (timeout_s > 0)
                    .then(|| std::time::Instant::now() + Duration::from_secs(timeout_s));
                self.waiters.push(Waiter::Synced { reply, deadline });
            }
            Request::Events { now, statistics } => {
                // Over the socket, events are served by the server thread via Subscribe.
                let _ = (now, statistics);
                let _ = reply.send(Response::Error {
                    message: "events go through subscribe".into(),
                });
            }
            Request::Write {
                volume,
                sector,
                data_hex,
            } => {
                let Some(data) = control::from_hex(&data_hex) else {
                    let _ = reply.send(Response::Error {
                        message: "write: data_hex is not hex".into(),
                    });
                    return;
                };
                let (tx, rx) = crossbeam_channel::bounded(1);
                let op = RequestOp::Write {
                    sector,
                    data: Bytes::from(data),
                    fua: false,
                    preflush: false,
                };
                self.on_event(Event::Upper {
                    volume,
                    op,
                    reply: tx,
                });
                forward_upper(rx, reply);
            }
            Request::Read {
                volume,
                sector,
                len,
            } => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                self.on_event(Event::Upper {
                    volume,
                    op: RequestOp::Read {
                        sector,
                        len_bytes: len,
                    },
                    reply: tx,
                });
                forward_upper(rx, reply);
            }
            Request::Expose { volume } => self.expose(volume, reply),
            Request::Down => {
                // The ublk devices go first (refused while held open); Down comes back here
                // once they are gone.
                if self.ublk_down_pending() || self.ublk_check_open(Request::Down, reply.clone()) {
                    return;
                }
                if self.pending_down.is_some() {
                    let _ = reply.send(Response::Error {
                        message: "down is already in progress".into(),
                    });
                    return;
                }
                // drbdsetup down disconnects gracefully first (drbd_adm_down:
                // conn_try_disconnect(connection, 0)), so the peer sees an orderly disconnect
                // (TearDown), not a broken pipe; it forces only when that fails.
                let connected = self
                    .engine
                    .as_ref()
                    .is_some_and(|e| e.conn_state() != engine::ConnState::StandAlone);
                if connected {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    self.admin_cmd(AdminCommand::Disconnect { force: false }, tx);
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    self.pending_down = Some((reply, rx, deadline));
                    return;
                }
                self.finish_down(reply);
            }
        }
    }

    /// The rest of `down`, once StandAlone (or the graceful disconnect failed or timed out):
    /// force what is left of the connection, detach, and exit once the meta-data is written.
    fn finish_down(&mut self, reply: Sender<Response>) {
        if self.engine.is_some() {
            let (tx, _rx) = crossbeam_channel::unbounded();
            self.admin_cmd(AdminCommand::Disconnect { force: true }, tx.clone());
            for v in self.vols.keys().copied().collect::<Vec<_>>() {
                self.admin_cmd(AdminCommand::Detach { volume: Volume(v) }, tx.clone());
            }
        }
        if let Some(mut c) = self.conn.take() {
            c.close();
        }
        // Leave once the detach's meta-data writes are on disk (bounded: a hung disk must not
        // keep `down` from returning).
        self.down_at = Some((reply, std::time::Instant::now() + Duration::from_secs(10)));
    }

    fn admin_cmd(&mut self, cmd: AdminCommand, reply: Sender<Response>) {
        if self.engine.is_none() {
            let _ = reply.send(refused(10, 158, "Unknown resource"));
            return;
        }
        self.admin.push_back(reply);
        self.handle(Input::Admin(cmd));
    }

    /// Opens the devices and reads the meta-data; creates the engine on the first attach.
    /// Returns a response now, or None when the engine will answer with AdminDone.
    fn attach(&mut self, spec: AttachSpec, options: DiskOptions) -> Option<Response> {
        if self.vols.contains_key(&spec.volume) {
            return Some(refused(
                10,
                124,
                "Device is attached to a disk (use detach first)",
            ));
        }
        let on_disk = match attach::read_meta(&spec) {
            Ok(d) => d,
            Err(e) => {
                return Some(Response::Error {
                    message: e.to_string(),
                })
            }
        };
        let tx = self.tx.clone();
        let sink = move |c: IoCompletion| {
            let _ = tx.send(Event::Io {
                token: c.token,
                result: c.result,
            });
        };
        let data = match Backing::open(&spec.disk, self.opts.prefer_uring, Box::new(sink.clone())) {
            Ok(b) => b,
            Err(e) => {
                return Some(Response::Error {
                    message: format!("{}: {e}", spec.disk.display()),
                })
            }
        };
        let meta = if spec.meta_index.is_some() || spec.meta_disk != spec.disk {
            match Backing::open(&spec.meta_disk, self.opts.prefer_uring, Box::new(sink)) {
                Ok(b) => Some(b),
                Err(e) => {
                    return Some(Response::Error {
                        message: format!("{}: {e}", spec.meta_disk.display()),
                    })
                }
            }
        } else {
            None
        };
        info!(
            "block drbd{}: attached {} ({:?}), {} sectors usable",
            spec.minor,
            spec.disk.display(),
            data.mode(),
            on_disk.size_sectors
        );
        let volume = spec.volume;
        let spec_minor = spec.minor;
        self.vols.insert(
            volume,
            Vol {
                minor: spec.minor,
                spec,
                data,
                meta,
            },
        );
        self.stats.entry(volume).or_default();
        self.minors.insert(volume, spec_minor);
        self.disk_opts = options;
        if self.engine.is_none() {
            match self.build_engine(vec![(volume, on_disk)]) {
                Ok(()) => Some(Response::Ok),
                Err(e) => {
                    self.vols.remove(&volume);
                    Some(e)
                }
            }
        } else {
            self.pending_attach = Some((volume, on_disk));
            None
        }
    }

    fn build_engine(&mut self, disks: Vec<(u16, engine::AttachedDisk)>) -> Result<(), Response> {
        let mut cfg = engine::ResourceConfig {
            name: self.opts.resource.clone(),
            ..Default::default()
        };
        cfg.volumes = disks.iter().map(|(v, _)| Volume(*v)).collect();
        cfg.connect_on_start = false;
        cfg.rng_seed = rand::random();
        cfg.disk = disk_config(&self.disk_opts);
        if let Some((_, _, o)) = &self.net {
            cfg.net = net_config(o).map_err(|m| Response::Error { message: m })?;
        }
        let on_disk = disks
            .into_iter()
            .map(|(v, d)| engine::VolumeOnDisk {
                volume: Volume(v),
                disk: Some(d),
            })
            .collect();
        let now = self.now();
        match engine::Resource::new(cfg, on_disk, now) {
            Ok(e) => {
                self.engine = Some(e);
                self.drain();
                Ok(())
            }
            Err(e) => Err(Response::Error {
                message: format!("{e}"),
            }),
        }
    }

    /// Sets the network configuration. The engine takes net options at construction, so a
    /// change is applied by rebuilding it from the on-disk state while StandAlone.
    fn set_net(
        &mut self,
        local: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        options: NetOptions,
    ) -> Result<(), Response> {
        net_config(&options).map_err(|m| Response::Error { message: m })?;
        let changed = self
            .net
            .as_ref()
            .is_some_and(|(l, p, o)| *l != local || *p != peer || !same_net(o, &options));
        let first = self.net.is_none();
        self.net = Some((local, peer, options));
        if !(changed || first) || self.engine.is_none() {
            return Ok(());
        }
        let standalone = self
            .engine
            .as_ref()
            .is_some_and(|e| e.conn_state() == engine::ConnState::StandAlone);
        if !standalone || !self.io.is_empty() || !self.requests.is_empty() {
            return Err(refused(
                10,
                151,
                "net options can only change while StandAlone (disconnect first)",
            ));
        }
        let mut disks = Vec::new();
        for v in self.vols.values() {
            match attach::read_meta(&v.spec) {
                Ok(d) => disks.push((v.spec.volume, d)),
                Err(e) => {
                    return Err(Response::Error {
                        message: e.to_string(),
                    })
                }
            }
        }
        self.engine = None;
        self.build_engine(disks)
    }

    fn after_step(&mut self) {
        if let Some((_, rx, deadline)) = &self.pending_down {
            let standalone = self
                .engine
                .as_ref()
                .is_none_or(|e| e.conn_state() == engine::ConnState::StandAlone);
            let refused = matches!(rx.try_recv(), Ok(r) if r != Response::Ok);
            if standalone || refused || std::time::Instant::now() >= *deadline {
                if let Some((reply, _, _)) = self.pending_down.take() {
                    self.finish_down(reply);
                }
            }
        }
        if let Some((_, deadline)) = &self.down_at {
            if self.io.is_empty() || std::time::Instant::now() >= *deadline {
                if let Some((reply, _)) = self.down_at.take() {
                    let _ = reply.send(Response::Ok);
                }
                self.down = true;
                return;
            }
        }
        let standalone = self
            .engine
            .as_ref()
            .is_some_and(|e| e.conn_state() == engine::ConnState::StandAlone);
        if self.pending_net.is_some() && standalone && self.io.is_empty() {
            if let (Some((options, reply)), Some((l, p, _))) =
                (self.pending_net.take(), self.net.clone())
            {
                match self.set_net(l, p, options) {
                    Ok(()) => self.admin_cmd(
                        AdminCommand::Connect {
                            discard_my_data: false,
                        },
                        reply,
                    ),
                    Err(e) => {
                        let _ = reply.send(e);
                    }
                }
            }
        }
        // Snapshots cost a little; only take them when someone is watching.
        if self.subs.is_empty() && self.waiters.is_empty() {
            self.last = None;
            return;
        }
        let snap = self.snapshot();
        if let Some(old) = &self.last {
            if *old != snap {
                let lines = snap.events2_changes(old);
                self.subs
                    .retain(|s| lines.iter().all(|l| s.send(l.clone()).is_ok()));
            }
        }
        let established = |c: &str| {
            !matches!(
                c,
                "StandAlone"
                    | "Disconnecting"
                    | "Unconnected"
                    | "Timeout"
                    | "BrokenPipe"
                    | "NetworkFailure"
                    | "ProtocolError"
                    | "TearDown"
                    | "WFConnection"
                    | "WFReportParams"
            )
        };
        let connected = snap
            .connection
            .as_ref()
            .is_some_and(|c| established(&c.cstate));
        let synced = connected
            && snap.volumes.iter().all(|v| {
                v.cstate == "Connected" && v.disk == "UpToDate" && v.peer_disk == "UpToDate"
            });
        let now = std::time::Instant::now();
        self.waiters.retain(|w| {
            let (reply, deadline, done) = match w {
                Waiter::Connect { reply, deadline } => (reply, deadline, connected),
                Waiter::Synced { reply, deadline } => (reply, deadline, synced),
            };
            if done {
                let _ = reply.send(Response::Ok);
                false
            } else if deadline.is_some_and(|d| now >= d) {
                let _ = reply.send(Response::TimedOut);
                false
            } else {
                true
            }
        });
        self.last = Some(snap);
    }

    fn snapshot(&self) -> StatusSnapshot {
        let name = self.opts.resource.clone();
        let Some(e) = self.engine.as_ref() else {
            return StatusSnapshot {
                name,
                role: "Secondary".into(),
                suspended: vec![],
                volumes: vec![],
                connection: None,
            };
        };
        let st = e.status();
        let volumes = st
            .volumes
            .iter()
            .filter_map(|v| {
                let minor = *self.minors.get(&v.volume.0)?;
                Some(VolumeStatus {
                    volume: v.volume.0,
                    minor,
                    disk: v.disk.name().into(),
                    blocked: vec![],
                    cstate: v.replication.name().into(),
                    peer_disk: v.peer_disk.name().into(),
                    resync_suspended: vec![],
                    size_kib: v.size_sectors / 2,
                    out_of_sync_kib: v.out_of_sync_kib,
                    stats: {
                        // The driver counts bytes in the `*_kib` fields; report KiB.
                        let b = self.stats.get(&v.volume.0).cloned().unwrap_or_default();
                        VolumeStats {
                            received_kib: b.received_kib / 1024,
                            sent_kib: b.sent_kib / 1024,
                            read_kib: b.read_kib / 1024,
                            written_kib: b.written_kib / 1024,
                            resynced_kib: v.resync_total_blocks * 4,
                            ..b
                        }
                    },
                })
            })
            .collect();
        // A resource that was never given a network configuration has no peer line.
        let connection = self.net.is_some().then(|| ConnectionStatus {
            cstate: st.conn.name().into(),
            peer_role: st.peer_role.name().into(),
        });
        StatusSnapshot {
            name,
            role: st.role.name().into(),
            suspended: vec![],
            volumes,
            connection,
        }
    }
}

fn refused(exit_code: i32, code: i32, text: &str) -> Response {
    Response::Refused {
        code,
        text: text.into(),
        exit_code,
    }
}

fn forward_upper(rx: Receiver<Result<Option<Bytes>, String>>, reply: Sender<Response>) {
    // Completion arrives later through the driver; wait for it off the driver thread.
    std::thread::spawn(move || {
        let resp = match rx.recv() {
            Ok(Ok(Some(d))) => Response::Data {
                data_hex: control::to_hex(&d),
            },
            Ok(Ok(None)) => Response::Ok,
            Ok(Err(e)) => Response::Error { message: e },
            Err(_) => Response::Error {
                message: "node stopped".into(),
            },
        };
        let _ = reply.send(resp);
    });
}

fn same_net(a: &NetOptions, b: &NetOptions) -> bool {
    let mut a = a.clone();
    a.discard_my_data = b.discard_my_data;
    a == *b
}

fn spawn_writer(
    s: io::Result<TcpStream>,
    events: Sender<Event>,
    gen: u64,
    send_timeout: Option<Duration>,
) -> Sender<Bytes> {
    let (tx, rx) = crossbeam_channel::unbounded::<Bytes>();
    if let Ok(mut s) = s {
        let _ = s.set_write_timeout(send_timeout);
        std::thread::spawn(move || {
            for b in rx {
                if let Err(e) = s.write_all(&b) {
                    let timed_out = matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    );
                    let why = if timed_out {
                        "send timed out (timeout × ko-count)".to_string()
                    } else {
                        format!("sock_sendmsg returned {e}")
                    };
                    let _ = events.send(Event::Lost {
                        gen,
                        why,
                        timed_out,
                    });
                    return;
                }
            }
        });
    }
    tx
}

fn spawn_reader(s: io::Result<TcpStream>, socket: Socket, events: Sender<Event>, gen: u64) {
    let Ok(mut s) = s else { return };
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    let _ = events.send(Event::Lost {
                        gen,
                        why: format!("sock was shut down by peer ({socket:?} socket)"),
                        timed_out: false,
                    });
                    return;
                }
                Ok(n) => {
                    if events
                        .send(Event::Received {
                            gen,
                            socket,
                            bytes: Bytes::copy_from_slice(&buf[..n]),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = events.send(Event::Lost {
                        gen,
                        why: format!("sock_recvmsg returned {e}"),
                        timed_out: false,
                    });
                    return;
                }
            }
        }
    });
}

// The engine's config grows; `..Default::default()` keeps this compiling when it does.
#[allow(clippy::needless_update)]
fn disk_config(o: &DiskOptions) -> engine::DiskConfig {
    engine::DiskConfig {
        resync_rate_kib: o.resync_rate_kib,
        c_plan_ahead_ds: o.c_plan_ahead_ds,
        c_delay_target_ds: o.c_delay_target_ds,
        c_fill_target_sect: o.c_fill_target_sect,
        c_max_rate_kib: o.c_max_rate_kib,
        al_extents: o.al_extents,
        fencing: match o.fencing.as_str() {
            "resource-only" => engine::Fencing::ResourceOnly,
            "resource-and-stonith" => engine::Fencing::ResourceAndStonith,
            _ => engine::Fencing::DontCare,
        },
        u_size_sect: o.size_sect,
        // Options the control protocol does not carry yet keep the kernel's defaults.
        ..Default::default()
    }
}

fn after_sb(s: &str) -> Result<engine::AfterSbPolicy, String> {
    use engine::AfterSbPolicy::*;
    Ok(match s {
        "disconnect" => Disconnect,
        "discard-younger-primary" => DiscardYoungerPrimary,
        "discard-older-primary" => DiscardOlderPrimary,
        "discard-zero-changes" => DiscardZeroChanges,
        "discard-least-changes" => DiscardLeastChanges,
        "discard-local" => DiscardLocal,
        "discard-remote" => DiscardRemote,
        "consensus" => Consensus,
        "discard-secondary" => DiscardSecondary,
        "call-pri-lost-after-sb" | "call-pri-lost" => CallPriLost,
        "violently-as0p" | "violently" => Violently,
        other => return Err(format!("unknown after-sb policy '{other}'")),
    })
}

/// Net options to the engine's config. Anything the engine cannot do is refused here.
#[allow(clippy::needless_update)]
pub fn net_config(o: &NetOptions) -> Result<engine::NetConfig, String> {
    let protocol = match o.protocol {
        'A' => engine::Protocol::A,
        'B' => engine::Protocol::B,
        'C' => engine::Protocol::C,
        p => return Err(format!("unknown protocol '{p}'")),
    };
    let auth = match (&o.cram_hmac_alg, &o.shared_secret) {
        (Some(alg), secret) => {
            let alg = match alg.as_str() {
                "sha1" => engine::HmacAlg::Sha1,
                "sha256" => engine::HmacAlg::Sha256,
                "md5" => engine::HmacAlg::Md5,
                other => {
                    return Err(format!(
                        "cram-hmac-alg '{other}' is not supported (sha1, sha256, md5)"
                    ))
                }
            };
            let secret = secret.clone().unwrap_or_default().into_bytes();
            if secret.len() > 63 {
                return Err("shared-secret is longer than 63 characters".into());
            }
            Some((alg, secret))
        }
        (None, _) => None,
    };
    Ok(engine::NetConfig {
        protocol,
        auth,
        after_sb_0pri: after_sb(&o.after_sb_0pri)?,
        after_sb_1pri: after_sb(&o.after_sb_1pri)?,
        after_sb_2pri: after_sb(&o.after_sb_2pri)?,
        rr_conflict: after_sb(&o.rr_conflict)?,
        allow_two_primaries: o.allow_two_primaries,
        always_asbp: o.always_asbp,
        integrity_alg: o.data_integrity_alg.clone().unwrap_or_default(),
        ping_int_s: o.ping_int_s,
        ping_timeout_ds: o.ping_timeout_ds,
        timeout_ds: o.timeout_ds,
        ko_count: o.ko_count,
        connect_int_s: o.connect_int_s,
        max_buffers: o.max_buffers,
        max_epoch_size: o.max_epoch_size,
        use_rle: o.use_rle,
        verify_alg: o.verify_alg.clone().unwrap_or_default(),
        csums_alg: o.csums_alg.clone().unwrap_or_default(),
        ..Default::default()
    })
}
