//! Who is calling, read from the kernel at decision time: the running image's
//! inode (through `current->mm->exe_file`, with offsets from BTF), uid/gid, and
//! the named cgroups among the caller's ancestors.
use aya_ebpf::bindings::__sk_buff;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str, bpf_skb_ancestor_cgroup_id,
};
use metaguard_common::{
    event::EXE_NAME_LEN,
    maps::{
        CgroupKey, Config, ExeKey, IdKey, CONFIG_GROUPS, MAX_CGROUP_LEVEL, MAX_SUPPLEMENTARY_GROUPS,
    },
    ruleset::RuleSet,
};

use crate::maps::{offsets, CGROUPS, GIDS};

/// The running executable as the kernel identifies it.
pub struct Exe {
    pub key: ExeKey,
    pub generation: u32,
    /// The `struct file` of the image, for its name in events.
    file: u64,
}

/// Loads a field `off` bytes into the kernel object at `base`. `base` comes
/// from `bpf_get_current_task_btf` (a BTF-typed pointer), so the verifier
/// checks each load against the kernel's BTF and turns it into a
/// fault-tolerant direct load: no probe-read helper calls on the decision
/// path. The offsets are load-time constants (a frozen read-only global).
#[inline(always)]
unsafe fn field<T: Copy>(base: u64, off: u32) -> T {
    unsafe { core::ptr::read_volatile((base + off as u64) as *const T) }
}

/// Reads the current task's executable; `None` for kernel threads (no mm) or
/// when the daemon could not provide the offsets.
#[inline(always)]
pub fn current_exe() -> Option<Exe> {
    let o = offsets();
    if o.valid == 0 {
        return None;
    }
    unsafe {
        let task = bpf_get_current_task_btf() as u64;
        let mm: u64 = field(task, o.task_mm);
        if mm == 0 {
            return None;
        }
        let file: u64 = field(mm, o.mm_exe_file);
        if file == 0 {
            return None;
        }
        let inode: u64 = field(file, o.file_inode);
        if inode == 0 {
            return None;
        }
        let ino: u64 = field(inode, o.inode_ino);
        let sb: u64 = field(inode, o.inode_sb);
        if sb == 0 {
            return None;
        }
        let dev: u32 = field(sb, o.sb_dev);
        let generation: u32 = field(inode, o.inode_generation);
        Some(Exe {
            key: ExeKey { ino, dev, slot: 0 },
            generation,
            file,
        })
    }
}

/// The image's `struct file`, kept to name it in events later (0: none).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExeFile(u64);

impl ExeFile {
    #[inline(always)]
    pub fn of(exe: Option<&Exe>) -> ExeFile {
        ExeFile(exe.map_or(0, |e| e.file))
    }

    /// Kept in a map, the pointer is a plain number to the verifier: read
    /// through it with probe reads.
    #[inline(always)]
    pub fn name_into(&self, name: &mut [u8; EXE_NAME_LEN]) {
        if self.0 == 0 {
            return;
        }
        let o = offsets();
        unsafe {
            let mut dentry = 0u64;
            let mut s = 0u64;
            if bpf_probe_read_kernel(
                (&mut dentry as *mut u64).cast(),
                8,
                (self.0 + o.file_dentry as u64) as *const _,
            ) != 0
                || dentry == 0
                || bpf_probe_read_kernel(
                    (&mut s as *mut u64).cast(),
                    8,
                    (dentry + o.dentry_name as u64) as *const _,
                ) != 0
            {
                return;
            }
            bpf_probe_read_kernel_str(name.as_mut_ptr().cast(), EXE_NAME_LEN as u32, s as *const _);
        }
    }
}

/// Copies the executable's file name (as the kernel names it) into `name`:
/// only for events, which are rarer than decisions.
#[inline(always)]
pub fn exe_name(exe: &Exe, name: &mut [u8; EXE_NAME_LEN]) {
    file_name(exe.file, name)
}

#[inline(always)]
fn file_name(file: u64, name: &mut [u8; EXE_NAME_LEN]) {
    let o = offsets();
    unsafe {
        let dentry: u64 = field(file, o.file_dentry);
        if dentry != 0 {
            let s: u64 = field(dentry, o.dentry_name);
            bpf_probe_read_kernel_str(name.as_mut_ptr().cast(), EXE_NAME_LEN as u32, s as *const _);
        }
    }
}

/// When the calling process started (ns since boot), for grants.
#[inline(always)]
pub fn start_boottime() -> u64 {
    let o = offsets();
    if o.valid == 0 {
        return 0;
    }
    unsafe {
        let task = bpf_get_current_task_btf() as u64;
        field(task, o.task_start_boottime)
    }
}

/// Rules whose `groups` name one of the caller's supplementary groups (the
/// first `MAX_SUPPLEMENTARY_GROUPS`), from `current->cred->group_info`.
#[inline(always)]
pub fn supplementary_rules(cfg: &Config) -> RuleSet {
    let mut rules = RuleSet::EMPTY;
    let o = offsets();
    if cfg.flags & CONFIG_GROUPS == 0 || o.valid == 0 {
        return rules;
    }
    let mut gids = [0u32; MAX_SUPPLEMENTARY_GROUPS];
    let n = unsafe {
        let task = bpf_get_current_task_btf() as u64;
        let cred: u64 = field(task, o.task_cred);
        if cred == 0 {
            return rules;
        }
        let gi: u64 = field(cred, o.cred_group_info);
        if gi == 0 {
            return rules;
        }
        let n: i32 = field(gi, o.group_info_ngroups);
        let src = (gi + o.group_info_gid as u64) as *const core::ffi::c_void;
        if bpf_probe_read_kernel(
            gids.as_mut_ptr().cast(),
            core::mem::size_of_val(&gids) as u32,
            src,
        ) != 0
        {
            return rules;
        }
        n
    };
    let mut i = 0;
    while i < MAX_SUPPLEMENTARY_GROUPS {
        if i as i32 >= n {
            break;
        }
        let k = IdKey {
            id: gids[i],
            slot: cfg.slot,
        };
        if let Some(e) = unsafe { GIDS.get(&k) } {
            rules = rules.or(&e.rules);
        }
        i += 1;
    }
    rules
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
    let slot = cfg.slot;
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
            let k = CgroupKey { id, slot, _pad: 0 };
            if let Some(e) = unsafe { CGROUPS.get(&k) } {
                m.guard |= e.guard != 0;
                m.rules = m.rules.or(&e.rules);
            }
        }
        level += 1;
    }
    m
}
