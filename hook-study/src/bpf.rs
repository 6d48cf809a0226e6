//! The comparison programs (hook-study-ebpf), loaded and attached to the
//! sandbox's interfaces, cgroup or one client process. Every hook owns its
//! own `Ebpf`: dropping it closes the links and detaches the program.
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::PerCpuArray,
    programs::{
        uprobe::UProbeScope, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        SchedClassifier, SockOps, SocketFilter, TcAttachType, UProbe, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hook-study-bpf"));

// STATS indices, as in hook-study-ebpf/src/main.rs.
pub const TC_DROPPED: usize = 1;
pub const SKB_DROPPED: usize = 3;
pub const RAW_PROTECTED: usize = 4;
pub const RAW_TOTAL: usize = 5;
pub const XDP_TO_PROTECTED: usize = 6;
pub const XDP_FROM_PROTECTED: usize = 7;
pub const XDP_TOTAL: usize = 8;
pub const SSL_GET: usize = 9;
pub const SSL_TOTAL: usize = 10;
pub const SSL_UID_ALLOWED: usize = 11;
pub const XDP_NEW_TO_PROTECTED: usize = 12;

/// One loaded copy of the object, with the policy in its globals.
pub struct Study {
    ebpf: Ebpf,
    /// The program this copy attached (for run-time statistics).
    prog: &'static str,
    /// For the raw-socket filter: the observing socket.
    _sock: Option<OwnedFd>,
}

fn load(addr: Ipv4Addr, port: u16, uid: u32) -> Result<Ebpf> {
    if OBJECT.is_empty() {
        bail!("hook-study was built with AYA_BUILD_SKIP: no kernel programs");
    }
    let a = addr.octets();
    EbpfLoader::new()
        .override_global("PROT_ADDR", &a, true)
        .override_global("PROT_PORT", &port, true)
        .override_global("ALLOWED_UID", &uid, true)
        .load(OBJECT)
        .map_err(|e| anyhow!("loading the hook-study object: {e}"))
}

/// Runs `f` on a thread that entered the network namespace at `netns`
/// (interface names and new sockets resolve there).
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
            // SAFETY: setns on this (scoped, short-lived) thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            f()
        })
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
    })
}

impl Study {
    /// TC (tcx) egress on `iface` in `netns`.
    pub fn tc(netns: &Path, iface: &str, addr: Ipv4Addr, port: u16, uid: u32) -> Result<Study> {
        let mut ebpf = load(addr, port, uid)?;
        let p: &mut SchedClassifier = ebpf
            .program_mut("tc_egress")
            .context("tc_egress")?
            .try_into()?;
        p.load()?;
        in_netns(netns, || {
            p.attach(iface, TcAttachType::Egress)
                .map(|_| ())
                .map_err(|e| anyhow!("attach tc egress on {iface}: {e}"))
        })?;
        Ok(Study {
            ebpf,
            prog: "tc_egress",
            _sock: None,
        })
    }

    /// cgroup_skb egress on the cgroup at `dir`.
    pub fn cgroup_skb(dir: &Path, addr: Ipv4Addr, port: u16, uid: u32) -> Result<Study> {
        let mut ebpf = load(addr, port, uid)?;
        let p: &mut CgroupSkb = ebpf
            .program_mut("skb_egress")
            .context("skb_egress")?
            .try_into()?;
        p.load()?;
        let cg = File::open(dir)?;
        p.attach(cg, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(|e| anyhow!("attach cgroup_skb egress: {e}"))?;
        Ok(Study {
            ebpf,
            prog: "skb_egress",
            _sock: None,
        })
    }

    /// Programs that return "proceed" at once, attached to the cgroup at
    /// `dir` at metaguard's busiest hooks: connect4, cgroup_skb egress and
    /// sock_ops. Run-time statistics are the egress program's.
    pub fn empty_hooks(dir: &Path) -> Result<Study> {
        let mut ebpf = load(Ipv4Addr::UNSPECIFIED, 0, 0)?;
        let cg = File::open(dir)?;
        let p: &mut CgroupSockAddr = ebpf
            .program_mut("empty_connect4")
            .context("empty_connect4")?
            .try_into()?;
        p.load()?;
        p.attach(&cg, CgroupAttachMode::Single)
            .map_err(|e| anyhow!("attach empty connect4: {e}"))?;
        let p: &mut CgroupSkb = ebpf
            .program_mut("empty_egress")
            .context("empty_egress")?
            .try_into()?;
        p.load()?;
        p.attach(&cg, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(|e| anyhow!("attach empty egress: {e}"))?;
        let p: &mut SockOps = ebpf
            .program_mut("empty_sock_ops")
            .context("empty_sock_ops")?
            .try_into()?;
        p.load()?;
        p.attach(&cg, CgroupAttachMode::Single)
            .map_err(|e| anyhow!("attach empty sock_ops: {e}"))?;
        Ok(Study {
            ebpf,
            prog: "empty_egress",
            _sock: None,
        })
    }

    /// A socket filter on an AF_PACKET socket bound to `iface` in `netns`:
    /// sees every frame in both directions, can only observe.
    pub fn raw_socket(netns: &Path, iface: &str, addr: Ipv4Addr, port: u16) -> Result<Study> {
        let mut ebpf = load(addr, port, 0)?;
        let p: &mut SocketFilter = ebpf
            .program_mut("raw_count")
            .context("raw_count")?
            .try_into()?;
        p.load()?;
        let sock = in_netns(netns, || {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket call; the fd is owned below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    proto as i32,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
            }
            // SAFETY: fd is new and ours.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            // Filter first, then bind: nothing unfiltered is ever queued.
            p.attach(sock.as_fd())
                .map_err(|e| anyhow!("attach socket filter: {e}"))?;
            let name = std::ffi::CString::new(iface)?;
            // SAFETY: valid C string; sockaddr_ll zeroed then filled.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {iface}");
            }
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).context("bind AF_PACKET");
            }
            Ok(sock)
        })?;
        Ok(Study {
            ebpf,
            prog: "raw_count",
            _sock: Some(sock),
        })
    }

    /// XDP on `iface` in `netns` (ingress only: it never sees what this
    /// host sends).
    pub fn xdp(netns: &Path, iface: &str, addr: Ipv4Addr) -> Result<(Study, &'static str)> {
        let mut ebpf = load(addr, 0, 0)?;
        let p: &mut Xdp = ebpf
            .program_mut("xdp_count")
            .context("xdp_count")?
            .try_into()?;
        p.load()?;
        let mode = in_netns(netns, || match p.attach(iface, XdpMode::Driver) {
            Ok(_) => Ok("native (veth driver)"),
            Err(_) => p
                .attach(iface, XdpMode::Skb)
                .map(|_| "generic (skb)")
                .map_err(|e| anyhow!("attach xdp on {iface}: {e}")),
        })?;
        Ok((
            Study {
                ebpf,
                prog: "xdp_count",
                _sock: None,
            },
            mode,
        ))
    }

    /// A uprobe on `SSL_write` in `lib`, for process `pid` only.
    pub fn ssl_write(lib: &str, pid: u32, uid: u32) -> Result<Study> {
        let mut ebpf = load(Ipv4Addr::UNSPECIFIED, 0, uid)?;
        let p: &mut UProbe = ebpf
            .program_mut("ssl_write")
            .context("ssl_write")?
            .try_into()?;
        p.load()?;
        let pid = std::num::NonZeroU32::new(pid).context("pid 0")?;
        p.attach("SSL_write", lib, UProbeScope::OneProcess(pid))
            .map_err(|e| anyhow!("attach uprobe SSL_write in {lib}: {e}"))?;
        Ok(Study {
            ebpf,
            prog: "ssl_write",
            _sock: None,
        })
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<[u64; 16]> {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("STATS").context("STATS map")?)?;
        let mut out = [0u64; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = m.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// (run_time_ns, run_count) of the attached program (bpf_stats).
    pub fn run_stats(&self) -> (u64, u64) {
        self.ebpf
            .program(self.prog)
            .and_then(|p| p.info().ok())
            .map_or((0, 0), |i| (i.run_time().as_nanos() as u64, i.run_count()))
    }
}
