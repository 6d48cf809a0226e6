//! Attachments that outlive the daemon. `run` pins every program's link
//! under `<root>/cgroup-<id>/set-<age>-<pid>/` on bpffs; the kernel keeps a
//! pinned link (and so the program and its maps) attached after the daemon
//! exits or crashes. A new `run` on the same cgroup attaches its own
//! programs first, then removes the older sets: the old and the new programs
//! both run for a moment (the kernel's cgroup program lists stack), so there
//! is no window without enforcement, across restarts and upgrades alike.
//!
//! Each set also pins its socket maps, `PROTECTED_SOCKS` ([`SOCKS_PIN`]) and
//! `REDACT_SOCKS` ([`REDACT_SOCKS_PIN`], connections whose answers are masked):
//! TCP connections to protected endpoints sit in the map of the generation
//! that saw them established, and the per-send program (sk_msg) attached to
//! that map is held by the map, not by a link. When a set is taken over, its
//! links go (the old programs detach from the cgroup) but its map pin moves
//! to `<root>/cgroup-<id>/draining-<set>/`: the map, its sk_msg program and
//! the maps that program reads (the old generation's policy, frozen) stay
//! alive, so connections opened before the takeover keep being checked on
//! every send. Nothing adds sockets to a draining map any more (its sock_ops
//! program is gone); closed sockets leave it by themselves. The running
//! daemon removes a draining set once its map is empty ([`sweep_draining`]);
//! `unload` removes them all.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{Map, MapData, SockHash},
    programs::links::{FdLink, PinnedLink},
};

/// The name of the socket map's pin in a set (and in a draining set).
pub const SOCKS_PIN: &str = "PROTECTED_SOCKS";
/// The socket map of connections whose answers are redacted (`redact`
/// rules), pinned and drained like [`SOCKS_PIN`]: its programs mask answers
/// and check sends for the connections it holds.
pub const REDACT_SOCKS_PIN: &str = "REDACT_SOCKS";
const SOCKET_MAP_PINS: [&str; 2] = [SOCKS_PIN, REDACT_SOCKS_PIN];
/// Names of the set directories.
const SET_PREFIX: &str = "set-";
/// Names of the draining set directories (`draining-set-...`).
const DRAINING_PREFIX: &str = "draining-";

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

/// The directories under `base` whose names start with `prefix`, sorted.
fn dirs(base: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(base)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The pinned sets already under `base`, oldest first.
pub fn sets(base: &Path) -> Vec<PathBuf> {
    dirs(base, SET_PREFIX)
}

/// The draining sets under `base` (socket maps of taken-over sets), oldest
/// first.
pub fn draining(base: &Path) -> Vec<PathBuf> {
    dirs(base, DRAINING_PREFIX)
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

/// Pins the socket map `map` in `dir` as `name` ([`SOCKS_PIN`] or
/// [`REDACT_SOCKS_PIN`]).
pub fn pin_socks(map: &Map, dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    map.pin(&path)
        .with_context(|| format!("pinning the socket map at {}", path.display()))
}

/// Detaches and removes every link pinned in `set` (and `set`'s socket map
/// pin when `keep_socks` is false). Missing files are not an error: another
/// daemon may be removing the same set.
fn unpin_links(set: &Path, keep_socks: bool) -> Result<()> {
    let entries = match fs::read_dir(set) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", set.display())),
    };
    for e in entries {
        let path = e?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| SOCKET_MAP_PINS.contains(&n))
        {
            if !keep_socks {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        match PinnedLink::from_pin(&path) {
            // Dropping the unpinned link releases it: the program detaches.
            Ok(link) => drop(link.unpin()),
            Err(_) => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    Ok(())
}

/// Detaches and removes every link pinned in `set`, its socket map pin,
/// then the directory (also for a draining set: its connections are no
/// longer checked per send once it is gone).
pub fn remove_set(set: &Path) -> Result<()> {
    if !set.exists() {
        // Already removed: another daemon took over these attachments.
        return Ok(());
    }
    unpin_links(set, false)?;
    match fs::remove_dir(set) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", set.display()))
        }
        _ => Ok(()),
    }
}

/// Takes over `set`: its links go (its programs detach from the cgroup);
/// its socket map, if pinned, moves to a draining set, which keeps it and
/// its per-send program alive for the connections it holds. The draining
/// set's path, if one was made.
pub fn retire_set(set: &Path) -> Result<Option<PathBuf>> {
    unpin_links(set, true)?;
    if !set.join(SOCKS_PIN).exists() {
        // A set of an older build (no map pin), or already moved.
        remove_set(set)?;
        return Ok(None);
    }
    let (Some(base), Some(name)) = (set.parent(), set.file_name()) else {
        anyhow::bail!("{} has no parent directory", set.display());
    };
    let to = base.join(format!("{DRAINING_PREFIX}{}", name.to_string_lossy()));
    fs::rename(set, &to)
        .with_context(|| format!("moving {} to {}", set.display(), to.display()))?;
    Ok(Some(to))
}

/// Takes over every set under `base` but `keep` ([`retire_set`]): (sets
/// taken over, draining sets made).
pub fn take_over(base: &Path, keep: &Path) -> Result<(usize, usize)> {
    let (mut n, mut drained) = (0, 0);
    for s in sets(base) {
        if s != keep {
            if retire_set(&s)?.is_some() {
                drained += 1;
            }
            n += 1;
        }
    }
    Ok((n, drained))
}

/// Removes every set under `base`, draining ones too, and `base`: the
/// number of (attachment) sets removed.
pub fn remove_all(base: &Path) -> Result<usize> {
    let mut n = 0;
    for s in sets(base) {
        remove_set(&s)?;
        n += 1;
    }
    for d in draining(base) {
        remove_set(&d)?;
    }
    remove_base(base);
    Ok(n)
}

/// Removes `base` (a cgroup's pin directory) and the pin root above it,
/// each only if nothing is left in it: `new_set` made both.
pub fn remove_base(base: &Path) {
    let _ = fs::remove_dir(base);
    if let Some(root) = base.parent() {
        let _ = fs::remove_dir(root);
    }
}

/// Removes the draining sets under `base` (every one but those in `keep`).
pub fn remove_draining(base: &Path) -> Result<usize> {
    let mut n = 0;
    for d in draining(base) {
        remove_set(&d)?;
        n += 1;
    }
    Ok(n)
}

/// The number of sockets in the socket maps pinned in `dir` (a set of an
/// older build may lack the redaction one).
pub fn socket_count(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for name in SOCKET_MAP_PINS {
        let path = dir.join(name);
        if name == REDACT_SOCKS_PIN && !path.exists() {
            continue;
        }
        n += sockets_in(&path)?;
    }
    Ok(n)
}

fn sockets_in(path: &Path) -> Result<usize> {
    let data = MapData::from_pin(path).with_context(|| format!("opening {}", path.display()))?;
    let socks: SockHash<MapData, u64> = SockHash::try_from(Map::SockHash(data))
        .with_context(|| format!("{} is not a socket map of this build", path.display()))?;
    let mut n = 0;
    for k in socks.keys() {
        k.with_context(|| format!("reading the keys of {}", path.display()))?;
        n += 1;
    }
    Ok(n)
}

/// One draining set as found by [`sweep_draining`].
#[derive(Debug, Clone)]
pub struct Draining {
    pub dir: PathBuf,
    /// Sockets still in its map; None when the map cannot be read (it is
    /// kept: refusing is safer than dropping the check).
    pub sockets: Option<usize>,
    /// Removed by this sweep (its map was empty).
    pub removed: bool,
}

/// Looks at every draining set under `base` and removes those whose socket
/// map is empty. Nothing adds sockets to a draining map (its sock_ops
/// program was detached when it was taken over), so an empty one stays
/// empty.
pub fn sweep_draining(base: &Path) -> Vec<Draining> {
    let mut out = vec![];
    for dir in draining(base) {
        let sockets = socket_count(&dir).ok();
        let removed = sockets == Some(0) && remove_set(&dir).is_ok();
        out.push(Draining {
            dir,
            sockets,
            removed,
        });
    }
    out
}

/// The draining sets under `base` and their socket counts, unchanged.
pub fn list_draining(base: &Path) -> Vec<Draining> {
    draining(base)
        .into_iter()
        .map(|dir| Draining {
            sockets: socket_count(&dir).ok(),
            dir,
            removed: false,
        })
        .collect()
}
