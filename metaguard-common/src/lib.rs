//! Types and decision logic shared by metaguard's kernel programs and its
//! daemon. Everything here is `no_std`, allocation-free and runs unchanged in
//! the eBPF programs and in host unit tests.
//!
//! - [`addr`]: how destinations are keyed (IPv4 as IPv4-mapped IPv6).
//! - [`ruleset`]: the bitset of allow rules that every lookup returns.
//! - [`maps`]: key and value layouts of the maps the daemon fills.
//! - [`decide`]: the verdict from what the lookups found.
//! - [`event`]: the record the kernel sends for each decision.
//! - [`offsets`]: kernel struct offsets the daemon reads from BTF.
//! - [`http`]: the HTTP/1.x request checker and its pattern map key.
//! - [`redact`]: the response scanner that masks secrets in metadata answers.
#![no_std]
// Inline asm on the eBPF target (an opaque register copy, `redact::at`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod addr;
pub mod decide;
pub mod event;
pub mod http;
pub mod maps;
pub mod offsets;
pub mod redact;
pub mod ruleset;

#[cfg(feature = "user")]
mod pod {
    //! The daemon copies these types into maps and globals as plain bytes.
    use crate::{
        event::Event,
        http::{HeaderTable, HttpKey, HttpParser},
        maps::*,
        offsets::KernelOffsets,
        ruleset::RuleSet,
    };
    unsafe impl aya::Pod for RuleSet {}
    unsafe impl aya::Pod for PrefixInfo {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for DestKey {}
    unsafe impl aya::Pod for HttpAllow {}
    unsafe impl aya::Pod for Grant {}
    unsafe impl aya::Pod for ConnState {}
    unsafe impl aya::Pod for Protected {}
    unsafe impl aya::Pod for ExeKey {}
    unsafe impl aya::Pod for IdKey {}
    unsafe impl aya::Pod for CgroupKey {}
    unsafe impl aya::Pod for ExeEntry {}
    unsafe impl aya::Pod for SubjectEntry {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for SockTag {}
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for crate::event::AggKey {}
    unsafe impl aya::Pod for crate::event::AggCount {}
    unsafe impl aya::Pod for HttpKey {}
    unsafe impl aya::Pod for HeaderTable {}
    unsafe impl aya::Pod for HttpParser {}
    unsafe impl aya::Pod for crate::redact::RedactTable {}
    unsafe impl aya::Pod for crate::redact::Scanner {}
}
