//! The `udrbd` daemon: the only crate with real I/O.
//!
//! It never decides anything about replication; the engine (`udrbd-engine`) does. The daemon
//! owns the sockets (`transport`), the backing devices (`backing`), the control socket
//! (`control`), the per-resource lifecycle (`lifecycle`), and the driver loop (`node`) that feeds
//! the engine events and executes its outputs.

pub mod attach;
pub mod backing;
pub mod control;
pub mod frontend;
pub mod lifecycle;
pub mod node;
pub mod server;
pub mod status;
pub mod transport;
pub mod upper;
