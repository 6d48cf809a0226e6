//! Layouts of the maps the daemon fills and the kernel programs read.
//!
//! A destination is first checked against `PREFILTER` (one inlined array
//! read, see [`crate::addr::prefilter_index`]): most traffic stops there.
//! Single protected addresses (the usual metadata endpoint) are then found
//! with one hashed lookup in `DESTS`, by address and port (or any port,
//! [`PORT_ANY`]). Wider prefixes take two: `PREFIXES` (LPM trie over the
//! 16-byte key of [`crate::addr`]) gives the *prefix set* an address falls in,
//! then `PORTS` gives what is protected on that set at a port. `DESTS` holds
//! exactly what the LPM path would answer for those addresses, so it is a
//! shortcut, never a second source of truth.
//!
//! Identity lookups (`EXES`, `UIDS`, `GIDS`, `CGROUPS`) each give the
//! [`RuleSet`] of allow rules that identity satisfies.
//!
//! # Policy slots: atomic reloads
//!
//! The maps hold up to two policies, in *slots* 0 and 1: every policy key
//! carries its slot (`PortKey::slot`, `DestKey::slot`, `ExeKey::slot`,
//! [`IdKey`], [`CgroupKey`], the LPM key's first byte
//! ([`slot_prefix_key`]), the high bits of the HTTP key's scope
//! ([`slot_scope`])), `CONFIG` and `HTTP_TABLE` are indexed by slot, and
//! each `PREFILTER` word packs one byte of flags per slot
//! ([`prefilter_flags`]). `ACTIVE` holds the slot in force. A program reads
//! `ACTIVE` once per decision (only past the pre-filter: unprotected traffic
//! costs the one array read it always did) and makes every lookup of that
//! decision in that slot, so a decision sees one policy whole.
//!
//! A reload writes the inactive slot completely, waits for a grace period
//! (every program that might have read the old `PREFILTER` byte of that
//! slot has finished), flips `ACTIVE` with one update, waits again (no
//! program still uses the old slot), then clears the old slot. The waits are
//! RCU grace periods: the programs are not sleepable and run under RCU.
use crate::ruleset::RuleSet;

/// Policies the maps hold at once (the one in force and the one being
/// written); the maps' capacities are this many times the per-policy limits.
pub const SLOTS: u32 = 2;

/// The `PREFILTER` flags of `slot` (0 or 1) in a packed `PREFILTER` word.
#[inline(always)]
pub fn prefilter_flags(packed: u32, slot: u32) -> u32 {
    (packed >> ((slot & 1) * 8)) & 0xff
}

/// `packed` with the flags of `slot` replaced by `flags`; the other slot's
/// byte is left as it is (programs using it never see a change).
#[inline(always)]
pub fn prefilter_with(packed: u32, slot: u32, flags: u32) -> u32 {
    let shift = (slot & 1) * 8;
    (packed & !(0xff << shift)) | ((flags & 0xff) << shift)
}

/// Bits of the slot byte in front of an address in `PREFIXES` keys.
pub const SLOT_PREFIX_BITS: u32 = 8;

/// Bytes of `PREFIXES` key data: the slot byte, the address, and 3 bytes
/// never compared (the values' alignment wants a multiple of 4).
pub const SLOT_PREFIX_KEY_LEN: usize = 20;

/// The `PREFIXES` key data of `addr` in `slot`: the slot byte, then the
/// 16-byte address key. A prefix of `bits` address bits is stored with
/// prefix length `SLOT_PREFIX_BITS + bits`, so lookups only ever match
/// entries of their own slot.
#[inline(always)]
pub fn slot_prefix_key(slot: u32, addr: &[u8; 16]) -> [u8; SLOT_PREFIX_KEY_LEN] {
    let mut k = [0u8; SLOT_PREFIX_KEY_LEN];
    k[0] = slot as u8;
    let mut i = 0;
    while i < 16 {
        k[i + 1] = addr[i];
        i += 1;
    }
    k
}

/// Where the slot goes in `HttpKey::scope` (the low 16 bits are the
/// required-header set).
pub const HTTP_SLOT_SHIFT: u32 = 16;

/// `HttpKey::scope` of header set `scope` in `slot`.
#[inline(always)]
pub fn slot_scope(slot: u32, scope: u32) -> u32 {
    (scope & 0xffff) | (slot << HTTP_SLOT_SHIFT)
}

/// Map names, shared so the daemon finds what the programs declare.
pub mod names {
    pub const PREFILTER: &str = "PREFILTER";
    pub const PREFIXES: &str = "PREFIXES";
    pub const PORTS: &str = "PORTS";
    pub const DESTS: &str = "DESTS";
    pub const EXES: &str = "EXES";
    pub const UIDS: &str = "UIDS";
    pub const GIDS: &str = "GIDS";
    pub const CGROUPS: &str = "CGROUPS";
    pub const CONFIG: &str = "CONFIG";
    pub const ACTIVE: &str = "ACTIVE";
    pub const EVENTS: &str = "EVENTS";
    pub const LOST: &str = "LOST";
    pub const SOCK_TAGS: &str = "SOCK_TAGS";
    pub const AGGREGATES: &str = "AGGREGATES";
    pub const GRANTS: &str = "GRANTS";
    pub const HTTP_RULES: &str = "HTTP_RULES";
    pub const HTTP_CONNS: &str = "HTTP_CONNS";
    pub const OFFSETS: &str = "OFFSETS";
    pub const PROTECTED_SOCKS: &str = "PROTECTED_SOCKS";
    pub const HTTP_TABLE: &str = "HTTP_TABLE";
}

/// Capacities; the daemon checks a policy against them before loading.
pub const MAX_PREFIXES: u32 = 4096;
pub const MAX_PORT_ENTRIES: u32 = 16384;
pub const MAX_DESTS: u32 = 16384;

/// `PREFILTER` values: which lookups a bucket needs (0 = none, unprotected).
pub const PREFILTER_LPM: u32 = 1;
pub const PREFILTER_DESTS: u32 = 2;
pub const MAX_EXES: u32 = 4096;
pub const MAX_SUBJECTS: u32 = 4096;
pub const MAX_SOCK_TAGS: u32 = 65536;
/// Established TCP sockets to protected destinations, checked on every send.
pub const MAX_PROTECTED_SOCKS: u32 = 65536;
/// Temporary grants in force at once.
pub const MAX_GRANTS: u32 = 1024;

/// Value of `GRANTS` (key: the process's tgid): one running process may
/// reach the endpoints in `endpoints` until `expires_ns`, whatever the rules
/// say. It is this process only: its start time and running image must be
/// those seen when the grant was made (pids are reused, images exec'd).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22;
    /// the kernel's `start_boottime` / `GRANT_TICK_NS`).
    pub start_ticks: u64,
    pub exe_ino: u64,
    /// Kernel encoding, `MAJOR << 20 | MINOR`.
    pub exe_dev: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC ns.
    pub expires_ns: u64,
    /// Bit `n`: endpoint index `n` (endpoints past 63 need `u64::MAX`).
    pub endpoints: u64,
}

/// Nanoseconds per clock tick of `/proc/PID/stat` (USER_HZ = 100).
pub const GRANT_TICK_NS: u64 = 10_000_000;

impl Grant {
    /// Whether the grant covers endpoint `endpoint` of a process started at
    /// `start_boottime_ns` running `exe_dev`:`exe_ino`, at `now_ns`.
    #[inline(always)]
    pub fn covers(
        &self,
        endpoint: u32,
        start_boottime_ns: u64,
        exe_dev: u32,
        exe_ino: u64,
        now_ns: u64,
    ) -> bool {
        now_ns < self.expires_ns
            && start_boottime_ns / GRANT_TICK_NS == self.start_ticks
            && exe_dev == self.exe_dev
            && exe_ino == self.exe_ino
            && (self.endpoints == u64::MAX
                || (endpoint < 64 && self.endpoints & (1 << endpoint) != 0))
    }
}

/// Distinct decisions per CPU whose repeats are being counted.
pub const MAX_AGGREGATES: u32 = 4096;
/// Deepest cgroup level a rule may name (root = 0).
pub const MAX_CGROUP_LEVEL: u32 = 31;

/// `PortKey::port` value meaning "every port" (port 0 is never a destination).
pub const PORT_ANY: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixInfo {
    /// Prefix set id (the key of `PORTS` entries).
    pub set: u32,
    /// An endpoint of the set, named when the port cannot be read (fragments,
    /// unknown IPv6 extension headers): such packets count as protected.
    pub endpoint: u32,
    /// `PROTECTED_AUDIT` when every endpoint of the set is in audit mode.
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey {
    pub set: u32,
    pub port: u32,
    pub slot: u32,
}

/// Key of `DESTS`: one protected address (full-length prefix) and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DestKey {
    pub addr: [u8; 16],
    pub port: u32,
    pub slot: u32,
}

/// `Protected::flags`: decide and report, block nothing.
pub const PROTECTED_AUDIT: u32 = 1;
/// `Protected::flags`: requests without the IMDSv2 session token header are
/// denied (`require_imdsv2` on an endpoint covering the destination).
pub const PROTECTED_IMDSV2: u32 = 2;
/// `Protected::flags`: every request is parsed and reported, even under
/// rules without `http` lists (AWS endpoints, for IMDSv1 detection).
pub const PROTECTED_INSPECT: u32 = 4;

/// What is protected at a destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Protected {
    /// Index of the endpoint reported in events.
    pub endpoint: u32,
    pub flags: u32,
    /// Rules that allow this destination.
    pub rules: RuleSet,
}

/// An executable as the kernel knows the running image: inode number and the
/// superblock's device (kernel encoding, `MAJOR << 20 | MINOR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExeKey {
    pub ino: u64,
    pub dev: u32,
    /// Policy slot in `EXES` keys; 0 elsewhere.
    pub slot: u32,
}

/// Key of `UIDS` and `GIDS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdKey {
    pub id: u32,
    pub slot: u32,
}

/// Key of `CGROUPS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CgroupKey {
    pub id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// `ExeEntry::flags`: `generation` is known and must match (inode numbers are
/// reused; the generation tells a new file from an old one).
pub const EXE_CHECK_GENERATION: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExeEntry {
    pub generation: u32,
    pub flags: u32,
    pub rules: RuleSet,
}

/// Value of the uid, gid and cgroup maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubjectEntry {
    /// Non-zero: this uid / cgroup is named in `[guard]`.
    pub guard: u32,
    pub _pad: u32,
    pub rules: RuleSet,
}

/// `Config::flags`.
pub const CONFIG_ENFORCE: u32 = 1;
/// No `[guard]` selectors: every process is guarded.
pub const CONFIG_GUARD_ALL: u32 = 2;
/// Some rule names groups: look up the caller's supplementary groups too.
pub const CONFIG_GROUPS: u32 = 4;
/// Some rule or `[guard]` names a user: look the caller's uid up.
pub const CONFIG_UIDS: u32 = 8;
/// Temporary grants exist: refusals look the caller up in `GRANTS`.
pub const CONFIG_GRANTS: u32 = 16;
/// Supplementary groups looked up per decision; more are not considered.
pub const MAX_SUPPLEMENTARY_GROUPS: usize = 16;

/// An entry of the `CONFIG` array, one per slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    /// Bit `n` set: some rule or guard names a cgroup at level `n`, so the
    /// programs look up the caller's ancestor at that level.
    pub cgroup_levels: u32,
    /// Counts policy loads; tags record it.
    pub generation: u32,
    /// The slot this configuration is in (its `CONFIG` index): every policy
    /// lookup of a decision made under it uses this slot.
    pub slot: u32,
    /// Repeats of a reported decision within this many ns are counted, not
    /// sent (see `event::AggKey`); 0 sends every decision.
    pub aggregate_ns: u64,
    /// Rules that do not constrain the executable (resp. users, groups,
    /// cgroups): they pass that selector whatever the caller is.
    pub any_exe: RuleSet,
    pub any_uid: RuleSet,
    pub any_gid: RuleSet,
    pub any_cgroup: RuleSet,
    /// Rules with an `http` list: on their connections each request must
    /// match an `HTTP_RULES` entry of the rule.
    pub http_rules: RuleSet,
    /// The `HTTP_RULES` scopes in use (required-header sets); the first
    /// `http_scope_count` are valid.
    pub http_scopes: [u16; MAX_HTTP_SCOPES],
    pub http_scope_count: u32,
    /// Non-zero when some `http` entry is a wildcard (prefix lookups needed).
    pub http_wildcards: u32,
}

/// Value of `HTTP_RULES`. The key is an `http::HttpKey` whose `scope` is
/// the set of headers (bits of `http::HeaderTable`) the entry requires, so
/// the kernel looks up only the scopes a request's headers satisfy (listed
/// in `Config::http_scopes`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpAllow {
    /// Rules with this request among their `http` entries.
    pub rules: RuleSet,
}

/// Distinct `require_headers` sets a policy may use.
pub const MAX_HTTP_SCOPES: usize = 8;

/// Value of `HTTP_CONNS` (socket-local storage): where the connection is in
/// its request stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Body bytes of an allowed request still to come.
    pub body_remaining: u32,
    /// Non-zero while the rest of a message after an allowed request is
    /// being judged (the kernel re-runs the program on it).
    pub rest_of_message: u32,
}

/// Capacity of `HTTP_RULES`.
pub const MAX_HTTP_RULES: u32 = 4096;

/// Tag (by socket cookie) written when a connect or sendmsg decision lets a socket
/// reach a protected destination. The egress backstop passes packets to
/// protected destinations only from sockets tagged for that destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTag {
    pub addr: [u8; 16],
    pub port: u16,
    pub hook: u8,
    pub action: u8,
    pub generation: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilter_words_keep_one_byte_per_slot() {
        let w = prefilter_with(0, 0, PREFILTER_DESTS);
        let w = prefilter_with(w, 1, PREFILTER_LPM | PREFILTER_DESTS);
        assert_eq!(prefilter_flags(w, 0), PREFILTER_DESTS);
        assert_eq!(prefilter_flags(w, 1), PREFILTER_LPM | PREFILTER_DESTS);
        // Rewriting one slot never changes what the other one reads.
        for flags in 0..4 {
            let v = prefilter_with(w, 1, flags);
            assert_eq!(prefilter_flags(v, 0), PREFILTER_DESTS);
            assert_eq!(prefilter_flags(v, 1), flags);
        }
        // Cleared in both slots: the one-read fast path says unprotected.
        assert_eq!(prefilter_with(prefilter_with(w, 0, 0), 1, 0), 0);
        // A stray high slot bit cannot reach another byte.
        assert_eq!(prefilter_flags(w, 3), prefilter_flags(w, 1));
    }

    #[test]
    fn prefix_keys_start_with_the_slot() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[169, 254, 169, 254]);
        let k0 = slot_prefix_key(0, &addr);
        let k1 = slot_prefix_key(1, &addr);
        assert_eq!((k0[0], k1[0]), (0, 1));
        assert_eq!(&k0[1..17], &addr);
        assert_eq!(&k1[1..17], &addr);
        assert_eq!(&k1[17..], &[0; 3]);
    }

    #[test]
    fn http_scopes_keep_the_header_set_below_the_slot() {
        assert_eq!(slot_scope(0, 0b101), 0b101);
        assert_eq!(slot_scope(1, 0b101), 0b101 | 1 << HTTP_SLOT_SHIFT);
        assert_ne!(slot_scope(0, 0), slot_scope(1, 0));
        assert_eq!(slot_scope(1, 0xffff) & 0xffff, 0xffff);
    }

    #[test]
    fn slotted_keys_have_no_padding() {
        // Key bytes are hashed whole: every byte must be a named field.
        assert_eq!(core::mem::size_of::<PortKey>(), 12);
        assert_eq!(core::mem::size_of::<DestKey>(), 24);
        assert_eq!(core::mem::size_of::<ExeKey>(), 16);
        assert_eq!(core::mem::size_of::<IdKey>(), 8);
        assert_eq!(core::mem::size_of::<CgroupKey>(), 16);
    }
}
