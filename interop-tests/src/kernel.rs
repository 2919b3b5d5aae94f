//! The guest kernel: Debian bookworm's 6.12 package, fetched with `apt-get download`, unpacked
//! with `dpkg-deb -x` into the cache (never into /boot), `depmod`ed, plus our initramfs.

use crate::cpio::Cpio;
use crate::host::{self, run};
use crate::LabError;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian kernel packages that have ublk_drv, drbd and 9p (bookworm's 6.12 LTS line; the 6.1
/// line lacks CONFIG_BLK_DEV_UBLK, the -cloud flavour lacks 9p).
const PACKAGE_PREFIX: &str = "linux-image-6.12.";
const PACKAGE_SUFFIX: &str = "+deb12-amd64-unsigned";

/// Modules the initramfs loads to reach the host root; their dependencies come from
/// modules.dep. virtio-pci is built in.
const INITRAMFS_MODULES: &[&str] = &["9p", "9pnet_virtio", "overlay"];

/// Everything needed to boot a guest.
#[derive(Debug, Clone)]
pub struct KernelImage {
    /// Debian package name, e.g. linux-image-6.12.117+deb12-amd64-unsigned.
    pub package: String,
    /// `uname -r` of the guest, e.g. 6.12.117+deb12-amd64.
    pub release: String,
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// The folder holding `<release>/modules.dep`: the guest's /usr/lib/modules.
    pub modules_dir: PathBuf,
    /// Our uncompressed newc initramfs.
    pub initramfs: PathBuf,
    /// The per-kernel cache folder.
    pub dir: PathBuf,
}

/// The cache folder outside git: `$UDRBD_LAB_CACHE`, else `$XDG_CACHE_HOME/udrbd-lab`, else
/// `~/.cache/udrbd-lab`.
pub fn cache_root() -> Result<PathBuf, LabError> {
    let root = if let Some(dir) = std::env::var_os("UDRBD_LAB_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("udrbd-lab")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache/udrbd-lab")
    } else {
        return Err(LabError::Unavailable(
            "no HOME or UDRBD_LAB_CACHE for the lab cache".into(),
        ));
    };
    fs::create_dir_all(&root).map_err(LabError::io(&root))?;
    Ok(root)
}

/// An exclusive `flock` held until dropped; two test processes preparing the same kernel
/// serialise on it, and the second finds the work done.
pub(crate) struct FileLock(fs::File);

impl FileLock {
    pub(crate) fn take(path: &Path) -> Result<FileLock, LabError> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(LabError::io(path))?;
        // SAFETY: the fd is valid for the life of `file`; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LabError::io(path)(std::io::Error::last_os_error()));
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: as in `take`; closing the file would release the lock anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Picks the package (env `UDRBD_LAB_KERNEL_PKG`, else the newest 6.12 apt knows, else the
/// newest already cached) and makes sure its cache folder is complete.
pub(crate) fn prepare() -> Result<KernelImage, LabError> {
    let root = cache_root()?;
    let package = match std::env::var("UDRBD_LAB_KERNEL_PKG") {
        Ok(p) => p,
        Err(_) => match newest_from_apt() {
            Some(p) => p,
            None => newest_cached(&root).ok_or_else(|| {
                LabError::Unavailable(format!(
                    "apt-cache knows no {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} (is bookworm in \
                     sources.list and `apt-get update` done?) and none is cached in {}",
                    root.display()
                ))
            })?,
        },
    };
    let dir = root.join(&package);
    let ready = dir.join("READY");
    if !ready.exists() {
        let _lock = FileLock::take(&root.join(format!("{package}.lock")))?;
        if !ready.exists() {
            build_cache(&root, &package, &dir)?;
        }
    }
    image_in(&package, &dir)
}

/// The 6.12 patch level of a package name, for ordering (6.12.117 > 6.12.99).
fn patch_level(package: &str) -> Option<u32> {
    package
        .strip_prefix(PACKAGE_PREFIX)?
        .strip_suffix(PACKAGE_SUFFIX)?
        .parse()
        .ok()
}

fn newest_from_apt() -> Option<String> {
    let pattern = format!(
        "^{}[0-9]+\\{}$",
        PACKAGE_PREFIX.replace('.', "\\."),
        PACKAGE_SUFFIX
    );
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &pattern])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|p| patch_level(p).is_some())
        .max_by_key(|p| patch_level(p))
        .map(str::to_owned)
}

fn newest_cached(root: &Path) -> Option<String> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| patch_level(name).is_some() && root.join(name).join("READY").exists())
        .max_by_key(|name| patch_level(name))
}

fn image_in(package: &str, dir: &Path) -> Result<KernelImage, LabError> {
    let modules_dir = dir.join("kernel/lib/modules");
    let release = fs::read_dir(&modules_dir)
        .map_err(LabError::io(&modules_dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .ok_or_else(|| LabError::Unavailable(format!("no kernel in {}", modules_dir.display())))?;
    Ok(KernelImage {
        package: package.to_owned(),
        vmlinuz: dir.join(format!("kernel/boot/vmlinuz-{release}")),
        initramfs: dir.join("initramfs.cpio"),
        modules_dir,
        release,
        dir: dir.to_owned(),
    })
}

/// Download, unpack, depmod, initramfs; in a scratch folder renamed into place at the end, so
/// an interrupted run leaves nothing that looks complete.
fn build_cache(root: &Path, package: &str, dir: &Path) -> Result<(), LabError> {
    let tmp = root.join(format!("{package}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(LabError::io(&tmp))?;
    eprintln!(
        "udrbd-lab: apt-get download {package} into {}",
        tmp.display()
    );
    run(
        "apt-get download",
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&tmp),
    )?;
    let deb = fs::read_dir(&tmp)
        .map_err(LabError::io(&tmp))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| LabError::Unavailable(format!("apt-get download {package} gave no .deb")))?;
    let unpacked = tmp.join("kernel");
    run(
        "dpkg-deb -x",
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
    )?;
    fs::remove_file(&deb).map_err(LabError::io(&deb))?;
    // Merged-/usr packages put modules under usr/lib; keep one layout.
    if !unpacked.join("lib/modules").exists() && unpacked.join("usr/lib/modules").exists() {
        fs::create_dir_all(unpacked.join("lib")).map_err(LabError::io(&unpacked))?;
        fs::rename(
            unpacked.join("usr/lib/modules"),
            unpacked.join("lib/modules"),
        )
        .map_err(LabError::io(&unpacked))?;
    }
    let image = image_in(package, &tmp)?;
    // The .deb ships no modules.dep (its postinst would run depmod).
    run(
        "depmod",
        Command::new(host::which("depmod").unwrap_or("depmod".into()))
            .arg("-b")
            .arg(&unpacked)
            .arg(&image.release),
    )?;
    let initramfs = build_initramfs(&image)?;
    fs::write(&image.initramfs, initramfs).map_err(LabError::io(&image.initramfs))?;
    fs::write(tmp.join("READY"), format!("{}\n", image.release)).map_err(LabError::io(&tmp))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir).map_err(LabError::io(dir))?;
    eprintln!(
        "udrbd-lab: kernel {} ready in {}",
        image.release,
        dir.display()
    );
    Ok(())
}

/// busybox-static, the 9p/overlay modules (decompressed: busybox insmod reads plain .ko) in
/// dependency order, and /init.
fn build_initramfs(image: &KernelImage) -> Result<Vec<u8>, LabError> {
    let kdir = image.modules_dir.join(&image.release);
    let dep_path = kdir.join("modules.dep");
    let deps = fs::read_to_string(&dep_path).map_err(LabError::io(&dep_path))?;
    let order = module_load_order(&deps, INITRAMFS_MODULES)
        .map_err(|m| LabError::Unavailable(format!("module {m} not in {}", dep_path.display())))?;

    let mut cpio = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "mods", "lower", "rw", "newroot",
    ] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
    cpio.char_dev("dev/console", 5, 1);
    let busybox = host::busybox_path();
    cpio.file(
        "bin/busybox",
        0o755,
        &fs::read(&busybox).map_err(LabError::io(&busybox))?,
    );
    cpio.file("init", 0o755, include_str!("init.sh").as_bytes());
    let mut names = Vec::new();
    for rel in &order {
        let path = kdir.join(rel);
        let name = module_name(rel);
        let ko = if rel.ends_with(".xz") {
            run("xz -d", Command::new("xz").arg("-dc").arg(&path))?.stdout
        } else {
            fs::read(&path).map_err(LabError::io(&path))?
        };
        cpio.file(&format!("mods/{name}.ko"), 0o644, &ko);
        names.push(name);
    }
    cpio.file(
        "mods/order",
        0o644,
        format!("{}\n", names.join(" ")).as_bytes(),
    );
    Ok(cpio.finish())
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p`.
fn module_name(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    file.split(".ko").next().unwrap_or(file).to_owned()
}

/// Resolves `wanted` module names through modules.dep text into relative paths, each
/// dependency before its users. Errors with the first name not found.
fn module_load_order(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>, String> {
    let table: Vec<(String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((
                module.to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect();
    let find = |name: &str| {
        table
            .iter()
            .find(|(m, _)| module_name(m) == name.replace('-', "_") || module_name(m) == name)
    };
    let mut order: Vec<String> = Vec::new();
    fn visit(rel: &str, table: &[(String, Vec<String>)], order: &mut Vec<String>, depth: usize) {
        if order.iter().any(|o| o == rel) || depth > 32 {
            return;
        }
        if let Some((_, deps)) = table.iter().find(|(m, _)| m == rel) {
            for d in deps {
                visit(d, table, order, depth + 1);
            }
        }
        order.push(rel.to_owned());
    }
    for name in wanted {
        let (rel, _) = find(name).ok_or_else(|| (*name).to_owned())?;
        visit(rel, &table, &mut order, 0);
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first() {
        let dep = "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
                   kernel/net/9p/9pnet.ko.xz:\n\
                   kernel/fs/netfs/netfs.ko.xz:\n\
                   kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n";
        let order = module_load_order(dep, &["9p", "9pnet_virtio"]).unwrap();
        let names: Vec<_> = order.iter().map(|r| module_name(r)).collect();
        assert_eq!(names, ["9pnet", "netfs", "9p", "9pnet_virtio"]);
    }

    #[test]
    fn names_a_missing_module() {
        assert_eq!(
            module_load_order("a.ko: \n", &["overlay"]),
            Err("overlay".to_owned())
        );
    }

    #[test]
    fn orders_packages_by_patch_level() {
        assert_eq!(
            patch_level("linux-image-6.12.117+deb12-amd64-unsigned"),
            Some(117)
        );
        assert_eq!(
            patch_level("linux-image-6.12.117+deb12-cloud-amd64-unsigned"),
            None
        );
        assert!(patch_level("linux-image-6.12.99+deb12-amd64-unsigned") < Some(117));
    }
}
