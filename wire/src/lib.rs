//! `udrbd-wire`: a pure codec for the DRBD 8.4 replication protocol (versions 86–101), byte
//! compatible with the kernel's `drivers/block/drbd`.
//!
//! What this crate never does: open sockets, read clocks, draw random numbers (the caller
//! passes challenge bytes in), allocate before a length was checked against a limit, or panic
//! on peer input.
//!
//! Calling contract:
//!
//! 1. Start each connection with [`Dialect::INITIAL`] (apv 80, h80 headers) and a
//!    [`StreamDecoder`] per socket.
//! 2. Exchange [`Features`]; [`features::negotiate`] gives the agreed version and feature
//!    flags (or a typed refusal). Switch both decoders with [`StreamDecoder::set_dialect`].
//! 3. Once `P_PROTOCOL` agreed a data-integrity algorithm, set [`Dialect::digest_len`].
//! 4. Encode outgoing packets with [`Frame::encode`]; feed received bytes to
//!    [`StreamDecoder::decode`] (or [`StreamDecoder::decode_shared`], whose data fields are
//!    zero-copy slices of a `Bytes` buffer) and drop the `consumed` bytes it reports.
//! 5. Send a bitmap with [`BitmapSender`] and merge the peer's with [`BitmapReceiver`]; the
//!    packet sequence matches a kernel's bit for bit.
//!
//! Semantic limits (512-byte alignment, 1 MiB requests, device capacity, which packet is
//! allowed in which state) are the engine's business; this crate enforces the framing and
//! the payload-length rules the kernel's receiver applies (spec §5, drbd_receiver.c).
//!
//! ```
//! use udrbd_wire::{Dialect, Frame, Packet, StreamDecoder, Decoded, Volume};
//! let dialect = Dialect { apv: 101, features: udrbd_wire::FeatureFlags(0xf), digest_len: 0 };
//! let mut buf = Vec::new();
//! Frame::new(Volume(0), Packet::Ping).encode(&dialect, &mut buf).unwrap();
//! assert_eq!(buf, [0x86, 0x20, 0xec, 0x20, 0, 0, 0, 0x13, 0, 0, 0, 0, 0, 0, 0, 0]);
//! let dec = StreamDecoder::new(dialect, 1 << 20);
//! match dec.decode(&buf).unwrap() {
//!     Decoded::Frame { frame, consumed, .. } => {
//!         assert_eq!(frame.packet, Packet::Ping);
//!         assert_eq!(consumed, 16);
//!     }
//!     Decoded::NeedMore { .. } => unreachable!(),
//! }
//! ```

pub mod ack;
pub mod auth;
pub mod barrier;
pub mod bitmap;
pub mod command;
pub mod data;
pub mod error;
pub mod features;
pub mod header;
pub mod packet;
pub mod protocol;
mod reader;
pub mod sizes;
pub mod state;
pub mod stream;
pub mod uuids;
pub mod vli;

use std::fmt;

pub use ack::BlockAck;
pub use auth::{AuthError, HmacAlg};
pub use barrier::{Barrier, BarrierAck};
pub use bitmap::{BitmapReceiver, BitmapSender, CompressedBitmap, PlainBitmap};
pub use command::{Command, SocketKind};
pub use data::{BlockDesc, BlockReq, Data, DelayProbe, DigestReq, DpFlags, Trim, Wsame};
pub use error::{DecodeError, EncodeError, Expected};
pub use features::{Agreed, FeatureFlags, Features, Refusal};
pub use header::{Header, HeaderKind};
pub use packet::{Frame, Packet};
pub use protocol::{AfterSbPolicy, AlgName, ConnFlags, Protocol, SyncParam, SyncParamForm};
pub use sizes::{DdsFlags, QueueLimits, Sizes};
pub use state::{ConnState, DiskState, ReqState, Role, State, StateChgReply, StateMask};
pub use stream::{Decoded, StreamDecoder};
pub use uuids::{UuidFlags, Uuids};

/// A volume number (only h100 headers carry one; otherwise it is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Volume(pub u16);

/// The opaque 8-byte request cookie (spec §1, §6.3). The peer's bytes are echoed verbatim;
/// they are *not* a big-endian integer (the kernel puts a host-order pointer there).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockId(pub [u8; 8]);

impl BlockId {
    /// ID_SYNCER (drbd_int.h): resync and verify traffic.
    pub const SYNCER: BlockId = BlockId([0xff; 8]);
    /// ID_IN_SYNC (4711, big-endian) in P_OV_RESULT.
    pub const OV_IN_SYNC: BlockId = BlockId(4711u64.to_be_bytes());
    /// ID_OUT_OF_SYNC (4712, big-endian) in P_OV_RESULT.
    pub const OV_OUT_OF_SYNC: BlockId = BlockId(4712u64.to_be_bytes());

    /// Our own cookies are plain counters; how the bytes are laid out is our choice.
    pub const fn from_u64(v: u64) -> BlockId {
        BlockId(v.to_be_bytes())
    }

    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The opaque 4-byte barrier (epoch) number of P_BARRIER / P_BARRIER_ACK (spec §1): the
/// kernel writes it in host order, the receiver echoes the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BarrierNr(pub [u8; 4]);

impl BarrierNr {
    /// Our own epoch numbers, written little-endian like an x86 kernel does.
    pub const fn from_u32(v: u32) -> BarrierNr {
        BarrierNr(v.to_le_bytes())
    }

    pub const fn to_u32(self) -> u32 {
        u32::from_le_bytes(self.0)
    }
}

impl fmt::Debug for BarrierNr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "BarrierNr({a:02x}{b:02x}{c:02x}{d:02x})")
    }
}

/// What both sides agreed on, which changes how bytes are framed and parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dialect {
    /// Agreed protocol version; 80 before P_CONNECTION_FEATURES was exchanged (the kernel's
    /// initial `agreed_pro_version`).
    pub apv: u32,
    /// Agreed DRBD_FF_* flags.
    pub features: FeatureFlags,
    /// Size of the peer's data-integrity digest (0 when no data-integrity-alg is set).
    pub digest_len: usize,
}

impl Dialect {
    /// Before feature negotiation: h80 headers only.
    pub const INITIAL: Dialect = Dialect {
        apv: 80,
        features: FeatureFlags(0),
        digest_len: 0,
    };

    /// What current kernels agree on: version 101, all four 8.4 feature flags.
    pub const KERNEL_101: Dialect = Dialect {
        apv: 101,
        features: FeatureFlags(0xf),
        digest_len: 0,
    };

    /// Header size the receiver reads at this version.
    pub const fn header_size(&self) -> usize {
        header::header_size(self.apv)
    }
}

/// DRBD_MAX_BIO_SIZE (drbd_int.h): largest data payload of one request, bytes.
pub const MAX_BIO_SIZE: usize = 0x10_0000;
/// DRBD_SOCKET_BUFFER_SIZE (drbd_protocol.h): bitmap packets fit in this, header included.
pub const SOCKET_BUFFER_SIZE: usize = 0x1000;
/// SHARED_SECRET_MAX (drbd.h): size of algorithm-name and secret buffers, NUL included.
pub const SHARED_SECRET_MAX: usize = 64;
