//! udrbd-sim: a deterministic simulator for the udrbd engine (TigerBeetle VOPR style).
pub mod disk;
pub mod net;
pub mod prng;
