//! Pieces the benchmarks share: their start, probe path, medians,
//! program run-time counters, an event drainer, the one-rule policies and
//! the keep-alive client run.
#![allow(dead_code)]
use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

pub use metaguard::sys::bpf_stats::StatsSwitch;
use metaguard::{loader::Guard, policy::Policy};
use metaguard_sandbox::{addrs, Sandbox};

/// What every bench starts with. Nothing under `--list` (cargo's harness
/// asking for names) or without root (it says why). Otherwise: bpf_stats
/// off for the latency blocks whatever the machine had (restored when the
/// returned switch drops), the process pinned (how, for the report), and
/// the test client.
pub fn start(bench: &str) -> Option<(StatsSwitch, String, PathBuf)> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED bench {bench}: needs root (BPF programs, network namespaces)");
        return None;
    }
    let quiet = StatsSwitch::off();
    Some((quiet, pin_cpu(), probe()))
}

/// A guard enforcing `policy` on `cgroup`, attached until it drops.
pub fn guard_on(policy: &Policy, cgroup: &Path) -> Guard {
    let mut g = Guard::load().unwrap();
    g.apply(policy).unwrap();
    g.attach(cgroup).unwrap();
    g
}

/// The release build of the test client, next to the bench binary.
pub fn probe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("metaguard-probe");
    assert!(
        p.exists(),
        "{} missing: cargo build --release -p metaguard-probe",
        p.display()
    );
    p
}

/// Per-run average between two (run_time_ns, run_count) readings.
pub fn per_run(a: (u64, u64), b: (u64, u64)) -> f64 {
    (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// (run_time_ns, run_count) of one program.
pub fn prog_stats(guard: &Guard, name: &str) -> (u64, u64) {
    guard.program_stats(name).unwrap_or((0, 0))
}

/// Reads and discards events while the benchmark runs, so the kernel pays
/// for delivering events, as in production.
pub struct Drainer {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl Drainer {
    pub fn start(guard: &mut Guard) -> Drainer {
        let mut rb = guard.take_events().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                while rb.next().is_some() {}
                let fd = unsafe { BorrowedFd::borrow_raw(rb.as_raw_fd()) };
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16));
            }
        });
        Drainer { stop, handle }
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

/// Blocks per cell; METAGUARD_BENCH_BLOCKS overrides it for quick looks.
pub fn blocks(default: usize) -> usize {
    std::env::var("METAGUARD_BENCH_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pins this process (and so the clients and the fake service it starts)
/// to one CPU, unless METAGUARD_BENCH_CPU=any: on this VM kind, waking an
/// idle vCPU costs tens of microseconds and makes round trips bimodal, which
/// would drown the filters' cost. Returns a label for the report.
pub fn pin_cpu() -> String {
    let want = std::env::var("METAGUARD_BENCH_CPU").unwrap_or_else(|_| "0".into());
    let Ok(cpu) = want.parse::<usize>() else {
        return "all CPUs".into();
    };
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_err()
        || nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_err()
    {
        return "all CPUs (pinning failed)".into();
    }
    format!("pinned to CPU {cpu}")
}

/// Median of `guarded[i] / plain[i]` over blocks measured side by side.
pub fn median_ratio(guarded: &[f64], plain: &[f64]) -> f64 {
    let mut r: Vec<f64> = guarded.iter().zip(plain).map(|(g, p)| g / p).collect();
    median(&mut r)
}

/// Interquartile range of the block ratios: how noisy the ratio is.
pub fn ratio_iqr(guarded: &[f64], plain: &[f64]) -> (f64, f64) {
    let mut r: Vec<f64> = guarded.iter().zip(plain).map(|(g, p)| g / p).collect();
    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (r[r.len() / 4], r[(3 * r.len()) / 4])
}

/// A policy protecting 169.254.169.254:80 with one rule allowing `probe`,
/// plus `rule_extra` lines in that rule; written to `dir/name` and loaded.
pub fn probe_policy(dir: &Path, name: &str, probe: &Path, rule_extra: &str) -> Policy {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "[[endpoint]]\nname = \"aws-imds\"\naddresses = [\"169.254.169.254/32\"]\nports = [80]\n\n[[allow]]\nname = \"probe\"\nexe = \"{}\"\n{rule_extra}",
            probe.display()
        ),
    )
    .unwrap();
    metaguard::policy::load(&p).expect("bench policy")
}

/// Median round trip (ns) of `count` keep-alive GETs of `path` on one
/// connection to the metadata address, from a client in `cgroup`.
pub fn keepalive_median(sb: &Sandbox, cgroup: &Path, probe: &Path, path: &str, count: u32) -> f64 {
    let out = sb
        .client_in(probe, cgroup)
        .unwrap()
        .args([
            "http-loop",
            &addrs::IMDS_V4.to_string(),
            "80",
            "--path",
            path,
            "--count",
            &count.to_string(),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert!(out.status.success(), "http-loop failed: {v}");
    v["median_ns"].as_f64().unwrap()
}
