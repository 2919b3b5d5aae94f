//! The udrbd VM lab: a qemu guest running Debian's 6.12 kernel, which has kernel DRBD 8.4.11
//! and `ublk_drv`, driven from ordinary `cargo test` tests.
//!
//! The guest sees the host's `/` read-only (virtio-9p under a tmpfs overlay), so every host tool
//! (drbdadm, fio, tcpdump) and every binary cargo built runs there unchanged, plus one
//! read-write results folder mounted on `/out`. It has no network card: all DRBD traffic stays
//! on the guest's own `lo`.
//!
//! What this crate never does: install a kernel on the host (the Debian package is unpacked
//! into a cache folder with `dpkg-deb -x`), touch `/boot`, or reach any network but apt's.
//!
//! Calling contract:
//! 1. [`Lab::get`] checks the host tools, fetches and unpacks the kernel, builds the initramfs
//!    (all cached under [`cache_root`], keyed by kernel version, under a file lock), and picks
//!    KVM or TCG. It returns [`LabError::Unavailable`] naming the missing piece.
//! 2. [`Lab::run`] (or [`Lab::guest`] for options) boots a guest, runs a bash script in it, and
//!    returns a [`RunOutput`]: exit status, the script's log, the guest's dmesg, `/out`.
//! 3. Scripts get the helpers in `src/prelude.sh` (`check`, `wait_for`, `section`); several
//!    `check`s share one boot and are reported one by one by [`RunOutput::checks`].
//!
//! ```no_run
//! let lab = udrbd_interop_tests::lab_or_skip!();
//! let out = lab.run("check drbd-loads modprobe drbd").unwrap();
//! out.assert_success();
//! ```

mod cpio;
mod guest;
mod host;
mod kernel;
pub mod pcap;

pub use guest::{Accel, Check, GuestBuilder, RunOutput};
pub use host::{build_workspace_bin, in_ci};
pub use kernel::{cache_root, KernelImage};

use std::path::PathBuf;
use std::sync::OnceLock;

/// The committed kernel captures (made by tests/make_captures.rs) and how they were made.
pub mod captures {
    /// Kernel 8.4.11 pair: connect over 127.0.0.1, `primary --force`, first seconds of resync.
    pub const CONNECT_RESYNC: &str = "kernel84-connect-resync";
    /// The same with `cram-hmac-alg sha1; shared-secret` [`AUTH_SECRET`].
    pub const CONNECT_RESYNC_AUTH_SHA1: &str = "kernel84-connect-resync-auth-sha1";
    /// The shared secret of the auth capture (a test value, committed on purpose).
    pub const AUTH_SECRET: &str = "udrbd-lab-secret";
    /// Size of each side's backing device in MiB (internal meta-data at its end).
    pub const BACKING_MIB: u64 = 16;

    /// The fixture's path in the source tree.
    pub fn path(name: &str) -> std::path::PathBuf {
        crate::manifest_dir()
            .join("captures")
            .join(format!("{name}.pcap"))
    }
}

/// Shell helpers for a pair of kernel DRBD resources in one guest (see the file's header).
pub const DRBD_PAIR_SH: &str = include_str!("../scripts/drbd-pair.sh");

/// Why the lab could not start or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Something the lab needs is missing on this host; the text names it.
    #[error("VM lab unavailable: {0}")]
    Unavailable(String),
    /// A host command failed.
    #[error("{what}: {detail}")]
    Command {
        /// The command and what it was for.
        what: String,
        /// Its exit status and stderr.
        detail: String,
    },
    /// File-system trouble in the cache or a results folder.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The guest did not finish in time and was killed; its console is kept in `out_dir`.
    #[error("guest timed out after {secs} s and was killed (console: {out_dir}/console.log)")]
    Timeout {
        /// The limit that was hit.
        secs: u64,
        /// The run's results folder.
        out_dir: PathBuf,
    },
    /// The guest stopped without the script reporting an exit status.
    #[error("guest ended without running the script to its end: {detail}")]
    GuestDied {
        /// The tail of the console log.
        detail: String,
    },
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}

/// A prepared lab: kernel, modules, initramfs and the accelerator to use.
#[derive(Debug)]
pub struct Lab {
    kernel: KernelImage,
    accel: Accel,
}

static LAB: OnceLock<Result<Lab, String>> = OnceLock::new();

impl Lab {
    /// Prepares the lab once per process (later calls reuse it, or its error).
    pub fn get() -> Result<&'static Lab, LabError> {
        let lab = LAB.get_or_init(|| Lab::prepare().map_err(|e| e.to_string()));
        lab.as_ref().map_err(|e| LabError::Unavailable(e.clone()))
    }

    fn prepare() -> Result<Lab, LabError> {
        host::require_tools()?;
        let kernel = kernel::prepare()?;
        let accel = guest::choose_accel(&kernel)?;
        Ok(Lab { kernel, accel })
    }

    /// The kernel the guests boot.
    pub fn kernel(&self) -> &KernelImage {
        &self.kernel
    }

    /// KVM or TCG, as probed.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// A guest with default settings (2 vCPUs, 2 GiB, 300 s time-out).
    pub fn guest(&self) -> GuestBuilder<'_> {
        GuestBuilder::new(self)
    }

    /// Boots a default guest and runs `script` (bash) in it.
    pub fn run(&self, script: &str) -> Result<RunOutput, LabError> {
        self.guest().run(script)
    }
}

/// This crate's folder: cargo's run-time CARGO_MANIFEST_DIR, else the compile-time one (which
/// a build from another checkout sharing the target dir may have baked in).
pub(crate) fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Tells the user a lab test was skipped, bypassing libtest's output capture (which would
/// hide an `eprintln!` of a passing test).
pub fn skip_notice(e: &LabError) {
    use std::io::Write;
    let text = format!("\n!!! SKIPPED (not CI; CI=true would fail): {e}\n");
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Gets the [`Lab`], or handles its absence: panics under `CI=true` (a lab test must not
/// silently pass there), otherwise prints why loudly and returns from the calling test.
#[macro_export]
macro_rules! lab_or_skip {
    () => {
        match $crate::Lab::get() {
            Ok(lab) => lab,
            Err(e) if $crate::in_ci() => panic!("CI=true and the VM lab cannot start: {e}"),
            Err(e) => {
                $crate::skip_notice(&e);
                return;
            }
        }
    };
}
