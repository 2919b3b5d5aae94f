//! Real kernel bytes: the DRBD 8.4.11 captures from the VM lab (shared/lab/captures, copied to
//! tests/data) and the hex quoted in shared/lab/README.md. Every byte of every stream must
//! decode, and every frame must re-encode to the bytes it came from.

mod common;

use common::{hex, read_pcap, tcp_streams};
use udrbd_wire::*;

/// Decodes a whole one-direction stream the way a connection would: h80 until both
/// P_CONNECTION_FEATURES are known, then the agreed dialect. Returns the frames and checks
/// byte-exact re-encoding.
fn decode_stream(stream: &[u8]) -> Vec<Frame> {
    let mut dec = StreamDecoder::new(Dialect::INITIAL, 1 << 20);
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
        if let Packet::ConnectionFeatures(peer) = &frame.packet {
            let agreed = features::negotiate(&Features::UDRBD, peer).unwrap();
            dec.set_dialect(Dialect {
                apv: agreed.apv,
                features: agreed.features,
                digest_len: 0,
            });
        }
        rest = &rest[consumed..];
        frames.push(frame);
    }
    frames
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
