//! The in-process API: two `Node`s in this test process (no daemon binary, no control socket),
//! replicating over 127.0.0.1; `Node::write` returns when the engine completes the write.

mod common;

use bytes::Bytes;
use common::*;
use udrbd::control::{DiskOptions, Request, Response};
use udrbd::node::{Node, NodeOptions};

fn node(d: &Daemon) -> Node {
    let n = Node::start(NodeOptions {
        resource: RES.into(),
        prefer_uring: true,
        run_dir: d.run_dir.clone(),
    })
    .unwrap();
    let attach = Request::Attach {
        volume: 0,
        minor: 1,
        disk: d.disk.display().to_string(),
        meta_disk: d.disk.display().to_string(),
        meta_index: None,
        options: DiskOptions {
            resync_rate_kib: 100 * 1024,
            ..Default::default()
        },
    };
    assert_eq!(n.call(attach), Response::Ok);
    assert_eq!(
        n.call(Request::Connect {
            local: d.local,
            peer: d.peer,
            options: d.net.clone()
        }),
        Response::Ok
    );
    n
}

#[test]
fn two_in_process_nodes_replicate_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = pair(dir.path());
    let (a, b) = (node(&da), node(&db));
    assert_eq!(a.call(Request::WaitConnect { timeout_s: 30 }), Response::Ok);
    assert_eq!(a.call(Request::Primary { force: true }), Response::Ok);
    assert_eq!(
        a.call(Request::WaitSynced { timeout_s: 60 }),
        Response::Ok,
        "{:?}",
        a.status()
    );
    assert_eq!(
        b.call(Request::WaitSynced { timeout_s: 60 }),
        Response::Ok,
        "{:?}",
        b.status()
    );
    for i in 0..64u64 {
        a.write(0, i * 64, Bytes::from(block(i, 4096))).unwrap();
    }
    assert_eq!(
        a.read(0, 63 * 64, 4096).unwrap(),
        Bytes::from(block(63, 4096))
    );
    // A write to the Secondary is refused, not lost silently.
    assert!(b.write(0, 0, Bytes::from(block(1, 4096))).is_err());
    let size = a.status().unwrap().volumes[0].size_kib * 1024;
    assert_eq!(hash_prefix(&da.disk, size), hash_prefix(&db.disk, size));
    a.shutdown();
    b.shutdown();
}

/// `expose` answers with the ublk device, or, on a host without ublk, with the reason.
#[test]
fn expose_reports_why_ublk_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let (da, _db) = pair(dir.path());
    let a = node(&da);
    match a.call(Request::Expose { volume: 0 }) {
        Response::Error { message }
            if !std::path::Path::new(udrbd::upper::UBLK_CONTROL).exists() =>
        {
            assert!(message.contains("/dev/ublk-control"), "{message}");
        }
        Response::Exposed { device } => assert!(device.starts_with("/dev/ublkb"), "{device}"),
        other => panic!("{other:?}"),
    }
    // The node keeps serving.
    assert!(a.status().is_some());
    a.shutdown();
}

/// events2 follow mode: the `exists` dump, then `change` lines as the state moves.
#[test]
fn events2_follow_reports_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = pair(dir.path());
    let a = node(&da);
    let events = a.subscribe(false, false);
    let first: Vec<String> = (0..5)
        .map(|_| {
            events
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap()
        })
        .collect();
    assert_eq!(
        first[0],
        "exists resource name:r0 role:Secondary suspended:no"
    );
    assert_eq!(first[4], "exists -");
    let b = node(&db);
    assert_eq!(a.call(Request::WaitConnect { timeout_s: 30 }), Response::Ok);
    assert_eq!(a.call(Request::Primary { force: true }), Response::Ok);
    assert_eq!(a.call(Request::WaitSynced { timeout_s: 60 }), Response::Ok);
    let seen: Vec<String> = events.try_iter().collect();
    for want in [
        "change connection name:r0 peer-node-id:0 conn-name:peer connection:Connected role:Secondary",
        "change resource name:r0 role:Primary",
        "change device name:r0 volume:0 minor:1 disk:UpToDate",
    ] {
        assert!(seen.iter().any(|l| l == want), "missing {want:?} in {seen:#?}");
    }
    assert!(
        seen.iter().any(|l| l.contains("replication:SyncSource")),
        "{seen:#?}"
    );
    a.shutdown();
    b.shutdown();
}
