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
    /// sk_msg: a send on a TCP socket connected to a protected destination,
    /// decided again for the sending process.
    SendmsgTcp = 6,
    /// sk_skb: a response on a connection under a `redact` rule.
    Response = 7,
}

impl Hook {
    pub fn from_u8(v: u8) -> Option<Hook> {
        Some(match v {
            1 => Hook::Connect4,
            2 => Hook::Connect6,
            3 => Hook::Sendmsg4,
            4 => Hook::Sendmsg6,
            5 => Hook::Egress,
            6 => Hook::SendmsgTcp,
            7 => Hook::Response,
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
            Hook::SendmsgTcp => "sendmsg-tcp",
            Hook::Response => "response",
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
    /// Request events (`EVENT_REQUEST`): the connection's socket cookie.
    pub cookie: u64,
    /// Request events: the method as sent, NUL-padded.
    pub method: [u8; 16],
    /// Request events: the canonical target, truncated to `EVENT_PATH_LEN`.
    pub path: [u8; EVENT_PATH_LEN],
    /// Request events: the `http::Reject` number of a refused request.
    pub http_check: u8,
    /// Request events: `IMDS_V1` / `IMDS_V2` (the session token header
    /// absent / present) for requests to endpoints that classify them.
    pub imds: u8,
    pub method_len: u8,
    pub _pad2: u8,
    /// Request events: the canonical target's full length.
    pub path_len: u16,
    /// Redaction events (`EVENT_REDACT`): the `redact::SHAPE_*` bits masked.
    pub redacted: u16,
}

/// `Event::flags`: a per-request decision (HTTP), not a connect-level one.
pub const EVENT_REQUEST: u8 = 8;
/// `Event::flags`: secrets were masked in responses (`Event::redacted`).
pub const EVENT_REDACT: u8 = 16;
pub const EVENT_PATH_LEN: usize = crate::http::EVENT_TARGET;
pub const IMDS_V1: u8 = 1;
pub const IMDS_V2: u8 = 2;

/// What makes two decisions "the same": the caller (process, executable,
/// user, group, cgroup), the destination, the hook and the policy generation.
/// The decision for such a key cannot change within a policy generation
/// (supplementary groups aside, which the programs then recheck), so the
/// kernel decides a key once per aggregation window: repeats reuse the
/// verdict and are counted in the `AGGREGATES` map instead of sent, and the
/// daemon reports the counts. Every field is also in [`Event`], so the daemon
/// rebuilds the key from an event ([`AggKey::of`]) and the kernel fills an
/// event from the key ([`Event::set_key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub cgroup_id: u64,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub exe_generation: u32,
    /// Thread group id (the process).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub policy_generation: u32,
    pub daddr: [u8; 16],
    pub dport: u16,
    pub protocol: u16,
    pub hook: u8,
    pub flags: u8,
    /// Redaction reports: the shapes masked (one window per set of shapes);
    /// 0 for decisions.
    pub redacted: u16,
}

/// Value of `AGGREGATES` (per CPU): the verdict of the current window and
/// the repeats counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggCount {
    /// When the decision was last made and sent as an event (coarse
    /// monotonic ns).
    pub window_start: u64,
    /// When this CPU's count started: a recreated entry restarts `repeats`.
    pub created: u64,
    /// Decisions counted instead of sent, since `created`. Only grows.
    pub repeats: u64,
    pub rule: u16,
    pub endpoint: u16,
    pub action: u8,
    pub reason: u8,
    pub _pad: [u8; 2],
}

impl AggKey {
    pub fn of(ev: &Event) -> AggKey {
        AggKey {
            cgroup_id: ev.cgroup_id,
            exe_ino: ev.exe_ino,
            exe_dev: ev.exe_dev,
            exe_generation: ev.exe_generation,
            pid: ev.pid,
            uid: ev.uid,
            gid: ev.gid,
            policy_generation: ev.policy_generation,
            daddr: ev.daddr,
            dport: ev.dport,
            protocol: ev.protocol,
            hook: ev.hook,
            flags: ev.flags,
            redacted: ev.redacted,
        }
    }
}

impl Event {
    /// Copies the key's fields into the event.
    #[inline(always)]
    pub fn set_key(&mut self, k: &AggKey) {
        self.cgroup_id = k.cgroup_id;
        self.exe_ino = k.exe_ino;
        self.exe_dev = k.exe_dev;
        self.exe_generation = k.exe_generation;
        self.pid = k.pid;
        self.uid = k.uid;
        self.gid = k.gid;
        self.policy_generation = k.policy_generation;
        self.daddr = k.daddr;
        self.dport = k.dport;
        self.protocol = k.protocol;
        self.hook = k.hook;
        self.flags = k.flags;
        self.redacted = k.redacted;
    }

    /// Copies a verdict into the event.
    #[inline(always)]
    pub fn set_verdict(&mut self, c: &AggCount) {
        self.rule = c.rule;
        self.endpoint = c.endpoint;
        self.action = c.action;
        self.reason = c.reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_an_event() {
        let k = AggKey {
            cgroup_id: 7,
            exe_ino: 9,
            exe_dev: 3 << 20 | 1,
            exe_generation: 5,
            pid: 42,
            uid: 1000,
            gid: 1000,
            policy_generation: 2,
            daddr: [1; 16],
            dport: 80,
            protocol: 6,
            hook: 1,
            flags: EVENT_REDACT,
            redacted: 5,
        };
        let mut ev: Event = unsafe { core::mem::zeroed() };
        ev.set_key(&k);
        assert_eq!(AggKey::of(&ev), k);
    }
}
