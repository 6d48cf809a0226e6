//! The policy model: a TOML file is parsed, checked (every problem reported
//! with its `file:line:column`), its cloud presets expanded and its names
//! resolved against this host (users, groups, cgroups, executables) into a
//! [`Policy`] the loader can encode into maps.
//!
//! ```toml
//! mode = "enforce"                 # or "audit": decide and log, block nothing
//! include = ["aws", "gcp"]         # built-in endpoint presets
//!
//! [guard]                          # which processes the policy applies to; omitted = all
//! users   = ["www-data", 1001]
//! cgroups = ["/system.slice/app.service"]
//!
//! [[endpoint]]
//! name      = "aws-imds"
//! addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]
//! ports     = [80]                 # omitted = every port
//! mode      = "audit"              # optional override of the top-level mode
//!
//! [[allow]]
//! name      = "ssm-agent"
//! endpoints = ["aws-imds"]         # endpoint or preset names; omitted = every endpoint
//! exe       = "/usr/bin/amazon-ssm-agent"
//! users     = ["root"]
//! groups    = ["adm", 4]
//! cgroups   = ["/system.slice/amazon-ssm-agent.service"]
//! ```
use std::{fmt, path::Path, path::PathBuf};

use ipnet::IpNet;

pub use crate::sys::cgroup::CgroupRef;
pub use crate::sys::exe::ExeId;

mod compile;
mod error;
pub mod presets;
mod summary;
mod tree;
mod watch;

pub use error::{PolicyError, PolicyErrors};
pub use summary::summary;
pub use watch::ExeWatcher;

/// The most `[[allow]]` rules a policy may hold (the width of the kernel's rule bitsets).
pub const MAX_RULES: usize = 256;
const _: () = assert!(MAX_RULES == metaguard_common::ruleset::MAX_RULES);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Block connections no rule allows.
    #[default]
    Enforce,
    /// Decide and log, block nothing.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The file it came from.
    pub source: PathBuf,
    /// The top-level mode (default: enforce). Each endpoint's `mode` already
    /// has it applied.
    pub mode: Mode,
    pub guard: Guard,
    /// Preset endpoints first (in `include` order), then `[[endpoint]]`s in file order.
    pub endpoints: Vec<Endpoint>,
    /// `[[allow]]` rules in file order; at most [`MAX_RULES`].
    pub rules: Vec<Rule>,
    pub events: EventSettings,
}

/// `[events]`: how decisions are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSettings {
    /// Repeats of a reported decision (same process, executable, user,
    /// cgroup, destination and outcome) within this window are counted and
    /// reported together, with a count; zero reports every decision.
    pub aggregate: std::time::Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            aggregate: std::time::Duration::from_secs(1),
        }
    }
}

/// Which processes the policy applies to: a process is guarded when its uid
/// is in `users` or its cgroup is (a descendant of) one in `cgroups`. Both
/// empty = every process is guarded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guard {
    /// Sorted, deduplicated.
    pub users: Vec<u32>,
    /// Deduplicated by cgroup id, in file order.
    pub cgroups: Vec<CgroupRef>,
}

/// One request an `http` list allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    /// Compared exactly (methods are case-sensitive tokens).
    pub method: String,
    /// Canonical form of the pattern's path; for a wildcard (`/a/*`) the
    /// prefix, ending in `/`, below which one or more segments must follow.
    pub path: String,
    pub wildcard: bool,
    /// Lower-case names of headers the request must carry.
    pub require_headers: Vec<String>,
}

impl Guard {
    pub fn guards_everyone(&self) -> bool {
        self.users.is_empty() && self.cgroups.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    /// The preset it came from (`include`), `None` for `[[endpoint]]`s.
    pub preset: Option<String>,
    /// Network prefixes (host bits clear), deduplicated, in file order.
    pub prefixes: Vec<IpNet>,
    /// Sorted, deduplicated; `None` = every port.
    pub ports: Option<Vec<u16>>,
    /// Resolved: the endpoint's own `mode`, else the top-level one.
    pub mode: Mode,
    /// Requests without an `X-aws-ec2-metadata-token` header (IMDSv1) are
    /// denied whatever the rules say.
    pub require_imdsv2: bool,
}

/// An allow rule: a process matching every selector given may reach the
/// rule's endpoints. An empty selector list means "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    /// Indices into [`Policy::endpoints`], sorted and deduplicated; every
    /// endpoint when the rule names none.
    pub endpoints: Vec<usize>,
    pub exe: Option<ExeRef>,
    /// Sorted, deduplicated uids.
    pub users: Vec<u32>,
    /// Sorted, deduplicated gids.
    pub groups: Vec<u32>,
    /// Deduplicated by cgroup id, in file order.
    pub cgroups: Vec<CgroupRef>,
    /// `None`: any request on the connection. `Some`: exactly these.
    pub http: Option<Vec<HttpRule>>,
    /// Secret shapes masked in the answers a process gets under this rule
    /// (`redact = [...]`); empty: the rule entitles it to them.
    pub redact: Vec<Redact>,
}

/// One entry of a rule's `redact` list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Redact {
    /// A built-in shape by name (`metaguard_common::redact::BUILTIN_SHAPES`).
    Builtin(&'static str),
    /// A custom JSON key, written quoted in the policy (`'"client_secret"'`).
    Key(String),
}

/// A rule's executable: the path as written (absolute) and the identity of
/// the file it named when the policy was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeRef {
    pub path: PathBuf,
    pub id: ExeId,
}

/// Reads, parses, checks and resolves the policy at `path`.
pub fn load(path: &Path) -> Result<Policy, PolicyErrors> {
    load_bytes(path).map(|(p, _)| p)
}

/// As [`load`], also returning the file's bytes as read (for a checksum of
/// exactly what was loaded).
pub fn load_bytes(path: &Path) -> Result<(Policy, Vec<u8>), PolicyErrors> {
    let unreadable = |e: std::io::Error| {
        PolicyErrors::new(vec![PolicyError::file(
            path,
            format!("cannot read the policy: {e}"),
        )])
    };
    let bytes = std::fs::read(path).map_err(unreadable)?;
    let src = std::str::from_utf8(&bytes).map_err(|_| {
        unreadable(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    let p = parse_str(src, path)?;
    Ok((p, bytes))
}

/// Parses, checks and resolves policy text; `path` names it in errors and
/// becomes [`Policy::source`].
pub fn parse_str(src: &str, path: &Path) -> Result<Policy, PolicyErrors> {
    let policy = compile::compile(src, path)?;
    let problems =
        crate::loader::encode::capacity_problems(&crate::loader::encode::encode(&policy, 1, 0));
    if !problems.is_empty() {
        return Err(PolicyErrors::new(
            problems
                .into_iter()
                .map(|m| PolicyError::file(path, m))
                .collect(),
        ));
    }
    Ok(policy)
}

impl Policy {
    /// The custom `redact` keys of every rule, in order of first use: key
    /// `i` is shape bit `SHAPE_CUSTOM_FIRST + i`.
    pub fn redact_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for r in &self.rules {
            for e in &r.redact {
                if let Redact::Key(k) = e {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
            }
        }
        keys
    }

    /// The `SHAPE_*` bits rule `rule` redacts.
    pub fn redact_bits(&self, rule: &Rule) -> u32 {
        Self::redact_bits_with(rule, &self.redact_keys())
    }

    /// The `SHAPE_*` bits rule `rule` redacts when custom key `i` of `keys`
    /// is shape bit `SHAPE_CUSTOM_FIRST + i` (keys not among them: none).
    pub fn redact_bits_with(rule: &Rule, keys: &[String]) -> u32 {
        use metaguard_common::redact::{BUILTIN_SHAPES, SHAPE_CUSTOM_FIRST};
        rule.redact.iter().fold(0, |bits, e| {
            bits | match e {
                Redact::Builtin(n) => BUILTIN_SHAPES
                    .iter()
                    .find(|(b, _)| b == n)
                    .map_or(0, |(_, v)| *v),
                Redact::Key(k) => keys
                    .iter()
                    .position(|x| x == k)
                    .map_or(0, |i| 1 << (SHAPE_CUSTOM_FIRST + i as u32)),
            }
        })
    }

    /// Index of the endpoint called `name`.
    pub fn endpoint_index(&self, name: &str) -> Option<usize> {
        self.endpoints.iter().position(|e| e.name == name)
    }

    /// The executable paths the rules name, deduplicated.
    pub fn exe_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .rules
            .iter()
            .filter_map(|r| r.exe.as_ref().map(|x| x.path.clone()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests;
