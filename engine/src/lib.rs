//! udrbd-engine: everything a DRBD 8.4 node decides, as a sans-IO state machine.
//!
//! The engine never reads a clock, opens a socket or file, spawns a thread or draws from a
//! thread RNG (engine/clippy.toml forbids them). Time is an argument, randomness comes from
//! `ResourceConfig::rng_seed`, and every effect is an [`Output`] value the driver executes.
//!
//! The calling contract:
//!
//! 1. Build a [`Resource`] with [`Resource::new`] from resolved configuration and the meta-data
//!    read at attach ([`VolumeOnDisk`]).
//! 2. Feed every event with [`Resource::handle`]: the daemon's two sockets are up
//!    ([`Input::Connected`]), bytes arrived ([`Input::Received`]), a socket died, a disk or
//!    meta-data I/O finished, an upper-layer request, an admin command.
//! 3. After each `handle*`, drain [`Resource::poll_output`] until `None` and execute the outputs:
//!    send bytes, start/stop connecting, read/write/flush the disk, persist meta-data, complete
//!    requests, report admin results and state changes.
//! 4. Arm one timer at [`Resource::poll_timeout`] and call [`Resource::handle_timeout`] when it
//!    fires (extra calls are harmless).
//!
//! Outputs are safe to run in any order or concurrently: an action is only emitted once the
//! events it depends on have arrived (a write-ack after its `DiskDone`, a write to a cold
//! activity-log extent after its `MetaDone`, a protocol C completion after the local write and
//! the peer's ack).
//!
//! ```
//! use udrbd_engine::{Instant, Resource, ResourceConfig, VolumeOnDisk, Volume, Output};
//! let cfg = ResourceConfig { connect_on_start: false, ..Default::default() };
//! let mut r = Resource::new(cfg, vec![VolumeOnDisk { volume: Volume(0), disk: None }], Instant(0)).unwrap();
//! while let Some(o) = r.poll_output() { let _: Output = o; }
//! assert_eq!(r.conn_state(), udrbd_engine::ConnState::StandAlone);
//! ```

mod codec;
pub mod config;
pub mod epoch;
pub mod error;
pub mod handshake;
pub mod input;
mod meta;
pub mod output;
pub mod request;
pub mod resource;
pub mod resync;
pub mod states;
pub mod timer;
pub mod uuid_compare;

pub use config::{
    AfterSbPolicy, AttachedDisk, DiskConfig, Fencing, HmacAlg, MetaLayout, Mutation, NetConfig,
    OnIoError, Protocol, ResourceConfig, VolumeOnDisk,
};
pub use error::{Consequence, Error, PeerIncompatible, PeerMisbehaved};
pub use input::{AdminCommand, Input, IoErrorKind, IoId, RequestId, RequestOp, Socket, Volume};
pub use output::{
    AdminRefusal, LogLevel, MetaUpdate, MetaWrite, Output, RequestError, StateChange,
};
pub use resource::{Resource, Status, VolumeStatus};
pub use states::{ConnState, DiskState, DrbdState, Role};
pub use timer::Instant;

/// Packet-level helpers for tests and tools that script a peer (not a stable API).
pub mod testing {
    pub use crate::codec::{cmd, dp, frame, Frame, StreamDecoder, ID_SYNCER};
}
