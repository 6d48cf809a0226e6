//! Process modes: fork (child runs a network mode without exec) and exec
//! (child execs another program). The parent relays output and exit code.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::args::Opts;
use crate::errnames::{errno_name, last_errno};
use crate::json::{Outcome, EXIT_ERROR};
use crate::modes::{loops, run_network, stream, Report};
use crate::net;

fn pipe() -> Result<(RawFd, RawFd), i32> {
    let mut fds = [0 as RawFd; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(last_errno());
    }
    Ok((fds[0], fds[1]))
}

fn write_fd(fd: RawFd, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        let r = unsafe {
            libc::write(
                fd,
                data[off..].as_ptr() as *const libc::c_void,
                data.len() - off,
            )
        };
        if r < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += r as usize;
    }
}

/// Read until EOF; if `copy_to` is given, copy everything there as it arrives.
fn drain(fd: RawFd, copy_to: Option<RawFd>) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let r = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if r < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if r == 0 {
            break;
        }
        let chunk = &buf[..r as usize];
        if let Some(out) = copy_to {
            write_fd(out, chunk);
        } else {
            all.extend_from_slice(chunk);
        }
    }
    unsafe { libc::close(fd) };
    all
}

/// waitpid; returns the exit code (128+signal for a signalled child) and a description.
fn wait_child(pid: libc::pid_t) -> (i32, String) {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return (EXIT_ERROR, format!("waitpid: {}", errno_name(e)));
        }
        break;
    }
    if libc::WIFEXITED(status) {
        let c = libc::WEXITSTATUS(status);
        (c, format!("child {pid} exited with {c}"))
    } else if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, format!("child {pid} killed by signal {s}"))
    } else {
        (
            EXIT_ERROR,
            format!("child {pid} ended with status {status:#x}"),
        )
    }
}

/// A pipe, then fork: (pid, read end, write end); both ends are open in
/// parent and child. Failures become the mode's outcome.
fn fork_with_pipe(mode: &str) -> Result<(libc::pid_t, RawFd, RawFd), Box<Report>> {
    let (rd, wr) = pipe().map_err(|e| {
        Box::new(Report::Outcome(Outcome::fail(
            mode,
            e,
            format!("pipe: {}", errno_name(e)),
        )))
    })?;
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let e = last_errno();
        unsafe {
            libc::close(rd);
            libc::close(wr);
        }
        return Err(Box::new(Report::Outcome(Outcome::fail(
            mode,
            e,
            format!("fork: {}", errno_name(e)),
        ))));
    }
    Ok((pid, rd, wr))
}

/// `fork ... --then MODE`: the child runs MODE in-process (no exec).
pub fn fork_then(o: &Opts) -> Report {
    let mut child_opts = o.clone();
    child_opts.mode = o.then.clone().unwrap_or_default();
    let (pid, rd, wr) = match fork_with_pipe("fork") {
        Ok(t) => t,
        Err(report) => return *report,
    };
    if pid == 0 {
        unsafe { libc::close(rd) };
        let out = run_network(&child_opts);
        let line = format!("{}\n", out.to_json());
        write_fd(wr, line.as_bytes());
        unsafe { libc::_exit(out.exit) };
    }
    unsafe { libc::close(wr) };
    let data = drain(rd, None);
    let (code, how) = wait_child(pid);
    let text = String::from_utf8_lossy(&data);
    match text.lines().find(|l| !l.trim().is_empty()) {
        Some(line) => Report::Relay(line.to_string(), code),
        None => {
            let mut out = Outcome::other(
                &child_opts.mode,
                "child_failed",
                format!("{how} without a result"),
            );
            out.pid = pid;
            Report::Outcome(out)
        }
    }
}

/// `exec ... --exec PATH ARGS...`: the child execs PATH; its stdout is copied through.
pub fn fork_exec(o: &Opts) -> Report {
    match spawn_exec(o, "exec") {
        Ok((pid, rd)) => finish_exec(pid, rd),
        Err(report) => *report,
    }
}

/// Forks a child that execs `o.exec` with its stdout on a pipe: (pid, read
/// end of that pipe). Pass both to `finish_exec`.
fn spawn_exec(o: &Opts, mode: &str) -> Result<(libc::pid_t, RawFd), Box<Report>> {
    let argv_c: Result<Vec<CString>, _> = o.exec.iter().map(|a| CString::new(a.as_str())).collect();
    let argv_c = match argv_c {
        Ok(v) => v,
        Err(_) => {
            return Err(Box::new(Report::Outcome(Outcome::other(
                mode,
                "usage",
                "argument contains a NUL byte",
            ))))
        }
    };
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());

    let (pid, rd, wr) = fork_with_pipe(mode)?;
    if pid == 0 {
        unsafe {
            libc::close(rd);
            libc::dup2(wr, 1); // dup2 clears O_CLOEXEC on fd 1
            libc::close(wr);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(argv[0], argv.as_ptr());
        }
        let e = last_errno();
        let out = Outcome::fail(
            "exec",
            e,
            format!("execvp({:?}): {}", o.exec[0], errno_name(e)),
        );
        write_fd(1, format!("{}\n", out.to_json()).as_bytes());
        unsafe { libc::_exit(out.exit) };
    }
    unsafe { libc::close(wr) };
    Ok((pid, rd))
}

/// Copies the exec'd child's stdout through and waits for it.
fn finish_exec(pid: libc::pid_t, rd: RawFd) -> Report {
    drain(rd, Some(1));
    let (code, how) = wait_child(pid);
    if code >= 128 {
        eprintln!("metaguard-probe: exec: {how}");
    }
    Report::Passed(code)
}

/// `pass-fd ADDR PORT --exec PATH ARGS...`: connects here (as this program),
/// then forks and execs PATH, which inherits the connected socket (its number
/// in `METAGUARD_PROBE_FD`); run PATH as `send-fd ADDR PORT` to send on it.
/// `mapped`: a dual-stack IPv6 socket to ::ffff:ADDR (`pass-fd6-mapped`).
pub fn pass_fd(o: &Opts, mapped: bool) -> Report {
    let ip = if mapped {
        match o.ip.mapped() {
            Ok(ip) => ip,
            Err(m) => return Report::Outcome(Outcome::other(&o.mode, "usage", m)),
        }
    } else {
        o.ip
    };
    if o.exec.is_empty() {
        return Report::Outcome(Outcome::other(
            &o.mode,
            "usage",
            "pass-fd needs --exec PATH send-fd ADDR PORT",
        ));
    }
    let fd = match stream::open_connected(o, &o.mode, ip, 0, mapped) {
        Ok(fd) => fd,
        Err(out) => return Report::Outcome(*out),
    };
    // Keep the socket open across exec.
    if unsafe { libc::fcntl(fd.raw(), libc::F_SETFD, 0) } < 0 {
        let e = last_errno();
        return Report::Outcome(Outcome::fail(
            &o.mode,
            e,
            format!("fcntl(F_SETFD): {}", errno_name(e)),
        ));
    }
    std::env::set_var(stream::INHERITED_FD_ENV, fd.raw().to_string());
    let report = fork_exec(o);
    drop(fd);
    report
}

/// `pass-scm ADDR PORT --exec PATH send-fd ADDR PORT`: connects here (as this
/// program), then forks and execs PATH with one end of a Unix socketpair (its
/// number in `METAGUARD_PROBE_UNIX`) and sends the connected socket over the
/// other end with SCM_RIGHTS. PATH does not inherit the TCP socket: it only
/// gets it by receiving it (`send-fd` does, when `METAGUARD_PROBE_UNIX` is
/// set), and this process closes its own copy once sent.
pub fn pass_scm(o: &Opts) -> Report {
    let mode = o.mode.as_str();
    if o.exec.is_empty() {
        return Report::Outcome(Outcome::other(
            mode,
            "usage",
            "pass-scm needs --exec PATH send-fd ADDR PORT",
        ));
    }
    let tcp = match stream::open_connected(o, mode, o.ip, 0, false) {
        Ok(fd) => fd,
        Err(out) => return Report::Outcome(*out),
    };
    let mut pair = [0 as RawFd; 2];
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if r < 0 {
        let e = last_errno();
        return Report::Outcome(Outcome::fail(
            mode,
            e,
            format!("socketpair: {}", errno_name(e)),
        ));
    }
    let (ours, theirs) = (net::Fd(pair[0]), net::Fd(pair[1]));
    // Only the child's end survives the exec.
    if unsafe { libc::fcntl(theirs.raw(), libc::F_SETFD, 0) } < 0 {
        let e = last_errno();
        return Report::Outcome(Outcome::fail(
            mode,
            e,
            format!("fcntl(F_SETFD): {}", errno_name(e)),
        ));
    }
    std::env::set_var(stream::UNIX_FD_ENV, theirs.raw().to_string());
    let (pid, rd) = match spawn_exec(o, mode) {
        Ok(t) => t,
        Err(report) => return *report,
    };
    drop(theirs);
    // The child is running: hand it the socket, then let go of ours. If the
    // send fails, closing our end gives the child EOF instead of the socket.
    if let Err(e) = net::send_fd(ours.raw(), tcp.raw()) {
        eprintln!(
            "metaguard-probe: {mode}: sendmsg(SCM_RIGHTS): {}",
            errno_name(e)
        );
    }
    drop(tcp);
    drop(ours);
    finish_exec(pid, rd)
}

/// How long `hold` waits for its trigger on stdin.
pub const HOLD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `hold ADDR PORT [--path P] [--exec PATH ARGS...]`: a keep-alive
/// connection held open across an outside event. Connects, sends one
/// keep-alive GET of the default path and reads its response, prints
/// `{"mode":"hold","ready":true}`, then waits (at most 30 s) for a line on
/// stdin. Then it sends a keep-alive GET of `--path` on the same connection
/// and reports that request; or, with `--exec`, hands the connection to
/// PATH instead (inherited across fork+exec, as `pass-fd` does: run PATH as
/// `send-fd ADDR PORT`).
pub fn hold(o: &Opts) -> Report {
    let mode = o.mode.as_str();
    let fd = match stream::open_connected(o, mode, o.ip, 0, false) {
        Ok(fd) => fd,
        Err(out) => return Report::Outcome(*out),
    };
    let host = o.ip.host_header();
    let first = net::http_get(crate::args::DEFAULT_PATH, &host, true);
    let mut buf = Vec::new();
    if let Err(e) = loops::one_request(&fd, &first, &mut buf, net::Deadline::after(o.timeout)) {
        return Report::Outcome(Outcome::fail(
            mode,
            e,
            format!("the first request failed: {}", errno_name(e)),
        ));
    }
    write_fd(1, b"{\"mode\":\"hold\",\"ready\":true}\n");
    // The trigger: a line (or end of input) on stdin, bounded.
    match net::wait(0, libc::POLLIN, net::Deadline::after(HOLD_WAIT)) {
        Ok(0) => {
            return Report::Outcome(Outcome::fail(
                mode,
                libc::ETIMEDOUT,
                "no trigger on stdin within 30 s",
            ))
        }
        Ok(_) => {
            let mut b = [0u8; 256];
            unsafe { libc::read(0, b.as_mut_ptr() as *mut libc::c_void, b.len()) };
        }
        Err(e) => {
            return Report::Outcome(Outcome::fail(
                mode,
                e,
                format!("waiting on stdin: {}", errno_name(e)),
            ))
        }
    }
    if !o.exec.is_empty() {
        if unsafe { libc::fcntl(fd.raw(), libc::F_SETFD, 0) } < 0 {
            let e = last_errno();
            return Report::Outcome(Outcome::fail(
                mode,
                e,
                format!("fcntl(F_SETFD): {}", errno_name(e)),
            ));
        }
        std::env::set_var(stream::INHERITED_FD_ENV, fd.raw().to_string());
        let report = fork_exec(o);
        drop(fd);
        return report;
    }
    let req = net::http_get(&o.path, &host, true);
    match loops::one_request(&fd, &req, &mut buf, net::Deadline::after(o.timeout)) {
        Ok(body) => {
            let mut out = Outcome::success(mode, "second request on the held connection answered");
            out.bytes = body.len();
            out.body = body;
            Report::Outcome(out)
        }
        Err(e) => Report::Outcome(Outcome::fail(
            mode,
            e,
            format!(
                "the second request on the held connection failed: {}",
                errno_name(e)
            ),
        )),
    }
}
