//! Real kernel bytes: the DRBD 8.4.11 captures from the VM lab (shared/lab/captures, copied to
//! tests/data) and the hex quoted in shared/lab/README.md. Every byte of every stream must
//! decode, and every frame must re-encode to the bytes it came from.

mod common;

use common::{hex, read_pcap, tcp_streams};
use udrbd_wire::*;

/// Decodes a whole one-direction stream the way a connection would: h80 until the
/// handshake packets are through, then `agreed` (a meta socket learns the dialect from its
/// data socket; one accepted by the peer starts straight with h100 packets). Checks
/// byte-exact re-encoding of every frame.
fn decode_stream_with(stream: &[u8], agreed: Dialect) -> Vec<Frame> {
    let start = if stream.starts_with(&header::MAGIC_100.to_be_bytes()) {
        agreed
    } else {
        Dialect::INITIAL
    };
    let mut dec = StreamDecoder::new(start, 1 << 20);
    let mut rest = stream;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let Decoded::Frame {
            frame,
            header,
            consumed,
        } = dec.decode(rest).expect("kernel bytes decode")
        else {
            panic!("stream ends inside a packet: {} bytes left", rest.len());
        };
        let mut again = Vec::new();
        frame.encode_with(header.kind, &mut again).unwrap();
        assert_eq!(again, rest[..consumed], "re-encoding {:?}", frame.packet);
        match &frame.packet {
            Packet::ConnectionFeatures(peer) => {
                let a = features::negotiate(&Features::UDRBD, peer).unwrap();
                assert_eq!((a.apv, a.features), (agreed.apv, agreed.features));
                dec.set_dialect(agreed);
            }
            Packet::InitialMeta => dec.set_dialect(agreed),
            _ => {}
        }
        rest = &rest[consumed..];
        frames.push(frame);
    }
    frames
}

fn decode_stream(stream: &[u8]) -> Vec<Frame> {
    decode_stream_with(stream, Dialect::KERNEL_101)
}

fn commands(frames: &[Frame]) -> Vec<Command> {
    frames.iter().map(|f| f.packet.command()).collect()
}

#[test]
fn kernel_loopback_handshake_pcap_decodes_completely() {
    let pcap = include_bytes!("data/kernel84-loopback-handshake.pcap");
    let streams = tcp_streams(&read_pcap(pcap));
    let mut all = Vec::new();
    for (key, bytes) in &streams {
        let frames = decode_stream(bytes);
        all.push((key.0 .1, key.1 .1, frames));
    }
    // Data socket 53761 -> 7789: the connector's side of the handshake.
    let (_, _, connector) = all
        .iter()
        .find(|(s, d, _)| *s == 53761 && *d == 7789)
        .expect("data socket stream");
    assert_eq!(
        commands(connector),
        [
            Command::INITIAL_DATA,
            Command::CONNECTION_FEATURES,
            Command::PROTOCOL,
            Command::SYNC_PARAM89,
            Command::SIZES,
            Command::UUIDS,
            Command::STATE,
            Command::STATE,
        ]
    );
    let Packet::Uuids(u) = &connector[5].packet else {
        panic!()
    };
    assert_eq!(u.current, 4, "UUID_JUST_CREATED on fresh meta-data");
    assert_eq!(u.dirty_bits, 16374);
    let Packet::State(s) = &connector[7].packet else {
        panic!()
    };
    assert_eq!(s.conn(), ConnState::Connected);
    assert_eq!(s.disk(), DiskState::Inconsistent);
    let Packet::Sizes(sz) = &connector[4].packet else {
        panic!()
    };
    assert_eq!(sz.d_size_sectors, 130_992);
    assert_eq!(sz.qlim.map(|q| q.discard_enabled), Some(1));

    // The acceptor's data stream, and the meta socket with only P_INITIAL_META.
    let (_, _, acceptor) = all
        .iter()
        .find(|(s, d, _)| *s == 7789 && *d == 53761)
        .expect("reverse data stream");
    assert_eq!(acceptor[0].packet.command(), Command::CONNECTION_FEATURES);
    assert_eq!(acceptor.len(), 7);
    let (_, _, meta) = all
        .iter()
        .find(|(_, d, _)| *d == 7790)
        .expect("meta stream");
    assert_eq!(commands(meta), [Command::INITIAL_META]);
}

#[test]
fn kernel_to_plain_listener_pcap_is_initial_data() {
    let pcap = include_bytes!("data/kernel84-to-plain-listener-veth.pcap");
    let streams = tcp_streams(&read_pcap(pcap));
    assert_eq!(streams.len(), 1);
    let bytes = streams.values().next().unwrap();
    assert_eq!(bytes, &hex("83740267fff20000"));
    assert_eq!(commands(&decode_stream(bytes)), [Command::INITIAL_DATA]);
}

/// The "full hex" lines quoted in shared/lab/README.md (first 200 bytes of each direction).
const README_CONNECTOR: &str = "83740267fff2000083740267fffe0048000000560000000f000000650000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000008620ec200000000b0000001900000000000000030000000000000000000000000000000000000000008620ec20000000230000009400000000000fa000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
const README_ACCEPTOR: &str = "83740267fffe0048000000560000000f000000650000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000008620ec200000000b0000001900000000000000030000000000000000000000000000000000000000008620ec20000000230000009400000000000fa0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn readme_quoted_kernel_bytes_decode_and_stop_at_cut() {
    for (quoted, first) in [
        (README_CONNECTOR, Command::INITIAL_DATA),
        (README_ACCEPTOR, Command::CONNECTION_FEATURES),
    ] {
        let bytes = hex(quoted);
        let mut dec = StreamDecoder::new(Dialect::INITIAL, 1 << 20);
        let mut rest = &bytes[..];
        let mut cmds = Vec::new();
        loop {
            match dec.decode(rest).unwrap() {
                Decoded::Frame {
                    frame, consumed, ..
                } => {
                    if let Packet::ConnectionFeatures(f) = &frame.packet {
                        let a = features::negotiate(&Features::UDRBD, f).unwrap();
                        dec.set_dialect(Dialect {
                            apv: a.apv,
                            features: a.features,
                            digest_len: 0,
                        });
                    }
                    cmds.push(frame.packet.command());
                    rest = &rest[consumed..];
                }
                Decoded::NeedMore { need } => {
                    // The quote stops inside P_SYNC_PARAM89 (16-byte header + 148).
                    assert_eq!(need, 16 + 148);
                    assert!(rest.len() < need);
                    break;
                }
            }
        }
        assert_eq!(cmds[0], first);
        assert_eq!(
            &cmds[cmds.len() - 2..],
            [Command::CONNECTION_FEATURES, Command::PROTOCOL]
        );
    }
}

/// interop-tests/tests/make_captures.rs configures the auth capture with this secret.
const LAB_SECRET: &[u8] = b"udrbd-lab-secret";

type Flows = Vec<((u16, u16), Vec<Frame>)>;

fn flows(pcap: &[u8]) -> Flows {
    tcp_streams(&read_pcap(pcap))
        .iter()
        .map(|(k, bytes)| ((k.0 .1, k.1 .1), decode_stream(bytes)))
        .collect()
}

fn find(frames: &[Frame], cmd: Command) -> impl Iterator<Item = &Packet> {
    frames
        .iter()
        .map(|f| &f.packet)
        .filter(move |p| p.command() == cmd)
}

/// Both directions of the data socket (the streams that carry P_CONNECTION_FEATURES).
fn data_pair(flows: &Flows) -> (&[Frame], &[Frame]) {
    let data: Vec<&((u16, u16), Vec<Frame>)> = flows
        .iter()
        .filter(|(_, f)| find(f, Command::CONNECTION_FEATURES).next().is_some())
        .collect();
    assert_eq!(data.len(), 2, "one data socket, two directions");
    let (a, b) = (data[0], data[1]);
    assert_eq!((a.0 .0, a.0 .1), (b.0 .1, b.0 .0), "same connection");
    (&a.1, &b.1)
}

/// Merges one side's bitmap packets as the peer would, then checks that our sender, given
/// the merged bitmap, produces exactly the kernel's packets.
fn check_bitmap_exchange(frames: &[Frame], bm_bits: u64) -> u64 {
    let sent: Vec<&Packet> = frames
        .iter()
        .map(|f| &f.packet)
        .filter(|p| matches!(p, Packet::Bitmap(_) | Packet::CompressedBitmap(_)))
        .collect();
    assert!(!sent.is_empty(), "a bitmap was exchanged");
    let mut bm = vec![0u64; bm_bits.div_ceil(64) as usize];
    let mut rx = BitmapReceiver::new(bm_bits, 16);
    let mut done = false;
    for p in &sent {
        done = rx.handle(p, &mut bm).expect("kernel bitmap packet merges");
    }
    assert!(done, "transfer complete after the last packet");
    let mut tx = BitmapSender::new(bm_bits, 16, true);
    let mut ours = Vec::new();
    while let Some(p) = tx.next_packet(&bm) {
        ours.push(p);
    }
    let theirs: Vec<Packet> = sent.into_iter().cloned().collect();
    assert_eq!(ours, theirs, "our RLE encoder matches the kernel's packets");
    bm.iter().map(|w| u64::from(w.count_ones())).sum()
}

#[test]
fn kernel_auth_sha1_resync_pcap_decodes_and_authenticates() {
    let flows = flows(include_bytes!(
        "data/kernel84-connect-resync-auth-sha1.pcap"
    ));
    let (a, b) = data_pair(&flows);
    let ch = |f: &[Frame]| match find(f, Command::AUTH_CHALLENGE).next() {
        Some(Packet::AuthChallenge(c)) => c.clone(),
        other => panic!("challenge: {other:?}"),
    };
    let resp = |f: &[Frame]| match find(f, Command::AUTH_RESPONSE).next() {
        Some(Packet::AuthResponse(r)) => r.clone(),
        other => panic!("response: {other:?}"),
    };
    let (ch_a, ch_b) = (ch(a), ch(b));
    assert_eq!((ch_a.len(), ch_b.len()), (64, 64));
    auth::check_peer_challenge(&ch_a, &ch_b).unwrap();
    // Each side answered HMAC-SHA1(secret, the other's challenge).
    let alg = HmacAlg::from_name("sha1").unwrap();
    assert_eq!(resp(a), auth::response(alg, LAB_SECRET, &ch_b).unwrap());
    auth::verify(alg, LAB_SECRET, &ch_a, &resp(b)).unwrap();
    auth::verify(alg, LAB_SECRET, &ch_b, &resp(a)).unwrap();
    assert_eq!(
        auth::verify(alg, b"wrong", &ch_a, &resp(b)),
        Err(AuthError::WrongResponse)
    );
    // The auth packets sit between features and P_PROTOCOL.
    assert_eq!(
        commands(a)
            .into_iter()
            .filter(|c| *c != Command::INITIAL_DATA)
            .take(4)
            .collect::<Vec<_>>(),
        [
            Command::CONNECTION_FEATURES,
            Command::AUTH_CHALLENGE,
            Command::AUTH_RESPONSE,
            Command::PROTOCOL
        ]
    );
    check_resync(&flows, a, b);
}

#[test]
fn kernel_plain_resync_pcap_decodes_completely() {
    let flows = flows(include_bytes!("data/kernel84-connect-resync.pcap"));
    let (a, b) = data_pair(&flows);
    assert_eq!(find(a, Command::AUTH_CHALLENGE).count(), 0);
    check_resync(&flows, a, b);
}

fn check_resync(flows: &Flows, a: &[Frame], b: &[Frame]) {
    let sectors = |f: &[Frame]| match find(f, Command::SIZES).next() {
        Some(Packet::Sizes(s)) => s.c_size_sectors.max(s.d_size_sectors),
        other => panic!("sizes: {other:?}"),
    };
    let bm_bits = sectors(a).min(sectors(b)).div_ceil(8);
    let set_a = check_bitmap_exchange(a, bm_bits);
    let set_b = check_bitmap_exchange(b, bm_bits);
    // Requests on one side's data socket, replies on the other's, acks on a meta socket.
    let all: Vec<&Frame> = flows.iter().flat_map(|(_, f)| f.iter()).collect();
    let count = |c: Command| all.iter().filter(|f| f.packet.command() == c).count();
    let reqs = count(Command::RS_DATA_REQUEST);
    assert!(reqs > 0, "resync requests");
    assert_eq!(reqs, count(Command::RS_DATA_REPLY));
    assert!(count(Command::RS_WRITE_ACK) > 0);
    assert_eq!(count(Command::SYNC_UUID), 1);
    for f in &all {
        if let Packet::RsDataReply(d) = &f.packet {
            assert_eq!(d.block_id, BlockId::SYNCER);
            assert_eq!(d.data.len() % 512, 0);
        }
    }
    assert!(set_a > 0 || set_b > 0, "something to resync");
    eprintln!("bitmap {bm_bits} bits, set {set_a}/{set_b}; {reqs} resync requests");
}
