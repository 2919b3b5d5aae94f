//! Parse and validation errors name file, line and column, and carry drbdadm's exit codes.

use udrbd_config::{parse_str, Error};

fn err(text: &str) -> Error {
    parse_str(text, "/etc/drbd.d/t.res").expect_err("must be rejected")
}

fn at(e: &Error) -> (u32, u32) {
    let l = e.location().unwrap_or_else(|| panic!("no location in {e}"));
    assert_eq!(&*l.file, "/etc/drbd.d/t.res");
    (l.line, l.column)
}

const HOSTS: &str = "  on x { device minor 1; disk /d1; meta-disk internal; address 10.0.0.1:7000; }\n  on y { device minor 1; disk /d1; meta-disk internal; address 10.0.0.2:7000; }\n";

#[test]
fn syntax_errors_point_at_the_offending_token() {
    let e = err("resource r0 {\n  net { protocol C }\n}\n");
    assert_eq!(at(&e), (2, 20));
    assert!(
        e.to_string()
            .starts_with("/etc/drbd.d/t.res:2:20: parse error: expected ';'"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 10);

    let e = err("resource r0 {\n\tnet { frobnicate yes; }\n}\n");
    assert_eq!(at(&e), (2, 8));
    assert!(e.to_string().contains("'frobnicate'"));

    let e = err("resourc r0 { }");
    assert_eq!(at(&e), (1, 1));

    let e = err("resource r0 {\n  net { shared-secret \"abc\n}\n");
    assert_eq!(at(&e), (2, 23));
    assert!(e.to_string().contains("unterminated double quoted string"));
}

#[test]
fn range_and_number_errors() {
    let e = err(&format!(
        "resource r0 {{\n  net {{ timeout 601; }}\n{HOSTS}}}\n"
    ));
    assert_eq!(at(&e), (2, 17));
    assert!(
        e.to_string()
            .contains("timeout 601 => 601 out of range [1..600]"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 10);

    let e = err(&format!(
        "resource r0 {{\n  disk {{ resync-rate 9X; }}\n{HOSTS}}}\n"
    ));
    assert!(matches!(e, Error::BadNumber { .. }));
    assert_eq!(at(&e), (2, 22));
    assert_eq!(e.exit_code(), 20, "drbdadm exits 20 on unreadable numbers");

    let e = err(&format!(
        "resource r0 {{\n  disk {{ resync-rate 5G; }}\n{HOSTS}}}\n"
    ));
    assert!(
        e.to_string()
            .contains("5242880k out of range [1..4194304]k"),
        "{e}"
    );
}

#[test]
fn semantic_errors_point_at_the_statement() {
    // Missing disk: reported at the host section.
    let e = err(
        "resource r0 {\n  on x { device minor 1; meta-disk internal; address 10.0.0.1:7000; }\n}\n",
    );
    assert_eq!(at(&e), (2, 3));
    assert!(e.to_string().contains("'disk' keyword missing"));

    // The same minor twice on one host, across resources: at the second use.
    let e = err(&format!(
        "resource r0 {{\n{HOSTS}}}\nresource r1 {{\n  on x {{ device minor 1; disk /d2; meta-disk internal; address 10.0.0.1:7001; }}\n}}\n"
    ));
    assert_eq!(at(&e), (6, 10));
    assert!(e.to_string().contains("device-minor:x:1"), "{e}");

    let e = err("resource r0 {\n  on x { device /dev/drbd1 minor 2; disk /d; meta-disk internal; address 10.0.0.1:7000; }\n}\n");
    assert!(
        e.to_string().contains("explicit minor number must match"),
        "{e}"
    );

    let e = err("resource r0 {\n  on x { device /dev/sdz; disk /d; meta-disk internal; address 10.0.0.1:7000; }\n}\n");
    assert_eq!(at(&e), (2, 17));
}

#[test]
fn unsupported_features_are_named() {
    let e = err(
        "resource r0 {\n  stacked-on-top-of r1 { device minor 3; address 10.0.0.1:7000; }\n}\n",
    );
    assert!(matches!(e, Error::Unsupported { .. }));
    assert_eq!(at(&e), (2, 3));
    assert!(e.to_string().contains("stacked"));
}

#[test]
fn never_panics_on_truncated_or_garbage_input() {
    let full = format!(
        "global {{ usage-count no; }}\ncommon {{ net {{ protocol C; }} }}\nresource r0 {{\n  volume 0 {{ disk {{ al-extents 67; }} }}\n  net {{ shared-secret \"a b\"; }}\n{HOSTS}  floating ipv6 [fd00::1]:7000 {{ device minor 1; disk /d; meta-disk /m [1]; }}\n}}\n"
    );
    for cut in 0..full.len() {
        if !full.is_char_boundary(cut) {
            continue;
        }
        let _ = parse_str(&full[..cut], "/x.conf").map(|c| {
            let _ = c.dump(None, "x");
            let _ = c.resource("r0", "x");
        });
    }
    for junk in [
        "\u{0}\u{1}{{{",
        "\"",
        "[::",
        "on on on",
        "resource \"\" {",
        "}}}}",
        "skip",
        "include",
    ] {
        let _ = parse_str(junk, "/x.conf");
    }
}
