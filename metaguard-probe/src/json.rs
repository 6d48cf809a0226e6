//! JSON output: string escaping, the one-line result object and exit codes.

use crate::errnames::errno_name;

/// Longest body (in bytes of the original response) reported in the JSON line.
pub const BODY_LIMIT: usize = 4096;

/// Exit codes of the probe.
pub const EXIT_OK: i32 = 0;
pub const EXIT_DENIED: i32 = 1;
pub const EXIT_ERROR: i32 = 2;
pub const EXIT_TIMEOUT: i32 = 3;
pub const EXIT_UNSUPPORTED: i32 = 4;

/// Escape `s` as the contents of a JSON string (without the quotes).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// A quoted JSON string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

/// Turn (possibly non-UTF-8) bytes into text, truncated to `BODY_LIMIT` bytes.
pub fn body_text(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_LIMIT)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Exit code for a failure with the given errno.
pub fn exit_for_errno(errno: i32) -> i32 {
    match errno {
        libc::EPERM | libc::EACCES => EXIT_DENIED,
        libc::ETIMEDOUT => EXIT_TIMEOUT,
        _ => EXIT_ERROR,
    }
}

/// The result of one probe run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub mode: String,
    pub ok: bool,
    pub errno: i32,
    pub error: Option<String>,
    pub detail: String,
    pub pid: i32,
    /// Bytes received (response / reply).
    pub bytes: usize,
    pub body: Vec<u8>,
    /// Bytes sent (request / datagram / packet).
    pub sent: usize,
    /// Additional fields: key and already-encoded JSON value.
    pub extra: Vec<(String, String)>,
    pub exit: i32,
}

impl Outcome {
    fn base(mode: &str) -> Outcome {
        Outcome {
            mode: mode.to_string(),
            ok: false,
            errno: 0,
            error: None,
            detail: String::new(),
            pid: unsafe { libc::getpid() },
            bytes: 0,
            body: Vec::new(),
            sent: 0,
            extra: Vec::new(),
            exit: EXIT_ERROR,
        }
    }

    pub fn success(mode: &str, detail: impl Into<String>) -> Outcome {
        let mut o = Outcome::base(mode);
        o.ok = true;
        o.exit = EXIT_OK;
        o.detail = detail.into();
        o
    }

    /// A failure described by an errno; the exit code follows from it.
    pub fn fail(mode: &str, errno: i32, detail: impl Into<String>) -> Outcome {
        let mut o = Outcome::base(mode);
        o.errno = errno;
        o.error = Some(errno_name(errno));
        o.detail = detail.into();
        o.exit = exit_for_errno(errno);
        o
    }

    /// A failure that is not an errno (bad arguments, empty response, ...): exit 2.
    pub fn other(mode: &str, error: &str, detail: impl Into<String>) -> Outcome {
        let mut o = Outcome::base(mode);
        o.error = Some(error.to_string());
        o.detail = detail.into();
        o.exit = EXIT_ERROR;
        o
    }

    /// The feature is not available on this kernel: exit 4.
    pub fn unsupported(mode: &str, errno: i32, detail: impl Into<String>) -> Outcome {
        let mut o = Outcome::base(mode);
        o.errno = errno;
        o.error = Some("unsupported".to_string());
        o.detail = detail.into();
        o.exit = EXIT_UNSUPPORTED;
        o
    }

    /// The single JSON line (without trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(256 + self.body.len().min(BODY_LIMIT) * 2);
        s.push('{');
        s.push_str(&format!("\"mode\":{}", quote(&self.mode)));
        s.push_str(&format!(",\"ok\":{}", self.ok));
        s.push_str(&format!(",\"errno\":{}", self.errno));
        match &self.error {
            Some(e) => s.push_str(&format!(",\"error\":{}", quote(e))),
            None => s.push_str(",\"error\":null"),
        }
        s.push_str(&format!(",\"detail\":{}", quote(&self.detail)));
        s.push_str(&format!(",\"pid\":{}", self.pid));
        s.push_str(&format!(",\"bytes\":{}", self.bytes));
        s.push_str(&format!(",\"body\":{}", quote(&body_text(&self.body))));
        s.push_str(&format!(",\"sent\":{}", self.sent));
        s.push_str(&format!(",\"exit\":{}", self.exit));
        for (k, v) in &self.extra {
            s.push_str(&format!(",{}:{}", quote(k), v));
        }
        s.push('}');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b"), "a\\\"b");
        assert_eq!(escape("a\\b"), "a\\\\b");
        assert_eq!(escape("l1\r\nl2\t"), "l1\\r\\nl2\\t");
        assert_eq!(escape("\u{1}\u{1f}\u{7f}"), "\\u0001\\u001f\\u007f");
        assert_eq!(escape("\u{8}\u{c}"), "\\b\\f");
        assert_eq!(escape("é✓"), "é✓");
        assert_eq!(escape("\u{2028}"), "\\u2028");
    }

    #[test]
    fn body_truncated_and_lossy() {
        let big = vec![b'x'; BODY_LIMIT + 100];
        assert_eq!(body_text(&big).len(), BODY_LIMIT);
        assert_eq!(body_text(&[b'a', 0xff, b'b']), "a\u{fffd}b");
    }

    #[test]
    fn outcome_json_shape() {
        let mut o = Outcome::fail("tcp", libc::EPERM, "connect: \"denied\"");
        o.pid = 42;
        let j = o.to_json();
        assert_eq!(
            j,
            "{\"mode\":\"tcp\",\"ok\":false,\"errno\":1,\"error\":\"EPERM\",\"detail\":\"connect: \\\"denied\\\"\",\"pid\":42,\"bytes\":0,\"body\":\"\",\"sent\":0,\"exit\":1}"
        );
        let mut s = Outcome::success("udp-sendto", "x");
        s.extra.push(("n".into(), "3".into()));
        s.pid = 1;
        assert!(s.to_json().contains("\"error\":null"));
        assert!(s.to_json().ends_with(",\"n\":3}"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_for_errno(libc::EPERM), EXIT_DENIED);
        assert_eq!(exit_for_errno(libc::EACCES), EXIT_DENIED);
        assert_eq!(exit_for_errno(libc::ETIMEDOUT), EXIT_TIMEOUT);
        assert_eq!(exit_for_errno(libc::ECONNREFUSED), EXIT_ERROR);
        assert_eq!(
            Outcome::unsupported("mptcp", libc::EINVAL, "").exit,
            EXIT_UNSUPPORTED
        );
    }
}
