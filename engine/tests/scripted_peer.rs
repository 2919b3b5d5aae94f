//! Scripted-peer tests (h2 style): feed the exact bytes a kernel 8.4.11 sent in the lab capture
//! (/work/shared/lab/captures/kernel84-loopback-handshake.pcap, data socket, acceptor → connector)
//! and check what we send back, packet by packet, in order.

use bytes::Bytes;
use udrbd_engine::testing::{cmd, StreamDecoder};
use udrbd_engine::*;

/// The kernel's data-socket stream: P_CONNECTION_FEATURES, P_PROTOCOL, P_SYNC_PARAM89, P_SIZES,
/// P_UUIDS, P_STATE (WFConnection), P_STATE (Connected).
const KERNEL_DATA: &[u8] = include_bytes!("data/kernel84_acceptor_to_connector_data.bin");
/// The kernel's data device: 0x1ffb0 sectors (from its P_SIZES).
const KERNEL_SECTORS: u64 = 0x1ffb0;

fn engine() -> Resource {
    let layout = MetaLayout::internal(KERNEL_SECTORS + 4096);
    let disk = AttachedDisk::fresh(KERNEL_SECTORS, layout);
    let cfg = ResourceConfig {
        rng_seed: 7,
        ..Default::default()
    };
    Resource::new(
        cfg,
        vec![VolumeOnDisk {
            volume: Volume(0),
            disk: Some(disk),
        }],
        Instant(0),
    )
    .expect("config")
}

/// Our packets on one socket, decoded: (command, volume, payload).
fn sent(
    r: &mut Resource,
    sock: Socket,
    dec: &mut StreamDecoder,
    apv: u32,
) -> Vec<(u16, u16, Bytes)> {
    let mut v = Vec::new();
    loop {
        let mut done = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                Output::Send { socket, bytes } if socket == sock => dec.push(&bytes),
                // Meta-data writes complete at once (a perfect disk).
                Output::WriteMeta { io, .. } => done.push(io),
                _ => {}
            }
        }
        if done.is_empty() {
            break;
        }
        for io in done {
            r.handle(Instant(1), Input::MetaDone { io, result: Ok(()) });
        }
    }
    while let Some(f) = dec.next(apv).expect("our own packets decode") {
        v.push((f.cmd, f.volume, f.payload));
    }
    v
}

fn kernel_packets() -> Vec<(usize, usize)> {
    // Offsets of each packet in the capture (h80 features, then h100).
    let mut out = vec![(0, 80)];
    let mut off = 80;
    while off < KERNEL_DATA.len() {
        let len = u32::from_be_bytes(KERNEL_DATA[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push((off, off + 16 + len));
        off += 16 + len;
    }
    out
}

#[test]
fn replies_to_kernel_handshake_in_kernel_order() {
    let mut r = engine();
    let mut dec = StreamDecoder::default();
    let _ = sent(&mut r, Socket::Data, &mut dec, 0);
    r.handle(
        Instant(1),
        Input::Connected {
            resolve_conflicts: false,
        },
    );
    // 1. We open with P_CONNECTION_FEATURES (h80, 72 bytes): min 100, features 0xf, max 101.
    let p = sent(&mut r, Socket::Data, &mut dec, 0);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, cmd::CONNECTION_FEATURES);
    assert_eq!(&p[0].2[..12], &[0, 0, 0, 100, 0, 0, 0, 0xf, 0, 0, 0, 101]);
    assert_eq!(p[0].2.len(), 72);

    // 2. The kernel's features packet: agree on 101; we send our parameters in the kernel's order.
    let pk = kernel_packets();
    assert_eq!(pk.len(), 7, "capture holds 7 data-socket packets");
    r.handle(
        Instant(2),
        Input::Received {
            socket: Socket::Data,
            bytes: Bytes::copy_from_slice(&KERNEL_DATA[pk[0].0..pk[0].1]),
        },
    );
    assert_eq!(r.agreed_protocol_version(), Some(101));
    let p = sent(&mut r, Socket::Data, &mut dec, 101);
    let cmds: Vec<u16> = p.iter().map(|x| x.0).collect();
    assert_eq!(
        cmds,
        [
            cmd::PROTOCOL,
            cmd::SYNC_PARAM89,
            cmd::SIZES,
            cmd::UUIDS,
            cmd::STATE
        ]
    );
    // P_PROTOCOL is byte-identical to the kernel's (same defaults).
    let (s, e) = pk[1];
    assert_eq!(&p[0].2[..], &KERNEL_DATA[s + 16..e], "P_PROTOCOL payload");
    assert_eq!(p[1].2.len(), 148, "P_SYNC_PARAM89 is p_rs_param_95");
    // P_SIZES: d_size, u_size, c_size, max_bio_size as the kernel's (56 bytes with FF_WSAME).
    let (s, _) = pk[3];
    assert_eq!(p[2].2.len(), 56);
    assert_eq!(
        &p[2].2[..28],
        &KERNEL_DATA[s + 16..s + 16 + 28],
        "P_SIZES fields"
    );
    // P_UUIDS: fresh meta-data, current UUID 4.
    assert_eq!(&p[3].2[..8], &[0, 0, 0, 0, 0, 0, 0, 4]);
    // First P_STATE: Secondary, peer Unknown, WFConnection, Inconsistent/DUnknown = the kernel's.
    let (s, e) = pk[5];
    assert_eq!(&p[4].2[..], &KERNEL_DATA[s + 16..e]);
    assert_eq!(&p[4].2[..], &0x0000_c882u32.to_be_bytes());

    // 3. Feed the rest byte by byte (any split must work): we decide Connected (rule 10) and
    //    announce it with a second P_STATE equal to the kernel's.
    for b in &KERNEL_DATA[pk[1].0..] {
        r.handle(
            Instant(3),
            Input::Received {
                socket: Socket::Data,
                bytes: Bytes::copy_from_slice(&[*b]),
            },
        );
    }
    let p = sent(&mut r, Socket::Data, &mut dec, 101);
    let cmds: Vec<u16> = p.iter().map(|x| x.0).collect();
    assert_eq!(cmds, [cmd::STATE]);
    let (s, e) = pk[6];
    assert_eq!(&p[0].2[..], &KERNEL_DATA[s + 16..e], "second P_STATE");
    assert_eq!(r.conn_state(), ConnState::Connected);
    assert_eq!(r.peer_disk_state(Volume(0)), Some(DiskState::Inconsistent));
}

#[test]
fn rejects_packet_before_features() {
    // drbd_do_features: the first packet must be P_CONNECTION_FEATURES.
    let mut r = engine();
    r.handle(
        Instant(1),
        Input::Connected {
            resolve_conflicts: false,
        },
    );
    let (s, e) = kernel_packets()[1];
    // A h100 packet before negotiation is not even a valid header yet: protocol error.
    r.handle(
        Instant(2),
        Input::Received {
            socket: Socket::Data,
            bytes: Bytes::copy_from_slice(&KERNEL_DATA[s..e]),
        },
    );
    let mut disconnected = false;
    while let Some(o) = r.poll_output() {
        disconnected |= o == Output::Disconnect;
    }
    assert!(disconnected);
    assert_ne!(r.conn_state(), ConnState::WFReportParams);
}

#[test]
fn answers_ping_with_ping_ack() {
    let mut r = engine();
    let mut dec = StreamDecoder::default();
    r.handle(
        Instant(1),
        Input::Connected {
            resolve_conflicts: false,
        },
    );
    r.handle(
        Instant(2),
        Input::Received {
            socket: Socket::Data,
            bytes: Bytes::copy_from_slice(KERNEL_DATA),
        },
    );
    let _ = sent(&mut r, Socket::Meta, &mut dec, 101);
    // h100 P_PING, volume 0, length 0.
    let ping = [
        0x86, 0x20, 0xec, 0x20, 0, 0, 0, 0x13, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    r.handle(
        Instant(3),
        Input::Received {
            socket: Socket::Meta,
            bytes: Bytes::copy_from_slice(&ping),
        },
    );
    let p = sent(&mut r, Socket::Meta, &mut dec, 101);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].0, p[0].2.len()), (cmd::PING_ACK, 0));
}

#[test]
fn ping_timeout_drops_the_connection() {
    // spec §8: no P_PING_ACK within ping-timeout → NetworkFailure.
    let mut r = engine();
    r.handle(
        Instant(1),
        Input::Connected {
            resolve_conflicts: false,
        },
    );
    r.handle(
        Instant(2),
        Input::Received {
            socket: Socket::Data,
            bytes: Bytes::copy_from_slice(KERNEL_DATA),
        },
    );
    let mut dec = StreamDecoder::default();
    let _ = sent(&mut r, Socket::Meta, &mut dec, 101);
    // Idle for ping-int (10 s): we ping.
    let t = r.poll_timeout().expect("ping interval armed");
    r.handle_timeout(t);
    let mut pinged = false;
    while let Some(o) = r.poll_output() {
        if let Output::Send {
            socket: Socket::Meta,
            bytes,
        } = o
        {
            pinged |= bytes[7] == 0x13;
        }
    }
    assert!(pinged);
    let t = r.poll_timeout().expect("ping timeout armed");
    r.handle_timeout(t);
    let mut lines = Vec::new();
    while let Some(o) = r.poll_output() {
        if let Output::StateChanged(c) = o {
            lines.push(c.log_line());
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("conn( Connected -> NetworkFailure )")),
        "{lines:#?}"
    );
    assert_eq!(r.conn_state(), ConnState::WFConnection);
}
