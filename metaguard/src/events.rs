//! The event path: kernel ring buffer → [`Decision`] (names and paths
//! resolved) → one JSON object per line, or text for people.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use metaguard_common::{
    decide::{Action, Reason},
    event::{
        Event, Hook, EVENT_NO_EXE, EVENT_NO_PORT, EVENT_NO_TASK, EVENT_REDACT, EVENT_REQUEST,
        IMDS_V1, IMDS_V2, NONE_U16,
    },
    http::Reject,
};
use serde::Serialize;

use crate::policy::Policy;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExeInfo {
    /// Path of the running image: the policy's path when the identity is a
    /// rule's executable, else /proc/PID/exe when it still names the same
    /// inode; null when neither holds (the identity itself is the kernel's).
    pub path: Option<String>,
    /// The kernel's name of the file (final path component).
    pub name: String,
    pub dev: String,
    pub ino: u64,
    pub generation: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CgroupInfo {
    pub id: u64,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Destination {
    pub address: String,
    pub port: Option<u16>,
}

/// One decision, as shipped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decision {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub action: &'static str,
    pub reason: &'static str,
    pub rule: Option<String>,
    pub endpoint: Option<String>,
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub uid: u32,
    pub gid: Option<u32>,
    pub comm: Option<String>,
    pub exe: Option<ExeInfo>,
    pub cgroup: CgroupInfo,
    pub destination: Destination,
    pub protocol: &'static str,
    pub hook: &'static str,
    pub count: u64,
    pub policy_generation: u32,
    /// Per-request decisions (`type: "request"`): what was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// Per-request decisions: the connection (socket cookie) it came on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    /// Redaction events (`type: "redact"`): the secret shapes masked in
    /// answers on the connection (never the values), `cut` when the rest
    /// of the connection's input was masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Vec<String>>,
}

/// A request as the kernel's HTTP checker read it. Header values are never
/// reported (they carry tokens).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestInfo {
    /// As sent (methods are case-sensitive); null when the request line
    /// could not be read.
    pub method: Option<String>,
    /// The canonical target (path and query), cut at 128 bytes
    /// (`path_truncated`); null when the request line could not be read.
    pub path: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_truncated: bool,
    /// `v1` (no X-aws-ec2-metadata-token header) or `v2`, for AWS endpoints.
    pub imds: Option<&'static str>,
    /// The check that refused the request (`encoded-slash`, `bare-lf`, ...).
    pub check: Option<&'static str>,
}

/// Report of events the kernel could not queue.
#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Events lost since the previous report.
    pub lost: u64,
    pub total_lost: u64,
}

/// A policy reload (SIGHUP or `metaguard reload`) and its result.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadEvent {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// "applied" or "rejected" (the running policy stays in force).
    pub result: &'static str,
    pub policy: String,
    /// The generation now in force, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// SHA-256 of the file's bytes, when applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why it was rejected, one entry per problem as `metaguard check` prints it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ReloadEvent {
    pub fn text(&self) -> String {
        match self.generation {
            Some(g) => format!(
                "{} RELOAD applied {} (generation {g})",
                self.time, self.policy
            ),
            None => format!(
                "{} RELOAD rejected {}, the running policy stays in force: {}",
                self.time,
                self.policy,
                self.errors.join("; ")
            ),
        }
    }
}

pub fn action_name(a: u8) -> &'static str {
    match a {
        x if x == Action::Allow as u8 => "allow",
        x if x == Action::Deny as u8 => "deny",
        x if x == Action::Audit as u8 => "audit",
        _ => "unknown",
    }
}

pub fn reason_name(r: u8) -> &'static str {
    match r {
        x if x == Reason::RuleMatched as u8 => "rule-matched",
        x if x == Reason::Unguarded as u8 => "unguarded",
        x if x == Reason::NoRule as u8 => "no-matching-rule",
        x if x == Reason::Untagged as u8 => "socket-not-allowed-this-destination",
        x if x == Reason::NoSocket as u8 => "no-socket",
        x if x == Reason::HttpNoRule as u8 => "no-http-rule",
        x if x == Reason::HttpRejected as u8 => "http-rejected",
        x if x == Reason::Imdsv1 as u8 => "imdsv1-refused",
        x if x == Reason::Granted as u8 => "granted",
        x if x == Reason::Redacted as u8 => "redacted",
        x if x == Reason::RedactCut as u8 => "redact-cut",
        x if x == Reason::RedactUnavailable as u8 => "redact-unavailable",
        x if x == Reason::FastOpen as u8 => "fast-open",
        _ => "unknown",
    }
}

pub fn protocol_name(p: u16) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        262 => "mptcp",
        1 => "icmp",
        58 => "icmpv6",
        255 => "raw",
        0 => "ip",
        _ => "other",
    }
}

/// Turns kernel records into decisions; caches cgroup paths.
pub struct Renderer {
    rules: Vec<String>,
    endpoints: Vec<String>,
    /// The policy's custom `redact` keys (shape bit order).
    redact_keys: Vec<String>,
    exe_paths: HashMap<(u32, u64), PathBuf>,
    cgroup_root: Option<PathBuf>,
    cgroup_paths: HashMap<u64, String>,
    /// Wall clock minus CLOCK_BOOTTIME, in ns.
    boot_offset_ns: i128,
}

impl Renderer {
    pub fn new(policy: &Policy) -> Renderer {
        let mut r = Renderer {
            rules: vec![],
            endpoints: vec![],
            redact_keys: vec![],
            exe_paths: HashMap::new(),
            cgroup_root: crate::sys::cgroup::cgroup2_mount().ok(),
            cgroup_paths: HashMap::new(),
            boot_offset_ns: boot_offset_ns(),
        };
        r.set_policy(policy);
        r
    }

    /// Names in events follow the policy in force.
    pub fn set_policy(&mut self, policy: &Policy) {
        self.rules = policy.rules.iter().map(|r| r.name.clone()).collect();
        self.endpoints = policy.endpoints.iter().map(|e| e.name.clone()).collect();
        self.redact_keys = policy
            .redact_keys()
            .into_iter()
            .map(|k| format!("\"{k}\""))
            .collect();
        self.exe_paths = policy
            .rules
            .iter()
            .filter_map(|r| r.exe.as_ref())
            .map(|x| ((x.id.kdev, x.id.ino), x.path.clone()))
            .collect();
    }

    pub fn render(&mut self, ev: &Event) -> Decision {
        let task = ev.flags & EVENT_NO_TASK == 0;
        let exe = (ev.flags & EVENT_NO_EXE == 0).then(|| ExeInfo {
            path: self.exe_path(ev),
            name: cstr(&ev.exe_name),
            dev: format!("{}:{}", ev.exe_dev >> 20, ev.exe_dev & 0xfffff),
            ino: ev.exe_ino,
            generation: ev.exe_generation,
        });
        let request = (ev.flags & EVENT_REQUEST != 0).then(|| request_info(ev));
        let redacted = (ev.flags & EVENT_REDACT != 0).then(|| {
            let keys: Vec<&str> = self.redact_keys.iter().map(String::as_str).collect();
            metaguard_common::redact::shape_names(ev.redacted as u32, &keys)
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
        Decision {
            time: self.wall_time(ev.time_ns),
            kind: if request.is_some() {
                "request"
            } else if redacted.is_some() {
                "redact"
            } else {
                "decision"
            },
            action: action_name(ev.action),
            reason: reason_name(ev.reason),
            rule: name_at(&self.rules, ev.rule),
            endpoint: name_at(&self.endpoints, ev.endpoint),
            pid: task.then_some(ev.pid),
            tid: task.then_some(ev.tid),
            uid: ev.uid,
            gid: task.then_some(ev.gid),
            comm: task.then(|| cstr(&ev.comm)),
            exe,
            cgroup: CgroupInfo {
                id: ev.cgroup_id,
                path: self.cgroup_path(ev.cgroup_id),
            },
            destination: Destination {
                address: display_addr(&ev.daddr).to_string(),
                port: (ev.flags & EVENT_NO_PORT == 0).then_some(ev.dport),
            },
            protocol: protocol_name(ev.protocol),
            hook: Hook::from_u8(ev.hook).map(Hook::name).unwrap_or("unknown"),
            count: 1,
            policy_generation: ev.policy_generation,
            connection: (request.is_some() || redacted.is_some()).then_some(ev.cookie),
            request,
            redacted,
        }
    }

    fn exe_path(&self, ev: &Event) -> Option<String> {
        if let Some(p) = self.exe_paths.get(&(ev.exe_dev, ev.exe_ino)) {
            return Some(p.display().to_string());
        }
        // Display only: trusted when /proc still names the inode the kernel saw.
        let link = std::fs::read_link(format!("/proc/{}/exe", ev.pid)).ok()?;
        let m = std::fs::metadata(&link).ok()?;
        let kdev = ((libc::major(m.dev()) as u32) << 20) | libc::minor(m.dev()) as u32;
        (m.ino() == ev.exe_ino && kdev == ev.exe_dev).then(|| link.display().to_string())
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cgroup_paths.get(&id) {
            return Some(p.clone());
        }
        let root = self.cgroup_root.clone()?;
        walk_cgroups(&root, &root, 0, &mut self.cgroup_paths);
        self.cgroup_paths.get(&id).cloned()
    }

    fn wall_time(&self, boot_ns: u64) -> String {
        let ns = boot_ns as i128 + self.boot_offset_ns;
        time::OffsetDateTime::from_unix_timestamp_nanos(ns)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }

    pub fn now(&self) -> String {
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

fn walk_cgroups(root: &Path, dir: &Path, depth: u32, out: &mut HashMap<u64, String>) {
    if depth > 32 {
        return;
    }
    if let Ok(m) = std::fs::metadata(dir) {
        let rel = dir
            .strip_prefix(root)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_default();
        out.insert(m.ino(), rel);
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk_cgroups(root, &e.path(), depth + 1, out);
        }
    }
}

fn boot_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_BOOTTIME)
}

fn name_at(names: &[String], i: u16) -> Option<String> {
    if i == NONE_U16 {
        None
    } else {
        Some(
            names
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| format!("#{i}")),
        )
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// IPv4-mapped keys are shown as the IPv4 address they are.
pub fn display_addr(key: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Output format of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Text,
}

impl Decision {
    pub fn line(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string(self).unwrap_or_default(),
            Format::Text => self.text(),
        }
    }

    pub fn text(&self) -> String {
        let dest = match (
            self.destination.port,
            self.destination.address.contains(':'),
        ) {
            (Some(p), true) => format!("[{}]:{p}", self.destination.address),
            (Some(p), false) => format!("{}:{p}", self.destination.address),
            (None, _) => self.destination.address.clone(),
        };
        let who = match (&self.exe, self.pid) {
            (Some(x), Some(pid)) => format!(
                "pid={pid} uid={} exe={}",
                self.uid,
                x.path.clone().unwrap_or_else(|| x.name.clone())
            ),
            (_, Some(pid)) => format!("pid={pid} uid={}", self.uid),
            _ => format!("socket-uid={}", self.uid),
        };
        let mut repeats = if self.count > 1 {
            format!(" x{}", self.count)
        } else {
            String::new()
        };
        if let Some(r) = &self.redacted {
            repeats.push_str(&format!(" redacted={}", r.join(",")));
        }
        if let Some(r) = &self.request {
            repeats.push_str(&format!(
                " request=\"{} {}\"",
                r.method.as_deref().unwrap_or("?"),
                r.path.as_deref().unwrap_or("?")
            ));
            if let Some(c) = r.check {
                repeats.push_str(&format!(" check={c}"));
            }
            if let Some(v) = r.imds {
                repeats.push_str(&format!(" imds={v}"));
            }
        }
        format!(
            "{} {:<5} {:<8} {:<5} {dest} endpoint={} rule={} reason={} {who} comm={} cgroup={}{repeats}",
            self.time,
            self.action.to_uppercase(),
            self.hook,
            self.protocol,
            self.endpoint.as_deref().unwrap_or("-"),
            self.rule.as_deref().unwrap_or("-"),
            self.reason,
            self.comm.as_deref().unwrap_or("-"),
            self.cgroup.path.as_deref().unwrap_or("?"),
        )
    }
}

fn request_info(ev: &Event) -> RequestInfo {
    let method_len = (ev.method_len as usize).min(ev.method.len());
    let path_len = (ev.path_len as usize).min(ev.path.len());
    let line_read = method_len > 0;
    RequestInfo {
        method: line_read.then(|| String::from_utf8_lossy(&ev.method[..method_len]).into_owned()),
        path: (line_read && ev.path_len > 0)
            .then(|| String::from_utf8_lossy(&ev.path[..path_len]).into_owned()),
        path_truncated: ev.path_len as usize > ev.path.len(),
        imds: match ev.imds {
            IMDS_V1 => Some("v1"),
            IMDS_V2 => Some("v2"),
            _ => None,
        },
        check: (ev.http_check != 0).then(|| Reject::from_u8(ev.http_check).name()),
    }
}

/// Reads one record from ring buffer bytes.
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    (bytes.len() >= std::mem::size_of::<Event>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}
