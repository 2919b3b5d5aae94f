//! Host-side checks: tools on PATH, apt as a fallback, building workspace binaries for guests.

use crate::LabError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the lab runs on the host or in the guest (which sees the host's root), and the Debian
/// package that provides it. scripts/setup.sh installs all of them.
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("drbdadm", "drbd-utils"),
    ("fio", "fio"),
    ("tcpdump", "tcpdump"),
    ("depmod", "kmod"),
    ("xz", "xz-utils"),
    ("ip", "iproute2"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
];

/// True when the environment says we run in CI (`CI=true`, as CI systems set it).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds `tool` on PATH or in the sbin folders (tests may run with a user PATH).
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file());
    found
}

fn missing_packages() -> Vec<&'static str> {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|&(_, pkg)| pkg)
        .collect();
    // The initramfs needs the static busybox; the dynamic one cannot run before the switch.
    if !is_static_busybox() && !missing.contains(&"busybox-static") {
        missing.push("busybox-static");
    }
    missing
}

pub(crate) fn busybox_path() -> PathBuf {
    PathBuf::from("/bin/busybox")
}

fn is_static_busybox() -> bool {
    // A static ELF has no PT_INTERP; looking for the interpreter path string is enough here.
    match std::fs::read(busybox_path()) {
        Ok(bytes) => !bytes.windows(14).any(|w| w == b"/lib64/ld-linu"),
        Err(_) => false,
    }
}

/// Makes sure the host tools exist, installing missing ones with apt as a fallback (root only).
pub(crate) fn require_tools() -> Result<(), LabError> {
    let missing = missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || which("apt-get").is_none() {
        return Err(LabError::Unavailable(format!(
            "missing packages {} (run scripts/setup.sh)",
            missing.join(" ")
        )));
    }
    eprintln!(
        "udrbd-lab: installing missing packages with apt: {}",
        missing.join(" ")
    );
    let _lock = crate::kernel::FileLock::take(&crate::kernel::cache_root()?.join("apt.lock"))?;
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        install();
    }
    let still = missing_packages();
    if still.is_empty() {
        Ok(())
    } else {
        Err(LabError::Unavailable(format!(
            "missing packages {} and apt-get install did not provide them",
            still.join(" ")
        )))
    }
}

/// Runs a host command, turning a failure into [`LabError::Command`] with its stderr.
pub(crate) fn run(what: &str, cmd: &mut Command) -> Result<std::process::Output, LabError> {
    let out = cmd.output().map_err(|e| LabError::Command {
        what: what.to_owned(),
        detail: format!("cannot start {:?}: {e}", cmd.get_program()),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// Builds `bin` of workspace package `package` in release mode and returns its path; once per
/// process (tests in one binary share the result).
///
/// The test calling this runs inside `cargo test`, which does not hold the build lock while
/// tests run, so this uses the same target dir as the test binary and reuses its artifacts.
pub fn build_workspace_bin(package: &str, bin: &str) -> Result<PathBuf, LabError> {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    // Held across the build so a second test asking for the same binary waits for the first.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(b, _)| b == bin) {
        return Ok(path.clone());
    }
    let path = cargo_build_bin(package, bin)?;
    built.push((bin.to_owned(), path.clone()));
    Ok(path)
}

fn cargo_build_bin(package: &str, bin: &str) -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().map_err(LabError::io("current_exe"))?;
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(Path::parent).ok_or_else(|| {
        LabError::Unavailable(format!(
            "cannot find the cargo target dir from {}",
            exe.display()
        ))
    })?;
    let target_dir = profile_dir.parent().unwrap_or(profile_dir);
    let manifest_dir = crate::manifest_dir();
    let workspace = manifest_dir.parent().unwrap_or(Path::new("."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // --workspace: resolve features as `cargo test --workspace` (CI) does, so the artifacts
    // that run already built are reused instead of rebuilt with other features.
    let what = format!("cargo build --release --workspace --bin {bin} (package {package})");
    eprintln!("udrbd-lab: {what} (target dir {})", target_dir.display());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--workspace", "--bin", bin])
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .map_err(|e| LabError::Command {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if !status.success() {
        return Err(LabError::Command {
            what,
            detail: status.to_string(),
        });
    }
    let path = target_dir.join("release").join(bin);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::Command {
            what,
            detail: format!("{} was not produced", path.display()),
        })
    }
}
