//! Booting a guest and running one script in it.

use crate::{KernelImage, Lab, LabError};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the guest's vCPUs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation; only chosen when a probe boot actually ran.
    Kvm,
    /// QEMU's software emulation (one emulator thread: multi-threaded TCG oopsed 1 boot in 21).
    Tcg,
}

/// Guests run one at a time per process: the host has few cores and each guest wants two.
static ONE_GUEST: Mutex<()> = Mutex::new(());
static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

/// Options for one boot.
#[derive(Debug)]
pub struct GuestBuilder<'a> {
    lab: &'a Lab,
    cpus: u32,
    mem_mib: u32,
    timeout: Duration,
    name: String,
}

impl<'a> GuestBuilder<'a> {
    pub(crate) fn new(lab: &'a Lab) -> Self {
        GuestBuilder {
            lab,
            cpus: 2,
            mem_mib: 2048,
            timeout: Duration::from_secs(300),
            name: "run".into(),
        }
    }

    /// vCPUs (default 2).
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Guest memory in MiB (default 2048).
    pub fn mem_mib(mut self, mib: u32) -> Self {
        self.mem_mib = mib;
        self
    }

    /// Wall-clock limit for the whole boot; the guest is killed by pid when it passes.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// A label for the results folder (e.g. the test's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        self
    }

    /// Boots, runs `script` with bash (after the helpers of src/prelude.sh), powers off.
    pub fn run(self, script: &str) -> Result<RunOutput, LabError> {
        let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
        let out_dir = new_out_dir(&self.lab.kernel.dir, &self.name)?;
        let mut full = String::from(include_str!("prelude.sh"));
        full.push_str("\n# ---- test script ----\n");
        full.push_str(script);
        full.push('\n');
        write(&out_dir.join("script.sh"), &full)?;
        write(&out_dir.join("stage2.sh"), include_str!("stage2.sh"))?;
        boot(&self.lab.kernel, self.lab.accel, &self, &out_dir)
    }
}

/// What a run left behind.
#[derive(Debug)]
pub struct RunOutput {
    /// The script's exit status (1 too when a `check` failed).
    pub status: i32,
    /// The script's stdout and stderr.
    pub log: String,
    /// The guest kernel's log at the end of the run.
    pub dmesg: String,
    /// The serial console (boot messages, init's notes).
    pub console: String,
    /// The run's /out folder on the host; the script may leave files there.
    pub out_dir: PathBuf,
    /// Wall time from starting qemu to its exit.
    pub wall: Duration,
    /// How the guest ran.
    pub accel: Accel,
}

/// One `check NAME CMD` line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The name given to `check`.
    pub name: String,
    /// Whether the command succeeded.
    pub passed: bool,
}

impl RunOutput {
    /// The checks the script reported, in order.
    pub fn checks(&self) -> Vec<Check> {
        self.log
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("VMLAB_CHECK ")?.split_whitespace();
                let name = w.next()?.to_owned();
                Some(Check {
                    name,
                    passed: w.next()? == "pass",
                })
            })
            .collect()
    }

    /// True when a check called `name` ran and passed.
    pub fn passed(&self, name: &str) -> bool {
        self.checks().iter().any(|c| c.name == name && c.passed)
    }

    /// Panics, with the log and the dmesg tail, unless the script exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.status == 0,
            "guest script failed with status {}\n{}",
            self.status,
            self.report()
        );
    }

    /// Panics unless each named check ran and passed.
    pub fn assert_checks(&self, names: &[&str]) {
        let missing: Vec<&str> = names.iter().copied().filter(|n| !self.passed(n)).collect();
        assert!(
            missing.is_empty(),
            "checks not passed: {missing:?}\n{}",
            self.report()
        );
    }

    /// The script log, the checks and the last lines of dmesg, for failure messages.
    pub fn report(&self) -> String {
        let mut s = format!(
            "--- guest ({:?}, {:.1} s wall, results in {}) log:\n{}\n--- checks:\n",
            self.accel,
            self.wall.as_secs_f64(),
            self.out_dir.display(),
            self.log
        );
        for c in self.checks() {
            let _ = writeln!(s, "  {} {}", if c.passed { "pass" } else { "FAIL" }, c.name);
        }
        let tail: Vec<&str> = self.dmesg.lines().rev().take(40).collect();
        s.push_str("--- dmesg (last 40 lines):\n");
        for l in tail.into_iter().rev() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// A file the script left in /out.
    pub fn out_file(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    fs::write(path, text).map_err(LabError::io(path))
}

/// `<kernel cache>/runs/<name>-<pid>-<n>`, fresh. Earlier runs of this name by processes that
/// are gone are removed, so the cache keeps only the latest results of each test.
fn new_out_dir(kernel_dir: &Path, name: &str) -> Result<PathBuf, LabError> {
    let runs = kernel_dir.join("runs");
    if let Ok(entries) = fs::read_dir(&runs) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = file.strip_prefix(&format!("{name}-")) else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or("");
            let alive = pid.parse::<u32>().is_ok() && Path::new("/proc").join(pid).exists();
            if !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let n = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = runs.join(format!("{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
    Ok(dir)
}

fn qemu_command(
    kernel: &KernelImage,
    accel: Accel,
    cpus: u32,
    mem_mib: u32,
    out_dir: &Path,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    match accel {
        // -cpu host: a host whose KVM cannot run this kernel fails the probe at once.
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-accel", "tcg,thread=single,tb-size=512", "-cpu", "max"]),
    };
    let append = format!(
        "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init tsc=reliable no_timer_check \
         vmlab.kmod={}",
        kernel.modules_dir.display()
    );
    cmd.args([
        "-machine",
        "q35",
        "-m",
        &mem_mib.to_string(),
        "-smp",
        &cpus.to_string(),
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", out_dir.join("console.log").display()))
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&kernel.initramfs)
    .args(["-append", &append])
    .args([
        "-fsdev",
        "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
    ])
    .args(["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"])
    .arg("-fsdev")
    .arg(format!(
        "local,id=out,path={},security_model=none,multidevs=remap",
        out_dir.display()
    ))
    .args(["-device", "virtio-9p-pci,fsdev=out,mount_tag=out"])
    .stdin(Stdio::null())
    .stdout(Stdio::null());
    cmd
}

fn boot(
    kernel: &KernelImage,
    accel: Accel,
    opts: &GuestBuilder<'_>,
    out_dir: &Path,
) -> Result<RunOutput, LabError> {
    let stderr_path = out_dir.join("qemu.stderr");
    let stderr = fs::File::create(&stderr_path).map_err(LabError::io(&stderr_path))?;
    let mut cmd = qemu_command(kernel, accel, opts.cpus, opts.mem_mib, out_dir);
    cmd.stderr(stderr);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| LabError::Unavailable(format!("cannot start qemu-system-x86_64: {e}")))?;
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(LabError::io(out_dir)(e)),
        }
        if start.elapsed() > opts.timeout {
            // Child::kill sends SIGKILL to this pid only.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed();
    let read = |name: &str| fs::read_to_string(out_dir.join(name)).unwrap_or_default();
    let console =
        String::from_utf8_lossy(&fs::read(out_dir.join("console.log")).unwrap_or_default())
            .into_owned();
    if exit.is_none() {
        return Err(LabError::Timeout {
            secs: opts.timeout.as_secs(),
            out_dir: out_dir.to_owned(),
        });
    }
    let status = match read("rc").trim().parse::<i32>() {
        Ok(s) => s,
        Err(_) => {
            let tail: Vec<&str> = console.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(LabError::GuestDied {
                detail: format!(
                    "qemu {:?}; stderr: {}; console tail:\n{}",
                    exit,
                    read("qemu.stderr").trim(),
                    tail.join("\n")
                ),
            });
        }
    };
    Ok(RunOutput {
        status,
        log: String::from_utf8_lossy(&fs::read(out_dir.join("log")).unwrap_or_default())
            .into_owned(),
        dmesg: read("dmesg"),
        console,
        out_dir: out_dir.to_owned(),
        wall,
        accel,
    })
}

/// KVM when `/dev/kvm` opens and a probe guest boots to its shell under it; TCG otherwise.
/// `UDRBD_LAB_ACCEL=kvm|tcg` overrides. The probe's verdict is cached per host kernel.
pub(crate) fn choose_accel(kernel: &KernelImage) -> Result<Accel, LabError> {
    match std::env::var("UDRBD_LAB_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    if fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok(Accel::Tcg);
    }
    let host_release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let verdict_path = kernel
        .dir
        .join(format!("accel-probe-{}", host_release.trim()));
    if let Ok(v) = fs::read_to_string(&verdict_path) {
        return Ok(if v.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    let accel = if probe_kvm(kernel) {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let _ = fs::write(
        &verdict_path,
        if accel == Accel::Kvm {
            "kvm\n"
        } else {
            "tcg\n"
        },
    );
    eprintln!(
        "udrbd-lab: KVM probe says {accel:?} (cached in {})",
        verdict_path.display()
    );
    Ok(accel)
}

/// Boots `true` under KVM with a short limit. Where KVM cannot run a stock kernel (e.g. a
/// nested PVM host) qemu either exits at once or the guest never reaches its shell.
fn probe_kvm(kernel: &KernelImage) -> bool {
    let Ok(out_dir) = new_out_dir(&kernel.dir, "kvm-probe") else {
        return false;
    };
    let ok = write(&out_dir.join("script.sh"), "true\n").is_ok()
        && write(&out_dir.join("stage2.sh"), include_str!("stage2.sh")).is_ok();
    if !ok {
        return false;
    }
    let mut cmd = qemu_command(kernel, Accel::Kvm, 1, 512, &out_dir);
    cmd.stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let ran = fs::read_to_string(out_dir.join("rc")).is_ok_and(|rc| rc.trim() == "0");
    let _ = fs::remove_dir_all(&out_dir);
    ran
}
