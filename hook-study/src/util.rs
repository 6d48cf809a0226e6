//! Small pieces shared by the harness, its client and its proxy: errno
//! names, CPU affinity, the clock, HTTP/1.1 framing.
use std::io::{self, Read};

/// CLOCK_MONOTONIC in ns (comparable across processes).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EAGAIN => "EAGAIN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EPIPE => "EPIPE",
        libc::ENOBUFS => "ENOBUFS",
        libc::EBADMSG => "EBADMSG",
        _ => return format!("errno{e}"),
    };
    n.to_string()
}

/// The name of an I/O error's errno, or its kind.
pub fn io_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(c) => errno_name(c),
        None => format!("{:?}", e.kind()),
    }
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pins the calling thread (and what it spawns later) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: valid set and size; 0 = calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Pins every thread of process `pid` (threads spawned later inherit the
/// mask of their creator, which is among them).
pub fn pin_process(pid: u32, cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus);
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(tid) = e?.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: valid set and size; a vanished thread just fails.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    }
    Ok(())
}

/// Every online CPU (not the caller's affinity mask, which may be pinned).
pub fn all_cpus() -> Vec<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    (0..n).collect()
}

/// Upper bound on a request or response head.
pub const MAX_HEAD: usize = 16 * 1024;

/// Reads from `r` into `buf` until it holds a complete head ("\r\n\r\n");
/// returns the head's length. EOF before that is ECONNRESET.
pub fn read_head<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(p + 4);
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        match r.read(&mut chunk)? {
            0 => return Err(io::Error::from_raw_os_error(libc::ECONNRESET)),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

/// Status code and Content-Length of a response head.
pub fn parse_response_head(head: &[u8]) -> Option<(u16, usize)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    Some((status, len))
}

/// Reads one whole response (head + Content-Length body) from `r`, keeping
/// any extra bytes in `buf`. Returns (status, the raw response bytes).
pub fn read_response<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<(u16, Vec<u8>)> {
    let h = read_head(r, buf)?;
    let (status, len) = parse_response_head(&buf[..h])
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADMSG))?;
    let mut chunk = [0u8; 8192];
    while buf.len() < h + len {
        match r.read(&mut chunk)? {
            0 => return Err(io::Error::from_raw_os_error(libc::ECONNRESET)),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
    let whole: Vec<u8> = buf.drain(..h + len).collect();
    Ok((status, whole))
}

pub fn get_request(path: &str, host: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hook-study\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

/// User + system CPU time of `who` (RUSAGE_SELF: every thread of this
/// process, exited ones included; RUSAGE_CHILDREN: waited-for children), ns.
pub fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: ru is a valid out pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
