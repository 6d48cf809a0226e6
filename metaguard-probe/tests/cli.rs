//! Integration tests: run the built probe against listeners on loopback only.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

const PROBE: &str = env!("CARGO_BIN_EXE_metaguard-probe");
const BODY: &str = "i-0123456789abcdef0";

fn run(args: &[&str]) -> (String, i32) {
    let out = output(args);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn output(args: &[&str]) -> Output {
    Command::new(PROBE).args(args).output().expect("run probe")
}

/// The raw JSON text of a top-level field (numbers, bools, null, strings with quotes).
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no field {key} in {json}"))
        + pat.len();
    let rest = &json[start..];
    if let Some(stripped) = rest.strip_prefix('"') {
        let mut esc = false;
        for (i, c) in stripped.char_indices() {
            match c {
                '\\' if !esc => esc = true,
                '"' if !esc => return &rest[..i + 2],
                _ => esc = false,
            }
        }
        panic!("unterminated string in {json}");
    }
    if rest.starts_with('{') {
        let end = rest.find('}').unwrap();
        return &rest[..=end];
    }
    let end = rest.find([',', '}']).unwrap();
    &rest[..end]
}

fn one_line(json: &str) {
    assert_eq!(
        json.lines().count(),
        1,
        "expected one JSON line, got {json:?}"
    );
    assert!(
        json.starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A tiny HTTP/1.1 responder: Content-Length framed, honours Connection: close.
fn handle_http(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let req = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let close = req.to_ascii_lowercase().contains("connection: close");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{BODY}",
            BODY.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
        if close {
            let _ = s.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn http_server(addr: &str) -> u16 {
    let l = TcpListener::bind(addr).expect("bind http");
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || handle_http(s));
        }
    });
    port
}

/// Accepts and drops connections (for connect-loop).
fn accept_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || for _s in l.incoming() {});
    port
}

fn udp_receiver(addr: &str) -> (UdpSocket, u16) {
    let u = UdpSocket::bind(addr).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = u.local_addr().unwrap().port();
    (u, port)
}

fn recv_payload(u: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    u.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

fn assert_http_ok(mode: &str, addr: &str, port: u16) {
    let p = port.to_string();
    let (json, code) = run(&[mode, addr, &p, "--path", "/latest/meta-data/instance-id"]);
    one_line(&json);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "mode"), format!("\"{mode}\""));
    assert_eq!(field(&json, "ok"), "true");
    assert_eq!(field(&json, "errno"), "0");
    assert_eq!(field(&json, "error"), "null");
    assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
    assert!(field(&json, "bytes").parse::<usize>().unwrap() > BODY.len());
}

#[test]
fn tcp_v4() {
    let port = http_server("127.0.0.1:0");
    assert_http_ok("tcp", "127.0.0.1", port);
}

#[test]
fn tcp_v4_inet_aton_forms() {
    let port = http_server("127.0.0.1:0");
    assert_http_ok("tcp", "2130706433", port);
    assert_http_ok("tcp", "0x7f000001", port);
    assert_http_ok("tcp", "0177.0.0.1", port);
}

#[test]
fn tcp_v6() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no ::1, skipping");
        return;
    }
    let port = http_server("[::1]:0");
    assert_http_ok("tcp", "::1", port);
}

#[test]
fn tcp6_mapped() {
    let port = http_server("127.0.0.1:0");
    assert_http_ok("tcp6-mapped", "127.0.0.1", port);
    assert_http_ok("tcp", "::ffff:127.0.0.1", port);
}

#[test]
fn connect_only() {
    let port = http_server("127.0.0.1:0");
    let (json, code) = run(&["connect-only", "127.0.0.1", &port.to_string()]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "ok"), "true");
    assert_eq!(field(&json, "bytes"), "0");
}

#[test]
fn tfo() {
    let port = http_server("127.0.0.1:0");
    let (json, code) = run(&["tfo", "127.0.0.1", &port.to_string()]);
    if code == 4 {
        eprintln!("TFO unavailable: {json}");
        return;
    }
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
}

#[test]
fn mptcp() {
    let port = http_server("127.0.0.1:0");
    let (json, code) = run(&["mptcp", "127.0.0.1", &port.to_string()]);
    one_line(&json);
    assert!(code == 0 || code == 4, "{json}");
    if code == 4 {
        assert_eq!(field(&json, "error"), "\"unsupported\"");
    } else {
        assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
    }
}

fn uring_mode(mode: &str) {
    let port = http_server("127.0.0.1:0");
    let (json, code) = run(&[mode, "127.0.0.1", &port.to_string()]);
    one_line(&json);
    assert!(code == 0 || code == 4, "{json}");
    if code == 4 {
        assert_eq!(field(&json, "error"), "\"unsupported\"");
    } else {
        assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
    }
}

#[test]
fn uring() {
    uring_mode("uring");
}

#[test]
fn uring_sqpoll() {
    uring_mode("uring-sqpoll");
}

#[test]
fn uring_refused() {
    let port = closed_port();
    let (json, code) = run(&["uring", "127.0.0.1", &port.to_string()]);
    assert!(code == 2 || code == 4, "{json}");
    if code == 2 {
        assert_eq!(field(&json, "error"), "\"ECONNREFUSED\"");
    }
}

fn udp_mode(mode: &str, addr: &str, bind: &str) {
    let (u, port) = udp_receiver(bind);
    let payload = format!("hello-{mode}");
    let (json, code) = run(&[
        mode,
        addr,
        &port.to_string(),
        "--payload",
        &payload,
        "--timeout-ms",
        "200",
    ]);
    one_line(&json);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "ok"), "true");
    assert_eq!(field(&json, "sent"), payload.len().to_string());
    assert_eq!(recv_payload(&u).expect("datagram"), payload.as_bytes());
}

#[test]
fn udp_sendto() {
    udp_mode("udp-sendto", "127.0.0.1", "127.0.0.1:0");
}

#[test]
fn udp_sendmsg() {
    udp_mode("udp-sendmsg", "127.0.0.1", "127.0.0.1:0");
}

#[test]
fn udp_connected() {
    udp_mode("udp-connected", "127.0.0.1", "127.0.0.1:0");
}

#[test]
fn udp6_mapped() {
    udp_mode("udp6-mapped", "127.0.0.1", "127.0.0.1:0");
}

#[test]
fn udp_v6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        return;
    }
    udp_mode("udp-sendto", "::1", "[::1]:0");
}

#[test]
fn udp_reply_is_reported() {
    let (u, port) = udp_receiver("127.0.0.1:0");
    let t = thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = u.recv_from(&mut buf).unwrap();
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        u.send_to(&reply, from).unwrap();
    });
    let (json, code) = run(&[
        "udp-sendto",
        "127.0.0.1",
        &port.to_string(),
        "--payload",
        "ping",
    ]);
    t.join().unwrap();
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "body"), "\"echo:ping\"");
    assert_eq!(field(&json, "bytes"), "9");
}

#[test]
fn raw_udp() {
    if !is_root() {
        eprintln!("not root, skipping raw-udp");
        return;
    }
    let (u, port) = udp_receiver("127.0.0.1:0");
    let (json, code) = run(&[
        "raw-udp",
        "127.0.0.1",
        &port.to_string(),
        "--payload",
        "rawpayload",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "sent"), (20 + 8 + 10).to_string());
    assert_eq!(recv_payload(&u).expect("raw datagram"), b"rawpayload");
}

#[test]
fn raw_tcp_syn() {
    if !is_root() {
        return;
    }
    let port = accept_server();
    let (json, code) = run(&["raw-tcp-syn", "127.0.0.1", &port.to_string()]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "sent"), "40");
}

#[test]
fn raw_ipv6_rejected() {
    let (json, code) = run(&["raw-udp", "::1", "9"]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "error"), "\"ipv6_unsupported\"");
}

#[test]
fn packet_on_lo() {
    if !is_root() {
        return;
    }
    let (u, port) = udp_receiver("127.0.0.1:0");
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (json, code) = run(&[
        "packet",
        "127.0.0.1",
        &port.to_string(),
        "--iface",
        "lo",
        "--payload",
        "pkt",
    ]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "sent"), (20 + 8 + 3).to_string());
    // Receipt is optional (loopback delivery of a broadcast-addressed frame).
    let _ = recv_payload(&u);
}

#[test]
fn packet_needs_iface() {
    let (json, code) = run(&["packet", "127.0.0.1", "9"]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "error"), "\"usage\"");
}

fn assert_stats(json: &str, n: u64) {
    assert_eq!(field(json, "count"), n.to_string());
    assert_eq!(field(json, "attempted"), n.to_string());
    assert_eq!(field(json, "ok_count"), n.to_string());
    assert_eq!(field(json, "errors"), "{}");
    let min: u64 = field(json, "min_ns").parse().unwrap();
    let med: u64 = field(json, "median_ns").parse().unwrap();
    let p90: u64 = field(json, "p90_ns").parse().unwrap();
    let p99: u64 = field(json, "p99_ns").parse().unwrap();
    let mean: u64 = field(json, "mean_ns").parse().unwrap();
    assert!(
        min > 0 && min <= med && med <= p90 && p90 <= p99 && mean >= min,
        "{json}"
    );
}

#[test]
fn connect_loop() {
    let port = accept_server();
    let (json, code) = run(&[
        "connect-loop",
        "127.0.0.1",
        &port.to_string(),
        "--count",
        "200",
    ]);
    one_line(&json);
    assert_eq!(code, 0, "{json}");
    assert_stats(&json, 200);
}

#[test]
fn connect_loop_refused_counts_errors() {
    let port = closed_port();
    let (json, code) = run(&[
        "connect-loop",
        "127.0.0.1",
        &port.to_string(),
        "--count",
        "20",
    ]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "ok_count"), "0");
    assert_eq!(field(&json, "errors"), "{\"ECONNREFUSED\":20}");
    assert!(field(&json, "median_ns").parse::<u64>().unwrap() > 0);
}

#[test]
fn http_loop() {
    let port = http_server("127.0.0.1:0");
    let (json, code) = run(&["http-loop", "127.0.0.1", &port.to_string(), "--count", "50"]);
    one_line(&json);
    assert_eq!(code, 0, "{json}");
    assert_stats(&json, 50);
    assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
}

#[test]
fn fork_then_tcp() {
    let port = http_server("127.0.0.1:0");
    let child = Command::new(PROBE)
        .args(["fork", "127.0.0.1", &port.to_string(), "--then", "tcp"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let parent_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    one_line(&json);
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(field(&json, "mode"), "\"tcp\"");
    assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
    let pid: u32 = field(&json, "pid").parse().unwrap();
    assert_ne!(
        pid, parent_pid,
        "the attempt must come from the forked child"
    );
}

#[test]
fn fork_relays_failure_code() {
    let port = closed_port();
    let (json, code) = run(&[
        "fork",
        "127.0.0.1",
        &port.to_string(),
        "--then",
        "connect-only",
    ]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "error"), "\"ECONNREFUSED\"");
}

#[test]
fn exec_echo() {
    let out = output(&["exec", "127.0.0.1", "80", "--exec", "/bin/echo", "hi"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

#[test]
fn exec_relays_exit_code_and_probe_output() {
    let port = closed_port();
    let p = port.to_string();
    let out = output(&[
        "exec",
        "127.0.0.1",
        "80",
        "--exec",
        PROBE,
        "connect-only",
        "127.0.0.1",
        &p,
    ]);
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    one_line(&json);
    assert_eq!(out.status.code(), Some(2), "{json}");
    assert_eq!(field(&json, "error"), "\"ECONNREFUSED\"");
}

#[test]
fn exec_missing_binary() {
    let (json, code) = run(&["exec", "127.0.0.1", "80", "--exec", "/nonexistent/binary"]);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "error"), "\"ENOENT\"");
}

#[test]
fn timeout_when_server_never_answers() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        thread::sleep(Duration::from_millis(1500));
        drop(s);
    });
    let start = std::time::Instant::now();
    let (json, code) = run(&["tcp", "127.0.0.1", &port.to_string(), "--timeout-ms", "300"]);
    assert!(
        start.elapsed() < Duration::from_millis(1400),
        "timeout not honoured"
    );
    assert_eq!(code, 3, "{json}");
    assert_eq!(field(&json, "ok"), "false");
    assert_eq!(field(&json, "error"), "\"ETIMEDOUT\"");
    assert_eq!(field(&json, "errno"), "110");
    t.join().unwrap();
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn refused_port() {
    let port = closed_port();
    let (json, code) = run(&["tcp", "127.0.0.1", &port.to_string()]);
    one_line(&json);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "errno"), "111");
    assert_eq!(field(&json, "error"), "\"ECONNREFUSED\"");
    let pid: i64 = field(&json, "pid").parse().unwrap();
    assert!(pid > 0);
}

#[test]
fn usage_errors_are_json() {
    for args in [
        &["tcp", "127.0.0.1"][..],
        &["bogus", "127.0.0.1", "80"],
        &["tcp", "not.an.addr.x", "80"],
    ] {
        let (json, code) = run(args);
        one_line(&json);
        assert_eq!(code, 2, "{json}");
        assert_eq!(field(&json, "error"), "\"usage\"");
    }
}

#[test]
fn pass_scm_receiver_sends_on_the_received_socket() {
    let port = http_server("127.0.0.1:0");
    let p = port.to_string();
    let (json, code) = run(&[
        "pass-scm",
        "127.0.0.1",
        &p,
        "--exec",
        PROBE,
        "send-fd",
        "127.0.0.1",
        &p,
    ]);
    one_line(&json);
    assert_eq!(code, 0, "{json}");
    assert_eq!(field(&json, "mode"), "\"send-fd\"");
    assert_eq!(field(&json, "body"), format!("\"{BODY}\""));
    assert!(field(&json, "detail").contains("SCM_RIGHTS"), "{json}");
}

#[test]
fn pass_scm_child_inherits_only_the_unix_socket() {
    let port = http_server("127.0.0.1:0");
    let p = port.to_string();
    let out = output(&[
        "pass-scm",
        "127.0.0.1",
        &p,
        "--exec",
        "/bin/sh",
        "-c",
        "ls -l /proc/self/fd; echo unix=$METAGUARD_PROBE_UNIX",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.matches("socket:").count(),
        1,
        "only the Unix end, not the TCP socket, crosses exec: {text}"
    );
    assert!(text.contains("unix="), "{text}");
}

#[test]
fn send_fd_without_a_socket_is_a_usage_error() {
    let (json, code) = run(&["send-fd", "127.0.0.1", "80"]);
    one_line(&json);
    assert_eq!(code, 2, "{json}");
    assert_eq!(field(&json, "error"), "\"usage\"");
}
