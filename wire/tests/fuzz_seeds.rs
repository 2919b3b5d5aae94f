//! The fuzz seed corpus (wire/fuzz/corpus/stream_decoder/seed-*) is one sample frame per
//! command, prefixed with the two dialect bytes the fuzz target reads. This test checks that
//! each committed seed still decodes completely; with UDRBD_WRITE_SEEDS=1 it rewrites them.

mod common;

use std::path::PathBuf;

use udrbd_wire::stream::decode_all;
use udrbd_wire::*;

/// Byte 0 for the fuzz target: low nibble indexes its APVS table (80 -> 0, 101 -> 14),
/// high nibble is the feature flags. Byte 1 = digest-size index 0 (no digest).
fn dialect_bytes(d: &Dialect) -> [u8; 2] {
    let apv_index = if d.apv >= 101 { 14 } else { 0 };
    [apv_index | (d.features.0 as u8) << 4, 0]
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    common::samples()
        .into_iter()
        .map(|(d, f)| {
            let mut b = dialect_bytes(&d).to_vec();
            f.encode(&d, &mut b).unwrap();
            (format!("seed-{}", f.packet.command()), b)
        })
        .collect()
}

#[test]
fn fuzz_seeds_are_current_and_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stream_decoder");
    let write = std::env::var("UDRBD_WRITE_SEEDS").is_ok_and(|v| v == "1");
    for (name, bytes) in seeds() {
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            on_disk, bytes,
            "{name} is stale; rerun with UDRBD_WRITE_SEEDS=1"
        );
        let apv = if on_disk[0] & 0x0f == 14 { 101 } else { 80 };
        let d = Dialect {
            apv,
            features: FeatureFlags(u32::from(on_disk[0] >> 4)),
            digest_len: 0,
        };
        let (frames, used) = decode_all(&StreamDecoder::new(d, 1 << 16), &on_disk[2..]).unwrap();
        assert_eq!((frames.len(), used), (1, on_disk.len() - 2), "{name}");
    }
}
