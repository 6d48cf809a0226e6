//! Who is calling, read from the kernel at decision time: the running image's
//! inode (through `current->mm->exe_file`, with offsets from BTF), uid/gid, and
//! the named cgroups among the caller's ancestors.
use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel_str, bpf_skb_ancestor_cgroup_id,
};
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use metaguard_common::{
    event::EXE_NAME_LEN,
    maps::{Config, ExeKey, MAX_CGROUP_LEVEL},
    ruleset::RuleSet,
};

use crate::maps::{offsets, CGROUPS};

/// The running executable as the kernel identifies it.
pub struct Exe {
    pub key: ExeKey,
    pub generation: u32,
}

#[inline(always)]
unsafe fn read_ptr(base: u64, off: u32) -> Option<u64> {
    if base == 0 {
        return None;
    }
    match unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) } {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    }
}

/// Reads the current task's executable; `None` for kernel threads (no mm) or
/// when the daemon could not provide the offsets. Also copies the file's
/// name into `name` for events.
#[inline(always)]
pub fn current_exe(name: &mut [u8; EXE_NAME_LEN]) -> Option<Exe> {
    let o = offsets();
    if o.valid == 0 {
        return None;
    }
    unsafe {
        let task = bpf_get_current_task();
        let mm = read_ptr(task, o.task_mm)?;
        let file = read_ptr(mm, o.mm_exe_file)?;
        let inode = read_ptr(file, o.file_inode)?;
        let ino = bpf_probe_read_kernel((inode + o.inode_ino as u64) as *const u64).ok()?;
        let sb = read_ptr(inode, o.inode_sb)?;
        let dev = bpf_probe_read_kernel((sb + o.sb_dev as u64) as *const u32).ok()?;
        let generation =
            bpf_probe_read_kernel((inode + o.inode_generation as u64) as *const u32).unwrap_or(0);
        if let Some(dentry) = read_ptr(file, o.file_dentry) {
            if let Some(s) = read_ptr(dentry, o.dentry_name) {
                bpf_probe_read_kernel_str(
                    name.as_mut_ptr().cast(),
                    EXE_NAME_LEN as u32,
                    s as *const _,
                );
            }
        }
        Some(Exe {
            key: ExeKey { ino, dev, _pad: 0 },
            generation,
        })
    }
}

/// What the named cgroups say about a caller: whether one of them is a
/// `[guard]` cgroup, and the rules naming one of them.
pub struct CgroupMatch {
    pub guard: bool,
    pub rules: RuleSet,
}

/// Walks only the levels the policy names (bitmask in `cfg.cgroup_levels`):
/// "descendant of X" is "the ancestor at X's level is X".
#[inline(always)]
pub fn cgroup_match(cfg: &Config, skb: Option<*mut __sk_buff>) -> CgroupMatch {
    let mut m = CgroupMatch {
        guard: false,
        rules: RuleSet::EMPTY,
    };
    let levels = cfg.cgroup_levels;
    let mut level = 0u32;
    while level <= MAX_CGROUP_LEVEL {
        if levels >> level == 0 {
            break;
        }
        if levels & (1 << level) != 0 {
            let id = unsafe {
                match skb {
                    Some(skb) => bpf_skb_ancestor_cgroup_id(skb, level as i32),
                    None => bpf_get_current_ancestor_cgroup_id(level as i32),
                }
            };
            if id == 0 {
                break;
            }
            if let Some(e) = unsafe { CGROUPS.get(&id) } {
                m.guard |= e.guard != 0;
                m.rules = m.rules.or(&e.rules);
            }
        }
        level += 1;
    }
    m
}
