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
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_ringbuf_query},
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

/// Reports the decision `key`: as an event (the key's fields, then what
/// `fill` adds), or, when the same decision was sent less than the policy's
/// aggregation window ago on this CPU, as one more repeat in `AGGREGATES`.
/// `fill` runs only for events, so names are read only then.
#[inline(always)]
pub fn report(cfg: &Config, key: &AggKey, fill: impl FnOnce(&mut Event)) {
    if cfg.aggregate_ns != 0 && counted_as_repeat(key, cfg.aggregate_ns) {
        return;
    }
    emit(|ev| {
        ev.set_key(key);
        fill(ev);
    });
}

/// True when `key` was sent within `window` ns (and counts this repeat);
/// otherwise starts a new window and the caller sends the event.
#[inline(always)]
fn counted_as_repeat(key: &AggKey, window: u64) -> bool {
    let now = unsafe { bpf_ktime_get_boot_ns() };
    match AGGREGATES.get_ptr_mut(key) {
        Some(c) => unsafe {
            if now.wrapping_sub((*c).window_start) < window {
                (*c).repeats += 1;
                true
            } else {
                // Another CPU may have created the entry: this CPU's count
                // starts here.
                if (*c).created == 0 {
                    (*c).created = now;
                }
                (*c).window_start = now;
                false
            }
        },
        None => {
            let fresh = AggCount {
                window_start: now,
                created: now,
                repeats: 0,
            };
            // A full map evicts the oldest entry (its unreported repeats are
            // lost); sending the event is what matters here.
            let _ = AGGREGATES.insert(key, &fresh, 0);
            false
        }
    }
}

/// Reserves an event, lets `fill` write it, and submits it.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut Event)) {
    match EVENTS.reserve(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            // Zero first: the reserved memory holds an older event's bytes.
            unsafe { core::ptr::write_bytes(ev as *mut Event, 0, 1) };
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
