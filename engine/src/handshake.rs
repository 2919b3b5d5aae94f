//! The connection handshake as explicit states named for what they wait for (rustls style), and
//! the payloads of the handshake packets (spec §2.3–§2.5, §5.7–§5.12).

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};

use crate::codec::{c_string, Reader};
use crate::config::{DiskConfig, HmacAlg, NetConfig};
use crate::error::{PeerIncompatible, PeerMisbehaved};

/// Protocol versions we speak (8.4: `PRO_VERSION_MIN` 86, `PRO_VERSION_MAX` 101).
pub const PRO_VERSION_MIN: u32 = 86;
pub const PRO_VERSION_MAX: u32 = 101;
/// We require h100 framing and the 8.4.2+ semantics; older dialects are refused (spec §13 allows
/// a narrower range). Kernel 8.4.11 and DRBD 9 peers agree on 101.
pub const OUR_PROTOCOL_MIN: u32 = 100;
/// `PRO_FEATURES` of 8.4.11 / mainline: TRIM | THIN_RESYNC | WSAME | WZEROES.
pub const PRO_FEATURES: u32 = 0x0f;
pub const FF_TRIM: u32 = 0x1;
pub const FF_WSAME: u32 = 0x4;
pub const FF_WZEROES: u32 = 0x8;
/// `CHALLENGE_LEN`.
pub const CHALLENGE_LEN: usize = 64;

/// Where the handshake stands. `Done` means the peer's parameters are being processed (the
/// kernel's WFReportParams) or the connection is established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// No connection.
    Idle,
    /// We sent `P_CONNECTION_FEATURES`; the peer's must be the very next packet.
    ExpectFeatures,
    /// We sent our challenge; waiting for the peer's.
    ExpectAuthChallenge(ExpectAuth),
    /// We answered the peer's challenge; waiting for its answer to ours.
    ExpectAuthResponse(ExpectAuth),
    /// Parameters sent; processing the peer's `P_PROTOCOL`, `P_SYNC_PARAM89`, `P_SIZES`,
    /// `P_UUIDS`, `P_STATE` (in that order per volume).
    ExpectProtocol,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectAuth {
    pub alg: HmacAlg,
    pub secret: Vec<u8>,
    pub my_challenge: [u8; CHALLENGE_LEN],
}

/// Outcome of feature negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    pub apv: u32,
    pub features: u32,
}

/// `P_CONNECTION_FEATURES` payload (72 bytes).
pub fn features_payload() -> Vec<u8> {
    let mut b = BytesMut::with_capacity(72);
    b.put_u32(OUR_PROTOCOL_MIN);
    b.put_u32(PRO_FEATURES);
    b.put_u32(PRO_VERSION_MAX);
    b.put_bytes(0, 60);
    b.to_vec()
}

/// drbd_receiver.c drbd_do_features: length exactly 72; incompatible when the ranges do not
/// overlap; apv = min of the maxima; features = intersection. DRBD 9 node ids at 12..20 ignored.
pub fn receive_features(payload: &[u8]) -> Result<Agreed, crate::error::Error> {
    if payload.len() != 72 {
        return Err(PeerMisbehaved::PayloadLength {
            cmd: "P_CONNECTION_FEATURES",
            expected: "72".into(),
            got: payload.len(),
        }
        .into());
    }
    let mut r = Reader::new(payload);
    let (pmin, pfeat, pmax) = match (r.u32(), r.u32(), r.u32()) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => unreachable!("length checked above"),
    };
    // protocol_max 0 means "= protocol_min" (old peers).
    let pmax = if pmax == 0 { pmin } else { pmax };
    if PRO_VERSION_MAX < pmin || OUR_PROTOCOL_MIN > pmax {
        return Err(PeerIncompatible::Dialect {
            my_min: OUR_PROTOCOL_MIN,
            my_max: PRO_VERSION_MAX,
            peer_min: pmin,
            peer_max: pmax,
        }
        .into());
    }
    Ok(Agreed {
        apv: PRO_VERSION_MAX.min(pmax),
        features: PRO_FEATURES & pfeat,
    })
}

pub fn hmac(alg: HmacAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    // new_from_slice accepts any key length for HMAC; the error arm cannot happen.
    match alg {
        HmacAlg::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(key)
            .map(|mut m| {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            })
            .unwrap_or_default(),
        HmacAlg::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(key)
            .map(|mut m| {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            })
            .unwrap_or_default(),
        HmacAlg::Md5 => Hmac::<md5::Md5>::new_from_slice(key)
            .map(|mut m| {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            })
            .unwrap_or_default(),
    }
}

/// drbd_do_auth, the peer's challenge: 64..=128 bytes, not our own.
pub fn check_challenge(a: &ExpectAuth, payload: &[u8]) -> Result<Vec<u8>, PeerIncompatible> {
    if payload.len() < CHALLENGE_LEN || payload.len() > 2 * CHALLENGE_LEN {
        return Err(PeerIncompatible::Protocol(
            "AuthChallenge payload has a bad length",
        ));
    }
    if payload[..CHALLENGE_LEN] == a.my_challenge {
        return Err(PeerIncompatible::SameChallenge);
    }
    Ok(hmac(a.alg, &a.secret, payload))
}

/// drbd_do_auth, the peer's response: must equal HMAC(secret, our challenge).
pub fn check_response(a: &ExpectAuth, payload: &[u8]) -> Result<(), PeerIncompatible> {
    let want = hmac(a.alg, &a.secret, &a.my_challenge);
    if payload.len() != want.len() || payload != want.as_slice() {
        return Err(PeerIncompatible::AuthFailed);
    }
    Ok(())
}

/// `P_PROTOCOL` payload (spec §5.8).
pub fn protocol_payload(net: &NetConfig, discard_my_data: bool) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(net.protocol as u32);
    b.put_u32(net.after_sb_0pri as u32);
    b.put_u32(net.after_sb_1pri as u32);
    b.put_u32(net.after_sb_2pri as u32);
    b.put_u32(discard_my_data as u32);
    b.put_u32(net.allow_two_primaries as u32);
    b.extend_from_slice(net.integrity_alg.as_bytes());
    b.put_u8(0);
    b.to_vec()
}

/// drbd_receiver.c receive_protocol: every mismatch refuses the connection (StandAlone).
/// Returns the peer's discard-my-data bit.
pub fn check_protocol(
    net: &NetConfig,
    discard_my_data: bool,
    payload: &[u8],
) -> Result<bool, crate::error::Error> {
    let mut r = Reader::new(payload);
    let fields = (r.u32(), r.u32(), r.u32(), r.u32(), r.u32(), r.u32());
    let (Some(proto), Some(p0), Some(p1), Some(p2), Some(flags), Some(two)) = fields else {
        return Err(PeerMisbehaved::PayloadLength {
            cmd: "P_PROTOCOL",
            expected: "≥ 24".into(),
            got: payload.len(),
        }
        .into());
    };
    // The peer's discard-local/discard-remote are mirrored (5 ↔ 6) before comparing.
    let mirror = |p: u32| match p {
        5 => 6,
        6 => 5,
        x => x,
    };
    if proto != net.protocol as u32 {
        return Err(PeerIncompatible::Protocol("incompatible communication protocols").into());
    }
    if mirror(p0) != net.after_sb_0pri as u32 {
        return Err(PeerIncompatible::Protocol("incompatible after-sb-0pri settings").into());
    }
    if p1 != net.after_sb_1pri as u32 {
        return Err(PeerIncompatible::Protocol("incompatible after-sb-1pri settings").into());
    }
    if p2 != net.after_sb_2pri as u32 {
        return Err(PeerIncompatible::Protocol("incompatible after-sb-2pri settings").into());
    }
    let peer_discard = flags & 1 != 0;
    if peer_discard && discard_my_data {
        return Err(PeerIncompatible::Protocol("incompatible discard-my-data settings").into());
    }
    if (two != 0) != net.allow_two_primaries {
        return Err(PeerIncompatible::Protocol(
            "incompatible setting of the two-primaries options",
        )
        .into());
    }
    let alg = c_string(r.rest());
    if alg != net.integrity_alg {
        return Err(PeerIncompatible::Protocol("incompatible data-integrity-alg").into());
    }
    Ok(peer_discard)
}

/// `P_SYNC_PARAM89` payload, the 148-byte `p_rs_param_95` (spec §5.9).
pub fn sync_param_payload(net: &NetConfig, disk: &DiskConfig) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(148);
    b.put_u32(disk.resync_rate_kib);
    let mut name = |s: &str| {
        let mut f = [0u8; 64];
        let n = s.len().min(63);
        f[..n].copy_from_slice(&s.as_bytes()[..n]);
        b.extend_from_slice(&f);
    };
    name(&net.verify_alg);
    name(&net.csums_alg);
    b.put_u32(disk.c_plan_ahead_ds);
    b.put_u32(disk.c_delay_target_ds);
    b.put_u32(disk.c_fill_target_sect);
    b.put_u32(disk.c_max_rate_kib);
    b.to_vec()
}

/// The peer's resync settings, adopted by the receiver (spec §5.9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSyncParams {
    pub resync_rate_kib: u32,
    pub verify_alg: String,
    pub csums_alg: String,
    pub c_plan_ahead_ds: u32,
    pub c_delay_target_ds: u32,
    pub c_fill_target_sect: u32,
    pub c_max_rate_kib: u32,
}

pub fn receive_sync_param(payload: &[u8]) -> Result<PeerSyncParams, PeerMisbehaved> {
    if payload.len() != 148 && payload.len() != 132 {
        return Err(PeerMisbehaved::PayloadLength {
            cmd: "P_SYNC_PARAM89",
            expected: "132 or 148".into(),
            got: payload.len(),
        });
    }
    let mut r = Reader::new(payload);
    let rate = r.u32().unwrap_or(0);
    let verify = c_string(r.bytes(64).unwrap_or(&[]));
    let csums = c_string(r.bytes(64).unwrap_or(&[]));
    Ok(PeerSyncParams {
        resync_rate_kib: rate,
        verify_alg: verify,
        csums_alg: csums,
        c_plan_ahead_ds: r.u32().unwrap_or(0),
        c_delay_target_ds: r.u32().unwrap_or(0),
        c_fill_target_sect: r.u32().unwrap_or(0),
        c_max_rate_kib: r.u32().unwrap_or(0),
    })
}

/// `P_SIZES` fields (spec §5.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub d_size: u64,
    pub u_size: u64,
    pub c_size: u64,
    pub max_bio_size: u32,
    pub dds_flags: u16,
}

pub fn sizes_payload(s: &Sizes, features: u32) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(56);
    b.put_u64(s.d_size);
    b.put_u64(s.u_size);
    b.put_u64(s.c_size);
    b.put_u32(s.max_bio_size);
    b.put_u16(0);
    b.put_u16(s.dds_flags);
    if features & FF_WSAME != 0 {
        // o_qlim: 512-byte logical/physical blocks, io_min 512, no discard, no write-same.
        b.put_u32(512);
        b.put_u32(512);
        b.put_u32(0);
        b.put_u32(512);
        b.put_u32(0);
        b.put_u8(0);
        b.put_u8(0);
        b.put_u8(0);
        b.put_u8(0);
    }
    b.to_vec()
}

pub fn receive_sizes(payload: &[u8], features: u32) -> Result<Sizes, PeerMisbehaved> {
    let want = if features & FF_WSAME != 0 { 56 } else { 32 };
    if payload.len() != want {
        return Err(PeerMisbehaved::PayloadLength {
            cmd: "P_SIZES",
            expected: want.to_string(),
            got: payload.len(),
        });
    }
    let mut r = Reader::new(payload);
    let (d, u, c, m) = (r.u64(), r.u64(), r.u64(), r.u32());
    let _qot = r.u16();
    let f = r.u16();
    match (d, u, c, m, f) {
        (Some(d_size), Some(u_size), Some(c_size), Some(max_bio_size), Some(dds_flags)) => {
            Ok(Sizes {
                d_size,
                u_size,
                c_size,
                max_bio_size,
                dds_flags,
            })
        }
        _ => unreachable!("length checked above"),
    }
}

pub fn uuids_payload(uuids: &[u64; 4], bits: u64, flags: u64) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(48);
    for u in uuids {
        b.put_u64(*u);
    }
    b.put_u64(bits);
    b.put_u64(flags);
    b.to_vec()
}

/// `P_UUIDS`: (uuids, bitmap weight, flags).
pub fn receive_uuids(payload: &[u8]) -> Result<([u64; 4], u64, u64), PeerMisbehaved> {
    if payload.len() != 48 {
        return Err(PeerMisbehaved::PayloadLength {
            cmd: "P_UUIDS",
            expected: "48".into(),
            got: payload.len(),
        });
    }
    let mut r = Reader::new(payload);
    let mut v = [0u64; 6];
    for x in v.iter_mut() {
        *x = r.u64().unwrap_or(0);
    }
    Ok(([v[0], v[1], v[2], v[3]], v[4], v[5]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_agree_on_101_with_kernel_8_4_11() {
        // Payload from the lab capture: min 86, features 0xf, max 101.
        let mut p = vec![0u8; 72];
        p[0..4].copy_from_slice(&86u32.to_be_bytes());
        p[4..8].copy_from_slice(&0xfu32.to_be_bytes());
        p[8..12].copy_from_slice(&101u32.to_be_bytes());
        assert_eq!(
            receive_features(&p),
            Ok(Agreed {
                apv: 101,
                features: 0xf
            })
        );
    }

    #[test]
    fn rejects_dialect_without_overlap() {
        let mut p = vec![0u8; 72];
        p[0..4].copy_from_slice(&86u32.to_be_bytes());
        p[8..12].copy_from_slice(&96u32.to_be_bytes());
        assert!(matches!(
            receive_features(&p),
            Err(crate::error::Error::PeerIncompatible(
                PeerIncompatible::Dialect { .. }
            ))
        ));
    }

    #[test]
    fn protocol_payload_matches_kernel_capture() {
        // Lab capture: P_PROTOCOL len 25 = C, policies 0, flags 0, two_primaries 0, "".
        let p = protocol_payload(&NetConfig::default(), false);
        let mut want = vec![0u8; 25];
        want[3] = 3;
        assert_eq!(p, want);
    }

    #[test]
    fn hmac_sha1_rfc2202_vector() {
        // RFC 2202 test case 2.
        let mac = hmac(HmacAlg::Sha1, b"Jefe", b"what do ya want for nothing?");
        assert_eq!(mac[..4], [0xef, 0xfc, 0xdf, 0x6a]);
    }
}
