//! Attachments that outlive the daemon. `run` pins every program's link
//! under `<root>/cgroup-<id>/<generation>/` on bpffs; the kernel keeps a
//! pinned link (and so the program and its maps) attached after the daemon
//! exits or crashes. A new `run` on the same cgroup attaches its own
//! programs first, then removes the older sets: the old and the new programs
//! both run for a moment (the kernel's cgroup program lists stack), so there
//! is no window without enforcement, across restarts and upgrades alike.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use aya::programs::links::{FdLink, PinnedLink};

/// Default bpffs directory for metaguard's pins.
pub const DEFAULT_ROOT: &str = "/sys/fs/bpf/metaguard";

/// Makes sure `root` lies on a bpffs. Nothing mounted at /sys/fs/bpf (some
/// distributions leave it to the first BPF user): mount it there, as
/// systemd would at boot. Anywhere else the operator has to mount one.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let on_bpffs = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(2) == Some(&"bpf") && f.get(1).is_some_and(|mp| root.starts_with(mp))
    });
    if on_bpffs {
        return Ok(());
    }
    let standard = Path::new("/sys/fs/bpf");
    if root.starts_with(standard) {
        nix::mount::mount(
            Some("bpf"),
            standard,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| "mounting bpffs at /sys/fs/bpf (needs CAP_SYS_ADMIN)".to_string())?;
        return Ok(());
    }
    anyhow::bail!(
        "{} is not on a bpffs: mount one (`mount -t bpf bpf DIR`) or use --pin-dir under /sys/fs/bpf",
        root.display()
    )
}

/// The directory holding the pinned sets for the cgroup at `cgroup_dir`.
pub fn cgroup_pins(root: &Path, cgroup_dir: &Path) -> Result<PathBuf> {
    let id = fs::metadata(cgroup_dir)
        .with_context(|| format!("reading cgroup {}", cgroup_dir.display()))?
        .ino();
    Ok(root.join(format!("cgroup-{id}")))
}

/// The pinned sets already under `base`, oldest first.
pub fn sets(base: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A fresh set directory under `base`, named so that sets sort by age.
pub fn new_set(base: &Path) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("set-{nanos:024}-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating {} (is bpffs mounted at {}?)",
            dir.display(),
            base.parent().map_or(base, |p| p).display()
        )
    })?;
    Ok(dir)
}

/// Pins `link` as `dir/name`.
pub fn pin(link: FdLink, dir: &Path, name: &str) -> Result<PinnedLink> {
    let path = dir.join(name);
    link.pin(&path)
        .with_context(|| format!("pinning the {name} link at {}", path.display()))
}

/// Detaches and removes every link pinned in `set`, then the directory.
pub fn remove_set(set: &Path) -> Result<()> {
    if !set.exists() {
        // Already removed: another daemon took over these attachments.
        return Ok(());
    }
    for e in fs::read_dir(set).with_context(|| format!("reading {}", set.display()))? {
        let path = e?.path();
        match PinnedLink::from_pin(&path) {
            // Dropping the unpinned link releases it: the program detaches.
            Ok(link) => drop(link.unpin()),
            Err(_) => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    fs::remove_dir(set).with_context(|| format!("removing {}", set.display()))
}

/// Removes every set under `base` but `keep`, and `base` once empty.
pub fn remove_other_sets(base: &Path, keep: Option<&Path>) -> Result<usize> {
    let mut n = 0;
    for s in sets(base) {
        if Some(s.as_path()) != keep {
            remove_set(&s)?;
            n += 1;
        }
    }
    if keep.is_none() {
        let _ = fs::remove_dir(base);
    }
    Ok(n)
}
