//! The maps the daemon fills (policy) and reads (events, counters). Layouts
//! live in `metaguard_common::maps`; names there match these statics.
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
        Config, ConnState, DestKey, ExeEntry, ExeKey, Grant, HttpAllow, PortKey, PrefixInfo,
        Protected, SockTag, SubjectEntry, MAX_AGGREGATES, MAX_DESTS, MAX_EXES, MAX_GRANTS,
        MAX_HTTP_RULES, MAX_PORT_ENTRIES, MAX_PREFIXES, MAX_PROTECTED_SOCKS, MAX_SOCK_TAGS,
        MAX_SUBJECTS,
    },
    offsets::KernelOffsets,
};

/// Non-zero where some protected prefix falls in the bucket.
#[btf_map]
pub static PREFILTER: Array<u32, { PREFILTER_BUCKETS as usize }> = Array::new();

#[btf_map]
pub static PREFIXES: LpmTrie<[u8; 16], PrefixInfo, { MAX_PREFIXES as usize }> = LpmTrie::new();

#[btf_map]
pub static PORTS: HashMap<PortKey, Protected, { MAX_PORT_ENTRIES as usize }> = HashMap::new();

#[btf_map]
pub static DESTS: HashMap<DestKey, Protected, { MAX_DESTS as usize }> = HashMap::new();

#[btf_map]
pub static EXES: HashMap<ExeKey, ExeEntry, { MAX_EXES as usize }> = HashMap::new();

#[btf_map]
pub static UIDS: HashMap<u32, SubjectEntry, { MAX_SUBJECTS as usize }> = HashMap::new();

#[btf_map]
pub static GIDS: HashMap<u32, SubjectEntry, { MAX_SUBJECTS as usize }> = HashMap::new();

#[btf_map]
pub static CGROUPS: HashMap<u64, SubjectEntry, { MAX_SUBJECTS as usize }> = HashMap::new();

#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

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

/// Header names the HTTP checker tracks; written by the daemon.
#[btf_map]
pub static HTTP_TABLE: Array<HeaderTable, 1> = Array::new();

/// The sender being judged on a protected connection (per-CPU scratch).
#[btf_map]
pub static SENDERS: PerCpuArray<crate::guard::SenderInfo, 1> = PerCpuArray::new();

/// Requests the policy's `http` entries allow, by key.
#[btf_map]
pub static HTTP_RULES: HashMap<HttpKey, HttpAllow, { MAX_HTTP_RULES as usize }> = HashMap::new();

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
    valid: 0,
};

#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Which lookups `addr` needs (`PREFILTER_LPM` | `PREFILTER_DESTS`); 0 means
/// certainly not protected.
#[inline(always)]
pub fn prefilter(addr: &[u8; 16]) -> u32 {
    PREFILTER.get(prefilter_index(addr)).copied().unwrap_or(0)
}

#[inline(always)]
pub fn prefix_key(addr: [u8; 16]) -> Key<[u8; 16]> {
    Key::new(128, addr)
}
