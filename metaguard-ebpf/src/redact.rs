//! Secret redaction in answers (`redact` rules).
//!
//! Connections to destinations some `redact` rule covers go, when
//! established, into `REDACT_SOCKS` instead of `PROTECTED_SOCKS`; that map
//! carries the same `sk_msg` program (per-send sender and HTTP checks) plus
//! an `sk_skb` stream verdict program that reads every received segment
//! before the process can: the shared [`Scanner`] follows the response
//! stream (state per connection in `REDACT_CONNS`) and secret bytes are
//! overwritten in place (`bpf_skb_store_bytes`), so lengths and framing stay
//! as the service sent them.
//!
//! Which shapes are masked is decided per sender, in the `sk_msg` program
//! (process context, identity from the kernel): the union of the `redact`
//! lists of the rules the sender satisfies for the destination. It only
//! grows over a connection's life; before any send everything is masked.
use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    bindings::{__sk_buff, sk_action},
    btf_maps::{Array, LruHashMap, SockHash},
    helpers::generated::{
        bpf_get_socket_cookie, bpf_loop, bpf_skb_load_bytes, bpf_skb_pull_data, bpf_skb_store_bytes,
    },
    macros::btf_map,
    programs::{SkBuffContext, SkMsgContext},
};
use metaguard_common::{
    decide::{Action, Reason},
    event::{AggCount, AggKey, Event, Hook, EVENT_REDACT},
    maps::{Protected, MAX_PROTECTED_SOCKS},
    redact::{RedactTable, Scanner, FILLER, RUN, SHAPES_ALL, SHAPE_CUT},
    ruleset::{RuleSet, MAX_RULES, RULE_WORDS},
};

use crate::{
    emit::{emit, emit_verdict, window},
    guard::Sender,
    maps::active_slot,
};

/// Connections whose answers are scanned, by socket cookie.
pub const MAX_REDACT_CONNS: u32 = 16384;

/// Per-connection state: the scanner and who last sent (for events).
#[repr(C)]
pub struct RedactConn {
    pub scanner: Scanner,
    pub agg: AggKey,
    pub comm: [u8; 16],
    pub rule: u16,
    pub endpoint: u16,
    /// Sends judged so far (0: the mask is still "everything").
    pub senders: u32,
    /// Input passed unscanned while the mask was empty.
    pub skipped: u32,
    /// Whether the last sender was guarded, and its rules that redact:
    /// with its `agg`, what a repeat send by the same sender is known by.
    pub guarded: u32,
    pub rules: RuleSet,
    /// Where the scan of the segment being read stands.
    pub cursor: Cursor,
}

/// The scan loop's position, kept in the map value rather than on the
/// stack: the verifier tracks stack values from one `bpf_loop` call to the
/// next, and walks the whole scan again for each set it sees; map values it
/// does not track, so every call starts from the same state.
#[repr(C)]
pub struct Cursor {
    /// Next byte to read.
    pub pos: u32,
    /// Offset of the block buffer in the skb, and how many bytes it holds
    /// (0: none).
    pub base: u32,
    pub n: u32,
    /// A byte of the block was masked: it must be written back.
    pub dirty: u32,
    pub failed: u32,
    /// The segment was made linear and private (before the first write).
    pub pulled: u32,
}

/// Established TCP sockets whose answers may need redacting; the sk_msg
/// program and the `redact_verdict` sk_skb program are attached to it.
#[btf_map]
pub static REDACT_SOCKS: SockHash<u64, { MAX_PROTECTED_SOCKS as usize }> = SockHash::new();

/// Scanner state by socket cookie. An evicted entry fails closed: the
/// connection's further input is masked.
#[btf_map]
pub static REDACT_CONNS: LruHashMap<u64, RedactConn, { MAX_REDACT_CONNS as usize }> =
    LruHashMap::new();

/// `SHAPE_*` bits each rule redacts, by rule index.
#[btf_map]
pub static REDACT_RULES: Array<u32, MAX_RULES> = Array::new();

/// The rules that carry a `redact` list.
#[btf_map]
pub static REDACT_ANY: Array<RuleSet, 1> = Array::new();

/// JSON keys of the shapes (built-in and the policy's custom ones).
#[btf_map]
pub static REDACT_TABLE: Array<RedactTable, 1> = Array::new();

/// Whether connections to `dest` go to `REDACT_SOCKS`.
#[inline(always)]
pub fn wanted(dest: &Protected) -> bool {
    match REDACT_ANY.get(0) {
        Some(any) => !dest.rules.and(any).is_empty(),
        None => false,
    }
}

/// Starts a connection's scanner (sock_ops, connection established): until
/// a sender is judged, every shape is masked.
#[inline(always)]
pub fn start(cookie: u64) -> bool {
    // Zeroed in words, then the fields that start non-zero: built as one
    // struct literal, its zero fields became byte-at-a-time memset calls.
    let mut conn = MaybeUninit::<RedactConn>::uninit();
    let c = unsafe {
        crate::mem::zero_words(conn.as_mut_ptr());
        conn.assume_init_mut()
    };
    c.scanner.init_zeroed(SHAPES_ALL);
    c.rule = u16::MAX;
    c.endpoint = u16::MAX;
    REDACT_CONNS.insert(&cookie, c, 0).is_ok()
}

/// Drops a connection's scanner state (it could not join `REDACT_SOCKS`).
#[inline(always)]
pub fn forget(cookie: u64) {
    let _ = REDACT_CONNS.remove(&cookie);
}

/// The shapes the sender's rules redact (union over its rules).
#[inline(always)]
fn shapes_for(rules: &RuleSet) -> u32 {
    let mut bits = 0u32;
    let mut w = 0;
    while w < RULE_WORDS {
        let mut word = rules.words[w];
        let mut k = 0;
        while k < 64 && word != 0 {
            let i = word.trailing_zeros() as u32;
            word &= word - 1;
            if let Some(b) = REDACT_RULES.get(w as u32 * 64 + i) {
                bits |= *b;
            }
            k += 1;
        }
        w += 1;
    }
    bits
}

/// Per-send part (sk_msg, after the sender check passed): sets what the
/// connection's answers must have masked for this sender. True when the
/// send must be refused: the connection cannot redact what this sender's
/// rules ask for, or it was cut.
#[inline(never)]
pub fn on_send(ctx: &SkMsgContext, s: &Sender) -> bool {
    let Some(any) = REDACT_ANY.get(0) else {
        return false;
    };
    if any.is_empty() {
        // No rule redacts: nothing to set (connections made under an
        // earlier policy keep what they had).
        return false;
    }
    let rules = s.info.allowed.and(any);
    let guarded = s.guarded();
    let need = || {
        if guarded && !rules.is_empty() {
            shapes_for(&rules)
        } else {
            0
        }
    };
    // No readable cookie (0 is never a socket's): not a connection that
    // can redact.
    let cookie = crate::sockets::msg_cookie(ctx);
    let Some(c) = REDACT_CONNS.get_ptr_mut(&cookie) else {
        if need() != 0 {
            refuse(s, cookie, Reason::RedactUnavailable);
            return true;
        }
        return false;
    };
    let c = unsafe { &mut *c };
    if c.scanner.is_cut() {
        refuse(s, cookie, Reason::RedactCut);
        return true;
    }
    if c.senders != 0
        && c.guarded == guarded as u32
        && crate::mem::same_words(&c.rules, &rules)
        && crate::mem::same_words(&c.agg, &s.info.agg)
    {
        // The last sender again, under the same policy: its shapes are in
        // the mask already, and the labels are its own.
        return false;
    }
    let need = need();
    if c.senders == 0 {
        c.scanner.mask = need;
    } else if need & !c.scanner.mask != 0 {
        if c.skipped != 0 {
            // Input went by unscanned: where it stands is unknown.
            c.scanner.cut();
        }
        c.scanner.mask |= need;
    }
    c.senders = c.senders.saturating_add(1);
    c.guarded = guarded as u32;
    c.rules = rules;
    c.agg = s.info.agg;
    c.rule = s.info.verdict.rule;
    c.endpoint = s.info.verdict.endpoint;
    crate::mem::current_comm(&mut c.comm);
    false
}

#[inline(never)]
fn refuse(s: &Sender, cookie: u64, reason: Reason) {
    emit(|ev| {
        ev.set_key(&s.info.agg);
        ev.rule = s.info.verdict.rule;
        ev.endpoint = s.info.verdict.endpoint;
        ev.action = Action::Deny as u8;
        ev.reason = reason as u8;
        ev.cookie = cookie;
        s.fill(ev);
    });
}

/// What the scan loop needs; lives on the program's stack (the position
/// is in the connection's [`Cursor`]).
#[repr(C)]
struct Scan {
    skb: *mut __sk_buff,
    conn: *mut RedactConn,
    table: *const RedactTable,
    len: u32,
    /// Holds bytes only once the cursor's `n` is set (left unwritten at the
    /// start: a zeroed block costs a byte-at-a-time memset).
    buf: MaybeUninit<[u8; RUN]>,
}

/// Writes the block back when a byte of it was masked.
#[inline(always)]
fn flush(s: &mut Scan, c: &mut Cursor) {
    if c.dirty == 0 {
        return;
    }
    c.dirty = 0;
    // Checked on an opaque copy: the verifier must see 1 <= n <= RUN.
    let n = core::hint::black_box(c.n);
    if n == 0 || n > RUN as u32 {
        return;
    }
    if c.pulled == 0 {
        // One pull of the whole segment before its first write: masking
        // then does not reallocate the head for each block it writes, and
        // the block reads after it are plain copies. Answers with nothing
        // to mask skip it (it is most of what scanning them costs). A
        // failure only leaves the slower path.
        c.pulled = 1;
        let _ = unsafe { bpf_skb_pull_data(s.skb, s.len) };
    }
    let r = unsafe { bpf_skb_store_bytes(s.skb, c.base, s.buf.as_ptr() as *const c_void, n, 0) };
    if r != 0 {
        c.failed = 1;
    }
}

/// `bpf_loop` callback: the byte at `pos` through [`Scanner::step`] (not at
/// a block's start), then as far as [`Scanner::run`] goes in its block (a
/// few instructions per byte); returns 1 at the end of the skb.
#[inline(never)]
extern "C" fn scan_step(_i: u64, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let conn = unsafe { &mut *s.conn };
    let c = &mut conn.cursor;
    let pos = c.pos;
    if pos >= s.len {
        return 1;
    }
    let base = pos & !(RUN as u32 - 1);
    let new_block = c.n == 0 || base != c.base;
    if new_block {
        flush(s, c);
        let rest = s.len - base;
        let n = if rest > RUN as u32 { RUN as u32 } else { rest };
        // Checked again on an opaque copy: LLVM would otherwise fold the
        // check into the one above, and the verifier must see n >= 1.
        let n = core::hint::black_box(n);
        if n == 0 || n > RUN as u32 {
            c.failed = 1;
            return 1;
        }
        let r = unsafe {
            bpf_skb_load_bytes(
                s.skb as *const c_void,
                base,
                s.buf.as_mut_ptr() as *mut c_void,
                n,
            )
        };
        if r != 0 {
            c.failed = 1;
            return 1;
        }
        c.base = base;
        c.n = n;
    }
    let j = (pos - base) as usize & (RUN - 1);
    let n = c.n as usize;
    let table = unsafe { &*s.table };
    // `n` is set: the block was loaded.
    let buf = unsafe { s.buf.assume_init_mut() };
    // A block's first byte usually continues what the previous block was
    // in: the run takes it, and `step` comes only where the run stops (the
    // next call, in the same block).
    let mut dirty = false;
    let mut from = j;
    if !new_block {
        if conn.scanner.step(buf[j], table) {
            buf[j] = FILLER;
            dirty = true;
        }
        from = j + 1;
    }
    let (k, masked) = conn.scanner.run(buf, from, n, table);
    let c = &mut conn.cursor;
    if dirty || masked {
        c.dirty = 1;
    }
    c.pos = base + k as u32;
    0
}

/// The stream verdict: scans and masks one received skb. Dropping is the
/// answer to anything that cannot be scanned (no state, a failed write):
/// the bytes never reach the process.
#[inline(always)]
pub fn verdict(ctx: &SkBuffContext) -> u32 {
    let skb = ctx.skb.skb;
    let cookie = unsafe { bpf_get_socket_cookie(skb as *mut c_void) };
    let conn = match REDACT_CONNS.get_ptr_mut(&cookie) {
        Some(c) => c,
        None => {
            // Evicted (or never started): the stream position is unknown.
            if !start(cookie) {
                return sk_action::SK_DROP;
            }
            match REDACT_CONNS.get_ptr_mut(&cookie) {
                Some(c) => {
                    unsafe { (*c).scanner.cut() };
                    c
                }
                None => return sk_action::SK_DROP,
            }
        }
    };
    let c = unsafe { &mut *conn };
    if c.scanner.mask == 0 && !c.scanner.is_cut() {
        // Every sender so far is entitled to every answer.
        c.skipped = 1;
        return sk_action::SK_PASS;
    }
    let Some(table) = REDACT_TABLE.get(0) else {
        return sk_action::SK_DROP;
    };
    let len = unsafe { (*skb).len };
    // An opaque zero: zero constants in adjacent fields become a memset,
    // a byte-at-a-time call in eBPF.
    let zero = core::hint::black_box(0);
    c.cursor.pos = zero;
    c.cursor.base = zero;
    c.cursor.n = zero;
    c.cursor.dirty = zero;
    c.cursor.failed = zero;
    c.cursor.pulled = zero;
    let mut scan = Scan {
        skb,
        conn,
        table,
        len,
        buf: MaybeUninit::uninit(),
    };
    // At most one call per byte, and one more per block (a run that
    // cannot take a block's first byte); most bytes go by in runs.
    unsafe {
        bpf_loop(
            len + len / RUN as u32 + 1,
            scan_step as *mut c_void,
            &mut scan as *mut Scan as *mut c_void,
            0,
        )
    };
    let cur = unsafe { &mut (*conn).cursor };
    flush(&mut scan, cur);
    if cur.pos < len {
        // Bytes left unscanned: never passed.
        cur.failed = 1;
    }
    let failed = cur.failed != 0;
    if failed {
        c.scanner.cut();
    }
    let (shapes, _) = c.scanner.take_report();
    if shapes != 0 {
        report(c, cookie, shapes);
    }
    if failed {
        return sk_action::SK_DROP;
    }
    sk_action::SK_PASS
}

/// Reports the shapes masked in the answers just finished. Repeats within
/// the aggregation window (same sender, destination and shapes) are
/// counted, like repeated decisions, instead of sent; a cut is always sent:
/// the daemon resets the connection it names.
#[inline(never)]
fn report(c: &RedactConn, cookie: u64, shapes: u32) {
    let cut = shapes & SHAPE_CUT != 0;
    let mut key = c.agg;
    key.hook = Hook::Response as u8;
    key.flags |= EVENT_REDACT;
    key.redacted = shapes as u16;
    let (action, reason) = if cut {
        (Action::Deny, Reason::RedactCut)
    } else {
        (Action::Allow, Reason::Redacted)
    };
    let verdict = AggCount {
        rule: c.rule,
        endpoint: c.endpoint,
        action: action as u8,
        reason: reason as u8,
        ..Default::default()
    };
    let fill = |ev: &mut Event| {
        ev.cookie = cookie;
        ev.comm = c.comm;
    };
    match crate::guard::config(active_slot()) {
        Some(cfg) if !cut => window(cfg, &key).record(cfg, &key, &verdict, true, fill),
        _ => emit_verdict(&key, &verdict, fill),
    }
}
