//! The command line's contract: `check` output and exit codes, and `run`
//! refusing a bad policy or cgroup with a message that names the problem.
use std::process::Command;

use metaguard::demo::TempDir;

fn metaguard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metaguard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `name` in a temp dir removed when the guard drops.
fn write(name: &str, text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("cli").unwrap();
    let p = dir.0.join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

#[test]
fn check_prints_the_compiled_policy() {
    let (_dir, p) = write("good.toml", "include = [\"aws\"]\n\n[[allow]]\nname = \"sh\"\nexe = \"/bin/sh\"\nendpoints = [\"aws-imds\"]\n");
    let (code, out, err) = metaguard(&["check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("aws-imds [preset aws]: 169.254.169.254/32, fd00:ec2::254/128"),
        "{out}"
    );
    assert!(out.contains("sh -> aws-imds"), "{out}");
}

#[test]
fn check_reports_every_error_with_file_line_column_and_exits_2() {
    let (_dir, p) = write(
        "bad.toml",
        "include = [\"aws\", \"azur\"]\n\n[[endpoint]]\nname = \"imds\"\naddresses = [\"169.254.169.254/16\"]\ncolour = \"red\"\n\n[[allow]]\nname = \"a\"\nexe = \"/no/such/file\"\n\n[[allow]]\nname = \"a\"\nusers = [\"no-such-user-here\"]\n",
    );
    let path = p.to_str().unwrap();
    let (code, out, err) = metaguard(&["check", path]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    for want in [
        format!("{path}:1:19: unknown preset `azur`"),
        format!("{path}:5:14: `169.254.169.254/16` has host bits set"),
        format!("{path}:6:1: unknown key `colour`"),
        format!("{path}:10:7: exe `/no/such/file` does not exist"),
        format!("{path}:13:8: duplicate rule name `a`"),
        format!("{path}:14:10: unknown user `no-such-user-here`"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_names_an_unreadable_file() {
    let (code, _, err) = metaguard(&["check", "/no/such/policy.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/policy.toml"), "{err}");
}

#[test]
fn run_refuses_a_bad_policy_before_touching_the_kernel() {
    let (_dir, p) = write("run-bad.toml", "mode = \"enforcing\"\n");
    let (code, _, err) = metaguard(&["run", "--policy", p.to_str().unwrap()]);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("run-bad.toml:1:8"), "{err}");
    } else {
        assert_eq!(code, 1);
        assert!(err.contains("needs root"), "{err}");
    }
}

#[test]
fn run_refuses_a_missing_cgroup() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED run_refuses_a_missing_cgroup: needs root");
        return;
    }
    let (_dir, p) = write(
        "run-ok.toml",
        "include = [\"aws\"]\n\n[[allow]]\nname = \"sh\"\nexe = \"/bin/sh\"\n",
    );
    let (code, _, err) = metaguard(&[
        "run",
        "--policy",
        p.to_str().unwrap(),
        "--cgroup",
        "/no-such-metaguard-cgroup",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no-such-metaguard-cgroup is not a cgroup v2 directory"),
        "{err}"
    );
}
