//! Reading the lab's captures: a classic pcap file -> IPv4/TCP segments -> one byte stream per
//! direction of each connection. Only what tcpdump on the guest's `lo` produces is supported
//! (Ethernet or Linux "cooked" link types, IPv4, no IP fragments).

use std::net::{Ipv4Addr, SocketAddrV4};

/// Why a capture could not be read; names the record.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    /// Not a pcap file (pcapng is not supported).
    #[error("not a classic pcap file (magic {0:#010x})")]
    BadMagic(u32),
    /// The file ends inside a header or record.
    #[error("pcap truncated in record {record} at byte {offset}")]
    Truncated {
        /// Record number, from 0.
        record: usize,
        /// Byte offset in the file.
        offset: usize,
    },
    /// A link type we do not decode.
    #[error("unsupported pcap link type {0}")]
    LinkType(u32),
    /// A record was cut by the snap length, so the stream has a hole.
    #[error("record {record} was captured short ({caplen} of {len} bytes): raise the snap length")]
    ShortRecord {
        /// Record number.
        record: usize,
        /// Bytes kept.
        caplen: u32,
        /// Bytes on the wire.
        len: u32,
    },
}

/// One TCP segment with payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Capture time in microseconds since the epoch.
    pub time_us: u64,
    /// Sender.
    pub from: SocketAddrV4,
    /// Receiver.
    pub to: SocketAddrV4,
    /// TCP sequence number of the first payload byte.
    pub seq: u32,
    /// SYN flag (a new connection starts).
    pub syn: bool,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// The bytes one side sent on one connection, in order, retransmissions dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Sender.
    pub from: SocketAddrV4,
    /// Receiver.
    pub to: SocketAddrV4,
    /// Time of the first segment (SYN or data), microseconds.
    pub first_us: u64,
    /// The payload.
    pub bytes: Vec<u8>,
    /// Bytes missing from the capture (out-of-window gaps); 0 for a complete stream.
    pub gap_bytes: u64,
}

const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Reads every TCP segment of a pcap file (segments without payload are kept only for SYN).
pub fn segments(file: &[u8]) -> Result<Vec<Segment>, PcapError> {
    let magic = read_u32(file, 0, true).ok_or(PcapError::Truncated {
        record: 0,
        offset: 0,
    })?;
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => return Err(PcapError::BadMagic(m)),
    };
    let linktype = read_u32(file, 20, le).ok_or(PcapError::Truncated {
        record: 0,
        offset: 20,
    })?;
    let mut out = Vec::new();
    let mut offset = 24;
    let mut record = 0;
    while offset < file.len() {
        let trunc = PcapError::Truncated { record, offset };
        let field = |i: usize| read_u32(file, offset + 4 * i, le).ok_or(trunc.clone());
        let (secs, frac, caplen, len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let body = file
            .get(offset + 16..offset + 16 + caplen as usize)
            .ok_or(trunc.clone())?;
        if caplen < len {
            return Err(PcapError::ShortRecord {
                record,
                caplen,
                len,
            });
        }
        let time_us =
            u64::from(secs) * 1_000_000 + u64::from(if nanos { frac / 1000 } else { frac });
        if let Some(ip) = network_layer(body, linktype)? {
            if let Some(seg) = tcp_in_ipv4(ip, time_us) {
                out.push(seg);
            }
        }
        offset += 16 + caplen as usize;
        record += 1;
    }
    Ok(out)
}

/// Groups segments into per-direction streams, ordered by first appearance.
pub fn streams(file: &[u8]) -> Result<Vec<Stream>, PcapError> {
    struct Building {
        stream: Stream,
        next_seq: Option<u32>,
    }
    let mut all: Vec<Building> = Vec::new();
    for seg in segments(file)? {
        let key = |b: &Building| b.stream.from == seg.from && b.stream.to == seg.to;
        // A SYN from an endpoint pair already seen starts a new connection (port reuse).
        let idx = match all.iter().rposition(key) {
            Some(i) if !seg.syn => i,
            _ => {
                all.push(Building {
                    stream: Stream {
                        from: seg.from,
                        to: seg.to,
                        first_us: seg.time_us,
                        bytes: Vec::new(),
                        gap_bytes: 0,
                    },
                    next_seq: None,
                });
                all.len() - 1
            }
        };
        let b = &mut all[idx];
        if seg.syn {
            // The SYN takes one sequence number.
            b.next_seq = Some(seg.seq.wrapping_add(1));
            continue;
        }
        let next = *b.next_seq.get_or_insert(seg.seq);
        let ahead = seg.seq.wrapping_sub(next) as i32;
        if ahead < 0 {
            // Retransmission or overlap: keep only what is new.
            let skip = (-ahead) as usize;
            if skip < seg.payload.len() {
                b.stream.bytes.extend_from_slice(&seg.payload[skip..]);
                b.next_seq = Some(next.wrapping_add((seg.payload.len() - skip) as u32));
            }
        } else {
            // A hole (ahead > 0) means the capture lost data; record it.
            b.stream.gap_bytes += ahead as u64;
            b.stream.bytes.extend_from_slice(&seg.payload);
            b.next_seq = Some(seg.seq.wrapping_add(seg.payload.len() as u32));
        }
    }
    Ok(all
        .into_iter()
        .map(|b| b.stream)
        .filter(|s| !s.bytes.is_empty())
        .collect())
}

fn network_layer(body: &[u8], linktype: u32) -> Result<Option<&[u8]>, PcapError> {
    let (ethertype, rest) = match linktype {
        LINKTYPE_ETHERNET => (read_u16(body, 12), body.get(14..)),
        LINKTYPE_LINUX_SLL => (read_u16(body, 14), body.get(16..)),
        LINKTYPE_LINUX_SLL2 => (read_u16(body, 0), body.get(20..)),
        // BSD loopback: a 4-byte host-order address family; 2 is AF_INET.
        LINKTYPE_NULL => (Some(0x0800), body.get(4..)),
        other => return Err(PcapError::LinkType(other)),
    };
    Ok(match (ethertype, rest) {
        (Some(0x0800), Some(ip)) => Some(ip),
        _ => None,
    })
}

fn tcp_in_ipv4(ip: &[u8], time_us: u64) -> Option<Segment> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || ip.get(9)? != &6 || ihl < 20 {
        return None;
    }
    let total = usize::from(read_u16(ip, 2)?).min(ip.len());
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let tcp = ip.get(ihl..total)?;
    let data_off = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    let syn = flags & 0x02 != 0;
    let payload = tcp.get(data_off..)?.to_vec();
    if payload.is_empty() && !syn {
        return None;
    }
    Some(Segment {
        time_us,
        from: SocketAddrV4::new(src, read_u16(tcp, 0)?),
        to: SocketAddrV4::new(dst, read_u16(tcp, 2)?),
        seq: read_u32(tcp, 4, false)?,
        syn,
        payload,
    })
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let raw: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian pcap with Ethernet framing and the given TCP segments.
    fn pcap(segs: &[(u16, u16, u32, u8, &[u8])]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        f.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65535, LINKTYPE_ETHERNET] {
            f.extend_from_slice(&v.to_le_bytes()); // thiszone, sigfigs, snaplen, linktype
        }
        for (i, &(sport, dport, seq, flags, data)) in segs.iter().enumerate() {
            let mut pkt = vec![0u8; 14];
            pkt[12] = 0x08;
            let total = 20 + 20 + data.len();
            let mut ip = vec![
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0,
                0,
                64,
                6,
                0,
                0,
            ];
            ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
            let mut tcp = Vec::new();
            tcp.extend_from_slice(&sport.to_be_bytes());
            tcp.extend_from_slice(&dport.to_be_bytes());
            tcp.extend_from_slice(&seq.to_be_bytes());
            tcp.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            pkt.extend(ip);
            pkt.extend(tcp);
            pkt.extend_from_slice(data);
            for v in [i as u32, 0, pkt.len() as u32, pkt.len() as u32] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend(pkt);
        }
        f
    }

    #[test]
    fn reassembles_and_drops_retransmission() {
        let f = pcap(&[
            (5000, 7789, 99, 0x02, b""),
            (5000, 7789, 100, 0x18, b"abc"),
            (5000, 7789, 100, 0x18, b"abc"),
            (5000, 7789, 103, 0x18, b"def"),
            (7789, 5000, 1, 0x18, b"xyz"),
        ]);
        let s = streams(&f).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].bytes, b"abcdef");
        assert_eq!(s[0].to.port(), 7789);
        assert_eq!(s[0].gap_bytes, 0);
        assert_eq!(s[1].bytes, b"xyz");
    }

    #[test]
    fn counts_a_hole() {
        let f = pcap(&[(1, 2, 10, 0x18, b"ab"), (1, 2, 20, 0x18, b"cd")]);
        assert_eq!(streams(&f).unwrap()[0].gap_bytes, 8);
    }

    #[test]
    fn rejects_pcapng_and_truncation() {
        assert_eq!(
            segments(&[0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0]),
            Err(PcapError::BadMagic(0x0a0d0d0a))
        );
        let mut f = pcap(&[(1, 2, 10, 0x18, b"ab")]);
        f.truncate(f.len() - 1);
        assert!(matches!(
            segments(&f),
            Err(PcapError::Truncated { record: 0, .. })
        ));
    }
}
