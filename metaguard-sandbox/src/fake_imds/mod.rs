//! The fake cloud metadata service: plain std threads, one poll loop for all
//! listening sockets plus one thread per TCP connection. Sockets are bound by the
//! caller (inside whatever netns it chose); they keep that netns for their life.
pub mod delivery;
pub mod responses;

use crate::http::{self, ReadError, Response};
use std::io::{BufReader, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a connection may sit idle (or a write block) before the service
/// closes it. Long enough for tests that hold a keep-alive connection across
/// a daemon restart (loading the programs takes seconds); `stop` shuts open
/// connections down at once, so it never delays a test's end.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_MS: i32 = 50;
const UDP_REPLY: &[u8] = b"ack";

/// One HTTP request as received (headers in arrival order, names case preserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

impl RecordedRequest {
    /// First header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }
}

/// One UDP datagram as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedDatagram {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Log {
    requests: Vec<RecordedRequest>,
    datagrams: Vec<RecordedDatagram>,
    connections: usize,
}

struct Conn {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    log: Mutex<Log>,
    conns: Mutex<Vec<Conn>>,
}

/// Locks even after a panicking holder: the logs stay readable for the test that asks.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake metadata service. Stops (and joins every thread) on drop.
pub struct FakeImds {
    shared: Arc<Shared>,
    poller: Option<JoinHandle<()>>,
}

impl FakeImds {
    /// Serves the given already-bound sockets until stopped.
    pub fn start(tcp: Vec<TcpListener>, udp: Vec<UdpSocket>) -> std::io::Result<FakeImds> {
        for l in &tcp {
            l.set_nonblocking(true)?;
        }
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let poller = std::thread::Builder::new()
            .name("fake-imds-poll".into())
            .spawn(move || poll_loop(&s, &tcp, &udp))?;
        Ok(FakeImds {
            shared,
            poller: Some(poller),
        })
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).requests.clone()
    }

    pub fn datagrams(&self) -> Vec<RecordedDatagram> {
        lock(&self.shared.log).datagrams.clone()
    }

    pub fn connections(&self) -> usize {
        lock(&self.shared.log).connections
    }

    /// Forgets recorded requests, datagrams and the connection count.
    pub fn clear_log(&self) {
        *lock(&self.shared.log) = Log::default();
    }

    /// Stops accepting, closes open connections and joins all threads. Idempotent.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.poller.take() {
            if p.join().is_err() {
                eprintln!("metaguard-sandbox: fake IMDS poll thread panicked");
            }
        }
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for c in &conns {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for c in conns {
            let _ = c.thread.join();
        }
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits on all sockets at once; wakes every POLL_MS to notice the stop flag.
fn poll_loop(shared: &Arc<Shared>, tcp: &[TcpListener], udp: &[UdpSocket]) {
    let fds: Vec<RawFd> = tcp
        .iter()
        .map(|l| l.as_raw_fd())
        .chain(udp.iter().map(|u| u.as_raw_fd()))
        .collect();
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !shared.stop.load(Ordering::SeqCst) {
        // SAFETY: pfds is a valid, exclusively borrowed array of pollfd.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, POLL_MS) };
        if n <= 0 {
            continue;
        }
        for (i, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            match i.checked_sub(tcp.len()) {
                None => accept_all(shared, &tcp[i]),
                Some(u) => receive_all(shared, &udp[u]),
            }
        }
    }
}

fn accept_all(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                // Connect+close loops leave many of these: count them, but
                // spare a thread for a connection with nothing to serve.
                if crate::sys::closed_unused(&stream) {
                    lock(&shared.log).connections += 1;
                    continue;
                }
                if let Err(e) = spawn_conn(shared, stream, peer) {
                    eprintln!("metaguard-sandbox: fake IMDS cannot serve {peer}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("metaguard-sandbox: fake IMDS accept: {e}");
                return;
            }
        }
    }
}

fn spawn_conn(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let local = stream.local_addr()?;
    let keep = stream.try_clone()?;
    lock(&shared.log).connections += 1;
    let s = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name("fake-imds-conn".into())
        .spawn(move || serve_conn(&s, stream, peer, local))?;
    let mut conns = lock(&shared.conns);
    // Forget finished connections so long benchmarks do not grow this list.
    conns.retain(|c| !c.thread.is_finished());
    conns.push(Conn {
        stream: keep,
        thread,
    });
    Ok(())
}

/// Serves one connection, then shuts the socket down: the clone kept for `stop`
/// would otherwise hold it open and the client would never see the close.
fn serve_conn(shared: &Shared, stream: TcpStream, peer: SocketAddr, local: SocketAddr) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let closer = stream.try_clone();
    serve_requests(shared, BufReader::new(stream), writer, peer, local);
    if let Ok(c) = closer {
        let _ = c.shutdown(Shutdown::Both);
    }
}

/// Serves requests in order (keep-alive and pipelining).
fn serve_requests(
    shared: &Shared,
    mut reader: BufReader<TcpStream>,
    mut writer: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    while !shared.stop.load(Ordering::SeqCst) {
        let req = match http::read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) | Err(ReadError::Io(_)) => return,
            Err(ReadError::Bad(why)) => {
                let _ = Response::text(400, why).write_to(&mut writer, false, false);
                return;
            }
        };
        record_request(shared, &req, peer, local);
        // A chunked body is left unread, so the connection cannot be reused.
        let (resp, keep_alive) = if req.chunked {
            (
                Response::text(400, "chunked request bodies are not supported"),
                false,
            )
        } else {
            (responses::respond(&req), req.keep_alive())
        };
        if delivery::write(&resp, &req, &mut writer, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

fn record_request(shared: &Shared, req: &http::Request, peer: SocketAddr, local: SocketAddr) {
    lock(&shared.log).requests.push(RecordedRequest {
        method: req.method.clone(),
        target: req.target.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        peer,
        local,
    });
}

fn receive_all(shared: &Shared, sock: &UdpSocket) {
    let mut buf = vec![0u8; 65536];
    let Ok(local) = sock.local_addr() else { return };
    // Bounded: at most 1024 datagrams per wake-up, then back to the stop check.
    for _ in 0..1024 {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let payload = buf[..n].to_vec();
                lock(&shared.log).datagrams.push(RecordedDatagram {
                    peer,
                    local,
                    payload,
                });
                let _ = sock.send_to(UDP_REPLY, peer);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Loopback only (127.0.0.1, ephemeral ports): allowed traffic.
    use super::*;
    use std::io::{Read, Write};

    fn start() -> (FakeImds, SocketAddr, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ta, ua) = (l.local_addr().unwrap(), u.local_addr().unwrap());
        (FakeImds::start(vec![l], vec![u]).unwrap(), ta, ua)
    }

    /// Sends raw bytes, half-closes, and reads everything the server answers.
    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        // The server may close with unread input (RST): keep what arrived before it.
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serves_pipelined_keep_alive_requests_in_order() {
        let (srv, addr, _) = start();
        let raw = b"PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 2\r\n\r\nhi\
GET /latest/meta-data/instance-id HTTP/1.1\r\nX-aws-ec2-metadata-token: wrong\r\n\r\n\
GET /latest/meta-data/instance-id HTTP/1.1\r\n\r\n";
        let out = exchange(addr, raw);
        let statuses: Vec<&str> = out
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| &out[i + 9..i + 12])
            .collect();
        assert_eq!(statuses, ["200", "401", "200"]);
        assert!(out.contains(responses::AWS_TOKEN) && out.ends_with(responses::AWS_INSTANCE_ID));
        let reqs = srv.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(
            (reqs[0].method.as_str(), reqs[0].body.as_slice()),
            ("PUT", &b"hi"[..])
        );
        assert_eq!(reqs[1].header("x-aws-ec2-metadata-token"), Some("wrong"));
        assert_eq!(reqs[2].local, addr);
        assert_eq!(srv.connections(), 1);
        srv.clear_log();
        assert!(srv.requests().is_empty() && srv.connections() == 0);
    }

    #[test]
    fn chunked_and_malformed_get_400_and_close() {
        let (srv, addr, _) = start();
        let out = exchange(addr, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1);
        assert!(out.starts_with("HTTP/1.1 400") && out.contains("Connection: close"));
        assert_eq!(srv.requests().len(), 1);
        assert!(exchange(addr, b"NONSENSE\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn records_udp_and_replies_ack() {
        let (srv, _, uaddr) = start();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.send_to(b"ping", uaddr).unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], UDP_REPLY);
        let d = srv.datagrams();
        assert_eq!(
            (d.len(), d[0].payload.as_slice(), d[0].local),
            (1, &b"ping"[..], uaddr)
        );
    }

    #[test]
    fn stop_closes_idle_keep_alive_connections_promptly() {
        let (mut srv, addr, _) = start();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        assert!(s.read(&mut buf).unwrap() > 0);
        let t = std::time::Instant::now();
        srv.stop();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t.elapsed()
        );
    }
}
