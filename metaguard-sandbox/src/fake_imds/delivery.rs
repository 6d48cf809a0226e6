//! How the fake service delivers an answer, chosen by the request (so
//! tests of the redaction in the kernel can shape what arrives):
//!
//! - `X-Fake-Chunked: N` — `Transfer-Encoding: chunked`, N-byte chunks;
//! - `X-Fake-Split: N` — written N bytes at a time with `TCP_NODELAY` and a
//!   short pause between writes, so the client receives many segments
//!   (secrets straddle their boundaries);
//! - `X-Fake-Pad: N` — an extra `X-Fake-Padding` header of N bytes (an
//!   oversized header block).
//!
//! Without these headers answers go out as before, in one write.
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::http::{Request, Response};

/// Pause between the pieces of a split answer.
const SPLIT_PAUSE: Duration = Duration::from_millis(2);
/// Most pieces a split answer is written in (bounded work per answer).
const MAX_PIECES: usize = 4096;

fn knob(req: &Request, name: &str) -> Option<usize> {
    req.header(name)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// Writes `resp` to `w` as the request's knobs ask.
pub fn write(
    resp: &Response,
    req: &Request,
    w: &mut TcpStream,
    keep_alive: bool,
) -> io::Result<()> {
    let head = req.method == "HEAD";
    let mut resp = resp.clone();
    if let Some(n) = knob(req, "x-fake-pad") {
        resp = resp.with_header("X-Fake-Padding", &"p".repeat(n.min(1 << 20)));
    }
    let bytes = match knob(req, "x-fake-chunked") {
        Some(n) if !head => chunked(&resp, n, keep_alive),
        _ => {
            let mut v = Vec::new();
            resp.write_to(&mut v, keep_alive, head)?;
            v
        }
    };
    match knob(req, "x-fake-split") {
        Some(n) => {
            w.set_nodelay(true)?;
            let n = n.max(bytes.len().div_ceil(MAX_PIECES));
            for piece in bytes.chunks(n) {
                w.write_all(piece)?;
                w.flush()?;
                std::thread::sleep(SPLIT_PAUSE);
            }
            Ok(())
        }
        None => {
            w.write_all(&bytes)?;
            w.flush()
        }
    }
}

/// The answer with a chunked body of `n`-byte chunks (and a trailer).
fn chunked(resp: &Response, n: usize, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        crate::http::reason(resp.status)
    );
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Transfer-Encoding: chunked\r\n");
    out.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    for c in resp.body.chunks(n) {
        bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        bytes.extend_from_slice(c);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\nX-Fake-Trailer: 1\r\n\r\n");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_body_reassembles() {
        let r = Response::json(200, r#"{"a":"0123456789"}"#);
        let b = String::from_utf8(chunked(&r, 4, true)).unwrap();
        assert!(b.contains("Transfer-Encoding: chunked\r\n") && !b.contains("Content-Length"));
        let body = &b[b.find("\r\n\r\n").unwrap() + 4..];
        assert!(body.starts_with("4\r\n{\"a\"\r\n4\r\n:\"01\r\n"));
        assert!(body.ends_with("0\r\nX-Fake-Trailer: 1\r\n\r\n"));
    }
}
