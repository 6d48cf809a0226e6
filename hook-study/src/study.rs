//! The study: builds the sandbox, applies each implementation of the same
//! policy in turn ("only uid ALLOWED_UID may reach 169.254.169.254:80"),
//! measures the same cells for each, and prints tables, per-decision CPU
//! time, rule-count scaling and the small experiments. Every hook is owned
//! by a guard value that removes it on drop.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use metaguard::{demo::TempDir, loader::Guard, policy, sys::bpf_stats::StatsSwitch};
use metaguard_sandbox::{addrs, Sandbox};
use serde_json::Value;

use crate::bpf::{self, Study};
use crate::stats::{median, paired_ratio, per_run};
use crate::svg::{self, Series};
use crate::util::{all_cpus, pin_process, rusage_ns};
use crate::{proxy, tls};

pub const ALLOWED_UID: u32 = 4242;
pub const DENIED_UID: u32 = 4243;
pub const PATH_OK: &str = "/latest/meta-data/instance-id";
pub const PATH_DENIED: &str = "/latest/meta-data/iam/security-credentials/";
const TLS_PORT: u16 = 8443;
const TPUT_REPEATS: usize = 2;
/// Round trips run client and server on this CPU (see the write-up).
const RT_CPU: usize = 0;

pub struct Config {
    pub rounds: usize,
    pub connects: u64,
    pub requests: u64,
    pub denied: u64,
    pub tput_procs: usize,
    pub tput_each: u64,
    pub out_dir: Option<PathBuf>,
}

impl Config {
    pub fn from_env() -> Config {
        let n = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        Config {
            rounds: n("HOOK_STUDY_ROUNDS", 5) as usize,
            connects: n("HOOK_STUDY_CONNECTS", 1000),
            requests: n("HOOK_STUDY_REQUESTS", 1000),
            denied: 200,
            tput_procs: 4,
            tput_each: n("HOOK_STUDY_TPUT", 400),
            out_dir: None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Impl {
    None,
    Metaguard,
    MetaguardHttp,
    EmptyHooks,
    Tc,
    CgroupSkb,
    NftSkuid,
    NftCgroup,
    Proxy,
    RawSocket,
    Xdp,
    Seccomp,
}

const ALL: [Impl; 12] = [
    Impl::None,
    Impl::Metaguard,
    Impl::MetaguardHttp,
    Impl::EmptyHooks,
    Impl::Tc,
    Impl::CgroupSkb,
    Impl::NftSkuid,
    Impl::NftCgroup,
    Impl::Proxy,
    Impl::RawSocket,
    Impl::Xdp,
    Impl::Seccomp,
];

impl Impl {
    pub fn label(self) -> &'static str {
        match self {
            Impl::None => "no filter",
            Impl::Metaguard => "metaguard (connect)",
            Impl::MetaguardHttp => "metaguard (http rule)",
            Impl::EmptyHooks => "empty programs at its hooks",
            Impl::Tc => "TC egress (uid)",
            Impl::CgroupSkb => "cgroup_skb egress (uid)",
            Impl::NftSkuid => "nft meta skuid",
            Impl::NftCgroup => "nft socket cgroupv2",
            Impl::Proxy => "userspace proxy",
            Impl::RawSocket => "raw socket filter (obs)",
            Impl::Xdp => "XDP on client veth (obs)",
            Impl::Seccomp => "seccomp on connect (obs)",
        }
    }

    /// Whether the denied client runs outside the sandbox cgroup (the
    /// cgroup-based policy allows whoever is inside it).
    fn denied_outside_cgroup(self) -> bool {
        self == Impl::NftCgroup
    }
}

/// One implementation in force; dropping it removes it (the guards are
/// held for their Drop).
#[allow(dead_code)]
enum Active<'a> {
    Nothing,
    Metaguard(Box<Guard>, Drainer),
    Bpf(Study),
    Nft(Nft<'a>),
    Proxy(Nft<'a>, ProxyProc),
}

/// Reads and discards metaguard's events while it runs (as the daemon does).
pub struct Drainer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drainer {
    fn start(guard: &mut Guard) -> Result<Drainer> {
        let mut rb = guard.take_events()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                while rb.next().is_some() {}
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Ok(Drainer {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// An nftables table in the client netns; deleted on drop.
struct Nft<'a> {
    sb: &'a Sandbox,
    table: String,
}

impl<'a> Nft<'a> {
    fn load(sb: &'a Sandbox, dir: &Path, table: &str, body: &str) -> Result<Nft<'a>> {
        let file = dir.join(format!("{table}.nft"));
        std::fs::write(&file, format!("table ip {table} {{\n{body}\n}}\n"))?;
        sb.in_client_ns(&["nft", "-f", file.to_str().context("path")?])?;
        Ok(Nft {
            sb,
            table: table.to_string(),
        })
    }
}

impl<'a> Nft<'a> {
    /// Like `load`, for rules naming cgroup paths: nft resolves them under
    /// /sys/fs/cgroup, so where cgroup2 is mounted elsewhere (hybrid
    /// layouts) it runs in a private mount namespace with the cgroup2 mount
    /// bound there, as an administrator would have to.
    fn load_cgroup(sb: &'a Sandbox, dir: &Path, table: &str, body: &str) -> Result<Nft<'a>> {
        let cg2 = sb.cgroup_dir().parent().context("cgroup2 mount")?;
        if cg2 == Path::new("/sys/fs/cgroup") {
            return Nft::load(sb, dir, table, body);
        }
        let file = dir.join(format!("{table}.nft"));
        std::fs::write(&file, format!("table ip {table} {{\n{body}\n}}\n"))?;
        let script = format!(
            "mount --make-rprivate / && mount --bind {} /sys/fs/cgroup && nft -f {}",
            cg2.display(),
            file.display()
        );
        sb.in_client_ns(&["unshare", "-m", "sh", "-c", &script])?;
        Ok(Nft {
            sb,
            table: table.to_string(),
        })
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        if let Err(e) = self
            .sb
            .in_client_ns(&["nft", "delete", "table", "ip", &self.table])
        {
            eprintln!("hook-study: cleanup: {e:#}");
        }
    }
}

/// The proxy process (client netns, not in the cgroup); killed on drop.
struct ProxyProc(
    Child,
    std::sync::Mutex<BufReader<std::process::ChildStdout>>,
);

impl ProxyProc {
    /// The proxy's own CPU time so far (ns).
    fn cpu_ns(&self) -> Result<u64> {
        let mut out = self.1.lock().map_err(|_| anyhow!("proxy lock"))?;
        let stdin = self.0.stdin.as_ref().context("proxy stdin")?;
        (&*stdin).write_all(b"usage\n")?;
        let mut line = String::new();
        out.read_line(&mut line)?;
        Ok(line.trim().parse()?)
    }
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Medians of one implementation's cells in one round (ns, or conn/s).
#[derive(Default, Clone)]
struct Cells {
    v: BTreeMap<&'static str, f64>,
    /// Outcome descriptions of the denied cells.
    outcomes: BTreeMap<&'static str, String>,
    /// Per-decision program time: (label, ns per run, runs per operation).
    prog: Vec<(String, f64, f64)>,
}

const LAT_CELLS: [(&str, &str); 8] = [
    ("conn_unprot", "connect+close, unprotected"),
    ("conn_prot", "connect+close, protected, allowed uid"),
    ("ka_unprot", "keep-alive GET, unprotected"),
    ("ka_prot", "keep-alive GET, protected, allowed uid"),
    ("cpu_unprot", "CPU per short conn, unprotected"),
    ("cpu_prot", "CPU per short conn, protected"),
    ("tput_unprot", "short conns/s (4 procs), unprotected"),
    ("tput_prot", "short conns/s (4 procs), protected"),
];

pub struct Env {
    cfg: Config,
    sb: Sandbox,
    bin: PathBuf,
    tmp: TempDir,
    out: String,
}

macro_rules! say {
    ($env:expr, $($a:tt)*) => {{
        let line = format!($($a)*);
        println!("{line}");
        let _ = std::io::stdout().flush();
        $env.out.push_str(&line);
        $env.out.push('\n');
    }};
}

fn first_json(stdout: &[u8], stderr: &[u8]) -> Result<Value> {
    let line = stdout.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).map_err(|e| {
        anyhow!(
            "client output unreadable ({e}): {} / {}",
            String::from_utf8_lossy(stdout).trim(),
            String::from_utf8_lossy(stderr).trim()
        )
    })
}

fn outcome_text(v: &Value) -> String {
    let mut parts: Vec<String> = v["outcomes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| format!("{k} x{}", n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(", ")
}

fn connect_cpu() -> String {
    std::env::var("HOOK_STUDY_CONNECT_CPU").unwrap_or_else(|_| RT_CPU.to_string())
}

/// The denied client gives up on a silent connect after 300 ms (a hang is
/// recorded, not waited out). The allowed client gives up after 100 ms: on
/// this sandbox about 1 in 1000 back-to-back SYNs goes unanswered whatever
/// the filter (also with none) and would cost a 1 s retransmit; such
/// attempts are counted ("slow"), left out of the medians, and may be at
/// most 1% of a cell.
fn timeout_for(uid: u32) -> String {
    if uid == DENIED_UID {
        "timeout_ms=300".into()
    } else {
        "timeout_ms=100".into()
    }
}

fn us(ns: f64) -> String {
    format!("{:.1}us", ns / 1000.0)
}

impl Env {
    pub fn create(cfg: Config) -> Result<Env> {
        // Round trips: server threads (created from here on) share one CPU
        // with the client; see RT_CPU.
        pin_process(std::process::id(), &[RT_CPU])?;
        let tmp = TempDir::new("hook-study")?;
        std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755))?;
        // The clients run as unprivileged uids: they need an executable
        // copy outside root-only directories.
        let bin = tmp.0.join("hook-study");
        std::fs::copy(std::env::current_exe()?, &bin)?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        let sb = Sandbox::create("hook-study")?;
        Ok(Env {
            cfg,
            sb,
            bin,
            tmp,
            out: String::new(),
        })
    }

    fn client(&self, uid: u32, in_cgroup: bool, mode: &str, args: &[String]) -> Result<Value> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        let out = self
            .sb
            .client(&self.bin)
            .arg("client")
            .arg(mode)
            .args(args)
            .uid(uid)
            .gid(uid)
            .in_cgroup(in_cgroup)
            .output()
            .context("spawning the client")?;
        first_json(&out.stdout, &out.stderr)
    }

    fn connect_cell(&self, imp: Impl, addr: Ipv4Addr, uid: u32, count: u64) -> Result<Value> {
        let inside = !(uid == DENIED_UID && imp.denied_outside_cgroup());
        let mut a = vec![
            timeout_for(uid),
            format!("addr={addr}"),
            "port=80".into(),
            format!("count={count}"),
            format!("cpu={}", connect_cpu()),
        ];
        if imp == Impl::Seccomp {
            a.push("seccomp=inspect".into());
        }
        let v = self.client(uid, inside, "connect", &a)?;
        if std::env::var("HOOK_STUDY_DEBUG").is_ok() {
            eprintln!("{} {addr} uid {uid}: {v}", imp.label());
        }
        Ok(v)
    }

    fn http_cell(
        &self,
        imp: Impl,
        addr: Ipv4Addr,
        uid: u32,
        path: &str,
        count: u64,
        fresh: bool,
    ) -> Result<Value> {
        let inside = !(uid == DENIED_UID && imp.denied_outside_cgroup());
        let mut a = vec![
            timeout_for(uid),
            format!("addr={addr}"),
            "port=80".into(),
            format!("path={path}"),
            format!("count={count}"),
            format!("cpu={RT_CPU}"),
            format!("fresh={}", u8::from(fresh)),
        ];
        if imp == Impl::Seccomp {
            a.push("seccomp=inspect".into());
        }
        self.client(uid, inside, "http", &a)
    }

    /// Short connections per second from `tput_procs` processes at once,
    /// every CPU allowed (the harness's server threads too, for the cell):
    /// the best of `TPUT_REPEATS` bursts, since on a shared machine other
    /// load can only lower the figure.
    /// Returns (connections per second, CPU time per connection). The
    /// wall-clock rate moves with whatever else the machine runs; the CPU
    /// time the sandbox's own processes spent per connection does not (at
    /// saturation, rate = CPUs / CPU time per connection).
    fn throughput(&self, active: &Active, addr: Ipv4Addr, seccomp: bool) -> Result<(f64, f64)> {
        let mut best = 0.0f64;
        let mut medians = Vec::new();
        for _ in 0..TPUT_REPEATS {
            let (rate, med) = self.burst(active, addr, seccomp)?;
            best = best.max(rate);
            medians.push(med);
        }
        Ok((best, median(&medians).unwrap_or(f64::NAN)))
    }

    fn burst(&self, active: &Active, addr: Ipv4Addr, seccomp: bool) -> Result<(f64, f64)> {
        let me = std::process::id();
        let proxy_pid = match active {
            Active::Proxy(_, p) => Some(p.0.id()),
            _ => None,
        };
        pin_process(me, &all_cpus())?;
        if let Some(p) = proxy_pid {
            pin_process(p, &all_cpus())?;
        }
        let result = (|| -> Result<(f64, f64)> {
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            let proxy_cpu = || match active {
                Active::Proxy(_, p) => p.cpu_ns(),
                _ => Ok(0),
            };
            let cpu0 =
                rusage_ns(libc::RUSAGE_SELF) + rusage_ns(libc::RUSAGE_CHILDREN) + proxy_cpu()?;
            let mut kids = Vec::new();
            for _ in 0..self.cfg.tput_procs {
                let mut a = vec![
                    "client".to_string(),
                    "burst".into(),
                    timeout_for(ALLOWED_UID),
                    format!("addr={addr}"),
                    "port=80".into(),
                    format!("path={PATH_OK}"),
                    format!("count={}", self.cfg.tput_each),
                ];
                if seccomp {
                    a.push("seccomp=inspect".into());
                }
                kids.push(
                    self.sb
                        .client(&self.bin)
                        .args(&a)
                        .uid(ALLOWED_UID)
                        .gid(ALLOWED_UID)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()?,
                );
            }
            let (mut ok, mut start, mut end) = (0u64, u64::MAX, 0u64);
            for k in kids {
                let o = k.wait_with_output()?;
                let v = first_json(&o.stdout, &o.stderr)?;
                ok += v["ok"].as_u64().unwrap_or(0);
                start = start.min(v["start_ns"].as_u64().unwrap_or(u64::MAX));
                end = end.max(v["end_ns"].as_u64().unwrap_or(0));
            }
            let want = self.cfg.tput_procs as u64 * self.cfg.tput_each;
            if ok * 100 < want * 99 {
                bail!("throughput: {ok} of {want} short connections succeeded");
            }
            // Every CPU the burst used: the clients (waited for), this
            // process (fake service threads, event drainer) and the proxy;
            // softirq work is charged to whoever it interrupted, mostly
            // these processes on a veth pair.
            let cpu =
                rusage_ns(libc::RUSAGE_SELF) + rusage_ns(libc::RUSAGE_CHILDREN) + proxy_cpu()?
                    - cpu0;
            Ok((
                ok as f64 / ((end.saturating_sub(start)) as f64 / 1e9),
                cpu as f64 / ok as f64,
            ))
        })();
        pin_process(me, &[RT_CPU])?;
        if let Some(p) = proxy_pid {
            pin_process(p, &[RT_CPU])?;
        }
        result
    }

    fn activate(&self, imp: Impl) -> Result<Active<'_>> {
        let (vc, _) = self.sb.veth_names();
        let netns = PathBuf::from("/run/netns").join(self.sb.client_netns());
        let imds = addrs::IMDS_V4;
        Ok(match imp {
            Impl::None | Impl::Seccomp => Active::Nothing,
            Impl::Metaguard | Impl::MetaguardHttp => {
                let pol = metaguard_policy(imp == Impl::MetaguardHttp, 1, 1)?;
                let mut g = Guard::load()?;
                g.apply(&pol)?;
                g.attach(self.sb.cgroup_dir())?;
                let d = Drainer::start(&mut g)?;
                Active::Metaguard(Box::new(g), d)
            }
            Impl::EmptyHooks => Active::Bpf(Study::empty_hooks(self.sb.cgroup_dir())?),
            Impl::Tc => Active::Bpf(Study::tc(&netns, vc, imds, 80, ALLOWED_UID)?),
            Impl::CgroupSkb => Active::Bpf(Study::cgroup_skb(
                self.sb.cgroup_dir(),
                imds,
                80,
                ALLOWED_UID,
            )?),
            Impl::RawSocket => Active::Bpf(Study::raw_socket(&netns, vc, imds, 80)?),
            Impl::Xdp => Active::Bpf(Study::xdp(&netns, vc, imds)?.0),
            Impl::NftSkuid => Active::Nft(Nft::load(
                &self.sb,
                &self.tmp.0,
                "hookstudy_skuid",
                &format!(
                    "  chain out {{\n    type filter hook output priority filter; policy accept;\n    ip daddr {imds} tcp dport 80 meta skuid != {ALLOWED_UID} reject with tcp reset\n    ip daddr {imds} udp dport 80 meta skuid != {ALLOWED_UID} reject\n  }}"
                ),
            )?),
            Impl::NftCgroup => {
                // nft resolves the path under /sys/fs/cgroup; on hybrid
                // layouts (cgroup2 elsewhere) it cannot, so say so.
                let rel = self.sb.cgroup_rel();
                Active::Nft(Nft::load_cgroup(
                    &self.sb,
                    &self.tmp.0,
                    "hookstudy_cgroup",
                    &format!(
                        "  chain out {{\n    type filter hook output priority filter; policy accept;\n    ip daddr {imds} meta l4proto {{ tcp, udp }} th dport 80 socket cgroupv2 level 1 \"{0}\" accept\n    ip daddr {imds} tcp dport 80 reject with tcp reset\n    ip daddr {imds} udp dport 80 reject\n  }}",
                        rel.trim_start_matches('/')
                    ),
                )?)
            }
            Impl::Proxy => {
                let nft = Nft::load(
                    &self.sb,
                    &self.tmp.0,
                    "hookstudy_proxy",
                    &format!(
                        "  chain out {{\n    type nat hook output priority -100; policy accept;\n    meta mark {:#x} return\n    ip daddr {imds} tcp dport 80 redirect to :{}\n  }}",
                        proxy::MARK,
                        proxy::PORT
                    ),
                )?;
                let mut child = self
                    .sb
                    .client(&self.bin)
                    .args([
                        "proxy".to_string(),
                        format!("uid={ALLOWED_UID}"),
                        format!("path={PATH_OK}"),
                    ])
                    .in_cgroup(false)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()?;
                let mut line = String::new();
                let mut out = BufReader::new(child.stdout.take().context("proxy stdout")?);
                out.read_line(&mut line)?;
                let p = ProxyProc(child, std::sync::Mutex::new(out));
                if line.trim() != "ready" {
                    bail!("proxy did not start: {line:?}");
                }
                Active::Proxy(nft, p)
            }
        })
    }

    /// Program run-time readings for the implementation's programs.
    fn prog_readings(active: &Active) -> Vec<(String, (u64, u64))> {
        match active {
            Active::Metaguard(g, _) => ["connect4", "egress", "sock_established", "msg_sender"]
                .iter()
                .map(|n| (n.to_string(), g.program_stats(n).unwrap_or((0, 0))))
                .collect(),
            Active::Bpf(s) => vec![("program".to_string(), s.run_stats())],
            _ => vec![],
        }
    }

    /// Packets the TC or cgroup_skb program dropped so far.
    fn drops(active: &Active) -> u64 {
        match active {
            Active::Bpf(s) => s
                .counters()
                .map_or(0, |c| c[bpf::TC_DROPPED] + c[bpf::SKB_DROPPED]),
            _ => 0,
        }
    }

    /// All cells of one implementation in one round.
    fn measure(&self, imp: Impl, active: &Active) -> Result<Cells> {
        let c = &self.cfg;
        let (prot, unprot) = (addrs::IMDS_V4, addrs::UNPROTECTED_V4);
        let mut cells = Cells::default();
        let med = |v: &Value| v["median_ns"].as_f64().unwrap_or(f64::NAN);
        let ok_med = |v: &Value| v["ok_median_ns"].as_f64().unwrap_or(f64::NAN);
        let need_ok = |v: &Value, what: &str, n: u64| -> Result<()> {
            if v["ok"].as_u64().unwrap_or(0) * 100 < n * 99 {
                bail!("{}: {what}: {}", imp.label(), v);
            }
            Ok(())
        };
        let v = self.connect_cell(imp, unprot, ALLOWED_UID, c.connects)?;
        need_ok(&v, "connect unprotected", c.connects)?;
        cells.v.insert("conn_unprot", ok_med(&v));
        let v = self.connect_cell(imp, prot, ALLOWED_UID, c.connects)?;
        need_ok(&v, "connect protected", c.connects)?;
        cells.v.insert("conn_prot", ok_med(&v));
        let v = self.http_cell(imp, unprot, ALLOWED_UID, PATH_OK, c.requests, false)?;
        need_ok(&v, "keep-alive unprotected", c.requests)?;
        cells.v.insert("ka_unprot", ok_med(&v));
        let v = self.http_cell(imp, prot, ALLOWED_UID, PATH_OK, c.requests, false)?;
        need_ok(&v, "keep-alive protected", c.requests)?;
        cells.v.insert("ka_prot", ok_med(&v));
        // The denied client: at connect, and with a request on a fresh
        // connection (which is where a proxy or an HTTP rule refuses).
        let drops0 = Self::drops(active);
        let v = self.connect_cell(imp, prot, DENIED_UID, c.denied)?;
        cells.v.insert("conn_denied", med(&v));
        let drops = Self::drops(active).saturating_sub(drops0);
        let text = outcome_text(&v);
        cells.outcomes.insert(
            "conn_denied",
            if matches!(active, Active::Bpf(_)) && drops > 0 {
                format!("{text}; {drops} packets dropped")
            } else {
                text
            },
        );
        let v = self.http_cell(imp, prot, DENIED_UID, PATH_OK, c.denied, true)?;
        cells.v.insert("req_denied", med(&v));
        cells.outcomes.insert("req_denied", outcome_text(&v));
        // The allowed client asking for a path the HTTP-level policy refuses.
        let v = self.http_cell(imp, prot, ALLOWED_UID, PATH_DENIED, c.denied, false)?;
        cells.v.insert("path_denied", med(&v));
        cells.outcomes.insert("path_denied", outcome_text(&v));
        let seccomp = imp == Impl::Seccomp;
        let (rate, med) = self.throughput(active, unprot, seccomp)?;
        cells.v.insert("tput_unprot", rate);
        cells.v.insert("cpu_unprot", med);
        let (rate, med) = self.throughput(active, prot, seccomp)?;
        cells.v.insert("tput_prot", rate);
        cells.v.insert("cpu_prot", med);
        // Per-decision CPU time: a separate pass with bpf_stats on (its
        // clock reads would otherwise be charged to the latency cells).
        if matches!(active, Active::Metaguard(..) | Active::Bpf(_)) {
            let _stats = StatsSwitch::on();
            let r0 = Self::prog_readings(active);
            self.connect_cell(imp, unprot, ALLOWED_UID, c.connects)?;
            let r1 = Self::prog_readings(active);
            self.connect_cell(imp, prot, ALLOWED_UID, c.connects)?;
            let r2 = Self::prog_readings(active);
            self.http_cell(imp, prot, ALLOWED_UID, PATH_OK, c.requests, false)?;
            let r3 = Self::prog_readings(active);
            for (i, (name, _)) in r0.iter().enumerate() {
                let phases = [
                    ("connect unprot", r0[i].1, r1[i].1, c.connects),
                    ("connect prot", r1[i].1, r2[i].1, c.connects),
                    ("keep-alive GET prot", r2[i].1, r3[i].1, c.requests),
                ];
                for (phase, a, b, ops) in phases {
                    if let Some(ns) = per_run(a, b) {
                        let runs = (b.1 - a.1) as f64 / ops as f64;
                        if runs < 0.5 {
                            continue; // e.g. the one connect of a keep-alive loop
                        }
                        cells.prog.push((format!("{name} / {phase}"), ns, runs));
                    }
                }
            }
        }
        Ok(cells)
    }

    pub fn run(&mut self) -> Result<()> {
        self.header()?;
        let rounds = self.cfg.rounds;
        let mut results: BTreeMap<Impl, Vec<Option<Cells>>> = BTreeMap::new();
        let mut unavailable: BTreeMap<Impl, String> = BTreeMap::new();
        for round in 0..rounds {
            let t0 = std::time::Instant::now();
            // Rotate the order each round so drift hits every implementation alike.
            for k in 0..ALL.len() {
                let imp = ALL[(k + round) % ALL.len()];
                if unavailable.contains_key(&imp) || !selected(imp) {
                    continue;
                }
                let r = self
                    .activate(imp)
                    .and_then(|active| self.measure(imp, &active));
                if INTERRUPTED.load(Ordering::SeqCst) {
                    bail!("interrupted: cleaning up");
                }
                match r {
                    Ok(c) => results.entry(imp).or_default().push(Some(c)),
                    Err(e) => {
                        say!(self, "!! {}: {e:#}", imp.label());
                        if round == 0 {
                            unavailable.insert(imp, format!("{e:#}"));
                        }
                        results.entry(imp).or_default().push(None);
                    }
                }
            }
            say!(
                self,
                "round {}/{rounds} done in {:.1} s",
                round + 1,
                t0.elapsed().as_secs_f64()
            );
        }
        self.report(&results, &unavailable)?;
        self.experiments()?;
        self.scaling()?;
        self.footer()?;
        Ok(())
    }

    fn header(&mut self) -> Result<()> {
        let uname = std::process::Command::new("uname").arg("-r").output()?;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        say!(
            self,
            "hook study: the same policy at different hooks, measured in one run"
        );
        say!(
            self,
            "policy: only uid {ALLOWED_UID} may reach {}:80 (denied client: uid {DENIED_UID}); HTTP-level implementations also allow only GET {PATH_OK}",
            addrs::IMDS_V4
        );
        say!(
            self,
            "kernel {}, {} CPUs, load average at start: {}",
            String::from_utf8_lossy(&uname.stdout).trim(),
            all_cpus().len(),
            load.trim()
        );
        say!(
            self,
            "{} rounds (implementations in rotated order), per cell: {} connect+close, {} keep-alive GETs, {} denied attempts (a hang stops after 3 x 300 ms), throughput best of {TPUT_REPEATS} bursts of {} procs x {} short connections",
            self.cfg.rounds,
            self.cfg.connects,
            self.cfg.requests,
            self.cfg.denied,
            self.cfg.tput_procs,
            self.cfg.tput_each
        );
        say!(
            self,
            "latency cells: client and server pinned to CPU {RT_CPU}; throughput cells: every CPU; figures are medians of per-round medians, ratios are medians of per-round ratios to 'no filter' in the same round"
        );
        Ok(())
    }

    fn footer(&mut self) -> Result<()> {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        say!(self, "");
        say!(self, "load average at end: {}", load.trim());
        Ok(())
    }

    fn report(
        &mut self,
        results: &BTreeMap<Impl, Vec<Option<Cells>>>,
        unavailable: &BTreeMap<Impl, String>,
    ) -> Result<()> {
        let series = |imp: Impl, key: &str| -> Vec<f64> {
            results
                .get(&imp)
                .map(|rs| {
                    rs.iter()
                        .map(|c| {
                            c.as_ref()
                                .and_then(|c| c.v.get(key).copied())
                                .unwrap_or(f64::NAN)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut ratios: BTreeMap<String, f64> = BTreeMap::new();
        let mut chart: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
        let tables: [(&str, &[(&str, &str)]); 2] = [
            (
                "== Latency (median; xR = median of per-round ratios to no filter; > 1 = slower)",
                &LAT_CELLS[..4],
            ),
            (
                "== Short connections (connect, GET, close) from 4 processes on every CPU: CPU time per connection (clients + harness incl. fake service + proxy; median of 2 bursts), and wall-clock rate (best of 2 bursts; rate ratio < 1 = fewer per second)",
                &LAT_CELLS[4..],
            ),
        ];
        for (title, cells) in tables {
            say!(self, "");
            say!(self, "{title}");
            let mut head = format!("{:<26}", "implementation");
            let mut head2 = format!("{:<26}", "");
            for (_, name) in cells {
                head += &format!(" {:>22}", name.split(',').next().unwrap_or(name));
                head2 += &format!(" {:>22}", name.split_once(", ").map_or("", |x| x.1));
            }
            say!(self, "{head}");
            say!(self, "{head2}");
            for imp in ALL {
                if let Some(why) = unavailable.get(&imp) {
                    say!(self, "{:<26} unavailable: {why}", imp.label());
                    for (key, _) in cells {
                        chart.entry(key).or_default().push(None);
                    }
                    continue;
                }
                if !results.contains_key(&imp) {
                    continue;
                }
                let mut row = format!("{:<26}", imp.label());
                for (key, _) in cells {
                    let s = series(imp, key);
                    let base = series(Impl::None, key);
                    let m = median(&s);
                    let r = paired_ratio(&s, &base);
                    chart
                        .entry(key)
                        .or_default()
                        .push(r.map(|r| (r - 1.0) * 100.0));
                    if let Some(r) = r {
                        ratios.insert(format!("{} | {key}", imp.label()), r);
                    }
                    let val = match m {
                        Some(m) if key.starts_with("tput") => format!("{m:.0}/s"),
                        Some(m) => us(m),
                        None => "-".into(),
                    };
                    let rr = r.map_or("-".to_string(), |r| format!("x{r:.2}"));
                    row += &format!(" {:>22}", format!("{val} {rr}"));
                }
                say!(self, "{row}");
            }
        }
        say!(self, "");
        say!(self, "== How a denied client experiences each implementation (first round; attempts: outcome x count, median time to outcome)");
        say!(
            self,
            "{:<26} | {:<40} | {:<40} | {}",
            "implementation",
            "denied uid: connect",
            "denied uid: GET on a new connection",
            "allowed uid: GET of a refused path"
        );
        for imp in ALL {
            let Some(c) = results.get(&imp).and_then(|r| r.iter().flatten().next()) else {
                continue;
            };
            let cell = |k: &str| {
                format!(
                    "{} ({})",
                    c.outcomes.get(k).cloned().unwrap_or_default(),
                    c.v.get(k).map_or("-".into(), |&n| us(n))
                )
            };
            say!(
                self,
                "{:<26} | {:<40} | {:<40} | {}",
                imp.label(),
                cell("conn_denied"),
                cell("req_denied"),
                cell("path_denied")
            );
        }
        say!(self, "");
        say!(self, "== CPU time per program run (bpf_stats run_time_ns/run_cnt, median over rounds; runs per operation)");
        let mut prog_chart: Vec<(String, f64)> = Vec::new();
        for imp in ALL {
            let Some(rs) = results.get(&imp) else {
                continue;
            };
            let mut by: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
            for c in rs.iter().flatten() {
                for (name, ns, runs) in &c.prog {
                    let e = by.entry(name.clone()).or_default();
                    e.0.push(*ns);
                    e.1.push(*runs);
                }
            }
            for (name, (ns, runs)) in by {
                let (n, r) = (
                    median(&ns).unwrap_or(f64::NAN),
                    median(&runs).unwrap_or(0.0),
                );
                say!(
                    self,
                    "{:<26} {:<44} {:>7.0} ns/run {:>6.2} runs/op",
                    imp.label(),
                    name,
                    n,
                    r
                );
                if name.ends_with("/ connect prot") {
                    prog_chart.push((
                        format!(
                            "{}: {}",
                            imp.label(),
                            name.split(" / ").next().unwrap_or("")
                        ),
                        n,
                    ));
                }
            }
        }
        if let Some(dir) = self.cfg.out_dir.clone() {
            let cats: Vec<String> = ALL.iter().map(|i| i.label().to_string()).collect();
            let pick = |keys: &[(&str, &str)]| -> Vec<Series> {
                keys.iter()
                    .map(|(k, n)| Series {
                        name: n.to_string(),
                        values: chart.get(k).cloned().unwrap_or_default(),
                    })
                    .collect()
            };
            std::fs::write(
                dir.join("hook-study-latency.svg"),
                svg::hbar(
                    "Latency overhead vs no filter, % (median of per-round ratios)",
                    "%",
                    &cats,
                    &pick(&LAT_CELLS[..4]),
                    Some(0.0),
                ),
            )?;
            std::fs::write(
                dir.join("hook-study-throughput.svg"),
                svg::hbar(
                    "Short connections, 4 processes: change vs no filter, % (CPU: + = more; rate: - = fewer/s)",
                    "%",
                    &cats,
                    &pick(&LAT_CELLS[4..]),
                    Some(0.0),
                ),
            )?;
            let (names, vals): (Vec<String>, Vec<Option<f64>>) =
                prog_chart.into_iter().map(|(n, v)| (n, Some(v))).unzip();
            std::fs::write(
                dir.join("hook-study-cpu.svg"),
                svg::hbar(
                    "Kernel program time per run during protected connect+close (bpf_stats)",
                    "ns",
                    &names,
                    &[Series {
                        name: "ns per program run".into(),
                        values: vals,
                    }],
                    None,
                ),
            )?;
            let json: Vec<String> = ratios
                .iter()
                .map(|(k, v)| format!("  \"{k}\": {v:.4}"))
                .collect();
            std::fs::write(
                dir.join("hook-study-ratios.json"),
                format!("{{\n{}\n}}\n", json.join(",\n")),
            )?;
        }
        Ok(())
    }

    /// XDP, seccomp, raw socket and uprobe: what each can see or do.
    fn experiments(&mut self) -> Result<()> {
        say!(self, "");
        say!(self, "== Experiments");
        let (vc, vm) = self.sb.veth_names();
        let (vc, vm) = (vc.to_string(), vm.to_string());
        let cns = PathBuf::from("/run/netns").join(self.sb.client_netns());
        let mns = PathBuf::from("/run/netns").join(self.sb.metadata_netns());
        let imds = addrs::IMDS_V4;
        // XDP: client veth (ingress of what the client receives) and the
        // metadata side (ingress of what the client sends).
        for (side, ns, dev) in [
            ("client veth", &cns, &vc),
            ("metadata-side veth", &mns, &vm),
        ] {
            let (x, mode) = Study::xdp(ns, dev, imds)?;
            let before = x.counters()?;
            let v = self.connect_cell(Impl::Xdp, imds, ALLOWED_UID, 100)?;
            let after = x.counters()?;
            let d = |i: usize| after[i] - before[i];
            say!(
                self,
                "XDP ({mode}) on the {side}, 100 allowed connects to {imds}:80 ({} ok): frames to {imds}: {}, frames from {imds}: {}, all frames: {} (XDP runs on receive only and before any socket exists: no uid, no process)",
                v["ok"],
                d(bpf::XDP_TO_PROTECTED),
                d(bpf::XDP_FROM_PROTECTED),
                d(bpf::XDP_TOTAL)
            );
        }
        // Seccomp: the filter sees connect's arguments as numbers.
        for addr in [addrs::UNPROTECTED_V4, imds] {
            let v = self.client(
                ALLOWED_UID,
                true,
                "connect",
                &[
                    format!("addr={addr}"),
                    "count=20".into(),
                    "seccomp=deny-connect".into(),
                ],
            )?;
            say!(
                self,
                "seccomp filter refusing connect(2), 20 connects to {addr}:80: {} (a filter sees only the sockaddr pointer and its length, so it refuses every destination or none)",
                outcome_text(&v)
            );
        }
        // The intuitive nft cgroup rule ("not this cgroup: reject") matches
        // nothing for sockets of cgroups shallower than the level named.
        {
            let body = format!(
                "  chain out {{\n    type filter hook output priority filter; policy accept;\n    ip daddr {imds} tcp dport 80 socket cgroupv2 level 1 != \"{}\" reject with tcp reset\n  }}",
                self.sb.cgroup_rel().trim_start_matches('/')
            );
            let t = Nft::load_cgroup(&self.sb, &self.tmp.0, "hookstudy_neq", &body)?;
            let v = self.connect_cell(Impl::NftCgroup, imds, DENIED_UID, 20)?;
            drop(t);
            let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let mine = mine
                .lines()
                .find(|l| l.starts_with("0::"))
                .unwrap_or("?")
                .to_string();
            say!(
                self,
                "nft `socket cgroupv2 level 1 != \"<sandbox>\" reject`, 20 connects by a process outside the sandbox cgroup (cgroup2 entry {mine:?}): {} (a socket whose cgroup is shallower than the level named does not match at all: the negated rule lets it through; the measured nft cgroup rows use accept-then-reject instead)",
                outcome_text(&v)
            );
        }
        // Raw socket: sees both directions, cannot stop anything.
        {
            let r = Study::raw_socket(&cns, &vc, imds, 80)?;
            let before = r.counters()?;
            let v = self.connect_cell(Impl::RawSocket, imds, DENIED_UID, 50)?;
            let after = r.counters()?;
            say!(
                self,
                "raw AF_PACKET socket + filter, 50 connects by the denied uid: {} (not blocked); packets to {imds}:80 seen: {}, all packets seen: {} (copies after the fact, no uid on an AF_PACKET tap)",
                outcome_text(&v),
                after[bpf::RAW_PROTECTED] - before[bpf::RAW_PROTECTED],
                after[bpf::RAW_TOTAL] - before[bpf::RAW_TOTAL]
            );
        }
        if let Err(e) = self.bypasses() {
            say!(self, "bypass matrix: not measured: {e:#}");
        }
        if let Err(e) = self.tls_experiment() {
            say!(self, "uprobe on SSL_write: not measured: {e:#}");
        }
        Ok(())
    }

    /// Ways around each blocking implementation, by a process that is not
    /// the allowed uid; the oracle is an XDP counter on the metadata side
    /// (any frame to the protected address arriving there = reached).
    fn bypasses(&mut self) -> Result<()> {
        let probe = std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("metaguard-probe");
        if !probe.exists() {
            bail!(
                "{} missing (cargo build --release -p metaguard-probe)",
                probe.display()
            );
        }
        let (vc, vm) = self.sb.veth_names();
        let (vc, vm) = (vc.to_string(), vm.to_string());
        let mns = PathBuf::from("/run/netns").join(self.sb.metadata_netns());
        let imds = addrs::IMDS_V4;
        let (oracle, _) = Study::xdp(&mns, &vm, imds)?;
        let attacks: [(&str, &str); 4] = [
            ("plain TCP connect (denied uid)", "connect"),
            ("raw IP socket, TCP SYN (root)", "raw-tcp-syn"),
            ("AF_PACKET frame, UDP (root)", "packet"),
            ("DNAT of an innocent address (denied uid)", "dnat"),
        ];
        let impls = [
            Impl::None,
            Impl::Metaguard,
            Impl::Tc,
            Impl::CgroupSkb,
            Impl::NftSkuid,
            Impl::Proxy,
        ];
        let mut lines = Vec::new();
        for imp in impls {
            let active = self.activate(imp)?;
            let mut row = format!("{:<26}", imp.label());
            for (_, how) in attacks {
                let before = oracle.counters()?[bpf::XDP_NEW_TO_PROTECTED];
                let _dnat = if how == "dnat" {
                    Some(Nft::load(
                        &self.sb,
                        &self.tmp.0,
                        "hookstudy_dnat",
                        &format!(
                            "  chain out {{\n    type nat hook output priority -100; policy accept;\n    ip daddr {} tcp dport 80 dnat to {imds}\n  }}",
                            addrs::UNPROTECTED_V4
                        ),
                    )?)
                } else {
                    None
                };
                match how {
                    "connect" | "dnat" => {
                        let to = if how == "dnat" {
                            addrs::UNPROTECTED_V4
                        } else {
                            imds
                        };
                        self.connect_cell(imp, to, DENIED_UID, 1)?;
                    }
                    "raw-tcp-syn" => {
                        self.sb
                            .client(&probe)
                            .args([
                                "raw-tcp-syn",
                                &imds.to_string(),
                                "80",
                                "--timeout-ms",
                                "300",
                            ])
                            .output()?;
                    }
                    _ => {
                        self.sb
                            .client(&probe)
                            .args([
                                "packet",
                                &imds.to_string(),
                                "80",
                                "--iface",
                                &vc,
                                "--src",
                                &addrs::CLIENT_V4.to_string(),
                                "--payload",
                                "via-af-packet",
                                "--timeout-ms",
                                "300",
                            ])
                            .output()?;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
                let arrived = oracle.counters()?[bpf::XDP_NEW_TO_PROTECTED] - before;
                row += &format!(
                    " | {:<40}",
                    if arrived > 0 {
                        format!("REACHED ({arrived} SYN/UDP)")
                    } else {
                        "stopped".to_string()
                    }
                );
            }
            drop(active);
            lines.push(row);
        }
        say!(self, "");
        say!(
            self,
            "== Bypass matrix: did anything reach {imds}:80? (oracle: XDP on the metadata side counts TCP SYNs and UDP datagrams to it; 'root' has CAP_NET_RAW; no filter = control)"
        );
        let mut head = format!("{:<26}", "implementation");
        for (name, _) in attacks {
            head += &format!(" | {name:<40}");
        }
        say!(self, "{head}");
        for l in lines {
            say!(self, "{l}");
        }
        say!(self, "");
        Ok(())
    }

    /// A TLS keep-alive client through the system libssl, without and with a
    /// uprobe on SSL_write (scoped to the client process).
    fn tls_experiment(&mut self) -> Result<()> {
        let lib = tls::library_path()?;
        let (cert, key) = (self.tmp.0.join("cert.pem"), self.tmp.0.join("key.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=metadata",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl to make a test certificate")?;
        if !st.success() {
            bail!("openssl req failed");
        }
        let mns = PathBuf::from("/run/netns").join(self.sb.metadata_netns());
        let listener = bpf::in_netns(&mns, || {
            Ok(std::net::TcpListener::bind((
                Ipv4Addr::UNSPECIFIED,
                TLS_PORT,
            ))?)
        })?;
        let _server = tls::Server::start(
            listener,
            cert.to_str().context("path")?,
            key.to_str().context("path")?,
        )?;
        let n = self.cfg.requests;
        let mut plain = Vec::new();
        let mut probed = Vec::new();
        let mut prog = Vec::new();
        let mut seen = String::new();
        let mut version = String::new();
        for round in 0..self.cfg.rounds {
            for with in if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                let mut child = self
                    .sb
                    .client(&self.bin)
                    .args([
                        "client".to_string(),
                        "tls".into(),
                        format!("addr={}", addrs::IMDS_V4),
                        format!("port={TLS_PORT}"),
                        format!("count={n}"),
                        format!("cpu={RT_CPU}"),
                        "wait=1".into(),
                    ])
                    .uid(ALLOWED_UID)
                    .gid(ALLOWED_UID)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                let mut out = BufReader::new(child.stdout.take().context("stdout")?);
                let mut line = String::new();
                out.read_line(&mut line)?;
                if !line.starts_with("ready") {
                    let _ = child.kill();
                    let o = child.wait_with_output()?;
                    bail!(
                        "TLS client did not start: {line:?} {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
                let probe = if with {
                    Some(Study::ssl_write(&lib, child.id(), ALLOWED_UID)?)
                } else {
                    None
                };
                let stats = probe.as_ref().map(|_| StatsSwitch::on());
                let c0 = probe.as_ref().map(|p| (p.counters(), p.run_stats()));
                child.stdin.take().context("stdin")?.write_all(b"go\n")?;
                let mut rest = String::new();
                out.read_line(&mut rest)?;
                let o = child.wait_with_output()?;
                let v = first_json(rest.as_bytes(), &o.stderr)?;
                if v["ok"].as_u64() != Some(n) {
                    bail!("TLS client: {v}");
                }
                version = v["tls_version"].as_str().unwrap_or("").to_string();
                let m = v["median_ns"].as_f64().unwrap_or(f64::NAN);
                if let (Some(p), Some((Ok(c0), r0))) = (&probe, c0) {
                    let c1 = p.counters()?;
                    let r1 = p.run_stats();
                    probed.push(m);
                    if let Some(ns) = per_run(r0, r1) {
                        prog.push(ns);
                    }
                    seen = format!(
                        "SSL_write calls seen: {}, plaintext starting \"GET \": {}, by uid {ALLOWED_UID}: {}",
                        c1[bpf::SSL_TOTAL] - c0[bpf::SSL_TOTAL],
                        c1[bpf::SSL_GET] - c0[bpf::SSL_GET],
                        c1[bpf::SSL_UID_ALLOWED] - c0[bpf::SSL_UID_ALLOWED]
                    );
                } else {
                    plain.push(m);
                }
                drop(stats);
                drop(probe);
            }
        }
        say!(
            self,
            "uprobe on SSL_write ({lib}, {version}, {n} keep-alive GETs over TLS per cell): round trip {} without, {} with (x{:.2}); program {:.0} ns/run (the uprobe trap itself is not in run_time); last cell: {seen}; it observes, it cannot refuse (a uprobe's return value is ignored)",
            us(median(&plain).unwrap_or(f64::NAN)),
            us(median(&probed).unwrap_or(f64::NAN)),
            paired_ratio(&probed, &plain).unwrap_or(f64::NAN),
            median(&prog).unwrap_or(f64::NAN)
        );
        Ok(())
    }

    /// metaguard's decision cost against the size of the policy.
    fn scaling(&mut self) -> Result<()> {
        say!(self, "");
        say!(
            self,
            "== metaguard rule-count scaling (connect4 ns/run via bpf_stats; connect+close latency of the allowed client; limits: {} allow rules, {} protected prefixes)",
            metaguard_common_max_rules(),
            metaguard_common_max_prefixes()
        );
        let configs: [(usize, usize); 6] =
            [(1, 1), (100, 1), (256, 1), (1, 100), (1, 4096), (1, 10_000)];
        let rounds = self.cfg.rounds.clamp(1, 3);
        let mut names = Vec::new();
        let mut allowed_ns = Vec::new();
        let mut denied_ns = Vec::new();
        for (rules, prefixes) in configs {
            let label = format!("{rules} rules, {prefixes} prefixes");
            let pol = match metaguard_policy(false, rules, prefixes) {
                Ok(p) => p,
                Err(e) => {
                    say!(self, "{label:<28} refused by the policy compiler: {e:#}");
                    continue;
                }
            };
            let mut g = Guard::load()?;
            if let Err(e) = g.apply(&pol) {
                say!(self, "{label:<28} refused when loading the maps: {e:#}");
                continue;
            }
            g.attach(self.sb.cgroup_dir())?;
            let _d = Drainer::start(&mut g)?;
            let (mut lat, mut a_ns, mut d_ns, mut u_ns) = (vec![], vec![], vec![], vec![]);
            // Denied destination inside the prefixes when there are many
            // (exercises the LPM trie), else the metadata address.
            let denied_to: Ipv4Addr = if prefixes > 1 {
                Ipv4Addr::new(10, 0, 0, 1)
            } else {
                addrs::IMDS_V4
            };
            for _ in 0..rounds {
                let v = self.connect_cell(
                    Impl::Metaguard,
                    addrs::IMDS_V4,
                    ALLOWED_UID,
                    self.cfg.connects,
                )?;
                lat.push(v["median_ns"].as_f64().unwrap_or(f64::NAN));
                let _s = StatsSwitch::on();
                let s0 = g.program_stats("connect4").unwrap_or((0, 0));
                self.connect_cell(
                    Impl::Metaguard,
                    addrs::IMDS_V4,
                    ALLOWED_UID,
                    self.cfg.connects,
                )?;
                let s1 = g.program_stats("connect4").unwrap_or((0, 0));
                let v =
                    self.connect_cell(Impl::Metaguard, denied_to, DENIED_UID, self.cfg.denied)?;
                if !v["outcomes"]["EPERM"].is_u64() {
                    bail!("{label}: denied connect to {denied_to} not refused: {v}");
                }
                let s2 = g.program_stats("connect4").unwrap_or((0, 0));
                self.connect_cell(
                    Impl::Metaguard,
                    addrs::UNPROTECTED_V4,
                    ALLOWED_UID,
                    self.cfg.connects,
                )?;
                let s3 = g.program_stats("connect4").unwrap_or((0, 0));
                a_ns.extend(per_run(s0, s1));
                d_ns.extend(per_run(s1, s2));
                u_ns.extend(per_run(s2, s3));
            }
            let (a, d, u, l) = (
                median(&a_ns).unwrap_or(f64::NAN),
                median(&d_ns).unwrap_or(f64::NAN),
                median(&u_ns).unwrap_or(f64::NAN),
                median(&lat).unwrap_or(f64::NAN),
            );
            say!(
                self,
                "{label:<28} connect4: allowed {a:>5.0} ns, denied (to {denied_to}) {d:>5.0} ns, unprotected {u:>5.0} ns; allowed connect+close {}",
                us(l)
            );
            names.push(label);
            allowed_ns.push(Some(a));
            denied_ns.push(Some(d));
        }
        if let Some(dir) = self.cfg.out_dir.clone() {
            std::fs::write(
                dir.join("hook-study-scaling.svg"),
                svg::hbar(
                    "metaguard connect4 time per decision vs policy size (bpf_stats)",
                    "ns",
                    &names,
                    &[
                        Series {
                            name: "allowed connect to 169.254.169.254".into(),
                            values: allowed_ns,
                        },
                        Series {
                            name: "denied connect (10.0.0.1 when prefixes > 1)".into(),
                            values: denied_ns,
                        },
                    ],
                    None,
                ),
            )?;
        }
        Ok(())
    }

    pub fn output(&self) -> &str {
        &self.out
    }
}

/// HOOK_STUDY_ONLY=a,b (labels' first words, e.g. "no,metaguard,nft")
/// restricts the rounds to some implementations, for quick looks.
fn selected(imp: Impl) -> bool {
    match std::env::var("HOOK_STUDY_ONLY") {
        Ok(list) if !list.is_empty() => list
            .split(',')
            .any(|w| imp.label().split(' ').next() == Some(w)),
        _ => true,
    }
}

/// Set by SIGINT/SIGTERM: the study stops at the next client it would
/// start, and its guards clean up on the way out.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

fn metaguard_common_max_rules() -> usize {
    metaguard::policy::MAX_RULES
}

fn metaguard_common_max_prefixes() -> u32 {
    metaguard_common::maps::MAX_PREFIXES
}

/// The policy in metaguard's terms, with `rules` allow rules (the one that
/// matters last) and `prefixes` protected prefixes (the metadata address
/// plus /24s in 10.0.0.0/8).
pub fn metaguard_policy(http: bool, rules: usize, prefixes: usize) -> Result<policy::Policy> {
    let mut s = String::from(
        "[[endpoint]]\nname = \"imds\"\naddresses = [\"169.254.169.254/32\"]\nports = [80]\n\n",
    );
    if prefixes > 1 {
        let list: Vec<String> = (0..prefixes - 1)
            .map(|i| format!("\"10.{}.{}.0/24\"", i / 256, i % 256))
            .collect();
        s += &format!(
            "[[endpoint]]\nname = \"extra\"\naddresses = [{}]\nports = [80]\n\n",
            list.join(", ")
        );
    }
    for i in 1..rules {
        s += &format!(
            "[[allow]]\nname = \"filler-{i}\"\nusers = [{}]\n\n",
            20000 + i
        );
    }
    s += &format!("[[allow]]\nname = \"study-client\"\nusers = [{ALLOWED_UID}]\n");
    if http {
        s += &format!("http = [{{ method = \"GET\", path = \"{PATH_OK}\" }}]\n");
    }
    policy::parse_str(&s, Path::new("hook-study.toml")).map_err(|e| anyhow!("{e}"))
}

/// `hook-study compare A B`: the largest relative change between two runs'
/// ratio files.
pub fn compare(a: &Path, b: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<BTreeMap<String, f64>> {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(p)?)?;
        Ok(v.as_object()
            .context("ratio file is not an object")?
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
            .collect())
    };
    let (x, y) = (read(a)?, read(b)?);
    let mut worst = 0.0f64;
    let mut within = 0;
    let mut total = 0;
    for (k, va) in &x {
        let Some(vb) = y.get(k) else { continue };
        let ch = crate::stats::relative_change(*va, *vb);
        total += 1;
        if ch <= 0.10 {
            within += 1;
        }
        worst = worst.max(ch);
        println!(
            "{k:<60} {va:>7.3} {vb:>7.3} {:>+7.1}%",
            (vb / va - 1.0) * 100.0
        );
    }
    println!(
        "{within} of {total} ratios within 10% between the runs; largest change {:.1}%",
        worst * 100.0
    );
    Ok(())
}
