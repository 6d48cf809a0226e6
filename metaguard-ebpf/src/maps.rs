//! The maps the daemon fills (policy) and reads (events, counters). Layouts
//! live in `metaguard_common::maps`; names there match these statics.
//!
//! Policy maps hold two slots (see `metaguard_common::maps`, "Policy
//! slots"): their capacities are `SLOTS` times the per-policy limits.
use aya_ebpf::{
    btf_maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf,
        SkStorage, SockHash,
    },
    macros::btf_map,
};
use metaguard_common::{
    addr::{prefilter_index, PREFILTER_BUCKETS},
    event::{AggCount, AggKey, Event},
    http::{HeaderTable, HttpKey},
    maps::{
        prefilter_flags, slot_prefix_key, CgroupKey, Config, ConnState, DestKey, ExeEntry, ExeKey,
        Grant, HttpAllow, IdKey, PortKey, PrefixInfo, Protected, SockTag, SubjectEntry,
        MAX_AGGREGATES, MAX_DESTS, MAX_EXES, MAX_GRANTS, MAX_HTTP_RULES, MAX_PORT_ENTRIES,
        MAX_PREFIXES, MAX_PROTECTED_SOCKS, MAX_SOCK_TAGS, MAX_SUBJECTS, SLOTS, SLOT_PREFIX_KEY_LEN,
    },
    offsets::KernelOffsets,
};

/// Non-zero where some protected prefix falls in the bucket: one byte of
/// flags per slot, so the unprotected fast path is this one read.
#[btf_map]
pub static PREFILTER: Array<u32, { PREFILTER_BUCKETS as usize }> = Array::new();

/// The policy slot in force (0 or 1), read once per protected decision.
#[btf_map]
pub static ACTIVE: Array<u32, 1> = Array::new();

#[btf_map]
pub static PREFIXES: LpmTrie<
    [u8; SLOT_PREFIX_KEY_LEN],
    PrefixInfo,
    { (SLOTS * MAX_PREFIXES) as usize },
> = LpmTrie::new();

#[btf_map]
pub static PORTS: HashMap<PortKey, Protected, { (SLOTS * MAX_PORT_ENTRIES) as usize }> =
    HashMap::new();

#[btf_map]
pub static DESTS: HashMap<DestKey, Protected, { (SLOTS * MAX_DESTS) as usize }> = HashMap::new();

#[btf_map]
pub static EXES: HashMap<ExeKey, ExeEntry, { (SLOTS * MAX_EXES) as usize }> = HashMap::new();

#[btf_map]
pub static UIDS: HashMap<IdKey, SubjectEntry, { (SLOTS * MAX_SUBJECTS) as usize }> = HashMap::new();

#[btf_map]
pub static GIDS: HashMap<IdKey, SubjectEntry, { (SLOTS * MAX_SUBJECTS) as usize }> = HashMap::new();

#[btf_map]
pub static CGROUPS: HashMap<CgroupKey, SubjectEntry, { (SLOTS * MAX_SUBJECTS) as usize }> =
    HashMap::new();

/// One configuration per slot.
#[btf_map]
pub static CONFIG: Array<Config, { SLOTS as usize }> = Array::new();

pub const EVENTS_BYTES: usize = 4 * 1024 * 1024;

/// Events; a full buffer is counted in `LOST`, never silent.
#[btf_map]
pub static EVENTS: RingBuf<Event, EVENTS_BYTES> = RingBuf::new();

/// Temporary grants, by tgid (`metaguard grant`).
#[btf_map]
pub static GRANTS: HashMap<u32, Grant, { MAX_GRANTS as usize }> = HashMap::new();

/// Repeats of recent decisions, counted instead of sent (per CPU).
#[btf_map]
pub static AGGREGATES: LruPerCpuHashMap<AggKey, AggCount, { MAX_AGGREGATES as usize }> =
    LruPerCpuHashMap::new();

#[btf_map]
pub static LOST: PerCpuArray<u64, 1> = PerCpuArray::new();

/// When this CPU last woke the event reader for a denial (boot ns).
#[btf_map]
pub static LAST_WAKEUP: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Tags of sockets allowed to reach a protected destination, by socket
/// cookie (unique for the host's uptime, never reused). An LRU hash rather
/// than socket-local storage: its entries are preallocated, where creating
/// socket storage allocates on the decision path.
/// Closed sockets' tags age out; a live socket whose tag was evicted (after
/// `MAX_SOCK_TAGS` newer allowed sockets) fails closed at the backstop.
#[btf_map]
pub static SOCK_TAGS: LruHashMap<u64, SockTag, { MAX_SOCK_TAGS as usize }> = LruHashMap::new();

/// Established TCP sockets to protected destinations, by socket cookie; the
/// `sk_msg` program is attached to this map and runs on each of their sends.
#[btf_map]
pub static PROTECTED_SOCKS: SockHash<u64, { MAX_PROTECTED_SOCKS as usize }> = SockHash::new();

/// HTTP checker scratch state: per CPU, reset for each message (a request's
/// bytes are gathered by corking, so each run parses it whole).
#[btf_map]
pub static HTTP_STATE: PerCpuArray<crate::http::Scratch, 1> = PerCpuArray::new();

/// Header names the HTTP checker tracks, per slot; written by the daemon.
#[btf_map]
pub static HTTP_TABLE: Array<HeaderTable, { SLOTS as usize }> = Array::new();

/// The sender being judged on a protected connection (per-CPU scratch).
#[btf_map]
pub static SENDERS: PerCpuArray<crate::guard::SenderInfo, 1> = PerCpuArray::new();

/// Requests the policy's `http` entries allow, by key.
#[btf_map]
pub static HTTP_RULES: HashMap<HttpKey, HttpAllow, { (SLOTS * MAX_HTTP_RULES) as usize }> =
    HashMap::new();

/// Per-connection request-stream state (socket-local storage: it lives and
/// dies with the socket, so a reused address pair never inherits it).
#[btf_map]
pub static HTTP_CONNS: SkStorage<ConnState> = SkStorage::new();

/// Set by the daemon at load time from the kernel's BTF.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_mm: 0,
    mm_exe_file: 0,
    file_inode: 0,
    file_dentry: 0,
    inode_ino: 0,
    inode_sb: 0,
    inode_generation: 0,
    sb_dev: 0,
    dentry_name: 0,
    task_cred: 0,
    cred_group_info: 0,
    group_info_ngroups: 0,
    group_info_gid: 0,
    task_start_boottime: 0,
    tcp_fastopen_req: 0,
    tcp_sock_cookie: 0,
    valid: 0,
};

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// The packed pre-filter word of `addr`'s bucket: 0 means certainly not
/// protected, in either slot; `prefilter_flags(word, slot)` gives the
/// lookups (`PREFILTER_LPM` | `PREFILTER_DESTS`) a slot needs.
#[inline(always)]
pub fn prefilter(addr: &[u8; 16]) -> u32 {
    PREFILTER.get(prefilter_index(addr)).copied().unwrap_or(0)
}

/// The slot in force; read once per decision, past the pre-filter.
#[inline(always)]
pub fn active_slot() -> u32 {
    ACTIVE.get(0).copied().unwrap_or(0) & 1
}

/// The lookups `slot` needs for a packed pre-filter word.
#[inline(always)]
pub fn slot_needs(packed: u32, slot: u32) -> u32 {
    prefilter_flags(packed, slot)
}

#[inline(always)]
pub fn prefix_key(slot: u32, addr: &[u8; 16]) -> Key<[u8; SLOT_PREFIX_KEY_LEN]> {
    Key::new(
        128 + metaguard_common::maps::SLOT_PREFIX_BITS,
        slot_prefix_key(slot, addr),
    )
}
