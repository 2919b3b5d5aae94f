//! Datadriven table of `drbd_uuid_compare` (tests/data/uuid_compare.txt): each row cites the
//! kernel condition it checks (spec §10.2).

use udrbd_engine::uuid_compare::{uuid_compare, CompareInput};

fn uuids(s: &str) -> [u64; 4] {
    let v: Vec<u64> = s
        .split(':')
        .map(|x| u64::from_str_radix(x, 16).expect("hex uuid"))
        .collect();
    [v[0], v[1], v[2], v[3]]
}

#[test]
fn uuid_compare_table() {
    let text = include_str!("data/uuid_compare.txt");
    let mut cases = 0;
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (input, expect) = line
            .split_once("=>")
            .expect("=> separates input and expectation");
        let mut ci = CompareInput {
            own: [0; 4],
            peer: [0; 4],
            peer_flags: 0,
            own_crashed_primary: false,
            own_primary: false,
            peer_primary: false,
            apv: 101,
            features: 0xf,
            resolve_conflicts: false,
        };
        for kv in input.split_whitespace() {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "own" => ci.own = uuids(v),
                "peer" => ci.peer = uuids(v),
                "pflags" => ci.peer_flags = v.parse().expect("flags"),
                "crashed" => ci.own_crashed_primary = v == "1",
                "role" => ci.own_primary = v == "P",
                "peer_role" => ci.peer_primary = v == "P",
                "apv" => ci.apv = v.parse().expect("apv"),
                "features" => ci.features = u32::from_str_radix(v, 16).expect("features"),
                "rc" => ci.resolve_conflicts = v == "1",
                _ => panic!("line {}: unknown key {k}", lineno + 1),
            }
        }
        let d = uuid_compare(&ci, false);
        for kv in expect.split_whitespace() {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "hg" => assert_eq!(
                    d.hg,
                    v.parse::<i32>().expect("hg"),
                    "line {}: {line}",
                    lineno + 1
                ),
                "rule" => assert_eq!(
                    d.rule,
                    v.parse::<u32>().expect("rule"),
                    "line {}: {line}",
                    lineno + 1
                ),
                "own_after" => assert_eq!(d.own, uuids(v), "line {}: {line}", lineno + 1),
                "peer_after" => assert_eq!(d.peer, uuids(v), "line {}: {line}", lineno + 1),
                _ => panic!("line {}: unknown key {k}", lineno + 1),
            }
        }
        // Without corrections the UUIDs are returned unchanged.
        if !expect.contains("own_after") {
            assert_eq!(d.own, ci.own, "line {}: own UUIDs changed", lineno + 1);
        }
        if !expect.contains("peer_after") {
            assert_eq!(d.peer, ci.peer, "line {}: peer UUIDs changed", lineno + 1);
        }
        cases += 1;
    }
    assert!(cases >= 30, "only {cases} cases parsed");
}

#[test]
fn wrong_direction_mutation_flips_rule_50() {
    let ci = CompareInput {
        own: uuids("a0:0:0:0"),
        peer: uuids("b0:a0:0:0"),
        peer_flags: 0,
        own_crashed_primary: false,
        own_primary: false,
        peer_primary: false,
        apv: 101,
        features: 0xf,
        resolve_conflicts: false,
    };
    assert_eq!(uuid_compare(&ci, true).hg, 1);
}
