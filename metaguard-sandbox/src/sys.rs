//! Thin wrappers over the system calls and tools the sandbox needs.
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::{SocketAddrV6, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount point of the cgroup2 hierarchy, read from /proc/mounts (layouts differ).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(unescape_mount_path(f[1])))
        .context("no cgroup2 mount in /proc/mounts")
}

/// /proc/mounts escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Opens a file with O_CLOEXEC so forked children do not leak it past exec.
pub fn open_cloexec(path: &Path, write: bool) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mode = if write {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    // SAFETY: c is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), mode | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread (only) into the network namespace at `path`.
pub fn setns_thread(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: f is an open namespace fd for the duration of the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TCP listener on an IPv6 address that does not also take the IPv4 port.
pub fn tcp_listen_v6only(addr: SocketAddrV6) -> io::Result<TcpListener> {
    // SAFETY: plain socket creation; the fd is wrapped in OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let sa = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: addr.port().to_be(),
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: addr.ip().octets(),
        },
        sin6_scope_id: 0,
    };
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: sa is a valid sockaddr_in6 of the stated length.
    if unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sa as *const libc::sockaddr_in6).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let l = TcpListener::from(sock);
    deep_backlog(&l)?;
    Ok(l)
}

/// Listen again with a backlog a benchmark's burst of connects cannot fill
/// (the netns's somaxconn caps it): a full accept queue drops SYNs, and each
/// drop costs the client a one-second retransmit.
pub fn deep_backlog(l: &TcpListener) -> io::Result<()> {
    // SAFETY: l is a bound stream socket; listen on a listening socket only
    // changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when the peer of a just-accepted connection has already closed it
/// without sending anything (a connect+close), so nothing is left to serve.
pub fn closed_unused(s: &std::net::TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: b is a valid 1-byte buffer; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

fn setsockopt_int(sock: &OwnedFd, level: i32, name: i32, val: libc::c_int) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val lives across the call and len matches its size.
    if unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&val as *const libc::c_int).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs a tool to completion; the error names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(
            unescape_mount_path("/sys/fs/cgroup/unified"),
            "/sys/fs/cgroup/unified"
        );
        assert_eq!(unescape_mount_path("/a\\040b\\\\"), "/a b\\\\");
    }

    #[test]
    fn finds_a_cgroup2_mount() {
        let m = cgroup2_mount().unwrap();
        assert!(m.join("cgroup.procs").exists(), "{}", m.display());
    }
}
