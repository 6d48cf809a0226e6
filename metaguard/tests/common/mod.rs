//! Harness for the kernel tests: a sandbox (cgroup, namespaces, fake
//! metadata service), `metaguard run` attached to the sandbox's cgroup, and
//! the probe client run as allowed and denied programs. Everything is
//! removed on drop, also when a test fails.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use metaguard::{
    demo::{BpfMount, Daemon, TempDir},
    events::Format,
};
#[allow(unused_imports)]
/// Starts an `Env` as root, or returns from the test after saying why not.
#[allow(unused_macros)]
macro_rules! env_or_skip {
    ($tag:expr, $policy:expr) => {{
        if !root_or_skip($tag) {
            return;
        }
        Env::start($tag, $policy)
    }};
}

#[allow(unused_imports)] // each test crate uses a part
pub use metaguard_sandbox::{addrs, Sandbox};
use serde_json::Value;

pub const IMDS: &str = "169.254.169.254";
pub const IMDS6: &str = "fd00:ec2::254";

/// None (with the reason printed) when the tests cannot run here: not root.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIPPED {test}: needs root to load BPF programs and build network namespaces");
        false
    }
}

/// The probe binary, built next to the test's target directory.
pub fn probe_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("metaguard-probe");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

pub struct Env {
    pub tmp: TempDir,
    pub probe: PathBuf,
    /// A byte-identical copy of the probe: another file, so another identity.
    pub copy: PathBuf,
    pub policy: PathBuf,
    /// The daemon's control socket (in `tmp`, unless `run_args` named another).
    pub control: PathBuf,
    pub events: Arc<Mutex<Vec<Value>>>,
    // Drop order: daemon first (detach), then the sandbox.
    pub daemon: Daemon,
    /// Where the daemon pins its links (after `daemon`: unmounted once it stopped).
    pub bpffs: BpfMount,
    pub sb: Sandbox,
}

/// Outcome of one probe run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub json: Value,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    pub fn denied(&self) -> bool {
        self.code == 1 && self.json["error"] == "EPERM"
    }
    pub fn unsupported(&self) -> bool {
        self.code == 4
    }
}

impl Env {
    /// `policy` may use `{probe}`, `{copy}`, `{tmp}` and `{cgroup}` (the
    /// sandbox cgroup, relative to the cgroup2 mount).
    pub fn start(tag: &str, policy: &str) -> Env {
        Env::start_with(tag, policy, |_| {})
    }

    /// As `start`, with `prepare` run on the temp dir before the policy loads.
    pub fn start_with(tag: &str, policy: &str, prepare: impl FnOnce(&Path)) -> Env {
        Env::start_full(tag, policy, prepare, &[])
    }

    /// As `start_with`, with more `metaguard run` arguments.
    pub fn start_full(
        tag: &str,
        policy: &str,
        prepare: impl FnOnce(&Path),
        run_args: &[&str],
    ) -> Env {
        let tmp = TempDir::new(tag).unwrap();
        prepare(&tmp.0);
        let probe = probe_binary();
        let copy = tmp.0.join("probe-copy");
        std::fs::copy(&probe, &copy).unwrap();
        let sb = Sandbox::create(tag).unwrap();
        let text = policy
            .replace("{probe}", probe.to_str().unwrap())
            .replace("{copy}", copy.to_str().unwrap())
            .replace("{tmp}", tmp.0.to_str().unwrap())
            .replace("{cgroup}", &sb.cgroup_rel());
        let policy = tmp.0.join("policy.toml");
        std::fs::write(&policy, text).unwrap();
        let events = Arc::new(Mutex::new(vec![]));
        let sink = events.clone();
        let bin = Path::new(env!("CARGO_BIN_EXE_metaguard"));
        // Each test's daemon has its own control socket, in its temp dir.
        let control = tmp.0.join("control.sock");
        let mut args: Vec<&str> = run_args.to_vec();
        if !args.contains(&"--control") {
            args.extend(["--control", control.to_str().unwrap()]);
        }
        // Pins go to a private bpffs, unmounted after the daemon stops.
        let bpffs = BpfMount::new(tag).unwrap();
        let pin_dir = bpffs.pin_dir();
        args.extend(["--pin-dir", pin_dir.to_str().unwrap()]);
        let daemon = Daemon::start_with_args(
            bin,
            &policy,
            sb.cgroup_dir(),
            Format::Json,
            &args,
            move |line| match serde_json::from_str::<Value>(&line) {
                Ok(v) => sink.lock().unwrap().push(v),
                Err(e) => panic!("daemon printed a line that is not JSON ({e}): {line}"),
            },
        )
        .unwrap();
        Env {
            tmp,
            probe,
            copy,
            policy,
            control,
            bpffs,
            events,
            daemon,
            sb,
        }
    }

    /// Runs `program` with `args` in the sandbox as root.
    pub fn run(&self, program: &Path, args: &[&str]) -> Outcome {
        self.run_as(program, args, None)
    }

    pub fn run_as(&self, program: &Path, args: &[&str], ids: Option<(u32, u32)>) -> Outcome {
        let mut c = self.sb.client(program);
        c.args(args);
        if let Some((uid, gid)) = ids {
            c.gid(gid).uid(uid).groups(&[gid]);
        }
        let out = c.output().unwrap();
        outcome(out)
    }

    /// Waits (bounded) for an event matching `pred`.
    pub fn wait_event(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(v) = self.events.lock().unwrap().iter().find(|v| pred(v)) {
                return Some(v.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Requests to the fake service whose target is `path`.
    pub fn requests_for(&self, path: &str) -> usize {
        self.sb
            .requests()
            .iter()
            .filter(|r| r.target == path)
            .count()
    }
}

pub fn outcome(out: std::process::Output) -> Outcome {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    Outcome {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A policy protecting the fake IMDS (both families, every port) and
/// allowing only the probe binary.
pub const PROBE_ONLY: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]

[[allow]]
name      = "probe"
endpoints = ["aws-imds"]
exe       = "{probe}"
"#;

#[allow(dead_code)]
/// The real interpreter behind `python3` (pyenv's `python3` is a shim
/// script: the kernel sees the binary it finally execs).
pub fn python_or_skip(test: &str, module: &str) -> Option<PathBuf> {
    if !root_or_skip(test) {
        return None;
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &format!("import sys, os, {module}; print(os.path.realpath(sys.executable))"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
        Ok(o) => {
            eprintln!(
                "SKIPPED {test}: python3 cannot import {module}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no python3 ({e})");
            None
        }
    }
}
