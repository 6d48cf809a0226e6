//! The hook study's comparison programs: the same policy ("only uid
//! ALLOWED_UID may reach PROT_ADDR:PROT_PORT", TCP and UDP) decided at hooks
//! metaguard does not use, plus observation-only programs. Never loaded by
//! the product; hook-study attaches them to sandbox interfaces and cgroups.
//!
//! - `tc_egress` (TC/tcx egress on the client veth): per packet, uid from
//!   the packet's socket (`bpf_get_socket_uid`), drop = TC_ACT_SHOT.
//! - `skb_egress` (cgroup_skb egress): per packet, same decision, 0 = drop.
//! - `raw_count` (socket filter on an AF_PACKET socket): counts, returns 0
//!   so nothing is queued to the observing socket.
//! - `xdp_count` (XDP): counts frames to and from the protected address.
//! - `ssl_write` (uprobe on OpenSSL's SSL_write): reads the plaintext's
//!   first bytes and counts requests.
//! - `empty_connect4`, `empty_egress`, `empty_sock_ops`: programs that
//!   decide nothing, attached where metaguard attaches; what the kernel
//!   charges for running programs at those hooks at all (the floor under
//!   metaguard's own cost).
//!
//! Counters live in `STATS` (per CPU), indices below.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
        helpers::{
            bpf_get_current_uid_gid, bpf_probe_read_user_buf, generated::bpf_get_socket_uid,
        },
        macros::{
            cgroup_skb, cgroup_sock_addr, classifier, map, sock_ops, socket_filter, uprobe, xdp,
        },
        maps::PerCpuArray,
        programs::{
            ProbeContext, SkBuffContext, SockAddrContext, SockOpsContext, TcContext, XdpContext,
        },
    };

    /// Protected IPv4 address as it appears in the packet (network order bytes).
    #[unsafe(no_mangle)]
    static PROT_ADDR: [u8; 4] = [0; 4];
    #[unsafe(no_mangle)]
    static PROT_PORT: u16 = 0;
    #[unsafe(no_mangle)]
    static ALLOWED_UID: u32 = 0;

    // STATS indices (kept in step with hook-study/src/bpf.rs).
    const TC_ALLOWED: u32 = 0;
    const TC_DROPPED: u32 = 1;
    const SKB_ALLOWED: u32 = 2;
    const SKB_DROPPED: u32 = 3;
    const RAW_PROTECTED: u32 = 4;
    const RAW_TOTAL: u32 = 5;
    const XDP_TO_PROTECTED: u32 = 6;
    const XDP_FROM_PROTECTED: u32 = 7;
    const XDP_TOTAL: u32 = 8;
    const SSL_GET: u32 = 9;
    const SSL_TOTAL: u32 = 10;
    const SSL_UID_ALLOWED: u32 = 11;
    /// Frames to the protected address that open something: TCP SYN
    /// without ACK, or UDP (the bypass oracle; stray ACKs and FINs of
    /// earlier connections do not count).
    const XDP_NEW_TO_PROTECTED: u32 = 12;

    #[map]
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);

    const ETH_HLEN: usize = 14;
    const ETH_P_IP: u16 = 0x0800;
    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;

    #[inline(always)]
    fn bump(i: u32) {
        if let Some(p) = STATS.get_ptr_mut(i) {
            unsafe { *p += 1 };
        }
    }

    #[inline(always)]
    fn prot_addr() -> [u8; 4] {
        unsafe { core::ptr::read_volatile(&PROT_ADDR) }
    }

    #[inline(always)]
    fn prot_port() -> u16 {
        unsafe { core::ptr::read_volatile(&PROT_PORT) }
    }

    #[inline(always)]
    fn allowed_uid() -> u32 {
        unsafe { core::ptr::read_volatile(&ALLOWED_UID) }
    }

    /// Whether the IPv4 packet at `off` goes to the protected TCP or UDP port.
    /// Fragments and unreadable headers to the protected address count as
    /// protected (deny by default).
    macro_rules! protected_at {
        ($ctx:expr, $off:expr) => {{
            match $ctx.load::<[u8; 20]>($off) {
                Err(_) => false,
                Ok(h) => {
                    let a = prot_addr();
                    if h[16] != a[0] || h[17] != a[1] || h[18] != a[2] || h[19] != a[3] {
                        false
                    } else if h[9] != IPPROTO_TCP && h[9] != IPPROTO_UDP {
                        false
                    } else {
                        let frag = ((h[6] as u16 & 0x1f) << 8) | h[7] as u16;
                        let ihl = ((h[0] & 0x0f) as usize) * 4;
                        if frag != 0 || ihl < 20 {
                            true
                        } else {
                            match $ctx.load::<[u8; 4]>($off + ihl) {
                                Ok(p) => u16::from_be_bytes([p[2], p[3]]) == prot_port(),
                                Err(_) => true,
                            }
                        }
                    }
                }
            }
        }};
    }

    #[classifier]
    pub fn tc_egress(ctx: TcContext) -> i32 {
        let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
        if proto != ETH_P_IP {
            return TC_ACT_OK;
        }
        if !protected_at!(ctx, ETH_HLEN) {
            return TC_ACT_OK;
        }
        let uid = unsafe { bpf_get_socket_uid(ctx.skb.skb) };
        if uid == allowed_uid() {
            bump(TC_ALLOWED);
            TC_ACT_OK
        } else {
            bump(TC_DROPPED);
            TC_ACT_SHOT
        }
    }

    #[cgroup_skb]
    pub fn skb_egress(ctx: SkBuffContext) -> i32 {
        let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
        if proto != ETH_P_IP {
            return 1;
        }
        if !protected_at!(ctx, 0) {
            return 1;
        }
        let uid = unsafe { bpf_get_socket_uid(ctx.skb.skb) };
        if uid == allowed_uid() {
            bump(SKB_ALLOWED);
            1
        } else {
            bump(SKB_DROPPED);
            0
        }
    }

    #[socket_filter]
    pub fn raw_count(ctx: SkBuffContext) -> i64 {
        bump(RAW_TOTAL);
        if let Ok(t) = ctx.load::<[u8; 2]>(12) {
            if u16::from_be_bytes(t) == ETH_P_IP && protected_at!(ctx, ETH_HLEN) {
                bump(RAW_PROTECTED);
            }
        }
        0
    }

    #[xdp]
    pub fn xdp_count(ctx: XdpContext) -> u32 {
        bump(XDP_TOTAL);
        let (start, end) = (ctx.data(), ctx.data_end());
        if start + ETH_HLEN + 20 > end {
            return xdp_action::XDP_PASS;
        }
        let eth = start as *const u8;
        let t = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
        if t != ETH_P_IP {
            return xdp_action::XDP_PASS;
        }
        let ip = (start + ETH_HLEN) as *const [u8; 20];
        let h = unsafe { *ip };
        let a = prot_addr();
        if h[16] == a[0] && h[17] == a[1] && h[18] == a[2] && h[19] == a[3] {
            bump(XDP_TO_PROTECTED);
            if h[9] == IPPROTO_UDP || h[9] != IPPROTO_TCP || h[0] != 0x45 {
                // UDP, other protocols and IP options: counted (conservative).
                bump(XDP_NEW_TO_PROTECTED);
            } else if start + ETH_HLEN + 20 + 14 <= end {
                let flags = unsafe { *((start + ETH_HLEN + 20 + 13) as *const u8) };
                if flags & 0x02 != 0 && flags & 0x10 == 0 {
                    bump(XDP_NEW_TO_PROTECTED);
                }
            }
        }
        if h[12] == a[0] && h[13] == a[1] && h[14] == a[2] && h[15] == a[3] {
            bump(XDP_FROM_PROTECTED);
        }
        xdp_action::XDP_PASS
    }

    /// int SSL_write(SSL *ssl, const void *buf, int num)
    #[uprobe]
    pub fn ssl_write(ctx: ProbeContext) -> u32 {
        bump(SSL_TOTAL);
        let Some(buf) = ctx.arg::<*const u8>(1) else {
            return 0;
        };
        let mut head = [0u8; 4];
        if unsafe { bpf_probe_read_user_buf(buf, &mut head) }.is_ok() && head == *b"GET " {
            bump(SSL_GET);
        }
        if bpf_get_current_uid_gid() as u32 == allowed_uid() {
            bump(SSL_UID_ALLOWED);
        }
        0
    }

    #[cgroup_sock_addr(connect4)]
    pub fn empty_connect4(_ctx: SockAddrContext) -> i32 {
        1
    }

    #[cgroup_skb]
    pub fn empty_egress(_ctx: SkBuffContext) -> i32 {
        1
    }

    #[sock_ops]
    pub fn empty_sock_ops(_ctx: SockOpsContext) -> u32 {
        1
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
