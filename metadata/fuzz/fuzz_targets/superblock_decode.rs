//! Superblock bytes from a disk never panic: decode, validate against every placement and a
//! device size taken from the input, and re-encode to the same fields. The first 4 KiB are
//! also fed to the activity-log block decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udrbd_metadata::activity_log::AlTransaction;
use udrbd_metadata::{MetaIndex, Superblock};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data, 0) {
        let again = Superblock::decode(&sb.encode()[..], 0).expect("encoded superblock decodes");
        assert_eq!(again, sb);
        let size = data
            .get(4096..4104)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(1 << 30);
        for index in [
            MetaIndex::Internal,
            MetaIndex::FlexExternal,
            MetaIndex::Indexed(1),
        ] {
            if let Ok(layout) = sb.layout(index, size) {
                assert!(layout.al_offset() < size && layout.md_offset < size);
            }
        }
    }
    if data.len() >= 4096 {
        if let Ok(t) = AlTransaction::decode(&data[..4096]) {
            if t.extra_updates.is_empty() && t.updates.len() <= 64 {
                let again = AlTransaction::decode(&t.encode()[..]).expect("encoded block decodes");
                assert_eq!(again.context, t.context);
            }
        }
    }
});
