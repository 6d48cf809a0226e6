//! `metaguard run`: load, fill, attach, stream events until told to stop.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    events::{parse_event, Format, Lost, Renderer},
    loader::Guard,
    metrics::Metrics,
    policy::{self, Policy},
    repeats::Repeats,
    sys::cgroup,
};

pub struct RunOptions {
    pub policy: PathBuf,
    /// cgroup2 directory to attach to; the cgroup2 root when `None`.
    pub cgroup: Option<PathBuf>,
    pub format: Format,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
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
    require_root("metaguard run")?;
    let mut current = policy::load(&opts.policy)?;
    let dir = cgroup_dir(opts.cgroup.as_deref())?;
    let mut guard = Guard::load()?;
    guard.apply(&current)?;
    guard.attach(&dir)?;
    let events = guard.take_events()?;
    let mut renderer = Renderer::new(&current);
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

    let (exe_tx, mut exe_rx) = mpsc::unbounded_channel();
    let mut watcher = policy::ExeWatcher::new(exe_paths(&current), exe_tx.clone()).ok();
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut lost_tick = tokio::time::interval(Duration::from_secs(1));
    let mut drain_tick = tokio::time::interval(Duration::from_millis(50));
    let mut lost_total = 0u64;
    let mut repeats = Repeats::default();
    let metrics = Metrics::new();
    let _metrics_server = match opts.metrics {
        Some(addr) => Some(metrics.clone().serve(addr).await?),
        None => None,
    };
    let out = std::io::stdout();
    loop {
        tokio::select! {
            r = events.readable_mut() => {
                let mut g = r?;
                let lines = drain(g.get_inner_mut(), &mut renderer, &mut repeats, &metrics, opts.format);
                g.clear_ready();
                write_out(&out, &lines);
            }
            // The kernel wakes us only when the buffer fills; this keeps events live.
            _ = drain_tick.tick() => {
                let lines = drain(events.get_mut(), &mut renderer, &mut repeats, &metrics, opts.format);
                write_out(&out, &lines);
            }
            _ = lost_tick.tick() => {
                // Drain first so that repeats follow the event they repeat.
                let mut lines = drain(events.get_mut(), &mut renderer, &mut repeats, &metrics, opts.format);
                let counts = guard.repeat_counts().unwrap_or_default();
                for d in repeats.report(&counts, &mut renderer) {
                    metrics.decision(&d);
                    lines.push_str(&d.line(opts.format));
                    lines.push('\n');
                }
                write_out(&out, &lines);
                let total = guard.lost_events().unwrap_or(lost_total);
                if total > lost_total {
                    let rep = Lost { time: renderer.now(), kind: "lost", lost: total - lost_total, total_lost: total };
                    let line = match opts.format {
                        Format::Json => serde_json::to_string(&rep)?,
                        Format::Text => format!("{} LOST  {} events (ring buffer full; {} in all)", rep.time, rep.lost, rep.total_lost),
                    };
                    let mut o = out.lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                    metrics.lost(total - lost_total);
                    lost_total = total;
                }
                for (name, _) in guard.program_ids() {
                    if let Ok((_, runs)) = guard.program_stats(&name) {
                        metrics.program_runs(&name, runs);
                    }
                }
            }
            Some(path) = exe_rx.recv() => {
                if let Err(e) = reresolve(&mut current, &path) {
                    eprintln!("metaguard: {e:#}");
                }
                guard.update_exes(&current)?;
                renderer.set_policy(&current);
            }
            _ = sighup.recv() => {
                match policy::load(&opts.policy) {
                    Ok(p) => {
                        guard.apply(&p)?;
                        renderer.set_policy(&p);
                        watcher = policy::ExeWatcher::new(exe_paths(&p), exe_tx.clone()).ok();
                        current = p;
                        metrics.reload(true);
                        eprintln!("metaguard: reloaded {}", opts.policy.display());
                    }
                    Err(e) => {
                        metrics.reload(false);
                        eprintln!("metaguard: reload rejected, the running policy stays in force:\n{e}");
                    }
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    drop(watcher);
    drop(events);
    drop(guard); // detaches every program
    eprintln!("metaguard: detached from {}", dir.display());
    let _ = out.lock().flush();
    Ok(())
}

/// Renders every event waiting in the ring buffer.
fn drain(
    rb: &mut RingBuf<MapData>,
    renderer: &mut Renderer,
    repeats: &mut Repeats,
    metrics: &Metrics,
    format: Format,
) -> String {
    let mut lines = String::new();
    while let Some(item) = rb.next() {
        if let Some(ev) = parse_event(&item) {
            let d = renderer.render(&ev);
            lines.push_str(&d.line(format));
            repeats.note(&ev, &d);
            metrics.decision(&d);
            lines.push('\n');
        }
    }
    lines
}

fn write_out(out: &std::io::Stdout, lines: &str) {
    if !lines.is_empty() {
        let mut o = out.lock();
        let _ = o.write_all(lines.as_bytes());
        let _ = o.flush();
    }
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
