//! ADDR parsing (inet_aton semantics for IPv4, standard parser for IPv6)
//! and sockaddr construction.

use std::ffi::CString;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parsed target address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip {
    V4(Ipv4Addr),
    /// IPv6 address and scope id (0 if none).
    V6(Ipv6Addr, u32),
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ip::V4(a) => write!(f, "{a}"),
            Ip::V6(a, 0) => write!(f, "{a}"),
            Ip::V6(a, s) => write!(f, "{a}%{s}"),
        }
    }
}

impl Ip {
    /// The form used in an HTTP Host header.
    pub fn host_header(&self) -> String {
        match self {
            Ip::V4(a) => a.to_string(),
            Ip::V6(a, _) => format!("[{a}]"),
        }
    }

    /// The IPv4 address, also for an IPv4-mapped IPv6 address.
    pub fn as_v4(&self) -> Option<Ipv4Addr> {
        match self {
            Ip::V4(a) => Some(*a),
            Ip::V6(a, _) => a.to_ipv4_mapped(),
        }
    }

    /// `::ffff:<v4>` for an IPv4 (or already mapped) address.
    pub fn mapped(&self) -> Result<Ip, String> {
        match self.as_v4() {
            Some(v4) => Ok(Ip::V6(v4.to_ipv6_mapped(), 0)),
            None => Err(format!(
                "{self} is not an IPv4 address; this mode needs one"
            )),
        }
    }

    pub fn family(&self) -> libc::c_int {
        match self {
            Ip::V4(_) => libc::AF_INET,
            Ip::V6(..) => libc::AF_INET6,
        }
    }
}

/// Parse IPv4 with libc::inet_aton (so "2852039166", "0xa9fea9fe",
/// "0251.0376.0251.0376", "127.1" all work), else IPv6 ("[..]" and "%scope" allowed).
pub fn parse_ip(s: &str) -> Result<Ip, String> {
    if let Some(v4) = inet_aton(s) {
        return Ok(Ip::V4(v4));
    }
    let t = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    let (addr, scope) = match t.split_once('%') {
        Some((a, sc)) => (a, Some(sc)),
        None => (t, None),
    };
    let v6: Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("cannot parse address {s:?} (inet_aton and IPv6 both failed)"))?;
    let scope_id = match scope {
        None => 0,
        Some(sc) => match sc.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let c = CString::new(sc).map_err(|_| "bad scope".to_string())?;
                let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if idx == 0 {
                    return Err(format!("unknown interface {sc:?} in scope"));
                }
                idx
            }
        },
    };
    Ok(Ip::V6(v6, scope_id))
}

// The libc crate does not bind inet_aton(3); it is in the C library all the same.
extern "C" {
    #[link_name = "inet_aton"]
    fn c_inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
}

/// The C library's inet_aton(3); None if it rejects the string.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let c = CString::new(s).ok()?;
    let mut a = libc::in_addr { s_addr: 0 };
    let r = unsafe { c_inet_aton(c.as_ptr(), &mut a) };
    if r == 0 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from_be(a.s_addr)))
}

/// A socket address ready to hand to the kernel.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub fn new(ip: Ip, port: u16) -> SockAddr {
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match ip {
            Ip::V4(a) => {
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = port.to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            Ip::V6(a, scope) => {
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = port.to_be();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.octets(),
                };
                sin6.sin6_scope_id = scope;
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    /// An empty buffer for getsockname/recvfrom.
    pub fn empty() -> SockAddr {
        SockAddr {
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    pub fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    pub fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        &mut self.storage as *mut _ as *mut libc::sockaddr
    }

    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    pub fn len_mut(&mut self) -> &mut libc::socklen_t {
        &mut self.len
    }

    /// Decode (for getsockname results).
    pub fn ip_port(&self) -> Option<(Ip, u16)> {
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET => {
                let sin = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in) };
                Some((
                    Ip::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                    u16::from_be(sin.sin_port),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_in6) };
                Some((
                    Ip::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr), sin6.sin6_scope_id),
                    u16::from_be(sin6.sin6_port),
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

    #[test]
    fn dotted_decimal() {
        assert_eq!(parse_ip("169.254.169.254").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("127.0.0.1").unwrap(), Ip::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn single_decimal_hex_octal() {
        assert_eq!(parse_ip("2852039166").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("0xa9fea9fe").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("0XA9FEA9FE").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("0251.0376.0251.0376").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("0xa9.0xfe.0xa9.0xfe").unwrap(), Ip::V4(MD));
        // Short forms: a.b.c (c is 16 bits), a.b (b is 24 bits).
        assert_eq!(parse_ip("169.254.43518").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("169.16689662").unwrap(), Ip::V4(MD));
        assert_eq!(parse_ip("127.1").unwrap(), Ip::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn ipv6_and_mapped() {
        assert_eq!(parse_ip("::1").unwrap(), Ip::V6(Ipv6Addr::LOCALHOST, 0));
        assert_eq!(parse_ip("[::1]").unwrap(), Ip::V6(Ipv6Addr::LOCALHOST, 0));
        assert_eq!(
            parse_ip("fd00:ec2::254").unwrap(),
            Ip::V6("fd00:ec2::254".parse().unwrap(), 0)
        );
        let m = parse_ip("::ffff:169.254.169.254").unwrap();
        assert_eq!(m.family(), libc::AF_INET6);
        assert_eq!(m.as_v4(), Some(MD));
        assert_eq!(parse_ip("::1%1").unwrap(), Ip::V6(Ipv6Addr::LOCALHOST, 1));
        assert_eq!(parse_ip("::1%lo").unwrap(), Ip::V6(Ipv6Addr::LOCALHOST, 1));
        // mapping
        let mm = Ip::V4(MD).mapped().unwrap();
        assert_eq!(mm.to_string(), "::ffff:169.254.169.254");
        assert_eq!(mm.mapped().unwrap(), mm);
        assert!(parse_ip("::1").unwrap().mapped().is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_ip("not-an-ip").is_err());
        assert!(parse_ip("256.256.256.256.1").is_err());
        assert!(parse_ip("").is_err());
    }

    #[test]
    fn sockaddr_roundtrip() {
        let sa = SockAddr::new(Ip::V4(MD), 80);
        assert_eq!(sa.len() as usize, std::mem::size_of::<libc::sockaddr_in>());
        assert_eq!(sa.ip_port(), Some((Ip::V4(MD), 80)));
        let sa6 = SockAddr::new(Ip::V6(Ipv6Addr::LOCALHOST, 0), 8080);
        assert_eq!(
            sa6.len() as usize,
            std::mem::size_of::<libc::sockaddr_in6>()
        );
        assert_eq!(sa6.ip_port(), Some((Ip::V6(Ipv6Addr::LOCALHOST, 0), 8080)));
        assert_eq!(Ip::V6(Ipv6Addr::LOCALHOST, 0).host_header(), "[::1]");
    }
}
