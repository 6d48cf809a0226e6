//! The record each decision sends through the ring buffer. Fixed layout; the
//! daemon turns it into a JSON line with paths and names resolved.

/// Which program decided.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Connect4 = 1,
    Connect6 = 2,
    Sendmsg4 = 3,
    Sendmsg6 = 4,
    Egress = 5,
}

impl Hook {
    pub fn from_u8(v: u8) -> Option<Hook> {
        Some(match v {
            1 => Hook::Connect4,
            2 => Hook::Connect6,
            3 => Hook::Sendmsg4,
            4 => Hook::Sendmsg6,
            5 => Hook::Egress,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect4 => "connect4",
            Hook::Connect6 => "connect6",
            Hook::Sendmsg4 => "sendmsg4",
            Hook::Sendmsg6 => "sendmsg6",
            Hook::Egress => "egress",
        }
    }
}

/// `Event::rule` / `Event::endpoint` when there is none.
pub const NONE_U16: u16 = u16::MAX;
/// `Event::flags`: the running executable could not be read (kernel thread,
/// missing offsets, or the egress hook, which runs outside the process).
pub const EVENT_NO_EXE: u8 = 1;
/// `Event::flags`: the destination port could not be read from the packet.
pub const EVENT_NO_PORT: u8 = 2;
/// `Event::flags`: pid/tid/comm do not belong to the sender (egress hook).
pub const EVENT_NO_TASK: u8 = 4;

pub const COMM_LEN: usize = 16;
pub const EXE_NAME_LEN: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// CLOCK_BOOTTIME nanoseconds.
    pub time_ns: u64,
    pub cgroup_id: u64,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub exe_generation: u32,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub rule: u16,
    pub endpoint: u16,
    pub dport: u16,
    /// IP protocol number (6 TCP, 17 UDP, 262 MPTCP, 255 raw, ...).
    pub protocol: u16,
    /// `decide::Action` as u8.
    pub action: u8,
    /// `decide::Reason` as u8.
    pub reason: u8,
    /// `Hook` as u8.
    pub hook: u8,
    pub flags: u8,
    pub policy_generation: u32,
    /// Destination, 16-byte key (IPv4 mapped).
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
    /// Final path component of the running executable, as the kernel names it.
    pub exe_name: [u8; EXE_NAME_LEN],
}
