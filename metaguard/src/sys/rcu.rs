//! Waiting for an RCU grace period from userspace: after [`GracePeriod::wait`]
//! returns, every BPF program run that was under way when it was called has
//! finished, and every run that starts later sees what was written before.
//!
//! The kernel does this for updates of map-in-map maps: after updating an
//! element of a `BPF_MAP_TYPE_ARRAY_OF_MAPS` from userspace it calls
//! `synchronize_rcu()` before returning ("wait for any running non-sleepable
//! BPF programs to complete so that userspace, when we return to it, knows
//! that all non-sleepable programs that could be running use the new map
//! value", kernel/bpf/syscall.c, `maybe_wait_bpf_programs`). metaguard's
//! programs (cgroup sock_addr, cgroup_skb, sock_ops, sk_msg) are not
//! sleepable and run under `rcu_read_lock`, so one such update is a real
//! grace period for them. The map here exists only to be updated.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel
/// treats the rest as zero.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn create(attr: &mut MapCreate) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A one-slot array of maps and the map it holds.
pub struct GracePeriod {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl GracePeriod {
    pub fn new() -> io::Result<GracePeriod> {
        let inner = create(&mut MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        })?;
        let outer = create(&mut MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: inner.as_raw_fd() as u32,
            ..Default::default()
        })?;
        Ok(GracePeriod { outer, inner })
    }

    /// Returns after a full RCU grace period (the kernel's
    /// `synchronize_rcu()`).
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = MapElem {
            map_fd: self.outer.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_period_can_be_waited_for() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED a_grace_period_can_be_waited_for: needs root to create BPF maps");
            return;
        }
        let g = GracePeriod::new().expect("array of maps");
        let t = std::time::Instant::now();
        for _ in 0..3 {
            g.wait().expect("update");
        }
        eprintln!("3 grace periods: {:?}", t.elapsed());
    }
}
