//! Byte offsets of the kernel struct fields the programs read to identify the
//! running executable. Rust eBPF code gets no CO-RE relocations, so the daemon
//! reads these from the kernel's BTF at load time and sets them as a global.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.f_path.dentry`
    pub file_dentry: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `inode.i_generation`
    pub inode_generation: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `dentry.d_name.name`
    pub dentry_name: u32,
    /// `task_struct.cred`
    pub task_cred: u32,
    /// `cred.group_info`
    pub cred_group_info: u32,
    /// `group_info.ngroups`
    pub group_info_ngroups: u32,
    /// `group_info.gid` (the array of supplementary group ids)
    pub group_info_gid: u32,
    /// `task_struct.start_boottime` (ns since boot: a process's start time,
    /// which tells it from a later one with the same pid)
    pub task_start_boottime: u32,
    /// `tcp_sock.fastopen_req` (set while a Fast Open send connects)
    pub tcp_fastopen_req: u32,
    /// `sock_common.skc_cookie` seen from a `tcp_sock` (the socket cookie,
    /// which sk_msg programs cannot ask for with the helper)
    pub tcp_sock_cookie: u32,
    /// Non-zero once filled in by the daemon; programs refuse to guess.
    pub valid: u32,
}
