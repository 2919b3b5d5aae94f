//! Fuzzes the stream decoder. Input byte 0 picks the protocol version (low nibble) and the
//! agreed feature flags (high nibble), byte 1 the integrity digest size; the rest is the
//! byte stream from a peer.
//!
//! Properties: no panic; a frame never consumes more than the input; "need more" always
//! asks for more than is there; every decoded frame re-encodes (with the header kind it came
//! in) to bytes that decode to the same frame, and to the very same bytes unless the packet
//! has fields the kernel ignores (pads, bytes after an algorithm name's NUL).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use udrbd_wire::{Decoded, Dialect, FeatureFlags, Packet, StreamDecoder};

const APVS: [u32; 16] = [
    80, 86, 87, 88, 89, 90, 91, 94, 95, 96, 97, 99, 100, 100, 101, 101,
];
const DIGESTS: [usize; 5] = [0, 4, 16, 20, 64];

/// Packets whose decoding drops bytes the kernel ignores, so exact re-encoding can differ.
fn has_ignored_bytes(p: &Packet) -> bool {
    matches!(
        p,
        Packet::DataRequest(_)
            | Packet::RsDataRequest(_)
            | Packet::OvRequest(_)
            | Packet::RsThinReq(_)
            | Packet::OvReply(_)
            | Packet::CsumRsRequest(_)
            | Packet::OutOfSync(_)
            | Packet::RsDeallocated(_)
            | Packet::Barrier(_)
            | Packet::Sizes(_)
            | Packet::Protocol(_)
            | Packet::ProtocolUpdate(_)
            | Packet::SyncParam(_)
            | Packet::SyncParam89(_)
    )
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let dialect = Dialect {
        apv: APVS[usize::from(data[0] & 0x0f)],
        features: FeatureFlags(u32::from(data[0] >> 4)),
        digest_len: DIGESTS[usize::from(data[1]) % DIGESTS.len()],
    };
    let dec = StreamDecoder::new(dialect, 1 << 16);
    let mut rest = &data[2..];
    loop {
        match dec.decode(rest) {
            Err(_) => return,
            Ok(Decoded::NeedMore { need }) => {
                assert!(need > rest.len(), "need {need} with {} bytes", rest.len());
                assert!(need <= dialect.header_size() + (1 << 16));
                return;
            }
            Ok(Decoded::Frame {
                frame,
                header,
                consumed,
            }) => {
                assert!(consumed <= rest.len());
                // The zero-copy path must agree with the copying one.
                let shared = Bytes::copy_from_slice(rest);
                match dec.decode_shared(&shared) {
                    Ok(Decoded::Frame {
                        frame: f2,
                        consumed: c2,
                        ..
                    }) => {
                        assert_eq!((&f2, c2), (&frame, consumed));
                    }
                    other => panic!("decode_shared disagrees: {other:?}"),
                }
                assert_eq!(consumed, header.size() + header.length as usize);
                let mut again = Vec::new();
                frame
                    .encode_with(header.kind, &mut again)
                    .expect("a decoded frame re-encodes");
                if !has_ignored_bytes(&frame.packet) {
                    assert_eq!(&again[..], &rest[..consumed], "{:?}", frame.packet);
                }
                match dec.decode(&again) {
                    Ok(Decoded::Frame {
                        frame: back,
                        consumed: n,
                        ..
                    }) => {
                        assert_eq!(n, again.len());
                        assert_eq!(back, frame);
                    }
                    other => panic!("re-encoded frame does not decode: {other:?}"),
                }
                rest = &rest[consumed..];
            }
        }
    }
});
