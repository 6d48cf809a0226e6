//! TCP-like stream modes: tcp, tcp6-mapped, mptcp, connect-only, tfo.

use crate::addr::{Ip, SockAddr};
use crate::args::Opts;
use crate::errnames::{errno_name, last_errno};
use crate::json::Outcome;
use crate::net::{self, Deadline};

pub const IPPROTO_MPTCP: libc::c_int = 262;

/// The target of a stream mode: ADDR, or ::ffff:ADDR for the mapped modes.
fn target(o: &Opts, mapped: bool) -> Result<Ip, String> {
    if mapped {
        o.ip.mapped()
    } else {
        Ok(o.ip)
    }
}

/// Create a non-blocking stream socket for `ip` (dual-stack if `mapped`) and connect it.
pub fn open_connected(
    o: &Opts,
    mode: &str,
    ip: Ip,
    proto: libc::c_int,
    mapped: bool,
) -> Result<net::Fd, Box<Outcome>> {
    let fd =
        net::socket(ip.family(), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, proto).map_err(|e| {
            Box::new(
                if proto == IPPROTO_MPTCP
                    && matches!(e, libc::EPROTONOSUPPORT | libc::EINVAL | libc::ENOPROTOOPT)
                {
                    Outcome::unsupported(
                        mode,
                        e,
                        format!("socket(IPPROTO_MPTCP): {}", errno_name(e)),
                    )
                } else {
                    Outcome::fail(mode, e, format!("socket: {}", errno_name(e)))
                },
            )
        })?;
    if mapped {
        net::set_int_opt(fd.raw(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).map_err(|e| {
            Box::new(Outcome::fail(
                mode,
                e,
                format!("setsockopt(IPV6_V6ONLY=0): {}", errno_name(e)),
            ))
        })?;
    }
    let sa = SockAddr::new(ip, o.port);
    net::connect_nb(fd.raw(), &sa, Deadline::after(o.timeout)).map_err(|e| {
        Box::new(Outcome::fail(
            mode,
            e,
            format!("connect {ip} port {}: {}", o.port, errno_name(e)),
        ))
    })?;
    Ok(fd)
}

/// Send the GET on a connected socket and read the response until close/timeout.
/// `use_write` sends with write(2) instead of send(2). `already_sent` bytes of the
/// request went out earlier (TFO).
pub fn exchange(
    o: &Opts,
    mode: &str,
    fd: &net::Fd,
    use_write: bool,
    already_sent: usize,
) -> Outcome {
    let req = net::http_get(&o.path, &o.ip.host_header(), false);
    let deadline = Deadline::after(o.timeout);
    let rest = &req[already_sent.min(req.len())..];
    let sent = if use_write {
        net::write_all(fd.raw(), rest, deadline)
    } else {
        net::send_all(fd.raw(), rest, deadline)
    };
    let sent = match sent {
        Ok(n) => n + already_sent,
        Err(e) => {
            return Outcome::fail(
                mode,
                e,
                format!(
                    "connected, but sending the request failed: {}",
                    errno_name(e)
                ),
            )
        }
    };
    let (data, err) = net::read_to_close(fd.raw(), deadline, net::MAX_RESPONSE);
    let mut out = if !data.is_empty() {
        let mut s = Outcome::success(mode, "connected; response received");
        if let Some(e) = err {
            s.detail = format!(
                "connected; response received (read ended with {})",
                errno_name(e)
            );
        }
        s
    } else {
        match err {
            None => Outcome::other(
                mode,
                "no_response",
                "connected; peer closed without a response",
            ),
            Some(e) => Outcome::fail(
                mode,
                e,
                format!("connected; no response: {}", errno_name(e)),
            ),
        }
    };
    out.sent = sent;
    out.bytes = data.len();
    out.body = net::http_body(&data).to_vec();
    out
}

pub fn tcp(o: &Opts, mode: &str, mapped: bool) -> Outcome {
    let ip = match target(o, mapped) {
        Ok(ip) => ip,
        Err(m) => return Outcome::other(mode, "usage", m),
    };
    match open_connected(o, mode, ip, 0, mapped) {
        Ok(fd) => exchange(o, mode, &fd, false, 0),
        Err(out) => *out,
    }
}

pub fn mptcp(o: &Opts, mode: &str) -> Outcome {
    match open_connected(o, mode, o.ip, IPPROTO_MPTCP, false) {
        Ok(fd) => exchange(o, mode, &fd, false, 0),
        Err(out) => *out,
    }
}

pub fn connect_only(o: &Opts, mode: &str) -> Outcome {
    match open_connected(o, mode, o.ip, 0, false) {
        Ok(_fd) => Outcome::success(mode, format!("connected to {} port {}", o.ip, o.port)),
        Err(out) => *out,
    }
}

/// TCP Fast Open: the request rides on sendto(MSG_FASTOPEN) on a fresh blocking socket.
pub fn tfo(o: &Opts, mode: &str) -> Outcome {
    let fd = match net::socket(o.ip.family(), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::fail(mode, e, format!("socket: {}", errno_name(e))),
    };
    if let Err(e) = net::set_io_timeouts(fd.raw(), o.timeout) {
        return Outcome::fail(
            mode,
            e,
            format!("setsockopt(SO_SNDTIMEO/SO_RCVTIMEO): {}", errno_name(e)),
        );
    }
    let req = net::http_get(&o.path, &o.ip.host_header(), false);
    let sa = SockAddr::new(o.ip, o.port);
    let r = loop {
        let r = unsafe {
            libc::sendto(
                fd.raw(),
                req.as_ptr() as *const libc::c_void,
                req.len(),
                libc::MSG_FASTOPEN | libc::MSG_NOSIGNAL,
                sa.as_ptr(),
                sa.len(),
            )
        };
        if r < 0 && last_errno() == libc::EINTR {
            continue;
        }
        break r;
    };
    if r < 0 {
        let e = last_errno();
        return match e {
            libc::EINPROGRESS | libc::EAGAIN => Outcome::fail(
                mode,
                libc::ETIMEDOUT,
                "sendto(MSG_FASTOPEN): timed out".to_string(),
            ),
            libc::EOPNOTSUPP => Outcome::unsupported(
                mode,
                e,
                "sendto(MSG_FASTOPEN): EOPNOTSUPP (net.ipv4.tcp_fastopen client bit off?)",
            ),
            _ => Outcome::fail(mode, e, format!("sendto(MSG_FASTOPEN): {}", errno_name(e))),
        };
    }
    let mut out = exchange(o, mode, &fd, false, r as usize);
    if out.ok {
        out.detail = format!("fast-open sendto sent {r} bytes; response received");
    }
    out
}

/// The environment variable naming the inherited socket of `send-fd`.
pub const INHERITED_FD_ENV: &str = "METAGUARD_PROBE_FD";

/// The environment variable naming a Unix socket on which `send-fd` first
/// receives the socket to send on (SCM_RIGHTS; set by `pass-scm`).
pub const UNIX_FD_ENV: &str = "METAGUARD_PROBE_UNIX";

fn env_fd(name: &str) -> Option<i32> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd >= 0)
}

/// `send-fd`: send the GET on a connected socket this process did not
/// connect: inherited (its number in `METAGUARD_PROBE_FD`), or received over
/// the Unix socket named in `METAGUARD_PROBE_UNIX`.
pub fn send_fd(o: &Opts, mode: &str) -> Outcome {
    if let Some(unix) = env_fd(UNIX_FD_ENV) {
        let unix = net::Fd(unix);
        return match net::recv_fd(unix.raw(), Deadline::after(o.timeout)) {
            Ok(fd) => {
                drop(unix);
                let mut out = exchange(o, mode, &fd, false, 0);
                out.detail = format!("socket received with SCM_RIGHTS; {}", out.detail);
                out
            }
            Err(e) => Outcome::fail(
                mode,
                e,
                format!("receiving the socket (SCM_RIGHTS): {}", errno_name(e)),
            ),
        };
    }
    let raw = match env_fd(INHERITED_FD_ENV) {
        Some(fd) => fd,
        None => {
            return Outcome::other(
                mode,
                "usage",
                format!("{INHERITED_FD_ENV} or {UNIX_FD_ENV} must name an inherited socket"),
            )
        }
    };
    let fd = net::Fd(raw);
    exchange(o, mode, &fd, false, 0)
}

/// http-raw: sends `--payload` exactly as given (one or more HTTP requests),
/// `--count N` bytes per send call (default: all in one), then reads until
/// the peer closes or the timeout. A 0x1e byte in the payload is not sent:
/// it ends a send call there. `body` is the whole response stream.
pub fn http_raw(o: &Opts, mode: &str) -> Outcome {
    let fd = match open_connected(o, mode, o.ip, 0, false) {
        Ok(fd) => fd,
        Err(out) => return *out,
    };
    let req = o.payload.as_bytes();
    let chunk = o.count.map_or(req.len(), |c| c as usize).max(1);
    let deadline = Deadline::after(o.timeout);
    let mut sent = 0;
    let parts = req.split(|&b| b == 0x1e).flat_map(|p| p.chunks(chunk));
    for part in parts {
        match net::send_all(fd.raw(), part, deadline) {
            Ok(n) => sent += n,
            Err(e) => {
                let mut out = Outcome::fail(
                    mode,
                    e,
                    format!("sending failed after {sent} bytes: {}", errno_name(e)),
                );
                out.sent = sent;
                return out;
            }
        }
    }
    let (data, err) = net::read_to_close(fd.raw(), deadline, net::MAX_RESPONSE);
    let mut out = if data.is_empty() {
        match err {
            None => Outcome::other(mode, "no_response", "sent; peer closed without a response"),
            Some(e) => Outcome::fail(mode, e, format!("sent; no response: {}", errno_name(e))),
        }
    } else {
        Outcome::success(mode, "sent; response received")
    };
    out.sent = sent;
    out.bytes = data.len();
    out.body = data;
    out
}
