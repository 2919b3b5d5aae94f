//! The `udrbd` daemon: the only crate with real I/O.

pub mod frontend;
