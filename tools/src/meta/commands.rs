//! The commands. Each mirrors the drbdmeta function of the same name (`meta_create_md`,
//! `meta_dump_md`, …): same stdout text, same questions, same exit codes; stderr messages
//! say more where drbdmeta says nothing (device, offset, field).

use std::io::Write;

use udrbd_metadata::dump;
use udrbd_metadata::io::{BlockIo, FileIo};
use udrbd_metadata::layout::{superblock_offset, AlGeometry, Layout, MetaIndex};
use udrbd_metadata::md::{self, CreateOptions, OnDisk};
use udrbd_metadata::superblock::{
    Magic, MdFlags, Superblock, DRBD_MD_MAGIC_07, DRBD_MD_MAGIC_09, SUPERBLOCK_BYTES,
};
use udrbd_metadata::Error;

use super::device::{self, Confirm, LastKnown, MinorLock};
use super::{Fail, Invocation};

/// Result of looking for meta-data (drbdmeta `VALID_MD_FOUND` and friends).
enum Found {
    Valid(OnDisk),
    /// No valid v08 meta-data; why.
    None(String),
    /// Internal meta-data found where the backing device's last known size puts it.
    AtLastKnown {
        od: OnDisk,
        old_size: u64,
    },
}

pub fn run(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let _lock = match inv.minor {
        Some(m) => {
            let lock = MinorLock::take(m)?;
            let modifies = super::COMMANDS
                .iter()
                .any(|(n, _, w)| *n == inv.command && *w);
            if modifies && device::kernel_minor_attached(m) {
                return Err(Fail::new(
                    20,
                    format!("Device '{}' is configured!", inv.drbd_dev),
                ));
            }
            Some(lock)
        }
        None => None,
    };
    let extra = |n: usize| {
        if inv.args.len() > n {
            eprintln!("Ignoring additional arguments");
        }
    };
    match inv.command.as_str() {
        "get-gi" | "show-gi" | "dstate" | "read-dev-uuid" => {
            extra(0);
            read_only(inv, confirm)
        }
        "dump-md" => {
            extra(0);
            dump_md(inv, confirm)
        }
        "restore-md" | "verify-dump" => {
            extra(1);
            restore_md(inv, confirm, inv.command == "verify-dump")
        }
        "apply-al" => {
            extra(0);
            apply_al(inv, confirm)
        }
        "create-md" => {
            extra(0);
            create_md(inv, confirm)
        }
        "wipe-md" => {
            extra(0);
            wipe_md(inv, confirm)
        }
        "outdate" | "invalidate" | "write-dev-uuid" => {
            extra(usize::from(inv.command == "write-dev-uuid"));
            modify_flags(inv, confirm)
        }
        "set-gi" => {
            extra(1);
            set_gi(inv, confirm)
        }
        "check-resize" => check_resize(inv, confirm),
        other => Err(Fail::new(20, format!("Unknown command '{other}'."))),
    }
}

fn io_fail(inv: &Invocation, e: Error) -> Fail {
    Fail::new(10, format!("{}: {e}", inv.device))
}

/// drbdmeta's `v08_md_open`: find the superblock, validate it, clip la-size-sect.
fn open_md(inv: &Invocation, io: &FileIo) -> Result<Found, Fail> {
    let size = io
        .len()
        .map_err(|e| Fail::new(20, format!("{}: size: {e}", inv.device)))?;
    let offset = match superblock_offset(inv.index, size) {
        Ok(o) => o,
        Err(_) => {
            let want = match inv.index {
                MetaIndex::Indexed(i) => u64::from(i) << 27,
                _ => 0,
            };
            return Err(Fail::new(
                10,
                format!(
                    "Device too small: expecting meta data block at\n\
                     byte offset {want}, but {} is only {size} bytes.",
                    inv.device
                ),
            ));
        }
    };
    match md::open(io, inv.index) {
        Ok(od) => {
            if let Some(from) = od.la_size_clipped_from {
                println!(
                    "# la-size-sect was too big ({from}), truncated ({})!",
                    od.superblock.la_size_sect
                );
            }
            Ok(Found::Valid(od))
        }
        Err(Error::BadMagic { found, .. }) => {
            if let Some(found) = last_known_location(inv, io, size) {
                return Ok(found);
            }
            Ok(Found::None(format!(
                "{}: no v08 meta-data at byte offset {offset}: magic is {found:#010x}",
                inv.device
            )))
        }
        Err(e @ Error::Io { .. }) => Err(io_fail(inv, e)),
        Err(e) => {
            // A v08 magic with fields that do not fit this device: drbdmeta prints why.
            let msg = format!("{}: {e}", inv.device);
            eprintln!("{msg}");
            if let Some(found) = last_known_location(inv, io, size) {
                return Ok(found);
            }
            Ok(Found::None(msg))
        }
    }
}

/// drbdmeta's `v08_check_for_resize`: internal meta-data of a backing device that was
/// resized offline still sits where the last known size put it.
fn last_known_location(inv: &Invocation, io: &FileIo, size: u64) -> Option<Found> {
    if inv.index != MetaIndex::Internal {
        return None;
    }
    let lk = LastKnown::load(inv.minor?)?;
    if lk.size >= size {
        return None;
    }
    let old = md::open_at_size(io, lk.size).ok()?;
    if lk.uuid != 0 && old.superblock.device_uuid != lk.uuid {
        eprintln!(
            "Last known and found uuid differ!?\n{:016X} != {:016X}",
            lk.uuid, old.superblock.device_uuid
        );
        if !inv.opts.force {
            eprintln!("You may --force me to ignore that.");
            return None;
        }
        eprintln!("You --force'ed me to ignore that.");
    }
    Some(Found::AtLastKnown {
        od: old,
        old_size: lk.size,
    })
}

/// Opens the device and requires valid meta-data (the common start of most commands);
/// prints `no_md_msg` (drbdmeta's wording) and exits 1 otherwise.
fn open_valid(
    inv: &Invocation,
    confirm: &mut dyn Confirm,
    writable: bool,
    no_md_msg: Option<&str>,
) -> Result<(FileIo, OnDisk), Fail> {
    let io = device::open_device(inv, confirm, writable)?;
    match open_md(inv, &io)? {
        Found::Valid(od) => Ok((io, od)),
        Found::None(why) => {
            if let Some(m) = no_md_msg {
                eprintln!("{m}");
            }
            Err(Fail::new(1, why))
        }
        Found::AtLastKnown { old_size, .. } => {
            if let Some(m) = no_md_msg {
                eprintln!("{m}");
            }
            Err(Fail::new(
                1,
                format!(
                    "{}: meta-data found at the position for the last known size {old_size}; run check-resize",
                    inv.device
                ),
            ))
        }
    }
}

/// Writes the superblock (refusing one that does not validate, like `v08_md_cpu_to_disk`)
/// and updates the last-known file.
fn write_sb(inv: &Invocation, io: &mut FileIo, od: &OnDisk) -> Result<(), Fail> {
    if inv.opts.dry_run {
        eprintln!(
            " {:<26}: pwrite(..., {SUPERBLOCK_BYTES}, {}) SKIPPED DUE TO DRY-RUN",
            "md_cpu_to_disk", od.layout.md_offset
        );
        return Ok(());
    }
    md::write_superblock(io, od).map_err(|e| io_fail(inv, e))?;
    device::update_last_known(inv, od.layout.device_bytes, od.superblock.device_uuid);
    Ok(())
}

fn print_gi(sb: &Superblock) {
    let u = sb.uuids.to_array();
    let f = sb.flags;
    let b = |m: MdFlags| u8::from(f.contains(m));
    println!(
        "{:016X}:{:016X}:{:016X}:{:016X}:{}:{}:{}:{}:{}:{}:{}",
        u[0],
        u[1],
        u[2],
        u[3],
        b(MdFlags::CONSISTENT),
        b(MdFlags::WAS_UP_TO_DATE),
        b(MdFlags::PRIMARY_IND),
        b(MdFlags::CONNECTED_IND),
        b(MdFlags::FULL_SYNC),
        b(MdFlags::PEER_OUT_DATED),
        b(MdFlags::CRASHED_PRIMARY)
    );
}

fn show_gi(sb: &Superblock) {
    print!(
        "\n       +--<  Current data generation UUID  >-\n       |               +--<  Bitmap's base data generation UUID  >-\n       |               |                 +--<  younger history UUID  >-\n       |               |                 |         +-<  older history  >-\n       V               V                 V         V\n"
    );
    print_gi(sb);
    print!(
        "                                                                    ^ ^ ^ ^ ^ ^ ^\n                                      -<  Data consistency flag  >--+ | | | | | |\n                             -<  Data was/is currently up-to-date  >--+ | | | | |\n                                  -<  Node was/is currently primary  >--+ | | | |\n                                  -<  Node was/is currently connected  >--+ | | |\n         -<  Node was in the progress of setting all bits in the bitmap  >--+ | |\n                        -<  The peer's disk was out-dated or inconsistent  >--+ |\n      -<  This node was a crashed primary, and has not seen its peer since   >--+\n\n"
    );
    let f = sb.flags;
    println!(
        "flags:{} {}, {}, {}{}{}",
        if f.contains(MdFlags::CRASHED_PRIMARY) {
            " crashed"
        } else {
            ""
        },
        if f.contains(MdFlags::PRIMARY_IND) {
            "Primary"
        } else {
            "Secondary"
        },
        if f.contains(MdFlags::CONNECTED_IND) {
            "Connected"
        } else {
            "StandAlone"
        },
        if f.contains(MdFlags::CONSISTENT) {
            if f.contains(MdFlags::WAS_UP_TO_DATE) {
                "UpToDate"
            } else {
                "Outdated"
            }
        } else {
            "Inconsistent"
        },
        if f.contains(MdFlags::FULL_SYNC) {
            ", need full sync"
        } else {
            ""
        },
        if f.contains(MdFlags::PEER_OUT_DATED) {
            ", peer Outdated"
        } else {
            ""
        },
    );
    println!(
        "meta-data: {}",
        if f.contains(MdFlags::AL_CLEAN) {
            "clean"
        } else {
            "need apply-al"
        }
    );
    if sb.la_size_sect != 0 {
        println!(
            "last agreed size: {} ({} sectors)",
            md::ppsize(sb.la_size_sect >> 1),
            sb.la_size_sect
        );
        println!("last agreed max bio size: {} Byte", sb.la_peer_max_bio_size);
    } else {
        println!("zero size device -- never seen peer yet?");
    }
}

fn dstate(sb: &Superblock) -> &'static str {
    let f = sb.flags;
    if !f.contains(MdFlags::CONSISTENT) {
        "Inconsistent"
    } else if !f.contains(MdFlags::WAS_UP_TO_DATE) {
        "Outdated"
    } else if f.contains(MdFlags::PEER_OUT_DATED) {
        "UpToDate"
    } else {
        "Consistent"
    }
}

fn read_only(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let no_md = (inv.command == "dstate").then_some("No valid meta data found");
    let (_io, od) = open_valid(inv, confirm, false, no_md)?;
    let sb = &od.superblock;
    match inv.command.as_str() {
        "get-gi" => print_gi(sb),
        "show-gi" => show_gi(sb),
        "dstate" => println!("{}", dstate(sb)),
        "read-dev-uuid" => println!("{:016X}", sb.device_uuid),
        _ => unreachable!("read_only is only called for these commands"),
    }
    Ok(0)
}

/// The comment header of a dump: date, host, command line.
fn dump_header(inv: &Invocation) -> String {
    format!(
        "# DRBD meta data dump\n# {}\n# {}> {}\n#\n\n",
        local_time_string(),
        hostname(),
        inv.argv.join(" ")
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for 256 bytes; gethostname NUL-terminates within the length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `strftime("%F %T %z [%s]", localtime(now))`.
fn local_time_string() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: tm is plain data; localtime_r fills it from a valid time_t pointer.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() {
        return format!("[{now}]");
    }
    let mut buf = [0u8; 64];
    let fmt = c"%F %T %z [%s]";
    // SAFETY: buf has room for 64 bytes, fmt is NUL-terminated, tm was filled above.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), fmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn dump_md(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let io = device::open_device(inv, confirm, false)?;
    let (od, last_known) = match open_md(inv, &io)? {
        Found::Valid(od) => (od, None),
        Found::AtLastKnown { od, old_size } => (od, Some(old_size)),
        Found::None(why) => {
            eprintln!("No valid meta data found");
            return Err(Fail::new(1, why));
        }
    };
    let sb = &od.superblock;
    let clean = sb.magic != Magic::V84_UNCLEAN && sb.flags.contains(MdFlags::AL_CLEAN);
    if !clean {
        eprintln!("Found meta data is \"unclean\", please apply-al first");
        if !inv.opts.force {
            return Err(Fail::new(
                1,
                format!(
                    "{}: magic {:#010x}, flags {:#x}: the activity log needs apply-al (or --force for an unrestorable dump)",
                    inv.device, sb.magic.0, sb.flags.0
                ),
            ));
        }
    }
    let bitmap = md::read_bitmap_bytes(&io, &od).map_err(|e| io_fail(inv, e))?;
    let mut out = dump_header(inv);
    if let Some(old_size) = last_known {
        // drbdmeta marks such dumps; the offsets then describe the old position.
        let size = od.layout.device_bytes;
        out.push_str(&format!(
            "#\n### Device seems to have been resized!\n### dumping meta data from the last known position\n### current size of {}: {} byte\n",
            inv.device,
            io.len().unwrap_or(size)
        ));
        out.push_str(&format!(
            "### last known size of {}: {old_size} byte\n",
            inv.device
        ));
    }
    dump::format(&mut out, &od, &bitmap, !clean);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|e| Fail::new(10, format!("writing the dump to stdout: {e}")))?;
    Ok(0)
}

fn restore_md(inv: &Invocation, confirm: &mut dyn Confirm, parse_only: bool) -> Result<i32, Fail> {
    let Some(file) = inv.args.first() else {
        return Err(Fail::new(10, "Required Argument missing"));
    };
    let text = std::fs::read(file).map_err(|e| {
        eprintln!("open of '{file}' failed.");
        Fail::new(20, format!("{file}: {e}"))
    })?;
    // Parse everything before touching the device: a bad dump never reaches the disk.
    let parsed = dump::parse(&text).map_err(|e| Fail::new(10, format!("{file}: {e}")))?;
    if parse_only {
        println!("input file parsed ok");
        return Ok(0);
    }
    let mut io = device::open_device(inv, confirm, true)?;
    if !matches!(open_md(inv, &io)?, Found::None(_))
        && !confirm.confirmed("Valid meta-data in place, overwrite?", inv.opts.force)
    {
        return Err(Fail::quiet(1));
    }
    eprintln!("reinitializing");
    let al_override = match (inv.opts.al_stripes, inv.opts.al_stripe_size_4k) {
        (None, None) => None,
        (s, z) => {
            eprintln!("override activity log striping from commandline");
            Some(
                AlGeometry::new(s.unwrap_or(1), z.unwrap_or(8))
                    .map_err(|e| Fail::new(10, e.to_string()))?,
            )
        }
    };
    let size = io
        .len()
        .map_err(|e| Fail::new(20, format!("{}: {e}", inv.device)))?;
    let al = match al_override {
        Some(al) => al,
        None => AlGeometry::new(parsed.al_stripes, parsed.al_stripe_size_4k).map_err(|_| {
            Fail::new(
                10,
                format!(
                    "{file}: al-stripes {} x al-stripe-size-4k {}: activity log must be 32 KiB .. 32 MiB",
                    parsed.al_stripes, parsed.al_stripe_size_4k
                ),
            )
        })?,
    };
    let layout = Layout::new(inv.index, size, al).map_err(|e| io_fail(inv, e))?;
    device::check_for_existing_data(inv, &io, &layout, confirm)?;
    if inv.opts.dry_run {
        eprintln!("dry-run: not restoring");
        return Ok(0);
    }
    let r = md::restore(&mut io, inv.index, &parsed, al_override).map_err(|e| match e {
        Error::InvalidArgument { .. } => Fail::new(10, format!("{file}: {e}")),
        e => io_fail(inv, e),
    })?;
    if let Some(from) = r.la_size_clipped_from {
        println!(
            "# la-size-sect was too big ({from}), truncated ({})!",
            r.on_disk.superblock.la_size_sect
        );
    }
    if r.bitmap_truncated {
        eprintln!("Bitmap info too large, truncated!");
    }
    device::update_last_known(inv, size, r.on_disk.superblock.device_uuid);
    println!("Successfully restored meta data");
    Ok(0)
}

fn apply_al(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let mut io = device::open_device(inv, confirm, true)?;
    match open_md(inv, &io)? {
        Found::Valid(_) => {}
        Found::AtLastKnown { old_size, .. } => {
            move_internal(inv, &mut io, old_size)?;
        }
        Found::None(why) => {
            eprintln!("No valid meta data found");
            return Err(Fail::new(1, why));
        }
    }
    if inv.opts.dry_run {
        eprintln!("dry-run: not applying the activity log");
        return Ok(0);
    }
    match md::apply_al(&mut io, inv.index) {
        Ok(r) => {
            for m in &r.messages {
                eprintln!("{m}");
            }
            if r.superblock_written {
                let od = md::open(&io, inv.index).map_err(|e| io_fail(inv, e))?;
                device::update_last_known(inv, od.layout.device_bytes, od.superblock.device_uuid);
            }
            Ok(0)
        }
        Err(e @ Error::ActivityLog { .. }) => Err(Fail::new(1, format!("{}: {e}", inv.device))),
        Err(e) => Err(io_fail(inv, e)),
    }
}

/// drbdmeta's `check_internal_md_flavours` / `check_external_md_flavours`: ask before
/// replacing meta-data that is already there.
fn confirm_replace(
    inv: &Invocation,
    io: &FileIo,
    found: &Found,
    confirm: &mut dyn Confirm,
) -> Result<(), Fail> {
    let force = inv.opts.force;
    let cancelled = || {
        println!("Operation cancelled.");
        Fail::quiet(1)
    };
    if let Found::Valid(od) = found {
        if inv.index == MetaIndex::Internal {
            eprintln!("You want me to create a v08 style flexible-size internal meta data block.");
            eprintln!(
                "There appears to be a v08 flexible-size internal meta data block\n\
                 already in place on {} at byte offset {}",
                inv.device, od.layout.md_offset
            );
            let want = (
                inv.opts.al_stripes.unwrap_or(1),
                inv.opts.al_stripe_size_4k.unwrap_or(8),
            );
            if (od.superblock.al_stripes, od.superblock.al_stripe_size_4k) != want
                && confirm.confirmed(
                    "Do you want to change the activity log stripe settings *only*?",
                    force,
                )
            {
                eprintln!(
                    "Sorry, not yet fully implemented\n\
                     Try dump-md > dump.txt; restore-md -s x -z y dump.txt"
                );
                return Err(Fail::quiet(30));
            }
            if !confirm.confirmed(
                "Do you really want to overwrite the existing meta-data?",
                force,
            ) {
                return Err(cancelled());
            }
        } else if !confirm.confirmed(
            "Valid meta data seems to be in place.\nDo you really want to overwrite?",
            force,
        ) {
            return Err(cancelled());
        }
        return Ok(());
    }
    // Other formats at the same place: we do not convert, only replace (with a question).
    let size = io.len().unwrap_or(0);
    if let Ok(off) = superblock_offset(inv.index, size) {
        let mut b = [0u8; 64];
        if io.read_at(&mut b, off).is_ok() {
            let magic = u32::from_be_bytes([b[60], b[61], b[62], b[63]]);
            let name = match magic {
                DRBD_MD_MAGIC_09 => Some("v09"),
                DRBD_MD_MAGIC_07 => Some("v07"),
                _ => None,
            };
            if let Some(name) = name {
                eprintln!(
                    "There appears to be {name} meta-data on {} at byte offset {off}; \
                     udrbdmeta does not convert it.",
                    inv.device
                );
                if !confirm.confirmed(
                    &format!("So you want me to replace the {name} meta-data\nwith newly initialized v08 meta-data?"),
                    force,
                ) {
                    return Err(cancelled());
                }
            }
        }
    }
    Ok(())
}

fn create_md(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let mut io = device::open_device(inv, confirm, true)?;
    let found = open_md(inv, &io)?;
    if let Found::AtLastKnown { old_size, od } = &found {
        if inv.opts.al_stripes.is_some() || inv.opts.al_stripe_size_4k.is_some() {
            let want = (
                inv.opts.al_stripes.unwrap_or(1),
                inv.opts.al_stripe_size_4k.unwrap_or(8),
            );
            if want != (od.superblock.al_stripes, od.superblock.al_stripe_size_4k) {
                return Err(Fail::new(
                    20,
                    "Cannot move after offline resize and change AL-striping at the same time, yet.",
                ));
            }
        }
        if !inv.opts.force
            && confirm.confirmed("Move internal meta data from last-known position?\n", false)
        {
            move_internal(inv, &mut io, *old_size)?;
            return Ok(0);
        }
    }
    confirm_replace(inv, &io, &found, confirm)?;
    let al = AlGeometry::new(
        inv.opts.al_stripes.unwrap_or(1),
        inv.opts.al_stripe_size_4k.unwrap_or(8),
    )
    .map_err(|e| Fail::new(10, e.to_string()))?;
    let size = io
        .len()
        .map_err(|e| Fail::new(20, format!("{}: {e}", inv.device)))?;
    let layout = Layout::new(inv.index, size, al).map_err(|e| io_fail(inv, e))?;
    device::check_for_existing_data(inv, &io, &layout, confirm)?;
    if inv.opts.dry_run {
        eprintln!("dry-run: not writing meta data");
        return Ok(0);
    }
    println!("initializing activity log");
    eprintln!(
        "initializing bitmap ({}) to all zero",
        md::ppsize(layout.bm_bytes_for_device().min(layout.bm_area_bytes()) >> 10)
    );
    println!("Writing meta data...");
    let opts = CreateOptions {
        al,
        peer_max_bio_size: inv.opts.peer_max_bio_size.unwrap_or(0),
    };
    let od = md::create(&mut io, inv.index, &opts).map_err(|e| io_fail(inv, e))?;
    device::update_last_known(inv, size, od.superblock.device_uuid);
    println!("New drbd meta data block successfully created.");
    Ok(0)
}

fn wipe_md(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let mut io = device::open_device(inv, confirm, true)?;
    let od = match open_md(inv, &io)? {
        Found::Valid(od) => od,
        _ => {
            eprintln!("There appears to be no drbd meta data to wipe out?");
            return Ok(0);
        }
    };
    if !confirm.confirmed(
        "Do you really want to wipe out the DRBD meta data?",
        inv.opts.force,
    ) {
        println!("Operation cancelled.");
        return Err(Fail::quiet(1));
    }
    println!("Wiping meta data...");
    if !inv.opts.dry_run {
        io.write_at(&[0u8; SUPERBLOCK_BYTES], od.layout.md_offset)
            .and_then(|_| io.flush())
            .map_err(|e| {
                Fail::new(
                    10,
                    format!(
                        "{}: wiping the superblock at byte offset {:#x} failed: {e}",
                        inv.device, od.layout.md_offset
                    ),
                )
            })?;
        if let Some(m) = inv.minor {
            LastKnown::delete(m);
        }
    }
    println!("DRBD meta data block successfully wiped out.");
    Ok(0)
}

fn modify_flags(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    if inv.command == "write-dev-uuid" && inv.args.is_empty() {
        return Err(Fail::new(10, "Required Argument missing"));
    }
    let (mut io, mut od) = open_valid(inv, confirm, true, None)?;
    let sb = &mut od.superblock;
    match inv.command.as_str() {
        "outdate" => {
            if !sb.flags.contains(MdFlags::CONSISTENT) {
                return Err(Fail::new(5, "Device is inconsistent."));
            }
            sb.flags.remove(MdFlags::WAS_UP_TO_DATE);
        }
        "invalidate" => {
            sb.flags.remove(MdFlags::CONSISTENT);
            sb.flags.remove(MdFlags::WAS_UP_TO_DATE);
            sb.flags.insert(MdFlags::FULL_SYNC);
        }
        "write-dev-uuid" => sb.device_uuid = strto_u64_hex_lenient(&inv.args[0]),
        _ => unreachable!("modify_flags is only called for these commands"),
    }
    write_sb(inv, &mut io, &od)?;
    Ok(0)
}

/// `strtoull(s, NULL, 16)`: leading blanks, optional 0x, as many hex digits as there are;
/// garbage gives 0 and overflow saturates.
fn strto_u64_hex_lenient(s: &str) -> u64 {
    let s = s.trim_start();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_hexdigit()))
        .unwrap_or(s);
    let digits: String = s.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    let v = if digits.is_empty() {
        0
    } else {
        u64::from_str_radix(&digits, 16).unwrap_or(u64::MAX)
    };
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// One `:`-separated field of set-gi: `None` if absent, `Some(None)` if empty (keep).
fn set_gi(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let Some(arg) = inv.args.first() else {
        return Err(Fail::new(10, "Required Argument missing"));
    };
    let (mut io, od) = open_valid(inv, confirm, true, None)?;
    let mut new = od;
    apply_gi(arg, &mut new.superblock)?;
    print!("previously ");
    print_gi(&od.superblock);
    print!("set GI to  ");
    print_gi(&new.superblock);
    let _ = std::io::stdout().flush();
    if !confirm.confirmed("Write new GI to disk?", inv.opts.force) {
        println!("Operation canceled.");
        return Ok(0);
    }
    write_sb(inv, &mut io, &new)?;
    Ok(0)
}

/// Parses `C:B:H0:H1[:c:u:p:C:f:o:cp]` into `sb` like drbdmeta's `m_set_uuid`: empty fields
/// keep the old value; UUIDs are hex, flags 0 or 1.
fn apply_gi(arg: &str, sb: &mut Superblock) -> Result<(), Fail> {
    let mut fields = arg.split(':');
    let mut uuids = sb.uuids.to_array();
    let names = ["current", "bitmap", "history[0]", "history[1]"];
    for (i, u) in uuids.iter_mut().enumerate() {
        let Some(t) = fields.next() else {
            sb.uuids = udrbd_metadata::Uuids::from_array(uuids);
            return Ok(());
        };
        if t.is_empty() {
            continue;
        }
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        *u = u64::from_str_radix(hex, 16).map_err(|_| {
            Fail::new(
                10,
                format!("'{t}' is not a number (set-gi field {} UUID).", names[i]),
            )
        })?;
    }
    sb.uuids = udrbd_metadata::Uuids::from_array(uuids);
    let bits = [
        (MdFlags::CONSISTENT, "consistent"),
        (MdFlags::WAS_UP_TO_DATE, "was-up-to-date"),
        (MdFlags::PRIMARY_IND, "primary"),
        (MdFlags::CONNECTED_IND, "connected"),
        (MdFlags::FULL_SYNC, "full-sync"),
        (MdFlags::PEER_OUT_DATED, "peer-outdated"),
        (MdFlags::CRASHED_PRIMARY, "crashed-primary"),
    ];
    for (flag, name) in bits {
        let Some(t) = fields.next() else { break };
        if t.is_empty() {
            continue;
        }
        let v = parse_c_ulong(t)
            .ok_or_else(|| Fail::new(10, format!("'{t}' is not a number (set-gi flag {name}).")))?;
        if v > 1 {
            return Err(Fail::new(
                10,
                format!("'{v}' is not 0 or 1 (set-gi flag {name})."),
            ));
        }
        sb.flags.set(flag, v == 1);
    }
    Ok(())
}

/// `strtoul(s, &e, 0)` requiring the whole string.
fn parse_c_ulong(t: &str) -> Option<u64> {
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8).ok()
    } else {
        t.parse().ok()
    }
}

fn check_resize(inv: &Invocation, confirm: &mut dyn Confirm) -> Result<i32, Fail> {
    let mut io = device::open_device(inv, confirm, true)?;
    match open_md(inv, &io)? {
        Found::Valid(od) => {
            if let Some(m) = inv.minor {
                if inv.index != MetaIndex::Internal {
                    LastKnown::delete(m);
                } else {
                    let lk = LastKnown::load(m);
                    let changed = lk.is_none_or(|lk| {
                        lk.size != od.layout.device_bytes || lk.uuid != od.superblock.device_uuid
                    });
                    if changed {
                        device::update_last_known(
                            inv,
                            od.layout.device_bytes,
                            od.superblock.device_uuid,
                        );
                    }
                }
            }
            Ok(0)
        }
        Found::None(why) => {
            if inv.index != MetaIndex::Internal {
                eprintln!("Operation only supported for >= v8 internal meta data");
            } else {
                eprintln!("no suitable meta data found :(");
            }
            Err(Fail::new(1, why))
        }
        Found::AtLastKnown { old_size, .. } => {
            move_internal(inv, &mut io, old_size)?;
            Ok(0)
        }
    }
}

fn move_internal(inv: &Invocation, io: &mut FileIo, old_size: u64) -> Result<(), Fail> {
    eprintln!("Moving the internal meta data to its proper location");
    if inv.opts.dry_run {
        return Ok(());
    }
    let od = md::move_internal(io, old_size).map_err(|e| io_fail(inv, e))?;
    println!("Internal drbd meta data successfully moved.");
    device::update_last_known(inv, od.layout.device_bytes, od.superblock.device_uuid);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_gi_keeps_empty_fields_and_checks_bits() {
        let layout = Layout::new(MetaIndex::Internal, 1 << 30, AlGeometry::default()).unwrap();
        let mut sb = Superblock::new_created(&layout, 0);
        apply_gi("::ABCDEF:0x10:1::1", &mut sb).unwrap();
        assert_eq!(sb.uuids.to_array(), [4, 0, 0xABCDEF, 0x10]);
        assert!(sb.flags.contains(MdFlags::CONSISTENT));
        assert!(sb.flags.contains(MdFlags::PRIMARY_IND));
        assert!(
            sb.flags.contains(MdFlags::AL_CLEAN),
            "other flags untouched"
        );
        let e = apply_gi("1:2:3:4:2", &mut sb).unwrap_err();
        assert_eq!(e.code, 10);
        let e = apply_gi("xyz", &mut sb).unwrap_err();
        assert_eq!(e.code, 10);
    }

    #[test]
    fn lenient_hex_like_strtoull() {
        assert_eq!(strto_u64_hex_lenient("0xAbC"), 0xabc);
        assert_eq!(strto_u64_hex_lenient("12zz"), 0x12);
        assert_eq!(strto_u64_hex_lenient("zz"), 0);
    }
}
