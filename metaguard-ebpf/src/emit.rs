//! Sends decisions to the daemon through the `EVENTS` ring buffer. A full
//! buffer is counted in `LOST`, which the daemon reports as an event.
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use metaguard_common::event::Event;

use crate::maps::{EVENTS, LOST};

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
            entry.submit(0);
        }
        None => {
            if let Some(n) = LOST.get_ptr_mut(0) {
                unsafe { *n += 1 };
            }
        }
    }
}
