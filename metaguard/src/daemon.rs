//! `metaguard run`: load, fill, attach, stream events until told to stop;
//! answer the control socket ([`crate::control`]) meanwhile.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use sha2::{Digest as _, Sha256};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    control::{
        self, DrainingStatus, Fanout, GrantStatus, Line, PolicyStatus, ProgramStatus, Request,
        Response, Status,
    },
    events::{parse_event, Decision, Format, Lost, ReloadEvent, Renderer},
    loader::{pins, Guard},
    metrics::Metrics,
    policy::{self, Policy, PolicyErrors},
    repeats::Repeats,
    sys::cgroup,
};

/// How often draining socket maps are looked at (see [`pins`]).
const DRAIN_SWEEP: Duration = Duration::from_secs(2);

pub struct RunOptions {
    pub policy: PathBuf,
    /// cgroup2 directory to attach to; the cgroup2 root when `None`.
    pub cgroup: Option<PathBuf>,
    pub format: Format,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// The control socket (`status`, `reload`, `events`).
    pub control: PathBuf,
    /// bpffs directory for the pinned links that keep enforcing after exit.
    pub pin_dir: PathBuf,
    /// Detach on SIGINT/SIGTERM instead of leaving the programs enforcing.
    pub detach_on_exit: bool,
    /// Test only: `MAP=N` capacities overriding the built-in ones (see
    /// [`Guard::load_with`]).
    pub test_map_entries: Vec<String>,
}

/// `metaguard unload`: detaches and removes the pinned attachments on
/// `cgroup` (every cgroup when `None`); the number of sets removed.
pub fn unload(cgroup: Option<&Path>, pin_root: &Path) -> Result<usize> {
    require_root("metaguard unload")?;
    let bases = match cgroup {
        Some(c) => vec![crate::loader::pins::cgroup_pins(
            pin_root,
            &cgroup_dir(Some(c))?,
        )?],
        None => std::fs::read_dir(pin_root)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut n = 0;
    for b in bases {
        // Draining socket maps go too: unload removes everything.
        n += crate::loader::pins::remove_all(&b)?;
    }
    Ok(n)
}

/// Refuses early, with the reason, when not privileged enough.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root: loading and attaching BPF programs requires CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or CAP_SYS_ADMIN)");
    }
    Ok(())
}

/// Resolves `--cgroup`: an absolute directory inside the cgroup2 mount, or a
/// path relative to the mount ("/system.slice").
pub fn cgroup_dir(arg: Option<&Path>) -> Result<PathBuf> {
    let mount = cgroup::cgroup2_mount()?;
    let dir = match arg {
        None => mount.clone(),
        Some(p) if p.starts_with(&mount) => p.to_path_buf(),
        Some(p) => mount.join(p.strip_prefix("/").unwrap_or(p)),
    };
    if !dir.join("cgroup.procs").exists() {
        bail!(
            "{} is not a cgroup v2 directory (cgroup2 is mounted at {})",
            dir.display(),
            mount.display()
        );
    }
    Ok(dir)
}

pub async fn run(opts: RunOptions) -> Result<()> {
    // Handlers first: a stop request arriving while loading must still
    // find them (the default action would kill the daemon mid-attach).
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    require_root("metaguard run")?;
    let (current, bytes) = policy::load_bytes(&opts.policy)?;
    let dir = cgroup_dir(opts.cgroup.as_deref())?;
    // Before the programs: a second daemon on the same socket stops here.
    let fanout = Arc::new(Fanout::default());
    let (ask_tx, mut ask_rx) = mpsc::channel::<control::Ask>(16);
    let server = control::Server::start(&opts.control, ask_tx, fanout.clone())?;
    let mut guard = Guard::load_with(&opts.test_map_entries)?;
    guard.apply(&current)?;
    guard.attach_pinned(&dir, &opts.pin_dir)?;
    let events = guard.take_events()?;
    eprintln!(
        "metaguard: {} policy {} on cgroup {} ({} endpoints, {} rules); programs {:?}",
        match current.mode {
            policy::Mode::Enforce => "enforcing",
            policy::Mode::Audit => "auditing",
        },
        opts.policy.display(),
        dir.display(),
        current.endpoints.len(),
        current.rules.len(),
        guard.program_ids()
    );
    eprintln!("metaguard: control socket {}", server.path().display());

    let (exe_tx, mut exe_rx) = mpsc::unbounded_channel();
    let metrics = Metrics::new();
    let _metrics_server = match opts.metrics {
        Some(addr) => Some(metrics.clone().serve(addr).await?),
        None => None,
    };
    let mut st = State {
        renderer: Renderer::new(&current),
        watcher: policy::ExeWatcher::new(exe_paths(&current), exe_tx.clone()).ok(),
        loaded: Loaded::now(&bytes),
        current,
        exe_tx,
        guard,
        repeats: Repeats::default(),
        metrics,
        out: Out {
            format: opts.format,
            fanout: fanout.clone(),
            stdout: String::new(),
            lines: vec![],
        },
        policy_path: opts.policy.clone(),
        started: Instant::now(),
        started_at: rfc3339_now(),
    };
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    let mut lost_tick = tokio::time::interval(Duration::from_secs(1));
    let mut drain_tick = tokio::time::interval(Duration::from_millis(50));
    // Draining socket maps (of the sets this daemon took over, or left by
    // earlier ones) are removed once empty. The first look comes a period
    // after the takeover, so no old sock_ops run can still be adding to one.
    let mut sweep_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + DRAIN_SWEEP, DRAIN_SWEEP);
    let mut lost_total = 0u64;
    loop {
        tokio::select! {
            r = events.readable_mut() => {
                let mut g = r?;
                st.drain(g.get_inner_mut());
                g.clear_ready();
                st.out.flush();
            }
            // The kernel wakes us only when the buffer fills; this keeps events live.
            _ = drain_tick.tick() => {
                st.drain(events.get_mut());
                st.out.flush();
            }
            _ = lost_tick.tick() => {
                st.expire_grants();
                // Drain first so that repeats follow the event they repeat.
                st.drain(events.get_mut());
                let counts = st.guard.repeat_counts().unwrap_or_default();
                for d in st.repeats.report(&counts, &mut st.renderer) {
                    st.metrics.decision(&d);
                    st.out.decision(&d);
                }
                let total = st.guard.lost_events().unwrap_or(lost_total);
                if total > lost_total {
                    let rep = Lost { time: st.renderer.now(), kind: "lost", lost: total - lost_total, total_lost: total };
                    st.out.push(
                        || serde_json::to_string(&rep).unwrap_or_default(),
                        || format!("{} LOST  {} events (ring buffer full; {} in all)", rep.time, rep.lost, rep.total_lost),
                    );
                    st.metrics.lost(total - lost_total);
                    lost_total = total;
                }
                st.out.flush();
                for (name, _) in st.guard.program_ids() {
                    if let Ok((_, runs)) = st.guard.program_stats(&name) {
                        st.metrics.program_runs(&name, runs);
                    }
                }
            }
            _ = sweep_tick.tick() => {
                if let Some(base) = st.guard.pin_base() {
                    for d in pins::sweep_draining(base).iter().filter(|d| d.removed) {
                        eprintln!(
                            "metaguard: {} has no connection left; removed",
                            d.dir.display()
                        );
                    }
                }
            }
            Some(path) = exe_rx.recv() => {
                if let Err(e) = reresolve(&mut st.current, &path) {
                    eprintln!("metaguard: {e:#}");
                }
                st.guard.update_exes(&st.current)?;
                st.renderer.set_policy(&st.current);
            }
            _ = sighup.recv() => {
                // Events already queued belong to the old policy's names.
                st.drain(events.get_mut());
                // A rejection is reported (stderr, event, metrics), not fatal.
                let _ = st.reload()?;
                st.out.flush();
            }
            Some((req, reply)) = ask_rx.recv() => {
                let resp = match req {
                    Request::Status => Response { status: Some(st.status()), ..Response::ok() },
                    Request::Reload => {
                        st.drain(events.get_mut());
                        let r = st.reload()?;
                        st.out.flush();
                        match r {
                            Ok(generation) => Response {
                                policy: Some(st.policy_path.display().to_string()),
                                generation: Some(generation),
                                ..Response::ok()
                            },
                            Err(e) => Response {
                                errors: e.iter().map(|e| e.to_string()).collect(),
                                ..Response::error(format!(
                                    "policy {} rejected; the running policy stays in force",
                                    st.policy_path.display()
                                ))
                            },
                        }
                    }
                    Request::Grant { pid, ttl_secs, endpoint } => {
                        match st.grant(pid, ttl_secs, endpoint.as_deref()) {
                            Ok(g) => Response { grant: Some(g), ..Response::ok() },
                            Err(e) => Response::error(format!("{e:#}")),
                        }
                    }
                    Request::Revoke { pid } => match st.guard.revoke(pid) {
                        Ok(true) => Response::ok(),
                        Ok(false) => Response::error(format!("pid {pid} has no grant")),
                        Err(e) => Response::error(format!("{e:#}")),
                    },
                    // Served by the connection itself.
                    Request::Events { .. } => Response::error("not here"),
                };
                let _ = reply.send(resp);
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // `events` clients see the connection end once their queues drain.
    fanout.close();
    drop(server); // removes the socket file
    let State {
        watcher, mut guard, ..
    } = st;
    drop(watcher);
    drop(events);
    if opts.detach_on_exit {
        guard.detach_pinned()?;
        drop(guard);
        eprintln!("metaguard: detached from {}", dir.display());
    } else {
        let pins = guard.pinned().map(|p| p.display().to_string());
        guard.keep_attached();
        drop(guard);
        eprintln!(
            "metaguard: stopped; the programs keep enforcing the last policy on {} (pinned at {}; `metaguard unload` removes them)",
            dir.display(),
            pins.unwrap_or_default()
        );
    }
    let _ = std::io::stdout().lock().flush();
    Ok(())
}

/// What the daemon runs with, besides the event ring buffer.
struct State {
    policy_path: PathBuf,
    current: Policy,
    loaded: Loaded,
    guard: Guard,
    renderer: Renderer,
    repeats: Repeats,
    watcher: Option<policy::ExeWatcher>,
    exe_tx: mpsc::UnboundedSender<PathBuf>,
    metrics: Metrics,
    out: Out,
    started: Instant,
    started_at: String,
}

/// The policy file as loaded.
struct Loaded {
    sha256: String,
    at: String,
}

impl Loaded {
    fn now(bytes: &[u8]) -> Loaded {
        let sha256 = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Loaded {
            sha256,
            at: rfc3339_now(),
        }
    }
}

impl State {
    /// Re-reads the policy file (SIGHUP and `metaguard reload`). A policy
    /// that fails validation is rejected and the running one stays in
    /// force. Either way a `reload` event is written. Ok(Ok(generation))
    /// when applied; Err only when the kernel maps cannot be written.
    fn reload(&mut self) -> Result<Result<u32, PolicyErrors>> {
        let time = self.renderer.now();
        match policy::load_bytes(&self.policy_path) {
            Ok((p, bytes)) => {
                self.guard.apply(&p)?;
                self.renderer.set_policy(&p);
                self.watcher = policy::ExeWatcher::new(exe_paths(&p), self.exe_tx.clone()).ok();
                self.current = p;
                self.loaded = Loaded::now(&bytes);
                self.metrics.reload(true);
                let generation = self.guard.generation();
                eprintln!(
                    "metaguard: reloaded {} (generation {generation})",
                    self.policy_path.display()
                );
                let ev = ReloadEvent {
                    kind: "reload",
                    result: "applied",
                    policy: self.policy_path.display().to_string(),
                    generation: Some(generation),
                    sha256: Some(self.loaded.sha256.clone()),
                    errors: vec![],
                    time,
                };
                self.out.push(
                    || serde_json::to_string(&ev).unwrap_or_default(),
                    || ev.text(),
                );
                Ok(Ok(generation))
            }
            Err(e) => {
                self.metrics.reload(false);
                eprintln!("metaguard: reload rejected, the running policy stays in force:\n{e}");
                let ev = ReloadEvent {
                    kind: "reload",
                    result: "rejected",
                    policy: self.policy_path.display().to_string(),
                    generation: None,
                    sha256: None,
                    errors: e.iter().map(|e| e.to_string()).collect(),
                    time,
                };
                self.out.push(
                    || serde_json::to_string(&ev).unwrap_or_default(),
                    || ev.text(),
                );
                Ok(Err(e))
            }
        }
    }

    /// Renders every event waiting in the ring buffer.
    fn drain(&mut self, rb: &mut RingBuf<MapData>) {
        while let Some(item) = rb.next() {
            if let Some(ev) = parse_event(&item) {
                let d = self.renderer.render(&ev);
                if d.kind == "redact" && d.reason == "redact-cut" {
                    // The kernel masks what arrives on it and refuses its
                    // sends; end the client's wait too.
                    if let (Some(pid), Some(cookie)) = (d.pid, d.connection) {
                        if let Err(e) = crate::sys::cut::cut(pid, cookie) {
                            eprintln!("metaguard: cutting connection {cookie} of pid {pid}: {e:#}");
                        }
                    }
                }
                // Redaction reports are counted in windows like decisions
                // (a cut never is).
                self.repeats.note(&ev, &d);
                self.metrics.decision(&d);
                self.out.decision(&d);
            }
        }
    }

    /// `metaguard grant`: pins the grant to the process as it runs now
    /// (start time and executable, read from /proc), so a reused pid or an
    /// exec'd image does not inherit it.
    fn grant(&mut self, pid: u32, ttl_secs: u64, endpoint: Option<&str>) -> Result<GrantStatus> {
        if ttl_secs == 0 || ttl_secs > 24 * 3600 {
            bail!("ttl must be between 1 s and 24 h");
        }
        let endpoints = match endpoint {
            None => u64::MAX,
            Some(name) => match self.current.endpoints.iter().position(|e| e.name == name) {
                Some(i) if i < 64 => 1u64 << i,
                Some(_) => u64::MAX,
                None => bail!("no endpoint named `{name}` in the policy"),
            },
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| anyhow::anyhow!("no process {pid}: {e}"))?;
        // Field 22 (starttime), counted after the `(comm)` field, which may
        // hold spaces.
        let start_ticks: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("cannot read the start time of process {pid}"))?;
        let exe_path = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| anyhow::anyhow!("cannot read the executable of process {pid}: {e}"))?;
        let m = std::fs::metadata(format!("/proc/{pid}/exe"))?;
        use std::os::unix::fs::MetadataExt as _;
        let kdev = ((libc::major(m.dev()) as u32) << 20) | libc::minor(m.dev()) as u32;
        let now_ns = monotonic_ns();
        let g = metaguard_common::maps::Grant {
            start_ticks,
            exe_ino: m.ino(),
            exe_dev: kdev,
            _pad: 0,
            expires_ns: now_ns + ttl_secs * 1_000_000_000,
            endpoints,
        };
        self.guard.grant(pid, g)?;
        eprintln!(
            "metaguard: granted pid {pid} ({}) {} for {ttl_secs} s",
            exe_path.display(),
            endpoint.unwrap_or("every endpoint")
        );
        Ok(self.grant_status(pid, &g, now_ns))
    }

    fn grant_status(
        &self,
        pid: u32,
        g: &metaguard_common::maps::Grant,
        now_ns: u64,
    ) -> GrantStatus {
        let endpoints = if g.endpoints == u64::MAX {
            vec!["*".to_string()]
        } else {
            self.current
                .endpoints
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 64 && g.endpoints & (1 << i) != 0)
                .map(|(_, e)| e.name.clone())
                .collect()
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| format!("ino {}", g.exe_ino));
        GrantStatus {
            pid,
            exe,
            endpoints,
            expires_in_seconds: g.expires_ns.saturating_sub(now_ns) / 1_000_000_000,
        }
    }

    /// Removes expired grants (the kernel ignores them already).
    fn expire_grants(&mut self) {
        let now_ns = monotonic_ns();
        for (pid, g) in self.guard.grants() {
            if g.expires_ns <= now_ns {
                let _ = self.guard.revoke(pid);
            }
        }
    }

    fn status(&self) -> Status {
        let cgroup = self.guard.cgroup().display().to_string();
        let now_ns = monotonic_ns();
        Status {
            grants: self
                .guard
                .grants()
                .iter()
                .filter(|(_, g)| g.expires_ns > now_ns)
                .map(|(pid, g)| self.grant_status(*pid, g, now_ns))
                .collect(),
            pid: std::process::id(),
            started: self.started_at.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            mode: self.current.mode.as_str().into(),
            policy: PolicyStatus {
                path: self.policy_path.display().to_string(),
                sha256: self.loaded.sha256.clone(),
                loaded: self.loaded.at.clone(),
                generation: self.guard.generation(),
            },
            programs: self
                .guard
                .program_ids()
                .into_iter()
                .map(|(name, id)| ProgramStatus {
                    name,
                    id,
                    cgroup: cgroup.clone(),
                })
                .collect(),
            draining: self
                .guard
                .pin_base()
                .map(pins::list_draining)
                .unwrap_or_default()
                .into_iter()
                .map(|d| DrainingStatus {
                    path: d.dir.display().to_string(),
                    sockets: d.sockets.map(|n| n as u64),
                })
                .collect(),
            counters: self.metrics.counters(),
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Lines for stdout (in `run`'s format) and for `events` clients (in both
/// formats, rendered only while a client listens), written by `flush`.
struct Out {
    format: Format,
    fanout: Arc<Fanout>,
    stdout: String,
    lines: Vec<Line>,
}

impl Out {
    fn push(&mut self, json: impl FnOnce() -> String, text: impl FnOnce() -> String) {
        if self.fanout.active() {
            let l = Line {
                json: json(),
                text: text(),
            };
            self.stdout.push_str(match self.format {
                Format::Json => &l.json,
                Format::Text => &l.text,
            });
            self.lines.push(l);
        } else {
            match self.format {
                Format::Json => self.stdout.push_str(&json()),
                Format::Text => self.stdout.push_str(&text()),
            }
        }
        self.stdout.push('\n');
    }

    fn decision(&mut self, d: &Decision) {
        self.push(|| d.line(Format::Json), || d.line(Format::Text));
    }

    fn flush(&mut self) {
        if !self.stdout.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(self.stdout.as_bytes());
            let _ = o.flush();
            self.stdout.clear();
        }
        self.fanout.send(&self.lines);
        self.lines.clear();
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn exe_paths(p: &Policy) -> Vec<PathBuf> {
    p.rules
        .iter()
        .filter_map(|r| r.exe.as_ref().map(|x| x.path.clone()))
        .collect()
}

/// A rule's executable changed on disk: take its new identity. A missing
/// file keeps no identity at all (nothing matches it) until it returns.
fn reresolve(p: &mut Policy, path: &Path) -> Result<()> {
    for r in &mut p.rules {
        if let Some(x) = r.exe.as_mut().filter(|x| x.path == path) {
            match crate::sys::exe::identify(path) {
                Ok(id) => x.id = id,
                Err(e) => {
                    x.id = crate::sys::exe::ExeId::NONE;
                    bail!(
                        "{} is gone ({e}); its rules match nothing until it returns",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}
