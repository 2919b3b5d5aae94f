//! The verbs that drive a udrbd node (everything but `dump`).
//!
//! The CLI front end (`udrbdadm`) parses the command line and the configuration, then calls
//! [`run`] once per invocation. Each verb does to the resource's udrbd daemon what drbdadm makes
//! drbdsetup/drbdmeta do to the kernel (spec drbd-config-and-tools.md §2); see `client.rs`.

use std::process::ExitCode;

use udrbd::control::{DiskOptions, NetOptions, Request};
use udrbd_config::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Fencing, MetaDisk, Protocol, RrConflict,
};

// The CLI's module file lists only `verbs`; the daemon-facing half lives beside it.
#[path = "client.rs"]
pub mod client;

use self::client::{AdmEnv, ResourcePlan, VerbError, VolumePlan};
use super::{AdmError, Context, ErrorKind, Target, Verb};

/// Runs `verb` on the resources named in `ctx.targets`.
pub fn run(ctx: &Context, verb: &Verb) -> Result<ExitCode, AdmError> {
    let env = AdmEnv::from_env(None, ctx.args.dry_run);
    let mut worst: u8 = 0;
    for t in &ctx.targets {
        let plan = plan(t)?;
        if let Err(e) = run_one(ctx, &env, t, &plan, *verb) {
            eprintln!("{}", e.message);
            worst = worst.max(e.exit_code);
        }
    }
    Ok(ExitCode::from(worst))
}

fn vols(t: &Target) -> Vec<u16> {
    match t.volume {
        Some(v) => vec![v],
        None => t.resource.volumes().iter().map(|v| v.number).collect(),
    }
}

fn run_one(
    ctx: &Context,
    env: &AdmEnv,
    t: &Target,
    plan: &ResourcePlan,
    verb: Verb,
) -> Result<(), VerbError> {
    let res = plan.name.as_str();
    let minor = |v: u16| t.resource.volume(v).map(|x| x.minor).unwrap_or(0);
    let mut out = std::io::stdout();
    let only = |plan: &ResourcePlan| match t.volume {
        Some(v) => ResourcePlan {
            volumes: plan
                .volumes
                .iter()
                .filter(|x| x.volume == v)
                .cloned()
                .collect(),
            ..plan.clone()
        },
        None => plan.clone(),
    };
    match verb {
        Verb::CreateMd => {
            let mut extra = ctx.args.extra.clone();
            if ctx.args.force {
                extra.push("--force".into());
            }
            client::create_md(env, &only(plan), &extra)
        }
        Verb::Up => client::up(env, plan),
        Verb::Adjust => client::adjust(env, plan),
        Verb::Down => client::down(env, res),
        Verb::Attach => client::attach(env, &only(plan)),
        Verb::Connect => client::connect_net(env, plan, ctx.args.discard_my_data),
        Verb::Detach => {
            for v in vols(t) {
                client::simple(
                    env,
                    res,
                    &format!("drbdsetup detach {}", minor(v)),
                    Request::Detach { volume: v },
                )?;
            }
            Ok(())
        }
        Verb::Disconnect => client::simple(
            env,
            res,
            &format!("drbdsetup disconnect {res}"),
            Request::Disconnect,
        ),
        Verb::Primary => {
            let what = format!(
                "drbdsetup primary {}{}",
                minor(vols(t)[0]),
                if ctx.args.force { " --force" } else { "" }
            );
            client::simple(
                env,
                res,
                &what,
                Request::Primary {
                    force: ctx.args.force,
                },
            )
        }
        Verb::Secondary => client::simple(
            env,
            res,
            &format!("drbdsetup secondary {}", minor(vols(t)[0])),
            Request::Secondary,
        ),
        Verb::Invalidate => {
            for v in vols(t) {
                client::simple(
                    env,
                    res,
                    &format!("drbdsetup invalidate {}", minor(v)),
                    Request::Invalidate { volume: v },
                )?;
            }
            Ok(())
        }
        Verb::InvalidateRemote => {
            for v in vols(t) {
                let what = format!("drbdsetup invalidate-remote {}", minor(v));
                client::simple(env, res, &what, Request::InvalidateRemote { volume: v })?;
            }
            Ok(())
        }
        Verb::NewCurrentUuid => {
            let Some(v) = t.volume.or_else(|| {
                (t.resource.volumes().len() == 1).then(|| t.resource.volumes()[0].number)
            }) else {
                return Err(VerbError {
                    message: format!("{res}: new-current-uuid needs a volume (RES/VOL)"),
                    exit_code: 1,
                });
            };
            let what = format!(
                "drbdsetup new-current-uuid {}{}",
                minor(v),
                if ctx.args.clear_bitmap {
                    " --clear-bitmap"
                } else {
                    ""
                }
            );
            client::simple(
                env,
                res,
                &what,
                Request::NewCurrentUuid {
                    volume: v,
                    clear_bitmap: ctx.args.clear_bitmap,
                },
            )
        }
        Verb::WaitConnect => {
            let timeout_s = t.resource.startup.wfc_timeout_s as u64;
            client::wait(env, res, Request::WaitConnect { timeout_s })
        }
        Verb::Status => client::status(
            env,
            res,
            ctx.args.verbose || ctx.args.extra.iter().any(|e| e == "--verbose"),
            ctx.args.extra.iter().any(|e| e == "--statistics"),
            &mut out,
        ),
        Verb::Role => client::query(env, res, "role", &mut out),
        Verb::Cstate => client::query(env, res, "cstate", &mut out),
        Verb::Dstate => client::query(env, res, "dstate", &mut out),
        Verb::Events2 => {
            let now = ctx.args.extra.iter().any(|e| e == "--now");
            let stats = ctx.args.extra.iter().any(|e| e == "--statistics");
            client::events2(env, res, now, stats, &mut out)
        }
        Verb::Dump => Ok(()),
    }
}

/// This host's view of a resource, as the daemon needs it.
pub fn plan(t: &Target) -> Result<ResourcePlan, AdmError> {
    let r = &t.resource;
    let bad = |m: String| AdmError::new(ErrorKind::ConfigInvalid, m);
    let local = r.local.address.socket_addr();
    let peer = r.peer.as_ref().and_then(|p| p.address.socket_addr());
    let mut volumes = Vec::new();
    for v in r.volumes() {
        let (meta_disk, meta_index) = match &v.meta_disk {
            MetaDisk::Internal => (None, None),
            MetaDisk::FlexExternal(d) => (Some(d.into()), None),
            MetaDisk::Indexed { device, index } => (
                Some(device.into()),
                Some(u8::try_from(*index).map_err(|_| {
                    bad(format!("{}: meta-disk index {index} out of range", r.name))
                })?),
            ),
        };
        volumes.push(VolumePlan {
            volume: v.number,
            minor: v.minor,
            disk: v.disk.clone().into(),
            meta_disk,
            meta_index,
        });
    }
    let n = &r.net;
    let net = NetOptions {
        protocol: match n.protocol {
            Protocol::A => 'A',
            Protocol::B => 'B',
            Protocol::C => 'C',
        },
        cram_hmac_alg: n.cram_hmac_alg.clone(),
        shared_secret: n.shared_secret.clone(),
        after_sb_0pri: match n.after_sb_0pri {
            AfterSb0Pri::Disconnect => "disconnect",
            AfterSb0Pri::DiscardYoungerPrimary => "discard-younger-primary",
            AfterSb0Pri::DiscardOlderPrimary => "discard-older-primary",
            AfterSb0Pri::DiscardZeroChanges => "discard-zero-changes",
            AfterSb0Pri::DiscardLeastChanges => "discard-least-changes",
            AfterSb0Pri::DiscardLocal => "discard-local",
            AfterSb0Pri::DiscardRemote => "discard-remote",
        }
        .into(),
        after_sb_1pri: match n.after_sb_1pri {
            AfterSb1Pri::Disconnect => "disconnect",
            AfterSb1Pri::Consensus => "consensus",
            AfterSb1Pri::DiscardSecondary => "discard-secondary",
            AfterSb1Pri::CallPriLostAfterSb => "call-pri-lost-after-sb",
            AfterSb1Pri::ViolentlyAs0p => "violently-as0p",
        }
        .into(),
        after_sb_2pri: match n.after_sb_2pri {
            AfterSb2Pri::Disconnect => "disconnect",
            AfterSb2Pri::CallPriLostAfterSb => "call-pri-lost-after-sb",
            AfterSb2Pri::ViolentlyAs0p => "violently-as0p",
        }
        .into(),
        rr_conflict: match n.rr_conflict {
            RrConflict::Disconnect => "disconnect",
            RrConflict::CallPriLost => "call-pri-lost",
            RrConflict::Violently => "violently",
        }
        .into(),
        allow_two_primaries: n.allow_two_primaries,
        always_asbp: n.always_asbp,
        data_integrity_alg: n.data_integrity_alg.clone(),
        verify_alg: n.verify_alg.clone(),
        csums_alg: n.csums_alg.clone(),
        ping_int_s: n.ping_int_s,
        ping_timeout_ds: n.ping_timeout_ds,
        timeout_ds: n.timeout_ds,
        ko_count: n.ko_count,
        connect_int_s: n.connect_int_s,
        max_buffers: n.max_buffers,
        max_epoch_size: n.max_epoch_size,
        sndbuf_size: u64::from(n.sndbuf_size_bytes),
        rcvbuf_size: u64::from(n.rcvbuf_size_bytes),
        socket_check_timeout_ds: n.socket_check_timeout_ds,
        use_rle: n.use_rle,
        discard_my_data: false,
    };
    // 8.4 keeps disk options per volume; the daemon takes the first volume's (they are the
    // resource's unless a volume overrides them).
    let d = r
        .volumes()
        .first()
        .map(|v| &v.disk_options)
        .unwrap_or(&r.disk);
    let disk = DiskOptions {
        resync_rate_kib: d.resync_rate_kib,
        c_plan_ahead_ds: d.c_plan_ahead_ds,
        c_delay_target_ds: d.c_delay_target_ds,
        c_fill_target_sect: d.c_fill_target_sectors,
        c_max_rate_kib: d.c_max_rate_kib,
        al_extents: d.al_extents,
        fencing: match d.fencing {
            Fencing::DontCare => "dont-care",
            Fencing::ResourceOnly => "resource-only",
            Fencing::ResourceAndStonith => "resource-and-stonith",
        }
        .into(),
        size_sect: d.size_sectors,
    };
    Ok(ResourcePlan {
        name: r.name.clone(),
        volumes,
        local,
        peer,
        net,
        disk,
    })
}
