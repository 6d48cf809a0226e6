//! The egress backstop (cgroup_skb): packets to protected destinations pass
//! only from sockets a connect or sendmsg decision allowed: TCP and UDP
//! sockets connected to exactly that destination, or sockets a sendmsg
//! decision tagged. Raw IP sockets and
//! NAT rewrites of an innocent destination never reach a connect hook; they
//! end here. Anything that cannot be parsed but goes to a protected address is
//! treated as protected.
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};
use metaguard_common::{
    addr,
    decide::{self, Action, Reason},
    event::{AggCount, AggKey, Hook, EVENT_NO_EXE, EVENT_NO_PORT, EVENT_NO_TASK, NONE_U16},
    maps::{Config, IdKey, Protected, SockTag, PROTECTED_AUDIT},
};

use crate::{
    emit,
    guard::{config, protected_in},
    identity::cgroup_match,
    maps::{active_slot, prefilter, prefix_key, slot_needs, PREFIXES, SOCK_TAGS, UIDS},
};

const PASS: i32 = 1;
const DROP: i32 = 0;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

struct Dest {
    key: [u8; 16],
    port: Option<u16>,
    protocol: u8,
}

#[inline(always)]
pub fn check(ctx: &SkBuffContext) -> i32 {
    let Some((key, protocol, l4)) = parse(ctx) else {
        return PASS; // Not IP: no protected destination to reach.
    };
    // Most packets stop here, before the port is read (a helper call when
    // the transport header is not in the linear data).
    let packed = prefilter(&key);
    if packed == 0 {
        return PASS;
    }
    // One slot for the whole decision (see `metaguard_common::maps`).
    let slot = active_slot();
    let needs = slot_needs(packed, slot);
    if needs == 0 {
        return PASS;
    }
    let d = Dest {
        key,
        port: l4.and_then(|off| dport_at(ctx, off)),
        protocol,
    };
    let (endpoint, audit_only) = match d.port {
        Some(port) => match protected_in(slot, needs, d.key, port) {
            Some(p) => (p.endpoint, p.flags & PROTECTED_AUDIT != 0),
            None => return PASS,
        },
        // No port to read: the address alone makes it protected.
        None => match PREFIXES.get(&prefix_key(slot, &d.key)) {
            Some(info) => (info.endpoint, info.flags & PROTECTED_AUDIT != 0),
            None => return PASS,
        },
    };
    let Some(cfg) = config(slot) else {
        return DROP;
    };
    // Before the guard lookups: every packet of a connection allowed at
    // connect goes this way, and it passes whoever sends it.
    if connected_to(ctx, &d) {
        return PASS;
    }
    let skb = ctx.skb.skb;
    let uid = ctx.skb.get_socket_uid();
    let cg = cgroup_match(cfg, Some(skb));
    let uid_entry = unsafe { UIDS.get(&IdKey { id: uid, slot }) };
    if !decide::is_guarded(cfg, uid_entry, cg.guard) {
        return PASS;
    }
    let reason = match socket_tag(ctx) {
        None => Reason::NoSocket,
        Some(Some(t)) if t.addr == d.key && d.port.is_none_or(|p| p == t.port) => return PASS,
        Some(_) => Reason::Untagged,
    };
    let dest = Protected {
        endpoint,
        flags: if audit_only { PROTECTED_AUDIT } else { 0 },
        ..Default::default()
    };
    let action = decide::refusal(cfg, &dest);
    report(ctx, cfg, &d, endpoint, uid, action, reason);
    if action == Action::Deny {
        DROP
    } else {
        PASS
    }
}

/// True when the packet goes exactly where its TCP or UDP socket is
/// connected. Such a socket got there through a connect hook (which would
/// have refused it), so connects need no tag. Raw and packet sockets connect
/// without a hook, and a NAT rewrite makes the packet's destination differ
/// from the socket's: both fall through to the tag check.
#[inline(always)]
fn connected_to(ctx: &SkBuffContext, d: &Dest) -> bool {
    unsafe {
        let sk = (*ctx.skb.skb).__bindgen_anon_2.sk;
        if sk.is_null() {
            return false;
        }
        // Only TCP has sockets that are not full (time-wait, request).
        let full = bpf_sk_fullsock(sk);
        if !full.is_null() {
            let ty = core::ptr::read_volatile(&(*full).type_);
            let protocol = core::ptr::read_volatile(&(*full).protocol);
            let stream = ty == SOCK_STREAM && protocol == IPPROTO_TCP as u32;
            let dgram = ty == SOCK_DGRAM && protocol == IPPROTO_UDP as u32;
            if !(stream || dgram) {
                return false;
            }
        }
        if let Some(port) = d.port {
            if u16::from_be(core::ptr::read_volatile(&(*sk).dst_port)) != port {
                return false;
            }
        }
        let family = core::ptr::read_volatile(&(*sk).family);
        if family == AF_INET {
            let ip = core::ptr::read_volatile(&(*sk).dst_ip4);
            addr::key_from_v4_raw(ip) == d.key
        } else if family == AF_INET6 {
            let words = [
                core::ptr::read_volatile(&(*sk).dst_ip6[0]),
                core::ptr::read_volatile(&(*sk).dst_ip6[1]),
                core::ptr::read_volatile(&(*sk).dst_ip6[2]),
                core::ptr::read_volatile(&(*sk).dst_ip6[3]),
            ];
            addr::key_from_v6_raw(words) == d.key
        } else {
            false
        }
    }
}

/// The tag of the packet's socket; `None` when the packet has no socket.
#[inline(always)]
fn socket_tag(ctx: &SkBuffContext) -> Option<Option<SockTag>> {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    if cookie == 0 {
        return None;
    }
    Some(unsafe { SOCK_TAGS.get(&cookie) }.copied())
}

#[inline(always)]
fn report(
    ctx: &SkBuffContext,
    cfg: &Config,
    d: &Dest,
    endpoint: u32,
    uid: u32,
    action: Action,
    reason: Reason,
) {
    let key = AggKey {
        cgroup_id: unsafe { bpf_skb_cgroup_id(ctx.skb.skb) },
        exe_ino: 0,
        exe_dev: 0,
        exe_generation: 0,
        pid: 0,
        uid,
        gid: u32::MAX,
        policy_generation: cfg.generation,
        daddr: d.key,
        dport: d.port.unwrap_or(0),
        protocol: d.protocol as u16,
        hook: Hook::Egress as u8,
        flags: EVENT_NO_EXE | EVENT_NO_TASK | if d.port.is_none() { EVENT_NO_PORT } else { 0 },
        redacted: 0,
    };
    let verdict = AggCount {
        rule: NONE_U16,
        endpoint: endpoint as u16,
        action: action as u8,
        reason: reason as u8,
        ..Default::default()
    };
    // Packets of one socket repeat: count them like repeated decisions.
    emit::window(cfg, &key).record(cfg, &key, &verdict, true, |_| {});
}

/// Destination of an IP packet; the port only where it can be read for sure.
/// Reads the linear packet data directly (no helper call on every packet of
/// the host); headers outside it are read with `bpf_skb_load_bytes`.
#[inline(always)]
/// The destination key, the IP protocol, and where the TCP/UDP header
/// starts (None: no port to read: other protocols, fragments, IPv6
/// extension headers).
fn parse(ctx: &SkBuffContext) -> Option<([u8; 16], u8, Option<usize>)> {
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    if proto == ETH_P_IP {
        let h: [u8; 20] = header(ctx, 0)?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        let frag_off = (((h[6] & 0x1f) as u16) << 8) | h[7] as u16;
        let key = addr::key_from_v4_octets([h[16], h[17], h[18], h[19]]);
        let l4 = if frag_off == 0 && (h[9] == IPPROTO_TCP || h[9] == IPPROTO_UDP) && ihl >= 20 {
            Some(ihl)
        } else {
            None
        };
        Some((key, h[9], l4))
    } else if proto == ETH_P_IPV6 {
        let h: [u8; 40] = header(ctx, 0)?;
        let mut key = [0u8; 16];
        key.copy_from_slice(&h[24..40]);
        let l4 = if h[6] == IPPROTO_TCP || h[6] == IPPROTO_UDP {
            Some(40)
        } else {
            None
        };
        Some((key, h[6], l4))
    } else {
        None
    }
}

/// `N` bytes at `off`: straight from the linear data when they are there.
#[inline(always)]
fn header<const N: usize>(ctx: &SkBuffContext, off: usize) -> Option<[u8; N]> {
    let (data, end) = unsafe {
        (
            (*ctx.skb.skb).data as usize,
            (*ctx.skb.skb).data_end as usize,
        )
    };
    if data + off + N <= end {
        Some(unsafe { core::ptr::read_unaligned((data + off) as *const [u8; N]) })
    } else {
        ctx.load(off).ok()
    }
}

#[inline(always)]
fn dport_at(ctx: &SkBuffContext, l4: usize) -> Option<u16> {
    let p: [u8; 4] = header(ctx, l4)?;
    Some(u16::from_be_bytes([p[2], p[3]]))
}
