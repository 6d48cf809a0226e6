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
    let mut keeper = second_daemon(&env, true);
    assert_eq!(pin_sets(&env).len(), 1, "took over the first daemon's set");
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
