//! Kernel tests of the control socket: `metaguard status`, `reload` and
//! `events` against a real `metaguard run` on a sandbox cgroup, and the
//! socket's refusal of non-root peers.
#[macro_use]
mod common;

use std::{
    io::{BufRead as _, BufReader},
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_metaguard");

/// Runs the metaguard CLI: (exit code, stdout, stderr).
fn mg(args: &[&str]) -> (i32, String, String) {
    mg_cmd(Command::new(BIN).args(args))
}

fn mg_cmd(c: &mut Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ctl(env: &Env) -> &str {
    env.control.to_str().unwrap()
}

fn status(env: &Env) -> Value {
    let (code, out, err) = mg(&["status", "--control", ctl(env), "--format", "json"]);
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON ({e}): {out}"))
}

fn sha256_hex(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn status_shows_programs_policy_and_counts() {
    let env = env_or_skip!("ctl-status", PROBE_ONLY);
    let m = std::fs::symlink_metadata(&env.control).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600, "socket mode");
    assert_eq!((m.uid(), m.gid()), (0, 0), "socket owner");

    assert!(env.run(&env.probe, &["tcp", IMDS, "80"]).ok());
    assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
    env.wait_event(|e| e["action"] == "allow")
        .expect("allow event");
    env.wait_event(|e| e["action"] == "deny")
        .expect("deny event");

    let st = status(&env);
    assert_eq!(st["pid"].as_u64(), Some(env.daemon.pid() as u64), "{st}");
    assert_eq!(st["mode"], "enforce");
    assert_eq!(st["policy"]["path"], env.policy.to_str().unwrap());
    assert_eq!(st["policy"]["sha256"], sha256_hex(&env.policy));
    assert_eq!(st["policy"]["generation"], 1);
    assert!(st["policy"]["loaded"].as_str().unwrap().contains('T'));
    let programs = st["programs"].as_array().unwrap();
    for name in ["connect4", "connect6", "sendmsg4", "sendmsg6", "egress"] {
        let p = programs
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {st}"));
        assert!(p["id"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["cgroup"], env.sb.cgroup_dir().to_str().unwrap());
    }
    let c = &st["counters"];
    assert!(c["by_action"]["allow"].as_u64() >= Some(1), "{c}");
    assert!(c["by_action"]["deny"].as_u64() >= Some(1), "{c}");
    assert!(c["by_rule"]["probe"].as_u64() >= Some(1), "{c}");
    assert!(c["by_rule"]["-"].as_u64() >= Some(1), "{c}");
    assert!(c["by_endpoint"]["aws-imds"].as_u64() >= Some(2), "{c}");
    assert_eq!(c["lost_events"], 0);
    assert_eq!(
        (
            c["reloads_applied"].as_u64(),
            c["reloads_rejected"].as_u64()
        ),
        (Some(0), Some(0))
    );

    let (code, text, err) = mg(&["status", "--control", ctl(&env)]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "connect4",
        "egress",
        "generation 1",
        "by action:",
        "allow",
        "deny",
        "reloads:",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
}

#[test]
fn reload_rejects_an_invalid_policy_and_applies_a_valid_one() {
    let env = env_or_skip!("ctl-reload", PROBE_ONLY);
    let before = status(&env)["policy"]["generation"].as_u64().unwrap();
    let good = std::fs::read_to_string(&env.policy).unwrap();

    // Invalid: exit 2, the errors as `check` prints them, old policy in force.
    std::fs::write(&env.policy, "mode = \"enforcing\"\n").unwrap();
    let (check_code, _, check_err) = mg(&["check", env.policy.to_str().unwrap()]);
    assert_eq!(check_code, 2);
    let (code, out, err) = mg(&["reload", "--control", ctl(&env)]);
    assert_eq!(code, 2, "stdout {out} stderr {err}");
    assert_eq!(err, check_err, "reload prints the errors as check does");
    assert!(err.contains("policy.toml:1:8"), "{err}");
    assert!(
        env.run(&env.copy, &["tcp", IMDS, "80"]).denied(),
        "old policy still enforcing"
    );
    let ev = env
        .wait_event(|e| e["type"] == "reload" && e["result"] == "rejected")
        .expect("a rejected reload event");
    let errors: Vec<&str> = ev["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        errors.join("\n"),
        err.trim_end(),
        "the event's errors are check's lines"
    );
    assert!(ev["time"].as_str().unwrap().contains('T'), "{ev}");
    let st = status(&env);
    assert_eq!(st["policy"]["generation"].as_u64(), Some(before));
    assert_eq!(st["counters"]["reloads_rejected"], 1);

    // Valid, now also allowing the copy: exit 0, next generation, enforced.
    let copy = env.copy.to_str().unwrap();
    std::fs::write(
        &env.policy,
        format!(
            "{good}\n[[allow]]\nname = \"copy\"\nendpoints = [\"aws-imds\"]\nexe = \"{copy}\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = mg(&["reload", "--control", ctl(&env)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "reloaded {} (generation {})\n",
            env.policy.display(),
            before + 1
        )
    );
    let ok = env.run(&env.copy, &["tcp", IMDS, "80"]);
    assert!(ok.ok(), "the copy is allowed now: {ok:?}");
    let ev = env
        .wait_event(|e| e["type"] == "reload" && e["result"] == "applied")
        .expect("an applied reload event");
    assert_eq!(ev["generation"].as_u64(), Some(before + 1));
    assert_eq!(ev["sha256"], sha256_hex(&env.policy));
    env.wait_event(|e| e["action"] == "allow" && e["rule"] == "copy")
        .expect("the copy's allow event names the new rule");
    let st = status(&env);
    assert_eq!(st["policy"]["generation"].as_u64(), Some(before + 1));
    assert_eq!(st["policy"]["sha256"], sha256_hex(&env.policy));
    assert_eq!(st["counters"]["reloads_applied"], 1);
}

/// Spawns `metaguard events`; its stdout lines arrive on the channel.
fn follow(env: &Env, format: &str) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["events", "--control", ctl(env), "--format", format])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// Makes denied connects until `rx` shows a line matching `pred` (the
/// client may not have subscribed yet when the first ones happen).
fn deny_until(env: &Env, rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).denied());
        let until = Instant::now() + Duration::from_millis(1500);
        while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if pred(&l) {
                return l;
            }
        }
    }
    panic!("no matching line from `metaguard events`");
}

#[test]
fn events_follow_the_live_stream_until_the_daemon_stops() {
    let env = env_or_skip!("ctl-events", PROBE_ONLY);
    let (mut json_client, json) = follow(&env, "json");
    let (mut text_client, text) = follow(&env, "text");

    let line = deny_until(&env, &json, |l| l.contains("\"decision\""));
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "decision");
    assert_eq!(ev["action"], "deny");
    assert_eq!(ev["comm"], "probe-copy");
    // The same line the daemon wrote on its stdout (which the harness reads
    // on a thread of its own: it may get there after the client's copy).
    assert!(env.wait_event(|e| e == &ev).is_some(), "{ev}");

    let t = deny_until(&env, &text, |l| l.contains("DENY"));
    let dest = format!("{}:80", addrs::IMDS_V4);
    assert!(t.contains(&dest) && t.contains("endpoint=aws-imds"), "{t}");

    // The daemon goes away: the clients end, the socket file is removed.
    let Env {
        mut daemon,
        tmp,
        control,
        sb,
        ..
    } = env;
    daemon.stop().unwrap();
    for c in [&mut json_client, &mut text_client] {
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "events client outlived the daemon"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
    }
    assert!(!control.exists(), "socket removed on exit");
    drop((sb, tmp));
}

#[test]
fn non_root_peers_are_refused() {
    let env = env_or_skip!("ctl-nonroot", PROBE_ONLY);
    let as_nobody = |c: &mut Command| {
        c.uid(65534).gid(65534);
    };
    // Mode 0600: refused at connect.
    let mut c = Command::new(BIN);
    c.args(["status", "--control", ctl(&env)]);
    as_nobody(&mut c);
    let (code, out, err) = mg_cmd(&mut c);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("permission denied"), "{err}");
    assert!(out.is_empty(), "{out}");

    // Opened up by mistake: the daemon still checks the peer's uid.
    std::fs::set_permissions(&env.tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&env.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    for verb in ["status", "reload", "events"] {
        let mut c = Command::new(BIN);
        c.args([verb, "--control", ctl(&env)]);
        as_nobody(&mut c);
        let (code, out, err) = mg_cmd(&mut c);
        assert_eq!(code, 1, "{verb}: {out}");
        assert!(
            err.contains("permission denied: the control socket serves root only (peer uid 65534)"),
            "{verb}: {err}"
        );
        assert!(out.is_empty(), "{verb}: {out}");
    }
    assert_eq!(
        status(&env)["counters"]["reloads_applied"],
        0,
        "nothing was reloaded"
    );
}

#[test]
fn one_daemon_per_socket_and_stale_sockets_are_replaced() {
    if !root_or_skip("ctl-single") {
        return;
    }
    // A socket file left by a daemon that died: replaced.
    let env = Env::start_with("ctl-single", PROBE_ONLY, |tmp| {
        drop(std::os::unix::net::UnixListener::bind(tmp.join("control.sock")).unwrap());
    });
    status(&env);
    // A second daemon on the same socket refuses before touching the kernel.
    let (code, _, err) = mg(&[
        "run",
        "--policy",
        env.policy.to_str().unwrap(),
        "--cgroup",
        env.sb.cgroup_dir().to_str().unwrap(),
        "--control",
        ctl(&env),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("another metaguard daemon is answering on"),
        "{err}"
    );
    status(&env);
}

#[test]
fn clients_say_when_no_daemon_answers() {
    let dir = metaguard::demo::TempDir::new("ctl-none").unwrap();
    let path = dir.0.join("control.sock");
    for verb in ["status", "reload", "events"] {
        let (code, _, err) = mg(&[verb, "--control", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{verb}");
        assert_eq!(
            err.trim(),
            format!(
                "no metaguard daemon on {}: is `metaguard run` running?",
                path.display()
            ),
            "{verb}"
        );
    }
}
