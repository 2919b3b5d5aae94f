//! `include` with glob patterns, relative to the including file, as drbdadm does them.

use std::fs;

use udrbd_config::{load, Error};

const RES: &str = "resource NAME {\n  on x { device minor MINOR; disk /dMINOR; meta-disk internal; address 10.0.0.1:PORT; }\n  on y { device minor MINOR; disk /dMINOR; meta-disk internal; address 10.0.0.2:PORT; }\n}\n";

fn res(name: &str, minor: u32) -> String {
    RES.replace("NAME", name)
        .replace("MINOR", &minor.to_string())
        .replace("PORT", &(7000 + minor).to_string())
}

#[test]
fn globs_are_relative_sorted_and_skip_dot_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("drbd.d")).unwrap();
    fs::write(
        d.join("drbd.d/global_common.conf"),
        "common { net { protocol A; } }\n",
    )
    .unwrap();
    fs::write(d.join("drbd.d/b.res"), res("rb", 2)).unwrap();
    fs::write(d.join("drbd.d/a.res"), res("ra", 1)).unwrap();
    fs::write(
        d.join("drbd.d/.swap.res"),
        "garbage that must not be read\n",
    )
    .unwrap();
    fs::write(d.join("drbd.d/c.res.off"), "garbage\n").unwrap();
    fs::write(
        d.join("drbd.conf"),
        "include \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\ninclude \"none.d/*.res\";\n",
    )
    .unwrap();
    let c = load(d.join("drbd.conf")).unwrap();
    assert_eq!(c.resource_names(), vec!["ra", "rb"]);
    let ra = c.resource("ra", "x").unwrap();
    assert_eq!(
        ra.net.protocol,
        udrbd_config::Protocol::A,
        "common from an included file"
    );
    // Resources remember the file that defines them.
    let canon = fs::canonicalize(d.join("drbd.d")).unwrap();
    assert_eq!(c.resources[1].file, canon.join("b.res").to_string_lossy());
}

#[test]
fn a_file_is_read_once_and_nested_includes_are_relative_to_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("sub/deeper")).unwrap();
    fs::write(d.join("sub/deeper/r.res"), res("r", 1)).unwrap();
    fs::write(
        d.join("sub/inc.conf"),
        "include \"deeper/*.res\";\ninclude \"deeper/r.res\";\n",
    )
    .unwrap();
    fs::write(
        d.join("top.conf"),
        "include \"sub/inc.conf\";\ninclude \"sub/deeper/r.res\";\n",
    )
    .unwrap();
    let c = load(d.join("top.conf")).unwrap();
    assert_eq!(c.resource_names(), vec!["r"]);
}

#[test]
fn a_missing_plain_include_is_an_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let top = dir.path().join("top.conf");
    fs::write(&top, "# hi\n  include \"nope.conf\";\n").unwrap();
    let e = load(&top).unwrap_err();
    assert!(matches!(e, Error::Include { .. }), "{e}");
    let at = e.location().unwrap();
    assert_eq!((at.line, at.column), (2, 11));
    assert!(e.to_string().contains("nope.conf"));
}

#[test]
fn errors_in_included_files_name_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("bad.res"),
        "resource r {\n  net { ko-count 300; }\n}\n",
    )
    .unwrap();
    fs::write(d.join("top.conf"), "include \"*.res\";\n").unwrap();
    let e = load(d.join("top.conf")).unwrap_err();
    let at = e.location().unwrap();
    assert!(at.file.ends_with("bad.res"), "{e}");
    assert_eq!((at.line, at.column), (2, 18));
}

#[test]
fn missing_top_file_is_an_io_error() {
    let e = load("/nonexistent/drbd.conf").unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    assert_eq!(e.exit_code(), 20);
}

#[test]
fn the_including_directory_name_is_not_a_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("conf[1]*");
    fs::create_dir_all(d.join("drbd.d")).unwrap();
    fs::write(d.join("drbd.d/r.res"), res("r", 1)).unwrap();
    fs::write(d.join("drbd.conf"), "include \"drbd.d/*.res\";\n").unwrap();
    let c = load(d.join("drbd.conf")).unwrap();
    assert_eq!(c.resource_names(), vec!["r"]);
}
