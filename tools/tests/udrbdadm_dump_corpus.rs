//! `udrbdadm dump` against drbd-utils' own 8.4 front end, `drbdadm-84 dump`, over the corpus in
//! config/tests/corpus/. Each file's first line says which host to pretend to be and what to
//! dump: `# node=NAME res=RES|all`. Files named `ok*` must be accepted by drbdadm-84 and
//! `bad*` rejected; for every file both tools must print the same text (comment lines aside)
//! and exit with the same code, with and without `-d` (which merges `common`), and every
//! rejection of ours must name file:line:column.
//!
//! drbdadm-84 is installed by scripts/setup.sh; without it the test fails under CI=true and is
//! skipped (loudly) elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DRBDADM_84: [&str; 2] = ["/usr/lib/drbd/drbdadm-84", "/lib/drbd/drbdadm-84"];

fn drbdadm_84() -> Option<PathBuf> {
    DRBDADM_84.iter().map(PathBuf::from).find(|p| p.exists())
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/corpus")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, flags: &[&str], file: &Path, node: &str, res: &str) -> Run {
    let out = Command::new(program)
        .args(flags)
        .arg("-c")
        .arg(file)
        .arg("dump")
        .arg(res)
        .current_dir(file.parent().expect("corpus files live in a directory"))
        .env("__DRBD_NODE__", node)
        .env("DRBD_DONT_WARN_ON_VERSION_MISMATCH", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn without_comments(s: &str) -> String {
    s.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `# node=alice res=r0` → ("alice", "r0").
fn header(text: &str) -> Option<(String, String)> {
    let first = text.lines().next()?.trim_end_matches('\r');
    let mut node = None;
    let mut res = None;
    for word in first.trim_start_matches('#').split_whitespace() {
        if let Some(v) = word.strip_prefix("node=") {
            node = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("res=") {
            res = Some(v.to_string());
        }
    }
    Some((node?, res?))
}

/// Whether `stderr` names a place as FILE:LINE:COLUMN.
fn has_location(stderr: &str) -> bool {
    stderr.split_whitespace().any(|w| {
        let parts: Vec<&str> = w.trim_end_matches(':').rsplitn(3, ':').collect();
        parts.len() == 3
            && parts[0].parse::<u32>().is_ok()
            && parts[1].parse::<u32>().is_ok()
            && !parts[2].is_empty()
    })
}

#[test]
fn dump_matches_drbdadm_84_on_corpus() {
    let Some(drbdadm) = drbdadm_84() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("drbdadm-84 not found at {DRBDADM_84:?} (scripts/setup.sh installs drbd-utils)");
        }
        eprintln!("SKIPPING dump_matches_drbdadm_84_on_corpus: drbdadm-84 is not installed");
        return;
    };
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_udrbdadm"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();

    let mut failures = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for file in &files {
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(file).expect("corpus file");
        let Some((node, res)) = header(&text) else {
            failures.push(format!("{name}: first line must be '# node=NAME res=RES'"));
            continue;
        };
        let theirs = run(&drbdadm, &[], file, &node, &res);
        let expect_ok = name.starts_with("ok");
        if expect_ok != (theirs.code == 0) {
            failures.push(format!(
                "{name}: drbdadm-84 exits {} but the file is named {}\n{}",
                theirs.code,
                if expect_ok { "ok*" } else { "bad*" },
                theirs.stderr
            ));
        }
        if theirs.code == 0 {
            accepted += 1;
        } else {
            rejected += 1;
        }
        // Plain `dump`, and `-d dump` (common merged into each resource, device names filled in).
        for flags in [&[][..], &["-d"][..]] {
            let theirs = run(&drbdadm, flags, file, &node, &res);
            let mine = run(&ours, flags, file, &node, &res);
            let name = format!("{name} {flags:?}");
            if mine.code != theirs.code {
                failures.push(format!(
                    "{name}: exit code {} (drbdadm-84: {})\nours: {}\ntheirs: {}",
                    mine.code, theirs.code, mine.stderr, theirs.stderr
                ));
            }
            if without_comments(&mine.stdout) != without_comments(&theirs.stdout) {
                failures.push(format!(
                    "{name}: dump differs\n--- udrbdadm\n{}\n--- drbdadm-84\n{}",
                    mine.stdout, theirs.stdout
                ));
            }
            // Rejections of the text itself (not "no such resource here") must say where.
            if theirs.code >= 10 && !has_location(&mine.stderr) {
                failures.push(format!(
                    "{name}: error names no file:line:column: {}",
                    mine.stderr
                ));
            }
        }
    }
    eprintln!(
        "corpus: {} files, {accepted} accepted and {rejected} rejected by drbdadm-84",
        files.len()
    );
    assert!(files.len() >= 30, "corpus has only {} files", files.len());
    assert!(
        accepted >= 15 && rejected >= 15,
        "corpus must hold good and bad configs"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn location_detector_works() {
    assert!(has_location("bad01.conf:3:45: parse error"));
    assert!(!has_location("bad01.conf:3: parse error"));
    assert_eq!(
        header("# node=a res=b\nresource"),
        Some(("a".into(), "b".into()))
    );
}
