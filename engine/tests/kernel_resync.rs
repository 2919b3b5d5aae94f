//! Scripted kernel peer, second capture set (interop-tests/captures, kernel 8.4.11 in the lab VM):
//! r0 is `primary --force`d against a fresh r1 and runs a full sync as SyncSource. We play r1
//! and feed r0's exact bytes, one packet at a time, checking that our packets come out in the
//! order kernel r1 sent them, byte-equal wherever the content is deterministic.

use bytes::Bytes;
use udrbd_engine::testing::{cmd, StreamDecoder, ID_SYNCER};
use udrbd_engine::*;

/// r0 → r1 data socket (features … P_SYNC_UUID and the first three P_RS_DATA_REPLYs).
const R0_DATA: &[u8] = include_bytes!("data/kernel84_resync_r0_data.bin");
/// r0 → r1 meta socket (P_INITIAL_META, P_PING).
const R0_META: &[u8] = include_bytes!("data/kernel84_resync_r0_meta.bin");
/// What kernel r1 sent on its data and meta sockets: the reference.
const R1_DATA: &[u8] = include_bytes!("data/kernel84_resync_r1_data.bin");
const R1_META: &[u8] = include_bytes!("data/kernel84_resync_r1_meta.bin");
/// Auth capture (cram-hmac-alg sha1, shared-secret "udrbd-lab-secret"): r0's first packets and r1's.
const AUTH_R0_DATA: &[u8] = include_bytes!("data/kernel84_auth_r0_data.bin");
const AUTH_R1_DATA: &[u8] = include_bytes!("data/kernel84_auth_r1_data.bin");
/// The lab's data devices: 0x7fb0 sectors (from the captured P_SIZES).
const SECTORS: u64 = 0x7fb0;

/// Splits a captured stream into packets: (command, volume, payload). The stream may start with
/// h80 packets (initial, features) followed by h100 ones.
fn packets(mut b: &[u8]) -> Vec<(u16, u16, Bytes, Bytes)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let (hlen, cmd, vol, len) = if b[..4] == [0x83, 0x74, 0x02, 0x67] {
            (
                8,
                u16::from_be_bytes([b[4], b[5]]),
                0,
                u16::from_be_bytes([b[6], b[7]]) as usize,
            )
        } else {
            (
                16,
                u16::from_be_bytes([b[6], b[7]]),
                u16::from_be_bytes([b[4], b[5]]),
                u32::from_be_bytes([b[8], b[9], b[10], b[11]]) as usize,
            )
        };
        let whole = Bytes::copy_from_slice(&b[..hlen + len]);
        v.push((
            cmd,
            vol,
            Bytes::copy_from_slice(&b[hlen..hlen + len]),
            whole,
        ));
        b = &b[hlen + len..];
    }
    v
}

struct Us {
    r: Resource,
    data: StreamDecoder,
    meta: StreamDecoder,
    sent_data: Vec<(u16, Bytes)>,
    sent_meta: Vec<(u16, Bytes)>,
}

impl Us {
    fn new(auth: bool) -> Us {
        let layout = MetaLayout::internal(SECTORS + 4096);
        let mut net = NetConfig::default();
        if auth {
            net.auth = Some((HmacAlg::Sha1, b"udrbd-lab-secret".to_vec()));
        }
        let cfg = ResourceConfig {
            rng_seed: 11,
            net,
            ..Default::default()
        };
        let disk = AttachedDisk::fresh(SECTORS, layout);
        let r = Resource::new(
            cfg,
            vec![VolumeOnDisk {
                volume: Volume(0),
                disk: Some(disk),
            }],
            Instant(0),
        )
        .expect("config");
        let mut us = Us {
            r,
            data: StreamDecoder::default(),
            meta: StreamDecoder::default(),
            sent_data: vec![],
            sent_meta: vec![],
        };
        us.pump(1);
        us.r.handle(
            Instant(1),
            Input::Connected {
                resolve_conflicts: false,
            },
        );
        us.pump(1);
        us
    }

    /// Runs our outputs with a perfect disk; collects what we send.
    fn pump(&mut self, t: u64) {
        loop {
            let mut inputs = Vec::new();
            while let Some(o) = self.r.poll_output() {
                match o {
                    Output::Send {
                        socket: Socket::Data,
                        bytes,
                    } => self.data.push(&bytes),
                    Output::Send {
                        socket: Socket::Meta,
                        bytes,
                    } => self.meta.push(&bytes),
                    Output::WriteMeta { io, .. } => {
                        inputs.push(Input::MetaDone { io, result: Ok(()) })
                    }
                    Output::DiskWrite { io, .. } | Output::DiskFlush { io, .. } => {
                        inputs.push(Input::DiskDone {
                            io,
                            result: Ok(None),
                        })
                    }
                    Output::DiskRead { io, len_bytes, .. } => inputs.push(Input::DiskDone {
                        io,
                        result: Ok(Some(Bytes::from(vec![0; len_bytes as usize]))),
                    }),
                    _ => {}
                }
            }
            if inputs.is_empty() {
                break;
            }
            for i in inputs {
                self.r.handle(Instant(t), i);
            }
        }
        while let Ok(Some(f)) = self.data.next(101) {
            self.sent_data.push((f.cmd, f.payload));
        }
        while let Ok(Some(f)) = self.meta.next(101) {
            self.sent_meta.push((f.cmd, f.payload));
        }
    }

    fn feed(&mut self, socket: Socket, whole: &Bytes, t: u64) {
        self.r.handle(
            Instant(t),
            Input::Received {
                socket,
                bytes: whole.clone(),
            },
        );
        self.pump(t);
    }
}

#[test]
fn plays_sync_target_to_a_kernel_sync_source() {
    let r0 = packets(R0_DATA);
    let r1 = packets(&R1_DATA[8..]); // kernel r1's stream minus its P_INITIAL_DATA (transport)
    let r1_meta = packets(R1_META);
    let mut us = Us::new(false);
    let mut t = 10;
    for (c, _, _, whole) in &r0 {
        us.feed(Socket::Data, whole, t);
        t += 1;
        if *c == cmd::STATE_CHG_REQ {
            // r0's P_PING on the meta socket (after its P_INITIAL_META, which the daemon eats).
            let ping = packets(&R0_META[8..]);
            us.feed(Socket::Meta, &ping[0].3, t);
        }
        if *c == cmd::SYNC_UUID {
            // The SyncTarget plans its first requests on its 100 ms timer.
            let at = us.r.poll_timeout().expect("resync timer armed");
            us.r.handle_timeout(at);
            us.pump(t);
        }
    }
    // Our data-socket packets, in order, against kernel r1's.
    let ours: Vec<u16> = us.sent_data.iter().map(|x| x.0).collect();
    let kernel: Vec<u16> = r1.iter().map(|x| x.0).collect();
    let upto = kernel
        .iter()
        .position(|c| *c == cmd::RS_DATA_REQUEST)
        .expect("kernel requested data");
    assert_eq!(
        upto, 10,
        "features, protocol, sync-param, sizes, uuids, 2 states, uuids, state, bitmap"
    );
    assert_eq!(
        &ours[..upto + 1],
        &kernel[..upto + 1],
        "packet order up to the first P_RS_DATA_REQUEST"
    );
    // Byte-equal where deterministic: P_PROTOCOL, both handshake P_STATEs, the WFBitMapT P_STATE,
    // and the compressed bitmap (all 4086 bits set after r0's full-sync bitmap).
    for (i, (c, payload)) in us.sent_data.iter().enumerate().take(upto) {
        match *c {
            cmd::PROTOCOL | cmd::STATE | cmd::COMPRESSED_BITMAP => {
                assert_eq!(
                    payload, &r1[i].2,
                    "packet {i} ({c:#x}) differs from kernel r1's"
                )
            }
            // UUID set equal; the dirty-bit count differs (the kernel counted a fresh bitmap as
            // all set, ours is empty until the full sync sets it).
            cmd::UUIDS => assert_eq!(payload[..32], r1[i].2[..32], "P_UUIDS {i}"),
            cmd::SIZES => assert_eq!(payload[..28], r1[i].2[..28], "P_SIZES {i}"),
            _ => {}
        }
    }
    // Meta socket: P_STATE_CHG_REPLY(SS_SUCCESS), P_PING_ACK, then P_RS_WRITE_ACK for
    // sector 0 with ID_SYNCER, 8 KiB, seq 1 — byte-equal to kernel r1's.
    let meta: Vec<u16> = us.sent_meta.iter().map(|x| x.0).collect();
    assert_eq!(
        &meta[..3],
        &[cmd::STATE_CHG_REPLY, cmd::PING_ACK, cmd::RS_WRITE_ACK]
    );
    assert_eq!(us.sent_meta[0].1, r1_meta[0].2);
    assert_eq!(us.sent_meta[2].1, r1_meta[2].2);
    assert_eq!(&us.sent_meta[2].1[8..16], &ID_SYNCER.to_be_bytes());
    assert_eq!(us.r.conn_state(), ConnState::SyncTarget);
    assert_eq!(us.r.peer_role(), Role::Primary);
    // After P_SYNC_UUID our current UUID is the one r0 sent (without the primary bit rules).
    let (_, _, sync_uuid, _) = r0
        .iter()
        .find(|x| x.0 == cmd::SYNC_UUID)
        .expect("sync uuid");
    assert_eq!(
        us.r.uuids(Volume(0)).unwrap()[0].to_be_bytes(),
        sync_uuid[..8]
    );
}

#[test]
fn answers_kernel_auth_challenge_with_the_kernels_hmac() {
    let r0 = packets(AUTH_R0_DATA);
    let r1 = packets(&AUTH_R1_DATA[8..]);
    let mut us = Us::new(true);
    // r0: features, challenge.
    us.feed(Socket::Data, &r0[0].3, 10);
    assert_eq!(us.sent_data[1].0, cmd::AUTH_CHALLENGE);
    assert_eq!(us.sent_data[1].1.len(), 64);
    us.feed(Socket::Data, &r0[1].3, 11);
    // Our P_AUTH_RESPONSE to r0's challenge equals kernel r1's (HMAC-SHA1 with the same secret).
    assert_eq!(us.sent_data[2].0, cmd::AUTH_RESPONSE);
    assert_eq!(us.sent_data[2].1, r1[2].2);
    // r0's response answers kernel r1's challenge, not ours: refused, StandAlone.
    us.feed(Socket::Data, &r0[2].3, 12);
    assert_eq!(us.r.conn_state(), ConnState::StandAlone);
}
