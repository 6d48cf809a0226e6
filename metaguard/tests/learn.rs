//! `metaguard learn` as an operator runs it: no root, no BPF; events in,
//! a policy that `metaguard check` accepts out, problems on stderr.
use std::process::{Command, Stdio};

use metaguard::demo::TempDir;

fn metaguard(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metaguard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A decision line in the shape README's Events section documents.
fn decision(action: &str, endpoint: &str, exe: &str, uid: u32, pid: u32) -> String {
    let name = exe.rsplit('/').next().unwrap();
    format!(
        r#"{{"time":"2026-11-29T03:40:{:02}.123456789Z","type":"decision","action":"{action}","reason":"no-matching-rule","rule":null,"endpoint":"{endpoint}","pid":{pid},"tid":{pid},"uid":{uid},"gid":{uid},"comm":"{name}","exe":{{"path":"{exe}","name":"{name}","dev":"254:1","ino":1837,"generation":0}},"cgroup":{{"id":1,"path":"/"}},"destination":{{"address":"169.254.169.254","port":80}},"protocol":"tcp","hook":"connect4","count":1,"policy_generation":1}}"#,
        pid % 60
    )
}

#[test]
fn learn_writes_a_policy_that_check_accepts() {
    let dir = TempDir::new("learn-cli").unwrap();
    let events = dir.0.join("events.jsonl");
    let out = dir.0.join("policy.toml");
    let lines = [
        decision("audit", "aws-imds", "/bin/sh", 0, 1),
        decision("audit", "aws-imds", "/usr/bin/env", 0, 2),
        decision("audit", "azure-wireserver", "/usr/bin/env", 0, 3),
        r#"{"time":"2026-11-29T03:41:00Z","type":"lost","lost":3,"total_lost":3}"#.to_string(),
        "{ this is not json".to_string(),
        decision("deny", "aws-imds", "/bin/sh", 65534, 4),
    ];
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let (code, stdout, stderr) = metaguard(
        &[
            "learn",
            "--from",
            events.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let ev = events.display().to_string();
    assert!(
        stderr.contains(&format!("{ev}:5: malformed event")),
        "{stderr}"
    );
    assert!(stderr.contains("3 rules from 4 decisions"), "{stderr}");
    let policy = std::fs::read_to_string(&out).unwrap();
    assert!(
        policy.contains("include = [\"aws\", \"azure\"]"),
        "{policy}"
    );
    assert!(policy.contains("1 lost-event reports"), "{policy}");
    assert!(policy.contains("name = \"sh-root\""), "{policy}");
    assert!(policy.contains("name = \"sh-nobody\""), "{policy}");
    assert!(
        policy.contains("endpoints = [\"aws-imds\", \"azure-wireserver\"]"),
        "{policy}"
    );

    let (code, summary, err) = metaguard(&["check", out.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}\n{policy}");
    assert!(
        summary.contains("env -> aws-imds, azure-wireserver"),
        "{summary}"
    );
}

#[test]
fn learn_reads_stdin_and_prints_to_stdout() {
    let (code, stdout, stderr) = metaguard(
        &["learn", "--from", "-"],
        Some(&decision("allow", "gcp-metadata", "/bin/sh", 0, 1)),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("# Proposed by `metaguard learn` from -."),
        "{stdout}"
    );
    assert!(stdout.contains("include = [\"gcp\"]"), "{stdout}");
}

#[test]
fn learn_keeps_an_existing_policy_and_refuses_a_broken_one() {
    let dir = TempDir::new("learn-cli-existing").unwrap();
    let existing = dir.0.join("existing.toml");
    std::fs::write(&existing, "mode = \"enforce\"\ninclude = [\"aws\"]\n").unwrap();
    let events = decision("deny", "aws-imds", "/bin/sh", 0, 1);
    let (code, stdout, stderr) = metaguard(
        &[
            "learn",
            "--from",
            "-",
            "--policy",
            existing.to_str().unwrap(),
        ],
        Some(&events),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("mode = \"enforce\"\ninclude = [\"aws\"]\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("mode = \"audit\""), "{stdout}");

    std::fs::write(&existing, "include = [\"aws\"]\nbogus = 1\n").unwrap();
    let (code, _, stderr) = metaguard(
        &[
            "learn",
            "--from",
            "-",
            "--policy",
            existing.to_str().unwrap(),
        ],
        Some(&events),
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("existing.toml:2:1: unknown key `bogus`"),
        "{stderr}"
    );
}

#[test]
fn learn_fails_only_when_nothing_valid_was_read() {
    let (code, stdout, stderr) = metaguard(
        &["learn", "--from", "-"],
        Some("garbage\n\n{\"type\":\"lost\",\"lost\":1,\"total_lost\":1}\n[1,2]\n"),
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("-:1: malformed event"), "{stderr}");
    assert!(stderr.contains("-:4: malformed event"), "{stderr}");
    assert!(
        stderr.contains("no decision or request events to learn from"),
        "{stderr}"
    );

    let (code, _, stderr) = metaguard(&["learn", "--from", "/no/such/events.jsonl"], None);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read /no/such/events.jsonl"),
        "{stderr}"
    );
}
