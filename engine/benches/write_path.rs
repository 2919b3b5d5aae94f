//! One 4 KiB protocol C write, from upper-layer submit to completion, with two engines wired
//! by in-memory queues (disk I/O completes at once; packets are delivered in memory).

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use udrbd_engine::*;

struct Side {
    r: Resource,
    inbox: VecDeque<Input>,
    completed: u64,
    connect: bool,
}

fn side(seed: u64) -> Side {
    let backing = 65536 + 4096;
    let disk = AttachedDisk::fresh(
        MetaLayout::internal_data_sectors(backing),
        MetaLayout::internal(backing),
    );
    let cfg = ResourceConfig {
        rng_seed: seed,
        ..Default::default()
    };
    let r = Resource::new(
        cfg,
        vec![VolumeOnDisk {
            volume: Volume(0),
            disk: Some(disk),
        }],
        Instant(0),
    )
    .expect("config");
    Side {
        r,
        inbox: VecDeque::new(),
        completed: 0,
        connect: false,
    }
}

/// Runs both engines until neither has work; returns completions seen on `a`.
fn pump(a: &mut Side, b: &mut Side) {
    loop {
        let mut any = step(a, b);
        any |= step(b, a);
        if a.connect && b.connect {
            a.connect = false;
            b.connect = false;
            a.inbox.push_back(Input::Connected {
                resolve_conflicts: true,
            });
            b.inbox.push_back(Input::Connected {
                resolve_conflicts: false,
            });
            any = true;
        }
        if !any {
            return;
        }
    }
}

fn step(me: &mut Side, other: &mut Side) -> bool {
    let mut any = false;
    {
        {
            while let Some(i) = me.inbox.pop_front() {
                me.r.handle(Instant(1), i);
                any = true;
            }
            while let Some(o) = me.r.poll_output() {
                any = true;
                match o {
                    Output::Send { socket, bytes } => {
                        other.inbox.push_back(Input::Received { socket, bytes })
                    }
                    Output::DiskWrite { io, .. } | Output::DiskFlush { io, .. } => {
                        me.inbox.push_back(Input::DiskDone {
                            io,
                            result: Ok(None),
                        })
                    }
                    Output::DiskRead { io, len_bytes, .. } => me.inbox.push_back(Input::DiskDone {
                        io,
                        result: Ok(Some(Bytes::from(vec![0; len_bytes as usize]))),
                    }),
                    Output::WriteMeta { io, .. } => {
                        me.inbox.push_back(Input::MetaDone { io, result: Ok(()) })
                    }
                    Output::Complete { .. } => me.completed += 1,
                    Output::Connect => me.connect = true,
                    _ => {}
                }
            }
        }
    }
    any
}

fn bench(c: &mut Criterion) {
    let (mut a, mut b) = (side(1), side(2));
    pump(&mut a, &mut b);
    a.inbox
        .push_back(Input::Admin(AdminCommand::Primary { force: true }));
    pump(&mut a, &mut b);
    // The resync is driven by the SyncTarget's 100 ms timer.
    for _ in 0..100_000 {
        if b.r.disk_state(Volume(0)) == Some(DiskState::UpToDate) {
            break;
        }
        let t = [a.r.poll_timeout(), b.r.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("a timer");
        a.r.handle_timeout(t);
        b.r.handle_timeout(t);
        pump(&mut a, &mut b);
    }
    assert_eq!(
        b.r.disk_state(Volume(0)),
        Some(DiskState::UpToDate),
        "initial sync finished"
    );
    let data = Bytes::from(vec![0x5a; 4096]);
    let mut id = 0u64;
    c.bench_function("protocol_c_4k_write_submit_to_complete", |bench| {
        bench.iter(|| {
            id += 1;
            let before = a.completed;
            let sector = (id % 1024) * 8;
            a.inbox.push_back(Input::Request {
                id: RequestId(id),
                volume: Volume(0),
                op: RequestOp::Write {
                    sector,
                    data: data.clone(),
                    fua: false,
                    preflush: false,
                },
            });
            pump(&mut a, &mut b);
            assert_eq!(a.completed, before + 1);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
