//! The upper layer: where a volume's block requests come from.
//!
//! - `/dev/ublkb<minor>` through the ublk frontend, for every volume of a Primary: see
//!   `node/expose.rs` (requests go to the engine as `Input::Request` and complete on its
//!   `Output::Complete`; a Secondary fails them at once).
//! - Where the host has no ublk (no `/dev/ublk-control`): the in-process API (`Node::write`,
//!   `read`, `flush`) and the `udrbd write/read` client; `expose` then says why ublk is not
//!   usable.

/// The ublk control device; without it there is no ublk on this host.
pub const UBLK_CONTROL: &str = "/dev/ublk-control";
