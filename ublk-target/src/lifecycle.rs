//! Per-resource daemon lifecycle: the run directory, a locked pid file so that only one daemon
//! serves a resource, and the control socket's path.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Default run directory; `UDRBD_RUN_DIR` or `--run-dir` override it (two nodes on one host).
pub const DEFAULT_RUN_DIR: &str = "/run/udrbd";

pub fn run_dir_from_env() -> PathBuf {
    std::env::var_os("UDRBD_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_DIR))
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot create run directory {path}: {source}")]
    RunDir { path: PathBuf, source: io::Error },
    #[error("cannot open pid file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("resource {resource} is already served by udrbd pid {pid} (lock on {path})")]
    Busy {
        resource: String,
        pid: String,
        path: PathBuf,
    },
}

/// The held pid-file lock; released (and the file removed) on drop.
#[derive(Debug)]
pub struct PidLock {
    file: File,
    path: PathBuf,
}

impl PidLock {
    pub fn acquire(run_dir: &Path, resource: &str) -> Result<PidLock, LockError> {
        std::fs::create_dir_all(run_dir).map_err(|source| LockError::RunDir {
            path: run_dir.into(),
            source,
        })?;
        let _ = std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700));
        let path = pid_path(run_dir, resource);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::Busy {
                resource: resource.into(),
                pid: pid.trim().into(),
                path,
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(PidLock { file, path })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

pub fn pid_path(run_dir: &Path, resource: &str) -> PathBuf {
    run_dir.join(format!("{resource}.pid"))
}

/// The pid of the daemon serving `resource`, if one holds the lock.
pub fn running_pid(run_dir: &Path, resource: &str) -> Option<u32> {
    let path = pid_path(run_dir, resource);
    let file = File::open(&path).ok()?;
    // SAFETY: flock on a descriptor we own; a shared lock we get means nobody holds it.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return None;
    }
    std::fs::read_to_string(&path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_first_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let a = PidLock::acquire(dir.path(), "r0").unwrap();
        assert_eq!(running_pid(dir.path(), "r0"), Some(std::process::id()));
        match PidLock::acquire(dir.path(), "r0") {
            Err(LockError::Busy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(a);
        assert_eq!(running_pid(dir.path(), "r0"), None);
        let _b = PidLock::acquire(dir.path(), "r0").unwrap();
    }
}
