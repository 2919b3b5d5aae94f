//! Placeholder replaced by the write-path bench.
fn main() {}
