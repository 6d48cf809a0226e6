//! io_uring modes: IORING_OP_CONNECT (optionally from an SQPOLL kernel thread)
//! bounded by a linked timeout, then plain write/read on the fd.

use io_uring::{opcode, squeue, types, IoUring};

use crate::addr::SockAddr;
use crate::args::Opts;
use crate::errnames::errno_name;
use crate::json::Outcome;
use crate::modes::stream::exchange;
use crate::net;

const CONNECT_TAG: u64 = 1;
const TIMEOUT_TAG: u64 = 2;

pub fn connect(o: &Opts, mode: &str, sqpoll: bool) -> Outcome {
    let mut builder = IoUring::builder();
    if sqpoll {
        builder.setup_sqpoll(1000);
    }
    let mut ring: IoUring = match builder.build(8) {
        Ok(r) => r,
        Err(e) => {
            let en = e.raw_os_error().unwrap_or(0);
            return if matches!(
                en,
                libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL | libc::EOPNOTSUPP
            ) {
                Outcome::unsupported(
                    mode,
                    en,
                    format!(
                        "io_uring_setup: {} (kernel.io_uring_disabled?)",
                        errno_name(en)
                    ),
                )
            } else {
                Outcome::fail(mode, en, format!("io_uring_setup: {}", errno_name(en)))
            };
        }
    };

    let fd = match net::socket(o.ip.family(), libc::SOCK_STREAM, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::fail(mode, e, format!("socket: {}", errno_name(e))),
    };
    let sa = SockAddr::new(o.ip, o.port);
    let ts = types::Timespec::new()
        .sec(o.timeout.as_secs())
        .nsec(o.timeout.subsec_nanos());
    let connect = opcode::Connect::new(types::Fd(fd.raw()), sa.as_ptr(), sa.len())
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(CONNECT_TAG);
    let timeout = opcode::LinkTimeout::new(&ts).build().user_data(TIMEOUT_TAG);
    // SAFETY: `sa` and `ts` outlive the wait below, which collects both completions.
    unsafe {
        let mut sq = ring.submission();
        if sq.push(&connect).is_err() || sq.push(&timeout).is_err() {
            return Outcome::other(mode, "uring", "submission queue full");
        }
    }

    let mut connect_res: Option<i32> = None;
    let mut seen = 0;
    let mut spins = 0;
    while seen < 2 {
        spins += 1;
        if spins > 1000 {
            return Outcome::other(mode, "uring", "completions did not arrive");
        }
        match ring.submit_and_wait(2 - seen) {
            Ok(_) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                let en = e.raw_os_error().unwrap_or(0);
                return Outcome::fail(mode, en, format!("io_uring_enter: {}", errno_name(en)));
            }
        }
        for cqe in ring.completion() {
            seen += 1;
            if cqe.user_data() == CONNECT_TAG {
                connect_res = Some(cqe.result());
            }
        }
    }
    let res = connect_res.unwrap_or(-libc::EIO);
    let how = if sqpoll {
        "IORING_OP_CONNECT (SQPOLL)"
    } else {
        "IORING_OP_CONNECT"
    };
    if res < 0 {
        let e = if res == -libc::ECANCELED {
            libc::ETIMEDOUT
        } else {
            -res
        };
        return Outcome::fail(
            mode,
            e,
            format!("{how} {} port {}: {}", o.ip, o.port, errno_name(e)),
        );
    }
    if let Err(e) = net::set_nonblocking(fd.raw(), true) {
        return Outcome::fail(mode, e, format!("fcntl(O_NONBLOCK): {}", errno_name(e)));
    }
    let mut out = exchange(o, mode, &fd, true, 0);
    if out.ok {
        out.detail = format!("{how} succeeded; response received");
    }
    out
}
