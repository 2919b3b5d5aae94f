//! `dump` output is stable: feeding it back in gives the same text again (drbd-utils' own
//! promise for `esc`), for every resource of every accepted corpus file.

use std::path::Path;

use udrbd_config::{load, parse_str};

fn strip_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dump_round_trips_on_the_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("ok") || !name.ends_with(".conf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text
            .lines()
            .next()
            .unwrap()
            .trim_end_matches('\r')
            .to_string();
        let node = first
            .split("node=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let c = load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Per resource: drbd-utils' `global` dump is not stable itself (its cmd-timeout
        // defaults differ between dump and parse), and we print what it prints.
        let names = c.resources_for(node);
        let once: Vec<String> = names
            .iter()
            .map(|r| c.dump(Some(r), node).unwrap())
            .collect();
        let again = parse_str(&once.concat(), dir.join("again.conf"))
            .unwrap_or_else(|e| panic!("{name}: dump output does not parse: {e}\n{once:?}"));
        for (res, once) in names.iter().zip(&once) {
            let twice = again.dump(Some(res), node).unwrap();
            assert_eq!(strip_comments(once), strip_comments(&twice), "{name}");
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} corpus files round-tripped");
}
