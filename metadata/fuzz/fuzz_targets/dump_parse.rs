//! A dump-md text from a user never panics the parser, and whatever parses expands to bitmap
//! bytes of the asked length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udrbd_metadata::dump;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = dump::parse(data) {
        let len = d.words().saturating_mul(8).min(1 << 16);
        assert_eq!(d.bitmap_bytes(len).len() as u64, len);
        let mut s = String::new();
        let bits = dump::format_bitmap(&mut s, &d.bitmap_bytes(len & !7));
        let _ = bits;
    }
});
