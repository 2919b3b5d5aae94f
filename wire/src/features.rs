//! P_CONNECTION_FEATURES (0xfffe) and version/feature negotiation (spec §2.4).
//!
//! ```text
//! off  size field
//!   0     4 protocol_min
//!   4     4 feature_flags (DRBD_FF_*)
//!   8     4 protocol_max (0 means = protocol_min)
//!  12    60 8.4: zero; DRBD 9: sender node id @12, receiver node id @16, reserved
//! ```

use std::fmt;

use bytes::BufMut;

use crate::command::Command;
use crate::error::{expect_len, DecodeError};
use crate::header::Header;
use crate::packet::Packet;
use crate::reader::Reader;
use crate::Dialect;

/// Payload size (drbd_protocol.h: struct p_connection_features).
pub const FEATURES_LEN: usize = 72;

/// DRBD_FF_* bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FeatureFlags(pub u32);

impl FeatureFlags {
    /// DRBD_FF_TRIM: P_TRIM may be sent.
    pub const TRIM: FeatureFlags = FeatureFlags(0x1);
    /// DRBD_FF_THIN_RESYNC: P_RS_THIN_REQ / P_RS_DEALLOCATED.
    pub const THIN_RESYNC: FeatureFlags = FeatureFlags(0x2);
    /// DRBD_FF_WSAME: 56-byte P_SIZES, 128 MiB discards, P_WSAME, uuid rule 41.
    pub const WSAME: FeatureFlags = FeatureFlags(0x4);
    /// DRBD_FF_WZEROES: P_ZEROES.
    pub const WZEROES: FeatureFlags = FeatureFlags(0x8);
    /// What 8.4.11+ and mainline advertise (PRO_FEATURES).
    pub const ALL_84: FeatureFlags = FeatureFlags(0xf);

    pub const fn contains(self, other: FeatureFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersect(self, other: FeatureFlags) -> FeatureFlags {
        FeatureFlags(self.0 & other.0)
    }
}

impl fmt::Debug for FeatureFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FeatureFlags(0x{:x}", self.0)?;
        for (bit, name) in [
            (Self::TRIM, "TRIM"),
            (Self::THIN_RESYNC, "THIN_RESYNC"),
            (Self::WSAME, "WRITE_SAME"),
            (Self::WZEROES, "WRITE_ZEROES"),
        ] {
            if self.contains(bit) {
                write!(f, " {name}")?;
            }
        }
        write!(f, ")")
    }
}

/// The P_CONNECTION_FEATURES payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Features {
    pub protocol_min: u32,
    pub feature_flags: FeatureFlags,
    pub protocol_max: u32,
    /// Bytes 12..72: zero from 8.4, node ids from DRBD 9. Ignored, kept for round trips.
    pub extra: [u8; 60],
}

impl Features {
    /// What we advertise by default: the full 8.4 range with all 8.4 features.
    pub const UDRBD: Features = Features {
        protocol_min: 86,
        feature_flags: FeatureFlags::ALL_84,
        protocol_max: 101,
        extra: [0; 60],
    };

    pub fn new(protocol_min: u32, protocol_max: u32, feature_flags: FeatureFlags) -> Features {
        Features {
            protocol_min,
            feature_flags,
            protocol_max,
            extra: [0; 60],
        }
    }

    pub fn decode(header: &Header, payload: &[u8]) -> Result<Features, DecodeError> {
        // drbd_receiver.c: drbd_do_features — the length must be exactly 72.
        expect_len(header.command, payload, FEATURES_LEN)?;
        let mut r = Reader::new(header.command, payload);
        Ok(Features {
            protocol_min: r.u32()?,
            feature_flags: FeatureFlags(r.u32()?),
            protocol_max: r.u32()?,
            extra: r.array()?,
        })
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.protocol_min);
        buf.put_u32(self.feature_flags.0);
        buf.put_u32(self.protocol_max);
        buf.put_slice(&self.extra);
    }

    /// protocol_max with the kernel's "0 means protocol_min" rule applied.
    pub fn effective_max(&self) -> u32 {
        if self.protocol_max == 0 {
            self.protocol_min
        } else {
            self.protocol_max
        }
    }

    /// DRBD 9 puts its node id at offset 12 (`_pad` for 8.4).
    pub fn drbd9_sender_node_id(&self) -> u32 {
        u32::from_be_bytes([self.extra[0], self.extra[1], self.extra[2], self.extra[3]])
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Features")
            .field("protocol_min", &self.protocol_min)
            .field("feature_flags", &self.feature_flags)
            .field("protocol_max", &self.protocol_max)
            .field("extra_nonzero", &self.extra.iter().any(|&b| b != 0))
            .finish()
    }
}

/// The result of a successful negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Agreed {
    pub apv: u32,
    pub features: FeatureFlags,
}

/// Why the kernel would give up on the connection for good during feature negotiation
/// (drbd_receiver.c: drbd_do_features returns -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The first packet on the data socket was something else.
    #[error("expected ConnectionFeatures packet, received: {0}")]
    NotFeatures(Command),
    /// The version ranges do not overlap.
    #[error("incompatible DRBD dialects: I support {my_min}-{my_max}, peer supports {peer_min}-{peer_max}")]
    Incompatible {
        my_min: u32,
        my_max: u32,
        peer_min: u32,
        peer_max: u32,
    },
}

impl Agreed {
    /// The dialect to decode and encode with from now on (no integrity digest yet).
    pub fn dialect(&self) -> Dialect {
        Dialect {
            apv: self.apv,
            features: self.features,
            digest_len: 0,
        }
    }
}

/// Agrees on a protocol version and features as the kernel does: refuse if the ranges do not
/// overlap, else apv = min(my_max, peer_max) and features = mine & peer's.
///
/// A DRBD 9 peer advertising e.g. 86..=124 agrees on 101 with an 8.4 range.
pub fn negotiate(mine: &Features, peer: &Features) -> Result<Agreed, Refusal> {
    let my_max = mine.effective_max();
    let peer_max = peer.effective_max();
    if my_max < peer.protocol_min || mine.protocol_min > peer_max {
        return Err(Refusal::Incompatible {
            my_min: mine.protocol_min,
            my_max,
            peer_min: peer.protocol_min,
            peer_max,
        });
    }
    let apv = my_max.min(peer_max);
    debug_assert!(apv >= mine.protocol_min && apv >= peer.protocol_min);
    Ok(Agreed {
        apv,
        features: mine.feature_flags.intersect(peer.feature_flags),
    })
}

/// Negotiates from the first packet received on the data socket, which must be
/// P_CONNECTION_FEATURES (a wrong length already failed to decode).
pub fn handle_first_packet(mine: &Features, first: &Packet) -> Result<Agreed, Refusal> {
    match first {
        Packet::ConnectionFeatures(peer) => negotiate(mine, peer),
        other => Err(Refusal::NotFeatures(other.command())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(min: u32, max: u32, ff: u32) -> Features {
        Features::new(min, max, FeatureFlags(ff))
    }

    #[test]
    fn agrees_on_lower_max_and_common_features() {
        let a = negotiate(&f(86, 101, 0xf), &f(86, 124, 0x3f)).unwrap();
        assert_eq!(
            a,
            Agreed {
                apv: 101,
                features: FeatureFlags(0xf)
            }
        );
        let a = negotiate(&f(86, 101, 0xf), &f(86, 96, 0x1)).unwrap();
        assert_eq!(a.apv, 96);
        assert_eq!(a.features, FeatureFlags(1));
    }

    #[test]
    fn zero_max_means_min() {
        let a = negotiate(&f(86, 101, 0), &f(90, 0, 0)).unwrap();
        assert_eq!(a.apv, 90);
    }

    #[test]
    fn refuses_disjoint_ranges() {
        let e = negotiate(&f(86, 101, 0xf), &f(110, 124, 0)).unwrap_err();
        assert!(matches!(e, Refusal::Incompatible { peer_min: 110, .. }));
        assert_eq!(
            e.to_string(),
            "incompatible DRBD dialects: I support 86-101, peer supports 110-124"
        );
        assert!(negotiate(&f(100, 101, 0), &f(86, 96, 0)).is_err());
    }

    #[test]
    fn refuses_other_first_packet() {
        assert_eq!(
            handle_first_packet(
                &Features::UDRBD,
                &Packet::Protocol(crate::Protocol {
                    protocol: 3,
                    after_sb_0p: Default::default(),
                    after_sb_1p: Default::default(),
                    after_sb_2p: Default::default(),
                    conn_flags: Default::default(),
                    two_primaries: 0,
                    integrity_alg: None,
                })
            ),
            Err(Refusal::NotFeatures(Command::PROTOCOL))
        );
        let a = handle_first_packet(
            &Features::UDRBD,
            &Packet::ConnectionFeatures(f(86, 101, 0xf)),
        )
        .unwrap();
        assert_eq!(a.dialect(), Dialect::KERNEL_101);
    }
}
