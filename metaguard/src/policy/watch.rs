//! Watches the executables rules name, so that the daemon can take a file's
//! new identity (`sys::exe::identify`) when it is replaced on disk.
//!
//! The parent directories are watched (inotify), not the files: a package
//! upgrade renames a new file over the old one, which a watch on the old
//! inode would never report. A path that is a symlink is also followed to its
//! target, whose directory is watched too (the kernel matches the target).
use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use notify::{
    event::AccessKind, event::AccessMode, Event, EventKind, RecommendedWatcher, RecursiveMode,
    Watcher as _,
};
use tokio::sync::mpsc::UnboundedSender;

/// Changes are coalesced for this long: one copy or upgrade makes many events.
const SETTLE: Duration = Duration::from_millis(100);
/// ... but a continuous stream of changes is reported at least this often.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Sends a rule executable's path (as the policy wrote it) when the file is
/// created, replaced (renamed over), modified or removed. Dropping it stops
/// watching.
pub struct ExeWatcher {
    _watcher: RecommendedWatcher,
    dirs: Vec<PathBuf>,
}

impl ExeWatcher {
    pub fn new<I, P>(paths: I, tx: UnboundedSender<PathBuf>) -> notify::Result<ExeWatcher>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        // File path as events will name it -> the policy paths it stands for.
        // Directories are watched by their canonical path: two spellings of
        // one directory (/bin and /usr/bin on merged-/usr systems) share one
        // inotify watch, which reports under a single name.
        let mut targets: HashMap<PathBuf, BTreeSet<PathBuf>> = HashMap::new();
        for p in paths {
            let p = p.as_ref().to_path_buf();
            targets
                .entry(canonical_parent(&p))
                .or_default()
                .insert(p.clone());
            if let Ok(real) = std::fs::canonicalize(&p) {
                targets.entry(real).or_default().insert(p.clone());
            }
        }
        let dirs: BTreeSet<PathBuf> = targets
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();

        let (raw_tx, raw_rx) = std_mpsc::channel::<PathBuf>();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
            if let Ok(ev) = res {
                if relevant(&ev.kind) {
                    for p in ev.paths {
                        let _ = raw_tx.send(p);
                    }
                }
            }
        })?;
        let mut watched = Vec::new();
        for d in &dirs {
            watcher.watch(d, RecursiveMode::NonRecursive)?;
            watched.push(d.clone());
        }
        std::thread::Builder::new()
            .name("metaguard-exe-watch".into())
            .spawn(move || forward(raw_rx, targets, tx))
            .map_err(notify::Error::io)?;
        Ok(ExeWatcher {
            _watcher: watcher,
            dirs: watched,
        })
    }

    /// The directories being watched.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

/// `path` with its directory canonicalized (the file itself may be a symlink,
/// or missing).
fn canonical_parent(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Maps raw event paths to policy paths and sends each once per burst. Ends
/// when the watcher is dropped or the receiver is gone.
fn forward(
    rx: std_mpsc::Receiver<PathBuf>,
    targets: HashMap<PathBuf, BTreeSet<PathBuf>>,
    tx: UnboundedSender<PathBuf>,
) {
    while let Ok(first) = rx.recv() {
        let mut burst = BTreeSet::new();
        let mut add = |p: PathBuf| {
            if let Some(ps) = targets.get(&p) {
                burst.extend(ps.iter().cloned());
            }
        };
        add(first);
        let deadline = Instant::now() + MAX_DELAY;
        while Instant::now() < deadline {
            match rx.recv_timeout(SETTLE) {
                Ok(p) => add(p),
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        for p in burst {
            if tx.send(p).is_err() {
                return;
            }
        }
    }
}
