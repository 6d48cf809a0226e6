//! Raw IP and packet-socket modes: raw-udp, raw-tcp-syn, packet (IPv4 only).

use std::ffi::CString;
use std::net::Ipv4Addr;

use crate::addr::{Ip, SockAddr};
use crate::args::Opts;
use crate::errnames::{errno_name, last_errno};
use crate::json::Outcome;
use crate::net;
use crate::packet;
use crate::stats::mono_ns;

const ETH_P_IP: u16 = 0x0800;

/// `--src` when given, else the address the kernel would use.
fn source_for(o: &Opts, dst: Ipv4Addr) -> (Ipv4Addr, String) {
    match o.src {
        Some(a) => (a, format!("source {a} (--src)")),
        None => local_source(dst, o.port),
    }
}

/// The source address the kernel would use towards dst:port, found by connect()ing a
/// throwaway UDP socket (sends nothing) and reading getsockname. If that connect is
/// refused (a guard may deny it), fall back to 0.0.0.0. Returns (source, note).
pub fn local_source(dst: Ipv4Addr, port: u16) -> (Ipv4Addr, String) {
    let fd = match net::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) {
        Ok(fd) => fd,
        Err(e) => {
            return (
                Ipv4Addr::UNSPECIFIED,
                format!(
                    "source lookup socket failed ({}), using 0.0.0.0",
                    errno_name(e)
                ),
            )
        }
    };
    let sa = SockAddr::new(Ip::V4(dst), port);
    if unsafe { libc::connect(fd.raw(), sa.as_ptr(), sa.len()) } < 0 {
        let e = last_errno();
        return (
            Ipv4Addr::UNSPECIFIED,
            format!(
                "source lookup connect failed ({}), using 0.0.0.0",
                errno_name(e)
            ),
        );
    }
    let mut local = SockAddr::empty();
    if unsafe { libc::getsockname(fd.raw(), local.as_mut_ptr(), local.len_mut()) } < 0 {
        let e = last_errno();
        return (
            Ipv4Addr::UNSPECIFIED,
            format!(
                "source lookup getsockname failed ({}), using 0.0.0.0",
                errno_name(e)
            ),
        );
    }
    match local.ip_port() {
        Some((Ip::V4(a), _)) => (a, format!("source {a}")),
        _ => (
            Ipv4Addr::UNSPECIFIED,
            "source lookup gave no IPv4 address, using 0.0.0.0".to_string(),
        ),
    }
}

fn require_v4(o: &Opts, mode: &str) -> Result<Ipv4Addr, Box<Outcome>> {
    match o.ip {
        Ip::V4(a) => Ok(a),
        Ip::V6(..) => Err(Box::new(Outcome::other(
            mode,
            "ipv6_unsupported",
            format!("{mode} is IPv4 only; got {}", o.ip),
        ))),
    }
}

/// Source port for crafted packets (stable per process, in the ephemeral range).
fn source_port() -> u16 {
    40000 + (unsafe { libc::getpid() } as u32 % 20000) as u16
}

/// An IPv4/UDP packet carrying the payload to `dst`, and how its source
/// address was chosen.
fn udp_packet(o: &Opts, dst: Ipv4Addr) -> (Vec<u8>, String) {
    let (src, note) = source_for(o, dst);
    let seg = packet::udp_segment(src, dst, source_port(), o.port, o.payload.as_bytes());
    let pid = unsafe { libc::getpid() } as u16;
    (
        packet::ipv4_packet(src, dst, packet::IPPROTO_UDP, &seg, pid),
        note,
    )
}

/// The outcome of a send of `len` bytes that sent `r`.
fn sent(mode: &str, r: usize, len: usize, detail: impl FnOnce() -> String) -> Outcome {
    if r != len {
        return Outcome::other(
            mode,
            "short_send",
            format!("sendto sent {r} of {len} bytes"),
        );
    }
    let mut out = Outcome::success(mode, detail());
    out.sent = r;
    out
}

fn send_raw(o: &Opts, mode: &str, pkt: &[u8], dst: Ipv4Addr, note: &str, what: &str) -> Outcome {
    let fd = match net::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) {
        Ok(fd) => fd,
        Err(e) => {
            return Outcome::fail(
                mode,
                e,
                format!(
                    "socket(AF_INET, SOCK_RAW, IPPROTO_RAW): {} (needs CAP_NET_RAW)",
                    errno_name(e)
                ),
            )
        }
    };
    let sa = SockAddr::new(Ip::V4(dst), 0);
    let r = unsafe {
        libc::sendto(
            fd.raw(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            sa.as_ptr(),
            sa.len(),
        )
    };
    if r < 0 {
        let e = last_errno();
        return Outcome::fail(
            mode,
            e,
            format!(
                "sendto(raw {what} to {dst} port {}): {}; {note}",
                o.port,
                errno_name(e)
            ),
        );
    }
    sent(mode, r as usize, pkt.len(), || {
        format!(
            "raw {what} of {} bytes sent to {dst} port {}; {note}",
            pkt.len(),
            o.port
        )
    })
}

pub fn raw_udp(o: &Opts, mode: &str) -> Outcome {
    let dst = match require_v4(o, mode) {
        Ok(a) => a,
        Err(out) => return *out,
    };
    let (pkt, note) = udp_packet(o, dst);
    send_raw(o, mode, &pkt, dst, &note, "IPv4/UDP packet")
}

pub fn raw_tcp_syn(o: &Opts, mode: &str) -> Outcome {
    let dst = match require_v4(o, mode) {
        Ok(a) => a,
        Err(out) => return *out,
    };
    let (src, note) = source_for(o, dst);
    let seq = (mono_ns() & 0xffff_ffff) as u32;
    let seg = packet::tcp_syn(src, dst, source_port(), o.port, seq, 64240);
    let pkt = packet::ipv4_packet(
        src,
        dst,
        packet::IPPROTO_TCP,
        &seg,
        unsafe { libc::getpid() } as u16,
    );
    let note = if src.is_unspecified() {
        format!("{note} (TCP checksum assumes 0.0.0.0)")
    } else {
        note
    };
    send_raw(o, mode, &pkt, dst, &note, "IPv4/TCP SYN")
}

/// AF_PACKET SOCK_DGRAM on --iface: the kernel adds the link-layer header.
pub fn packet(o: &Opts, mode: &str) -> Outcome {
    let dst = match require_v4(o, mode) {
        Ok(a) => a,
        Err(out) => return *out,
    };
    let iface = o.iface.clone().unwrap_or_default();
    let cname = match CString::new(iface.clone()) {
        Ok(c) => c,
        Err(_) => return Outcome::other(mode, "usage", "bad --iface"),
    };
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        let e = last_errno();
        return Outcome::fail(
            mode,
            if e == 0 { libc::ENODEV } else { e },
            format!("if_nametoindex({iface:?}) failed"),
        );
    }
    let fd = match net::socket(
        libc::AF_PACKET,
        libc::SOCK_DGRAM,
        ETH_P_IP.to_be() as libc::c_int,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            return Outcome::fail(
                mode,
                e,
                format!(
                    "socket(AF_PACKET, SOCK_DGRAM): {} (needs CAP_NET_RAW)",
                    errno_name(e)
                ),
            )
        }
    };
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_IP.to_be();
    sll.sll_ifindex = ifindex as i32;
    let sll_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    if unsafe { libc::bind(fd.raw(), &sll as *const _ as *const libc::sockaddr, sll_len) } < 0 {
        let e = last_errno();
        return Outcome::fail(
            mode,
            e,
            format!("bind(AF_PACKET, {iface}): {}", errno_name(e)),
        );
    }
    let (pkt, note) = udp_packet(o, dst);
    let mut to = sll;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let r = unsafe {
        libc::sendto(
            fd.raw(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &to as *const _ as *const libc::sockaddr,
            sll_len,
        )
    };
    if r < 0 {
        let e = last_errno();
        return Outcome::fail(
            mode,
            e,
            format!("sendto(AF_PACKET on {iface}): {}; {note}", errno_name(e)),
        );
    }
    sent(mode, r as usize, pkt.len(), || {
        format!(
            "AF_PACKET frame (IPv4/UDP, {} bytes) sent on {iface} to {dst} port {}; {note}",
            pkt.len(),
            o.port
        )
    })
}
