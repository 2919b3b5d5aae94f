//! What udrbdadm's verbs do to a udrbd daemon: start it when needed, then speak its control
//! socket (the daemon's equivalent of drbdsetup's netlink calls). Independent of how the command
//! line and drbd.conf were parsed: callers hand in a [`ResourcePlan`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use udrbd::control::{self, Client, DiskOptions, NetOptions, Request, Response};
use udrbd::status::StatusSnapshot;

/// One resource as this host sees it, resolved from drbd.conf.
#[derive(Debug, Clone)]
pub struct ResourcePlan {
    pub name: String,
    pub volumes: Vec<VolumePlan>,
    /// None when the resource has no peer on another host (then `connect` is refused).
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub net: NetOptions,
    pub disk: DiskOptions,
}

#[derive(Debug, Clone)]
pub struct VolumePlan {
    pub volume: u16,
    pub minor: u32,
    pub disk: PathBuf,
    /// `internal`, or the external meta-data device.
    pub meta_disk: Option<PathBuf>,
    /// For external meta-data: None = flexible, Some(i) = indexed slot.
    pub meta_index: Option<u8>,
}

impl VolumePlan {
    fn meta_path(&self) -> &Path {
        self.meta_disk.as_deref().unwrap_or(&self.disk)
    }
    /// drbdmeta's index argument.
    pub fn meta_index_arg(&self) -> String {
        match (&self.meta_disk, self.meta_index) {
            (None, _) => "internal".into(),
            (Some(_), None) => "flex-external".into(),
            (Some(_), Some(i)) => i.to_string(),
        }
    }
    fn kernel_index(&self) -> Option<i32> {
        match (&self.meta_disk, self.meta_index) {
            (None, _) => None,
            (Some(_), None) => Some(-2),
            (Some(_), Some(i)) => Some(i32::from(i)),
        }
    }
}

/// Where the binaries and the run directory are.
#[derive(Debug, Clone)]
pub struct AdmEnv {
    pub run_dir: PathBuf,
    pub daemon_bin: PathBuf,
    pub meta_bin: PathBuf,
    /// `-d`: print what would be done, do nothing.
    pub dry_run: bool,
}

impl AdmEnv {
    /// Binaries next to the running udrbdadm (cargo puts them together), else on PATH;
    /// `UDRBD_BIN` / `UDRBDMETA_BIN` override.
    pub fn from_env(run_dir: Option<PathBuf>, dry_run: bool) -> AdmEnv {
        let sibling = |name: &str, var: &str| {
            if let Some(p) = std::env::var_os(var) {
                return PathBuf::from(p);
            }
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join(name)))
                .filter(|p| p.exists())
                .unwrap_or_else(|| PathBuf::from(name))
        };
        AdmEnv {
            run_dir: run_dir.unwrap_or_else(udrbd::lifecycle::run_dir_from_env),
            daemon_bin: sibling("udrbd", "UDRBD_BIN"),
            meta_bin: sibling("udrbdmeta", "UDRBDMETA_BIN"),
            dry_run,
        }
    }
}

/// A failed verb: what to print and drbdadm's exit code.
#[derive(Debug)]
pub struct VerbError {
    pub message: String,
    pub exit_code: u8,
}

impl VerbError {
    fn new(exit_code: u8, message: impl Into<String>) -> VerbError {
        VerbError {
            message: message.into(),
            exit_code,
        }
    }
}

pub type VerbResult = Result<(), VerbError>;

/// drbdadm's exit code when the daemon cannot be reached or started (like a failing drbdsetup
/// that cannot talk to the kernel module).
pub const EXIT_NO_DAEMON: u8 = 20;
/// drbdsetup's exit code for a refused command without a more specific one.
pub const EXIT_REFUSED: u8 = 10;

fn socket(env: &AdmEnv, res: &str) -> PathBuf {
    control::socket_path(&env.run_dir, res)
}

/// Connects to a running daemon.
pub fn connect(env: &AdmEnv, res: &str) -> Result<Client, VerbError> {
    Client::connect(&socket(env, res)).map_err(|e| {
        VerbError::new(
            EXIT_NO_DAEMON,
            format!("{res}: no udrbd daemon for this resource ({e})"),
        )
    })
}

/// Connects, starting the daemon first if none runs (`up`, `attach`, `connect`).
pub fn ensure_daemon(env: &AdmEnv, res: &str) -> Result<Client, VerbError> {
    if let Ok(mut c) = Client::connect(&socket(env, res)) {
        if matches!(c.call(Request::Ping), Ok(Response::Pong { .. })) {
            return Ok(c);
        }
    }
    std::fs::create_dir_all(&env.run_dir)
        .map_err(|e| VerbError::new(EXIT_NO_DAEMON, format!("{}: {e}", env.run_dir.display())))?;
    let log_path = env.run_dir.join(format!("{res}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| VerbError::new(EXIT_NO_DAEMON, format!("{}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| VerbError::new(EXIT_NO_DAEMON, e.to_string()))?;
    let mut cmd = Command::new(&env.daemon_bin);
    cmd.arg("--resource")
        .arg(res)
        .arg("--run-dir")
        .arg(&env.run_dir);
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    // Its own session, so the daemon outlives this command and its terminal.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        VerbError::new(
            EXIT_NO_DAEMON,
            format!("cannot start {}: {e}", env.daemon_bin.display()),
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = Client::connect(&socket(env, res)) {
            if matches!(c.call(Request::Ping), Ok(Response::Pong { .. })) {
                return Ok(c);
            }
        }
        // A daemon that lost the lock race to another one (systemd's) is fine: wait for that one.
        let other = udrbd::lifecycle::running_pid(&env.run_dir, res).is_some();
        if let (Ok(Some(status)), false) = (child.try_wait(), other) {
            return Err(VerbError::new(
                EXIT_NO_DAEMON,
                format!(
                    "udrbd for {res} exited at start ({status}); see {}",
                    log_path.display()
                ),
            ));
        }
        if Instant::now() > deadline {
            return Err(VerbError::new(
                EXIT_NO_DAEMON,
                format!(
                    "udrbd for {res} did not come up; see {}",
                    log_path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Turns a daemon response into drbdadm's outcome. `what` is the drbdsetup command line that
/// drbdadm would have run, for the error message.
fn check(what: &str, r: std::io::Result<Response>) -> VerbResult {
    match r {
        Ok(Response::Ok)
        | Ok(Response::Pong { .. })
        | Ok(Response::Status(_))
        | Ok(Response::Data { .. }) => Ok(()),
        Ok(Response::Refused {
            code,
            text,
            exit_code,
        }) => {
            // drbdsetup prefixes its messages with the object it was called on: the minor
            // (`drbdsetup primary 0`) or the resource (`drbdsetup disconnect r0`).
            let obj = what.split_whitespace().nth(2).unwrap_or("");
            let msg = if code < 0 {
                format!("{obj}: State change failed: ({code}) {text}\nCommand '{what}' terminated with exit code {exit_code}")
            } else {
                format!("{obj}: Failure: ({code}) {text}\nCommand '{what}' terminated with exit code {exit_code}")
            };
            Err(VerbError::new(
                u8::try_from(exit_code).unwrap_or(EXIT_REFUSED),
                msg,
            ))
        }
        Ok(Response::Error { message }) => Err(VerbError::new(
            EXIT_REFUSED,
            format!("{message}\nCommand '{what}' failed"),
        )),
        Ok(Response::TimedOut) => Err(VerbError::new(5, format!("{what}: timed out"))),
        Ok(Response::Event { .. }) | Ok(Response::Exposed { .. }) => Err(VerbError::new(
            EXIT_REFUSED,
            "unexpected event from the daemon",
        )),
        Err(e) => Err(VerbError::new(
            EXIT_NO_DAEMON,
            format!("{what}: control socket: {e}"),
        )),
    }
}

fn dry(env: &AdmEnv, line: String) -> bool {
    if env.dry_run {
        println!("{line}");
    }
    env.dry_run
}

/// `drbdadm create-md`: runs udrbdmeta like drbdadm runs drbdmeta; without a udrbdmeta binary
/// the same library call is made in-process.
pub fn create_md(env: &AdmEnv, plan: &ResourcePlan, extra: &[String]) -> VerbResult {
    for v in &plan.volumes {
        // Options first, as drbdadm hands them to drbdmeta (`drbdmeta --force 1 v08 ...`).
        let mut args: Vec<String> = extra.to_vec();
        args.extend([
            v.minor.to_string(),
            "v08".into(),
            v.meta_path().display().to_string(),
            v.meta_index_arg(),
            "create-md".into(),
        ]);
        if env.meta_bin.exists() || env.dry_run {
            run_meta(env, &args)?;
        } else {
            create_md_in_process(v)?;
        }
    }
    Ok(())
}

fn create_md_in_process(v: &VolumePlan) -> VerbResult {
    use udrbd_metadata::{io::FileIo, md, MetaIndex};
    let path = v.meta_path();
    let index = match (&v.meta_disk, v.meta_index) {
        (None, _) => MetaIndex::Internal,
        (Some(_), None) => MetaIndex::FlexExternal,
        (Some(_), Some(i)) => MetaIndex::Indexed(i),
    };
    let fail = |e: String| VerbError::new(EXIT_REFUSED, format!("{}: {e}", path.display()));
    let mut io = FileIo::open(path, true).map_err(|e| fail(e.to_string()))?;
    println!("Writing meta data...");
    md::create(&mut io, index, &Default::default()).map_err(|e| fail(e.to_string()))?;
    println!("New drbd meta data block successfully created.");
    Ok(())
}

fn run_meta(env: &AdmEnv, args: &[String]) -> VerbResult {
    if dry(env, format!("udrbdmeta {}", args.join(" "))) {
        return Ok(());
    }
    let st = Command::new(&env.meta_bin)
        .args(args)
        .status()
        .map_err(|e| {
            VerbError::new(
                EXIT_REFUSED,
                format!("cannot run {}: {e}", env.meta_bin.display()),
            )
        })?;
    if st.success() {
        Ok(())
    } else {
        let code = st.code().unwrap_or(1);
        Err(VerbError::new(
            u8::try_from(code).unwrap_or(1),
            format!(
                "Command 'udrbdmeta {}' terminated with exit code {code}",
                args.join(" ")
            ),
        ))
    }
}

/// `drbdadm attach`: attach each volume (the daemon runs the apply-al step itself).
pub fn attach(env: &AdmEnv, plan: &ResourcePlan) -> VerbResult {
    for v in &plan.volumes {
        let what = format!(
            "drbdsetup attach {} {} {} {}",
            v.minor,
            v.disk.display(),
            v.meta_path().display(),
            v.meta_index_arg()
        );
        if dry(env, what.clone()) {
            continue;
        }
        let mut c = ensure_daemon(env, &plan.name)?;
        let req = Request::Attach {
            volume: v.volume,
            minor: v.minor,
            disk: v.disk.display().to_string(),
            meta_disk: v.meta_path().display().to_string(),
            meta_index: v.kernel_index(),
            options: plan.disk.clone(),
        };
        check(&what, c.call(req))?;
    }
    Ok(())
}

/// `drbdadm connect` (with `discard_my_data` from `-- --discard-my-data`).
pub fn connect_net(env: &AdmEnv, plan: &ResourcePlan, discard_my_data: bool) -> VerbResult {
    let (Some(local), Some(peer)) = (plan.local, plan.peer) else {
        return Err(VerbError::new(
            EXIT_REFUSED,
            format!("{}: no peer address in the configuration", plan.name),
        ));
    };
    let what = format!("drbdsetup connect {} ipv4:{local} ipv4:{peer}", plan.name);
    if dry(env, what.clone()) {
        return Ok(());
    }
    let mut c = ensure_daemon(env, &plan.name)?;
    let mut options = plan.net.clone();
    options.discard_my_data = discard_my_data;
    check(
        &what,
        c.call(Request::Connect {
            local,
            peer,
            options,
        }),
    )
}

/// `drbdadm up` = attach + connect.
pub fn up(env: &AdmEnv, plan: &ResourcePlan) -> VerbResult {
    attach(env, plan)?;
    connect_net(env, plan, false)
}

/// A verb that is one control request.
pub fn simple(env: &AdmEnv, res: &str, what: &str, req: Request) -> VerbResult {
    if dry(env, what.to_string()) {
        return Ok(());
    }
    let mut c = connect(env, res)?;
    check(what, c.call(req))
}

/// `drbdadm down`: a resource without a daemon is already down.
pub fn down(env: &AdmEnv, res: &str) -> VerbResult {
    if dry(env, format!("drbdsetup down {res}")) {
        return Ok(());
    }
    let Ok(mut c) = Client::connect(&socket(env, res)) else {
        return Ok(());
    };
    check(&format!("drbdsetup down {res}"), c.call(Request::Down))?;
    // Wait for the process to leave so that a following `up` starts a fresh one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while udrbd::lifecycle::running_pid(&env.run_dir, res).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The daemon's status snapshot; a resource without a daemon is "Unconfigured".
pub fn snapshot(env: &AdmEnv, res: &str) -> Result<Option<StatusSnapshot>, VerbError> {
    let Ok(mut c) = Client::connect(&socket(env, res)) else {
        return Ok(None);
    };
    match c.call(Request::Status) {
        Ok(Response::Status(s)) => Ok(Some(*s)),
        other => Err(VerbError::new(
            EXIT_NO_DAEMON,
            format!("{res}: status: {other:?}"),
        )),
    }
}

/// `drbdadm status RES`.
pub fn status(
    env: &AdmEnv,
    res: &str,
    verbose: bool,
    statistics: bool,
    out: &mut impl Write,
) -> VerbResult {
    match snapshot(env, res)? {
        Some(s) => {
            let _ = out.write_all(s.render_status(verbose, statistics).as_bytes());
            Ok(())
        }
        None => Err(VerbError::new(10, format!("{res}: No such resource"))),
    }
}

/// `drbdadm role|cstate|dstate RES`: one line per volume.
pub fn query(env: &AdmEnv, res: &str, what: &str, out: &mut impl Write) -> VerbResult {
    let Some(s) = snapshot(env, res)? else {
        let _ = writeln!(out, "Unconfigured");
        return Ok(());
    };
    if s.volumes.is_empty() {
        let _ = writeln!(out, "Unconfigured");
        return Ok(());
    }
    for v in &s.volumes {
        let line = match what {
            "role" => s.role_text(),
            "cstate" => v.cstate.clone(),
            _ => v.dstate_text(),
        };
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// `drbdadm wait-connect RES` (timeout 0 = forever).
pub fn wait(env: &AdmEnv, res: &str, req: Request) -> VerbResult {
    let mut c = connect(env, res)?;
    check("drbdsetup wait-connect", c.call(req))
}

/// `drbdadm events2 RES [--now] [--statistics]`: prints lines until the daemon stops (or, with
/// --now, after `exists -`).
pub fn events2(
    env: &AdmEnv,
    res: &str,
    now: bool,
    statistics: bool,
    out: &mut impl Write,
) -> VerbResult {
    let mut c = connect(env, res)?;
    c.send(Request::Events { now, statistics })
        .map_err(|e| VerbError::new(EXIT_NO_DAEMON, e.to_string()))?;
    loop {
        match c.recv() {
            Ok(Some(Response::Event { line })) => {
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    return Ok(());
                }
                if now && line == "exists -" {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Ok(Some(other)) => return check("drbdsetup events2", Ok(other)),
            Err(e) => return Err(VerbError::new(EXIT_NO_DAEMON, e.to_string())),
        }
    }
}

/// `drbdadm adjust`: brings the daemon to the configuration: starts/attaches/connects what is
/// missing; changed net options are pushed with `NetOptions`.
pub fn adjust(env: &AdmEnv, plan: &ResourcePlan) -> VerbResult {
    let snap = snapshot(env, &plan.name)?;
    let Some(snap) = snap else {
        return up(env, plan);
    };
    let attached: Vec<u16> = snap.volumes.iter().map(|v| v.volume).collect();
    let missing: Vec<VolumePlan> = plan
        .volumes
        .iter()
        .filter(|v| !attached.contains(&v.volume))
        .cloned()
        .collect();
    if !missing.is_empty() {
        attach(
            env,
            &ResourcePlan {
                volumes: missing,
                ..plan.clone()
            },
        )?;
    }
    match &snap.connection {
        None => connect_net(env, plan, false),
        Some(c) if c.cstate == "StandAlone" => connect_net(env, plan, false),
        Some(_) => {
            let (Some(_), Some(_)) = (plan.local, plan.peer) else {
                return Ok(());
            };
            simple(
                env,
                &plan.name,
                &format!("drbdsetup net-options {}", plan.name),
                Request::NetOptions {
                    options: plan.net.clone(),
                },
            )
        }
    }
}
