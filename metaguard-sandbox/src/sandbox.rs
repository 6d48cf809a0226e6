//! `Sandbox`: a child cgroup, a client netns and a metadata netns joined by a veth
//! pair, and the fake metadata service bound inside the metadata netns.
use crate::addrs::{self, CLIENT_V4, CLIENT_V6, UNPROTECTED_V4, UNPROTECTED_V6};
use crate::client::ClientCommand;
use crate::fake_imds::{FakeImds, RecordedDatagram, RecordedRequest};
use crate::sys;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const CLEANUP_WAIT: Duration = Duration::from_secs(2);
const MAX_IFNAME: usize = 15;

/// A child cgroup directly under the cgroup2 mount; emptied and removed on drop.
struct CgroupGuard {
    dir: PathBuf,
    rel: String,
    id: u64,
}

impl CgroupGuard {
    fn create(name: &str) -> Result<Self> {
        let dir = sys::cgroup2_mount()?.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        match std::fs::metadata(&dir) {
            Ok(m) => Ok(CgroupGuard {
                dir,
                rel: format!("/{name}"),
                id: m.ino(),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(anyhow!("stat {}: {e}", dir.display()))
            }
        }
    }

    fn procs(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// cgroup.kill (5.14+) kills atomically; older kernels get a SIGKILL per listed pid.
    fn kill_all(&self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for pid in self.procs() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + CLEANUP_WAIT;
        self.kill_all();
        while !self.procs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Child cgroups (see `Sandbox::child_cgroup`) go first: a cgroup with
        // children cannot be removed. cgroup.kill above reached their tasks.
        let children: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        for child in children {
            while std::fs::remove_dir(&child).is_err()
                && child.exists()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // rmdir can still see EBUSY briefly while exiting tasks are released.
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow!(
                        "rmdir {}: {e} (pids left: {:?})",
                        self.dir.display(),
                        self.procs()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("metaguard-sandbox: cleanup: {e:#}");
        }
    }
}

/// A named network namespace (`ip netns add`); deleted on drop.
struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    fn add(name: &str) -> Result<Self> {
        sys::run("ip", &["netns", "add", name])?;
        Ok(NetnsGuard {
            name: name.to_string(),
        })
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> <args>`.
    fn ip(&self, args: &[&str]) -> Result<()> {
        let full: Vec<&str> = ["-n", self.name.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        sys::run("ip", &full)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = sys::run("ip", &["netns", "del", &self.name]) {
            eprintln!("metaguard-sandbox: cleanup: {e:#}");
        }
    }
}

/// Everything one test (or demo, or benchmark) needs; see the crate docs.
pub struct Sandbox {
    // Fields drop in declaration order: close our fds into the namespaces and cgroup,
    // kill the clients, stop the service (its sockets pin the metadata netns), and only
    // then delete the namespaces, which takes the veth pair with them.
    cgroup_procs: Arc<OwnedFd>,
    client_ns_fd: Arc<OwnedFd>,
    cgroup: CgroupGuard,
    service: FakeImds,
    metadata: NetnsGuard,
    client: NetnsGuard,
    veth: (String, String),
    tag: String,
}

impl Sandbox {
    /// Requires root. `tag` only labels diagnostics.
    pub fn create(tag: &str) -> Result<Sandbox> {
        if !sys::is_root() {
            bail!("metaguard-sandbox `{tag}`: creating a sandbox needs root");
        }
        let (pid, n) = (std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let veth = (format!("mg{pid:x}v{n:x}c"), format!("mg{pid:x}v{n:x}m"));
        if veth.0.len() > MAX_IFNAME {
            bail!("veth name {} longer than {MAX_IFNAME} characters", veth.0);
        }
        let cgroup = CgroupGuard::create(&format!("metaguard-sbx-{pid}-{n}"))?;
        let client = NetnsGuard::add(&format!("mg{pid}-{n}c"))?;
        let metadata = NetnsGuard::add(&format!("mg{pid}-{n}m"))?;
        wire_up(&client, &metadata, &veth)
            .with_context(|| format!("sandbox `{tag}`: network setup"))?;
        let service = start_service(metadata.path())
            .with_context(|| format!("sandbox `{tag}`: fake service"))?;
        Ok(Sandbox {
            cgroup_procs: Arc::new(sys::open_cloexec(&cgroup.dir.join("cgroup.procs"), true)?),
            client_ns_fd: Arc::new(sys::open_cloexec(&client.path(), false)?),
            cgroup,
            service,
            metadata,
            client,
            veth,
            tag: tag.to_string(),
        })
    }

    /// Absolute path of the child cgroup.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup.dir
    }

    /// Path relative to the cgroup2 mount, starting with '/' (as in /proc/<pid>/cgroup).
    pub fn cgroup_rel(&self) -> String {
        self.cgroup.rel.clone()
    }

    /// Inode number of the cgroup directory, which is the kernel's cgroup id.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup.id
    }

    /// Name under /run/netns.
    pub fn client_netns(&self) -> &str {
        &self.client.name
    }

    pub fn metadata_netns(&self) -> &str {
        &self.metadata.name
    }

    /// Veth interface names: (client side, metadata side).
    pub fn veth_names(&self) -> (&str, &str) {
        (&self.veth.0, &self.veth.1)
    }

    /// The label given to `create`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A command that runs in the client netns and (by default) the sandbox cgroup.
    /// It holds the netns open: drop it with the sandbox so the namespace really goes.
    pub fn client<S: AsRef<OsStr>>(&self, program: S) -> ClientCommand {
        ClientCommand::new(
            program.as_ref(),
            Arc::clone(&self.cgroup_procs),
            Arc::clone(&self.client_ns_fd),
        )
    }

    /// Creates the cgroup `name` below the sandbox's (removed with the
    /// sandbox) and returns its path: a benchmark can attach to it and run
    /// clients there and in the sandbox cgroup side by side, one guarded and
    /// one plain, without reloading anything between them.
    pub fn child_cgroup(&self, name: &str) -> Result<PathBuf> {
        let dir = self.cgroup.dir.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        Ok(dir)
    }

    /// Like [`Sandbox::client`], but the child joins `cgroup_dir` (one of
    /// this sandbox's [`child_cgroup`](Sandbox::child_cgroup)s).
    pub fn client_in<S: AsRef<OsStr>>(
        &self,
        program: S,
        cgroup_dir: &Path,
    ) -> Result<ClientCommand> {
        if !cgroup_dir.starts_with(&self.cgroup.dir) {
            bail!("{} is not a cgroup of this sandbox", cgroup_dir.display());
        }
        let procs = sys::open_cloexec(&cgroup_dir.join("cgroup.procs"), true)?;
        Ok(ClientCommand::new(
            program.as_ref(),
            Arc::new(procs),
            Arc::clone(&self.client_ns_fd),
        ))
    }

    /// Runs `args[0] args[1..]` in the client netns (not in the cgroup); fails on a
    /// non-zero exit with the command's stderr in the error.
    pub fn in_client_ns(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = args.split_first().context("in_client_ns: empty command")?;
        let out = self.client(program).args(rest).in_cgroup(false).output();
        let out = out.with_context(|| format!("running {program} in {}", self.client.name))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!(
                "`{}` in {} failed ({}): {}",
                args.join(" "),
                self.client.name,
                out.status,
                err.trim()
            );
        }
        Ok(out)
    }

    /// Every HTTP request the fake service received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.service.requests()
    }

    /// Every UDP datagram the fake service received, in order.
    pub fn datagrams(&self) -> Vec<RecordedDatagram> {
        self.service.datagrams()
    }

    /// TCP connections accepted since creation (or the last `clear_log`).
    pub fn connections(&self) -> usize {
        self.service.connections()
    }

    /// Forgets requests, datagrams and the connection count.
    pub fn clear_log(&self) {
        self.service.clear_log()
    }
}

/// Veth pair created directly inside the two namespaces, so the host never has it.
fn wire_up(client: &NetnsGuard, metadata: &NetnsGuard, veth: &(String, String)) -> Result<()> {
    let (vc, vm) = (veth.0.as_str(), veth.1.as_str());
    client.ip(&[
        "link",
        "add",
        vc,
        "type",
        "veth",
        "peer",
        "name",
        vm,
        "netns",
        &metadata.name,
    ])?;
    for (ns, dev) in [(metadata, vm), (client, vc)] {
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    add_addr(metadata, vm, UNPROTECTED_V4.into(), 24)?;
    add_addr(metadata, vm, UNPROTECTED_V6.into(), 64)?;
    for a in addrs::SERVED_V4
        .into_iter()
        .filter(|a| *a != UNPROTECTED_V4)
    {
        add_addr(metadata, "lo", a.into(), 32)?;
    }
    for a in addrs::SERVED_V6
        .into_iter()
        .filter(|a| *a != UNPROTECTED_V6)
    {
        add_addr(metadata, "lo", a.into(), 128)?;
    }
    add_addr(client, vc, CLIENT_V4.into(), 24)?;
    add_addr(client, vc, CLIENT_V6.into(), 64)?;
    client.ip(&[
        "-4",
        "route",
        "add",
        "default",
        "via",
        &UNPROTECTED_V4.to_string(),
    ])?;
    client.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &UNPROTECTED_V6.to_string(),
    ])
}

/// IPv6 addresses skip DAD so they are usable at once.
fn add_addr(ns: &NetnsGuard, dev: &str, ip: IpAddr, prefix: u8) -> Result<()> {
    let cidr = format!("{ip}/{prefix}");
    match ip {
        IpAddr::V4(_) => ns.ip(&["addr", "add", &cidr, "dev", dev]),
        IpAddr::V6(_) => ns.ip(&["addr", "add", &cidr, "dev", dev, "nodad"]),
    }
}

/// Binds in a short-lived thread that entered the metadata netns; the sockets
/// stay in that netns after the thread is gone.
fn start_service(netns: PathBuf) -> Result<FakeImds> {
    let bound = std::thread::spawn(move || -> Result<_> {
        sys::setns_thread(&netns).with_context(|| format!("setns into {}", netns.display()))?;
        bind_service_sockets()
    })
    .join()
    .map_err(|_| anyhow!("socket binding thread panicked"))??;
    Ok(FakeImds::start(bound.0, bound.1)?)
}

/// TCP on the wildcard addresses; UDP per served address, so the recorded
/// `local` is the destination and the "ack" leaves from the address it was sent to.
fn bind_service_sockets() -> Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for port in addrs::PORTS {
        let v4 = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).context("bind TCP v4")?;
        sys::deep_backlog(&v4).context("listen TCP v4")?;
        tcp.push(v4);
        tcp.push(
            sys::tcp_listen_v6only(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0))
                .context("bind TCP v6")?,
        );
        let v4 = addrs::SERVED_V4.into_iter().map(IpAddr::from);
        for ip in v4.chain(addrs::SERVED_V6.into_iter().map(IpAddr::from)) {
            udp.push(
                UdpSocket::bind((ip, port))
                    .with_context(|| format!("bind UDP {ip} port {port}"))?,
            );
        }
    }
    Ok((tcp, udp))
}
