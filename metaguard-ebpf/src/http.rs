//! Per-request checks on connections to protected endpoints (sk_msg): each
//! HTTP/1.x request a sender writes is parsed with the shared checker
//! ([`HttpParser`]: common bytes through its fast path, the rest one at a
//! time, in `bpf_loop` steps), matched against the
//! `http` entries of the sender's rules, and passed or dropped before any of
//! its bytes leave the host.
//!
//! Message boundaries: a request whose header block is not complete yet is
//! corked (`bpf_msg_cork_bytes`): the kernel holds the bytes and runs this
//! again on everything gathered, so a request split over many sends is
//! judged whole. An allowed request passes exactly its own bytes
//! (`bpf_msg_apply_bytes`): the rest of the message, a pipelined request, is
//! judged next. A body sent separately passes by the count of
//! Content-Length, kept per connection in `HTTP_CONNS`.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::{sk_msg_md, BPF_SK_STORAGE_GET_F_CREATE},
    helpers::generated::{
        bpf_loop, bpf_msg_apply_bytes, bpf_msg_cork_bytes, bpf_msg_pull_data, bpf_sk_storage_get,
    },
    programs::SkMsgContext,
};
use metaguard_common::{
    decide::{self, Action, Reason},
    event::{AggCount, Event, EVENT_REQUEST, IMDS_V1, IMDS_V2, NONE_U16},
    http::{HeaderTable, HttpKey, HttpParser, Reject, Step, MAX_HEADER_BLOCK, TOKEN_ENTRY},
    maps::{slot_scope, ConnState, MAX_HTTP_SCOPES, PROTECTED_INSPECT},
    ruleset::RuleSet,
};

use crate::{
    emit::emit,
    guard::Sender,
    maps::{HTTP_CONNS, HTTP_RULES, HTTP_STATE, HTTP_TABLE},
};

/// Bytes of a message the checker reads: a header block is at most
/// `MAX_HEADER_BLOCK`; a power of two for masking.
const HTTP_WINDOW: u32 = 8192;
const _: () = assert!(HTTP_WINDOW as usize >= MAX_HEADER_BLOCK as usize + 1);

pub const PASS: u32 = aya_ebpf::bindings::sk_action::SK_PASS;
pub const DROP: u32 = aya_ebpf::bindings::sk_action::SK_DROP;

/// Per-CPU scratch of one message's check (too big for the stack).
#[repr(C)]
pub struct Scratch {
    pub parser: HttpParser,
    pub key: HttpKey,
    /// Rules with an `http` entry matching the request, gathered by the
    /// lookup callbacks.
    pub rules: RuleSet,
    /// Next byte to feed. Kept here, not on the stack: the verifier tracks
    /// stack values exactly, and a counter it can follow makes every loop
    /// step a new state to explore.
    pub pos: u32,
    /// How many bytes to feed.
    pub n: u32,
}

/// Bytes the fast path may take in one loop step before the full step runs.
const FAST_RUN: u32 = 16;

/// What the loop callback needs; lives on the program's stack.
#[repr(C)]
struct Feed {
    data: usize,
    data_end: usize,
    /// The scratch entry: the parser, and the cursor (`pos`, `n`).
    scratch: *mut Scratch,
    table: *const HeaderTable,
    /// 0: not refused; else the `Reject` number.
    reject: u32,
    complete: u32,
}

/// `bpf_loop` callback: feeds up to `FAST_RUN` common bytes through the
/// parser's fast path, then at most one byte through the full step (every
/// step consumes a byte, so `n` steps always suffice); returns 1 to stop
/// (end of data, header block complete, or refused), 0 to go on.
#[inline(never)]
extern "C" fn feed_bytes(_i: u64, ctx: *mut c_void) -> i64 {
    let f = unsafe { &mut *(ctx as *mut Feed) };
    let sc = unsafe { &mut *f.scratch };
    let (parser, pos, n) = (&mut sc.parser, &mut sc.pos, sc.n);
    // 256: no byte left for the full step.
    let mut full: u32 = 256;
    let mut k = 0;
    while k < FAST_RUN {
        if *pos >= n {
            return 1;
        }
        let p = f.data + (*pos as usize & (HTTP_WINDOW as usize - 1));
        if p + 1 > f.data_end {
            return 1;
        }
        let b = unsafe { core::ptr::read_volatile(p as *const u8) };
        *pos += 1;
        if !parser.feed_fast(b) {
            full = b as u32;
            break;
        }
        k += 1;
    }
    if full > 255 {
        return 0;
    }
    match parser.feed(full as u8, unsafe { &*f.table }) {
        Step::Reject(r) => {
            f.reject = r as u32;
            1
        }
        Step::Complete => {
            f.complete = 1;
            1
        }
        _ => 0,
    }
}

/// What the prefix lookups need.
#[repr(C)]
struct Prefixes {
    scratch: *mut Scratch,
    scope: u32,
}

/// `bpf_loop` callback: looks up the path cut at boundary `i`.
#[inline(never)]
extern "C" fn lookup_prefix(i: u64, ctx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut Prefixes) };
    let sc = unsafe { &mut *c.scratch };
    if !sc.parser.fill_prefix(c.scope, i as u8, &mut sc.key) {
        return 1;
    }
    if let Some(v) = unsafe { HTTP_RULES.get(&sc.key) } {
        sc.rules = sc.rules.or(&v.rules);
    }
    0
}

/// Whether requests on this connection are checked or reported: the sender
/// has only rules with `http` lists here, or the endpoint inspects requests
/// (IMDSv2 required, or AWS endpoints classifying IMDSv1).
#[inline(always)]
pub fn wanted(s: &Sender) -> bool {
    let any_request = decide::any_request_rules(s.cfg, &s.info.allowed);
    (s.guarded() && any_request.first().is_none())
        || s.dest.flags & (PROTECTED_INSPECT | metaguard_common::maps::PROTECTED_IMDSV2) != 0
}

/// The verdict on the message (`PASS` / `DROP`). Not inlined: a frame of
/// its own, beside the sender decision's.
#[inline(never)]
pub fn check(ctx: &SkMsgContext, s: &Sender) -> u32 {
    let msg: *mut sk_msg_md = ctx.msg;
    let size = ctx.size();
    if size == 0 {
        return PASS;
    }
    // The connection's state, created zeroed on its first message.
    let st = unsafe {
        let sk = (*msg).__bindgen_anon_3.sk;
        if sk.is_null() {
            return DROP;
        }
        bpf_sk_storage_get(
            core::ptr::addr_of!(HTTP_CONNS) as *mut c_void,
            sk.cast(),
            core::ptr::null_mut(),
            BPF_SK_STORAGE_GET_F_CREATE as u64,
        ) as *mut ConnState
    };
    if st.is_null() {
        return DROP;
    }
    let cookie = crate::sockets::msg_cookie(ctx);
    let rest_of_message = unsafe { core::mem::replace(&mut (*st).rest_of_message, 0) } != 0;
    // Body bytes of an allowed request pass by count.
    {
        let left = unsafe { (*st).body_remaining };
        if left > 0 {
            if size <= left {
                unsafe { (*st).body_remaining = left - size };
            } else {
                unsafe {
                    (*st).body_remaining = 0;
                    (*st).rest_of_message = 1;
                    bpf_msg_apply_bytes(msg, left);
                }
            }
            return PASS;
        }
    }
    let n = if size < HTTP_WINDOW {
        size
    } else {
        HTTP_WINDOW
    };
    if unsafe { bpf_msg_pull_data(msg, 0, n, 0) } != 0 {
        // Could not make the bytes readable: refuse rather than pass them.
        return refuse(s, cookie, None, Reject::BadState as u8);
    }
    let (Some(sc), Some(table)) = (HTTP_STATE.get_ptr_mut(0), HTTP_TABLE.get(s.cfg.slot)) else {
        return DROP;
    };
    let parser = unsafe { core::ptr::addr_of_mut!((*sc).parser) };
    unsafe { (*parser).restart() };
    unsafe {
        (*sc).pos = 0;
        (*sc).n = n;
    }
    let mut f = Feed {
        data: ctx.data(),
        data_end: ctx.data_end(),
        scratch: sc,
        table,
        reject: 0,
        complete: 0,
    };
    unsafe {
        bpf_loop(
            n,
            feed_bytes as *mut c_void,
            &mut f as *mut Feed as *mut c_void,
            0,
        )
    };
    let parser = unsafe { &*parser };
    if f.reject != 0 {
        return refuse(s, cookie, Some(parser), f.reject as u8);
    }
    if f.complete == 0 {
        if rest_of_message {
            // A request cut off after another one in the same send: the
            // kernel cannot hold back just this part (corking here loses
            // bytes), so it is refused. Clients write a request whole or
            // start it at the beginning of a send.
            return refuse(s, cookie, Some(parser), Reject::SplitPipeline as u8);
        }
        // Wait for at least one more byte, then judge everything gathered.
        // (The parser refuses header blocks over MAX_HEADER_BLOCK itself.)
        unsafe { bpf_msg_cork_bytes(msg, size + 1) };
        return PASS;
    }
    let seen = parser.headers_seen();
    let token = seen & (1 << TOKEN_ENTRY) != 0;
    matching_entries(s.cfg, sc, seen);
    let http_allowed = unsafe { &(*sc).rules };
    let v = decide::http_request(
        s.cfg,
        s.dest,
        s.guarded(),
        &s.info.allowed,
        http_allowed,
        token,
    );
    let o = Outcome {
        cookie,
        verdict: AggCount {
            rule: v.rule.unwrap_or(NONE_U16),
            endpoint: s.dest.endpoint as u16,
            action: v.action as u8,
            reason: v.reason as u8,
            ..Default::default()
        },
        check: 0,
    };
    report(s, &o, Some(parser));
    if v.action == Action::Deny {
        return DROP;
    }
    let request = parser.header_block_len() as u32 + parser.content_length();
    if size > request {
        // A pipelined request follows: judged on its own when the kernel
        // runs this again on the rest of the message.
        unsafe {
            (*st).rest_of_message = 1;
            bpf_msg_apply_bytes(msg, request);
        }
    } else if size < request {
        unsafe { (*st).body_remaining = request - size };
    }
    PASS
}

/// What the scope lookups need.
#[repr(C)]
struct Scopes {
    cfg: *const metaguard_common::maps::Config,
    scratch: *mut Scratch,
    seen: u32,
}

/// `bpf_loop` callback: the exact key, then (when the policy has wildcards)
/// every prefix, in scope `i` if the request carries its required headers.
#[inline(never)]
extern "C" fn lookup_scope(i: u64, ctx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut Scopes) };
    let cfg = unsafe { &*c.cfg };
    let i = i as usize & (MAX_HTTP_SCOPES - 1);
    if i as u32 >= cfg.http_scope_count {
        return 1;
    }
    let scope = cfg.http_scopes[i];
    if scope as u32 & !c.seen != 0 {
        return 0;
    }
    // Keys of the decision's slot only.
    let scope = slot_scope(cfg.slot, scope as u32);
    let sc = unsafe { &mut *c.scratch };
    sc.parser.fill_exact(scope, &mut sc.key);
    if let Some(v) = unsafe { HTTP_RULES.get(&sc.key) } {
        sc.rules = sc.rules.or(&v.rules);
    }
    if cfg.http_wildcards != 0 {
        let mut p = Prefixes {
            scratch: c.scratch,
            scope,
        };
        unsafe {
            bpf_loop(
                metaguard_common::http::MAX_DEPTH as u32,
                lookup_prefix as *mut c_void,
                &mut p as *mut Prefixes as *mut c_void,
                0,
            )
        };
    }
    0
}

/// Rules with an `http` entry matching the request (left in `sc.rules`).
#[inline(never)]
fn matching_entries(cfg: &metaguard_common::maps::Config, sc: *mut Scratch, seen: u16) {
    unsafe { (*sc).rules = RuleSet::EMPTY };
    let mut c = Scopes {
        cfg,
        scratch: sc,
        seen: seen as u32,
    };
    unsafe {
        bpf_loop(
            MAX_HTTP_SCOPES as u32,
            lookup_scope as *mut c_void,
            &mut c as *mut Scopes as *mut c_void,
            0,
        )
    };
}

/// Whether the checker's refusals block: the sender is guarded and either
/// every rule letting it here lists requests, or the endpoint requires
/// IMDSv2. Otherwise requests are only classified and reported (a rule
/// without `http` allows any bytes, as at connect).
#[inline(always)]
pub fn enforced(s: &Sender) -> bool {
    let any_request = decide::any_request_rules(s.cfg, &s.info.allowed);
    s.guarded()
        && (any_request.first().is_none()
            || s.dest.flags & metaguard_common::maps::PROTECTED_IMDSV2 != 0)
}

/// A request the checker refused: reported, dropped when enforced and not
/// audited.
#[inline(never)]
fn refuse(s: &Sender, cookie: u64, parser: Option<&HttpParser>, check: u8) -> u32 {
    let action = if enforced(s) {
        decide::refusal(s.cfg, s.dest)
    } else {
        Action::Allow
    };
    let o = Outcome {
        cookie,
        verdict: AggCount {
            rule: NONE_U16,
            endpoint: s.dest.endpoint as u16,
            action: action as u8,
            reason: Reason::HttpRejected as u8,
            ..Default::default()
        },
        check,
    };
    report(s, &o, parser);
    if action == Action::Deny {
        DROP
    } else {
        PASS
    }
}

/// A request's outcome, for its event.
struct Outcome {
    cookie: u64,
    verdict: AggCount,
    /// `Reject` number when the checker refused the request.
    check: u8,
}

/// One event per request: method and canonical target, never header values.
#[inline(never)]
fn report(s: &Sender, o: &Outcome, parser: Option<&HttpParser>) {
    let (cookie, verdict, check) = (o.cookie, &o.verdict, o.check);
    emit(|ev: &mut Event| {
        ev.set_key(&s.info.agg);
        ev.set_verdict(verdict);
        s.fill(ev);
        ev.flags |= EVENT_REQUEST;
        ev.cookie = cookie;
        ev.http_check = check;
        if let Some(p) = parser {
            let (method, method_len, path, path_len) = p.event_fields();
            ev.method = *method;
            ev.method_len = method_len;
            ev.path = *path;
            ev.path_len = path_len;
            if s.dest.flags & PROTECTED_INSPECT != 0 && p.is_complete() {
                ev.imds = if p.headers_seen() & (1 << TOKEN_ENTRY) != 0 {
                    IMDS_V2
                } else {
                    IMDS_V1
                };
            }
        }
    });
}
