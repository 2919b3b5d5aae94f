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
            src: (ip[12..16].try_into().unwrap(), u16::from_be_bytes([tcp[0], tcp[1]])),
            dst: (ip[16..20].try_into().unwrap(), u16::from_be_bytes([tcp[2], tcp[3]])),
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
    for v in [0xa1b2_c3d4u32] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&262_144u32.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());

    let (cseq0, sseq0) = (1000u32, 5000u32);
    let mut t = 0u32;
    let mut rec = |f: &mut Vec<u8>, from_client: bool, seq: u32, ack: u32, flags: u8, data: &[u8]| {
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
