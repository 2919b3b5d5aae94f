//! Refusal to overwrite valid meta-data without --force, on block devices (loop devices over
//! files, where drbdmeta needs no --force to open them): the same questions as drbdmeta, "no"
//! without a terminal, and the answer acted on when one is given.

mod udrbdmeta_support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use udrbd_tools::meta::{main_with, Confirm};
use udrbdmeta_support::*;

const MIB: u64 = 1 << 20;

/// A loop device over a sparse file, detached on drop.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    /// None outside CI when loop devices are unavailable; in CI that is a failure.
    fn new(size: u64) -> Option<Loop> {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse(dir.path(), "backing", size);
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
                Some(Loop {
                    dev: dev.into(),
                    _dir: dir,
                })
            }
            other => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("losetup failed in CI: {other:?}");
                }
                eprintln!("SKIPPED: no loop device available: {other:?}");
                None
            }
        }
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn block_checksum(dev: &Path) -> Vec<u8> {
    std::fs::read(dev).unwrap()
}

/// Without a terminal both tools answer "no": create-md, restore-md and wipe-md leave the
/// device alone and exit 1; set-gi exits 0 with "Operation canceled.".
#[test]
fn refuses_to_overwrite_valid_meta_data_without_force() {
    let Some(dm) = drbdmeta() else { return };
    let Some(lo) = Loop::new(64 * MIB) else {
        return;
    };
    clear_minor(230);
    let dev = lo.path();
    let o = ok(&dm, &["230", "v08", dev, "internal", "create-md"]);
    assert!(o.stdout.contains("successfully created"), "{o:?}");
    let dump = ok(&dm, &["230", "v08", dev, "internal", "dump-md"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let dump_file = dir.path().join("dump.txt");
    std::fs::write(&dump_file, dump).unwrap();
    let before = block_checksum(&lo.dev);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["create-md"], 1, "Operation cancelled.\n"),
        (&["restore-md", dump_file.to_str().unwrap()], 1, ""),
        (&["wipe-md"], 1, "Operation cancelled.\n"),
    ];
    for (cmd, code, stdout) in cases {
        let mut args = vec!["230", "v08", dev, "internal"];
        args.extend_from_slice(cmd);
        let d = run(&dm, &args);
        let u = run(&udrbdmeta(), &args);
        assert_eq!(d.code, *code, "drbdmeta {cmd:?}: {d:?}");
        assert_eq!(u.code, d.code, "udrbdmeta {cmd:?}: {u:?}");
        assert_eq!(u.stdout, d.stdout, "{cmd:?}");
        assert!(u.stdout.ends_with(stdout), "{cmd:?}: {u:?}");
        assert!(
            u.stderr
                .contains("stdin not a TTY, not waiting for confirmation"),
            "{cmd:?}: {u:?}"
        );
        assert_eq!(block_checksum(&lo.dev), before, "{cmd:?}: device untouched");
    }
    let args = ["230", "v08", dev, "internal", "set-gi", "1:2:3:4"];
    let d = run(&dm, &args);
    let u = run(&udrbdmeta(), &args);
    assert_eq!((d.code, u.code), (0, 0));
    assert_eq!(u.stdout, d.stdout);
    assert!(u.stdout.ends_with("Operation canceled.\n"), "{u:?}");
    assert_eq!(block_checksum(&lo.dev), before, "set-gi answered no");
}

/// Answers questions from a script and records them.
struct Script {
    answers: Vec<bool>,
    asked: Vec<String>,
}

impl Confirm for Script {
    fn confirmed(&mut self, text: &str, force: bool) -> bool {
        assert!(!force, "no --force in these runs");
        self.asked.push(text.to_string());
        self.answers.remove(0)
    }
}

fn udrbdmeta_in_process(args: &[&str], answers: &[bool]) -> (i32, Vec<String>) {
    let mut s = Script {
        answers: answers.to_vec(),
        asked: Vec::new(),
    };
    let mut argv: Vec<OsString> = vec!["udrbdmeta".into()];
    argv.extend(args.iter().map(OsString::from));
    let code = main_with(argv, &mut s);
    (code, s.asked)
}

/// With a terminal the same questions are asked, and "yes" goes ahead.
#[test]
fn asks_drbdmeta_questions_and_acts_on_the_answer() {
    let Some(lo) = Loop::new(64 * MIB) else {
        return;
    };
    clear_minor(231);
    let dev = lo.path();
    let base = ["231", "v08", dev, "internal"];
    fn with<'a>(base: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut v = base.to_vec();
        v.extend_from_slice(cmd);
        v
    }
    let with = |cmd: &[&'static str]| with(&base, cmd);
    assert_eq!(
        udrbdmeta_in_process(&with(&["create-md"]), &[]),
        (0, vec![])
    );
    let before = block_checksum(&lo.dev);
    let (code, asked) = udrbdmeta_in_process(&with(&["create-md"]), &[false]);
    assert_eq!(code, 1);
    assert_eq!(
        asked,
        ["Do you really want to overwrite the existing meta-data?"]
    );
    assert_eq!(block_checksum(&lo.dev), before);
    let (code, asked) = udrbdmeta_in_process(&with(&["set-gi", "ABC:::"]), &[true]);
    assert_eq!(
        (code, asked),
        (0, vec!["Write new GI to disk?".to_string()])
    );
    assert_ne!(block_checksum(&lo.dev), before, "yes writes the new GI");
    let (code, asked) = udrbdmeta_in_process(&with(&["create-md"]), &[true]);
    assert_eq!(code, 0);
    assert_eq!(
        asked,
        ["Do you really want to overwrite the existing meta-data?"]
    );
    assert_eq!(
        block_checksum(&lo.dev),
        before,
        "re-created: back to the fresh bytes"
    );
    let (code, asked) = udrbdmeta_in_process(&with(&["wipe-md"]), &[true]);
    assert_eq!(code, 0);
    assert_eq!(
        asked,
        ["Do you really want to wipe out the DRBD meta data?"]
    );
    let (code, _) = udrbdmeta_in_process(&with(&["get-gi"]), &[]);
    assert_eq!(code, 1, "wiped");
}

/// Data in the first 68 KiB (here an ext2-like superblock) is reported and needs a "yes".
#[test]
fn existing_data_needs_confirmation_like_drbdmeta() {
    let Some(dm) = drbdmeta() else { return };
    let Some(lo) = Loop::new(64 * MIB) else {
        return;
    };
    clear_minor(232);
    let dev = lo.path();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&lo.dev)
            .unwrap();
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&0xEF53u16.to_le_bytes()); // s_magic
        sb[0x04..0x08].copy_from_slice(&1000u32.to_le_bytes()); // s_blocks_count
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        f.write_all_at(&sb, 1024).unwrap();
        f.sync_all().unwrap();
    }
    let before = block_checksum(&lo.dev);
    let args = ["232", "v08", dev, "internal", "create-md"];
    let d = run(&dm, &args);
    let u = run(&udrbdmeta(), &args);
    assert_eq!(d.code, 1, "{d:?}");
    assert_eq!(u.code, d.code, "{u:?}");
    assert_eq!(u.stdout, d.stdout);
    assert!(u.stdout.contains("Found ext2 filesystem"), "{u:?}");
    assert_eq!(block_checksum(&lo.dev), before);
    let (code, asked) = udrbdmeta_in_process(&args[..], &[true]);
    assert_eq!(
        (code, asked),
        (0, vec!["Do you want to proceed?".to_string()])
    );
}
