//! Per-send checks on TCP sockets to protected destinations.
//!
//! `sock_ops` puts every TCP socket of the guarded cgroup that completes an
//! active open to a protected address:port into `PROTECTED_SOCKS`; the
//! `sk_msg` program attached to that map then runs on every send on such a
//! socket and decides again for the *sending* task, with the same decision as
//! connect. A socket connected by an allowed program and handed to another one
//! (SCM_RIGHTS, inheritance across fork+exec) is thus unusable by the other:
//! its sends fail (EACCES) and nothing reaches the service.
use aya_ebpf::{
    bindings::{
        sk_action::SK_DROP, sk_action::SK_PASS, BPF_ANY, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB,
    },
    helpers::generated::{bpf_get_socket_cookie, bpf_skc_to_tcp_sock},
    programs::{SkMsgContext, SockOpsContext},
};
use metaguard_common::{
    addr::{key_from_v4_raw, key_from_v6_raw, port_from_remote_port},
    decide::Action,
};

use crate::{
    guard::{config, protected_at, sender, Sender},
    http,
    maps::{offsets, PROTECTED_SOCKS},
    redact::{self, REDACT_SOCKS},
};

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// sock_ops programs return 1; the value only matters for a few ops that
/// take a reply, none of which is used here.
const SOCK_OPS_OK: u32 = 1;

/// The remote end as the context fields say, read unconditionally, one
/// 32-bit load each straight from the context pointer (the verifier refuses
/// loads through a context pointer that was moved, which is what LLVM makes
/// of a load behind a branch or a pointer argument).
macro_rules! remote {
    ($ctx:expr) => {{
        let c = $ctx;
        unsafe {
            (
                core::ptr::read_volatile(&(*c).family),
                core::ptr::read_volatile(&(*c).remote_ip4),
                [
                    core::ptr::read_volatile(&(*c).remote_ip6[0]),
                    core::ptr::read_volatile(&(*c).remote_ip6[1]),
                    core::ptr::read_volatile(&(*c).remote_ip6[2]),
                    core::ptr::read_volatile(&(*c).remote_ip6[3]),
                ],
                core::ptr::read_volatile(&(*c).remote_port),
            )
        }
    }};
}

/// (address key, port) of the remote end; None for other families.
#[inline(always)]
fn remote_key(family: u32, ip4: u32, ip6: [u32; 4], port: u32) -> Option<([u8; 16], u16)> {
    let key = match family {
        AF_INET => key_from_v4_raw(ip4),
        AF_INET6 => key_from_v6_raw(ip6),
        _ => return None,
    };
    Some((key, port_from_remote_port(port)))
}

#[inline(always)]
pub fn sock_ops(ctx: &SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return SOCK_OPS_OK;
    }
    let ops = ctx.ops;
    let (family, ip4, ip6, port) = remote!(ops);
    let Some((key, port)) = remote_key(family, ip4, ip6, port) else {
        return SOCK_OPS_OK;
    };
    let Some(found) = protected_at(key, port) else {
        return SOCK_OPS_OK;
    };
    // Also fixes the socket's cookie, which `msg_cookie` reads later. The
    // request-stream state (`HTTP_CONNS`) waits for a first message that
    // needs it: most connections never do, and socket storage costs an
    // allocation and a deferred free per connection.
    let mut cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
    // Answers some `redact` rule may need masked: the map with the
    // receive-side program too.
    // When that fails, the socket goes to PROTECTED_SOCKS without scanner
    // state, where senders whose rules redact are refused.
    if redact::wanted(found.dest) && redact::start(cookie) {
        if REDACT_SOCKS
            .update(&mut cookie, unsafe { &mut *ops }, BPF_ANY as u64)
            .is_ok()
        {
            return SOCK_OPS_OK;
        }
        redact::forget(cookie);
    }
    // A full map leaves the socket unchecked per send (it was allowed at
    // connect); closed sockets leave the map by themselves.
    let _ = PROTECTED_SOCKS.update(&mut cookie, unsafe { &mut *ops }, BPF_ANY as u64);
    SOCK_OPS_OK
}

/// The cookie of the socket a message is sent on: its id in events and the
/// key of its redaction state. sk_msg programs may not call the cookie
/// helper; `sock_ops` fixed the cookie when the socket entered the map, so
/// it is read from the socket itself. 0 (never a socket's) when unreadable.
/// Not inlined: its helper call stays out of the HTTP checker's frame.
#[inline(never)]
pub fn msg_cookie(ctx: &SkMsgContext) -> u64 {
    let sk = unsafe { (*ctx.msg).__bindgen_anon_3.sk };
    if sk.is_null() {
        return 0;
    }
    let tp = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
    if tp.is_null() {
        return 0;
    }
    // A BTF-typed pointer: a direct, fault-tolerant load (see identity.rs).
    unsafe {
        core::ptr::read_volatile(
            (tp as u64).wrapping_add(offsets().tcp_sock_cookie as u64) as *const u64
        )
    }
}

#[inline(always)]
pub fn sk_msg(ctx: &SkMsgContext) -> u32 {
    let (family, ip4, ip6, port) = remote!(ctx.msg);
    let Some((key, port)) = remote_key(family, ip4, ip6, port) else {
        return SK_PASS;
    };
    let Some(found) = protected_at(key, port) else {
        return SK_PASS;
    };
    // Protected, but no policy loaded: refuse.
    let Some(cfg) = config(found.slot) else {
        return SK_DROP;
    };
    let Some(info) = sender(cfg, found.dest, key, port) else {
        return SK_DROP;
    };
    let s = Sender {
        cfg,
        dest: found.dest,
        info,
    };
    if s.info.verdict.action == Action::Deny as u8 {
        s.report();
        return SK_DROP;
    }
    if s.info.verdict.action == Action::Audit as u8 {
        s.report();
    }
    if redact::on_send(ctx, &s) {
        return SK_DROP;
    }
    if !http::wanted(&s) {
        return SK_PASS;
    }
    http::check(ctx, &s)
}
