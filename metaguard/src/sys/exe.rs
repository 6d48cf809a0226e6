//! Identity of an executable file as the kernel sees it.
//!
//! A BPF program finds the running executable through `task->mm->exe_file`
//! and compares its inode: `(i_sb->s_dev, i_ino)` and, where the filesystem
//! keeps one, `i_generation` (which changes when an inode number is reused).
//! [`identify`] computes the same triple from userspace.
use std::{
    fmt,
    fs::{File, Metadata},
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::Path,
};

/// Identity of an executable's inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeId {
    /// `st_dev` as userspace sees it (glibc's encoding; what `stat -c %d` prints).
    pub dev: u64,
    /// The kernel's `s_dev` encoding: `(major << 20) | minor`.
    pub kdev: u32,
    pub ino: u64,
    /// `FS_IOC_GETVERSION` (the inode generation) where the filesystem supports it.
    pub generation: Option<u32>,
}

impl ExeId {
    /// No identity: matches no inode (inode 0 does not exist). Used while a
    /// rule's executable is missing.
    pub const NONE: ExeId = ExeId {
        dev: 0,
        kdev: 0,
        ino: 0,
        generation: None,
    };

    /// Identity from a stat result, without a generation.
    pub fn from_metadata(meta: &Metadata) -> ExeId {
        let dev = meta.dev();
        ExeId {
            dev,
            kdev: kernel_dev(dev),
            ino: meta.ino(),
            generation: None,
        }
    }

    pub fn is_none(&self) -> bool {
        self.ino == 0
    }
}

/// `dev:ino[:generation]`, as `stat -c %d:%i` prints the first two.
impl fmt::Display for ExeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)?;
        if let Some(g) = self.generation {
            write!(f, ":{g}")?;
        }
        Ok(())
    }
}

/// Converts a userspace `st_dev` to the kernel's internal `dev_t` (`MKDEV`:
/// 12 bits of major above 20 bits of minor).
pub fn kernel_dev(dev: u64) -> u32 {
    let major = libc::major(dev as libc::dev_t) as u32;
    let minor = libc::minor(dev as libc::dev_t) as u32;
    ((major & 0xfff) << 20) | (minor & 0xf_ffff)
}

nix::ioctl_read!(fs_ioc_getversion, b'v', 1, libc::c_long);

/// Identifies the file at `path`, following symlinks (the kernel's
/// `exe_file` is the final file). It must be a regular file. The generation
/// is read with `FS_IOC_GETVERSION` on an `O_RDONLY` descriptor, and is `None`
/// where the filesystem does not support it or the file cannot be opened for
/// reading.
pub fn identify(path: &Path) -> io::Result<ExeId> {
    let meta = std::fs::metadata(path)?;
    check_regular(&meta)?;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        // Execute-only files: the identity stands without a generation.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Ok(ExeId::from_metadata(&meta))
        }
        Err(e) => return Err(e),
    };
    // fstat the descriptor: the identity and the generation then describe the
    // same inode even if the path was replaced in between.
    let meta = file.metadata()?;
    check_regular(&meta)?;
    let mut id = ExeId::from_metadata(&meta);
    id.generation = generation(&file);
    Ok(id)
}

fn check_regular(meta: &Metadata) -> io::Result<()> {
    if meta.is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

fn generation(file: &File) -> Option<u32> {
    let mut buf: libc::c_long = 0;
    // SAFETY: the kernel writes at most an int (filesystems `put_user` an
    // `int`) into a buffer the size of a long, which is what the request
    // code declares.
    match unsafe { fs_ioc_getversion(file.as_raw_fd(), &mut buf) } {
        Ok(_) => {
            let b = buf.to_ne_bytes();
            Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_matches_stat() {
        let exe = std::env::current_exe().unwrap();
        let id = identify(&exe).unwrap();
        let meta = std::fs::metadata(&exe).unwrap();
        assert_eq!(id.ino, meta.ino());
        assert_eq!(id.dev, meta.dev());
        let (major, minor) = (
            libc::major(meta.dev() as libc::dev_t),
            libc::minor(meta.dev() as libc::dev_t),
        );
        assert_eq!(id.kdev, (major << 20) | minor);
        assert!(!id.is_none());
    }

    #[test]
    fn identify_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("metaguard-exe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"#!/bin/sh\n").unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let a = identify(&link).unwrap();
        let b = identify(&target).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ino, std::fs::metadata(&target).unwrap().ino());
        assert_ne!(a.ino, std::fs::symlink_metadata(&link).unwrap().ino());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identify_rejects_directories_and_missing_files() {
        let e = identify(Path::new("/")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = identify(Path::new("/nonexistent/metaguard")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn display() {
        let id = ExeId {
            dev: 2049,
            kdev: (8 << 20) | 1,
            ino: 42,
            generation: Some(7),
        };
        assert_eq!(id.to_string(), "2049:42:7");
        assert_eq!(
            ExeId {
                generation: None,
                ..id
            }
            .to_string(),
            "2049:42"
        );
    }
}
