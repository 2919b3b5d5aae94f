//! `Pair`: two engines wired by in-memory queues (quinn's tests/util.rs shape). Disks are byte
//! vectors; every output is executed by the harness, and `drive` runs until both sides are idle.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use udrbd_engine::*;

const SECTORS: u64 = 8192; // 4 MiB data area

struct Node {
    r: Resource,
    disk: Vec<u8>,
    pending: VecDeque<Input>,
    completed: BTreeMap<u64, Result<Option<Bytes>, RequestError>>,
    admin: Vec<(AdminCommand, Result<(), AdminRefusal>)>,
    wants_connect: bool,
    connected: bool,
    log: Vec<String>,
    sent: Vec<(Socket, Bytes)>,
    /// Hold local-write completions (to test completion ordering).
    hold_disk_writes: bool,
    held: Vec<Input>,
}

struct Pair {
    a: Node,
    b: Node,
    /// Bytes in flight a→b and b→a, per socket.
    ab: VecDeque<(Socket, Bytes)>,
    ba: VecDeque<(Socket, Bytes)>,
    now: u64,
    link_up: bool,
}

fn node(cfg: ResourceConfig, fresh: bool) -> Node {
    let backing = SECTORS + 2048;
    let layout = MetaLayout::internal(backing);
    let data_sectors = MetaLayout::internal_data_sectors(backing);
    let disk = if fresh {
        Some(AttachedDisk::fresh(data_sectors, layout))
    } else {
        None
    };
    let r = Resource::new(
        cfg,
        vec![VolumeOnDisk {
            volume: Volume(0),
            disk,
        }],
        Instant(0),
    )
    .expect("valid config");
    Node {
        r,
        disk: vec![0; (data_sectors * 512) as usize],
        pending: VecDeque::new(),
        completed: BTreeMap::new(),
        admin: Vec::new(),
        wants_connect: false,
        connected: false,
        log: Vec::new(),
        sent: Vec::new(),
        hold_disk_writes: false,
        held: Vec::new(),
    }
}

impl Pair {
    fn new(ca: ResourceConfig, cb: ResourceConfig) -> Pair {
        Pair {
            a: node(ca, true),
            b: node(cb, true),
            ab: VecDeque::new(),
            ba: VecDeque::new(),
            now: 0,
            link_up: true,
        }
    }
    fn default_pair() -> Pair {
        let c = |seed| ResourceConfig {
            rng_seed: seed,
            ..Default::default()
        };
        Pair::new(c(1), c(2))
    }

    /// Runs one node's outputs. Returns whether anything happened.
    fn drain(n: &mut Node, out: &mut VecDeque<(Socket, Bytes)>, now: u64) -> bool {
        let mut any = false;
        while let Some(i) = n.pending.pop_front() {
            n.r.handle(Instant(now), i);
            any = true;
        }
        while let Some(o) = n.r.poll_output() {
            any = true;
            match o {
                Output::Send { socket, bytes } => {
                    n.sent.push((socket, bytes.clone()));
                    if n.connected {
                        out.push_back((socket, bytes));
                    }
                }
                Output::Connect => n.wants_connect = true,
                Output::Disconnect => {
                    n.connected = false;
                    n.wants_connect = false;
                }
                Output::DiskRead {
                    io,
                    sector,
                    len_bytes,
                    ..
                } => {
                    let s = (sector * 512) as usize;
                    let b = Bytes::copy_from_slice(&n.disk[s..s + len_bytes as usize]);
                    n.pending.push_back(Input::DiskDone {
                        io,
                        result: Ok(Some(b)),
                    });
                }
                Output::DiskWrite {
                    io, sector, data, ..
                } => {
                    let s = (sector * 512) as usize;
                    n.disk[s..s + data.len()].copy_from_slice(&data);
                    let done = Input::DiskDone {
                        io,
                        result: Ok(None),
                    };
                    if n.hold_disk_writes {
                        n.held.push(done);
                    } else {
                        n.pending.push_back(done);
                    }
                }
                Output::DiskDiscard {
                    io,
                    sector,
                    len_bytes,
                    ..
                } => {
                    let s = (sector * 512) as usize;
                    n.disk[s..s + len_bytes as usize].fill(0);
                    n.pending.push_back(Input::DiskDone {
                        io,
                        result: Ok(None),
                    });
                }
                Output::DiskFlush { io, .. } => n.pending.push_back(Input::DiskDone {
                    io,
                    result: Ok(None),
                }),
                Output::WriteMeta { io, .. } => {
                    n.pending.push_back(Input::MetaDone { io, result: Ok(()) })
                }
                Output::Complete { request, result } => {
                    n.completed.insert(request.0, result);
                }
                Output::AdminDone { command, result } => n.admin.push((command, result)),
                Output::StateChanged(c) => n.log.push(c.log_line()),
                Output::Log { message, .. } => n.log.push(message),
            }
        }
        any
    }

    fn step(&mut self) -> bool {
        let mut any = Pair::drain(&mut self.a, &mut self.ab, self.now);
        any |= Pair::drain(&mut self.b, &mut self.ba, self.now);
        if self.link_up
            && self.a.wants_connect
            && self.b.wants_connect
            && !self.a.connected
            && !self.b.connected
        {
            self.a.wants_connect = false;
            self.b.wants_connect = false;
            self.a.connected = true;
            self.b.connected = true;
            self.ab.clear();
            self.ba.clear();
            // A accepted the meta socket: it holds RESOLVE_CONFLICTS.
            self.a.pending.push_back(Input::Connected {
                resolve_conflicts: true,
            });
            self.b.pending.push_back(Input::Connected {
                resolve_conflicts: false,
            });
            any = true;
        }
        // A side that dropped the sockets is seen by the other as a connection loss.
        if self.a.connected != self.b.connected {
            let lost = if self.a.connected {
                &mut self.a
            } else {
                &mut self.b
            };
            lost.connected = false;
            lost.pending
                .push_back(Input::ConnectionLost { timed_out: false });
            self.ab.clear();
            self.ba.clear();
            any = true;
        }
        while let Some((socket, bytes)) = self.ab.pop_front() {
            self.b.pending.push_back(Input::Received { socket, bytes });
            any = true;
        }
        while let Some((socket, bytes)) = self.ba.pop_front() {
            self.a.pending.push_back(Input::Received { socket, bytes });
            any = true;
        }
        any
    }

    /// Runs until idle, advancing time to the next timer when nothing else happens; panics on
    /// livelock (drive_bounded).
    fn drive_until(&mut self, mut done: impl FnMut(&Pair) -> bool) {
        for _ in 0..200_000 {
            if done(self) {
                return;
            }
            if !self.step() {
                let t = [self.a.r.poll_timeout(), self.b.r.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match t {
                    Some(t) => {
                        self.now = self.now.max(t.0);
                        let now = Instant(self.now);
                        self.a.r.handle_timeout(now);
                        self.b.r.handle_timeout(now);
                    }
                    None => {
                        assert!(done(self), "idle before the goal was reached");
                        return;
                    }
                }
            }
        }
        panic!(
            "livelock: goal not reached in 200000 steps\nA: {:#?}\nB: {:#?}",
            self.a.log, self.b.log
        );
    }

    fn admin(n: &mut Node, c: AdminCommand) {
        n.pending.push_back(Input::Admin(c));
    }

    fn connected(&self) -> bool {
        self.a.r.conn_state() == ConnState::Connected
            && self.b.r.conn_state() == ConnState::Connected
    }

    fn write(&mut self, id: u64, sector: u64, byte: u8, len: usize) {
        let data = Bytes::from(vec![byte; len]);
        self.a.pending.push_back(Input::Request {
            id: RequestId(id),
            volume: Volume(0),
            op: RequestOp::Write {
                sector,
                data,
                fua: false,
                preflush: false,
            },
        });
    }
}

fn up_to_date_pair() -> Pair {
    let mut p = Pair::default_pair();
    p.drive_until(|p| p.connected());
    Pair::admin(&mut p.a, AdminCommand::Primary { force: true });
    p.drive_until(|p| {
        p.a.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.connected()
    });
    p
}

#[test]
fn handshake_reaches_connected_with_fresh_disks() {
    // spec §2.3, §10.2 rule 10: two fresh disks connect without sync, both Inconsistent.
    let mut p = Pair::default_pair();
    p.drive_until(|p| p.connected());
    assert_eq!(p.a.r.agreed_protocol_version(), Some(101));
    assert_eq!(p.a.r.disk_state(Volume(0)), Some(DiskState::Inconsistent));
    assert_eq!(
        p.b.r.peer_disk_state(Volume(0)),
        Some(DiskState::Inconsistent)
    );
    assert!(
        p.a.log.iter().any(|l| l == "uuid_compare()=0 by rule 10"),
        "{:#?}",
        p.a.log
    );
    assert!(p
        .a
        .log
        .iter()
        .any(|l| l.contains("conn( WFReportParams -> Connected )")));
}

#[test]
fn primary_force_full_sync_copies_data() {
    let mut p = Pair::default_pair();
    p.drive_until(|p| p.connected());
    // Data written locally before the sync must reach the peer via the full sync.
    p.a.disk[4096..8192].fill(0xab);
    Pair::admin(&mut p.a, AdminCommand::Primary { force: true });
    p.drive_until(|p| p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate) && p.connected());
    assert_eq!(p.a.admin.last().map(|x| x.1.clone()), Some(Ok(())));
    assert_eq!(p.a.r.role(), Role::Primary);
    assert_eq!(p.b.r.peer_role(), Role::Primary);
    assert!(
        p.b.log.iter().any(|l| l == "uuid_compare()=-2 by rule 20"),
        "{:#?}",
        p.b.log
    );
    assert!(p.a.disk == p.b.disk, "data areas differ after full sync");
    assert_eq!(p.a.r.out_of_sync_blocks(Volume(0)), Some(0));
    assert_eq!(p.b.r.out_of_sync_blocks(Volume(0)), Some(0));
    // UUIDs agree after the sync (spec §10.1 resync finished).
    let (ua, ub) = (
        p.a.r.uuids(Volume(0)).unwrap(),
        p.b.r.uuids(Volume(0)).unwrap(),
    );
    assert_eq!(ua[0] & !1, ub[0] & !1);
    assert_eq!(ua[1], 0);
    assert_eq!(ua[2], ub[2]);
}

#[test]
fn protocol_c_write_completes_only_after_peer_ack() {
    let mut p = up_to_date_pair();
    // The peer's disk write is held: no P_WRITE_ACK can be sent, so no completion.
    p.b.hold_disk_writes = true;
    p.write(7, 0, 0x5a, 4096);
    for _ in 0..50 {
        p.step();
    }
    assert!(
        !p.a.completed.contains_key(&7),
        "completed before the peer's write ack"
    );
    // Release the peer's write: ack flows back, the write completes.
    let held = std::mem::take(&mut p.b.held);
    p.b.hold_disk_writes = false;
    p.b.pending.extend(held);
    p.drive_until(|p| p.a.completed.contains_key(&7));
    assert_eq!(p.a.completed[&7], Ok(None));
    assert_eq!(&p.b.disk[..4096], &[0x5a; 4096][..]);
    assert_eq!(&p.a.disk[..4096], &[0x5a; 4096][..]);
}

#[test]
fn disconnect_marks_out_of_sync_and_reconnect_resyncs_bitmap_only() {
    let mut p = up_to_date_pair();
    p.write(1, 0, 1, 4096);
    p.drive_until(|p| p.a.completed.contains_key(&1));
    // Let the barrier ack arrive so write 1 is fully confirmed.
    while p.step() {}
    // Cut the link: A loses the connection, keeps writing (out of sync), then reconnects.
    p.link_up = false;
    p.a.connected = false;
    p.a.pending
        .push_back(Input::ConnectionLost { timed_out: false });
    p.drive_until(|p| {
        p.a.r.conn_state() == ConnState::WFConnection
            && p.b.r.conn_state() == ConnState::WFConnection
    });
    p.write(2, 64, 2, 8192);
    p.drive_until(|p| p.a.completed.contains_key(&2));
    assert_eq!(p.a.completed[&2], Ok(None));
    assert_eq!(
        p.a.r.out_of_sync_blocks(Volume(0)),
        Some(2),
        "writes while disconnected are out of sync"
    );
    assert_eq!(&p.b.disk[64 * 512..64 * 512 + 8192], &[0u8; 8192][..]);
    p.link_up = true;
    p.drive_until(|p| {
        p.connected()
            && p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.a.r.out_of_sync_blocks(Volume(0)) == Some(0)
    });
    assert!(
        p.a.log.iter().any(|l| l == "uuid_compare()=1 by rule 70"),
        "{:#?}",
        p.a.log
    );
    assert!(p.b.log.iter().any(|l| l == "uuid_compare()=-1 by rule 50"));
    assert!(
        p.b.log
            .iter()
            .any(|l| l.contains("will sync 8 KB [2 bits set]")),
        "bitmap-only resync: {:#?}",
        p.b.log
    );
    assert!(p.a.disk == p.b.disk);
}

#[test]
fn unacked_writes_are_out_of_sync_after_connection_loss() {
    // spec §12: a write whose barrier was not acked is marked out of sync on connection loss.
    let mut p = up_to_date_pair();
    p.b.hold_disk_writes = true;
    p.write(3, 128, 3, 4096);
    for _ in 0..20 {
        p.step();
    }
    p.link_up = false;
    p.a.connected = false;
    p.a.pending
        .push_back(Input::ConnectionLost { timed_out: false });
    p.drive_until(|p| p.a.completed.contains_key(&3));
    assert_eq!(p.a.completed[&3], Ok(None), "local write succeeded");
    assert_eq!(p.a.r.out_of_sync_blocks(Volume(0)), Some(1));
}

#[test]
fn auth_with_equal_secrets_connects() {
    let c = |seed| ResourceConfig {
        rng_seed: seed,
        net: NetConfig {
            auth: Some((HmacAlg::Sha1, b"s3cret".to_vec())),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = Pair::new(c(1), c(2));
    p.drive_until(|p| p.connected());
    assert!(p
        .a
        .log
        .iter()
        .any(|l| l == "Peer authenticated using 20 bytes HMAC"));
}

#[test]
fn auth_with_wrong_secret_goes_standalone() {
    let c = |seed, s: &[u8]| ResourceConfig {
        rng_seed: seed,
        net: NetConfig {
            auth: Some((HmacAlg::Sha1, s.to_vec())),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = Pair::new(c(1, b"one"), c(2, b"two"));
    p.drive_until(|p| {
        p.a.r.conn_state() == ConnState::StandAlone && p.b.r.conn_state() == ConnState::StandAlone
    });
    assert!(p
        .a
        .log
        .iter()
        .any(|l| l.contains("Authentication of peer failed")));
}

#[test]
fn protocol_mismatch_refuses_connection() {
    let a = ResourceConfig {
        rng_seed: 1,
        ..Default::default()
    };
    let b = ResourceConfig {
        rng_seed: 2,
        net: NetConfig {
            protocol: Protocol::A,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut p = Pair::new(a, b);
    p.drive_until(|p| {
        p.a.r.conn_state() == ConnState::StandAlone && p.b.r.conn_state() == ConnState::StandAlone
    });
    assert!(p
        .a
        .log
        .iter()
        .any(|l| l.contains("incompatible communication protocols")));
}

#[test]
fn reads_are_local_when_up_to_date() {
    let mut p = up_to_date_pair();
    p.write(9, 8, 0x77, 4096);
    p.drive_until(|p| p.a.completed.contains_key(&9));
    p.a.pending.push_back(Input::Request {
        id: RequestId(10),
        volume: Volume(0),
        op: RequestOp::Read {
            sector: 8,
            len_bytes: 4096,
        },
    });
    p.drive_until(|p| p.a.completed.contains_key(&10));
    assert_eq!(p.a.completed[&10], Ok(Some(Bytes::from(vec![0x77; 4096]))));
}

#[test]
fn primary_refused_without_up_to_date_data() {
    let mut p = Pair::default_pair();
    p.drive_until(|p| p.connected());
    Pair::admin(&mut p.b, AdminCommand::Primary { force: false });
    p.drive_until(|p| !p.b.admin.is_empty());
    let r = p.b.admin[0].1.clone().unwrap_err();
    assert_eq!(r.text, "Need access to UpToDate data");
    assert_eq!((r.code, r.exit_code), (-2, 11));
}

#[test]
fn two_volumes_share_one_connection() {
    // spec §3: per-volume packets carry the volume in the h100 header; each volume has its own
    // disk state, bitmap and UUIDs.
    let backing = SECTORS + 2048;
    let layout = MetaLayout::internal(backing);
    let data = MetaLayout::internal_data_sectors(backing);
    let mk = |seed| {
        let cfg = ResourceConfig {
            rng_seed: seed,
            volumes: vec![Volume(0), Volume(1)],
            ..Default::default()
        };
        let vols = vec![
            VolumeOnDisk {
                volume: Volume(0),
                disk: Some(AttachedDisk::fresh(data, layout)),
            },
            VolumeOnDisk {
                volume: Volume(1),
                disk: Some(AttachedDisk::fresh(data, layout)),
            },
        ];
        Resource::new(cfg, vols, Instant(0)).expect("config")
    };
    let mut p = Pair::default_pair();
    p.a.r = mk(1);
    p.b.r = mk(2);
    p.drive_until(|p| p.connected());
    assert_eq!(p.a.r.conn_state_of(Volume(1)), Some(ConnState::Connected));
    Pair::admin(&mut p.a, AdminCommand::Primary { force: true });
    p.drive_until(|p| {
        p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.b.r.disk_state(Volume(1)) == Some(DiskState::UpToDate)
    });
    // Each volume got its own generation identifiers.
    assert_ne!(
        p.a.r.uuids(Volume(0)).unwrap()[0],
        p.a.r.uuids(Volume(1)).unwrap()[0]
    );
    assert_eq!(
        p.a.r.uuids(Volume(1)).unwrap()[0] & !1,
        p.b.r.uuids(Volume(1)).unwrap()[0] & !1
    );
    // A write to volume 1 is replicated to volume 1 only (the harness has one disk image, so
    // check via the peer's state: the write completes after the peer's ack on volume 1).
    p.a.pending.push_back(Input::Request {
        id: RequestId(5),
        volume: Volume(1),
        op: RequestOp::Write {
            sector: 0,
            data: Bytes::from(vec![1; 4096]),
            fua: false,
            preflush: false,
        },
    });
    p.drive_until(|p| p.a.completed.contains_key(&5));
    assert_eq!(p.a.completed[&5], Ok(None));
    assert_eq!(p.a.r.out_of_sync_blocks(Volume(1)), Some(0));
}

#[test]
fn state_changes_render_as_events2_and_kernel_log_lines() {
    let mut p = Pair::default_pair();
    let mut changes = Vec::new();
    for _ in 0..200 {
        p.step();
        // Steal the outputs of A once to check the rendering (the harness keeps only log lines).
        if p.connected() {
            break;
        }
    }
    p.drive_until(|p| p.connected());
    assert!(p
        .a
        .log
        .iter()
        .any(|l| l == "conn( WFConnection -> WFReportParams )"));
    let c = StateChange {
        volume: Volume(0),
        old: DrbdState::standalone(DiskState::UpToDate),
        new: DrbdState {
            conn: ConnState::Connected,
            peer: Role::Secondary,
            pdsk: DiskState::UpToDate,
            ..DrbdState::standalone(DiskState::UpToDate)
        },
    };
    changes.extend(c.events2_lines("r0"));
    assert_eq!(
        changes,
        [
            "change connection name:r0 peer-node-id:1 connection:Connected role:Secondary",
            "change peer-device name:r0 peer-node-id:1 volume:0 replication:Established peer-disk:UpToDate",
        ]
    );
    assert_eq!(
        c.log_line(),
        "peer( Unknown -> Secondary ) conn( StandAlone -> Connected ) pdsk( DUnknown -> UpToDate )"
    );
}

#[test]
fn graceful_disconnect_goes_standalone_and_peer_reconnects() {
    let mut p = up_to_date_pair();
    Pair::admin(&mut p.b, AdminCommand::Disconnect { force: false });
    p.drive_until(|p| {
        p.b.r.conn_state() == ConnState::StandAlone && p.a.r.conn_state() == ConnState::WFConnection
    });
    assert_eq!(p.b.admin.last().map(|x| x.1.clone()), Some(Ok(())));
    assert!(
        p.a.log
            .iter()
            .any(|l| l.contains("conn( Connected -> TearDown )")),
        "{:#?}",
        p.a.log
    );
    Pair::admin(
        &mut p.b,
        AdminCommand::Connect {
            discard_my_data: false,
        },
    );
    p.drive_until(|p| p.connected());
}

#[test]
fn invalidate_remote_runs_a_full_sync() {
    let mut p = up_to_date_pair();
    p.write(1, 16, 9, 4096);
    p.drive_until(|p| p.a.completed.contains_key(&1));
    while p.step() {}
    p.b.disk.fill(0); // the peer loses its data behind DRBD's back
    Pair::admin(
        &mut p.a,
        AdminCommand::InvalidateRemote { volume: Volume(0) },
    );
    p.drive_until(|p| {
        p.a.admin
            .iter()
            .any(|x| matches!(x.0, AdminCommand::InvalidateRemote { .. }))
            && p.connected()
            && p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
    });
    assert!(p.a.disk == p.b.disk, "full sync restored the peer");
}

#[test]
fn outdate_is_refused_while_connected() {
    let mut p = up_to_date_pair();
    Pair::admin(&mut p.b, AdminCommand::Outdate { volume: Volume(0) });
    p.drive_until(|p| !p.b.admin.is_empty());
    let r = p.b.admin[0].1.clone().unwrap_err();
    assert_eq!(
        (r.code, r.text.as_str(), r.exit_code),
        (-6, "Refusing to be Outdated while Connected", 11)
    );
}

#[test]
fn every_packet_we_send_decodes_with_udrbd_wire() {
    // The wire crate applies the kernel receiver's framing and payload-length rules (spec §3, §5);
    // everything both engines sent during a handshake, forced full sync and writes must pass.
    let mut p = up_to_date_pair();
    for i in 0..20 {
        p.write(100 + i, i * 8, i as u8, 4096);
    }
    p.drive_until(|p| (100..120).all(|i| p.a.completed.contains_key(&i)));
    while p.step() {}
    let mut decoded = 0;
    for n in [&p.a, &p.b] {
        for sock in [Socket::Data, Socket::Meta] {
            let mut stream = Vec::new();
            for (s, b) in &n.sent {
                if *s == sock {
                    stream.extend_from_slice(b);
                }
            }
            let agreed = udrbd_wire::Dialect {
                apv: 101,
                features: udrbd_wire::FeatureFlags(0xf),
                digest_len: 0,
            };
            // The meta socket carries nothing before the data socket's features exchange.
            let first = if sock == Socket::Meta {
                agreed
            } else {
                udrbd_wire::Dialect::INITIAL
            };
            let mut dec = udrbd_wire::StreamDecoder::new(first, 1 << 21);
            let mut off = 0;
            while off < stream.len() {
                match dec.decode(&stream[off..]) {
                    Ok(udrbd_wire::Decoded::Frame {
                        frame, consumed, ..
                    }) => {
                        if let udrbd_wire::Packet::ConnectionFeatures(_) = frame.packet {
                            dec.set_dialect(agreed);
                        }
                        off += consumed;
                        decoded += 1;
                    }
                    Ok(udrbd_wire::Decoded::NeedMore { need }) => {
                        panic!("truncated at {off}, need {need}")
                    }
                    Err(e) => panic!("{sock:?} packet at byte {off} does not decode: {e}"),
                }
            }
        }
    }
    assert!(decoded > 100, "only {decoded} packets checked");
}

/// A disk whose meta-data says "crashed Primary" (MDF_CRASHED_PRIMARY) keeps saying so when it is
/// attached to a running node, not only at start: with equal UUIDs, rule 40 then makes it the
/// SyncSource of its activity-log bits (drbd_adm_attach). Sim seed 5984.
#[test]
fn attaching_a_crashed_primary_disk_resyncs_its_bits() {
    let mut p = up_to_date_pair();
    Pair::admin(&mut p.a, AdminCommand::Secondary);
    p.drive_until(|p| p.b.r.peer_role() == Role::Secondary);
    let uuids = p.a.r.uuids(Volume(0)).expect("attached");
    let peer = p.b.r.uuids(Volume(0)).expect("attached");
    assert_eq!((uuids[0] & !1, &uuids[1..]), (peer[0] & !1, &peer[1..]));
    Pair::admin(&mut p.a, AdminCommand::Detach { volume: Volume(0) });
    p.drive_until(|p| p.b.r.peer_disk_state(Volume(0)) == Some(DiskState::Diskless));
    // While detached, the backing device got a block the peer never saw (a write the crashed
    // Primary's activity log covers; the restart's apply-al set its bit).
    p.a.disk[8 * 512..16 * 512].fill(0x77);
    let backing = SECTORS + 2048;
    let mut disk = AttachedDisk::fresh(
        MetaLayout::internal_data_sectors(backing),
        MetaLayout::internal(backing),
    );
    disk.uuids = uuids;
    disk.flags = udrbd_engine::resource::MDF_CONSISTENT
        | udrbd_engine::resource::MDF_WAS_UP_TO_DATE
        | udrbd_engine::resource::MDF_CRASHED_PRIMARY;
    disk.bitmap = vec![0; disk.bitmap.len()];
    disk.bitmap[0] = 1 << 1; // block 1 = sectors 8..16
    Pair::admin(
        &mut p.a,
        AdminCommand::Attach {
            volume: Volume(0),
            disk: Box::new(disk),
        },
    );
    p.drive_until(|p| {
        p.connected()
            && p.a.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate)
            && p.a.r.out_of_sync_blocks(Volume(0)) == Some(0)
    });
    assert!(
        p.a.log.iter().any(|l| l == "uuid_compare()=1 by rule 40"),
        "{:#?}",
        p.a.log
    );
    assert_eq!(&p.b.disk[8 * 512..16 * 512], &[0x77; 4096][..]);
    assert!(p.a.disk == p.b.disk);
}

/// `status --statistics` sent:/received: count data payload only (IB-2): a full sync plus one
/// 4 KiB write is the whole data area plus 8 sectors on both ends, and nothing the other way.
#[test]
fn data_sector_counters_count_payload_only() {
    let mut p = up_to_date_pair();
    let cap = p.a.r.capacity_sectors(Volume(0)).expect("attached");
    p.write(1, 64, 5, 4096);
    p.drive_until(|p| p.a.completed.contains_key(&1));
    while p.step() {}
    let a = p.a.r.data_sectors_sent_received(Volume(0)).expect("volume");
    let b = p.b.r.data_sectors_sent_received(Volume(0)).expect("volume");
    assert_eq!(a, (cap + 8, 0));
    assert_eq!(b, (0, cap + 8));
}
