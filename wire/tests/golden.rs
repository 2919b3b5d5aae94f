//! Golden packets written out by hand from the spec's tables (one field per line, h2 style),
//! plus the kernel's own bytes quoted in shared/lab/README.md. Each must decode to the
//! expected value and re-encode to the identical bytes.

mod common;

use bytes::Bytes;
use common::hex;
use udrbd_wire::protocol::ResyncController;
use udrbd_wire::*;

const H101: Dialect = Dialect::KERNEL_101;

/// Decodes `bytes` at `d`, compares with `expected`, and checks that a sender at `d`
/// produces exactly `bytes` again.
fn golden(d: Dialect, bytes: &[u8], expected: Frame) {
    let dec = StreamDecoder::new(d, 1 << 21);
    let Decoded::Frame {
        frame,
        header,
        consumed,
    } = dec.decode(bytes).expect("decodes")
    else {
        panic!("incomplete frame")
    };
    assert_eq!(consumed, bytes.len(), "consumed");
    assert_eq!(frame, expected);
    assert_eq!(header.command, expected.packet.command());
    let mut out = Vec::new();
    expected.encode(&d, &mut out).expect("encodes");
    assert_eq!(out, bytes, "re-encoding differs");
}

// ---------------------------------------------------------------- handshake (spec §2)

#[test]
fn golden_initial_data_from_kernel_capture() {
    let b = hex("
        83740267  // h80 magic
        fff2      // P_INITIAL_DATA
        0000      // length 0
    ");
    golden(
        Dialect::INITIAL,
        &b,
        Frame::new(Volume(0), Packet::InitialData),
    );
}

#[test]
fn golden_initial_meta_from_kernel_capture() {
    let b = hex("83740267 fff1 0000");
    golden(
        Dialect::INITIAL,
        &b,
        Frame::new(Volume(0), Packet::InitialMeta),
    );
}

#[test]
fn golden_connection_features_kernel_8_4_11() {
    // shared/lab/README.md, data socket: min 86, flags 0xf, max 101, 60 zero bytes.
    let b = hex("
        83740267 fffe 0048  // h80, P_CONNECTION_FEATURES, length 72
        00000056            // protocol_min 86
        0000000f            // feature_flags TRIM|THIN_RESYNC|WSAME|WZEROES
        00000065            // protocol_max 101
        00000000            // _pad
        0000000000000000 0000000000000000 0000000000000000 0000000000000000
        0000000000000000 0000000000000000 0000000000000000  // reserved[7]
    ");
    let f = Features::new(86, 101, FeatureFlags(0xf));
    golden(
        Dialect::INITIAL,
        &b,
        Frame::new(Volume(0), Packet::ConnectionFeatures(f)),
    );
    let agreed = features::negotiate(&Features::UDRBD, &f).unwrap();
    assert_eq!(agreed.apv, 101);
    assert_eq!(agreed.features, FeatureFlags(0xf));
}

#[test]
fn golden_connection_features_drbd9_with_node_ids() {
    let b = hex("
        83740267 fffe 0048
        00000056            // protocol_min 86
        0000003f            // feature_flags incl. DRBD 9 bits
        0000007c            // protocol_max 124
        00000001            // DRBD 9: sender_node_id 1
        00000000            // DRBD 9: receiver_node_id 0
        00000000            // _pad
        0000000000000000 0000000000000000 0000000000000000
        0000000000000000 0000000000000000 0000000000000000
    ");
    let mut f = Features::new(86, 124, FeatureFlags(0x3f));
    f.extra[3] = 1;
    golden(
        Dialect::INITIAL,
        &b,
        Frame::new(Volume(0), Packet::ConnectionFeatures(f)),
    );
    assert_eq!(f.drbd9_sender_node_id(), 1);
    let agreed = features::negotiate(&Features::UDRBD, &f).unwrap();
    assert_eq!((agreed.apv, agreed.features), (101, FeatureFlags(0xf)));
}

#[test]
fn golden_auth_challenge() {
    let mut b = hex("
        8620ec20 0000 0010  // h100, volume 0, P_AUTH_CHALLENGE
        00000040            // length 64
        00000000            // pad
    ");
    let challenge: Vec<u8> = (0u8..64).collect();
    b.extend_from_slice(&challenge);
    golden(
        H101,
        &b,
        Frame::new(
            Volume(0),
            Packet::AuthChallenge(auth::make_challenge(challenge.clone().try_into().unwrap())),
        ),
    );
}

#[test]
fn golden_auth_response_hmac_sha1() {
    // RFC 2202 case 2 as the "challenge", to pin the HMAC bytes independently.
    let b = hex("
        8620ec20 0000 0011 00000014 00000000  // h100, P_AUTH_RESPONSE, length 20
        effcdf6a e5eb2fa2 d27416d5 f184df9c 259a7c79  // HMAC-SHA1(\"Jefe\", msg)
    ");
    let resp = auth::response(HmacAlg::Sha1, b"Jefe", b"what do ya want for nothing?").unwrap();
    golden(H101, &b, Frame::new(Volume(0), Packet::AuthResponse(resp)));
}

// ---------------------------------------------------------------- P_PROTOCOL (spec §5.8)

#[test]
fn golden_protocol_without_integrity_alg_from_kernel_capture() {
    let b = hex("
        8620ec20 0000 000b  // h100, volume 0, P_PROTOCOL
        00000019            // length 25
        00000000            // pad
        00000003            // protocol C
        00000000            // after_sb_0p disconnect
        00000000            // after_sb_1p disconnect
        00000000            // after_sb_2p disconnect
        00000000            // conn_flags
        00000000            // two_primaries 0
        00                  // integrity_alg \"\"
    ");
    let p = Protocol {
        protocol: Protocol::PROTOCOL_C,
        after_sb_0p: AfterSbPolicy::DISCONNECT,
        after_sb_1p: AfterSbPolicy::DISCONNECT,
        after_sb_2p: AfterSbPolicy::DISCONNECT,
        conn_flags: ConnFlags(0),
        two_primaries: 0,
        integrity_alg: Some(AlgName::none()),
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::Protocol(p)));
}

#[test]
fn golden_protocol_with_integrity_alg() {
    let b = hex("
        8620ec20 0000 000b 0000001d 00000000  // h100, P_PROTOCOL, length 29
        00000003            // protocol C
        00000003            // after_sb_0p discard-zero-changes
        00000008            // after_sb_1p discard-secondary
        00000000            // after_sb_2p disconnect
        00000003            // conn_flags DISCARD_MY_DATA | DRY_RUN
        00000001            // two_primaries
        7368613100          // \"sha1\" NUL
    ");
    let p = Protocol {
        protocol: 3,
        after_sb_0p: AfterSbPolicy::DISCARD_ZERO_CHANGES,
        after_sb_1p: AfterSbPolicy::DISCARD_SECONDARY,
        after_sb_2p: AfterSbPolicy::DISCONNECT,
        conn_flags: ConnFlags(3),
        two_primaries: 1,
        integrity_alg: Some(AlgName::new("sha1").unwrap()),
    };
    assert!(p.conn_flags.contains(ConnFlags::DISCARD_MY_DATA));
    golden(H101, &b, Frame::new(Volume(0), Packet::Protocol(p)));
}

#[test]
fn golden_protocol_at_86_has_no_string() {
    let b = hex("
        83740267 000b 0018  // h80, P_PROTOCOL, length 24
        00000002 00000000 00000000 00000000 00000000 00000000  // protocol B, rest 0
    ");
    let p = Protocol {
        protocol: Protocol::PROTOCOL_B,
        after_sb_0p: AfterSbPolicy(0),
        after_sb_1p: AfterSbPolicy(0),
        after_sb_2p: AfterSbPolicy(0),
        conn_flags: ConnFlags(0),
        two_primaries: 0,
        integrity_alg: None,
    };
    let d86 = Dialect {
        apv: 86,
        ..Dialect::INITIAL
    };
    golden(d86, &b, Frame::new(Volume(0), Packet::Protocol(p)));
}

// ---------------------------------------------------------------- P_SYNC_PARAM (spec §5.9)

#[test]
fn golden_sync_param95_from_kernel_capture() {
    // shared/lab/README.md: P_SYNC_PARAM89 len 148, resync_rate 0xfa000; the remaining
    // controller values are the ones tshark shows for that capture.
    let mut b = hex("
        8620ec20 0000 0023 00000094 00000000  // h100, P_SYNC_PARAM89, length 148
        000fa000                              // resync_rate 1024000 KiB/s
    ");
    b.extend_from_slice(&[0; 64]); // verify_alg \"\"
    b.extend_from_slice(&[0; 64]); // csums_alg \"\"
    b.extend(hex("
        00000000  // c_plan_ahead 0
        0000000a  // c_delay_target 10
        00000064  // c_fill_target 100
        00019000  // c_max_rate 102400
    "));
    let p = SyncParam {
        form: SyncParamForm::V95,
        resync_rate: 1_024_000,
        verify_alg: AlgName::none(),
        csums_alg: AlgName::none(),
        controller: ResyncController {
            c_plan_ahead: 0,
            c_delay_target: 10,
            c_fill_target: 100,
            c_max_rate: 102_400,
        },
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::SyncParam89(p)));
}

#[test]
fn golden_sync_param89_with_algorithms_at_apv_90() {
    let mut b = hex("
        83740267 0023 0084  // h80, P_SYNC_PARAM89, length 132
        000000fa            // resync_rate 250
        736861310000        // verify_alg \"sha1\" ...
    ");
    b.extend_from_slice(&[0; 58]);
    b.extend(hex("6d643500")); // csums_alg \"md5\" ...
    b.extend_from_slice(&[0; 60]);
    let p = SyncParam {
        form: SyncParamForm::V89,
        resync_rate: 250,
        verify_alg: AlgName::new("sha1").unwrap(),
        csums_alg: AlgName::new("md5").unwrap(),
        controller: ResyncController::default(),
    };
    let d90 = Dialect {
        apv: 90,
        ..Dialect::INITIAL
    };
    golden(d90, &b, Frame::new(Volume(0), Packet::SyncParam89(p)));
}

#[test]
fn golden_sync_param_at_88_and_87() {
    let b = hex("
        83740267 000a 000b  // h80, P_SYNC_PARAM, length 11
        00000100            // resync_rate 256
        63726333326300      // verify_alg \"crc32c\" NUL
    ");
    let p = SyncParam {
        form: SyncParamForm::V88,
        resync_rate: 256,
        verify_alg: AlgName::new("crc32c").unwrap(),
        csums_alg: AlgName::none(),
        controller: ResyncController::default(),
    };
    let d88 = Dialect {
        apv: 88,
        ..Dialect::INITIAL
    };
    golden(d88, &b, Frame::new(Volume(0), Packet::SyncParam(p)));

    let b = hex("83740267 000a 0004  00000100");
    let p = SyncParam {
        form: SyncParamForm::V87,
        resync_rate: 256,
        verify_alg: AlgName::none(),
        csums_alg: AlgName::none(),
        controller: ResyncController::default(),
    };
    let d87 = Dialect {
        apv: 87,
        ..Dialect::INITIAL
    };
    golden(d87, &b, Frame::new(Volume(0), Packet::SyncParam(p)));
}

// ---------------------------------------------------------------- P_UUIDS, P_SIZES, P_STATE

#[test]
fn golden_uuids() {
    let b = hex("
        8620ec20 0001 000c 00000030 00000000  // h100, volume 1, P_UUIDS, length 48
        a1b2c3d4e5f60719  // current
        0000000000000000  // bitmap
        1122334455667788  // history[0]
        99aabbccddeeff00  // history[1]
        0000000000003ff6  // dirty bits 16374
        0000000000000006  // flags CRASHED_PRIMARY | INCONSISTENT
    ");
    let u = Uuids {
        current: 0xa1b2_c3d4_e5f6_0719,
        bitmap: 0,
        history: [0x1122_3344_5566_7788, 0x99aa_bbcc_ddee_ff00],
        dirty_bits: 16374,
        flags: UuidFlags(6),
    };
    assert!(u.flags.contains(UuidFlags::CRASHED_PRIMARY));
    golden(H101, &b, Frame::new(Volume(1), Packet::Uuids(u)));
}

#[test]
fn golden_sizes_32_without_wsame() {
    let b = hex("
        8620ec20 0000 000d 00000020 00000000  // h100, P_SIZES, length 32
        000000000001ffb0  // d_size 130992 sectors
        0000000000000000  // u_size
        000000000001ffb0  // c_size
        00100000          // max_bio_size 1 MiB
        0000              // queue_order_type
        0002              // dds_flags NO_RESYNC
    ");
    let s = Sizes {
        d_size_sectors: 130_992,
        u_size_sectors: 0,
        c_size_sectors: 130_992,
        max_bio_size: 1 << 20,
        queue_order_type: 0,
        dds_flags: DdsFlags::NO_RESYNC,
        qlim: None,
    };
    let d = Dialect {
        features: FeatureFlags(0x3),
        ..H101
    };
    golden(d, &b, Frame::new(Volume(0), Packet::Sizes(s)));
    // The same bytes are refused when FF_WSAME was agreed (the kernel wants 56).
    let dec = StreamDecoder::new(H101, 1 << 20);
    assert_eq!(
        dec.decode(&b),
        Err(DecodeError::PayloadLength {
            command: Command::SIZES,
            expected: Expected::Exactly(56),
            got: 32
        })
    );
}

#[test]
fn golden_sizes_56_with_qlim_from_kernel_capture_values() {
    let b = hex("
        8620ec20 0000 000d 00000038 00000000  // h100, P_SIZES, length 56
        000000000001ffb0  // d_size 130992
        0000000000000000  // u_size 0
        000000000001ffb0  // c_size 130992
        00100000          // max_bio_size 1048576
        0000              // queue_order_type
        0000              // dds_flags
        00000200          // physical_block_size 512
        00000200          // logical_block_size 512
        00000000          // alignment_offset
        00000200          // io_min 512
        00000000          // io_opt
        01                // discard_enabled
        00                // discard_zeroes_data
        00                // write_same_capable
        00                // pad
    ");
    let s = Sizes {
        d_size_sectors: 130_992,
        u_size_sectors: 0,
        c_size_sectors: 130_992,
        max_bio_size: 1_048_576,
        queue_order_type: 0,
        dds_flags: DdsFlags(0),
        qlim: Some(QueueLimits {
            physical_block_size: 512,
            logical_block_size: 512,
            alignment_offset: 0,
            io_min: 512,
            io_opt: 0,
            discard_enabled: 1,
            discard_zeroes_data: 0,
            write_same_capable: 0,
        }),
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::Sizes(s)));
}

#[test]
fn golden_state_primary_connected() {
    let b = hex("
        8620ec20 0000 000e 00000004 00000000  // h100, P_STATE, length 4
        000110a9  // Primary/Secondary Connected UpToDate/UpToDate (spec §9.1)
    ");
    let s = State::new(
        Role::Primary,
        Role::Secondary,
        ConnState::Connected,
        DiskState::UpToDate,
        DiskState::UpToDate,
    );
    golden(H101, &b, Frame::new(Volume(0), Packet::State(s)));
}

#[test]
fn golden_state_wfconnection_from_kernel_capture() {
    // tshark on the lab capture: 0x0000c882 = Secondary/Unknown WFConnection
    // Inconsistent/DUnknown.
    let b = hex("8620ec20 0000 000e 00000004 00000000  0000c882");
    let s = State::new(
        Role::Secondary,
        Role::Unknown,
        ConnState::WFConnection,
        DiskState::Inconsistent,
        DiskState::DUnknown,
    );
    golden(H101, &b, Frame::new(Volume(0), Packet::State(s)));
}

#[test]
fn golden_state_change_request_and_reply() {
    let b = hex("
        8620ec20 0000 0012 00000008 00000000  // h100, P_STATE_CHG_REQ, length 8
        00000003  // mask: role
        00000001  // val: role Primary
    ");
    let r = ReqState {
        mask: StateMask::ROLE,
        val: State::default().with_role(Role::Primary),
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::StateChgReq(r)));

    let b = hex("
        8620ec20 0000 001d 00000004 00000000  // h100, P_STATE_CHG_REPLY, length 4
        ffffffed  // SS_CONCURRENT_ST_CHG (-19)
    ");
    golden(
        H101,
        &b,
        Frame::new(
            Volume(0),
            Packet::StateChgReply(StateChgReply::CONCURRENT_ST_CHG),
        ),
    );
}

#[test]
fn golden_conn_state_change_request_disconnect() {
    let b = hex("
        8620ec20 0000 002a 00000008 00000000  // h100, P_CONN_ST_CHG_REQ
        000001f0  // mask: conn
        00000010  // val: conn Disconnecting (1 << 4)
    ");
    let r = ReqState {
        mask: StateMask::CONN,
        val: State::default().with_conn(ConnState::Disconnecting),
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::ConnStChgReq(r)));
}

#[test]
fn golden_sync_uuid() {
    let b = hex("8620ec20 0000 000f 00000008 00000000  0001a1b2c3d4e5f6");
    golden(
        H101,
        &b,
        Frame::new(Volume(0), Packet::SyncUuid(0x0001_a1b2_c3d4_e5f6)),
    );
}

// ---------------------------------------------------------------- data path (spec §5.1, §6)

fn pattern(n: usize) -> Bytes {
    Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>())
}

#[test]
fn golden_data_with_payload() {
    let mut b = hex("
        8620ec20 0001 0000  // h100, volume 1, P_DATA
        00000218            // length 536 = 24 + 512
        00000000            // pad
        0000000000000800    // sector 2048
        10203040a0b0c0d0    // block_id (opaque, echoed)
        00000007            // seq_num 7
        00000112            // dp_flags RW_SYNC | FUA | SEND_WRITE_ACK
    ");
    b.extend_from_slice(&pattern(512));
    let d = Data {
        sector: 2048,
        block_id: BlockId([0x10, 0x20, 0x30, 0x40, 0xa0, 0xb0, 0xc0, 0xd0]),
        seq_num: 7,
        dp_flags: DpFlags::RW_SYNC
            .union(DpFlags::FUA)
            .union(DpFlags::SEND_WRITE_ACK),
        digest: Bytes::new(),
        data: pattern(512),
    };
    golden(H101, &b, Frame::new(Volume(1), Packet::Data(d)));
}

#[test]
fn golden_data_with_integrity_digest() {
    let mut b = hex("
        8620ec20 0000 0000 0000021c 00000000  // h100, P_DATA, length 540 = 24 + 4 + 512
        0000000000000000    // sector 0
        0000000000000001    // block_id
        00000001            // seq_num 1
        00000100            // dp_flags SEND_WRITE_ACK
        deadbeef            // 4-byte digest (crc32c-sized)
    ");
    b.extend_from_slice(&pattern(512));
    let d = Data {
        sector: 0,
        block_id: BlockId::from_u64(1),
        seq_num: 1,
        dp_flags: DpFlags::SEND_WRITE_ACK,
        digest: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
        data: pattern(512),
    };
    let dl = Dialect {
        digest_len: 4,
        ..H101
    };
    golden(dl, &b, Frame::new(Volume(0), Packet::Data(d)));
}

#[test]
fn golden_rs_data_reply_at_apv_96_uses_h80() {
    let mut b = hex("
        83740267 0002 0218  // h80, P_RS_DATA_REPLY, length 536
        0000000000000010    // sector 16
        ffffffffffffffff    // block_id ID_SYNCER
        00000000            // seq_num 0 (replies)
        00000000            // dp_flags 0
    ");
    b.extend_from_slice(&pattern(512));
    let d = Data {
        sector: 16,
        block_id: BlockId::SYNCER,
        seq_num: 0,
        dp_flags: DpFlags(0),
        digest: Bytes::new(),
        data: pattern(512),
    };
    let d96 = Dialect {
        apv: 96,
        ..Dialect::INITIAL
    };
    golden(d96, &b, Frame::new(Volume(0), Packet::RsDataReply(d)));
}

#[test]
fn golden_write_ack() {
    let b = hex("
        8620ec20 0001 0016 00000018 00000000  // h100, volume 1, P_WRITE_ACK, length 24
        0000000000000800    // sector 2048
        10203040a0b0c0d0    // block_id echoed
        00000200            // blksize 512
        00000003            // seq_num 3
    ");
    let a = BlockAck {
        sector: 2048,
        block_id: BlockId([0x10, 0x20, 0x30, 0x40, 0xa0, 0xb0, 0xc0, 0xd0]),
        blksize: 512,
        seq_num: 3,
    };
    golden(H101, &b, Frame::new(Volume(1), Packet::WriteAck(a)));
}

#[test]
fn golden_recv_ack_and_neg_ack() {
    let b = hex("
        8620ec20 0000 0015 00000018 00000000  // P_RECV_ACK
        0000000000000000 0102030405060708 00001000 00000001
    ");
    let a = BlockAck {
        sector: 0,
        block_id: BlockId([1, 2, 3, 4, 5, 6, 7, 8]),
        blksize: 4096,
        seq_num: 1,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::RecvAck(a)));
    let b = hex("
        8620ec20 0000 0019 00000018 00000000  // P_NEG_ACK
        0000000000000040 ffffffffffffffff 00001000 00000002  // ID_SYNCER: failed resync block
    ");
    let a = BlockAck {
        sector: 64,
        block_id: BlockId::SYNCER,
        blksize: 4096,
        seq_num: 2,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::NegAck(a)));
}

#[test]
fn golden_ov_result_block_id_is_big_endian_4711() {
    let b = hex("
        8620ec20 0000 0020 00000018 00000000  // P_OV_RESULT
        0000000000000008    // sector 8
        0000000000001267    // block_id = ID_IN_SYNC, BE 4711
        00001000            // blksize 4096
        00000009            // seq_num
    ");
    let a = BlockAck {
        sector: 8,
        block_id: BlockId::OV_IN_SYNC,
        blksize: 4096,
        seq_num: 9,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::OvResult(a)));
}

#[test]
fn golden_rs_data_request_and_csum_request() {
    let b = hex("
        8620ec20 0000 0009 00000018 00000000  // P_RS_DATA_REQUEST
        0000000000001000    // sector 4096
        ffffffffffffffff    // ID_SYNCER
        00010000            // blksize 64 KiB
        00000000            // pad
    ");
    let r = BlockReq {
        sector: 4096,
        block_id: BlockId::SYNCER,
        blksize: 65536,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::RsDataRequest(r)));
    let b = hex("
        8620ec20 0000 0021 0000001c 00000000  // P_CSUM_RS_REQUEST, length 28
        0000000000001000 ffffffffffffffff 00001000 00000000
        0badcafe            // 4-byte csums digest
    ");
    let r = DigestReq {
        req: BlockReq {
            sector: 4096,
            block_id: BlockId::SYNCER,
            blksize: 4096,
        },
        digest: Bytes::from_static(&[0x0b, 0xad, 0xca, 0xfe]),
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::CsumRsRequest(r)));
}

#[test]
fn golden_trim_and_out_of_sync() {
    let b = hex("
        8620ec20 0000 0031 0000001c 00000000  // P_TRIM, length 28
        0000000000000100    // sector 256
        00000000000000aa    // block_id
        00000005            // seq_num
        00000140            // dp_flags DISCARD | SEND_WRITE_ACK
        00400000            // size 4 MiB
    ");
    let t = Trim {
        sector: 256,
        block_id: BlockId::from_u64(0xaa),
        seq_num: 5,
        dp_flags: DpFlags::DISCARD.union(DpFlags::SEND_WRITE_ACK),
        size: 4 << 20,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::Trim(t)));
    let b = hex("
        8620ec20 0000 0028 00000010 00000000  // P_OUT_OF_SYNC, length 16
        0000000000000200 00008000 00000000    // sector 512, 32 KiB, pad
    ");
    let o = BlockDesc {
        sector: 512,
        blksize: 32768,
    };
    golden(H101, &b, Frame::new(Volume(0), Packet::OutOfSync(o)));
}

#[test]
fn golden_barrier_and_barrier_ack_echo_bytes() {
    let b = hex("
        8620ec20 0000 0003 00000008 00000000  // h100, P_BARRIER, length 8
        2a000000  // barrier 42 in x86 host order (opaque)
        00000000  // pad
    ");
    let nr = BarrierNr([0x2a, 0, 0, 0]);
    assert_eq!(nr, BarrierNr::from_u32(42));
    golden(
        H101,
        &b,
        Frame::new(Volume(0), Packet::Barrier(Barrier { barrier: nr })),
    );
    let b = hex("
        8620ec20 0000 001c 00000008 00000000  // h100, P_BARRIER_ACK, length 8
        2a000000  // barrier echoed verbatim
        00000011  // set_size 17 writes
    ");
    golden(
        H101,
        &b,
        Frame::new(
            Volume(0),
            Packet::BarrierAck(BarrierAck {
                barrier: nr,
                set_size: 17,
            }),
        ),
    );
}

#[test]
fn golden_ping_and_ping_ack() {
    golden(
        H101,
        &hex("8620ec20 0000 0013 00000000 00000000"),
        Frame::new(Volume(0), Packet::Ping),
    );
    golden(
        H101,
        &hex("8620ec20 0000 0014 00000000 00000000"),
        Frame::new(Volume(0), Packet::PingAck),
    );
}

// ---------------------------------------------------------------- bitmaps (spec §11)

#[test]
fn golden_compressed_bitmap_spec_vector() {
    let b = hex("
        8620ec20 0000 0024 00000008 00000000  // h100, P_COMPRESSED_BITMAP, length 8
        c2                // encoding: first run set, 4 pad bits, RLE_VLI_Bits
        997c04dfc37701    // runs 3, 7, 1, 53, 64, 72
    ");
    let c = CompressedBitmap {
        first_run_set: true,
        pad_bits: 4,
        code: Bytes::from_static(&[0x99, 0x7c, 0x04, 0xdf, 0xc3, 0x77, 0x01]),
    };
    assert_eq!(c.runs().unwrap(), [3, 7, 1, 53, 64, 72]);
    golden(
        H101,
        &b,
        Frame::new(Volume(0), Packet::CompressedBitmap(c.clone())),
    );
    let mut bm = vec![0u64; 4];
    let mut r = BitmapReceiver::new(200, 16);
    assert!(r.handle(&Packet::CompressedBitmap(c), &mut bm).unwrap());
    assert_eq!(bm, [0x0000_0000_0000_0407, u64::MAX, 0, 0]);
}

#[test]
fn golden_plain_bitmap_words_are_little_endian() {
    let b = hex("
        8620ec20 0000 0004 00000010 00000000  // h100, P_BITMAP, length 16
        0704000000000000  // word 0 = 0x407 (bits 0-2, 10)
        ffffffffffffffff  // word 1
    ");
    golden(
        H101,
        &b,
        Frame::new(
            Volume(0),
            Packet::Bitmap(PlainBitmap {
                words: vec![0x407, u64::MAX],
            }),
        ),
    );
}

#[test]
fn golden_unknown_drbd9_command_is_kept() {
    let b = hex("8620ec20 0000 002e 00000002 00000000  beef  // DRBD 9 P_TWOPC_PREPARE");
    golden(
        H101,
        &b,
        Frame::new(
            Volume(0),
            Packet::Unknown {
                command: Command(0x2e),
                payload: Bytes::from_static(&[0xbe, 0xef]),
            },
        ),
    );
}

// ---------------------------------------------------------------- rejects_* (one per error)

#[test]
fn rejects_bad_magic() {
    let dec = StreamDecoder::new(H101, 1 << 20);
    assert_eq!(
        dec.decode(&hex("83740267 0013 0000 00000000 00000000")),
        Err(DecodeError::BadMagic(0x8374_0267))
    );
}

#[test]
fn rejects_nonzero_header_pad() {
    let dec = StreamDecoder::new(H101, 1 << 20);
    assert_eq!(
        dec.decode(&hex("8620ec20 0000 0013 00000000 00000100")),
        Err(DecodeError::HeaderPad { pad: 0x100 })
    );
}

#[test]
fn rejects_wrong_payload_length() {
    let dec = StreamDecoder::new(H101, 1 << 20);
    let e = dec
        .decode(&hex(
            "8620ec20 0000 0016 00000010 00000000 00000000000000000000000000000000",
        ))
        .unwrap_err();
    assert_eq!(
        e,
        DecodeError::PayloadLength {
            command: Command::WRITE_ACK,
            expected: Expected::Exactly(24),
            got: 16
        }
    );
    assert_eq!(
        e.to_string(),
        "P_WRITE_ACK: payload length 16, expected exactly 24"
    );
    // A payload on a header-only packet.
    assert!(matches!(
        dec.decode(&hex("8620ec20 0000 0013 00000001 00000000 00")),
        Err(DecodeError::PayloadLength { .. })
    ));
}

#[test]
fn rejects_too_long_before_payload() {
    let dec = StreamDecoder::new(H101, 4096);
    assert_eq!(
        dec.decode(&hex("8620ec20 0000 0000 00100000 00000000")),
        Err(DecodeError::TooLong {
            command: Command::DATA,
            length: 0x10_0000,
            max: 4096
        })
    );
}

#[test]
fn rejects_truncated_payload_given_directly() {
    let h = Header::with_kind(HeaderKind::H100, Volume(0), Command::DATA, 24).unwrap();
    assert_eq!(
        Packet::decode(
            &h,
            &[0; 30],
            &Dialect {
                digest_len: 20,
                ..H101
            }
        ),
        Err(DecodeError::PayloadLength {
            command: Command::DATA,
            expected: Expected::AtLeast(44),
            got: 30
        })
    );
    // Truncated comes from a header that is cut short.
    assert!(matches!(
        Header::decode(101, &[0x86, 0x20]),
        Err(DecodeError::Truncated {
            need: 16,
            have: 2,
            ..
        })
    ));
}

#[test]
fn rejects_bad_field_naming_command_field_offset() {
    let dec = StreamDecoder::new(H101, 1 << 20);
    // P_STATE_CHG_REQ whose val has conn = 30 (undefined), at payload offset 4.
    let e = dec
        .decode(&hex(
            "8620ec20 0000 0012 00000008 00000000  000001f0 000001e0",
        ))
        .unwrap_err();
    let DecodeError::BadField {
        command,
        field,
        offset,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (*command, *field, *offset),
        (Command::STATE_CHG_REQ, "conn", 4)
    );
    assert!(e
        .to_string()
        .starts_with("P_STATE_CHG_REQ: field conn at payload offset 4"));
    // Unknown bitmap encoding.
    let e = dec
        .decode(&hex("8620ec20 0000 0024 00000002 00000000  0300"))
        .unwrap_err();
    assert!(matches!(
        e,
        DecodeError::BadField {
            field: "encoding",
            offset: 0,
            ..
        }
    ));
}
