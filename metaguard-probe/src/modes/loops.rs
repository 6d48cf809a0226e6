//! Measurement loops: connect-loop and http-loop.

use std::time::{Duration, Instant};

use crate::addr::SockAddr;
use crate::args::Opts;
use crate::errnames::errno_name;
use crate::json::Outcome;
use crate::net::{self, Deadline};
use crate::stats::{mono_ns, LoopStats};

/// Total wall-clock budget of a loop.
pub const TOTAL_BUDGET: Duration = Duration::from_secs(60);

fn finish(mode: &str, st: &LoopStats, body: Vec<u8>, what: &str) -> Outcome {
    let mut out = if st.all_ok() {
        Outcome::success(mode, format!("{} {what} ok", st.ok))
    } else {
        let e = match st.main_errno() {
            0 => libc::ETIMEDOUT,
            e => e,
        };
        let why = st.stopped_early.clone().unwrap_or_default();
        Outcome::fail(
            mode,
            e,
            format!("{} of {} {what} ok; {why}", st.ok, st.requested),
        )
    };
    out.body = body;
    out.bytes = out.body.len();
    out.extra.extend(st.json_fields());
    out
}

/// One iteration: blocking socket + connect + close (SO_LINGER 0, so no TIME_WAIT pile-up).
fn one_connect(o: &Opts, sa: &SockAddr) -> Result<(), i32> {
    let fd = net::socket(o.ip.family(), libc::SOCK_STREAM, 0)?;
    net::set_io_timeouts(fd.raw(), o.timeout)?;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    net::setsockopt(fd.raw(), libc::SOL_SOCKET, libc::SO_LINGER, &linger)?;
    net::connect_blocking(fd.raw(), sa)
}

pub fn connect_loop(o: &Opts, mode: &str) -> Outcome {
    let n = o.count.unwrap_or(1);
    let mut st = LoopStats::new(n);
    let sa = SockAddr::new(o.ip, o.port);
    let start = Instant::now();
    for _ in 0..n {
        if start.elapsed() >= TOTAL_BUDGET {
            st.stopped_early = Some(format!(
                "stopped at the {} s total deadline",
                TOTAL_BUDGET.as_secs()
            ));
            break;
        }
        let t0 = mono_ns();
        let r = one_connect(o, &sa);
        st.record(mono_ns() - t0, r);
    }
    finish(mode, &st, Vec::new(), "connects")
}

/// Send one keep-alive GET and read exactly one response (Content-Length framed).
/// Returns the response body.
pub fn one_request(
    fd: &net::Fd,
    req: &[u8],
    buf: &mut Vec<u8>,
    deadline: Deadline,
) -> Result<Vec<u8>, i32> {
    net::send_all(fd.raw(), req, deadline)?;
    let mut chunk = [0u8; 16384];
    let hdr_end = loop {
        if let Some(p) = net::header_end(buf) {
            break p;
        }
        if buf.len() > net::MAX_RESPONSE {
            return Err(libc::EMSGSIZE);
        }
        match net::read_some(fd.raw(), &mut chunk, deadline)? {
            0 => return Err(libc::ECONNRESET),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    };
    let cl = net::content_length(&buf[..hdr_end]).ok_or(libc::EBADMSG)?;
    if cl > net::MAX_RESPONSE {
        return Err(libc::EMSGSIZE);
    }
    while buf.len() < hdr_end + cl {
        match net::read_some(fd.raw(), &mut chunk, deadline)? {
            0 => return Err(libc::ECONNRESET),
            k => buf.extend_from_slice(&chunk[..k]),
        }
    }
    let body = buf[hdr_end..hdr_end + cl].to_vec();
    buf.drain(..hdr_end + cl);
    Ok(body)
}

pub fn http_loop(o: &Opts, mode: &str) -> Outcome {
    let n = o.count.unwrap_or(1);
    let mut st = LoopStats::new(n);
    let fd = match net::socket(o.ip.family(), libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) {
        Ok(fd) => fd,
        Err(e) => {
            st.stopped_early = Some(format!("socket: {}", errno_name(e)));
            st.first_errno = e;
            return finish(mode, &st, Vec::new(), "requests");
        }
    };
    let sa = SockAddr::new(o.ip, o.port);
    if let Err(e) = net::connect_nb(fd.raw(), &sa, Deadline::after(o.timeout)) {
        st.stopped_early = Some(format!(
            "connect {} port {}: {}",
            o.ip,
            o.port,
            errno_name(e)
        ));
        st.first_errno = e;
        return finish(mode, &st, Vec::new(), "requests");
    }
    let req = net::http_get(&o.path, &o.ip.host_header(), true);
    let start = Instant::now();
    let mut buf = Vec::new();
    let mut last_body = Vec::new();
    for i in 0..n {
        let left = TOTAL_BUDGET.saturating_sub(start.elapsed());
        if left.is_zero() {
            st.stopped_early = Some(format!(
                "stopped at the {} s total deadline",
                TOTAL_BUDGET.as_secs()
            ));
            break;
        }
        let deadline = Deadline::after(o.timeout.min(left));
        let t0 = mono_ns();
        let r = one_request(&fd, &req, &mut buf, deadline);
        let ns = mono_ns() - t0;
        match r {
            Ok(body) => {
                st.record(ns, Ok(()));
                last_body = body;
            }
            Err(e) => {
                st.record(ns, Err(e));
                st.stopped_early = Some(format!("request {} failed: {}", i + 1, errno_name(e)));
                break;
            }
        }
    }
    finish(mode, &st, last_body, "requests")
}
