//! Encode + decode of a 4 KiB P_DATA frame beside a plain 4 KiB copy, in one group so the
//! ratio can be read off directly.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use udrbd_wire::{BlockId, Data, Decoded, Dialect, DpFlags, Frame, Packet, StreamDecoder, Volume};

fn p_data_4k(c: &mut Criterion) {
    let dialect = Dialect::KERNEL_101;
    let payload: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let frame = Frame::new(
        Volume(0),
        Packet::Data(Data {
            sector: 123_456,
            block_id: BlockId::from_u64(0xdead_beef),
            seq_num: 42,
            dp_flags: DpFlags::SEND_WRITE_ACK,
            digest: Bytes::new(),
            data: Bytes::from(payload.clone()),
        }),
    );
    let dec = StreamDecoder::data_socket(dialect);
    let mut out = Vec::with_capacity(4200);

    let mut g = c.benchmark_group("p_data_4k");
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("memcpy_4k", |b| {
        let mut dst = vec![0u8; 4096];
        b.iter(|| {
            dst.copy_from_slice(black_box(&payload));
            black_box(&dst);
        })
    });
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&frame).encode(&dialect, &mut out).unwrap();
            black_box(&out);
        })
    });
    let wire = frame.to_vec(&dialect).unwrap();
    g.bench_function("decode", |b| {
        b.iter(|| match dec.decode(black_box(&wire)).unwrap() {
            Decoded::Frame { frame, .. } => black_box(frame),
            Decoded::NeedMore { .. } => unreachable!(),
        })
    });
    let shared = Bytes::from(wire.clone());
    g.bench_function("decode_shared", |b| {
        b.iter(|| match dec.decode_shared(black_box(&shared)).unwrap() {
            Decoded::Frame { frame, .. } => black_box(frame),
            Decoded::NeedMore { .. } => unreachable!(),
        })
    });
    g.bench_function("encode_decode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&frame).encode(&dialect, &mut out).unwrap();
            match dec.decode(black_box(&out)).unwrap() {
                Decoded::Frame { frame, .. } => black_box(frame),
                Decoded::NeedMore { .. } => unreachable!(),
            }
        })
    });
    g.finish();
}

criterion_group!(benches, p_data_4k);
criterion_main!(benches);
