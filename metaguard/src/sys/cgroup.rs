//! cgroup v2: where it is mounted, and the kernel's id of a cgroup.
//!
//! On cgroup v2 the id the kernel hands BPF programs (`bpf_get_current_cgroup_id`)
//! is the inode number of the cgroup's directory in cgroupfs.
use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// The cgroup2 mount point, read from /proc/mounts (never hard-coded: it is
/// `/sys/fs/cgroup` on most systems, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> io::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup2 filesystem is mounted (cgroup v2 is required)",
            )
        })
}

/// A cgroup resolved against the mount: its absolute directory, kernel id and
/// depth (the root cgroup is level 0), which `bpf_get_current_ancestor_cgroup_id`
/// takes to test "is a descendant of".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRef {
    /// As written in the policy, relative to the cgroup2 mount ("/system.slice/x.service").
    pub path: String,
    pub dir: PathBuf,
    pub id: u64,
    pub level: u32,
}

/// Resolves a cgroup path as written in a policy ("/a/b", relative to the mount).
pub fn resolve(mount: &Path, path: &str) -> io::Result<CgroupRef> {
    let rel = path.trim_start_matches('/');
    let dir = if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    };
    let meta = std::fs::metadata(&dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a cgroup directory",
        ));
    }
    let level = rel.split('/').filter(|c| !c.is_empty()).count() as u32;
    Ok(CgroupRef {
        path: format!("/{rel}"),
        dir,
        id: meta.ino(),
        level,
    })
}
