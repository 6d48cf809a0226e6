//! Kernel tests of enforcement across the daemon's life: it keeps enforcing
//! when the daemon is killed or stopped (pinned links), a new daemon takes
//! over without a gap, and `unload` removes everything.
#[macro_use]
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;
use metaguard::{demo::Daemon, events::Format, loader::pins};

const BIN: &str = env!("CARGO_BIN_EXE_metaguard");

/// The pinned attachment sets for the sandbox's cgroup.
fn pin_sets(env: &Env) -> Vec<PathBuf> {
    let base = pins::cgroup_pins(&env.bpffs.pin_dir(), env.sb.cgroup_dir()).unwrap();
    pins::sets(&base)
}

fn second_daemon(env: &Env, keep: bool) -> Daemon {
    let ctl = env.tmp.0.join("control-2.sock");
    let pin_dir = env.bpffs.pin_dir();
    let args = [
        "--control",
        ctl.to_str().unwrap(),
        "--pin-dir",
        pin_dir.to_str().unwrap(),
    ];
    let start = if keep {
        Daemon::start_keeping
    } else {
        Daemon::start_with_args
    };
    start(
        Path::new(BIN),
        &env.policy,
        env.sb.cgroup_dir(),
        Format::Json,
        &args,
        |_| {},
    )
    .unwrap()
}

/// Runs a bounded load while `during` runs: denied connects from the copy
/// and allowed keep-alive requests from the probe. Returns (denied EPERMs,
/// allowed failures).
fn under_load(env: &Env, n: u64, during: impl FnOnce()) -> (u64, u64) {
    std::thread::scope(|s| {
        let denied = s.spawn(|| {
            let r = env.run(
                &env.copy,
                &["connect-loop", IMDS, "80", "--count", &n.to_string()],
            );
            r.json["errors"]["EPERM"].as_u64().unwrap_or(0)
        });
        let allowed = s.spawn(|| {
            let mut failures = 0;
            for _ in 0..5 {
                let r = env.run(&env.probe, &["http-loop", IMDS, "80", "--count", "200"]);
                if !r.ok() {
                    failures += 1;
                }
            }
            failures
        });
        during();
        (denied.join().unwrap(), allowed.join().unwrap())
    })
}

#[test]
fn killed_daemon_keeps_enforcing_and_a_new_one_takes_over() {
    if !root_or_skip("life-kill") {
        return;
    }
    let env = Env::start("life-kill", PROBE_ONLY);
    assert_eq!(pin_sets(&env).len(), 1, "run pins its links");
    let n = 3000;
    let mut second = None;
    let (eperm, failures) = under_load(&env, n, || {
        std::thread::sleep(Duration::from_millis(100));
        let pid = env.daemon.pid() as i32;
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Dead once /proc says so (the harness reaps it later).
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nobody is running: the pinned programs still decide.
        assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
        assert!(env.run(&env.probe, &["tcp", IMDS, "80"]).ok());
        second = Some(second_daemon(&env, false));
    });
    assert_eq!(
        eperm, n,
        "every denied connect was refused, before, during and after"
    );
    assert_eq!(failures, 0, "allowed requests never failed");
    assert_eq!(
        pin_sets(&env).len(),
        1,
        "the new daemon replaced the old set"
    );
    // The fake service saw only the allowed probe's requests.
    assert!(env
        .sb
        .requests()
        .iter()
        .all(|r| r.target == "/latest/meta-data/instance-id"));
    drop(second); // --detach-on-exit: removes its programs and pins
    assert!(pin_sets(&env).is_empty());
    assert!(draining_sets(&env).is_empty(), "draining maps too");
    assert!(
        env.run(&env.copy, &["tcp", IMDS, "80"]).ok(),
        "nothing enforces any more"
    );
}

#[test]
fn stopped_daemon_keeps_enforcing_until_unload() {
    if !root_or_skip("life-stop") {
        return;
    }
    let env = Env::start("life-stop", PROBE_ONLY);
    // A connection open across the takeover: the first set's map drains.
    let holder = Holder::start(&env, &[]);
    let mut keeper = second_daemon(&env, true);
    assert_eq!(pin_sets(&env).len(), 1, "took over the first daemon's set");
    assert_eq!(draining_sets(&env).len(), 1, "its socket map drains");
    let status = keeper.stop().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        pin_sets(&env).len(),
        1,
        "a plain stop leaves the programs pinned"
    );
    assert!(
        env.run(&env.copy, &["tcp", IMDS, "80"]).denied(),
        "still enforcing"
    );
    let out = Command::new(BIN)
        .args(["unload", "--cgroup"])
        .arg(env.sb.cgroup_dir())
        .arg("--pin-dir")
        .arg(env.bpffs.pin_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 1 pinned"));
    assert!(pin_sets(&env).is_empty());
    // Draining maps go too, even with a connection still open.
    let left: Vec<_> = std::fs::read_dir(env.bpffs.pin_dir())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left under the pin dir: {left:?}");
    assert!(
        !env.bpffs.pin_dir().exists(),
        "unload leaves the empty pin root behind"
    );
    drop(holder);
    assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).ok(), "unloaded");
}

#[test]
fn reloads_under_load_never_let_a_denied_request_through_or_fail_an_allowed_one() {
    if !root_or_skip("life-reload") {
        return;
    }
    let env = Env::start("life-reload", PROBE_ONLY);
    let pid = env.daemon.pid() as i32;
    let original = std::fs::read_to_string(&env.policy).unwrap();
    // The same policy plus a rule for another program, then an invalid one,
    // then the original again: the probe stays allowed, the copy denied.
    let changed = format!(
        "{original}\n[[allow]]\nname = \"other\"\nendpoints = [\"aws-imds\"]\nexe = \"/bin/sh\"\n"
    );
    let n = 3000;
    let (eperm, failures) = under_load(&env, n, || {
        for (i, text) in [
            changed.as_str(),
            "mode = \"sometimes\"\n",
            original.as_str(),
        ]
        .iter()
        .cycle()
        .take(9)
        .enumerate()
        {
            std::fs::write(&env.policy, text).unwrap();
            unsafe { libc::kill(pid, libc::SIGHUP) };
            std::thread::sleep(Duration::from_millis(60 + 10 * i as u64));
        }
    });
    assert_eq!(
        eperm, n,
        "every denied connect was refused through nine reloads"
    );
    assert_eq!(failures, 0, "allowed requests never failed");
    let applied = env.wait_event(|e| e["type"] == "reload" && e["result"] == "applied");
    let rejected = env.wait_event(|e| e["type"] == "reload" && e["result"] == "rejected");
    assert!(applied.is_some() && rejected.is_some());
    assert!(env
        .sb
        .requests()
        .iter()
        .all(|r| r.target == "/latest/meta-data/instance-id"));
}

/// A Python script that tries to connect every 100 ms for `n` tries and
/// prints one line per try: `ok` or the error name.
const TRIES: &str = r#"
import socket, sys, time, errno
for i in range(int(sys.argv[1])):
    s = socket.socket()
    try:
        s.connect(("169.254.169.254", 80))
        print("ok", flush=True)
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
    finally:
        s.close()
    time.sleep(0.1)
"#;

#[test]
fn a_grant_lets_one_running_process_through_until_it_expires() {
    // A long-lived client that connects again and again: Python's.
    let Some(py) = python_or_skip("life-grant", "socket") else {
        return;
    };
    let env = Env::start("life-grant", PROBE_ONLY);
    let ctl = env.control.to_str().unwrap().to_string();
    let child = env
        .sb
        .client(&py)
        .args(["-c", TRIES, "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(700));
    let out = Command::new(BIN)
        .args([
            "grant",
            "--pid",
            &pid.to_string(),
            "--ttl",
            "3s",
            "--endpoint",
            "aws-imds",
            "--control",
            &ctl,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("granted pid {pid}")));
    // Listed in status; another process of the same program is not granted.
    let st = Command::new(BIN)
        .args(["status", "--format", "json", "--control", &ctl])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["grants"][0]["pid"].as_u64(), Some(pid as u64), "{st}");
    assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
    let lines: Vec<String> = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 50, "{lines:?}");
    // Refused before the grant, through during it, refused again once it
    // expired (decisions are reused for up to the 1 s aggregation window).
    assert!(lines[..5].iter().all(|l| l == "EPERM"), "{lines:?}");
    assert!(lines[20..26].iter().all(|l| l == "ok"), "{lines:?}");
    assert!(lines[47..].iter().all(|l| l == "EPERM"), "{lines:?}");
    assert!(env
        .wait_event(|e| e["reason"] == "granted" && e["pid"].as_u64() == Some(pid as u64))
        .is_some());
    // Revoking: gone from status, and a revoke of nothing says so.
    let out = Command::new(BIN)
        .args(["revoke", "--pid", &pid.to_string(), "--control", &ctl])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the expired grant was already removed"
    );
}

#[test]
fn learn_live_follows_the_daemon_and_proposes_a_policy() {
    if !root_or_skip("life-learn") {
        return;
    }
    let env = Env::start("life-learn", PROBE_ONLY);
    let out = env.tmp.0.join("proposed.toml");
    let learner = Command::new(BIN)
        .args(["learn", "--live", "3s", "--control"])
        .arg(&env.control)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        assert!(env.run(&env.probe, &["tcp", IMDS, "80"]).ok());
        assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
    }
    let status = learner.wait_with_output().unwrap().status;
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("[[allow]]"), "{text}");
    assert!(text.contains(env.probe.to_str().unwrap()), "{text}");
}

/// Two policies that differ in which rule index allows what, so that any
/// decision mixing them shows (see the test below). `{a}`, `{b}`, `{n}`
/// are copies of the probe (other files: other identities).
const SLOT_A: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]

[[endpoint]]
name      = "elsewhere"
addresses = ["192.0.2.1/32"]

[[allow]]
name      = "probe"
endpoints = ["aws-imds"]
exe       = "{probe}"

[[allow]]
name      = "a"
endpoints = ["aws-imds"]
exe       = "{tmp}/copy-a"
"#;

const SLOT_B: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]

[[endpoint]]
name      = "elsewhere"
addresses = ["192.0.2.1/32"]

[[allow]]
name      = "n-elsewhere"
endpoints = ["elsewhere"]
exe       = "{tmp}/copy-n"

[[allow]]
name      = "probe"
endpoints = ["aws-imds"]
exe       = "{probe}"

[[allow]]
name      = "b"
endpoints = ["aws-imds"]
exe       = "{tmp}/copy-b"
"#;

/// Reloads switch policies atomically. Policy A allows the probe (rule 0)
/// and copy-a (rule 1) at the endpoint; policy B allows copy-n elsewhere
/// (rule 0), the probe (rule 1) and copy-b (rule 2). A decision that took
/// the destination's rules from one policy and the caller's from the other
/// would let copy-n through (A's rules {0, 1} with B's "copy-n is rule 0")
/// or refuse the probe (B's rules {1, 2} with A's "probe is rule 0"). While
/// the daemon switches between A and B many times, the probe (allowed by
/// both) must never fail, on new connections or on requests over a
/// keep-alive one (each request is decided again), and copy-n (allowed by
/// neither) must never connect, nor reach the service with a request.
#[test]
fn reloads_switch_whole_policies_never_a_mixture() {
    if !root_or_skip("life-atomic") {
        return;
    }
    let env = Env::start_with("life-atomic", SLOT_A, |tmp| {
        for name in ["copy-a", "copy-b", "copy-n"] {
            std::fs::copy(probe_binary(), tmp.join(name)).unwrap();
        }
    });
    let text = |t: &str| {
        t.replace("{probe}", env.probe.to_str().unwrap())
            .replace("{tmp}", env.tmp.0.to_str().unwrap())
    };
    let (a, b) = (text(SLOT_A), text(SLOT_B));
    let copy = |n: &str| env.tmp.0.join(n);
    let (copy_a, copy_b, copy_n) = (copy("copy-a"), copy("copy-b"), copy("copy-n"));
    let ctl = env.control.to_str().unwrap().to_string();
    let done = std::sync::atomic::AtomicBool::new(false);
    let stop = || done.load(std::sync::atomic::Ordering::SeqCst);
    // Each client repeats bounded loops until the reloads are over (at most
    // 40 rounds): (decisions, outcomes that break the rule).
    const ROUND: u64 = 300;
    // Decisions so far, per checked client: the reloads go on (past 40, up
    // to a deadline) until each has run through enough of them, so a slow
    // machine cannot end the reloads before the clients got going.
    let progress = [(); 3].map(|_| std::sync::atomic::AtomicU64::new(0));
    let add = |i: usize, n: u64| progress[i].fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    let seen = |i: usize| progress[i].load(std::sync::atomic::Ordering::SeqCst);
    let enough = || seen(0) >= 2 * ROUND && seen(1) >= 10 * ROUND && seen(2) >= 10 * ROUND;
    let mut reloads = 0;
    let (probe_connects, probe_requests, n_connects, ab_decisions) = std::thread::scope(|s| {
        let probe_connects = s.spawn(|| {
            let (mut total, mut bad) = (0, 0);
            for _ in 0..40 {
                let r = env.run(&env.probe, &["connect-loop", IMDS, "80", "--count", "300"]);
                total += r.json["attempted"].as_u64().unwrap_or(0);
                add(0, r.json["attempted"].as_u64().unwrap_or(0));
                bad += ROUND - r.json["ok_count"].as_u64().unwrap_or(0);
                if stop() {
                    break;
                }
            }
            (total, bad)
        });
        let probe_requests = s.spawn(|| {
            let (mut total, mut bad) = (0, 0);
            for _ in 0..40 {
                let r = env.run(&env.probe, &["http-loop", IMDS, "80", "--count", "300"]);
                total += r.json["attempted"].as_u64().unwrap_or(0);
                add(1, r.json["attempted"].as_u64().unwrap_or(0));
                bad += ROUND - r.json["ok_count"].as_u64().unwrap_or(0);
                if stop() {
                    break;
                }
            }
            (total, bad)
        });
        let n_connects = s.spawn(|| {
            let (mut total, mut bad) = (0, 0);
            for i in 0..40 {
                let r = env.run(&copy_n, &["connect-loop", IMDS, "80", "--count", "300"]);
                total += r.json["attempted"].as_u64().unwrap_or(0);
                add(2, r.json["attempted"].as_u64().unwrap_or(0));
                bad += ROUND - r.json["errors"]["EPERM"].as_u64().unwrap_or(0);
                // And requests, which the service would log if they came.
                let path = format!("/neither/{i}");
                let r = env.run(
                    &copy_n,
                    &["http-loop", IMDS, "80", "--count", "5", "--path", &path],
                );
                bad += r.json["ok_count"].as_u64().unwrap_or(0);
                if stop() {
                    break;
                }
            }
            (total, bad)
        });
        // copy-a and copy-b are allowed by one policy each: any outcome is
        // one of the two; they add load on the same paths.
        let ab = s.spawn(|| {
            let mut total = 0;
            for _ in 0..40 {
                for c in [&copy_a, &copy_b] {
                    let r = env.run(c, &["connect-loop", IMDS, "80", "--count", "150"]);
                    total += r.json["attempted"].as_u64().unwrap_or(0);
                }
                if stop() {
                    break;
                }
            }
            total
        });
        std::thread::sleep(Duration::from_millis(100));
        let t0 = std::time::Instant::now();
        while reloads < 40 || (!enough() && t0.elapsed() < Duration::from_secs(30)) {
            let i = reloads;
            reloads += 1;
            std::fs::write(&env.policy, if i % 2 == 0 { &b } else { &a }).unwrap();
            let out = Command::new(BIN)
                .args(["reload", "--control", &ctl])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "reload {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(15));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("{reloads} reloads in {:?}", t0.elapsed());
        (
            probe_connects.join().unwrap(),
            probe_requests.join().unwrap(),
            n_connects.join().unwrap(),
            ab.join().unwrap(),
        )
    });
    eprintln!(
        "{reloads} reloads; decisions: probe connects {}, probe requests {}, copy-n connects {}, copy-a/b connects {ab_decisions}",
        probe_connects.0, probe_requests.0, n_connects.0
    );
    assert_eq!(
        probe_connects.1, 0,
        "probe connects refused: {probe_connects:?}"
    );
    assert_eq!(
        probe_requests.1, 0,
        "probe requests failed: {probe_requests:?}"
    );
    assert_eq!(n_connects.1, 0, "copy-n got through: {n_connects:?}");
    // Every client ran through the reloads (connects to the service are
    // slower than refusals: fewer of them).
    assert!(probe_connects.0 >= 2 * ROUND && n_connects.0 >= 10 * ROUND);
    assert!(probe_requests.0 >= 10 * ROUND);
    // The service saw the probe's requests only.
    let reqs = env.sb.requests();
    assert!(
        reqs.iter()
            .all(|r| r.target == "/latest/meta-data/instance-id"),
        "{:?}",
        reqs.iter()
            .find(|r| r.target != "/latest/meta-data/instance-id")
    );
    let applied = env
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "reload" && e["result"] == "applied")
        .count();
    assert_eq!(applied, reloads);
}

/// A daemon on its own control socket `name`, sharing the environment's pin
/// directory, with `extra` arguments to `run`.
fn daemon_on(env: &Env, name: &str, keep: bool, extra: &[&str]) -> (Daemon, PathBuf) {
    let ctl = env.tmp.0.join(name);
    let pin_dir = env.bpffs.pin_dir();
    let mut args = vec![
        "--control",
        ctl.to_str().unwrap(),
        "--pin-dir",
        pin_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let start = if keep {
        Daemon::start_keeping
    } else {
        Daemon::start_with_args
    };
    let d = start(
        Path::new(BIN),
        &env.policy,
        env.sb.cgroup_dir(),
        Format::Json,
        &args,
        |_| {},
    )
    .unwrap();
    (d, ctl)
}

/// Kernel ids of the programs a daemon reports in `status`.
fn program_ids(ctl: &Path) -> Vec<u64> {
    let out = Command::new(BIN)
        .args(["status", "--format", "json", "--control"])
        .arg(ctl)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    st["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

/// Upgrade-style replace: a running daemon is stopped the production way
/// (SIGTERM without --detach-on-exit: its programs keep enforcing), and a
/// daemon whose maps differ takes over under the bounded client load.
/// "Differ" without a second build: the new daemon loads with other
/// capacities for SOCK_TAGS, AGGREGATES and PROTECTED_SOCKS (the hidden
/// `run --test-map-entries`), so its maps are created with another shape
/// and its programs are new programs bound to them, as an upgraded build's
/// would be.
#[test]
fn an_upgrade_with_other_maps_takes_over_under_load_without_a_gap() {
    if !root_or_skip("life-upgrade") {
        return;
    }
    let env = Env::start("life-upgrade", PROBE_ONLY);
    // The "old version": keeps enforcing when stopped.
    let (mut old, old_ctl) = daemon_on(&env, "control-old.sock", true, &[]);
    let old_ids = program_ids(&old_ctl);
    let old_sets = pin_sets(&env);
    assert_eq!(old_sets.len(), 1);
    let n = 3000;
    let mut new = None;
    let (eperm, failures) = under_load(&env, n, || {
        std::thread::sleep(Duration::from_millis(100));
        assert!(old.stop().unwrap().success());
        // Nobody is running: the old programs still decide.
        assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
        new = Some(daemon_on(
            &env,
            "control-new.sock",
            false,
            &[
                "--test-map-entries",
                "SOCK_TAGS=32768",
                "--test-map-entries",
                "AGGREGATES=2048",
                "--test-map-entries",
                "PROTECTED_SOCKS=16384",
            ],
        ));
    });
    assert_eq!(
        eperm, n,
        "every denied connect was refused, across the upgrade"
    );
    assert_eq!(failures, 0, "allowed requests never failed");
    assert!(
        env.sb
            .requests()
            .iter()
            .all(|r| r.target == "/latest/meta-data/instance-id"),
        "only the allowed probe reached the service"
    );
    let (new, new_ctl) = new.unwrap();
    let new_ids = program_ids(&new_ctl);
    assert_eq!(new_ids.len(), old_ids.len());
    assert!(
        new_ids.iter().all(|id| !old_ids.contains(id)),
        "every program was replaced: {old_ids:?} -> {new_ids:?}"
    );
    // Connections open across the takeover drained the old socket map
    // (held with the old msg_sender); the loops are over, so the new daemon
    // removes it within a sweep or two.
    let t0 = std::time::Instant::now();
    while !draining_sets(&env).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(draining_sets(&env).is_empty(), "drained and removed");
    // The old programs are gone from the kernel (nothing holds them).
    let loaded: Vec<u64> = aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id() as u64)
        .collect();
    assert!(
        old_ids.iter().all(|id| !loaded.contains(id)),
        "old programs still loaded: {old_ids:?} in {loaded:?}"
    );
    let sets = pin_sets(&env);
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert!(!old_sets.contains(&sets[0]), "the old pins are gone");
    assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
    assert!(env.run(&env.probe, &["tcp", IMDS, "80"]).ok());
    drop(new);
}

/// Only the instance id, and only with GET, for the probe.
const HTTP_ID_ONLY: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]

[[allow]]
name      = "probe"
endpoints = ["aws-imds"]
exe       = "{probe}"
http      = [{ method = "GET", path = "/latest/meta-data/instance-id" }]
"#;

const ID_PATH: &str = "/latest/meta-data/instance-id";
const CREDS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// A probe in `hold` mode: a keep-alive connection, opened and used once,
/// waiting for its trigger. Killed on drop if still running.
struct Holder {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Holder {
    fn start(env: &Env, args: &[&str]) -> Holder {
        use std::io::BufRead as _;
        let mut child = env
            .sb
            .client(&env.probe)
            .args(["hold", IMDS, "80"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Ready: connected, first request answered (bounded by the probe's
        // own timeouts).
        let first = lines.next().expect("hold printed nothing").unwrap();
        assert!(first.contains("\"ready\":true"), "{first}");
        Holder { child, lines }
    }

    /// Triggers the second step and returns its outcome.
    fn trigger(mut self) -> Outcome {
        use std::io::Write as _;
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let last = self.lines.by_ref().map_while(Result::ok).last();
        let status = self.child.wait().unwrap();
        Outcome {
            code: status.code().unwrap_or(-1),
            json: last
                .and_then(|l| serde_json::from_str(&l).ok())
                .unwrap_or(serde_json::Value::Null),
            stderr: String::new(),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The kernel id of the program `name` a daemon reports in `status`.
fn program_id(ctl: &Path, name: &str) -> u64 {
    let out = Command::new(BIN)
        .args(["status", "--format", "json", "--control"])
        .arg(ctl)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    st["programs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["id"].as_u64())
        .unwrap_or_else(|| panic!("no {name} in {st}"))
}

/// Kernel ids of every loaded program.
fn loaded_ids() -> Vec<u64> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id() as u64)
        .collect()
}

fn draining_sets(env: &Env) -> Vec<PathBuf> {
    let base = pins::cgroup_pins(&env.bpffs.pin_dir(), env.sb.cgroup_dir()).unwrap();
    pins::draining(&base)
}

/// Connections opened before a takeover stay checked per send, by the
/// policy in force when they were established: the taken-over socket map
/// drains (pinned with its per-send program) until its last connection
/// closes, then the new daemon removes it.
#[test]
fn connections_open_across_a_takeover_stay_checked_until_they_close() {
    if !root_or_skip("life-drain") {
        return;
    }
    let env = Env::start("life-drain", HTTP_ID_ONLY);
    // a: the allowed probe, which will then ask for a path no rule lists;
    // b: the allowed probe, which will then hand its socket to the copy;
    // c: the allowed probe, which will then ask for the listed path again;
    // d: the allowed probe, which keeps its connection open through a
    //    second takeover.
    let a = Holder::start(&env, &["--path", CREDS_PATH]);
    let copy = env.copy.to_str().unwrap().to_string();
    let b = Holder::start(&env, &["--exec", &copy, "send-fd", IMDS, "80"]);
    let c = Holder::start(&env, &["--path", ID_PATH]);
    let d = Holder::start(&env, &[]);
    assert_eq!(env.requests_for(ID_PATH), 4, "each holder's first request");

    // The old programs, by kernel id.
    let old_msg_sender = program_id(&env.control, "msg_sender");
    let old_sock_ops = program_id(&env.control, "sock_established");
    // SIGKILL, then a new daemon takes over.
    let pid = env.daemon.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..100 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (mut second, ctl) = daemon_on(&env, "control-2.sock", true, &[]);
    assert_eq!(pin_sets(&env).len(), 1, "the new daemon's set only");
    let drain = draining_sets(&env);
    assert_eq!(drain.len(), 1, "the old socket map drains: {drain:?}");
    assert_eq!(pins::socket_count(&drain[0]).unwrap(), 4);
    // The old sock_ops program is released (as were, before draining, the
    // socket map and the per-send program with it): then a moment for the
    // kernel's deferred frees.
    let t0 = std::time::Instant::now();
    while loaded_ids().contains(&old_sock_ops) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !loaded_ids().contains(&old_sock_ops),
        "old sock_ops released"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        loaded_ids().contains(&old_msg_sender),
        "the old msg_sender is held by its draining map"
    );
    let st = Command::new(BIN)
        .args(["status", "--format", "json", "--control"])
        .arg(&ctl)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["draining"][0]["sockets"], 4, "{st}");
    assert_eq!(
        st["draining"][0]["path"].as_str(),
        drain[0].to_str(),
        "{st}"
    );

    // (a) A request no rule lists, on the old connection: refused.
    let out = a.trigger();
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json["error"], "EACCES", "{out:?}");
    // (b) The socket handed to a denied program: its send is refused.
    let out = b.trigger();
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.json["mode"], "send-fd", "{out:?}");
    assert_eq!(out.json["error"], "EACCES", "{out:?}");
    assert_eq!(env.requests_for(CREDS_PATH), 0, "never arrived");
    assert_eq!(
        env.requests_for(ID_PATH),
        4,
        "the copy's request never arrived"
    );
    // (c) The listed request on the old connection still works.
    let out = c.trigger();
    assert!(out.ok(), "{out:?}");
    assert_eq!(env.requests_for(ID_PATH), 5);

    // d is still open: its map stays through a sweep (one every 2 s from
    // the daemon's start).
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(draining_sets(&env), drain, "kept while d is open");
    assert_eq!(pins::socket_count(&drain[0]).unwrap(), 1);

    // A restart: the third daemon adopts the draining map left by the
    // second (and drains the second's own map, empty).
    assert!(second.stop().unwrap().success());
    let (mut third, ctl) = daemon_on(&env, "control-3.sock", true, &[]);
    assert!(draining_sets(&env).contains(&drain[0]));
    let st = Command::new(BIN)
        .args(["status", "--format", "json", "--control"])
        .arg(&ctl)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let listed = st["draining"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|d| d["path"].as_str() == drain[0].to_str() && d["sockets"] == 1),
        "{st}"
    );
    drop(d); // killed: its socket closes

    // Every old connection closed: the third daemon removes the maps.
    let t0 = std::time::Instant::now();
    while !draining_sets(&env).is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "draining set removed {:?} after the last close",
        t0.elapsed()
    );
    assert!(draining_sets(&env).is_empty(), "removed once empty");
    assert!(
        !loaded_ids().contains(&old_msg_sender),
        "nothing holds the old msg_sender any more"
    );

    // A plain stop keeps the new set; unload leaves nothing.
    assert!(third.stop().unwrap().success());
    let out = Command::new(BIN)
        .args(["unload", "--cgroup"])
        .arg(env.sb.cgroup_dir())
        .arg("--pin-dir")
        .arg(env.bpffs.pin_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(env.bpffs.pin_dir())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left under the pin dir: {left:?}");
}
