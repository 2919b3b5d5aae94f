//! Helpers shared by the integration tests: annotated hex, pcap reading/writing and a
//! TCP-stream reassembler small enough to trust by reading.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;

/// Parses annotated hex: `//` starts a comment, whitespace and `_` are ignored.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// One TCP segment's payload from a pcap.
#[derive(Clone, Debug)]
pub struct Segment {
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Reads a classic little-endian pcap with Ethernet link type and returns the IPv4/TCP
/// segments in file order.
pub fn read_pcap(file: &[u8]) -> Vec<Segment> {
    let u32le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(u32le(file, 0), 0xa1b2_c3d4, "classic microsecond pcap");
    assert_eq!(u32le(file, 20), 1, "Ethernet link type");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= file.len() {
        let incl = u32le(file, off + 8) as usize;
        let pkt = &file[off + 16..off + 16 + incl];
        off += 16 + incl;
        if pkt.len() < 14 || pkt[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &pkt[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 6 {
            continue;
        }
        let tcp = &ip[ihl..total];
        let doff = usize::from(tcp[12] >> 4) * 4;
        out.push(Segment {
            src: (
                ip[12..16].try_into().unwrap(),
                u16::from_be_bytes([tcp[0], tcp[1]]),
            ),
            dst: (
                ip[16..20].try_into().unwrap(),
                u16::from_be_bytes([tcp[2], tcp[3]]),
            ),
            seq: u32::from_be_bytes(tcp[4..8].try_into().unwrap()),
            flags: tcp[13],
            payload: tcp[doff..].to_vec(),
        });
    }
    out
}

pub type FlowKey = (([u8; 4], u16), ([u8; 4], u16));

/// Reassembles each direction's byte stream by sequence number (drops retransmitted bytes).
pub fn tcp_streams(segs: &[Segment]) -> BTreeMap<FlowKey, Vec<u8>> {
    let mut next: BTreeMap<FlowKey, u32> = BTreeMap::new();
    let mut streams: BTreeMap<FlowKey, Vec<u8>> = BTreeMap::new();
    for s in segs {
        let key = (s.src, s.dst);
        if s.flags & 0x02 != 0 {
            // SYN takes one sequence number.
            next.insert(key, s.seq.wrapping_add(1));
            continue;
        }
        if s.payload.is_empty() {
            continue;
        }
        let expect = *next.entry(key).or_insert(s.seq);
        let skip = expect.wrapping_sub(s.seq) as usize;
        if skip >= s.payload.len() {
            continue;
        }
        assert_eq!(
            s.seq.wrapping_add(skip as u32),
            expect,
            "out-of-order segment"
        );
        streams
            .entry(key)
            .or_default()
            .extend_from_slice(&s.payload[skip..]);
        next.insert(key, s.seq.wrapping_add(s.payload.len() as u32));
    }
    streams
}

/// Writes a pcap holding one TCP connection 127.0.0.1:sport -> 127.0.0.1:dport: a handshake,
/// then one segment per entry of `chunks` (client to server), in order.
pub fn write_pcap(sport: u16, dport: u16, chunks: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    // Global header: magic, v2.4, tz 0, sigfigs 0, snaplen, LINKTYPE_ETHERNET.
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&262_144u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());

    let (cseq0, sseq0) = (1000u32, 5000u32);
    let mut t = 0u32;
    let mut rec =
        |f: &mut Vec<u8>, from_client: bool, seq: u32, ack: u32, flags: u8, data: &[u8]| {
            let (sp, dp) = if from_client {
                (sport, dport)
            } else {
                (dport, sport)
            };
            let mut tcp = Vec::with_capacity(20 + data.len());
            tcp.extend_from_slice(&sp.to_be_bytes());
            tcp.extend_from_slice(&dp.to_be_bytes());
            tcp.extend_from_slice(&seq.to_be_bytes());
            tcp.extend_from_slice(&ack.to_be_bytes());
            tcp.push(5 << 4);
            tcp.push(flags);
            tcp.extend_from_slice(&65535u16.to_be_bytes());
            tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum (unchecked by tshark by default), urg
            tcp.extend_from_slice(data);
            let src = [127, 0, 0, 1];
            let dst = [127, 0, 0, 1];
            // TCP checksum over the pseudo header, so no tool flags the segment.
            let mut sum: u32 = 0;
            let mut add = |b: &[u8]| {
                for c in b.chunks(2) {
                    let w = if c.len() == 2 {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], 0])
                    };
                    sum += u32::from(w);
                }
            };
            add(&src);
            add(&dst);
            add(&[0, 6]);
            add(&(tcp.len() as u16).to_be_bytes());
            add(&tcp);
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            let ck = !(sum as u16);
            tcp[16..18].copy_from_slice(&ck.to_be_bytes());

            let mut ip = Vec::with_capacity(20);
            ip.push(0x45);
            ip.push(0);
            ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&src);
            ip.extend_from_slice(&dst);
            let mut s: u32 = 0;
            for c in ip.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            let ipck = !(s as u16);
            ip[10..12].copy_from_slice(&ipck.to_be_bytes());

            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&tcp);

            t += 1;
            f.extend_from_slice(&(t / 1000).to_le_bytes());
            f.extend_from_slice(&((t % 1000) * 1000).to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            f.extend_from_slice(&frame);
        };
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    rec(&mut f, true, cseq0, 0, SYN, &[]);
    rec(&mut f, false, sseq0, cseq0 + 1, SYN | ACK, &[]);
    rec(&mut f, true, cseq0 + 1, sseq0 + 1, ACK, &[]);
    let mut seq = cseq0 + 1;
    for c in chunks {
        rec(&mut f, true, seq, sseq0 + 1, PSH | ACK, c);
        seq = seq.wrapping_add(c.len() as u32);
        rec(&mut f, false, sseq0 + 1, seq, ACK, &[]);
    }
    f
}

use bytes::Bytes;
use udrbd_wire::protocol::ResyncController;
use udrbd_wire::*;

/// One representative frame per command, as a kernel at apv 101 with all 8.4 features
/// would frame it (handshake packets first, at apv 80).
pub fn samples() -> Vec<(Dialect, Frame)> {
    let d80 = Dialect::INITIAL;
    let d = Dialect::KERNEL_101;
    let bid = BlockId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    let data = |sector, seq_num, flags| Data {
        sector,
        block_id: bid,
        seq_num,
        dp_flags: DpFlags(flags),
        digest: Bytes::new(),
        data: Bytes::from((0..4096u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()),
    };
    let ack = |sector, seq_num| BlockAck {
        sector,
        block_id: bid,
        blksize: 4096,
        seq_num,
    };
    let req = |sector| BlockReq {
        sector,
        block_id: BlockId::SYNCER,
        blksize: 4096,
    };
    let state = State::new(
        Role::Primary,
        Role::Secondary,
        ConnState::Connected,
        DiskState::UpToDate,
        DiskState::UpToDate,
    );
    let protocol = Protocol {
        protocol: 3,
        after_sb_0p: AfterSbPolicy::DISCARD_ZERO_CHANGES,
        after_sb_1p: AfterSbPolicy::CONSENSUS,
        after_sb_2p: AfterSbPolicy::DISCONNECT,
        conn_flags: ConnFlags(1),
        two_primaries: 1,
        integrity_alg: Some(AlgName::new("sha1").unwrap()),
    };
    let trim = Trim {
        sector: 1024,
        block_id: bid,
        seq_num: 12,
        dp_flags: DpFlags::DISCARD.union(DpFlags::SEND_WRITE_ACK),
        size: 1 << 20,
    };
    let v = Volume(0);
    let mut out = vec![
        (d80, Frame::new(v, Packet::InitialData)),
        (d80, Frame::new(v, Packet::InitialMeta)),
        (
            d80,
            Frame::new(v, Packet::ConnectionFeatures(Features::UDRBD)),
        ),
    ];
    let packets = vec![
        Packet::AuthChallenge(Bytes::from(vec![0x5a; 64])),
        Packet::AuthResponse(Bytes::from(vec![0xa5; 20])),
        Packet::Protocol(protocol.clone()),
        Packet::SyncParam89(SyncParam {
            form: SyncParamForm::V95,
            resync_rate: 250,
            verify_alg: AlgName::new("sha1").unwrap(),
            csums_alg: AlgName::new("md5").unwrap(),
            controller: ResyncController {
                c_plan_ahead: 20,
                c_delay_target: 10,
                c_fill_target: 100,
                c_max_rate: 102_400,
            },
        }),
        Packet::Sizes(Sizes {
            d_size_sectors: 2_097_152,
            u_size_sectors: 0,
            c_size_sectors: 2_097_152,
            max_bio_size: 1 << 20,
            queue_order_type: 0,
            dds_flags: DdsFlags(0),
            qlim: Some(QueueLimits {
                physical_block_size: 4096,
                logical_block_size: 512,
                alignment_offset: 0,
                io_min: 4096,
                io_opt: 0,
                discard_enabled: 1,
                discard_zeroes_data: 0,
                write_same_capable: 0,
            }),
        }),
        Packet::Uuids(Uuids {
            current: 0x1234_5678_9abc_def1,
            bitmap: 0,
            history: [0x1111_2222_3333_4444, 0],
            dirty_bits: 42,
            flags: UuidFlags::CRASHED_PRIMARY,
        }),
        Packet::State(state),
        Packet::StateChgReq(ReqState {
            mask: StateMask::ROLE,
            val: State::default().with_role(Role::Primary),
        }),
        Packet::StateChgReply(StateChgReply::SUCCESS),
        Packet::ConnStChgReq(ReqState {
            mask: StateMask::CONN,
            val: State::default().with_conn(ConnState::Disconnecting),
        }),
        Packet::ConnStChgReply(StateChgReply::CW_FAILED_BY_PEER),
        Packet::SyncUuid(0x0001_0000_dead_beef),
        Packet::Data(data(2048, 1, 0x112)),
        Packet::DataReply(data(4096, 0, 0)),
        Packet::RsDataReply(data(8192, 0, 0)),
        Packet::DataRequest(BlockReq {
            sector: 16,
            block_id: bid,
            blksize: 4096,
        }),
        Packet::RsDataRequest(req(24)),
        Packet::OvRequest(req(32)),
        Packet::RsThinReq(req(40)),
        Packet::OvReply(DigestReq {
            req: req(32),
            digest: Bytes::from(vec![0xd1; 20]),
        }),
        Packet::CsumRsRequest(DigestReq {
            req: req(48),
            digest: Bytes::from(vec![0xc5; 16]),
        }),
        Packet::RecvAck(ack(2048, 2)),
        Packet::WriteAck(ack(2048, 3)),
        Packet::RsWriteAck(ack(8192, 4)),
        Packet::Superseded(ack(2048, 5)),
        Packet::NegAck(ack(2048, 6)),
        Packet::NegDReply(ack(4096, 7)),
        Packet::NegRsDReply(ack(8192, 8)),
        Packet::OvResult(BlockAck {
            sector: 32,
            block_id: BlockId::OV_OUT_OF_SYNC,
            blksize: 4096,
            seq_num: 9,
        }),
        Packet::RsIsInSync(ack(48, 10)),
        Packet::RsCancel(ack(56, 11)),
        Packet::RetryWrite(ack(2048, 12)),
        Packet::Barrier(Barrier {
            barrier: BarrierNr::from_u32(77),
        }),
        Packet::BarrierAck(BarrierAck {
            barrier: BarrierNr::from_u32(77),
            set_size: 3,
        }),
        Packet::Bitmap(bitmap::PlainBitmap {
            words: vec![0x407, u64::MAX, 0, 1],
        }),
        Packet::CompressedBitmap(CompressedBitmap {
            first_run_set: true,
            pad_bits: 4,
            code: Bytes::from_static(&[0x99, 0x7c, 0x04, 0xdf, 0xc3, 0x77, 0x01]),
        }),
        Packet::UnplugRemote,
        Packet::Ping,
        Packet::PingAck,
        Packet::DelayProbe(DelayProbe {
            seq_num: 1,
            offset: 2,
        }),
        Packet::OutOfSync(BlockDesc {
            sector: 4096,
            blksize: 65536,
        }),
        Packet::RsDeallocated(BlockDesc {
            sector: 40,
            blksize: 4096,
        }),
        Packet::ProtocolUpdate(protocol),
        Packet::Trim(trim),
        Packet::Zeroes(Trim {
            dp_flags: DpFlags::ZEROES.union(DpFlags::SEND_WRITE_ACK),
            ..trim
        }),
        Packet::Wsame(Wsame {
            sector: 2048,
            block_id: bid,
            seq_num: 13,
            dp_flags: DpFlags::WSAME,
            size: 65536,
            digest: Bytes::new(),
            data: Bytes::from(vec![0x42; 512]),
        }),
    ];
    out.extend(packets.into_iter().map(|p| (d, Frame::new(v, p))));
    out
}
