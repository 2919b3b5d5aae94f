//! The top-level `Packet` enum (one variant per command 8.4 sends or accepts, plus `Unknown`)
//! and `Frame` = volume + packet, which is what travels on a socket.

use bytes::{BufMut, Bytes};

use crate::ack::BlockAck;
use crate::barrier::{Barrier, BarrierAck};
use crate::bitmap::{CompressedBitmap, PlainBitmap};
use crate::command::Command;
use crate::data::{BlockDesc, BlockReq, Data, DelayProbe, DigestReq, Trim, Wsame};
use crate::error::{expect_len, DecodeError, EncodeError, Expected};
use crate::features::{Features, FEATURES_LEN};
use crate::header::{Header, HeaderKind};
use crate::protocol::{Protocol, SyncParam};
use crate::reader::Origin;
use crate::sizes::Sizes;
use crate::state::{ReqState, State, StateChgReply};
use crate::uuids::{decode_sync_uuid, Uuids};
use crate::{auth, Dialect, FeatureFlags, Volume};

/// One DRBD packet, decoded. Variants are named after the kernel's `P_*` commands.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Packet {
    // Data socket.
    Data(Data),
    DataReply(Data),
    RsDataReply(Data),
    Barrier(Barrier),
    Bitmap(PlainBitmap),
    UnplugRemote,
    DataRequest(BlockReq),
    RsDataRequest(BlockReq),
    /// P_SYNC_PARAM (0x0a); the layout follows apv, see [`SyncParam`].
    SyncParam(SyncParam),
    Protocol(Protocol),
    Uuids(Uuids),
    Sizes(Sizes),
    State(State),
    SyncUuid(u64),
    /// Challenge bytes (64 from us; 64..=128 accepted from a peer by the auth check).
    AuthChallenge(Bytes),
    /// HMAC digest.
    AuthResponse(Bytes),
    StateChgReq(ReqState),
    // Meta socket.
    Ping,
    PingAck,
    RecvAck(BlockAck),
    WriteAck(BlockAck),
    RsWriteAck(BlockAck),
    Superseded(BlockAck),
    NegAck(BlockAck),
    NegDReply(BlockAck),
    NegRsDReply(BlockAck),
    BarrierAck(BarrierAck),
    StateChgReply(StateChgReply),
    // Later additions.
    OvRequest(BlockReq),
    OvReply(DigestReq),
    OvResult(BlockAck),
    CsumRsRequest(DigestReq),
    RsIsInSync(BlockAck),
    /// P_SYNC_PARAM89 (0x23).
    SyncParam89(SyncParam),
    CompressedBitmap(CompressedBitmap),
    DelayProbe(DelayProbe),
    OutOfSync(BlockDesc),
    RsCancel(BlockAck),
    ConnStChgReq(ReqState),
    ConnStChgReply(StateChgReply),
    RetryWrite(BlockAck),
    ProtocolUpdate(Protocol),
    Trim(Trim),
    RsThinReq(BlockReq),
    RsDeallocated(BlockDesc),
    Wsame(Wsame),
    Zeroes(Trim),
    // Connection set-up (always h80).
    InitialMeta,
    InitialData,
    ConnectionFeatures(Features),
    /// A command 8.4 does not accept (unknown, obsolete or DRBD 9 only); the payload is kept
    /// so the engine can log it. 8.4 answers with ProtocolError.
    Unknown {
        command: Command,
        payload: Bytes,
    },
}

impl Packet {
    pub fn command(&self) -> Command {
        use Packet::*;
        match self {
            Data(_) => Command::DATA,
            DataReply(_) => Command::DATA_REPLY,
            RsDataReply(_) => Command::RS_DATA_REPLY,
            Barrier(_) => Command::BARRIER,
            Bitmap(_) => Command::BITMAP,
            UnplugRemote => Command::UNPLUG_REMOTE,
            DataRequest(_) => Command::DATA_REQUEST,
            RsDataRequest(_) => Command::RS_DATA_REQUEST,
            SyncParam(_) => Command::SYNC_PARAM,
            Protocol(_) => Command::PROTOCOL,
            Uuids(_) => Command::UUIDS,
            Sizes(_) => Command::SIZES,
            State(_) => Command::STATE,
            SyncUuid(_) => Command::SYNC_UUID,
            AuthChallenge(_) => Command::AUTH_CHALLENGE,
            AuthResponse(_) => Command::AUTH_RESPONSE,
            StateChgReq(_) => Command::STATE_CHG_REQ,
            Ping => Command::PING,
            PingAck => Command::PING_ACK,
            RecvAck(_) => Command::RECV_ACK,
            WriteAck(_) => Command::WRITE_ACK,
            RsWriteAck(_) => Command::RS_WRITE_ACK,
            Superseded(_) => Command::SUPERSEDED,
            NegAck(_) => Command::NEG_ACK,
            NegDReply(_) => Command::NEG_DREPLY,
            NegRsDReply(_) => Command::NEG_RS_DREPLY,
            BarrierAck(_) => Command::BARRIER_ACK,
            StateChgReply(_) => Command::STATE_CHG_REPLY,
            OvRequest(_) => Command::OV_REQUEST,
            OvReply(_) => Command::OV_REPLY,
            OvResult(_) => Command::OV_RESULT,
            CsumRsRequest(_) => Command::CSUM_RS_REQUEST,
            RsIsInSync(_) => Command::RS_IS_IN_SYNC,
            SyncParam89(_) => Command::SYNC_PARAM89,
            CompressedBitmap(_) => Command::COMPRESSED_BITMAP,
            DelayProbe(_) => Command::DELAY_PROBE,
            OutOfSync(_) => Command::OUT_OF_SYNC,
            RsCancel(_) => Command::RS_CANCEL,
            ConnStChgReq(_) => Command::CONN_ST_CHG_REQ,
            ConnStChgReply(_) => Command::CONN_ST_CHG_REPLY,
            RetryWrite(_) => Command::RETRY_WRITE,
            ProtocolUpdate(_) => Command::PROTOCOL_UPDATE,
            Trim(_) => Command::TRIM,
            RsThinReq(_) => Command::RS_THIN_REQ,
            RsDeallocated(_) => Command::RS_DEALLOCATED,
            Wsame(_) => Command::WSAME,
            Zeroes(_) => Command::ZEROES,
            InitialMeta => Command::INITIAL_META,
            InitialData => Command::INITIAL_DATA,
            ConnectionFeatures(_) => Command::CONNECTION_FEATURES,
            Unknown { command, .. } => *command,
        }
    }

    /// Decodes a payload whose header was already read. `dialect` supplies what the bytes
    /// alone cannot tell: the P_SYNC_PARAM layout and P_PROTOCOL string (apv), the P_SIZES
    /// length (DRBD_FF_WSAME) and the integrity digest size.
    pub fn decode(
        header: &Header,
        payload: &[u8],
        dialect: &Dialect,
    ) -> Result<Packet, DecodeError> {
        Self::decode_in(header, payload, dialect, Origin::default())
    }

    /// Like [`Packet::decode`], but data, digests and other byte fields are zero-copy
    /// slices of `payload`.
    pub fn decode_shared(
        header: &Header,
        payload: &Bytes,
        dialect: &Dialect,
    ) -> Result<Packet, DecodeError> {
        Self::decode_in(header, payload, dialect, Origin(Some(payload)))
    }

    pub(crate) fn decode_in(
        header: &Header,
        payload: &[u8],
        dialect: &Dialect,
        origin: Origin<'_>,
    ) -> Result<Packet, DecodeError> {
        use Packet as P;
        let h = header;
        let digest = dialect.digest_len;
        let empty = |p: Packet| expect_len(h.command, payload, 0).map(|_| p);
        Ok(match h.command {
            Command::DATA => P::Data(Data::decode_in(h, payload, digest, origin)?),
            Command::DATA_REPLY => P::DataReply(Data::decode_in(h, payload, digest, origin)?),
            Command::RS_DATA_REPLY => P::RsDataReply(Data::decode_in(h, payload, digest, origin)?),
            Command::BARRIER => P::Barrier(Barrier::decode(h, payload)?),
            Command::BITMAP => P::Bitmap(PlainBitmap::decode(h, payload)?),
            Command::UNPLUG_REMOTE => empty(P::UnplugRemote)?,
            Command::DATA_REQUEST => P::DataRequest(BlockReq::decode(h, payload)?),
            Command::RS_DATA_REQUEST => P::RsDataRequest(BlockReq::decode(h, payload)?),
            Command::SYNC_PARAM => P::SyncParam(SyncParam::decode(h, payload, dialect.apv)?),
            Command::PROTOCOL => P::Protocol(Protocol::decode(h, payload, dialect.apv)?),
            Command::UUIDS => P::Uuids(Uuids::decode(h, payload)?),
            Command::SIZES => P::Sizes(Sizes::decode(
                h,
                payload,
                dialect.features.contains(FeatureFlags::WSAME),
            )?),
            Command::STATE => P::State(State::decode(h, payload)?),
            Command::SYNC_UUID => P::SyncUuid(decode_sync_uuid(h, payload)?),
            Command::AUTH_CHALLENGE => {
                // The kernel refuses more than twice its own challenge length before reading.
                if payload.len() > auth::MAX_PEER_CHALLENGE_LEN {
                    return Err(DecodeError::PayloadLength {
                        command: h.command,
                        expected: Expected::Between(0, auth::MAX_PEER_CHALLENGE_LEN),
                        got: payload.len(),
                    });
                }
                P::AuthChallenge(origin.bytes(payload))
            }
            Command::AUTH_RESPONSE => {
                // Longest HMAC we know is sha512; the auth check compares the exact size.
                if payload.len() > 64 {
                    return Err(DecodeError::PayloadLength {
                        command: h.command,
                        expected: Expected::Between(0, 64),
                        got: payload.len(),
                    });
                }
                P::AuthResponse(origin.bytes(payload))
            }
            Command::STATE_CHG_REQ => P::StateChgReq(ReqState::decode(h, payload)?),
            Command::PING => empty(P::Ping)?,
            Command::PING_ACK => empty(P::PingAck)?,
            Command::RECV_ACK => P::RecvAck(BlockAck::decode(h, payload)?),
            Command::WRITE_ACK => P::WriteAck(BlockAck::decode(h, payload)?),
            Command::RS_WRITE_ACK => P::RsWriteAck(BlockAck::decode(h, payload)?),
            Command::SUPERSEDED => P::Superseded(BlockAck::decode(h, payload)?),
            Command::NEG_ACK => P::NegAck(BlockAck::decode(h, payload)?),
            Command::NEG_DREPLY => P::NegDReply(BlockAck::decode(h, payload)?),
            Command::NEG_RS_DREPLY => P::NegRsDReply(BlockAck::decode(h, payload)?),
            Command::BARRIER_ACK => P::BarrierAck(BarrierAck::decode(h, payload)?),
            Command::STATE_CHG_REPLY => P::StateChgReply(StateChgReply::decode(h, payload)?),
            Command::OV_REQUEST => P::OvRequest(BlockReq::decode(h, payload)?),
            Command::OV_REPLY => P::OvReply(DigestReq::decode_in(h, payload, origin)?),
            Command::OV_RESULT => P::OvResult(BlockAck::decode(h, payload)?),
            Command::CSUM_RS_REQUEST => P::CsumRsRequest(DigestReq::decode_in(h, payload, origin)?),
            Command::RS_IS_IN_SYNC => P::RsIsInSync(BlockAck::decode(h, payload)?),
            Command::SYNC_PARAM89 => P::SyncParam89(SyncParam::decode(h, payload, dialect.apv)?),
            Command::COMPRESSED_BITMAP => {
                P::CompressedBitmap(CompressedBitmap::decode_in(h, payload, origin)?)
            }
            Command::DELAY_PROBE => P::DelayProbe(DelayProbe::decode(h, payload)?),
            Command::OUT_OF_SYNC => P::OutOfSync(BlockDesc::decode(h, payload)?),
            Command::RS_CANCEL => P::RsCancel(BlockAck::decode(h, payload)?),
            Command::CONN_ST_CHG_REQ => P::ConnStChgReq(ReqState::decode(h, payload)?),
            Command::CONN_ST_CHG_REPLY => P::ConnStChgReply(StateChgReply::decode(h, payload)?),
            Command::RETRY_WRITE => P::RetryWrite(BlockAck::decode(h, payload)?),
            Command::PROTOCOL_UPDATE => {
                P::ProtocolUpdate(Protocol::decode(h, payload, dialect.apv)?)
            }
            Command::TRIM => P::Trim(Trim::decode(h, payload)?),
            Command::RS_THIN_REQ => P::RsThinReq(BlockReq::decode(h, payload)?),
            Command::RS_DEALLOCATED => P::RsDeallocated(BlockDesc::decode(h, payload)?),
            Command::WSAME => P::Wsame(Wsame::decode_in(h, payload, digest, origin)?),
            Command::ZEROES => P::Zeroes(Trim::decode(h, payload)?),
            Command::INITIAL_META => empty(P::InitialMeta)?,
            Command::INITIAL_DATA => empty(P::InitialData)?,
            Command::CONNECTION_FEATURES => P::ConnectionFeatures(Features::decode(h, payload)?),
            command => P::Unknown {
                command,
                payload: origin.bytes(payload),
            },
        })
    }

    /// Payload bytes `encode_payload` will write.
    pub fn payload_len(&self) -> usize {
        use Packet::*;
        match self {
            Data(d) | DataReply(d) | RsDataReply(d) => d.encoded_len(),
            Barrier(_) | BarrierAck(_) | DelayProbe(_) | StateChgReq(_) | ConnStChgReq(_)
            | SyncUuid(_) => 8,
            Bitmap(b) => b.words.len() * 8,
            UnplugRemote | Ping | PingAck | InitialMeta | InitialData => 0,
            DataRequest(_) | RsDataRequest(_) | OvRequest(_) | RsThinReq(_) => 24,
            SyncParam(p) | SyncParam89(p) => p.encoded_len(),
            Protocol(p) | ProtocolUpdate(p) => p.encoded_len(),
            Uuids(_) => 48,
            Sizes(s) => s.encoded_len(),
            State(_) | StateChgReply(_) | ConnStChgReply(_) => 4,
            AuthChallenge(b) | AuthResponse(b) => b.len(),
            RecvAck(_) | WriteAck(_) | RsWriteAck(_) | Superseded(_) | NegAck(_) | NegDReply(_)
            | NegRsDReply(_) | OvResult(_) | RsIsInSync(_) | RsCancel(_) | RetryWrite(_) => 24,
            OvReply(d) | CsumRsRequest(d) => 24 + d.digest.len(),
            CompressedBitmap(c) => 1 + c.code.len(),
            OutOfSync(_) | RsDeallocated(_) => 16,
            Trim(_) | Zeroes(_) => 28,
            Wsame(w) => w.encoded_len(),
            ConnectionFeatures(_) => FEATURES_LEN,
            Unknown { payload, .. } => payload.len(),
        }
    }

    /// Writes the payload (no header).
    pub fn encode_payload(&self, buf: &mut impl BufMut) {
        use Packet::*;
        match self {
            Data(d) | DataReply(d) | RsDataReply(d) => d.encode(buf),
            Barrier(b) => b.encode(buf),
            Bitmap(b) => b.encode(buf),
            UnplugRemote | Ping | PingAck | InitialMeta | InitialData => {}
            DataRequest(r) | RsDataRequest(r) | OvRequest(r) | RsThinReq(r) => r.encode(buf),
            SyncParam(p) | SyncParam89(p) => p.encode(buf),
            Protocol(p) | ProtocolUpdate(p) => p.encode(buf),
            Uuids(u) => u.encode(buf),
            Sizes(s) => s.encode(buf),
            State(s) => s.encode(buf),
            SyncUuid(u) => buf.put_u64(*u),
            AuthChallenge(b) | AuthResponse(b) => buf.put_slice(b),
            StateChgReq(r) | ConnStChgReq(r) => r.encode(buf),
            RecvAck(a) | WriteAck(a) | RsWriteAck(a) | Superseded(a) | NegAck(a) | NegDReply(a)
            | NegRsDReply(a) | OvResult(a) | RsIsInSync(a) | RsCancel(a) | RetryWrite(a) => {
                a.encode(buf)
            }
            BarrierAck(b) => b.encode(buf),
            StateChgReply(r) | ConnStChgReply(r) => r.encode(buf),
            OvReply(d) | CsumRsRequest(d) => d.encode(buf),
            CompressedBitmap(c) => c.encode(buf),
            DelayProbe(p) => p.encode(buf),
            OutOfSync(d) | RsDeallocated(d) => d.encode(buf),
            Trim(t) | Zeroes(t) => t.encode(buf),
            Wsame(w) => w.encode(buf),
            ConnectionFeatures(f) => f.encode(buf),
            Unknown { payload, .. } => buf.put_slice(payload),
        }
    }

    /// Checks that the packet's fields fit the wire (caller errors only).
    pub fn validate(&self) -> Result<(), EncodeError> {
        match self {
            Packet::SyncParam(p) | Packet::SyncParam89(p) => p.validate(self.command()),
            _ => Ok(()),
        }
    }
}

/// A packet addressed to a volume: what one header + payload on a socket carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Volume 0 for connection-wide packets and for everything below apv 100.
    pub volume: Volume,
    pub packet: Packet,
}

impl Frame {
    pub fn new(volume: Volume, packet: Packet) -> Frame {
        Frame { volume, packet }
    }

    /// Total bytes on the wire with the header the dialect picks.
    pub fn encoded_len(&self, dialect: &Dialect) -> usize {
        let len = self.packet.payload_len();
        self.header_kind(dialect).size() + len
    }

    /// The header a kernel at this dialect would use. Connection set-up packets always go
    /// with h80 (the kernel sends them before any version is agreed).
    pub fn header_kind(&self, dialect: &Dialect) -> HeaderKind {
        match self.packet {
            Packet::InitialMeta | Packet::InitialData | Packet::ConnectionFeatures(_) => {
                HeaderKind::H80
            }
            _ => HeaderKind::for_sending(dialect.apv, self.packet.payload_len()),
        }
    }

    /// Appends header and payload as a kernel sender at `dialect` would.
    pub fn encode(&self, dialect: &Dialect, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        self.encode_with(self.header_kind(dialect), buf)
    }

    /// Appends header and payload with an explicit header kind (e.g. h95 for a small
    /// payload, which 95..=99 receivers accept).
    pub fn encode_with(&self, kind: HeaderKind, buf: &mut impl BufMut) -> Result<(), EncodeError> {
        self.packet.validate()?;
        let len = self.packet.payload_len();
        let header = Header::with_kind(kind, self.volume, self.packet.command(), len)?;
        header.encode(buf);
        self.packet.encode_payload(buf);
        Ok(())
    }

    /// Encodes into a fresh vector.
    pub fn to_vec(&self, dialect: &Dialect) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(self.encoded_len(dialect));
        self.encode(dialect, &mut v)?;
        Ok(v)
    }
}
