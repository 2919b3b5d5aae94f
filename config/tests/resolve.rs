//! Per-host resolution: which section is "me", which the peer, what is inherited from
//! `common` and the resource level, and the typed option values with their units (spec §1.3).

use udrbd_config::*;

const TWO_NODES: &str = r#"
global { usage-count no; }
common {
    net { protocol B; max-buffers 8K; shared-secret "from common"; }
    disk { on-io-error pass_on; resync-rate 40M; al-extents 509; }
    startup { wfc-timeout 15; }
    handlers { split-brain "/usr/lib/drbd/notify-split-brain.sh root"; }
}
resource r0 {
    net { protocol C; cram-hmac-alg sha1; shared-secret "FooFunFactory"; after-sb-0pri discard-node-nodeB; }
    disk { resync-rate 10M; c-fill-target 1M; }
    on nodeA {
        volume 0 { device /dev/drbd100; disk /tmp/a0.img; meta-disk internal; }
        volume 1 { device minor 101; disk { al-extents 67; } disk /tmp/a1.img; meta-disk /tmp/a1.md [2]; }
        address 127.0.0.1:7789;
    }
    on nodeB {
        volume 0 { device minor 110; disk /tmp/b0.img; meta-disk /tmp/b0.md; }
        volume 1 { device minor 111; disk /tmp/b1.img; meta-disk internal; }
        address 127.0.0.2:7790;
    }
}
"#;

fn cfg() -> Config {
    parse_str(TWO_NODES, "/etc/drbd.conf").expect("valid config")
}

#[test]
fn each_node_sees_itself_and_the_other_as_peer() {
    let c = cfg();
    let a = c.resource("r0", "nodeA").unwrap();
    let b = c.resource("r0", "nodeB").unwrap();
    assert_eq!(a.node, "nodeA");
    assert_eq!(a.local.names, vec!["nodeA"]);
    assert_eq!(
        a.local.address.socket_addr(),
        Some("127.0.0.1:7789".parse().unwrap())
    );
    assert_eq!(
        a.peer.as_ref().unwrap().address.socket_addr(),
        Some("127.0.0.2:7790".parse().unwrap())
    );
    assert_eq!(b.local.address.port, 7790);
    assert_eq!(b.peer.as_ref().unwrap().names, vec!["nodeA"]);
    // The peer's volumes are resolved too (the daemon needs their minors for nothing, but
    // their count must match).
    assert_eq!(a.peer.as_ref().unwrap().volumes.len(), 2);
}

#[test]
fn volumes_minors_devices_and_meta_disks() {
    let c = cfg();
    let a = c.resource("r0", "nodeA").unwrap();
    let v0 = a.volume(0).unwrap();
    assert_eq!(
        (v0.minor, v0.device.as_str(), v0.disk.as_str()),
        (100, "/dev/drbd100", "/tmp/a0.img")
    );
    assert_eq!(v0.meta_disk, MetaDisk::Internal);
    let v1 = a.volume(1).unwrap();
    assert_eq!((v1.minor, v1.device.as_str()), (101, "/dev/drbd101"));
    assert_eq!(
        v1.meta_disk,
        MetaDisk::Indexed {
            device: "/tmp/a1.md".into(),
            index: 2
        }
    );
    let b = c.resource("r0", "nodeB").unwrap();
    assert_eq!(
        b.volume(0).unwrap().meta_disk,
        MetaDisk::FlexExternal("/tmp/b0.md".into())
    );
    assert_eq!(
        b.volumes().iter().map(|v| v.minor).collect::<Vec<_>>(),
        vec![110, 111]
    );
}

#[test]
fn resource_overrides_common_and_common_fills_in() {
    let a = cfg().resource("r0", "nodeA").unwrap();
    assert_eq!(a.net.protocol, Protocol::C);
    assert_eq!(a.net.shared_secret.as_deref(), Some("FooFunFactory"));
    assert_eq!(a.net.cram_hmac_alg.as_deref(), Some("sha1"));
    assert_eq!(
        a.net.max_buffers, 8192,
        "8K from common, a plain count times 1024"
    );
    assert_eq!(
        a.disk.resync_rate_kib,
        10 * 1024,
        "resource's 10M beats common's 40M"
    );
    assert_eq!(a.disk.on_io_error, OnIoError::PassOn, "from common");
    assert_eq!(a.startup.wfc_timeout_s, 15);
    assert_eq!(
        a.handlers.get("split-brain"),
        Some("/usr/lib/drbd/notify-split-brain.sh root")
    );
    // Volume-level disk options beat inherited ones; others are inherited per volume.
    assert_eq!(a.volume(1).unwrap().disk_options.al_extents, 67);
    assert_eq!(a.volume(0).unwrap().disk_options.al_extents, 509);
    assert_eq!(a.volume(0).unwrap().disk_options.resync_rate_kib, 10240);
}

#[test]
fn discard_node_becomes_local_or_remote() {
    let c = cfg();
    assert_eq!(
        c.resource("r0", "nodeA").unwrap().net.after_sb_0pri,
        AfterSb0Pri::DiscardRemote
    );
    assert_eq!(
        c.resource("r0", "nodeB").unwrap().net.after_sb_0pri,
        AfterSb0Pri::DiscardLocal
    );
}

#[test]
fn units_convert_to_each_options_unit() {
    let a = cfg().resource("r0", "nodeA").unwrap();
    assert_eq!(a.disk.c_fill_target_sectors, 2048, "1M in sectors");
    let text = r#"resource r {
        net { sndbuf-size 512k; rcvbuf-size 1M; congestion-fill 1G; timeout 6; ping-timeout 20; }
        disk { size 10G; c-max-rate 700M; c-min-rate 4096s; resync-rate 1000; disk-timeout 50; }
        on x { device minor 1; disk /d1; meta-disk internal; address 10.0.0.1:7000; }
        on y { device minor 1; disk /d1; meta-disk internal; address 10.0.0.2:7000; }
    }"#;
    let r = parse_str(text, "/x.conf")
        .unwrap()
        .resource("r", "x")
        .unwrap();
    assert_eq!(r.net.sndbuf_size_bytes, 512 * 1024);
    assert_eq!(r.net.rcvbuf_size_bytes, 1 << 20);
    assert_eq!(r.net.congestion_fill_sectors, 2 << 20);
    assert_eq!(r.net.timeout_ds, 6);
    assert_eq!(r.net.ping_timeout_ds, 20);
    assert_eq!(r.disk.size_sectors, 20 << 20);
    assert_eq!(r.disk.c_max_rate_kib, 700 << 10);
    assert_eq!(r.disk.c_min_rate_kib, 2048);
    assert_eq!(r.disk.resync_rate_kib, 1000);
    assert_eq!(r.disk.disk_timeout_ds, 50);
}

#[test]
fn kernel_defaults_when_nothing_is_set() {
    let text = r#"resource r {
        on x { device minor 1; disk /d1; meta-disk internal; address 10.0.0.1:7000; }
        on y { device minor 1; disk /d1; meta-disk internal; address 10.0.0.2:7000; }
    }"#;
    let r = parse_str(text, "/x.conf")
        .unwrap()
        .resource("r", "y")
        .unwrap();
    assert_eq!(r.net, NetOptions::default());
    assert_eq!(r.net.protocol, Protocol::C);
    assert_eq!(
        (r.net.timeout_ds, r.net.connect_int_s, r.net.ping_int_s),
        (60, 10, 10)
    );
    assert_eq!(
        (r.net.ping_timeout_ds, r.net.ko_count, r.net.max_buffers),
        (5, 7, 2048)
    );
    assert!(r.net.use_rle && r.net.tcp_cork && !r.net.allow_two_primaries);
    assert_eq!(r.disk.resync_rate_kib, 250);
    assert_eq!(r.disk.al_extents, 1237);
    assert_eq!((r.disk.c_plan_ahead_ds, r.disk.c_delay_target_ds), (20, 10));
    assert_eq!(
        (r.disk.c_fill_target_sectors, r.disk.c_max_rate_kib),
        (100, 102400)
    );
    assert_eq!(r.disk.on_io_error, OnIoError::Detach);
    assert_eq!(r.disk.fencing, Fencing::DontCare);
    assert!(r.disk.disk_flushes && r.disk.md_flushes && !r.disk.disk_barrier);
    assert_eq!(r.options.on_no_data_accessible, OnNoDataAccessible::IoError);
    assert_eq!(r.volume(0).unwrap().device, "/dev/drbd1");
}

#[test]
fn flags_bare_yes_no_and_no_prefix() {
    let text = r#"resource r {
        net { allow-two-primaries; no-tcp-cork; use-rle no; always-asbp yes; }
        disk { no-disk-flushes; disk-barrier yes; md-flushes no; }
        on x { device minor 1; disk /d1; meta-disk internal; address 10.0.0.1:7000; }
        on y { device minor 1; disk /d1; meta-disk internal; address 10.0.0.2:7000; }
    }"#;
    let r = parse_str(text, "/x.conf")
        .unwrap()
        .resource("r", "x")
        .unwrap();
    assert!(r.net.allow_two_primaries && r.net.always_asbp);
    assert!(!r.net.tcp_cork && !r.net.use_rle);
    assert!(!r.disk.disk_flushes && r.disk.disk_barrier && !r.disk.md_flushes);
}

#[test]
fn other_hosts_and_unknown_resources_are_not_defined() {
    let c = cfg();
    assert!(matches!(
        c.resource("r0", "nodeC"),
        Err(Error::NotDefined { .. })
    ));
    assert!(matches!(
        c.resource("r9", "nodeA"),
        Err(Error::NotDefined { .. })
    ));
    assert_eq!(c.resources_for("nodeA"), vec!["r0"]);
    assert!(c.resources_for("nodeC").is_empty());
    assert!(c.resource("r0", "nodeA").is_ok());
}

#[test]
fn floating_sections_match_by_address_or_pretended_name() {
    let section = |a: &str, b: &str| {
        let text = format!(
            "resource f {{\n  floating {a}:7000 {{ device minor 5; disk /d5; meta-disk internal; }}\n  floating ipv4 {b}:7000 {{ device minor 5; disk /d5; meta-disk internal; }}\n}}\n"
        );
        parse_str(&text, "/x.conf").unwrap()
    };
    // __DRBD_NODE__ may name the address (drbdadm's debugging aid) ...
    let r = section("10.9.9.1", "10.9.9.2")
        .resource("f", "10.9.9.1")
        .unwrap();
    assert!(r.local.floating);
    assert_eq!(r.local.address.host, "10.9.9.1");
    assert_eq!(r.peer.unwrap().address.host, "10.9.9.2");
    // ... otherwise the section holding a local address (127.0.0.1 is on lo) is ours.
    let c = section("10.9.9.3", "127.0.0.1");
    let r = c.resource("f", "some-host").unwrap();
    assert_eq!(r.local.address.host, "127.0.0.1");
    // Both sections ours: drbdadm refuses, and so do we.
    let e = c.resource("f", "10.9.9.3").unwrap_err();
    assert!(
        e.to_string()
            .contains("multiple host sections for this node"),
        "{e}"
    );
}

#[test]
fn ipv6_and_other_families() {
    let text = r#"resource r {
        on x { device minor 1; disk /d1; meta-disk internal; address ipv6 [fd00::1]:7000; }
        on y { device minor 1; disk /d1; meta-disk internal; address ipv6 [fd00::2]:7000; }
    }
    resource s {
        on x { device minor 2; disk /d2; meta-disk internal; address sdp 10.0.0.1:7001; }
        on y { device minor 2; disk /d2; meta-disk internal; address ssocks 10.0.0.2:7001; }
    }"#;
    let c = parse_str(text, "/x.conf").unwrap();
    let r = c.resource("r", "x").unwrap();
    assert_eq!(r.local.address.family, AddressFamily::Ipv6);
    assert_eq!(
        r.local.address.socket_addr(),
        Some("[fd00::1]:7000".parse().unwrap())
    );
    let s = c.resource("s", "y").unwrap();
    assert_eq!(s.local.address.family, AddressFamily::Ssocks);
    assert_eq!(s.peer.unwrap().address.family, AddressFamily::Sdp);
}

#[test]
fn resource_level_statements_are_inherited_by_hosts() {
    let text = r#"resource r {
        device /dev/drbd7; disk /dev/vg/r; meta-disk internal;
        on x { address 10.0.0.1:7000; }
        on y { disk /dev/vg/other; address 10.0.0.2:7000; }
    }"#;
    let c = parse_str(text, "/x.conf").unwrap();
    let x = c.resource("r", "x").unwrap();
    assert_eq!(
        (
            x.volume(0).unwrap().minor,
            x.volume(0).unwrap().disk.as_str()
        ),
        (7, "/dev/vg/r")
    );
    let y = c.resource("r", "y").unwrap();
    assert_eq!(y.volume(0).unwrap().disk, "/dev/vg/other");
}

#[test]
fn resync_after_names_a_minor_on_this_host() {
    let text = r#"
    resource a {
        on x { volume 0 { device minor 1; disk /d1; meta-disk internal; }
               volume 1 { device minor 2; disk /d2; meta-disk internal; } address 10.0.0.1:7000; }
        on y { volume 0 { device minor 1; disk /d1; meta-disk internal; }
               volume 1 { device minor 2; disk /d2; meta-disk internal; } address 10.0.0.2:7000; }
    }
    resource b {
        disk { resync-after a/1; }
        on x { device minor 3; disk /d3; meta-disk internal; address 10.0.0.1:7001; }
        on y { device minor 3; disk /d3; meta-disk internal; address 10.0.0.2:7001; }
    }"#;
    let b = parse_str(text, "/x.conf")
        .unwrap()
        .resource("b", "x")
        .unwrap();
    assert_eq!(b.disk.resync_after_minor, Some(2));
}

#[test]
fn typed_values_are_checked_with_their_location() {
    let bad = |net: &str| {
        let text = format!(
            "resource r {{\n  net {{ {net} }}\n  on x {{ device minor 1; disk /d1; meta-disk internal; address 10.0.0.1:7000; }}\n  on y {{ device minor 1; disk /d1; meta-disk internal; address 10.0.0.2:7000; }}\n}}\n"
        );
        let c = parse_str(&text, "/etc/t.conf").expect("drbdadm accepts the text");
        let e = c.resource("r", "x").unwrap_err();
        let at = e.location().expect("typed errors have a location").clone();
        (e.to_string(), at.line, at.column)
    };
    let (msg, line, col) = bad("after-sb-1pri sometimes;");
    assert_eq!((line, col), (2, 9));
    assert!(
        msg.starts_with("/etc/t.conf:2:9: after-sb-1pri sometimes: expected one of"),
        "{msg}"
    );
    let (msg, ..) = bad("ping-timeout 301;");
    assert!(msg.contains("out of range [1..300]"), "{msg}");
    let (msg, ..) = bad("after-sb-0pri discard-node-z;");
    assert!(msg.contains("not a host of the resource"), "{msg}");
    let (msg, ..) = bad(&format!("shared-secret {};", "s".repeat(64)));
    assert!(msg.contains("longer than 63"), "{msg}");
}
