//! Thin socket helpers over libc: owned fds, non-blocking connect with poll,
//! deadline-bounded reads and writes, HTTP request/response helpers.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::addr::SockAddr;
use crate::errnames::last_errno;

/// An owned file descriptor, closed on drop.
pub struct Fd(pub RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            unsafe { libc::close(self.0) };
        }
    }
}

impl Fd {
    pub fn raw(&self) -> RawFd {
        self.0
    }
}

/// An absolute deadline.
#[derive(Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn after(d: Duration) -> Deadline {
        Deadline(Instant::now() + d)
    }

    /// Milliseconds left, rounded up, for poll(); 0 once passed.
    pub fn poll_ms(&self) -> i32 {
        let left = self.0.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000);
        ms.min(i32::MAX as u128) as i32
    }
}

pub fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> Result<Fd, i32> {
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        Err(last_errno())
    } else {
        Ok(Fd(fd))
    }
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> Result<(), i32> {
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(last_errno());
    }
    let nf = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if unsafe { libc::fcntl(fd, libc::F_SETFL, nf) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}

pub fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> Result<(), i32> {
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

pub fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> Result<(), i32> {
    setsockopt(fd, level, name, &v)
}

pub fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

/// SO_SNDTIMEO and SO_RCVTIMEO (bounds blocking connect/send/recv).
pub fn set_io_timeouts(fd: RawFd, d: Duration) -> Result<(), i32> {
    let tv = timeval(d);
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
}

pub fn so_error(fd: RawFd) -> i32 {
    let mut e: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut e as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        last_errno()
    } else {
        e
    }
}

/// poll() one fd for `events` until the deadline. Ok(revents) (0 = timed out).
pub fn wait(fd: RawFd, events: libc::c_short, deadline: Deadline) -> Result<libc::c_short, i32> {
    loop {
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, deadline.poll_ms()) };
        if r < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return Ok(if r == 0 { 0 } else { p.revents });
    }
}

/// Connect a non-blocking socket, waiting with poll until the deadline.
/// Errors are errnos; a timeout is ETIMEDOUT.
pub fn connect_nb(fd: RawFd, sa: &SockAddr, deadline: Deadline) -> Result<(), i32> {
    let r = unsafe { libc::connect(fd, sa.as_ptr(), sa.len()) };
    if r == 0 {
        return Ok(());
    }
    let e = last_errno();
    if e != libc::EINPROGRESS && e != libc::EINTR {
        return Err(e);
    }
    let rev = wait(fd, libc::POLLOUT, deadline)?;
    if rev == 0 {
        return Err(libc::ETIMEDOUT);
    }
    match so_error(fd) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// Blocking connect (the socket may carry SO_SNDTIMEO; its expiry becomes ETIMEDOUT).
pub fn connect_blocking(fd: RawFd, sa: &SockAddr) -> Result<(), i32> {
    loop {
        let r = unsafe { libc::connect(fd, sa.as_ptr(), sa.len()) };
        if r == 0 {
            return Ok(());
        }
        match last_errno() {
            libc::EINTR => continue,
            libc::EINPROGRESS | libc::EAGAIN => return Err(libc::ETIMEDOUT),
            e => return Err(e),
        }
    }
}

/// Send all of `data` (MSG_NOSIGNAL), polling when the socket is full.
pub fn send_all(fd: RawFd, data: &[u8], deadline: Deadline) -> Result<usize, i32> {
    write_with(fd, data, deadline, |rest| unsafe {
        libc::send(
            fd,
            rest.as_ptr() as *const libc::c_void,
            rest.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Plain write(2) of all of `data` (used by the io_uring modes).
pub fn write_all(fd: RawFd, data: &[u8], deadline: Deadline) -> Result<usize, i32> {
    write_with(fd, data, deadline, |rest| unsafe {
        libc::write(fd, rest.as_ptr() as *const libc::c_void, rest.len())
    })
}

/// Calls `op` on what is left of `data` until all of it is written,
/// retrying on EINTR and polling on EAGAIN until `deadline`.
fn write_with(
    fd: RawFd,
    data: &[u8],
    deadline: Deadline,
    op: impl Fn(&[u8]) -> isize,
) -> Result<usize, i32> {
    let mut off = 0;
    while off < data.len() {
        let r = op(&data[off..]);
        if r >= 0 {
            off += r as usize;
            continue;
        }
        match last_errno() {
            libc::EINTR => continue,
            libc::EAGAIN => {
                if wait(fd, libc::POLLOUT, deadline)? == 0 {
                    return Err(libc::ETIMEDOUT);
                }
            }
            e => return Err(e),
        }
    }
    Ok(off)
}

/// One read: Ok(0) = EOF, Err(ETIMEDOUT) if nothing arrives before the deadline.
pub fn read_some(fd: RawFd, buf: &mut [u8], deadline: Deadline) -> Result<usize, i32> {
    loop {
        if wait(fd, libc::POLLIN, deadline)? == 0 {
            return Err(libc::ETIMEDOUT);
        }
        let r = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        match last_errno() {
            libc::EINTR | libc::EAGAIN => continue,
            e => return Err(e),
        }
    }
}

/// Read until EOF, an error, the deadline, or `max` bytes.
/// Returns the data and the error that ended reading (None = clean EOF or max reached).
pub fn read_to_close(fd: RawFd, deadline: Deadline, max: usize) -> (Vec<u8>, Option<i32>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while out.len() < max {
        match read_some(fd, &mut buf, deadline) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The HTTP GET request the probe sends.
pub fn http_get(path: &str, host: &str, keep_alive: bool) -> Vec<u8> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n").into_bytes()
}

/// Position just past the header terminator, if complete.
pub fn header_end(resp: &[u8]) -> Option<usize> {
    resp.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// The body of an HTTP response (everything, if no header terminator is found).
pub fn http_body(resp: &[u8]) -> &[u8] {
    match header_end(resp) {
        Some(p) => &resp[p..],
        None => resp,
    }
}

/// Content-Length from the header block, if present.
pub fn content_length(headers: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(headers);
    text.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Largest response the probe keeps (the JSON body is cut further, to 4 KiB).
pub const MAX_RESPONSE: usize = 1 << 20;

/// The single data byte that carries an SCM_RIGHTS message.
fn one_byte_iov(byte: &mut [u8; 1]) -> libc::iovec {
    libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    }
}

/// Control space for one fd, 8-byte aligned.
fn fd_control_buf() -> Vec<u64> {
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    vec![0u64; space.div_ceil(8)]
}

/// A message of `iov` with room for one fd in `cbuf`.
fn fd_msghdr(iov: &mut libc::iovec, cbuf: &mut [u64]) -> libc::msghdr {
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    msg
}

/// Sends `fd` over the Unix socket `unix` with SCM_RIGHTS (one data byte).
pub fn send_fd(unix: RawFd, fd: RawFd) -> Result<(), i32> {
    let mut byte = [b'F'];
    let mut iov = one_byte_iov(&mut byte);
    let mut cbuf = fd_control_buf();
    let msg = fd_msghdr(&mut iov, &mut cbuf);
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
    }
    loop {
        let r = unsafe { libc::sendmsg(unix, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = last_errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Receives one fd sent with SCM_RIGHTS on the Unix socket `unix`, waiting
/// until `deadline`. The received fd is close-on-exec.
pub fn recv_fd(unix: RawFd, deadline: Deadline) -> Result<Fd, i32> {
    if wait(unix, libc::POLLIN, deadline)? == 0 {
        return Err(libc::ETIMEDOUT);
    }
    let mut byte = [0u8; 1];
    let mut iov = one_byte_iov(&mut byte);
    let mut cbuf = fd_control_buf();
    let mut msg = fd_msghdr(&mut iov, &mut cbuf);
    let r = loop {
        let r = unsafe { libc::recvmsg(unix, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r < 0 && last_errno() == libc::EINTR {
            continue;
        }
        break r;
    };
    if r < 0 {
        return Err(last_errno());
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(libc::EMSGSIZE);
    }
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            // EOF or a message without a descriptor.
            return Err(libc::EBADMSG);
        }
        Ok(Fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(c) as *const RawFd
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_format() {
        assert_eq!(
            http_get("/latest/meta-data/instance-id", "169.254.169.254", false),
            b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".to_vec()
        );
        assert!(String::from_utf8(http_get("/", "h", true))
            .unwrap()
            .contains("keep-alive"));
    }

    #[test]
    fn response_parsing() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello";
        assert_eq!(http_body(r), b"hello");
        assert_eq!(content_length(&r[..header_end(r).unwrap()]), Some(5));
        assert_eq!(http_body(b"raw"), b"raw");
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length:12\r\n\r\n"),
            Some(12)
        );
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
