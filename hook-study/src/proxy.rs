//! `hook-study proxy`: the userspace HTTP proxy design (Azure's Guest Proxy
//! Agent, kube2iam/kiam): nftables redirects connections to the metadata
//! address to this process, which finds who is calling and checks each
//! request line before forwarding it. Runs as root in the client netns.
//!
//! Identity: TCP has no SO_PEERCRED, so the caller's uid is looked up from
//! its connection's 4-tuple with one exact NETLINK_SOCK_DIAG query (the
//! socket owner's uid), at the first request. (Scanning /proc/net/tcp
//! instead walks the whole TCP hash table: milliseconds per lookup here.)
//! Unknown callers are refused (deny by default).
//! Exits when its stdin closes (the harness holds the other end); a line on
//! stdin is answered with its CPU time so far.
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use anyhow::Result;

use crate::client::Args;
use crate::util::{read_head, read_response};

/// Marks the proxy's own upstream connections, which nftables lets pass
/// (setting SO_MARK needs CAP_NET_ADMIN, so clients cannot forge it).
pub const MARK: u32 = 0x4853;
pub const PORT: u16 = 15080;

struct Policy {
    uid: u32,
    method: String,
    path: String,
}

pub fn run(rest: &[String]) -> Result<()> {
    let a = Args::parse(rest)?;
    let policy = Policy {
        uid: a.num("uid", 4242)? as u32,
        method: "GET".into(),
        path: a.get("path", "/latest/meta-data/instance-id"),
    };
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))?;
    println!("ready");
    std::io::stdout().flush()?;
    std::thread::spawn(|| {
        // The harness closes our stdin when the proxy cell ends.
        // Each line asks for the proxy's CPU time so far (ns).
        let mut l = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut l)
            .is_ok_and(|n| n > 0)
        {
            l.clear();
            println!("{}", crate::util::rusage_ns(libc::RUSAGE_SELF));
            let _ = std::io::stdout().flush();
        }
        std::process::exit(0);
    });
    let policy: &'static Policy = Box::leak(Box::new(policy));
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        std::thread::spawn(move || {
            let _ = serve(policy, s);
        });
    }
    Ok(())
}

/// The original destination of a redirected connection (SO_ORIGINAL_DST).
fn original_dst(s: &TcpStream) -> Option<SocketAddrV4> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    // SAFETY: zeroed sockaddr_in is valid; getsockopt writes at most len bytes.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&mut sin as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
            u16::from_be(sin.sin_port),
        )
    })
}

/// The uid owning the local TCP socket `src` -> `dst` (the caller's end),
/// by an exact sock_diag lookup; `None` when there is no such socket.
pub fn diag_uid(src: SocketAddrV4, dst: SocketAddrV4) -> std::io::Result<Option<u32>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    // nlmsghdr (16) + inet_diag_req_v2 (56).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_INET as u8;
    req[17] = libc::IPPROTO_TCP as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
                                                          // inet_diag_sockid at 24: sport, dport (big endian), src[4], dst[4], if, cookie.
    req[24..26].copy_from_slice(&src.port().to_be_bytes());
    req[26..28].copy_from_slice(&dst.port().to_be_bytes());
    req[28..32].copy_from_slice(&src.ip().octets());
    req[44..48].copy_from_slice(&dst.ip().octets());
    req[64..72].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
                                             // SAFETY: plain socket calls on buffers owned here.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _close = TcpStream::from_raw_fd(fd);
        if libc::send(fd, req.as_ptr().cast(), req.len(), 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut resp = [0u8; 512];
        let n = libc::recv(fd, resp.as_mut_ptr().cast(), resp.len(), 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        let ty = u16::from_ne_bytes([resp[4], resp[5]]);
        // inet_diag_msg after the header: family, state, timer, retrans,
        // sockid (48), expires, rqueue, wqueue, uid.
        if ty != SOCK_DIAG_BY_FAMILY || n < 16 + 68 {
            return Ok(None);
        }
        Ok(Some(u32::from_ne_bytes([
            resp[80], resp[81], resp[82], resp[83],
        ])))
    }
}

fn upstream(dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket calls; the fd is owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let mark = MARK;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const u32).cast(),
            4,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: dst.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        if libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

fn serve(p: &Policy, mut c: TcpStream) -> Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let SocketAddr::V4(peer) = c.peer_addr()? else {
        return Ok(());
    };
    let dst = original_dst(&c);
    let mut uid: Option<Option<u32>> = None;
    let mut up: Option<(TcpStream, Vec<u8>)> = None;
    let mut buf = Vec::new();
    // Bounded by the clients' own bounded loops and the read timeout.
    for _ in 0..1_000_000 {
        let h = read_head(&mut c, &mut buf)?;
        let head: Vec<u8> = buf.drain(..h).collect();
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let who = *uid.get_or_insert_with(|| dst.and_then(|d| diag_uid(peer, d).ok().flatten()));
        // Requests with a body are not part of this policy: refused.
        let allowed = who == Some(p.uid)
            && method == p.method
            && path == p.path
            && dst.is_some()
            && !String::from_utf8_lossy(&head)
                .to_ascii_lowercase()
                .contains("content-length:");
        if !allowed {
            c.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        if up.is_none() {
            let s = upstream(dst.expect("checked above"))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            up = Some((s, Vec::new()));
        }
        let (u, ubuf) = up.as_mut().expect("connected above");
        u.write_all(&head)?;
        let (_, resp) = read_response(u, ubuf)?;
        c.write_all(&resp)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sock_diag_names_the_socket_owner() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let SocketAddr::V4(dst) = l.local_addr().unwrap() else {
            unreachable!()
        };
        let c = TcpStream::connect(dst).unwrap();
        let SocketAddr::V4(src) = c.local_addr().unwrap() else {
            unreachable!()
        };
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        assert_eq!(diag_uid(src, dst).unwrap(), Some(me));
        // A 4-tuple nobody owns.
        let nobody = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        assert_eq!(diag_uid(nobody, dst).unwrap(), None);
    }
}
