//! UDP modes: udp-sendto, udp6-mapped, udp-sendmsg, udp-connected.

use crate::addr::{Ip, SockAddr};
use crate::args::Opts;
use crate::errnames::{errno_name, last_errno};
use crate::json::Outcome;
use crate::net::{self, Deadline};

fn udp_socket(mode: &str, ip: Ip, dual_stack: bool) -> Result<net::Fd, Box<Outcome>> {
    let fd = net::socket(ip.family(), libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0)
        .map_err(|e| Box::new(Outcome::fail(mode, e, format!("socket: {}", errno_name(e)))))?;
    if dual_stack {
        net::set_int_opt(fd.raw(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).map_err(|e| {
            Box::new(Outcome::fail(
                mode,
                e,
                format!("setsockopt(IPV6_V6ONLY=0): {}", errno_name(e)),
            ))
        })?;
    }
    Ok(fd)
}

/// After a successful send: wait up to the timeout for one reply datagram.
fn await_reply(o: &Opts, mode: &str, fd: &net::Fd, sent: usize, how: &str) -> Outcome {
    let mut buf = vec![0u8; 65536];
    let mut out = Outcome::success(mode, "");
    out.sent = sent;
    match net::read_some(fd.raw(), &mut buf, Deadline::after(o.timeout)) {
        Ok(n) => {
            out.bytes = n;
            out.body = buf[..n].to_vec();
            out.detail = format!("{how} sent {sent} bytes; reply of {n} bytes");
        }
        Err(libc::ETIMEDOUT) => out.detail = format!("{how} sent {sent} bytes; no reply"),
        Err(e) => out.detail = format!("{how} sent {sent} bytes; no reply ({})", errno_name(e)),
    }
    out
}

fn send_result(r: isize) -> Result<usize, i32> {
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as usize)
    }
}

/// Unconnected sendto to ADDR:PORT (or ::ffff:ADDR on a dual-stack socket).
pub fn sendto(o: &Opts, mode: &str, mapped: bool) -> Outcome {
    let ip = if mapped {
        match o.ip.mapped() {
            Ok(ip) => ip,
            Err(m) => return Outcome::other(mode, "usage", m),
        }
    } else {
        o.ip
    };
    let fd = match udp_socket(mode, ip, mapped) {
        Ok(fd) => fd,
        Err(out) => return *out,
    };
    let sa = SockAddr::new(ip, o.port);
    let p = o.payload.as_bytes();
    let r = unsafe {
        libc::sendto(
            fd.raw(),
            p.as_ptr() as *const libc::c_void,
            p.len(),
            0,
            sa.as_ptr(),
            sa.len(),
        )
    };
    match send_result(r) {
        Ok(n) => await_reply(o, mode, &fd, n, &format!("sendto {ip} port {}", o.port)),
        Err(e) => Outcome::fail(
            mode,
            e,
            format!("sendto {ip} port {}: {}", o.port, errno_name(e)),
        ),
    }
}

/// Unconnected sendmsg with msg_name = ADDR:PORT.
pub fn sendmsg(o: &Opts, mode: &str) -> Outcome {
    let fd = match udp_socket(mode, o.ip, false) {
        Ok(fd) => fd,
        Err(out) => return *out,
    };
    let mut sa = SockAddr::new(o.ip, o.port);
    let mut payload = o.payload.as_bytes().to_vec();
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = sa.as_mut_ptr() as *mut libc::c_void;
    msg.msg_namelen = sa.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let r = unsafe { libc::sendmsg(fd.raw(), &msg, 0) };
    match send_result(r) {
        Ok(n) => await_reply(
            o,
            mode,
            &fd,
            n,
            &format!("sendmsg {} port {}", o.ip, o.port),
        ),
        Err(e) => Outcome::fail(
            mode,
            e,
            format!("sendmsg {} port {}: {}", o.ip, o.port, errno_name(e)),
        ),
    }
}

/// connect() the UDP socket, then send().
pub fn connected(o: &Opts, mode: &str) -> Outcome {
    let fd = match udp_socket(mode, o.ip, false) {
        Ok(fd) => fd,
        Err(out) => return *out,
    };
    let sa = SockAddr::new(o.ip, o.port);
    if unsafe { libc::connect(fd.raw(), sa.as_ptr(), sa.len()) } < 0 {
        let e = last_errno();
        return Outcome::fail(
            mode,
            e,
            format!("connect(UDP) {} port {}: {}", o.ip, o.port, errno_name(e)),
        );
    }
    let p = o.payload.as_bytes();
    let r = unsafe { libc::send(fd.raw(), p.as_ptr() as *const libc::c_void, p.len(), 0) };
    match send_result(r) {
        Ok(n) => await_reply(o, mode, &fd, n, "connect+send"),
        Err(e) => Outcome::fail(
            mode,
            e,
            format!("send on connected UDP socket: {}", errno_name(e)),
        ),
    }
}
