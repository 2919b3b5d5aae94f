//! The committed kernel captures decode with `udrbd-wire`, and the packet sequence is what
//! kernel DRBD 8.4.11 sends: initial packets, features, auth (when configured), P_PROTOCOL,
//! P_SYNC_PARAM89, P_SIZES, P_UUIDS, P_STATE, the bitmap exchange, P_SYNC_UUID, resync
//! requests and replies, resync write acks. Runs on the host; no VM needed.

use std::net::SocketAddrV4;
use udrbd_interop_tests::captures::{self, AUTH_SECRET, BACKING_MIB};
use udrbd_interop_tests::pcap;
use udrbd_wire::command::Command;
use udrbd_wire::features::negotiate;
use udrbd_wire::header::MAGIC_100;
use udrbd_wire::{
    auth, BitmapReceiver, BlockId, ConnState, Decoded, Dialect, DiskState, Features, Frame,
    HmacAlg, Packet, Role, StreamDecoder,
};

/// One TCP direction, decoded.
struct Direction {
    from: SocketAddrV4,
    to: SocketAddrV4,
    frames: Vec<Frame>,
}

impl Direction {
    fn commands(&self) -> Vec<Command> {
        self.frames.iter().map(|f| f.packet.command()).collect()
    }

    fn first(&self) -> Option<&Packet> {
        self.frames.first().map(|f| &f.packet)
    }

    fn position(&self, cmd: Command) -> Option<usize> {
        self.commands().iter().position(|&c| c == cmd)
    }
}

/// The four directions of one kernel-to-kernel connection.
struct Conversation {
    data_from_connector: Direction,
    data_from_acceptor: Direction,
    meta_from_connector: Direction,
    meta_from_acceptor: Option<Direction>,
    /// The two nodes' listening ports (the connection's acceptor sides).
    ports: [u16; 2],
    /// The features both sides advertised and what they agree on.
    agreed: Dialect,
}

/// Decodes every frame of `bytes`, starting in `dialect` and switching to `agreed` once the
/// handshake's initial packets are past. A capture may stop inside a frame; only that last
/// partial frame may be left over.
fn decode_stream(bytes: &[u8], agreed: Dialect) -> Vec<Frame> {
    let mut dialect = if bytes.starts_with(&MAGIC_100.to_be_bytes()) {
        agreed
    } else {
        Dialect::INITIAL
    };
    let mut frames = Vec::new();
    let mut rest = bytes;
    loop {
        let dec = StreamDecoder::new(dialect, udrbd_wire::MAX_BIO_SIZE + 4096);
        match dec.decode(rest) {
            Ok(Decoded::Frame {
                frame, consumed, ..
            }) => {
                if matches!(
                    frame.packet,
                    Packet::ConnectionFeatures(_) | Packet::InitialMeta
                ) {
                    dialect = agreed;
                }
                frames.push(frame);
                rest = &rest[consumed..];
            }
            Ok(Decoded::NeedMore { need }) => {
                assert!(
                    need > rest.len(),
                    "decoder asked for {need} with {} there",
                    rest.len()
                );
                return frames;
            }
            Err(e) => panic!(
                "decode error after {} frames ({} bytes left): {e}; last frames: {:?}",
                frames.len(),
                rest.len(),
                frames
                    .iter()
                    .rev()
                    .take(3)
                    .map(|f| f.packet.command())
                    .collect::<Vec<_>>()
            ),
        }
    }
}

fn first_features(bytes: &[u8]) -> Option<Features> {
    let dec = StreamDecoder::new(Dialect::INITIAL, 4096);
    let mut rest = bytes;
    for _ in 0..2 {
        match dec.decode(rest).ok()? {
            Decoded::Frame {
                frame, consumed, ..
            } => {
                if let Packet::ConnectionFeatures(f) = frame.packet {
                    return Some(f);
                }
                rest = &rest[consumed..];
            }
            Decoded::NeedMore { .. } => return None,
        }
    }
    None
}

fn load(name: &str) -> Conversation {
    let path = captures::path(name);
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        file.len() < 1 << 20,
        "fixture {} is over 1 MiB",
        path.display()
    );
    let streams = pcap::streams(&file).unwrap();
    for s in &streams {
        assert_eq!(
            s.gap_bytes, 0,
            "capture lost bytes in {} -> {}",
            s.from, s.to
        );
    }
    // Both sides' P_CONNECTION_FEATURES give the dialect, as in the kernel's drbd_do_features.
    let features: Vec<Features> = streams
        .iter()
        .filter_map(|s| first_features(&s.bytes))
        .collect();
    assert_eq!(features.len(), 2, "expected features from both sides");
    let agreed = negotiate(&features[0], &features[1]).unwrap();
    let agreed = Dialect {
        apv: agreed.apv,
        features: agreed.features,
        digest_len: 0,
    };

    let mut dirs: Vec<Direction> = streams
        .iter()
        .map(|s| Direction {
            from: s.from,
            to: s.to,
            frames: decode_stream(&s.bytes, agreed),
        })
        .collect();
    let mut take = |pred: &dyn Fn(&Direction) -> bool| -> Option<Direction> {
        let i = dirs.iter().position(pred)?;
        Some(dirs.remove(i))
    };
    let data_from_connector =
        take(&|d| d.first() == Some(&Packet::InitialData)).expect("P_INITIAL_DATA stream");
    let meta_from_connector =
        take(&|d| d.first() == Some(&Packet::InitialMeta)).expect("P_INITIAL_META stream");
    let (c, a) = (data_from_connector.from, data_from_connector.to);
    let data_from_acceptor = take(&|d| d.from == a && d.to == c).expect("acceptor's data stream");
    let (mc, ma) = (meta_from_connector.from, meta_from_connector.to);
    let meta_from_acceptor = take(&|d| d.from == ma && d.to == mc);
    assert!(
        dirs.is_empty(),
        "unexpected extra TCP streams: {}",
        dirs.len()
    );
    // Both nodes connect and accept at once, so the meta socket may run the other way round
    // from the data socket: the listening ports tell the nodes apart.
    let ports = [data_from_connector.to.port(), meta_from_connector.to.port()];
    assert_ne!(
        ports[0], ports[1],
        "data and meta sockets accepted by the same node"
    );
    Conversation {
        data_from_connector,
        data_from_acceptor,
        meta_from_connector,
        meta_from_acceptor,
        ports,
        agreed,
    }
}

impl Conversation {
    /// The listening port of the node that sent `dir`.
    fn sender(&self, dir: &Direction) -> u16 {
        if self.ports.contains(&dir.from.port()) {
            dir.from.port()
        } else if dir.to.port() == self.ports[0] {
            self.ports[1]
        } else {
            self.ports[0]
        }
    }

    /// The meta-socket direction that `node` sends on.
    fn meta_from(&self, node: u16) -> Option<&Direction> {
        std::iter::once(&self.meta_from_connector)
            .chain(self.meta_from_acceptor.as_ref())
            .find(|d| self.sender(d) == node)
    }
}

/// `cmds` appear in `dir` in this order (other packets may sit between them).
fn assert_in_order(dir: &Direction, cmds: &[Command]) {
    let seen = dir.commands();
    let mut at = 0;
    for want in cmds {
        match seen[at..].iter().position(|c| c == want) {
            Some(i) => at += i + 1,
            None => panic!(
                "{} -> {}: {want:?} missing after position {at}; sequence: {seen:?}",
                dir.from, dir.to
            ),
        }
    }
}

fn check_handshake(conv: &Conversation, with_auth: bool) {
    assert_eq!(conv.agreed.apv, 101, "kernel 8.4.11 agrees on protocol 101");
    assert_eq!(
        conv.agreed.features.0, 0xf,
        "TRIM THIN_RESYNC WSAME WZEROES"
    );
    for dir in [&conv.data_from_connector, &conv.data_from_acceptor] {
        let Some(Packet::ConnectionFeatures(f)) = dir
            .frames
            .iter()
            .map(|f| &f.packet)
            .find(|p| matches!(p, Packet::ConnectionFeatures(_)))
        else {
            panic!("no P_CONNECTION_FEATURES from {}", dir.from)
        };
        assert_eq!((f.protocol_min, f.protocol_max), (86, 101));
        let mut order = vec![Command::CONNECTION_FEATURES];
        if with_auth {
            order.extend([Command::AUTH_CHALLENGE, Command::AUTH_RESPONSE]);
        }
        order.extend([
            Command::PROTOCOL,
            Command::SYNC_PARAM89,
            Command::SIZES,
            Command::UUIDS,
            Command::STATE,
        ]);
        assert_in_order(dir, &order);
        let Some(Packet::Protocol(p)) = dir
            .frames
            .iter()
            .map(|f| &f.packet)
            .find(|p| matches!(p, Packet::Protocol(_)))
        else {
            unreachable!("checked above")
        };
        assert_eq!(p.protocol, 3, "protocol C");
        let auth_seen = dir.position(Command::AUTH_CHALLENGE).is_some();
        assert_eq!(auth_seen, with_auth, "auth packets from {}", dir.from);
        // Fresh meta-data: the first P_UUIDS carries UUID_JUST_CREATED (4) as current.
        let Some(Packet::Uuids(u)) = dir
            .frames
            .iter()
            .map(|f| &f.packet)
            .find(|p| matches!(p, Packet::Uuids(_)))
        else {
            unreachable!("checked above")
        };
        assert_eq!(u.current, 4, "UUID_JUST_CREATED from {}", dir.from);
        // Sizes: the 16 MiB backing minus internal meta-data.
        let Some(Packet::Sizes(s)) = dir
            .frames
            .iter()
            .map(|f| &f.packet)
            .find(|p| matches!(p, Packet::Sizes(_)))
        else {
            unreachable!("checked above")
        };
        let backing_sectors = BACKING_MIB << 11;
        assert!(
            s.d_size_sectors > backing_sectors - 1024 && s.d_size_sectors < backing_sectors,
            "{s:?}"
        );
    }
    assert_eq!(conv.data_from_connector.first(), Some(&Packet::InitialData));
    assert_eq!(conv.meta_from_connector.first(), Some(&Packet::InitialMeta));
}

fn packets(dir: &Direction) -> impl Iterator<Item = &Packet> {
    dir.frames.iter().map(|f| &f.packet)
}

/// After `primary --force`: the new Primary is SyncSource; bitmaps cross; the SyncSource sends
/// P_SYNC_UUID; the SyncTarget requests blocks and acks each reply on the meta socket.
fn check_resync(conv: &Conversation) {
    // Which side went Primary? Its P_STATE says so.
    let is_primary = |dir: &Direction| {
        packets(dir).any(|p| matches!(p, Packet::State(s) if s.role() == Role::Primary))
    };
    let (source, target) = if is_primary(&conv.data_from_acceptor) {
        (&conv.data_from_acceptor, &conv.data_from_connector)
    } else {
        (&conv.data_from_connector, &conv.data_from_acceptor)
    };
    let target_meta = conv
        .meta_from(conv.sender(target))
        .expect("the SyncTarget's meta stream");
    assert!(is_primary(source) && !is_primary(target));
    assert!(
        packets(source).any(|p| matches!(p, Packet::State(s) if s.disk() == DiskState::UpToDate))
    );

    // Full sync: the source's bitmap has every bit set; decode it with the wire crate.
    let sizes = packets(source)
        .filter_map(|p| {
            if let Packet::Sizes(s) = p {
                Some(*s)
            } else {
                None
            }
        })
        .last()
        .unwrap();
    let bm_bits = sizes.d_size_sectors.div_ceil(8);
    let mut bitmap = vec![0u64; bm_bits.div_ceil(64) as usize];
    let mut rx = BitmapReceiver::new(bm_bits, conv.agreed.header_size());
    let mut done = false;
    for p in
        packets(source).filter(|p| matches!(p, Packet::Bitmap(_) | Packet::CompressedBitmap(_)))
    {
        done = rx.handle(p, &mut bitmap).unwrap();
    }
    assert!(done, "bitmap transfer from the SyncSource incomplete");
    let set: u64 = bitmap.iter().map(|w| u64::from(w.count_ones())).sum();
    assert_eq!(set, bm_bits, "a full sync marks every block out of sync");
    assert_in_order(
        source,
        &[
            Command::UUIDS,
            Command::COMPRESSED_BITMAP,
            Command::SYNC_UUID,
        ],
    );
    assert_in_order(
        target,
        &[Command::COMPRESSED_BITMAP, Command::RS_DATA_REQUEST],
    );

    // Requests from the target, replies from the source: same sectors, sizes and cookies.
    let requests: Vec<_> = packets(target)
        .filter_map(|p| {
            if let Packet::RsDataRequest(r) = p {
                Some(*r)
            } else {
                None
            }
        })
        .collect();
    let replies: Vec<_> = packets(source)
        .filter_map(|p| {
            if let Packet::RsDataReply(d) = p {
                Some(d.clone())
            } else {
                None
            }
        })
        .collect();
    assert!(
        requests.len() >= 8,
        "only {} resync requests",
        requests.len()
    );
    assert!(!replies.is_empty());
    for (i, d) in replies.iter().enumerate() {
        let req = requests
            .iter()
            .find(|r| r.sector == d.sector)
            .unwrap_or_else(|| panic!("reply {i} for unrequested sector {}", d.sector));
        assert_eq!(d.data.len() as u32, req.blksize, "reply {i} length");
        assert_eq!(d.block_id, BlockId::SYNCER);
        // Side a's data area was filled from /dev/urandom before the sync.
        assert!(d.data.iter().any(|&b| b != 0), "reply {i} is all zeroes");
    }
    for r in &requests {
        assert_eq!(r.block_id, BlockId::SYNCER);
        assert!(r.sector + u64::from(r.blksize >> 9) <= sizes.d_size_sectors);
    }
    // Every P_RS_WRITE_ACK on the target's meta socket acknowledges a reply it got.
    let acks: Vec<_> = packets(target_meta)
        .filter_map(|p| {
            if let Packet::RsWriteAck(a) = p {
                Some(*a)
            } else {
                None
            }
        })
        .collect();
    assert!(!acks.is_empty(), "no P_RS_WRITE_ACK");
    for a in &acks {
        assert!(
            replies.iter().any(|d| d.sector == a.sector),
            "ack for sector {} without reply",
            a.sector
        );
    }
    assert!(packets(source).any(
        |p| matches!(p, Packet::State(s) if s.conn() == ConnState::Connected || s.conn().is_sync())
    ));
    eprintln!(
        "bitmap {bm_bits} bits all set; {} resync requests, {} replies, {} acks",
        requests.len(),
        replies.len(),
        acks.len()
    );
}

#[test]
fn kernel_capture_handshake_and_resync_decode() {
    let conv = load(captures::CONNECT_RESYNC);
    check_handshake(&conv, false);
    check_resync(&conv);
}

#[test]
fn kernel_capture_with_sha1_auth_decodes_and_verifies() {
    let conv = load(captures::CONNECT_RESYNC_AUTH_SHA1);
    check_handshake(&conv, true);
    check_resync(&conv);
    // Each side's P_AUTH_RESPONSE is HMAC-SHA1(secret, the other side's challenge).
    let challenge = |d: &Direction| {
        packets(d)
            .find_map(|p| {
                if let Packet::AuthChallenge(c) = p {
                    Some(c.clone())
                } else {
                    None
                }
            })
            .unwrap()
    };
    let response = |d: &Direction| {
        packets(d)
            .find_map(|p| {
                if let Packet::AuthResponse(r) = p {
                    Some(r.clone())
                } else {
                    None
                }
            })
            .unwrap()
    };
    let (c, a) = (&conv.data_from_connector, &conv.data_from_acceptor);
    assert_eq!(challenge(c).len(), auth::CHALLENGE_LEN);
    auth::verify(
        HmacAlg::Sha1,
        AUTH_SECRET.as_bytes(),
        &challenge(c),
        &response(a),
    )
    .unwrap();
    auth::verify(
        HmacAlg::Sha1,
        AUTH_SECRET.as_bytes(),
        &challenge(a),
        &response(c),
    )
    .unwrap();
    // And a wrong secret does not verify: the check can fail.
    assert!(auth::verify(HmacAlg::Sha1, b"wrong", &challenge(c), &response(a)).is_err());
}
