//! The connect and sendmsg decision: is the destination protected, who is
//! calling, what does the policy say; tag sockets that may go through.
use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_socket_cookie, bpf_ktime_get_coarse_ns,
        bpf_skc_to_tcp_sock,
    },
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid},
    programs::SockAddrContext,
};
use metaguard_common::{
    addr::{self, port_from_user_port},
    decide::{self, Action, Subject},
    event::{AggCount, AggKey, Hook, EVENT_NO_EXE, NONE_U16},
    maps::{
        Config, DestKey, ExeKey, IdKey, PortKey, Protected, SockTag, CONFIG_GRANTS, CONFIG_GROUPS,
        CONFIG_UIDS, PORT_ANY, PREFILTER_DESTS, PREFILTER_LPM,
    },
    ruleset::RuleSet,
};

use crate::{
    emit::{emit, same_verdict, window},
    identity::{
        cgroup_match, current_exe, exe_name, start_boottime, supplementary_rules, Exe, ExeFile,
    },
    maps::{
        active_slot, offsets, prefilter, prefix_key, slot_needs, CONFIG, DESTS, EXES, GIDS, GRANTS,
        PORTS, PREFIXES, SENDERS, SOCK_TAGS, UIDS,
    },
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[inline(always)]
pub fn sock_addr_v4(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let ip = unsafe { core::ptr::read_volatile(&sa.user_ip4) };
    let port = unsafe { core::ptr::read_volatile(&sa.user_port) };
    decide_sock_addr(
        ctx,
        addr::key_from_v4_raw(ip),
        port_from_user_port(port),
        hook,
    )
}

#[inline(always)]
pub fn sock_addr_v6(ctx: &SockAddrContext, hook: Hook) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    // One 32-bit context load per word: the verifier's rule for user_ip6.
    let words = unsafe {
        [
            core::ptr::read_volatile(&sa.user_ip6[0]),
            core::ptr::read_volatile(&sa.user_ip6[1]),
            core::ptr::read_volatile(&sa.user_ip6[2]),
            core::ptr::read_volatile(&sa.user_ip6[3]),
        ]
    };
    let port = unsafe { core::ptr::read_volatile(&sa.user_port) };
    decide_sock_addr(
        ctx,
        addr::key_from_v6_raw(words),
        port_from_user_port(port),
        hook,
    )
}

/// A protected destination, as the slot in force describes it. Every later
/// lookup of the decision uses `slot` (see `metaguard_common::maps`, "Policy
/// slots").
#[derive(Clone, Copy)]
pub struct Found {
    pub slot: u32,
    pub dest: &'static Protected,
}

/// What is protected at `key`:`port`, if anything. Unprotected addresses
/// stop at the pre-filter (one array read); only then is the slot in force
/// read, once.
#[inline(always)]
pub fn protected_at(key: [u8; 16], port: u16) -> Option<Found> {
    let packed = prefilter(&key);
    if packed == 0 {
        return None;
    }
    let slot = active_slot();
    let dest = protected_in(slot, slot_needs(packed, slot), key, port)?;
    Some(Found { slot, dest })
}

/// What `slot` protects at `key`:`port`, given the lookups its pre-filter
/// flags (`needs`) call for: single protected addresses take one hashed
/// lookup per port tried; addresses in wider prefixes go through the LPM
/// trie.
#[inline(always)]
pub fn protected_in(slot: u32, needs: u32, key: [u8; 16], port: u16) -> Option<&'static Protected> {
    if needs == 0 {
        return None;
    }
    if needs & PREFILTER_DESTS != 0 {
        let found = unsafe {
            DESTS
                .get(&DestKey {
                    addr: key,
                    port: port as u32,
                    slot,
                })
                .or_else(|| {
                    DESTS.get(&DestKey {
                        addr: key,
                        port: PORT_ANY,
                        slot,
                    })
                })
        };
        if found.is_some() || needs & PREFILTER_LPM == 0 {
            return found;
        }
    }
    let info = PREFIXES.get(&prefix_key(slot, &key))?;
    let set = info.set;
    unsafe {
        PORTS
            .get(&PortKey {
                set,
                port: port as u32,
                slot,
            })
            .or_else(|| {
                PORTS.get(&PortKey {
                    set,
                    port: PORT_ANY,
                    slot,
                })
            })
    }
}

/// The configuration of `slot`; `None` (refuse) unless the daemon wrote it
/// for that slot.
#[inline(always)]
pub fn config(slot: u32) -> Option<&'static Config> {
    let cfg = CONFIG.get(slot)?;
    if cfg.slot != slot {
        return None;
    }
    Some(cfg)
}

#[inline(always)]
fn decide_sock_addr(ctx: &SockAddrContext, key: [u8; 16], port: u16, hook: Hook) -> i32 {
    // The unprotected fast path, inline: one array read, no call.
    let packed = prefilter(&key);
    if packed == 0 {
        return ALLOW;
    }
    let sa = unsafe { &*ctx.sock_addr };
    let protocol = unsafe { core::ptr::read_volatile(&sa.protocol) } as u16;
    // The protected destination, once a decision let the caller through.
    let mut passed: Option<(u8, &'static Config, &'static Protected)> = None;
    let site = Site {
        packed,
        port,
        protocol,
    };
    let pass = decide_current(site, key, hook, |action, cfg, dest| {
        passed = Some((action, cfg, dest));
        let generation = cfg.generation;
        // A connected socket is recognised at the backstop by its
        // destination; only sendmsg, which leaves the socket unconnected,
        // needs a tag.
        if matches!(hook, Hook::Sendmsg4 | Hook::Sendmsg6) {
            tag_socket(ctx, key, port, hook, action, generation);
        }
    });
    if !pass {
        return DENY;
    }
    if let Some((action, cfg, dest)) = passed {
        if matches!(hook, Hook::Connect4 | Hook::Connect6)
            && protocol == IPPROTO_TCP
            && fast_open_checked(action, cfg, dest)
            && fast_open_pending(ctx)
            && fast_open_refused(cfg, dest, key, port, protocol, hook)
        {
            return DENY;
        }
    }
    ALLOW
}

/// Whether a Fast Open connect could be refused at all after a decision
/// with `action`: an allowed caller is refused only where requests are
/// checked (`http` rules in the policy, or IMDSv2 required at `dest`), so
/// the common case skips reading the socket. Audited and granted callers
/// take the full check (`fast_open_refused`).
#[inline(always)]
fn fast_open_checked(action: u8, cfg: &Config, dest: &Protected) -> bool {
    action != Action::Allow as u8
        || !cfg.http_rules.is_empty()
        || dest.flags & metaguard_common::maps::PROTECTED_IMDSV2 != 0
}

/// Whether this connect is a TCP Fast Open send (`sendto(MSG_FASTOPEN)`, or
/// the first write after `TCP_FASTOPEN_CONNECT`): the kernel sets
/// `fastopen_req` for the duration of that send, and the data would go out
/// with the SYN or right after it, before the socket reaches the per-send
/// check. A socket without its `struct sock` counts as pending
/// (deny-by-default).
#[inline(never)]
fn fast_open_pending(ctx: &SockAddrContext) -> bool {
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if sk.is_null() {
        return true;
    }
    let tp = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
    if tp.is_null() {
        // Not a TCP socket after all (MPTCP's outer socket): no Fast Open.
        return false;
    }
    // A BTF-typed pointer: a direct, fault-tolerant load (see identity.rs).
    let req: u64 = unsafe {
        core::ptr::read_volatile(
            (tp as u64).wrapping_add(offsets().tcp_fastopen_req as u64) as *const u64
        )
    };
    req != 0
}

/// A Fast Open connect to a protected destination that the caller may reach
/// only with checked requests (`http` rules, `require_imdsv2`) is refused:
/// reported with reason `fast-open`. Other callers keep Fast Open (their
/// connect decision covers what they send).
#[inline(never)]
fn fast_open_refused(
    cfg: &'static Config,
    dest: &'static Protected,
    key: [u8; 16],
    port: u16,
    protocol: u16,
    hook: Hook,
) -> bool {
    let Some(info) = sender(cfg, dest, key, port) else {
        return true;
    };
    let s = Sender { cfg, dest, info };
    if !crate::http::enforced(&s) {
        return false;
    }
    let action = decide::refusal(s.cfg, s.dest);
    // The verdict goes where the sender's is kept: this frame stays small
    // (it sits on top of the connect decision's and `sender`'s).
    let Some(info) = SENDERS.get_ptr_mut(0) else {
        return true;
    };
    unsafe {
        // Named as the connect it is (`sender` names a send).
        (*info).agg.hook = hook as u8;
        (*info).agg.protocol = protocol;
        (*info).verdict.rule = NONE_U16;
        (*info).verdict.action = action as u8;
        (*info).verdict.reason = decide::Reason::FastOpen as u8;
    }
    report_unaggregated(&s);
    action == Action::Deny
}

/// Sends the sender's verdict as an event of its own, outside the
/// aggregation window (a one-off refusal must not become the verdict that
/// later connects of the same key reuse). A frame of its own.
#[inline(never)]
fn report_unaggregated(s: &Sender) {
    emit(|ev| {
        ev.set_key(&s.info.agg);
        ev.set_verdict(&s.info.verdict);
        s.fill(ev);
    });
}

/// Where a connect or sendmsg goes, besides the address: one register
/// (BPF calls take at most five arguments).
#[derive(Clone, Copy)]
pub struct Site {
    /// The address's pre-filter word, already read on the fast path.
    pub packed: u32,
    pub port: u16,
    pub protocol: u16,
}

/// The decision for the current task reaching `key` at `site`: true when it
/// may proceed (unprotected, allowed, or audited). `on_pass` runs for a
/// passing decision at a protected destination with (action, the slot's
/// configuration, destination).
/// Not inlined: its temporaries (key, window, identity) get a frame of
/// their own, so the connect program can call the Fast Open check beside it.
#[inline(never)]
pub fn decide_current(
    site: Site,
    key: [u8; 16],
    hook: Hook,
    on_pass: impl FnOnce(u8, &'static Config, &'static Protected),
) -> bool {
    let Site {
        packed,
        port,
        protocol,
    } = site;
    // The caller passed the pre-filter: the slot in force, read once.
    let slot = active_slot();
    let Some(dest) = protected_in(slot, slot_needs(packed, slot), key, port) else {
        return true;
    };
    // A protected destination with no configuration loaded: refuse.
    let Some(cfg) = config(slot) else {
        return false;
    };
    let uid_gid = bpf_get_current_uid_gid();
    let (uid, gid) = (uid_gid as u32, (uid_gid >> 32) as u32);
    let exe = current_exe();
    let pid_tgid = bpf_get_current_pid_tgid();
    let agg = AggKey {
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        exe_ino: exe.as_ref().map_or(0, |e| e.key.ino),
        exe_dev: exe.as_ref().map_or(0, |e| e.key.dev),
        exe_generation: exe.as_ref().map_or(0, |e| e.generation),
        pid: (pid_tgid >> 32) as u32,
        uid,
        gid,
        policy_generation: cfg.generation,
        daddr: key,
        dport: port,
        protocol,
        hook: hook as u8,
        flags: if exe.is_some() { 0 } else { EVENT_NO_EXE },
        redacted: 0,
    };
    let window = window(cfg, &agg);
    // Within a policy generation the verdict depends only on the key, except
    // for supplementary groups, which are not in it: recheck those.
    let reuse = cfg.flags & CONFIG_GROUPS == 0;
    let verdict = if window.open && reuse {
        window.last
    } else {
        decide_subject(cfg, dest, exe.as_ref(), uid, gid)
    };
    let passes = verdict.action != Action::Deny as u8;
    if passes {
        on_pass(verdict.action, cfg, dest);
    }
    // Spelled out rather than through `Window::record`: with that closure
    // LLVM emitted a read of an uninitialised register here, which the
    // verifier refuses (sendmsg4).
    if window.open && same_verdict(&window.last, &verdict) {
        window.count_repeat();
    } else {
        window.report(cfg, &agg, &verdict, |ev| {
            ev.tid = pid_tgid as u32;
            if let Some(e) = &exe {
                exe_name(e, &mut ev.exe_name);
            }
            crate::mem::current_comm(&mut ev.comm);
        });
    }
    passes
}

/// The sending task on a protected connection, decided like a connect but
/// keeping what per-request checks need: every rule the caller satisfies
/// for the destination, and the identity for events. Kept in a per-CPU map
/// (`SENDERS`): the stack cannot hold it next to the HTTP checker's frames.
#[repr(C)]
pub struct SenderInfo {
    pub agg: AggKey,
    pub verdict: AggCount,
    pub allowed: RuleSet,
    pub exe: ExeFile,
    pub tid: u32,
    pub guarded: u32,
}

pub struct Sender {
    pub cfg: &'static Config,
    pub dest: &'static Protected,
    pub info: &'static SenderInfo,
}

/// The sender on a TCP connection to `dest`, protected at `key`:`port`,
/// decided under `cfg` (the configuration of the slot `dest` was found in),
/// written to this CPU's `SENDERS` entry. Not inlined: its temporaries live
/// in a frame of their own, beside the HTTP checker's. Returns a single
/// pointer (no struct returned through the stack: the verifier refuses a
/// subprogram whose `r0` still holds a stack address when it returns).
#[inline(never)]
pub fn sender(
    cfg: &'static Config,
    dest: &'static Protected,
    key: [u8; 16],
    port: u16,
) -> Option<&'static SenderInfo> {
    let (protocol, hook) = (IPPROTO_TCP, Hook::SendmsgTcp);
    let info = SENDERS.get_ptr_mut(0)?;
    let info = unsafe { &mut *info };
    let uid_gid = bpf_get_current_uid_gid();
    let (uid, gid) = (uid_gid as u32, (uid_gid >> 32) as u32);
    let exe = current_exe();
    let pid_tgid = bpf_get_current_pid_tgid();
    let subject = subject(cfg, exe.as_ref(), uid, gid);
    // Written in place: the frame stays small.
    info.guarded = decide::is_guarded(cfg, subject.uid, subject.cgroup_guard) as u32;
    info.allowed = decide::matching_rules(cfg, &subject).and(&dest.rules);
    let v = decide::verdict(cfg, dest, info.guarded != 0, &info.allowed);
    info.verdict = with_grant(cfg, dest, exe.as_ref(), &v);
    if info.verdict.reason == decide::Reason::Granted as u8 {
        // A grant lets the process send anything: no per-request checks.
        info.guarded = 0;
    }
    let a = &mut info.agg;
    a.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    a.exe_ino = exe.as_ref().map_or(0, |e| e.key.ino);
    a.exe_dev = exe.as_ref().map_or(0, |e| e.key.dev);
    a.exe_generation = exe.as_ref().map_or(0, |e| e.generation);
    a.pid = (pid_tgid >> 32) as u32;
    a.uid = uid;
    a.gid = gid;
    a.policy_generation = cfg.generation;
    a.daddr = key;
    a.dport = port;
    a.protocol = protocol;
    a.hook = hook as u8;
    a.flags = if exe.is_some() { 0 } else { EVENT_NO_EXE };
    a.redacted = 0;
    info.exe = ExeFile::of(exe.as_ref());
    info.tid = pid_tgid as u32;
    Some(info)
}

const IPPROTO_TCP: u16 = 6;

impl Sender {
    pub fn guarded(&self) -> bool {
        self.info.guarded != 0
    }

    /// Reports the connect-level verdict (refused senders), aggregated.
    #[inline(never)]
    pub fn report(&self) {
        window(self.cfg, &self.info.agg).record(
            self.cfg,
            &self.info.agg,
            &self.info.verdict,
            true,
            |ev| self.fill(ev),
        );
    }

    /// The event fields that are not in the aggregation key.
    #[inline(always)]
    pub fn fill(&self, ev: &mut metaguard_common::event::Event) {
        ev.tid = self.info.tid;
        self.info.exe.name_into(&mut ev.exe_name);
        crate::mem::current_comm(&mut ev.comm);
    }
}

/// A temporary grant (`metaguard grant`) lets this very process reach `dest`.
#[inline(always)]
fn granted(cfg: &Config, dest: &Protected, exe: Option<&Exe>) -> bool {
    if cfg.flags & CONFIG_GRANTS == 0 {
        return false;
    }
    let Some(e) = exe else {
        return false;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match unsafe { GRANTS.get(&tgid) } {
        Some(g) => g.covers(
            dest.endpoint,
            start_boottime(),
            e.key.dev,
            e.key.ino,
            unsafe { bpf_ktime_get_coarse_ns() },
        ),
        None => false,
    }
}

/// The caller with its lookups: only in the maps the policy fills, in the
/// configuration's slot.
#[inline(always)]
fn subject(cfg: &Config, exe: Option<&Exe>, uid: u32, gid: u32) -> Subject<'static> {
    let cg = cgroup_match(cfg, None);
    Subject {
        exe_generation: exe.map(|e| e.generation),
        exe: exe.and_then(|e| unsafe {
            EXES.get(&ExeKey {
                ino: e.key.ino,
                dev: e.key.dev,
                slot: cfg.slot,
            })
        }),
        uid: if cfg.flags & CONFIG_UIDS != 0 {
            unsafe {
                UIDS.get(&IdKey {
                    id: uid,
                    slot: cfg.slot,
                })
            }
        } else {
            None
        },
        gid: if cfg.flags & CONFIG_GROUPS != 0 {
            unsafe {
                GIDS.get(&IdKey {
                    id: gid,
                    slot: cfg.slot,
                })
            }
        } else {
            None
        },
        groups_rules: supplementary_rules(cfg),
        cgroup_guard: cg.guard,
        cgroup_rules: cg.rules,
    }
}

/// The full decision: which rules the caller's identity satisfies.
#[inline(always)]
fn decide_subject(
    cfg: &Config,
    dest: &Protected,
    exe: Option<&Exe>,
    uid: u32,
    gid: u32,
) -> AggCount {
    let subject = subject(cfg, exe, uid, gid);
    with_grant(cfg, dest, exe, &decide::decide(cfg, dest, &subject))
}

/// The verdict as recorded for the window and events, with a temporary
/// grant turning a refusal for want of a rule into an allow.
#[inline(always)]
fn with_grant(cfg: &Config, dest: &Protected, exe: Option<&Exe>, v: &decide::Verdict) -> AggCount {
    let (action, reason) = if v.reason == decide::Reason::NoRule && granted(cfg, dest, exe) {
        (Action::Allow, decide::Reason::Granted)
    } else {
        (v.action, v.reason)
    };
    AggCount {
        rule: v.rule.unwrap_or(NONE_U16),
        endpoint: dest.endpoint as u16,
        action: action as u8,
        reason: reason as u8,
        ..Default::default()
    }
}

/// Records that the socket may send to `key`:`port`; the egress backstop
/// passes packets to protected destinations only with this tag.
#[inline(always)]
fn tag_socket(
    ctx: &SockAddrContext,
    key: [u8; 16],
    port: u16,
    hook: Hook,
    action: u8,
    generation: u32,
) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let tag = SockTag {
        addr: key,
        port,
        hook: hook as u8,
        action,
        generation,
    };
    // A full map evicts the least recently used tag; nothing to do on error.
    let _ = SOCK_TAGS.insert(&cookie, &tag, 0);
}
