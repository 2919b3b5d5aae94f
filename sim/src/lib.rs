//! udrbd-sim: a deterministic simulator for the udrbd engine (TigerBeetle VOPR style).
pub mod clock;
pub mod disk;
pub mod md;
pub mod net;
pub mod options;
pub mod prng;
