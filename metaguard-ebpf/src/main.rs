//! metaguard's kernel programs.
//!
//! - `connect4`/`connect6` (cgroup sock_addr): TCP, connected UDP, TCP Fast
//!   Open and MPTCP connects; IPv4-mapped destinations arrive at connect6.
//! - `sendmsg4`/`sendmsg6` (cgroup sock_addr): unconnected UDP sends.
//! - `egress` (cgroup_skb): the backstop for packets that passed no connect or
//!   sendmsg decision (raw sockets, NAT rewriting an innocent destination).
//!
//! - `sock_ops` + `sk_msg`: TCP sockets established to a protected
//!   destination are checked again on every send, for the sending task.
//! - `redact_verdict` (sk_skb): answers on connections under `redact` rules
//!   have their secrets masked before the process reads them.
//!
//! Each sock_addr/skb program returns 1 to let the operation proceed and 0 to refuse it (EPERM at
//! the caller for the sock_addr hooks, a dropped packet for egress).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

// On the host (cargo test/clippy --workspace) this crate is an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod backstop;
#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod guard;
#[cfg(target_arch = "bpf")]
mod http;
#[cfg(target_arch = "bpf")]
mod identity;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod mem;
#[cfg(target_arch = "bpf")]
mod redact;
#[cfg(target_arch = "bpf")]
mod sockets;
#[cfg(target_arch = "bpf")]
pub use programs::*;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{cgroup_skb, cgroup_sock_addr, sk_msg, sock_ops, stream_verdict},
        programs::{SkBuffContext, SkMsgContext, SockAddrContext, SockOpsContext},
    };
    use metaguard_common::event::Hook;

    use crate::{backstop, guard, redact, sockets};

    #[cgroup_sock_addr(connect4)]
    pub fn connect4(ctx: SockAddrContext) -> i32 {
        guard::sock_addr_v4(&ctx, Hook::Connect4)
    }

    #[cgroup_sock_addr(connect6)]
    pub fn connect6(ctx: SockAddrContext) -> i32 {
        guard::sock_addr_v6(&ctx, Hook::Connect6)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
        guard::sock_addr_v4(&ctx, Hook::Sendmsg4)
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
        guard::sock_addr_v6(&ctx, Hook::Sendmsg6)
    }

    #[cgroup_skb(egress)]
    pub fn egress(ctx: SkBuffContext) -> i32 {
        backstop::check(&ctx)
    }

    #[sock_ops]
    pub fn sock_established(ctx: SockOpsContext) -> u32 {
        sockets::sock_ops(&ctx)
    }

    #[sk_msg]
    pub fn msg_sender(ctx: SkMsgContext) -> u32 {
        sockets::sk_msg(&ctx)
    }

    /// Attached to `REDACT_SOCKS`: masks secrets in what arrives.
    #[stream_verdict]
    pub fn redact_verdict(ctx: SkBuffContext) -> u32 {
        redact::verdict(&ctx)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
