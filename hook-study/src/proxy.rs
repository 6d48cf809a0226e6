//! `hook-study proxy`: the userspace HTTP proxy design (Azure's Guest Proxy
//! Agent, kube2iam/kiam): nftables redirects connections to the metadata
//! address to this process, which finds who is calling and checks each
//! request line before forwarding it. Runs as root in the client netns.
//!
//! Identity: TCP has no SO_PEERCRED, so the caller's uid is looked up by
//! its source address and port in /proc/net/tcp (the socket owner's uid), at
//! the first request. Unknown callers are refused (deny by default).
//! Exits when its stdin closes (the harness holds the other end).
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
        let mut l = String::new();
        while std::io::stdin().lock().read_line(&mut l).map_or(false, |n| n > 0) {}
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

/// The uid owning the local TCP socket bound to `peer` (the caller), from
/// /proc/net/tcp of this netns.
pub fn uid_of(peer: SocketAddrV4, table: &str) -> Option<u32> {
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(peer.ip().octets()),
        peer.port()
    );
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str()))
            .then(|| f.get(7).and_then(|u| u.parse().ok()))
            .flatten()
    })
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
        let who = *uid.get_or_insert_with(|| {
            std::fs::read_to_string("/proc/net/tcp")
                .ok()
                .and_then(|t| uid_of(peer, &t))
        });
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
    fn uid_from_proc_net_tcp() {
        // 198.51.100.2:40000 -> 169.254.169.254:80, owned by uid 4242.
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 026433C6:9C40 FEA9FEA9:0050 01 00000000:00000000 00:00000000 00000000  4242        0 12345 1 0 20 4 30 10 -1\n   1: 0100007F:3AE8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0 100 0 0 10 0\n";
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40000);
        assert_eq!(uid_of(peer, t), Some(4242));
        let other = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40001);
        assert_eq!(uid_of(other, t), None);
        let lo = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 15080);
        assert_eq!(uid_of(lo, t), Some(0));
    }
}
