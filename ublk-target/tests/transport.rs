//! The two-socket establishment (spec drbd-wire-protocol.md §2.2) between two instances on
//! 127.0.0.1, and against a scripted fake peer that checks the bytes we send.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use udrbd::transport::{self, ConnectParams, SocketPair, P_INITIAL_DATA, P_INITIAL_META};

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn params(local: SocketAddr, peer: SocketAddr) -> ConnectParams {
    ConnectParams {
        resource: "r0".into(),
        local,
        peer,
        connect_int: Duration::from_millis(700),
        ping_timeout: Duration::from_millis(300),
        socket_check_timeout: Duration::from_millis(100),
        sndbuf_size: 256 << 10,
        rcvbuf_size: 0,
    }
}

fn exchange(a: &mut TcpStream, b: &mut TcpStream, tag: &[u8]) {
    a.write_all(tag).unwrap();
    let mut got = vec![0u8; tag.len()];
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.read_exact(&mut got).unwrap();
    assert_eq!(got, tag);
}

#[test]
fn two_instances_pair_up_with_one_tie_breaker() {
    for round in 0..3 {
        let (a, b) = (free_addr(), free_addr());
        let la = transport::listen(a).unwrap();
        let lb = transport::listen(b).unwrap();
        let cancel = Arc::new(AtomicBool::new(false));
        let (ca, cb) = (cancel.clone(), cancel.clone());
        let ta = std::thread::spawn(move || transport::establish(&params(a, b), &la, &ca).unwrap());
        let tb = std::thread::spawn(move || transport::establish(&params(b, a), &lb, &cb).unwrap());
        let mut pa: SocketPair = ta.join().unwrap();
        let mut pb: SocketPair = tb.join().unwrap();
        // Exactly one side accepted the meta socket.
        assert_ne!(pa.resolve_conflicts, pb.resolve_conflicts, "round {round}");
        // Data pairs with data and meta with meta, in both directions.
        exchange(&mut pa.data, &mut pb.data, b"data a->b");
        exchange(&mut pb.data, &mut pa.data, b"data b->a");
        exchange(&mut pa.meta, &mut pb.meta, b"meta a->b");
        exchange(&mut pb.meta, &mut pa.meta, b"meta b->a");
        assert!(pa.data.nodelay().unwrap() && pa.meta.nodelay().unwrap());
    }
}

/// A fake peer that never connects out: our node must connect twice and announce data first.
#[test]
fn outgoing_sockets_carry_the_kernels_initial_packets() {
    let (ours, theirs) = (free_addr(), free_addr());
    let fake = TcpListener::bind(theirs).unwrap();
    let l = transport::listen(ours).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let t =
        std::thread::spawn(move || transport::establish(&params(ours, theirs), &l, &c2).unwrap());
    let mut first = [0u8; 8];
    let (mut s1, _) = fake.accept().unwrap();
    s1.read_exact(&mut first).unwrap();
    assert_eq!(first, transport::h80(P_INITIAL_DATA, 0));
    assert_eq!(first, [0x83, 0x74, 0x02, 0x67, 0xff, 0xf2, 0x00, 0x00]);
    let (mut s2, _) = fake.accept().unwrap();
    s2.read_exact(&mut first).unwrap();
    assert_eq!(first, [0x83, 0x74, 0x02, 0x67, 0xff, 0xf1, 0x00, 0x00]);
    let mut pair = t.join().unwrap();
    // We connected both: we did not accept the meta socket, so no RESOLVE_CONFLICTS.
    assert!(!pair.resolve_conflicts);
    exchange(&mut pair.data, &mut s1, b"on data");
    exchange(&mut pair.meta, &mut s2, b"on meta");
}

/// A fake peer that only connects in: we accept, classify by the first header, and hold
/// RESOLVE_CONFLICTS because we accepted the meta socket. A connection with a wrong first header
/// is closed, and establishment continues.
#[test]
fn incoming_sockets_are_classified_and_garbage_is_closed() {
    let (ours, theirs) = (free_addr(), free_addr());
    // Nobody listens on `theirs`: our outgoing connects are refused.
    let l = transport::listen(ours).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let t =
        std::thread::spawn(move || transport::establish(&params(ours, theirs), &l, &c2).unwrap());

    let mut junk = TcpStream::connect(ours).unwrap();
    junk.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xf2, 0, 0])
        .unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        junk.read(&mut b).unwrap(),
        0,
        "a bad first header must close the socket"
    );

    let mut d = TcpStream::connect(ours).unwrap();
    d.write_all(&transport::h80(P_INITIAL_DATA, 0)).unwrap();
    let mut m = TcpStream::connect(ours).unwrap();
    m.write_all(&transport::h80(P_INITIAL_META, 0)).unwrap();
    let mut pair = t.join().unwrap();
    assert!(pair.resolve_conflicts);
    exchange(&mut d, &mut pair.data, b"into data");
    exchange(&mut m, &mut pair.meta, b"into meta");
}

#[test]
fn cancel_stops_the_loop() {
    let (ours, theirs) = (free_addr(), free_addr());
    let l = transport::listen(ours).unwrap();
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || transport::establish(&params(ours, theirs), &l, &c2));
    std::thread::sleep(Duration::from_millis(300));
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(matches!(
        t.join().unwrap(),
        Err(transport::TransportError::Cancelled)
    ));
}
