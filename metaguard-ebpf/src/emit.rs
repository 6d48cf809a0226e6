//! Sends decisions to the daemon through the `EVENTS` ring buffer. A full
//! buffer is counted in `LOST`, which the daemon reports as an event.
//!
//! Allow events do not wake the reader: a wakeup is an irq_work, which on a
//! virtual machine costs an inter-processor interrupt (microseconds) on the
//! decision's path. The daemon drains the buffer on a short timer instead,
//! and is woken at once for denials and audits (operators want them live,
//! and the daemon labels them from /proc while the process still runs) or
//! when the buffer is filling up.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_ringbuf_query},
};
use metaguard_common::{decide::Action, event::Event};

use crate::maps::{EVENTS, EVENTS_BYTES, LOST};

/// Wake the reader once a quarter of the buffer is waiting.
const WAKEUP_BACKLOG: u64 = EVENTS_BYTES as u64 / 4;

/// Reserves an event, lets `fill` write it, and submits it.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut Event)) {
    match EVENTS.reserve(0) {
        Some(mut entry) => {
            let ev = unsafe { &mut *entry.as_mut_ptr() };
            // Zero first: the reserved memory holds an older event's bytes.
            unsafe { core::ptr::write_bytes(ev as *mut Event, 0, 1) };
            ev.time_ns = unsafe { bpf_ktime_get_boot_ns() };
            fill(ev);
            let map = core::ptr::addr_of!(EVENTS) as *mut core::ffi::c_void;
            let backlog = unsafe { bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA as u64) };
            let urgent = ev.action != Action::Allow as u8 || backlog >= WAKEUP_BACKLOG;
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
