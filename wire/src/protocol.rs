//! Connection and resync parameters: P_PROTOCOL / P_PROTOCOL_UPDATE (spec §5.8) and the
//! P_SYNC_PARAM / P_SYNC_PARAM89 family (spec §5.9).
//!
//! ```text
//! p_protocol:  protocol u32 | after_sb_0p u32 | after_sb_1p u32 | after_sb_2p u32
//!              | conn_flags u32 | two_primaries u32 | [integrity_alg, NUL-terminated; apv >= 87]
//! p_rs_param_95: resync_rate u32 | verify_alg [64] | csums_alg [64]
//!              | c_plan_ahead u32 | c_delay_target u32 | c_fill_target u32 | c_max_rate u32
//! ```

use std::fmt;

use bytes::BufMut;

use crate::command::Command;
use crate::error::{bad_field, expect_len, expect_min, DecodeError, EncodeError, Expected};
use crate::header::Header;
use crate::reader::Reader;
use crate::SHARED_SECRET_MAX;

/// A kernel crypto algorithm name ("sha1", "crc32c", "" = none). At most 63 bytes, no NUL;
/// the wire forms add the NUL.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct AlgName(String);

impl AlgName {
    pub const MAX_LEN: usize = SHARED_SECRET_MAX - 1;

    pub fn new(name: &str) -> Result<AlgName, String> {
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "algorithm name {name:?} is longer than {} bytes",
                Self::MAX_LEN
            ));
        }
        if name.bytes().any(|b| b == 0) {
            return Err(format!("algorithm name {name:?} contains a NUL byte"));
        }
        Ok(AlgName(name.to_string()))
    }

    pub fn none() -> AlgName {
        AlgName(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses a NUL-terminated name out of `bytes` as the kernel does: stop at the first NUL;
    /// a name that fills all of a 64-byte buffer is cut at 63 (the kernel forces byte 63 to 0).
    fn parse(
        command: Command,
        field: &'static str,
        offset: usize,
        bytes: &[u8],
    ) -> Result<AlgName, DecodeError> {
        let bytes = &bytes[..bytes.len().min(Self::MAX_LEN)];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let s = std::str::from_utf8(&bytes[..end])
            .map_err(|_| bad_field(command, field, offset, "algorithm name is not UTF-8"))?;
        Ok(AlgName(s.to_string()))
    }

    /// Writes the name NUL-padded into a fixed buffer of `SHARED_SECRET_MAX` bytes.
    fn put_fixed(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.0.as_bytes());
        buf.put_bytes(0, SHARED_SECRET_MAX - self.0.len());
    }
}

impl fmt::Debug for AlgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for AlgName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `enum drbd_after_sb_p` (spec §10.4) as a u32 newtype, so unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AfterSbPolicy(pub u32);

impl AfterSbPolicy {
    pub const DISCONNECT: Self = Self(0);
    pub const DISCARD_YOUNGER_PRIMARY: Self = Self(1);
    pub const DISCARD_OLDER_PRIMARY: Self = Self(2);
    pub const DISCARD_ZERO_CHANGES: Self = Self(3);
    pub const DISCARD_LEAST_CHANGES: Self = Self(4);
    pub const DISCARD_LOCAL: Self = Self(5);
    pub const DISCARD_REMOTE: Self = Self(6);
    pub const CONSENSUS: Self = Self(7);
    pub const DISCARD_SECONDARY: Self = Self(8);
    pub const CALL_HELPER: Self = Self(9);
    pub const VIOLENTLY: Self = Self(10);

    /// The drbd.conf keyword.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "disconnect",
            1 => "discard-younger-primary",
            2 => "discard-older-primary",
            3 => "discard-zero-changes",
            4 => "discard-least-changes",
            5 => "discard-local",
            6 => "discard-remote",
            7 => "consensus",
            8 => "discard-secondary",
            9 => "call-pri-lost-after-sb",
            10 => "violently-as0p",
            _ => return None,
        })
    }

    /// The peer's view: discard-local and discard-remote swap (drbd_receiver.c:
    /// convert_after_sb).
    pub fn as_seen_by_peer(self) -> Self {
        match self {
            Self::DISCARD_LOCAL => Self::DISCARD_REMOTE,
            Self::DISCARD_REMOTE => Self::DISCARD_LOCAL,
            other => other,
        }
    }
}

impl fmt::Debug for AfterSbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "AfterSbPolicy({})", self.0),
        }
    }
}

/// `enum drbd_conn_flags` bits in P_PROTOCOL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnFlags(pub u32);

impl ConnFlags {
    /// CF_DISCARD_MY_DATA.
    pub const DISCARD_MY_DATA: ConnFlags = ConnFlags(1);
    /// CF_DRY_RUN (apv >= 92).
    pub const DRY_RUN: ConnFlags = ConnFlags(2);

    pub fn contains(self, f: ConnFlags) -> bool {
        self.0 & f.0 == f.0
    }
}

/// P_PROTOCOL / P_PROTOCOL_UPDATE payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Protocol {
    /// 1 = A, 2 = B, 3 = C.
    pub protocol: u32,
    pub after_sb_0p: AfterSbPolicy,
    pub after_sb_1p: AfterSbPolicy,
    pub after_sb_2p: AfterSbPolicy,
    pub conn_flags: ConnFlags,
    /// allow-two-primaries; the kernel sends 0 or 1.
    pub two_primaries: u32,
    /// `data-integrity-alg`; `None` only for apv < 87 (24-byte payload). From 87 on the kernel
    /// always sends the string, `""` as a single NUL.
    pub integrity_alg: Option<AlgName>,
}

/// Fixed part of p_protocol.
pub const PROTOCOL_FIXED_LEN: usize = 24;

impl Protocol {
    pub const PROTOCOL_A: u32 = 1;
    pub const PROTOCOL_B: u32 = 2;
    pub const PROTOCOL_C: u32 = 3;

    pub fn decode(header: &Header, payload: &[u8], apv: u32) -> Result<Protocol, DecodeError> {
        let cmd = header.command;
        expect_min(cmd, payload, PROTOCOL_FIXED_LEN)?;
        let mut r = Reader::new(cmd, payload);
        let mut p = Protocol {
            protocol: r.u32()?,
            after_sb_0p: AfterSbPolicy(r.u32()?),
            after_sb_1p: AfterSbPolicy(r.u32()?),
            after_sb_2p: AfterSbPolicy(r.u32()?),
            conn_flags: ConnFlags(r.u32()?),
            two_primaries: r.u32()?,
            integrity_alg: None,
        };
        let tail = r.rest();
        if apv < 87 {
            // Before 87 the struct has no string; extra bytes would desynchronise the stream.
            expect_len(cmd, payload, PROTOCOL_FIXED_LEN)?;
        } else if !tail.is_empty() {
            // drbd_receiver.c: receive_protocol — the string part may not exceed 64 bytes.
            if tail.len() > SHARED_SECRET_MAX {
                return Err(DecodeError::PayloadLength {
                    command: cmd,
                    expected: Expected::Between(
                        PROTOCOL_FIXED_LEN,
                        PROTOCOL_FIXED_LEN + SHARED_SECRET_MAX,
                    ),
                    got: payload.len(),
                });
            }
            p.integrity_alg = Some(AlgName::parse(
                cmd,
                "integrity_alg",
                PROTOCOL_FIXED_LEN,
                tail,
            )?);
        } else {
            // A zero-length string at apv >= 87 means "no algorithm", like "".
            p.integrity_alg = None;
        }
        Ok(p)
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.protocol);
        buf.put_u32(self.after_sb_0p.0);
        buf.put_u32(self.after_sb_1p.0);
        buf.put_u32(self.after_sb_2p.0);
        buf.put_u32(self.conn_flags.0);
        buf.put_u32(self.two_primaries);
        if let Some(alg) = &self.integrity_alg {
            buf.put_slice(alg.as_str().as_bytes());
            buf.put_u8(0);
        }
    }

    pub fn encoded_len(&self) -> usize {
        PROTOCOL_FIXED_LEN + self.integrity_alg.as_ref().map_or(0, |a| a.0.len() + 1)
    }

    /// The integrity algorithm, treating "absent" like "".
    pub fn integrity_alg_name(&self) -> &str {
        self.integrity_alg.as_ref().map_or("", |a| a.as_str())
    }
}

/// Which of the four P_SYNC_PARAM layouts (spec §5.9). The kernel picks it from apv alone,
/// whichever of the two command codes carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncParamForm {
    /// apv <= 87: resync_rate only (4 bytes).
    V87,
    /// apv 88: resync_rate + NUL-terminated verify_alg (5..=68 bytes).
    V88,
    /// apv 89..=94: p_rs_param_89 (132 bytes).
    V89,
    /// apv >= 95: p_rs_param_95 (148 bytes).
    V95,
}

impl SyncParamForm {
    pub fn for_apv(apv: u32) -> SyncParamForm {
        match apv {
            ..=87 => SyncParamForm::V87,
            88 => SyncParamForm::V88,
            89..=94 => SyncParamForm::V89,
            _ => SyncParamForm::V95,
        }
    }

    /// The command a kernel sender uses for this form (drbd_main.c: drbd_send_sync_param).
    pub fn command(self) -> Command {
        match self {
            SyncParamForm::V87 | SyncParamForm::V88 => Command::SYNC_PARAM,
            SyncParamForm::V89 | SyncParamForm::V95 => Command::SYNC_PARAM89,
        }
    }
}

/// The dynamic resync controller settings of p_rs_param_95.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ResyncController {
    /// c-plan-ahead, 0.1 s.
    pub c_plan_ahead: u32,
    /// c-delay-target, 0.1 s.
    pub c_delay_target: u32,
    /// c-fill-target, sectors.
    pub c_fill_target: u32,
    /// c-max-rate, KiB/s.
    pub c_max_rate: u32,
}

/// P_SYNC_PARAM / P_SYNC_PARAM89 payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SyncParam {
    pub form: SyncParamForm,
    /// resync-rate, KiB/s.
    pub resync_rate: u32,
    /// Empty for V87.
    pub verify_alg: AlgName,
    /// Empty for V87 and V88.
    pub csums_alg: AlgName,
    /// Zero unless V95.
    pub controller: ResyncController,
}

/// sizeof(struct p_rs_param_89).
pub const RS_PARAM_89_LEN: usize = 4 + 2 * SHARED_SECRET_MAX;
/// sizeof(struct p_rs_param_95).
pub const RS_PARAM_95_LEN: usize = RS_PARAM_89_LEN + 16;

impl SyncParam {
    /// Decodes as a receiver at `apv` does (drbd_receiver.c: receive_SyncParam), but requires
    /// the exact length where the kernel would read a fixed struct.
    pub fn decode(header: &Header, payload: &[u8], apv: u32) -> Result<SyncParam, DecodeError> {
        let cmd = header.command;
        let form = SyncParamForm::for_apv(apv);
        let mut r = Reader::new(cmd, payload);
        let mut p = SyncParam {
            form,
            resync_rate: 0,
            verify_alg: AlgName::none(),
            csums_alg: AlgName::none(),
            controller: ResyncController::default(),
        };
        match form {
            SyncParamForm::V87 => {
                expect_len(cmd, payload, 4)?;
                p.resync_rate = r.u32()?;
            }
            SyncParamForm::V88 => {
                if !(5..=4 + SHARED_SECRET_MAX).contains(&payload.len()) {
                    return Err(DecodeError::PayloadLength {
                        command: cmd,
                        expected: Expected::Between(5, 4 + SHARED_SECRET_MAX),
                        got: payload.len(),
                    });
                }
                p.resync_rate = r.u32()?;
                let s = r.rest();
                // The kernel forces the last byte to NUL.
                p.verify_alg = AlgName::parse(cmd, "verify_alg", 4, &s[..s.len() - 1])?;
            }
            SyncParamForm::V89 | SyncParamForm::V95 => {
                let want = if form == SyncParamForm::V89 {
                    RS_PARAM_89_LEN
                } else {
                    RS_PARAM_95_LEN
                };
                expect_len(cmd, payload, want)?;
                p.resync_rate = r.u32()?;
                p.verify_alg = AlgName::parse(cmd, "verify_alg", 4, r.take(SHARED_SECRET_MAX)?)?;
                p.csums_alg = AlgName::parse(cmd, "csums_alg", 68, r.take(SHARED_SECRET_MAX)?)?;
                if form == SyncParamForm::V95 {
                    p.controller = ResyncController {
                        c_plan_ahead: r.u32()?,
                        c_delay_target: r.u32()?,
                        c_fill_target: r.u32()?,
                        c_max_rate: r.u32()?,
                    };
                }
            }
        }
        Ok(p)
    }

    /// Checks that the fields fit the chosen form (an empty field is always fine).
    pub fn validate(&self, command: Command) -> Result<(), EncodeError> {
        let err = |field, reason: &str| EncodeError::BadField {
            command,
            field,
            reason: reason.to_string(),
        };
        match self.form {
            SyncParamForm::V87 if !self.verify_alg.is_empty() => {
                Err(err("verify_alg", "needs protocol 88 or later"))
            }
            SyncParamForm::V87 | SyncParamForm::V88 if !self.csums_alg.is_empty() => {
                Err(err("csums_alg", "needs protocol 89 or later"))
            }
            SyncParamForm::V95 => Ok(()),
            _ if self.controller != ResyncController::default() => {
                Err(err("controller", "c-* settings need protocol 95 or later"))
            }
            _ => Ok(()),
        }
    }

    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u32(self.resync_rate);
        match self.form {
            SyncParamForm::V87 => {}
            SyncParamForm::V88 => {
                buf.put_slice(self.verify_alg.as_str().as_bytes());
                buf.put_u8(0);
            }
            SyncParamForm::V89 | SyncParamForm::V95 => {
                self.verify_alg.put_fixed(buf);
                self.csums_alg.put_fixed(buf);
                if self.form == SyncParamForm::V95 {
                    buf.put_u32(self.controller.c_plan_ahead);
                    buf.put_u32(self.controller.c_delay_target);
                    buf.put_u32(self.controller.c_fill_target);
                    buf.put_u32(self.controller.c_max_rate);
                }
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self.form {
            SyncParamForm::V87 => 4,
            SyncParamForm::V88 => 4 + self.verify_alg.0.len() + 1,
            SyncParamForm::V89 => RS_PARAM_89_LEN,
            SyncParamForm::V95 => RS_PARAM_95_LEN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::HeaderKind;
    use crate::Volume;

    fn hdr(c: Command) -> Header {
        Header::with_kind(HeaderKind::H100, Volume(0), c, 0).unwrap()
    }

    #[test]
    fn rejects_integrity_alg_longer_than_64() {
        let mut p = vec![0u8; 24];
        p.extend_from_slice(&[b'a'; 65]);
        let e = Protocol::decode(&hdr(Command::PROTOCOL), &p, 101).unwrap_err();
        assert!(matches!(e, DecodeError::PayloadLength { got: 89, .. }));
    }

    #[test]
    fn rejects_sync_param_with_wrong_length_for_apv() {
        let e = SyncParam::decode(&hdr(Command::SYNC_PARAM89), &[0; 132], 101).unwrap_err();
        assert_eq!(
            e,
            DecodeError::PayloadLength {
                command: Command::SYNC_PARAM89,
                expected: Expected::Exactly(148),
                got: 132
            }
        );
        assert!(SyncParam::decode(&hdr(Command::SYNC_PARAM89), &[0; 132], 90).is_ok());
        assert!(SyncParam::decode(&hdr(Command::SYNC_PARAM), &[0; 4], 88).is_err());
    }

    #[test]
    fn rejects_non_utf8_alg_name_naming_offset() {
        let mut p = vec![0u8; 148];
        p[68] = 0xff;
        let e = SyncParam::decode(&hdr(Command::SYNC_PARAM89), &p, 101).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::BadField {
                field: "csums_alg",
                offset: 68,
                ..
            }
        ));
    }

    #[test]
    fn after_sb_discard_local_remote_swap() {
        assert_eq!(
            AfterSbPolicy::DISCARD_LOCAL.as_seen_by_peer(),
            AfterSbPolicy::DISCARD_REMOTE
        );
        assert_eq!(
            AfterSbPolicy::CONSENSUS.as_seen_by_peer(),
            AfterSbPolicy::CONSENSUS
        );
    }
}
