//! `ClientCommand`: a `std::process::Command` whose child joins the sandbox
//! cgroup and client netns, then drops privileges, before exec.
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

const MAX_GROUPS: usize = 64;
const NONE: i64 = -1;

/// What the child does before exec. Atomics, not a lock: the one pre_exec hook
/// reads it after fork, where taking a lock or allocating is not allowed. Each
/// spawn stores the builder's current settings here first.
struct ChildSetup {
    cgroup_procs: AtomicI32,
    netns: AtomicI32,
    uid: AtomicI64,
    gid: AtomicI64,
    ngroups: AtomicI64,
    groups: [AtomicU32; MAX_GROUPS],
}

/// Builder around `std::process::Command` for processes in the sandbox.
pub struct ClientCommand {
    cmd: Command,
    cgroup_procs: Arc<OwnedFd>,
    netns: Arc<OwnedFd>,
    in_cgroup: bool,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    setup: Option<Arc<ChildSetup>>,
}

impl ClientCommand {
    /// `cgroup_procs` and `netns` are opened before fork; the child only writes/setns them.
    pub(crate) fn new(program: &OsStr, cgroup_procs: Arc<OwnedFd>, netns: Arc<OwnedFd>) -> Self {
        ClientCommand {
            cmd: Command::new(program),
            cgroup_procs,
            netns,
            in_cgroup: true,
            uid: None,
            gid: None,
            groups: None,
            setup: None,
        }
    }

    pub fn arg<S: AsRef<OsStr>>(&mut self, arg: S) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn env<K: AsRef<OsStr>, V: AsRef<OsStr>>(&mut self, key: K, val: V) -> &mut Self {
        self.cmd.env(key, val);
        self
    }

    pub fn stdin<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Self {
        self.cmd.stdin(cfg);
        self
    }

    pub fn stdout<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Self {
        self.cmd.stdout(cfg);
        self
    }

    pub fn stderr<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Self {
        self.cmd.stderr(cfg);
        self
    }

    pub fn uid(&mut self, uid: u32) -> &mut Self {
        self.uid = Some(uid);
        self
    }

    pub fn gid(&mut self, gid: u32) -> &mut Self {
        self.gid = Some(gid);
        self
    }

    /// Supplementary groups (at most 64). Like std, a `uid` without `groups` drops them all.
    pub fn groups(&mut self, groups: &[u32]) -> &mut Self {
        self.groups = Some(groups.to_vec());
        self
    }

    /// Whether the child joins the sandbox cgroup (default true). It always joins the
    /// client netns. Only processes in the cgroup are killed when the sandbox drops.
    pub fn in_cgroup(&mut self, yes: bool) -> &mut Self {
        self.in_cgroup = yes;
        self
    }

    pub fn output(&mut self) -> io::Result<Output> {
        self.prepare()?.output()
    }

    pub fn status(&mut self) -> io::Result<ExitStatus> {
        self.prepare()?.status()
    }

    pub fn spawn(&mut self) -> io::Result<Child> {
        self.prepare()?.spawn()
    }

    /// Escape hatch. Do not call `uid`/`gid` on it: std applies them before our
    /// pre_exec hook, after which joining the cgroup and netns would fail.
    pub fn command_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Stores the current settings and installs the pre_exec hook once.
    fn prepare(&mut self) -> io::Result<&mut Command> {
        if self.groups.as_ref().is_some_and(|g| g.len() > MAX_GROUPS) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more than 64 supplementary groups",
            ));
        }
        let setup = match &self.setup {
            Some(s) => Arc::clone(s),
            None => self.install_hook(),
        };
        let cg = if self.in_cgroup {
            self.cgroup_procs.as_raw_fd()
        } else {
            -1
        };
        setup.cgroup_procs.store(cg, Relaxed);
        setup.netns.store(self.netns.as_raw_fd(), Relaxed);
        setup.uid.store(self.uid.map_or(NONE, i64::from), Relaxed);
        setup.gid.store(self.gid.map_or(NONE, i64::from), Relaxed);
        let ngroups = match (&self.groups, self.uid) {
            (Some(g), _) => g.len() as i64,
            (None, Some(_)) => 0,
            (None, None) => NONE,
        };
        setup.ngroups.store(ngroups, Relaxed);
        for (slot, g) in setup.groups.iter().zip(self.groups.iter().flatten()) {
            slot.store(*g, Relaxed);
        }
        Ok(&mut self.cmd)
    }

    fn install_hook(&mut self) -> Arc<ChildSetup> {
        let setup = Arc::new(ChildSetup {
            cgroup_procs: AtomicI32::new(-1),
            netns: AtomicI32::new(-1),
            uid: AtomicI64::new(NONE),
            gid: AtomicI64::new(NONE),
            ngroups: AtomicI64::new(NONE),
            groups: std::array::from_fn(|_| AtomicU32::new(0)),
        });
        let s = Arc::clone(&setup);
        // The fds must stay open as long as the Command can spawn.
        let fds = (Arc::clone(&self.cgroup_procs), Arc::clone(&self.netns));
        // SAFETY: the hook only makes async-signal-safe libc calls and atomic
        // loads on memory allocated before fork; it allocates nothing.
        unsafe {
            self.cmd.pre_exec(move || {
                let _keep_open = &fds;
                enter(&s)
            });
        }
        self.setup = Some(Arc::clone(&setup));
        setup
    }
}

/// Runs in the forked child: cgroup, then netns, then credentials (order matters:
/// both joins need root, which the credential change gives up).
fn enter(s: &ChildSetup) -> io::Result<()> {
    let cg = s.cgroup_procs.load(Relaxed);
    // SAFETY: cg is open (kept alive by the hook's Arc); "0" means "this process".
    if cg >= 0 && unsafe { libc::write(cg, b"0".as_ptr().cast(), 1) } != 1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the netns fd is open (kept alive by the hook's Arc).
    check(unsafe { libc::setns(s.netns.load(Relaxed), libc::CLONE_NEWNET) })?;
    let n = s.ngroups.load(Relaxed);
    if n >= 0 {
        let mut arr = [0 as libc::gid_t; MAX_GROUPS];
        for (a, g) in arr.iter_mut().zip(&s.groups) {
            *a = g.load(Relaxed);
        }
        // SAFETY: arr holds MAX_GROUPS >= n gids.
        check(unsafe { libc::setgroups(n as usize, arr.as_ptr()) })?;
    }
    let gid = s.gid.load(Relaxed);
    // SAFETY: no preconditions.
    if gid >= 0 {
        check(unsafe { libc::setgid(gid as libc::gid_t) })?;
    }
    let uid = s.uid.load(Relaxed);
    // SAFETY: no preconditions.
    if uid >= 0 {
        check(unsafe { libc::setuid(uid as libc::uid_t) })?;
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
