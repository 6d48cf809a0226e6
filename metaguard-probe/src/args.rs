//! Command-line parsing (std only).

use std::time::Duration;

use crate::addr::{parse_ip, Ip};

pub const USAGE: &str = "usage: metaguard-probe <MODE> <ADDR> <PORT> [--path /x] [--payload TEXT] \
[--timeout-ms N] [--count N] [--iface NAME] [--src A.B.C.D] [--then MODE] [--exec PATH [ARGS...]]\n\
modes: tcp tcp6-mapped connect-only udp-sendto udp-sendmsg udp6-mapped udp-connected tfo mptcp \
uring uring-sqpoll raw-udp raw-tcp-syn packet connect-loop http-loop fork exec pass-fd pass-fd6-mapped pass-scm send-fd http-raw hold";

pub const MODES: &[&str] = &[
    "tcp",
    "tcp6-mapped",
    "connect-only",
    "udp-sendto",
    "udp-sendmsg",
    "udp6-mapped",
    "udp-connected",
    "tfo",
    "mptcp",
    "uring",
    "uring-sqpoll",
    "raw-udp",
    "raw-tcp-syn",
    "packet",
    "connect-loop",
    "http-loop",
    "fork",
    "exec",
    "pass-fd",
    "pass-fd6-mapped",
    "pass-scm",
    "send-fd",
    "http-raw",
    "hold",
];

pub const DEFAULT_PATH: &str = "/latest/meta-data/instance-id";
pub const DEFAULT_PAYLOAD: &str = "probe";
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
pub const MAX_COUNT: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Opts {
    pub mode: String,
    pub ip: Ip,
    pub port: u16,
    pub path: String,
    pub payload: String,
    pub timeout: Duration,
    pub count: Option<u64>,
    pub iface: Option<String>,
    /// `--src A.B.C.D`: source address of crafted packets (raw, packet modes).
    pub src: Option<std::net::Ipv4Addr>,
    pub then: Option<String>,
    /// `--exec PATH ARGS...`: program and its arguments.
    pub exec: Vec<String>,
}

/// Parse arguments (without argv[0]). Err carries (mode if known, message).
pub fn parse(args: &[String]) -> Result<Opts, (String, String)> {
    let mut positional: Vec<String> = Vec::new();
    let mut path = DEFAULT_PATH.to_string();
    let mut payload = DEFAULT_PAYLOAD.to_string();
    let mut timeout_ms = DEFAULT_TIMEOUT_MS;
    let mut count = None;
    let mut iface = None;
    let mut src = None;
    let mut then = None;
    let mut exec = Vec::new();

    let mode_hint = args.first().cloned().unwrap_or_else(|| "usage".to_string());
    let err = |m: String| (mode_hint.clone(), m);

    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let value = |i: usize| -> Result<String, (String, String)> {
            args.get(i + 1)
                .cloned()
                .ok_or_else(|| err(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--path" => {
                path = value(i)?;
                i += 2;
            }
            "--payload" => {
                payload = value(i)?;
                i += 2;
            }
            "--timeout-ms" => {
                let v = value(i)?;
                timeout_ms = v
                    .parse()
                    .map_err(|_| err(format!("bad --timeout-ms {v:?}")))?;
                if timeout_ms == 0 {
                    return Err(err("--timeout-ms must be > 0".into()));
                }
                i += 2;
            }
            "--count" => {
                let v = value(i)?;
                let n: u64 = v.parse().map_err(|_| err(format!("bad --count {v:?}")))?;
                if n == 0 || n > MAX_COUNT {
                    return Err(err(format!("--count must be 1..={MAX_COUNT}")));
                }
                count = Some(n);
                i += 2;
            }
            "--iface" => {
                iface = Some(value(i)?);
                i += 2;
            }
            "--src" => {
                let v = value(i)?;
                src = Some(
                    v.parse()
                        .map_err(|_| err(format!("bad --src {v:?}: an IPv4 address")))?,
                );
                i += 2;
            }
            "--then" => {
                then = Some(value(i)?);
                i += 2;
            }
            "--exec" => {
                exec = args[i + 1..].to_vec();
                if exec.is_empty() {
                    return Err(err("--exec needs a PATH".into()));
                }
                i = args.len();
            }
            "-h" | "--help" => return Err(err(USAGE.to_string())),
            s if s.starts_with("--") => return Err(err(format!("unknown option {s}"))),
            _ => {
                positional.push(a.clone());
                i += 1;
            }
        }
    }

    if positional.len() != 3 {
        return Err(err(format!(
            "expected <MODE> <ADDR> <PORT>, got {} positional argument(s)\n{USAGE}",
            positional.len()
        )));
    }
    let mode = positional[0].clone();
    if !MODES.contains(&mode.as_str()) {
        return Err(err(format!("unknown mode {mode:?}\n{USAGE}")));
    }
    let ip = parse_ip(&positional[1]).map_err(err)?;
    let port: u16 = positional[2]
        .parse()
        .map_err(|_| err(format!("bad port {:?}", positional[2])))?;

    match mode.as_str() {
        "connect-loop" | "http-loop" if count.is_none() => {
            return Err(err(format!("{mode} needs --count N")))
        }
        "packet" if iface.is_none() => return Err(err("packet needs --iface NAME".into())),
        "fork" => match then.as_deref() {
            None => return Err(err("fork needs --then MODE".into())),
            Some("fork") | Some("exec") => {
                return Err(err("--then must name a network mode (not fork/exec)".into()))
            }
            Some(m) if !MODES.contains(&m) => {
                return Err(err(format!("unknown --then mode {m:?}")))
            }
            Some(_) => {}
        },
        "exec" if exec.is_empty() => return Err(err("exec needs --exec PATH [ARGS...]".into())),
        _ => {}
    }

    Ok(Opts {
        mode,
        ip,
        port,
        path,
        payload,
        timeout: Duration::from_millis(timeout_ms),
        count,
        iface,
        src,
        then,
        exec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn basic() {
        let o = parse(&v("tcp 169.254.169.254 80")).unwrap();
        assert_eq!(o.mode, "tcp");
        assert_eq!(o.port, 80);
        assert_eq!(o.path, DEFAULT_PATH);
        assert_eq!(o.timeout, Duration::from_millis(2000));
    }

    #[test]
    fn options() {
        let o = parse(&v(
            "udp-sendto 2852039166 53 --payload hi --timeout-ms 10 --path /a",
        ))
        .unwrap();
        assert_eq!(o.payload, "hi");
        assert_eq!(o.timeout, Duration::from_millis(10));
        assert_eq!(o.path, "/a");
        assert_eq!(o.ip.to_string(), "169.254.169.254");
    }

    #[test]
    fn exec_takes_rest() {
        let o = parse(&v("exec 127.0.0.1 1 --exec /bin/echo hi --timeout-ms 5")).unwrap();
        assert_eq!(o.exec, v("/bin/echo hi --timeout-ms 5"));
        assert_eq!(o.timeout, Duration::from_millis(2000));
    }

    #[test]
    fn errors() {
        assert!(parse(&v("tcp 127.0.0.1")).is_err());
        assert!(parse(&v("nope 127.0.0.1 80")).is_err());
        assert!(parse(&v("tcp 127.0.0.1 99999")).is_err());
        assert!(parse(&v("connect-loop 127.0.0.1 80")).is_err());
        assert!(parse(&v("connect-loop 127.0.0.1 80 --count 1000001")).is_err());
        assert!(parse(&v("packet 127.0.0.1 80")).is_err());
        assert!(parse(&v("fork 127.0.0.1 80")).is_err());
        assert!(parse(&v("fork 127.0.0.1 80 --then fork")).is_err());
        assert!(parse(&v("exec 127.0.0.1 80")).is_err());
        assert!(parse(&v("tcp 127.0.0.1 80 --bogus")).is_err());
        assert!(parse(&v("fork 127.0.0.1 80 --then tcp")).is_ok());
    }
}
