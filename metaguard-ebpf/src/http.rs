//! Prototype: the shared HTTP request checker run over what a sender writes
//! to a protected TCP socket. Up to `HTTP_WINDOW` bytes of each message are
//! made linear with `bpf_msg_pull_data` and fed to [`HttpParser`] one byte at
//! a time from a `bpf_loop` callback; a rejected request drops the message.
//!
//! Limits of this slice: the parser state is per-CPU scratch, reset for each
//! message, so a request must arrive in one send (a request split over
//! several sends, or a body sent separately, is parsed from the start and
//! refused); no rule matching yet, only the checker's own rejections.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::sk_msg_md,
    helpers::generated::{bpf_loop, bpf_msg_pull_data},
    programs::SkMsgContext,
};
use metaguard_common::http::{HeaderTable, HttpParser, Step};

use crate::maps::{HTTP_STATE, HTTP_TABLE};

/// Bytes of a message the checker reads; a power of two for masking.
pub const HTTP_WINDOW: u32 = 4096;

/// What the loop callback needs; lives on the program's stack.
#[repr(C)]
struct Feed {
    data: usize,
    data_end: usize,
    parser: *mut HttpParser,
    table: *const HeaderTable,
    /// 0: not refused; else the `Reject` number.
    reject: u32,
}

/// `bpf_loop` callback: feeds byte `i`; returns 1 to stop (end of data,
/// header block complete, or refused), 0 to go on.
#[inline(never)]
extern "C" fn feed_byte(i: u64, ctx: *mut c_void) -> i64 {
    let f = unsafe { &mut *(ctx as *mut Feed) };
    let p = f.data + (i as usize & (HTTP_WINDOW as usize - 1));
    if p + 1 > f.data_end {
        return 1;
    }
    let b = unsafe { core::ptr::read_volatile(p as *const u8) };
    match unsafe { (*f.parser).feed(b, &*f.table) } {
        Step::Reject(r) => {
            f.reject = r as u32;
            1
        }
        Step::Complete => 1,
        _ => 0,
    }
}

/// The checker's verdict on the message: `Some(reject)` when refused.
#[inline(always)]
pub fn check(ctx: &SkMsgContext) -> Option<u32> {
    let msg: *mut sk_msg_md = ctx.msg;
    let size = ctx.size();
    let n = if size < HTTP_WINDOW {
        size
    } else {
        HTTP_WINDOW
    };
    if n == 0 {
        return None;
    }
    if unsafe { bpf_msg_pull_data(msg, 0, n, 0) } != 0 {
        // Could not linearise: refuse rather than pass unchecked bytes.
        return Some(metaguard_common::http::Reject::BadState as u32);
    }
    let parser = HTTP_STATE.get_ptr_mut(0)?;
    let Some(table) = HTTP_TABLE.get(0) else {
        return Some(metaguard_common::http::Reject::BadState as u32);
    };
    unsafe { core::ptr::write_bytes(parser, 0, 1) };
    let mut f = Feed {
        data: ctx.data(),
        data_end: ctx.data_end(),
        parser,
        table,
        reject: 0,
    };
    unsafe {
        bpf_loop(
            n,
            feed_byte as *mut c_void,
            &mut f as *mut Feed as *mut c_void,
            0,
        )
    };
    (f.reject != 0).then_some(f.reject)
}
