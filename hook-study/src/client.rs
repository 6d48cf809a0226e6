//! `hook-study client MODE key=value...`: the measured client, started by
//! the harness inside the sandbox (client netns, sandbox cgroup, its uid).
//! Prints one JSON line. Every loop is bounded by its count and a total
//! time budget.
//!
//! Modes:
//! - `connect`: socket + connect + close (SO_LINGER 0), `count` times;
//!   a connect still pending after `timeout_ms` is a "hang".
//! - `http`: keep-alive GETs of `path` on one connection (`fresh=1`: a new
//!   connection per request, timed from send to answer).
//! - `burst`: short connections (connect, GET, close), for throughput.
//! - `tls`: keep-alive GETs over TLS through the system's libssl.
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use crate::stats::median_u64;
use crate::tls;
use crate::util::{errno_name, get_request, io_name, mono_ns, pin_self, read_response};

const BUDGET: Duration = Duration::from_secs(30);
/// A loop whose first attempts all hang stops after this many: that is
/// enough to know how a block feels.
const MAX_HANGS: u64 = 3;
const MAX_COUNT: u64 = 1_000_000;

pub struct Args(BTreeMap<String, String>);

impl Args {
    pub fn parse(v: &[String]) -> anyhow::Result<Args> {
        let mut m = BTreeMap::new();
        for a in v {
            let (k, val) = a
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("expected key=value, got {a}"))?;
            m.insert(k.to_string(), val.to_string());
        }
        Ok(Args(m))
    }

    pub fn get(&self, k: &str, default: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn num(&self, k: &str, default: u64) -> anyhow::Result<u64> {
        match self.0.get(k) {
            None => Ok(default),
            Some(v) => Ok(v.parse()?),
        }
    }
}

#[derive(Default)]
struct Tally {
    samples: Vec<u64>,
    ok_samples: Vec<u64>,
    outcomes: BTreeMap<String, u64>,
    first: Option<(String, u64)>,
}

impl Tally {
    fn record(&mut self, ns: u64, outcome: &str) {
        self.samples.push(ns);
        if outcome == "ok" {
            self.ok_samples.push(ns);
        }
        *self.outcomes.entry(outcome.to_string()).or_insert(0) += 1;
        if self.first.is_none() {
            self.first = Some((outcome.to_string(), ns));
        }
    }

    /// Attempts that timed out (at connect or waiting for an answer), while
    /// none succeeded.
    fn hangs(&self) -> u64 {
        if !self.ok_samples.is_empty() {
            return 0;
        }
        self.outcomes
            .iter()
            .filter(|(k, _)| k.ends_with("hang"))
            .map(|(_, n)| n)
            .sum()
    }

    fn json(&self, mode: &str, start: u64, end: u64, extra: &str) -> String {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let (fo, fns) = self.first.clone().unwrap_or_default();
        // Attempts slower than 100 ms (a SYN retransmit, a hang).
        let slow = self.samples.iter().filter(|&&n| n > 100_000_000).count();
        let num = |x: Option<f64>| x.map_or("null".to_string(), |v| format!("{v:.0}"));
        format!(
            "{{\"mode\":\"{mode}\",\"attempts\":{},\"ok\":{},\"median_ns\":{},\"ok_median_ns\":{},\"outcomes\":{{{}}},\"first_outcome\":\"{fo}\",\"first_ns\":{fns},\"start_ns\":{start},\"end_ns\":{end},\"slow\":{slow}{extra}}}",
            self.samples.len(),
            self.ok_samples.len(),
            num(median_u64(&self.samples)),
            num(median_u64(&self.ok_samples)),
            outcomes.join(","),
        )
    }
}

/// A blocking TCP socket connected to `sa` with a connect timeout; Err is
/// the outcome name ("hang" when still pending at the timeout).
fn connect(sa: &SocketAddrV4, timeout: Duration, linger0: bool) -> Result<TcpStream, String> {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(errno_name(
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: fd is ours; TcpStream closes it.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: sa.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(sa.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: valid option pointers and sizes; sin is a sockaddr_in.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if linger0 {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as u32,
            );
        }
        libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc == 0 {
        return Ok(s);
    }
    let e = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // A blocking connect that times out (SO_SNDTIMEO) returns EINPROGRESS.
    Err(if e == libc::EINPROGRESS || e == libc::EAGAIN {
        "hang".to_string()
    } else {
        errno_name(e)
    })
}

fn outcome_of(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut {
        "hang".to_string()
    } else {
        io_name(e)
    }
}

/// One request/response on `s`; Ok("ok") for 200, Ok("HTTP nnn") otherwise.
fn exchange<S: Read + Write>(s: &mut S, req: &[u8], buf: &mut Vec<u8>) -> Result<String, String> {
    s.write_all(req).map_err(|e| outcome_of(&e))?;
    let (status, _) = read_response(s, buf).map_err(|e| outcome_of(&e))?;
    Ok(if status == 200 {
        "ok".to_string()
    } else {
        format!("HTTP {status}")
    })
}

/// Installs a seccomp filter on connect(2) (see docs/hook-study.md):
/// `inspect` returns ALLOW after looking at what it can see (the syscall
/// number, the sockaddr *pointer* and its length; never the address);
/// `deny-connect` refuses every connect with EPERM.
fn install_seccomp(kind: &str) -> anyhow::Result<()> {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const BPF_RET_K: u16 = 0x06;
    let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let nr = libc::SYS_connect as u32;
    let prog: Vec<libc::sock_filter> = match kind {
        // ld nr; jeq connect ? next : allow; ld args[2] (addrlen); ld args[1]
        // (the pointer, low word): all a filter can know; allow.
        "inspect" => vec![
            s(BPF_LD_W_ABS, 0, 0, 0),
            s(BPF_JEQ_K, 0, 2, nr),
            s(BPF_LD_W_ABS, 0, 0, 32),
            s(BPF_LD_W_ABS, 0, 0, 24),
            s(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ],
        "deny-connect" => vec![
            s(BPF_LD_W_ABS, 0, 0, 0),
            s(BPF_JEQ_K, 0, 1, nr),
            s(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | libc::EPERM as u32),
            s(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ],
        other => anyhow::bail!("unknown seccomp filter {other}"),
    };
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(io::Error::last_os_error().into());
        }
    }
    Ok(())
}

pub fn run(mode: &str, rest: &[String]) -> anyhow::Result<()> {
    let a = Args::parse(rest)?;
    if let Some(cpu) = a.0.get("cpu") {
        let cpus: Vec<usize> = cpu
            .split(',')
            .map(|c| c.parse())
            .collect::<Result<_, _>>()?;
        pin_self(&cpus)?;
    }
    let ip: Ipv4Addr = a.get("addr", "169.254.169.254").parse()?;
    let port = a.num("port", 80)? as u16;
    let sa = SocketAddrV4::new(ip, port);
    let count = a.num("count", 100)?.min(MAX_COUNT);
    let timeout = Duration::from_millis(a.num("timeout_ms", 3000)?);
    let path = a.get("path", "/latest/meta-data/instance-id");
    let req = get_request(&path, &ip.to_string());
    if a.get("wait", "0") == "1" {
        // The harness attaches per-process probes between these lines.
        println!("ready {}", std::process::id());
        let mut line = String::new();
        io::stdin().read_line(&mut line)?;
    }
    let seccomp = a.get("seccomp", "none");
    if seccomp != "none" {
        install_seccomp(&seccomp)?;
    }
    let mut t = Tally::default();
    let began = Instant::now();
    let start = mono_ns();
    let mut extra = String::new();
    match mode {
        "connect" => {
            for _ in 0..count {
                if began.elapsed() > BUDGET || t.hangs() >= MAX_HANGS {
                    break;
                }
                let t0 = mono_ns();
                let r = connect(&sa, timeout, true);
                let ns = mono_ns() - t0;
                t.record(ns, r.as_ref().map_or_else(|e| e.as_str(), |_| "ok"));
            }
        }
        "http" | "burst" => {
            let fresh = mode == "burst" || a.get("fresh", "0") == "1";
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::new();
            for _ in 0..count {
                if began.elapsed() > BUDGET || t.hangs() >= MAX_HANGS {
                    break;
                }
                let t0 = mono_ns();
                if conn.is_none() {
                    match connect(&sa, timeout, true) {
                        Ok(s) => {
                            s.set_read_timeout(Some(timeout))?;
                            s.set_write_timeout(Some(timeout))?;
                            conn = Some(s);
                            buf.clear();
                        }
                        Err(e) => {
                            t.record(mono_ns() - t0, &format!("connect {e}"));
                            continue;
                        }
                    }
                }
                // Keep-alive and fresh requests are timed from the send on;
                // burst times the whole short connection.
                let t1 = if mode == "burst" { t0 } else { mono_ns() };
                let s = conn.as_mut().expect("connected above");
                let r = exchange(s, &req, &mut buf);
                let ns = mono_ns() - t1;
                let failed = r.is_err();
                t.record(ns, &r.unwrap_or_else(|e| e));
                if fresh || failed {
                    conn = None;
                }
            }
        }
        "tls" => {
            let lib = tls::lib()?;
            let s = connect(&sa, timeout, true).map_err(|e| anyhow::anyhow!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut s = tls::TlsStream::connect(lib, s)?;
            let mut buf = Vec::new();
            for _ in 0..count {
                if began.elapsed() > BUDGET {
                    break;
                }
                let t0 = mono_ns();
                let r = exchange(&mut s, &req, &mut buf);
                let ns = mono_ns() - t0;
                let failed = r.is_err();
                t.record(ns, &r.unwrap_or_else(|e| e));
                if failed {
                    break;
                }
            }
            extra = format!(",\"tls_version\":\"{}\"", s.version());
        }
        other => anyhow::bail!("unknown client mode {other}"),
    }
    println!("{}", t.json(mode, start, mono_ns(), &extra));
    Ok(())
}
