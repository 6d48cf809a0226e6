//! `metaguard demo`: the guard on a built-in sandbox. A fake metadata
//! service in its own network namespace, `metaguard run` attached to the
//! sandbox's cgroup, and clients that are allowed or denied, with the
//! decisions printed as they happen. Everything is removed at the end.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use metaguard_sandbox::{addrs, Sandbox};

use crate::{daemon::require_root, events::Format};

/// How long `run` may take to load and attach its programs before a test or
/// the demo gives up on it.
const ATTACH_WAIT: Duration = Duration::from_secs(90);

/// A running `metaguard run`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `metaguard run` (the binary at `bin`) on `cgroup` and waits
    /// until it has attached. Its stdout (events) goes to `on_event`, one
    /// line at a time.
    pub fn start(
        bin: &Path,
        policy: &Path,
        cgroup: &Path,
        format: Format,
        on_event: impl Fn(String) + Send + 'static,
    ) -> Result<Daemon> {
        Daemon::start_with_args(bin, policy, cgroup, format, &[], on_event)
    }

    /// As `start`, with more `run` arguments. The daemon detaches when
    /// stopped (`--detach-on-exit`): tests and the demo leave nothing behind.
    pub fn start_with_args(
        bin: &Path,
        policy: &Path,
        cgroup: &Path,
        format: Format,
        extra: &[&str],
        on_event: impl Fn(String) + Send + 'static,
    ) -> Result<Daemon> {
        let mut args = vec!["--detach-on-exit"];
        args.extend_from_slice(extra);
        Daemon::start_keeping(bin, policy, cgroup, format, &args, on_event)
    }

    /// As `start_with_args`, but a stopped daemon leaves its programs
    /// enforcing (the production default), unless `extra` says otherwise.
    pub fn start_keeping(
        bin: &Path,
        policy: &Path,
        cgroup: &Path,
        format: Format,
        extra: &[&str],
        on_event: impl Fn(String) + Send + 'static,
    ) -> Result<Daemon> {
        let fmt = match format {
            Format::Json => "json",
            Format::Text => "text",
        };
        let mut child = Command::new(bin)
            .args(["run", "--format", fmt, "--policy"])
            .arg(policy)
            .arg("--cgroup")
            .arg(cgroup)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting metaguard run")?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .for_each(on_event)
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [daemon] {line}");
                let _ = tx.send(line);
            }
        });
        let mut d = Daemon { child };
        // Loading means verifying a dozen programs: a few seconds on an idle
        // machine, many more on a busy one.
        let deadline = std::time::Instant::now() + ATTACH_WAIT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("enforcing") || l.contains("auditing") => return Ok(d),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = d.child.try_wait()? {
                bail!("metaguard run exited before attaching ({status})");
            }
            if std::time::Instant::now() > deadline {
                bail!("metaguard run did not attach within {ATTACH_WAIT:?}");
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        Ok(self.child.wait()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// A private bpffs instance for pins (`run --pin-dir`), unmounted on drop:
/// whatever is still pinned in it goes with it. Tests and the demo use one
/// so they never touch the host's /sys/fs/bpf.
pub struct BpfMount(pub PathBuf);

impl BpfMount {
    pub fn new(tag: &str) -> Result<BpfMount> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("metaguard-bpffs-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting a bpffs at {}", dir.display()))?;
        Ok(BpfMount(dir))
    }

    /// The `--pin-dir` inside it.
    pub fn pin_dir(&self) -> PathBuf {
        self.0.join("metaguard")
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "metaguard-{tag}-{}-{}",
            std::process::id(),
            nanos()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The probe client installed next to this binary.
pub fn probe_binary() -> Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("metaguard-probe");
    if !p.exists() {
        bail!("{} not found: build the workspace (cargo build) so metaguard-probe sits next to metaguard", p.display());
    }
    Ok(p)
}

struct Scenario {
    title: &'static str,
    program: PathBuf,
    args: Vec<String>,
    expect_ok: bool,
}

pub fn run(format: Format) -> Result<()> {
    require_root("metaguard demo")?;
    let probe = probe_binary()?;
    let tmp = TempDir::new("demo")?;
    let copy = tmp.0.join("metaguard-probe-copy");
    std::fs::copy(&probe, &copy).context("copying the probe")?;
    let policy = tmp.0.join("demo-policy.toml");
    std::fs::write(&policy, demo_policy(&probe)).context("writing the demo policy")?;

    println!("== metaguard demo ==");
    println!("A sandbox: a client network namespace and cgroup, and a fake metadata service at");
    println!(
        "{} and [{}] in a namespace of its own. Policy ({}):\n",
        addrs::IMDS_V4,
        addrs::IMDS_V6,
        policy.display()
    );
    println!("{}", std::fs::read_to_string(&policy)?);
    let sb = Sandbox::create("demo")?;
    // Its own control socket: a daemon guarding the host may hold the default one.
    let control = tmp.0.join("control.sock");
    let bpffs = BpfMount::new("demo")?;
    let pin_dir = bpffs.pin_dir();
    let mut daemon = Daemon::start_with_args(
        &std::env::current_exe()?,
        &policy,
        sb.cgroup_dir(),
        format,
        &[
            "--control",
            control.to_str().context("temp dir path")?,
            "--pin-dir",
            pin_dir.to_str().context("temp dir path")?,
        ],
        |line| println!("  event: {line}"),
    )?;

    let imds = addrs::IMDS_V4.to_string();
    let imds6 = addrs::IMDS_V6.to_string();
    let unprotected = addrs::UNPROTECTED_V4.to_string();
    let scenarios = [
        Scenario {
            title: "the allowed program reads the instance id",
            program: probe.clone(),
            args: args(&["tcp", &imds, "80"]),
            expect_ok: true,
        },
        Scenario {
            title: "the allowed program asks for the instance's credentials (not in its http list: refused at send, in the kernel)",
            program: probe.clone(),
            args: args(&[
                "tcp",
                &imds,
                "80",
                "--path",
                "/latest/meta-data/iam/security-credentials/",
            ]),
            expect_ok: false,
        },
        Scenario {
            title: "the allowed program over IPv6",
            program: probe.clone(),
            args: args(&["tcp", &imds6, "80"]),
            expect_ok: true,
        },
        Scenario {
            title: "a byte-identical copy of the allowed program (its comm still reads metaguard-probe: names prove nothing)",
            program: copy.clone(),
            args: args(&["tcp", &imds, "80"]),
            expect_ok: false,
        },
        Scenario {
            title: "the copy, through a dual-stack socket (::ffff:169.254.169.254)",
            program: copy.clone(),
            args: args(&["tcp6-mapped", &imds, "80"]),
            expect_ok: false,
        },
        Scenario {
            title: "the copy, sending UDP",
            program: copy.clone(),
            args: args(&["udp-sendto", &imds, "80"]),
            expect_ok: false,
        },
        Scenario {
            title: "the copy, reaching an unprotected host",
            program: copy.clone(),
            args: args(&["tcp", &unprotected, "80", "--path", "/"]),
            expect_ok: true,
        },
    ];
    let mut failures = vec![];
    for s in &scenarios {
        println!(
            "\n-> {}: {} {}",
            s.title,
            s.program.display(),
            s.args.join(" ")
        );
        sb.clear_log();
        let out = sb
            .client(&s.program)
            .args(&s.args)
            .output()
            .context("running a client")?;
        let result = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = out.status.success();
        std::thread::sleep(Duration::from_millis(300)); // let its event print first
        let received = sb.requests().len() + sb.datagrams().len();
        let as_expected = ok == s.expect_ok && (s.expect_ok || received == 0);
        println!(
            "   {} ({}); the metadata service received {received} request(s)\n   client said: {result}",
            if ok { "reached" } else { "refused" },
            if as_expected { "as expected" } else { "UNEXPECTED" },
        );
        if !as_expected {
            failures.push(s.title);
        }
    }
    let status = daemon.stop()?;
    println!("metaguard run stopped ({status}); programs detached, sandbox removed.");
    drop(sb);
    if !failures.is_empty() {
        bail!("unexpected outcomes: {failures:?}");
    }
    Ok(())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn demo_policy(probe: &Path) -> String {
    format!(
        r#"# metaguard demo policy: only metaguard-probe, as installed, may reach the
# fake instance metadata service, and only to read the instance id;
# everyone else in the sandbox is refused.
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]
ports     = [80]

[[allow]]
name      = "probe-agent"
endpoints = ["aws-imds"]
exe       = "{}"
http      = [{{ method = "GET", path = "/latest/meta-data/instance-id" }}]
"#,
        probe.display()
    )
}
