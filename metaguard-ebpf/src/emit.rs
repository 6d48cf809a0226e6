//! Sends decisions to the daemon through the `EVENTS` ring buffer. A full
//! buffer is counted in `LOST`, which the daemon reports as an event.
//!
//! Allow events do not wake the reader: a wakeup is an irq_work, which on a
//! virtual machine costs an inter-processor interrupt (microseconds) on the
//! decision's path. The daemon drains the buffer on a short timer instead,
//! and is woken for denials and audits (operators want them live, and the
//! daemon labels them from /proc while the process still runs) at most once
//! per CPU every `DENY_WAKEUP_NS`, so a storm of denials does not pay an
//! interrupt each; and whenever the buffer is filling up.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_ringbuf_query},
};
use metaguard_common::{
    decide::Action,
    event::{AggCount, AggKey, Event},
    maps::Config,
};

use crate::maps::{AGGREGATES, EVENTS, EVENTS_BYTES, LAST_WAKEUP, LOST};

/// Wake the reader once a quarter of the buffer is waiting.
const WAKEUP_BACKLOG: u64 = EVENTS_BYTES as u64 / 4;
/// Minimum gap between wakeups for denials, per CPU.
const DENY_WAKEUP_NS: u64 = 5_000_000;

/// The decision last made for `key` on this CPU, while its aggregation
/// window is open: repeats reuse it and are counted, not sent.
pub struct Window {
    slot: Option<*mut AggCount>,
    now: u64,
    /// The window is open: `last` holds its verdict.
    pub open: bool,
    /// Zeroed when not open (a plain value: the verifier rejects copies of
    /// partly uninitialised `Option`s).
    pub last: AggCount,
}

/// Looks `key` up in `AGGREGATES` (nothing when aggregation is off). The
/// coarse clock is enough for windows of a second and far cheaper than
/// reading the clock source on every decision.
#[inline(always)]
pub fn window(cfg: &Config, key: &AggKey) -> Window {
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let slot = if cfg.aggregate_ns != 0 {
        AGGREGATES.get_ptr_mut(key)
    } else {
        None
    };
    let mut w = Window {
        slot,
        now,
        open: false,
        last: AggCount::default(),
    };
    if let Some(c) = slot {
        let c = unsafe { *c };
        if c.created != 0 && now.wrapping_sub(c.window_start) < cfg.aggregate_ns {
            w.open = true;
            w.last = c;
        }
    }
    w
}

impl Window {
    /// Counts `verdict` as a repeat when the open window holds the same
    /// one; otherwise, when `send`, starts a window for it and sends it.
    #[inline(always)]
    pub fn record(
        &self,
        cfg: &Config,
        key: &AggKey,
        verdict: &AggCount,
        send: bool,
        fill: impl FnOnce(&mut Event),
    ) {
        if self.open && same_verdict(&self.last, verdict) {
            self.count_repeat();
        } else if send {
            self.report(cfg, key, verdict, fill);
        }
    }

    /// Counts one more repeat of the open window's decision.
    #[inline(always)]
    pub fn count_repeat(&self) {
        if let Some(c) = self.slot {
            unsafe { (*c).repeats += 1 };
        }
    }

    /// Starts a window for `verdict` and sends it as an event: the key's
    /// fields, the verdict, then what `fill` adds (names are read only here).
    #[inline(always)]
    pub fn report(
        &self,
        cfg: &Config,
        key: &AggKey,
        verdict: &AggCount,
        fill: impl FnOnce(&mut Event),
    ) {
        if cfg.aggregate_ns != 0 {
            match self.slot {
                Some(c) => unsafe {
                    // Another CPU may have created the entry: this CPU's
                    // count starts here.
                    if (*c).created == 0 {
                        (*c).created = self.now;
                    }
                    (*c).window_start = self.now;
                    (*c).rule = verdict.rule;
                    (*c).endpoint = verdict.endpoint;
                    (*c).action = verdict.action;
                    (*c).reason = verdict.reason;
                },
                None => {
                    let fresh = AggCount {
                        window_start: self.now,
                        created: self.now,
                        ..*verdict
                    };
                    // A full map evicts the oldest entry (its unreported
                    // repeats are lost); the event is what matters here.
                    let _ = AGGREGATES.insert(key, &fresh, 0);
                }
            }
        }
        emit_verdict(key, verdict, fill);
    }
}

/// Sends `verdict` for `key` as an event, with what `fill` adds.
#[inline(always)]
pub fn emit_verdict(key: &AggKey, verdict: &AggCount, fill: impl FnOnce(&mut Event)) {
    emit(|ev| {
        ev.set_key(key);
        ev.set_verdict(verdict);
        fill(ev);
    });
}

/// Reserves an event, lets `fill` write it, and submits it.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut Event)) {
    match EVENTS.reserve(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            // Zero first: the reserved memory holds an older event's bytes.
            unsafe { crate::mem::zero_words(ev as *mut Event) };
            let now = unsafe { bpf_ktime_get_boot_ns() };
            ev.time_ns = now;
            fill(ev);
            let map = core::ptr::addr_of!(EVENTS) as *mut core::ffi::c_void;
            let backlog = unsafe { bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA as u64) };
            let urgent = backlog >= WAKEUP_BACKLOG
                || (ev.action != Action::Allow as u8 && deny_wakeup_due(now));
            let flags = if urgent {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(flags as u64);
        }
        None => {
            if let Some(n) = LOST.get_ptr_mut(0) {
                unsafe { *n += 1 };
            }
        }
    }
}

/// True at most once per `DENY_WAKEUP_NS` on this CPU.
#[inline(always)]
fn deny_wakeup_due(now: u64) -> bool {
    match LAST_WAKEUP.get_ptr_mut(0) {
        Some(last) => unsafe {
            if now.wrapping_sub(*last) >= DENY_WAKEUP_NS {
                *last = now;
                true
            } else {
                false
            }
        },
        None => true,
    }
}

/// Whether two recorded verdicts are the same decision.
#[inline(always)]
pub fn same_verdict(a: &AggCount, b: &AggCount) -> bool {
    a.action == b.action && a.reason == b.reason && a.rule == b.rule && a.endpoint == b.endpoint
}
