//! Cutting a connection the kernel gave up on (`redact`: an answer it could
//! not follow). The kernel side already masks everything that arrives and
//! refuses sends on it; this ends the client's wait with a reset: the daemon
//! takes a copy of the socket from the process that last sent on it
//! (`pidfd_getfd`) and disconnects it (`connect` to `AF_UNSPEC`), which for
//! an open TCP connection sends a RST to the service and leaves ECONNRESET
//! for the client's next read. It works on the socket itself, so it needs
//! no way into the client's network namespace.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{bail, Context as _, Result};

/// Resets the connection of the socket with cookie `cookie` held by
/// process `pid`. Ok(false) when the process holds no such socket (any
/// more).
pub fn cut(pid: u32, cookie: u64) -> Result<bool> {
    // SAFETY: plain syscalls; each returned fd is owned right away.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let dir = format!("/proc/{pid}/fd");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(e) = e else { continue };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue;
        };
        if !target.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), n, 0) };
        if fd < 0 {
            continue;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut c: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_COOKIE,
                (&mut c as *mut u64).cast(),
                &mut len,
            )
        };
        if r == 0 && c == cookie {
            // SAFETY: a zeroed sockaddr whose family is AF_UNSPEC.
            let mut unspec: libc::sockaddr = unsafe { std::mem::zeroed() };
            unspec.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
            if unsafe { libc::connect(fd.as_raw_fd(), &unspec, len) } != 0 {
                bail!("disconnect: {}", std::io::Error::last_os_error());
            }
            return Ok(true);
        }
    }
    Ok(false)
}
