//! Property tests: every packet type round-trips encode -> decode -> encode to identical
//! bytes, under every header kind that may carry it at the generated protocol version; and
//! arbitrary bytes either fail to decode or decode to something that re-encodes stably.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::strategy::Union;
use udrbd_wire::bitmap::PlainBitmap;
use udrbd_wire::protocol::ResyncController;
use udrbd_wire::stream::decode_all;
use udrbd_wire::*;

fn arb_dialect() -> impl Strategy<Value = Dialect> {
    (
        prop_oneof![
            Just(86u32),
            Just(87),
            Just(88),
            89u32..=94,
            95u32..=99,
            100u32..=101
        ],
        0u32..16,
        prop_oneof![
            Just(0usize),
            Just(4),
            Just(16),
            Just(20),
            Just(32),
            Just(64)
        ],
    )
        .prop_map(|(apv, ff, digest_len)| Dialect {
            apv,
            features: FeatureFlags(ff),
            digest_len,
        })
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn block_id() -> impl Strategy<Value = BlockId> {
    any::<[u8; 8]>().prop_map(BlockId)
}

fn alg() -> impl Strategy<Value = AlgName> {
    "[a-z0-9()-]{0,63}".prop_map(|s| AlgName::new(&s).unwrap())
}

fn data(digest_len: usize) -> impl Strategy<Value = Data> {
    (
        any::<u64>(),
        block_id(),
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), digest_len),
        bytes(2048),
    )
        .prop_map(|(sector, block_id, seq_num, f, digest, data)| Data {
            sector,
            block_id,
            seq_num,
            dp_flags: DpFlags(f),
            digest: Bytes::from(digest),
            data,
        })
}

fn block_ack() -> impl Strategy<Value = BlockAck> {
    (any::<u64>(), block_id(), any::<u32>(), any::<u32>()).prop_map(
        |(sector, block_id, blksize, seq_num)| BlockAck {
            sector,
            block_id,
            blksize,
            seq_num,
        },
    )
}

fn block_req() -> impl Strategy<Value = BlockReq> {
    (any::<u64>(), block_id(), any::<u32>()).prop_map(|(sector, block_id, blksize)| BlockReq {
        sector,
        block_id,
        blksize,
    })
}

fn block_desc() -> impl Strategy<Value = BlockDesc> {
    (any::<u64>(), any::<u32>()).prop_map(|(sector, blksize)| BlockDesc { sector, blksize })
}

fn trim() -> impl Strategy<Value = Trim> {
    (
        any::<u64>(),
        block_id(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(sector, block_id, seq_num, f, size)| Trim {
            sector,
            block_id,
            seq_num,
            dp_flags: DpFlags(f),
            size,
        })
}

fn state() -> impl Strategy<Value = State> {
    (
        prop::sample::select(Role::ALL),
        prop::sample::select(Role::ALL),
        prop::sample::select(ConnState::ALL),
        prop::sample::select(DiskState::ALL),
        prop::sample::select(DiskState::ALL),
        0u32..(1 << 15),
    )
        .prop_map(|(r, p, c, d, pd, high)| {
            let s = State::new(r, p, c, d, pd);
            State::from_u32(s.to_u32() | high << 17).unwrap()
        })
}

fn protocol(apv: u32) -> impl Strategy<Value = Protocol> {
    (
        any::<[u32; 6]>(),
        if apv >= 87 {
            prop::option::of(alg()).boxed()
        } else {
            Just(None).boxed()
        },
    )
        .prop_map(|(v, integrity_alg)| Protocol {
            protocol: v[0],
            after_sb_0p: AfterSbPolicy(v[1]),
            after_sb_1p: AfterSbPolicy(v[2]),
            after_sb_2p: AfterSbPolicy(v[3]),
            conn_flags: ConnFlags(v[4]),
            two_primaries: v[5],
            integrity_alg,
        })
}

fn sync_param(apv: u32) -> impl Strategy<Value = SyncParam> {
    let form = SyncParamForm::for_apv(apv);
    (any::<u32>(), alg(), alg(), any::<[u32; 4]>()).prop_map(move |(rate, v, c, k)| SyncParam {
        form,
        resync_rate: rate,
        verify_alg: if form == SyncParamForm::V87 {
            AlgName::none()
        } else {
            v
        },
        csums_alg: if matches!(form, SyncParamForm::V89 | SyncParamForm::V95) {
            c
        } else {
            AlgName::none()
        },
        controller: if form == SyncParamForm::V95 {
            ResyncController {
                c_plan_ahead: k[0],
                c_delay_target: k[1],
                c_fill_target: k[2],
                c_max_rate: k[3],
            }
        } else {
            ResyncController::default()
        },
    })
}

fn sizes(qlim: bool) -> impl Strategy<Value = Sizes> {
    (
        any::<[u64; 3]>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<[u32; 5]>(),
        any::<[u8; 3]>(),
    )
        .prop_map(move |(s, m, q, f, l, b)| Sizes {
            d_size_sectors: s[0],
            u_size_sectors: s[1],
            c_size_sectors: s[2],
            max_bio_size: m,
            queue_order_type: q,
            dds_flags: DdsFlags(f),
            qlim: qlim.then_some(QueueLimits {
                physical_block_size: l[0],
                logical_block_size: l[1],
                alignment_offset: l[2],
                io_min: l[3],
                io_opt: l[4],
                discard_enabled: b[0],
                discard_zeroes_data: b[1],
                write_same_capable: b[2],
            }),
        })
}

fn unknown() -> impl Strategy<Value = Packet> {
    (any::<u16>(), bytes(64))
        .prop_filter("must not be a command 8.4 decodes", |(c, _)| {
            let c = Command(*c);
            c.name().is_none()
                || c == Command::BECOME_SYNC_TARGET
                || c == Command::BECOME_SYNC_SOURCE
        })
        .prop_map(|(c, payload)| Packet::Unknown {
            command: Command(c),
            payload,
        })
}

/// Every packet type that can travel at `d` (handshake-only packets are handled apart).
fn packet(d: Dialect) -> BoxedStrategy<Packet> {
    let dl = d.digest_len;
    let words = PlainBitmap::words_per_packet(d.header_size());
    let cbm_max = SOCKET_BUFFER_SIZE - d.header_size() - 1;
    let arms: Vec<BoxedStrategy<Packet>> = vec![
        data(dl).prop_map(Packet::Data).boxed(),
        data(dl).prop_map(Packet::DataReply).boxed(),
        data(dl).prop_map(Packet::RsDataReply).boxed(),
        any::<[u8; 4]>()
            .prop_map(|b| {
                Packet::Barrier(Barrier {
                    barrier: BarrierNr(b),
                })
            })
            .boxed(),
        prop::collection::vec(any::<u64>(), 0..=words)
            .prop_map(|words| Packet::Bitmap(PlainBitmap { words }))
            .boxed(),
        Just(Packet::UnplugRemote).boxed(),
        block_req().prop_map(Packet::DataRequest).boxed(),
        block_req().prop_map(Packet::RsDataRequest).boxed(),
        sync_param(d.apv).prop_map(Packet::SyncParam).boxed(),
        protocol(d.apv).prop_map(Packet::Protocol).boxed(),
        any::<[u64; 6]>()
            .prop_map(|u| {
                Packet::Uuids(Uuids {
                    current: u[0],
                    bitmap: u[1],
                    history: [u[2], u[3]],
                    dirty_bits: u[4],
                    flags: UuidFlags(u[5]),
                })
            })
            .boxed(),
        sizes(d.features.contains(FeatureFlags::WSAME))
            .prop_map(Packet::Sizes)
            .boxed(),
        state().prop_map(Packet::State).boxed(),
        any::<u64>().prop_map(Packet::SyncUuid).boxed(),
        bytes(128).prop_map(Packet::AuthChallenge).boxed(),
        bytes(64).prop_map(Packet::AuthResponse).boxed(),
        (any::<u32>(), state())
            .prop_map(|(m, val)| {
                Packet::StateChgReq(ReqState {
                    mask: StateMask(m),
                    val,
                })
            })
            .boxed(),
        Just(Packet::Ping).boxed(),
        Just(Packet::PingAck).boxed(),
        block_ack().prop_map(Packet::RecvAck).boxed(),
        block_ack().prop_map(Packet::WriteAck).boxed(),
        block_ack().prop_map(Packet::RsWriteAck).boxed(),
        block_ack().prop_map(Packet::Superseded).boxed(),
        block_ack().prop_map(Packet::NegAck).boxed(),
        block_ack().prop_map(Packet::NegDReply).boxed(),
        block_ack().prop_map(Packet::NegRsDReply).boxed(),
        (any::<[u8; 4]>(), any::<u32>())
            .prop_map(|(b, set_size)| {
                Packet::BarrierAck(BarrierAck {
                    barrier: BarrierNr(b),
                    set_size,
                })
            })
            .boxed(),
        any::<i32>()
            .prop_map(|v| Packet::StateChgReply(StateChgReply(v)))
            .boxed(),
        block_req().prop_map(Packet::OvRequest).boxed(),
        (block_req(), bytes(64))
            .prop_map(|(req, digest)| Packet::OvReply(DigestReq { req, digest }))
            .boxed(),
        block_ack().prop_map(Packet::OvResult).boxed(),
        (block_req(), bytes(64))
            .prop_map(|(req, digest)| Packet::CsumRsRequest(DigestReq { req, digest }))
            .boxed(),
        block_ack().prop_map(Packet::RsIsInSync).boxed(),
        sync_param(d.apv).prop_map(Packet::SyncParam89).boxed(),
        (
            any::<bool>(),
            0u8..8,
            prop::collection::vec(any::<u8>(), 1..=cbm_max),
        )
            .prop_map(|(first_run_set, pad_bits, code)| {
                Packet::CompressedBitmap(CompressedBitmap {
                    first_run_set,
                    pad_bits,
                    code: Bytes::from(code),
                })
            })
            .boxed(),
        (any::<u32>(), any::<u32>())
            .prop_map(|(seq_num, offset)| Packet::DelayProbe(DelayProbe { seq_num, offset }))
            .boxed(),
        block_desc().prop_map(Packet::OutOfSync).boxed(),
        block_ack().prop_map(Packet::RsCancel).boxed(),
        (any::<u32>(), state())
            .prop_map(|(m, val)| {
                Packet::ConnStChgReq(ReqState {
                    mask: StateMask(m),
                    val,
                })
            })
            .boxed(),
        any::<i32>()
            .prop_map(|v| Packet::ConnStChgReply(StateChgReply(v)))
            .boxed(),
        block_ack().prop_map(Packet::RetryWrite).boxed(),
        protocol(d.apv).prop_map(Packet::ProtocolUpdate).boxed(),
        trim().prop_map(Packet::Trim).boxed(),
        block_req().prop_map(Packet::RsThinReq).boxed(),
        block_desc().prop_map(Packet::RsDeallocated).boxed(),
        (trim(), prop::collection::vec(any::<u8>(), dl), bytes(4096))
            .prop_map(|(t, digest, data)| {
                Packet::Wsame(Wsame {
                    sector: t.sector,
                    block_id: t.block_id,
                    seq_num: t.seq_num,
                    dp_flags: t.dp_flags,
                    size: t.size,
                    digest: Bytes::from(digest),
                    data,
                })
            })
            .boxed(),
        trim().prop_map(Packet::Zeroes).boxed(),
        unknown().boxed(),
    ];
    Union::new(arms).boxed()
}

/// Packets sent before any version is agreed (h80, decoded at apv 80).
fn handshake_packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        Just(Packet::InitialMeta),
        Just(Packet::InitialData),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 60)
        )
            .prop_map(|(a, f, b, extra)| {
                let mut e = [0u8; 60];
                e.copy_from_slice(&extra);
                Packet::ConnectionFeatures(Features {
                    protocol_min: a,
                    feature_flags: FeatureFlags(f),
                    protocol_max: b,
                    extra: e,
                })
            }),
    ]
}

fn frame_at() -> impl Strategy<Value = (Dialect, Frame)> {
    arb_dialect().prop_flat_map(|d| {
        let vol = if d.apv >= 100 {
            any::<u16>().boxed()
        } else {
            Just(0u16).boxed()
        };
        (Just(d), vol, packet(d)).prop_map(|(d, v, p)| (d, Frame::new(Volume(v), p)))
    })
}

fn check_round_trip(d: &Dialect, frame: &Frame, kind: HeaderKind) -> Result<(), TestCaseError> {
    let mut bytes = Vec::new();
    frame
        .encode_with(kind, &mut bytes)
        .map_err(|e| TestCaseError::fail(format!("encode {kind:?}: {e}")))?;
    let dec = StreamDecoder::new(*d, 1 << 20);
    match dec.decode(&bytes) {
        Ok(Decoded::Frame {
            frame: got,
            header,
            consumed,
        }) => {
            prop_assert_eq!(consumed, bytes.len());
            prop_assert_eq!(header.kind, kind);
            prop_assert_eq!(&got, frame);
            let mut again = Vec::new();
            got.encode_with(kind, &mut again).unwrap();
            prop_assert_eq!(&again, &bytes);
        }
        other => return Err(TestCaseError::fail(format!("{kind:?}: {other:?}"))),
    }
    // The zero-copy path gives the same frame.
    let shared = bytes::Bytes::from(bytes.clone());
    match dec.decode_shared(&shared) {
        Ok(Decoded::Frame { frame: got, .. }) => prop_assert_eq!(&got, frame),
        other => return Err(TestCaseError::fail(format!("shared {kind:?}: {other:?}"))),
    }
    // Every strict prefix asks for more and never errors.
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        prop_assert!(
            matches!(dec.decode(&bytes[..cut]), Ok(Decoded::NeedMore { .. })),
            "prefix {} of {}",
            cut,
            bytes.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_command_round_trips_under_every_allowed_header((d, frame) in frame_at()) {
        let len = frame.packet.payload_len();
        let kinds = HeaderKind::possible(d.apv, len);
        prop_assert!(!kinds.is_empty());
        // The sender's own choice must be among them.
        prop_assert!(kinds.contains(&frame.header_kind(&d)));
        for kind in kinds {
            check_round_trip(&d, &frame, kind)?;
        }
    }

    #[test]
    fn handshake_packets_round_trip_as_h80(p in handshake_packet(), any_apv in 86u32..=101) {
        let frame = Frame::new(Volume(0), p);
        // Encoded with h80 whatever the dialect says, decoded before negotiation.
        let bytes = frame.to_vec(&Dialect { apv: any_apv, ..Dialect::INITIAL }).unwrap();
        prop_assert_eq!(&bytes[..4], &[0x83, 0x74, 0x02, 0x67]);
        check_round_trip(&Dialect::INITIAL, &frame, HeaderKind::H80)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_stably(
        d in arb_dialect(),
        raw in prop::collection::vec(any::<u8>(), 0..256),
        cmd in prop::sample::select(Command::KNOWN),
        h100 in any::<bool>(),
    ) {
        // Half the time, put a valid header for a known command in front of random bytes.
        let mut buf = Vec::new();
        let kind = if d.apv >= 100 { HeaderKind::H100 } else { HeaderKind::H80 };
        if h100 {
            Header::with_kind(kind, Volume(0), cmd, raw.len()).unwrap().encode(&mut buf);
        }
        buf.extend_from_slice(&raw);
        let dec = StreamDecoder::new(d, 1 << 16);
        if let Ok((frames, used)) = decode_all(&dec, &buf) {
            prop_assert!(used <= buf.len());
            for f in frames {
                let again = f.encode_with(kind, &mut Vec::new());
                if again.is_ok() {
                    let mut b = Vec::new();
                    f.encode_with(kind, &mut b).unwrap();
                    let (back, n) = decode_all(&dec, &b).unwrap();
                    prop_assert_eq!(n, b.len());
                    prop_assert_eq!(&back, &vec![f]);
                }
            }
        }
    }
}

#[test]
fn large_payloads_pick_h95_between_95_and_99() {
    let d = Dialect {
        apv: 96,
        features: FeatureFlags(0),
        digest_len: 0,
    };
    let f = Frame::new(
        Volume(0),
        Packet::Data(Data {
            sector: 8,
            block_id: BlockId([1; 8]),
            seq_num: 1,
            dp_flags: DpFlags::RW_SYNC,
            digest: Bytes::new(),
            data: Bytes::from(vec![0xab; 128 * 1024]),
        }),
    );
    assert_eq!(f.header_kind(&d), HeaderKind::H95);
    let bytes = f.to_vec(&d).unwrap();
    assert_eq!(&bytes[..2], &[0x83, 0x5a]);
    let dec = StreamDecoder::data_socket(d);
    let Decoded::Frame { frame, .. } = dec.decode(&bytes).unwrap() else {
        panic!("need more?")
    };
    assert_eq!(frame, f);
    // At 94 the same payload cannot be framed (h80 only, 64 KiB max).
    let d94 = Dialect { apv: 94, ..d };
    assert!(matches!(
        f.to_vec(&d94),
        Err(EncodeError::PayloadTooLong { .. })
    ));
}

/// A bitmap made of runs: (length, set) pairs, so RLE has something to chew on.
fn arb_bitmap() -> impl Strategy<Value = (u64, Vec<u64>)> {
    prop::collection::vec(
        (
            prop_oneof![1u64..8, 8u64..300, 300u64..20_000, Just(64u64)],
            any::<bool>(),
        ),
        0..200,
    )
    .prop_map(|runs| {
        let bm_bits: u64 = runs.iter().map(|r| r.0).sum();
        let mut words = vec![0u64; bm_bits.div_ceil(64) as usize];
        let mut at = 0u64;
        for (len, set) in runs {
            if set {
                for i in at..at + len {
                    words[(i / 64) as usize] |= 1 << (i % 64);
                }
            }
            at += len;
        }
        (bm_bits, words)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn bitmap_transfer_reproduces_any_bitmap(
        (bm_bits, words) in arb_bitmap(),
        apv in prop_oneof![Just(96u32), Just(101u32)],
        use_rle in any::<bool>(),
    ) {
        let d = Dialect { apv, features: FeatureFlags(0), digest_len: 0 };
        let mut tx = BitmapSender::new(bm_bits, d.header_size(), use_rle);
        let mut rx = BitmapReceiver::new(bm_bits, d.header_size());
        let mut out = vec![0u64; words.len()];
        let dec = StreamDecoder::new(d, SOCKET_BUFFER_SIZE);
        let mut packets = 0;
        while let Some(p) = tx.next_packet(&words) {
            packets += 1;
            prop_assert!(packets < 100_000);
            // Every packet fits the kernel's 4 KiB bitmap buffer and survives the codec.
            let bytes = Frame::new(Volume(0), p.clone()).to_vec(&d).unwrap();
            prop_assert!(bytes.len() <= SOCKET_BUFFER_SIZE);
            let Ok(Decoded::Frame { frame, .. }) = dec.decode(&bytes) else {
                return Err(TestCaseError::fail("bitmap packet does not decode"));
            };
            prop_assert_eq!(&frame.packet, &p);
            let done = rx.handle(&frame.packet, &mut out).unwrap();
            prop_assert_eq!(done, tx.is_done());
        }
        prop_assert!(rx.is_done());
        prop_assert_eq!(out, words);
    }
}
