//! The driver's ublk upper layer: `/dev/ublkb<minor>` for each volume of a Primary.
//!
//! - A volume is exposed when the resource becomes Primary (`primary`, or `up` of a node that
//!   ends up Primary) or on an explicit `expose`; the device id is the volume's DRBD minor.
//!   Where the host has no ublk the Primary still works (in-process API, `udrbd write/read`).
//! - Each ublk request arrives as a [`PendingIo`] (through [`serve_dispatch`], so the queue
//!   threads never wait for the engine) and becomes one `Input::Request`; the `PendingIo` is
//!   completed only from the engine's `Output::Complete` for that request, so a write is
//!   reported done exactly when the engine says so (protocol C: local disk and peer).
//! - The device stays while the resource is up. Whenever the role is not Primary its [`Gate`]
//!   fails new I/O at once with EIO: a Secondary never returns (possibly stale) data.
//! - `secondary` and `down` are refused with drbdsetup's "(-12) Device is held open by
//!   someone" while something holds the device exclusively (a mount, device-mapper, an
//!   `O_EXCL` opener). ublk cannot refuse opens as DRBD does, so this is our open count.
//! - `down` first stops the devices (the kernel flushes and drains them through us), then
//!   disconnects and detaches.
//!
//! Stopping a device and the open check run on helper threads: both may make the kernel write
//! back dirty pages through the device, which needs this (the driver) thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::Sender;
use tracing::{error, info, warn};
use udrbd_engine as engine;
use udrbd_engine::{AdminCommand, Input, RequestError, RequestId, RequestOp, Volume};

use super::{refused, Driver, Event};
use crate::control::{Request, Response};
use crate::frontend::{self, DeviceConfig, Errno, Gate, Op, PendingIo, RequestSink, Stopper};

use crate::upper::UBLK_CONTROL;

/// Where the udev rule (ublk-target/udev/65-udrbd.rules) finds who serves `ublkb<N>`: the
/// daemon writes `<dir>/ublkb<N>` before it adds the device. Fixed, whatever the run dir is.
pub const UDEV_DIR: &str = "/run/udrbd/ublk";

/// Requests per queue (the house default; DRBD's own queue has no smaller limit).
const QUEUE_DEPTH: u16 = 128;

/// What the ublk side reports to the driver.
pub enum UblkEvent {
    /// One request from the device of `volume`.
    Io { volume: u16, io: PendingIo },
    /// The device of `volume` exists.
    Started {
        volume: u16,
        generation: u64,
        dev_id: u32,
        stopper: Stopper,
    },
    /// The device of `volume` is gone (stopped, deleted, or never came up: `error`).
    Ended {
        volume: u16,
        generation: u64,
        error: Option<String>,
    },
    /// The answer of the open check before `then` (Secondary or Down).
    OpenChecked {
        held: Option<String>,
        then: Box<Request>,
        reply: Sender<Response>,
    },
}

enum DevState {
    Starting { waiters: Vec<Sender<Response>> },
    Up { dev_id: u32, stopper: Stopper },
    Stopping,
}

struct Dev {
    generation: u64,
    gate: Gate,
    state: DevState,
}

/// The driver's ublk state.
#[derive(Default)]
pub struct Ublk {
    devs: BTreeMap<u16, Dev>,
    /// Engine request id -> the ublk request waiting for it.
    ios: HashMap<u64, PendingIo>,
    next_generation: u64,
    /// `down` waiting for the devices to be gone.
    down_waiting: Option<Sender<Response>>,
    /// "No ublk here" is said once.
    said_unavailable: bool,
    /// Volumes whose device ended or failed while Primary: not re-created automatically
    /// (an explicit `expose` still works) until the next promotion.
    no_auto: std::collections::BTreeSet<u16>,
}

/// Hands requests to the driver thread.
struct DriverSink {
    tx: Sender<Event>,
    volume: u16,
}

impl RequestSink for DriverSink {
    fn submit(&self, io: PendingIo) {
        // If the driver is gone the request comes back and its drop fails it with EIO.
        let _ = self.tx.send(Event::Ublk(UblkEvent::Io {
            volume: self.volume,
            io,
        }));
    }
}

fn ublk_available() -> Result<(), String> {
    if std::path::Path::new(UBLK_CONTROL).exists() {
        Ok(())
    } else {
        Err(format!(
            "{UBLK_CONTROL} not present (ublk_drv not loaded or not available)"
        ))
    }
}

/// One queue per CPU (the kernel maps each CPU's submissions to a queue).
fn queues() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, usize::from(frontend::MAX_QUEUES)) as u16
}

impl Driver {
    pub(super) fn on_ublk(&mut self, ev: UblkEvent) {
        match ev {
            UblkEvent::Io { volume, io } => self.ublk_io(volume, io),
            UblkEvent::Started {
                volume,
                generation,
                dev_id,
                stopper,
            } => {
                let Some(dev) = self
                    .ublk
                    .devs
                    .get_mut(&volume)
                    .filter(|d| d.generation == generation)
                else {
                    let _ = stopper.stop();
                    return;
                };
                let minor = self.minors.get(&volume).copied().unwrap_or(0);
                info!("block drbd{minor}: exposed as /dev/ublkb{dev_id}");
                let old = std::mem::replace(&mut dev.state, DevState::Up { dev_id, stopper });
                if let DevState::Starting { waiters } = old {
                    for w in waiters {
                        let _ = w.send(Response::Exposed {
                            device: format!("/dev/ublkb{dev_id}"),
                        });
                    }
                }
                if self.ublk.down_waiting.is_some() {
                    self.ublk_stop_all();
                }
            }
            UblkEvent::Ended {
                volume,
                generation,
                error,
            } => {
                let Some(dev) = self.ublk.devs.remove_if_generation(volume, generation) else {
                    return;
                };
                let minor = self.minors.get(&volume).copied().unwrap_or(0);
                let _ = std::fs::remove_file(format!("{UDEV_DIR}/ublkb{minor}"));
                self.ublk.no_auto.insert(volume);
                match &error {
                    Some(e) => error!("block drbd{minor}: ublk device: {e}"),
                    None => info!("block drbd{minor}: ublk device removed"),
                }
                if let DevState::Starting { waiters } = dev.state {
                    for w in waiters {
                        let _ = w.send(Response::Error {
                            message: format!(
                                "ublk: {}",
                                error.clone().unwrap_or_else(|| "device ended".into())
                            ),
                        });
                    }
                }
                if self.ublk.devs.is_empty() {
                    if let Some(reply) = self.ublk.down_waiting.take() {
                        self.on_control(Request::Down, reply);
                    }
                }
            }
            UblkEvent::OpenChecked { held, then, reply } => match held {
                Some(who) => {
                    warn!("drbd {}: {who}; refusing {then:?}", self.opts.resource);
                    // SS_DEVICE_IN_USE, as drbdsetup reports it (drbd_strings.c, exit code 11).
                    let _ = reply.send(refused(11, -12, "Device is held open by someone"));
                }
                None => match *then {
                    Request::Secondary => self.admin_cmd(AdminCommand::Secondary, reply),
                    Request::Down => self.ublk_down(reply),
                    other => self.on_control(other, reply),
                },
            },
        }
    }

    /// A ublk request becomes an engine request; the `PendingIo` waits for its completion.
    fn ublk_io(&mut self, volume: u16, io: PendingIo) {
        let primary = self
            .engine
            .as_ref()
            .is_some_and(|e| e.role() == engine::Role::Primary);
        if !primary || !self.minors.contains_key(&volume) {
            // The gate closes after the step that demoted us; requests that slipped past it
            // fail here, before the engine.
            io.complete(Err(Errno::EIO));
            return;
        }
        let r = *io.request();
        let sector = r.offset_bytes / 512;
        let op = match r.op {
            Op::Read => RequestOp::Read {
                sector,
                len_bytes: r.len_bytes,
            },
            Op::Write { fua } => RequestOp::Write {
                sector,
                data: Bytes::copy_from_slice(io.data()),
                fua,
                preflush: false,
            },
            Op::Flush => RequestOp::Flush,
            Op::Discard | Op::WriteZeroes => RequestOp::Discard {
                sector,
                len_bytes: r.len_bytes,
            },
        };
        let id = self.next_request;
        self.next_request += 1;
        self.ublk.ios.insert(id, io);
        self.handle(Input::Request {
            id: RequestId(id),
            volume: Volume(volume),
            op,
        });
    }

    /// Completes the ublk request behind engine request `id`; false if it is not one.
    pub(super) fn ublk_complete(
        &mut self,
        id: u64,
        result: &Result<Option<Bytes>, RequestError>,
    ) -> bool {
        let Some(mut io) = self.ublk.ios.remove(&id) else {
            return false;
        };
        let r = *io.request();
        let done = match (r.op, result) {
            (Op::Read, Ok(Some(data))) if data.len() >= r.len_bytes as usize => {
                io.data_mut().copy_from_slice(&data[..r.len_bytes as usize]);
                Ok(r.len_bytes)
            }
            (Op::Read, Ok(_)) => Err(Errno::EIO),
            (Op::Flush, Ok(_)) => Ok(0),
            (_, Ok(_)) => Ok(r.len_bytes),
            (_, Err(e)) => {
                warn!(
                    "drbd {}: ublk {:?} at {} (+{}) failed: {e:?}",
                    self.opts.resource, r.op, r.offset_bytes, r.len_bytes
                );
                Err(Errno::EIO)
            }
        };
        io.complete(done);
        true
    }

    /// After every step: expose a Primary's volumes, and let only a Primary serve I/O.
    pub(super) fn ublk_after_step(&mut self) {
        let Some(e) = self.engine.as_ref() else {
            return;
        };
        let primary = e.role() == engine::Role::Primary;
        if !primary {
            self.ublk.no_auto.clear();
        }
        for dev in self.ublk.devs.values() {
            match (primary, dev.gate.failing()) {
                (true, Some(_)) => dev.gate.serve(),
                (false, None) => dev.gate.fail_fast(Errno::EIO),
                _ => {}
            }
        }
        if primary && self.ublk.down_waiting.is_none() && self.down_at.is_none() {
            let missing: Vec<u16> = self
                .minors
                .keys()
                .copied()
                .filter(|v| {
                    !self.ublk.devs.contains_key(v)
                        && !self.ublk.no_auto.contains(v)
                        && self.vols.contains_key(v)
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            if let Err(why) = ublk_available() {
                if !self.ublk.said_unavailable {
                    self.ublk.said_unavailable = true;
                    warn!(
                        "drbd {}: not exposing a block device: {why}",
                        self.opts.resource
                    );
                }
                return;
            }
            for v in missing {
                self.ublk_start(v, None);
            }
        }
    }

    /// `expose`: the device of `volume`, started now if it is not there yet.
    pub(super) fn expose(&mut self, volume: u16, reply: Sender<Response>) {
        match self.ublk.devs.get_mut(&volume).map(|d| &mut d.state) {
            Some(DevState::Up { dev_id, .. }) => {
                let _ = reply.send(Response::Exposed {
                    device: format!("/dev/ublkb{dev_id}"),
                });
            }
            Some(DevState::Starting { waiters }) => waiters.push(reply),
            Some(DevState::Stopping) => {
                let _ = reply.send(Response::Error {
                    message: format!("volume {volume}: its ublk device is being stopped"),
                });
            }
            None => {
                if let Err(why) = ublk_available() {
                    let _ = reply.send(Response::Error {
                        message: format!("ublk: {why}"),
                    });
                    return;
                }
                self.ublk_start(volume, Some(reply));
            }
        }
    }

    fn ublk_start(&mut self, volume: u16, reply: Option<Sender<Response>>) {
        let fail = |reply: Option<Sender<Response>>, message: String| {
            if let Some(r) = reply {
                let _ = r.send(Response::Error { message });
            }
        };
        let size = self.engine.as_ref().and_then(|e| {
            e.status()
                .volumes
                .iter()
                .find(|v| v.volume.0 == volume)
                .map(|v| v.size_sectors * 512)
        });
        // ublk wants whole physical blocks; DRBD's size is in 512-byte sectors.
        let Some(size) = size.map(|s| s & !0xfff).filter(|s| *s > 0) else {
            return fail(reply, format!("volume {volume} is not attached"));
        };
        let Some(&minor) = self.minors.get(&volume) else {
            return fail(reply, format!("volume {volume} is not attached"));
        };
        let mut config = DeviceConfig::new(&format!("udrbd:{}", self.opts.resource), size);
        config.dev_id = Some(minor);
        config.nr_queues = queues();
        config.queue_depth = QUEUE_DEPTH;
        if let Err(e) = config.validate() {
            return fail(reply, format!("ublk: {e}"));
        }
        if let Err(e) = write_udev_env(&self.opts.resource, volume, minor) {
            // Only the stable names are missing; the device itself works.
            warn!("drbd {}: {UDEV_DIR}/ublkb{minor}: {e}", self.opts.resource);
        }
        self.ublk.next_generation += 1;
        let generation = self.ublk.next_generation;
        let gate = Gate::default();
        let primary = self
            .engine
            .as_ref()
            .is_some_and(|e| e.role() == engine::Role::Primary);
        if !primary {
            gate.fail_fast(Errno::EIO);
        }
        let sink = Arc::new(DriverSink {
            tx: self.tx.clone(),
            volume,
        });
        let tx = self.tx.clone();
        let thread_gate = gate.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ublkb{minor}"))
            .spawn(move || {
                let started = tx.clone();
                let res = frontend::serve_dispatch(&config, sink, thread_gate, move |id, stop| {
                    let _ = started.send(Event::Ublk(UblkEvent::Started {
                        volume,
                        generation,
                        dev_id: id,
                        stopper: stop,
                    }));
                });
                let _ = tx.send(Event::Ublk(UblkEvent::Ended {
                    volume,
                    generation,
                    error: res.err().map(|e| e.to_string()),
                }));
            });
        if let Err(e) = spawned {
            return fail(reply, format!("ublk: cannot start a thread: {e}"));
        }
        self.ublk.devs.insert(
            volume,
            Dev {
                generation,
                gate,
                state: DevState::Starting {
                    waiters: reply.into_iter().collect(),
                },
            },
        );
    }

    /// `secondary` / `down`: refused while a device is held open, else carried on.
    /// Returns false when there is no device to check (the caller goes on as before).
    pub(super) fn ublk_check_open(&mut self, then: Request, reply: Sender<Response>) -> bool {
        let devices: Vec<u32> = self
            .ublk
            .devs
            .values()
            .filter_map(|d| match d.state {
                DevState::Up { dev_id, .. } => Some(dev_id),
                _ => None,
            })
            .collect();
        if devices.is_empty() {
            if matches!(then, Request::Down) && !self.ublk.devs.is_empty() {
                // Still starting: wait for it, then stop it.
                self.ublk_down(reply);
                return true;
            }
            return false;
        }
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let held = devices.iter().find_map(|id| held_open(*id));
            let then = Box::new(then);
            let _ = tx.send(Event::Ublk(UblkEvent::OpenChecked { held, then, reply }));
        });
        true
    }

    /// Stops every device; `down` goes on when the last one has ended.
    fn ublk_down(&mut self, reply: Sender<Response>) {
        if self.ublk.devs.is_empty() {
            self.on_control(Request::Down, reply);
            return;
        }
        self.ublk.down_waiting = Some(reply);
        self.ublk_stop_all();
    }

    fn ublk_stop_all(&mut self) {
        for dev in self.ublk.devs.values_mut() {
            if let DevState::Up { .. } = dev.state {
                if let DevState::Up { stopper, dev_id } =
                    std::mem::replace(&mut dev.state, DevState::Stopping)
                {
                    // Stopping makes the kernel drain the device through us.
                    std::thread::spawn(move || {
                        if let Err(e) = stopper.stop() {
                            error!("ublkb{dev_id}: stop: {e}");
                        }
                    });
                }
            }
        }
    }

    /// True while `down` waits for the devices.
    pub(super) fn ublk_down_pending(&self) -> bool {
        self.ublk.down_waiting.is_some()
    }
}

trait RemoveIfGeneration {
    fn remove_if_generation(&mut self, volume: u16, generation: u64) -> Option<Dev>;
}

impl RemoveIfGeneration for BTreeMap<u16, Dev> {
    fn remove_if_generation(&mut self, volume: u16, generation: u64) -> Option<Dev> {
        if self.get(&volume)?.generation == generation {
            self.remove(&volume)
        } else {
            None
        }
    }
}

/// Who holds `/dev/ublkb<id>` exclusively (mounted, device-mapper, an `O_EXCL` opener), or
/// None. An exclusive open fails with EBUSY exactly then.
fn held_open(dev_id: u32) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/dev/ublkb{dev_id}");
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(_) => None,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            Some(format!("{path} is held open (mounted or in use)"))
        }
        // Gone or not openable: nobody holds it through us.
        Err(_) => None,
    }
}

/// The udev environment of `/dev/ublkb<minor>`: resource, volume, and a serial and WWN
/// derived from them only, so they are the same on every node and across restarts.
pub fn udev_env(resource: &str, volume: u16, minor: u32) -> String {
    format!(
        "UDRBD_RESOURCE={resource}\nUDRBD_VOLUME={volume}\nUDRBD_MINOR={minor}\n\
         UDRBD_SERIAL=udrbd-{resource}-{volume}\nUDRBD_WWN=0x{:016x}\n",
        wwn(resource, volume)
    )
}

/// NAA 3 ("locally assigned", 64 bits): 0x3 then 60 bits of FNV-1a over resource and volume.
fn wwn(resource: &str, volume: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in resource
        .bytes()
        .chain([b'/'])
        .chain(volume.to_string().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (3 << 60) | (h >> 4)
}

fn write_udev_env(resource: &str, volume: u16, minor: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(UDEV_DIR)?;
    let path = format!("{UDEV_DIR}/ublkb{minor}");
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, udev_env(resource, volume, minor))?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udev_env_is_stable_and_names_the_resource() {
        let a = udev_env("r0", 0, 3);
        assert_eq!(a, udev_env("r0", 0, 3));
        assert!(a.contains("UDRBD_RESOURCE=r0\n"), "{a}");
        assert!(a.contains("UDRBD_VOLUME=0\n"), "{a}");
        assert!(a.contains("UDRBD_SERIAL=udrbd-r0-0\n"), "{a}");
        // The WWN depends on resource and volume, not on the minor (the device number).
        let wwn_line = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("UDRBD_WWN=0x3"))
                .map(str::to_owned)
        };
        assert_eq!(wwn_line(&a), wwn_line(&udev_env("r0", 0, 7)));
        assert_ne!(wwn_line(&a), wwn_line(&udev_env("r0", 1, 3)));
        assert_ne!(wwn_line(&a), wwn_line(&udev_env("r1", 0, 3)));
        assert_eq!(
            wwn_line(&a).map(|l| l.len()),
            Some("UDRBD_WWN=0x".len() + 16)
        );
    }
}
