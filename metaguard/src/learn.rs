//! `metaguard learn`: from the JSON events `metaguard run` printed (typically
//! in audit mode) to a reviewable policy that allows exactly the traffic seen.
//!
//! Every `decision` (and future HTTP-level `request`) event is an observation
//! of a process reaching an endpoint, whatever its action was: in audit mode
//! everything is logged as "audit", and a denial is traffic someone tried.
//! Observations are grouped by (executable path, uid) into one `[[allow]]`
//! rule each. The output is TOML text with comments saying what each rule
//! covers; it is compiled with the policy module before it is written, so a
//! proposal `metaguard check` would refuse is reported, not silently shipped.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
};

use nix::unistd::{Uid, User};
use serde::Deserialize;

use crate::{
    policy::{self, presets, PolicyErrors, MAX_RULES},
    sys::{cgroup, exe},
};

/// At least this many distinct request paths under one parent (same method)
/// are proposed as `parent/*`.
pub const COLLAPSE_AT: usize = 8;

/// What `metaguard learn` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// JSON-lines events; `-` reads standard input.
    pub from: PathBuf,
    /// Where to write the proposal; `None` = standard output.
    pub out: Option<PathBuf>,
    /// An existing policy whose mode, include, guard and endpoints are kept.
    pub policy: Option<PathBuf>,
}

/// The proposal and what the operator should hear about on stderr.
#[derive(Debug, Clone)]
pub struct Learned {
    pub toml: String,
    /// One line each: malformed input lines (with their line number) and
    /// observations that could not become a rule.
    pub diagnostics: Vec<String>,
    pub stats: Stats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Non-empty lines read.
    pub lines: usize,
    pub decisions: usize,
    pub requests: usize,
    pub lost_reports: usize,
    /// Sum of the `lost` fields of the lost-event reports.
    pub lost_events: u64,
    /// Objects of other types, by type.
    pub other: BTreeMap<String, usize>,
    pub malformed: usize,
    /// Decisions or requests that could not be attributed to a rule.
    pub skipped: usize,
    pub rules: usize,
    /// Rules proposed commented out (their exe or endpoints cannot be used here).
    pub disabled: usize,
}

impl Stats {
    /// Events that were understood (decisions, requests, lost reports, other types).
    pub fn valid(&self) -> usize {
        self.decisions + self.requests + self.lost_reports + self.other.values().sum::<usize>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("cannot write {path}: {err}")]
    Write { path: String, err: std::io::Error },
    #[error("the existing policy does not compile:\n{0}")]
    Policy(PolicyErrors),
    #[error("{label}: no decision or request events to learn from")]
    NothingToLearn {
        label: String,
        /// The malformed lines that were read instead.
        diagnostics: Vec<String>,
    },
}

// ---- input ----------------------------------------------------------------

/// The fields of a `decision` (events.rs `Decision`) that learning uses; a
/// `request` event carries the same fields plus `request`.
#[derive(Debug, Deserialize)]
struct Observation {
    time: String,
    action: String,
    #[serde(default)]
    reason: Option<String>,
    endpoint: Option<String>,
    pid: Option<u32>,
    uid: u32,
    exe: Option<ExeIn>,
    cgroup: CgroupIn,
    destination: DestinationIn,
    hook: String,
    #[serde(default = "one")]
    count: u64,
    #[serde(default)]
    request: Option<RequestIn>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Deserialize)]
struct ExeIn {
    path: Option<String>,
    name: String,
    dev: String,
    ino: u64,
}

#[derive(Debug, Deserialize)]
struct CgroupIn {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DestinationIn {
    address: String,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct RequestIn {
    method: String,
    path: String,
    #[serde(default)]
    imds: Option<String>,
    #[serde(default)]
    path_truncated: bool,
}

#[derive(Debug, Deserialize)]
struct LostIn {
    lost: u64,
}

#[derive(Debug, Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: String,
}

// ---- aggregation ------------------------------------------------------------

/// A time as written in the events, ordered by the instant it names.
#[derive(Debug, Clone)]
struct Stamp {
    text: String,
    at: Option<time::OffsetDateTime>,
}

impl Stamp {
    fn new(text: &str) -> Stamp {
        Stamp {
            text: text.to_string(),
            at: time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .ok(),
        }
    }

    fn before(&self, other: &Stamp) -> bool {
        match (self.at, other.at) {
            (Some(a), Some(b)) => a < b,
            _ => self.text < other.text,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Span {
    first: Option<Stamp>,
    last: Option<Stamp>,
}

impl Span {
    fn add(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        let s = Stamp::new(t);
        if self.first.as_ref().is_none_or(|f| s.before(f)) {
            self.first = Some(s.clone());
        }
        if self.last.as_ref().is_none_or(|l| l.before(&s)) {
            self.last = Some(s);
        }
    }

    fn describe(&self) -> String {
        match (&self.first, &self.last) {
            (Some(f), Some(l)) if f.text == l.text => f.text.clone(),
            (Some(f), Some(l)) => format!("{} .. {}", f.text, l.text),
            _ => "unknown".into(),
        }
    }
}

/// Everything seen for one (executable path, uid).
#[derive(Debug, Default)]
struct RuleObs {
    decisions: u64,
    actions: BTreeMap<String, u64>,
    reasons: BTreeSet<String>,
    span: Span,
    endpoints: BTreeSet<String>,
    pids: BTreeSet<u32>,
    hooks: BTreeSet<String>,
    /// `None` stands for "path unknown" (the cgroup had gone when the event was read).
    cgroups: BTreeSet<Option<String>>,
    http: BTreeSet<(String, String)>,
    /// Requests whose path cannot be written as a pattern that matches just
    /// it: truncated in the event, or holding a literal `*` (which a
    /// pattern would read as a wildcard).
    http_unusable: BTreeSet<(String, String)>,
    imds: BTreeMap<String, u64>,
}

/// Everything seen for one endpoint name (used for `[[endpoint]]` stubs).
#[derive(Debug, Default)]
struct EndpointObs {
    addresses: BTreeSet<String>,
    ports: BTreeSet<Option<u16>>,
}

#[derive(Default)]
struct Input {
    stats: Stats,
    span: Span,
    rules: BTreeMap<(String, u32), RuleObs>,
    endpoints: BTreeMap<String, EndpointObs>,
    diagnostics: Vec<String>,
}

fn read_events(text: &str, label: &str) -> Input {
    let mut inp = Input::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        inp.stats.lines += 1;
        let bad = |inp: &mut Input, msg: String| {
            inp.stats.malformed += 1;
            inp.diagnostics
                .push(format!("{label}:{n}: malformed event: {msg}"));
        };
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                bad(&mut inp, e.to_string());
                continue;
            }
        };
        let kind = match Typed::deserialize(&value) {
            Ok(t) => t.kind,
            Err(e) => {
                bad(&mut inp, e.to_string());
                continue;
            }
        };
        match kind.as_str() {
            "decision" | "request" => {
                let o = match Observation::deserialize(&value) {
                    Ok(o) => o,
                    Err(e) => {
                        bad(&mut inp, e.to_string());
                        continue;
                    }
                };
                if kind == "request" && o.request.is_none() {
                    bad(&mut inp, "a request event without `request`".into());
                    continue;
                }
                if kind == "request" {
                    inp.stats.requests += 1;
                } else {
                    inp.stats.decisions += 1;
                }
                inp.span.add(&o.time);
                if let Some(why) = observe(&mut inp, o) {
                    inp.stats.skipped += 1;
                    inp.diagnostics.push(format!("{label}:{n}: skipped: {why}"));
                }
            }
            "lost" => match LostIn::deserialize(&value) {
                Ok(l) => {
                    inp.stats.lost_reports += 1;
                    inp.stats.lost_events += l.lost;
                    if let Some(t) = value.get("time").and_then(|t| t.as_str()) {
                        inp.span.add(t);
                    }
                }
                Err(e) => bad(&mut inp, e.to_string()),
            },
            _ => *inp.stats.other.entry(kind).or_default() += 1,
        }
    }
    inp
}

/// Records one observation; says why when it cannot become part of a rule.
fn observe(inp: &mut Input, o: Observation) -> Option<String> {
    let Some(endpoint) = o.endpoint.clone() else {
        return Some(format!(
            "{} {} to {} names no endpoint",
            o.action, o.hook, o.destination.address
        ));
    };
    let path = match &o.exe {
        None => {
            return Some(format!(
                "{} {} to {endpoint} (uid {}) has no executable identity (egress events carry none)",
                o.action, o.hook, o.uid
            ))
        }
        Some(x) => match &x.path {
            Some(p) => p.clone(),
            None => {
                return Some(format!(
                    "{} {} to {endpoint} (uid {}) by `{}` (dev {}, inode {}): the identity had no path (the process had exited or its file was replaced)",
                    o.action, o.hook, o.uid, x.name, x.dev, x.ino
                ))
            }
        },
    };
    let ep = inp.endpoints.entry(endpoint.clone()).or_default();
    ep.addresses.insert(o.destination.address.clone());
    ep.ports.insert(o.destination.port);

    let r = inp.rules.entry((path, o.uid)).or_default();
    r.decisions += o.count.max(1);
    *r.actions.entry(o.action.clone()).or_default() += o.count.max(1);
    if let Some(reason) = o.reason {
        r.reasons.insert(reason);
    }
    r.span.add(&o.time);
    r.endpoints.insert(endpoint);
    if let Some(pid) = o.pid {
        r.pids.insert(pid);
    }
    r.hooks.insert(o.hook);
    r.cgroups.insert(o.cgroup.path);
    if let Some(req) = o.request {
        if req.path_truncated || req.path.contains('*') || !exact_pattern(&req.method, &req.path) {
            r.http_unusable.insert((req.method, req.path));
        } else {
            r.http.insert((req.method, req.path));
        }
        let v = req.imds.unwrap_or_else(|| "none".into());
        *r.imds.entry(v).or_default() += 1;
    }
    None
}

// ---- HTTP paths ---------------------------------------------------------------

/// Sorted, deduplicated (method, path) pairs, with every group of at least
/// [`COLLAPSE_AT`] distinct paths that share a method and a parent replaced by
/// `parent/*`; also returns a note for each collapse.
pub fn collapse_http(seen: &BTreeSet<(String, String)>) -> (Vec<(String, String)>, Vec<String>) {
    let mut groups: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (m, p) in seen {
        groups
            .entry((m.clone(), parent(p).to_string()))
            .or_default()
            .insert(p.clone());
    }
    let mut out = BTreeSet::new();
    let mut notes = Vec::new();
    for ((m, parent), paths) in groups {
        if paths.len() >= COLLAPSE_AT {
            let wild = format!("{parent}/*");
            notes.push(format!(
                "{} distinct {m} paths under {parent}/ collapsed into {wild}",
                paths.len()
            ));
            out.insert((m, wild));
        } else {
            out.extend(paths.into_iter().map(|p| (m.clone(), p)));
        }
    }
    (out.into_iter().collect(), notes)
}

/// Whether `method` `path` written as an `http` entry matches exactly that
/// request: a method token the policy accepts and a path already in the
/// canonical form the policy requires.
fn exact_pattern(method: &str, path: &str) -> bool {
    use metaguard_common::http::canonical_pattern;
    let method_ok = !method.is_empty()
        && method.len() <= 16
        && method
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    method_ok
        && matches!(canonical_pattern(path.as_bytes()),
            Ok((buf, len, false)) if &buf[..len] == path.as_bytes())
}

/// "/a/b/c" → "/a/b"; "/a" → "" (so the collapsed form is "/*").
fn parent(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed.rfind('/') {
        Some(i) => &trimmed[..i],
        None => "",
    }
}

// ---- output -------------------------------------------------------------------

/// Text for a `#` comment: control characters (a newline in an executable's
/// file name, say) are escaped, so event data can never end a comment and
/// become policy text.
fn c(s: &str) -> String {
    s.chars()
        .flat_map(|ch| {
            let esc: Vec<char> = if ch.is_control() {
                ch.escape_default().collect()
            } else {
                vec![ch]
            };
            esc
        })
        .collect()
}

/// A TOML string literal, escaped by the toml crate.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list<I: IntoIterator<Item = String>>(items: I) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// A uid as a policy writes it: the name when this host's passwd has one.
fn user_label(uid: u32) -> (String, Option<String>) {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => (q(&u.name), Some(u.name)),
        _ => (uid.to_string(), None),
    }
}

/// Interpreters: one identity for every script they run.
fn is_interpreter(file: &str) -> bool {
    const NAMES: [&str; 12] = [
        "python", "perl", "ruby", "node", "bash", "sh", "dash", "zsh", "java", "php", "busybox",
        "env",
    ];
    NAMES.iter().any(|n| {
        file == *n
            || file
                .strip_prefix(n)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    })
}

/// The parts of an existing policy a proposal keeps.
struct Existing {
    path: PathBuf,
    /// Endpoint names rules may reference: the compiled endpoints and the included presets.
    names: BTreeSet<String>,
    text: String,
    rules_dropped: usize,
}

fn existing(path: &Path) -> Result<Existing, LearnError> {
    let compiled = policy::load(path).map_err(LearnError::Policy)?;
    let src = std::fs::read_to_string(path).map_err(|err| LearnError::Read {
        path: path.display().to_string(),
        err,
    })?;
    let table: toml::Table = src.parse().map_err(|e: toml::de::Error| {
        LearnError::Policy(PolicyErrors::new(vec![policy::PolicyError::file(
            path,
            e.to_string(),
        )]))
    })?;
    let mut names: BTreeSet<String> = compiled.endpoints.iter().map(|e| e.name.clone()).collect();
    names.extend(compiled.endpoints.iter().filter_map(|e| e.preset.clone()));

    // Re-emitted key by key in the policy reference's order (the compiler
    // has already refused any other key), values as the toml crate writes them.
    let kv = |t: &toml::Table, order: &[&str], text: &mut String| {
        for k in order {
            if let Some(v) = t.get(*k) {
                let _ = writeln!(text, "{k} = {v}");
            }
        }
    };
    let mut text = String::new();
    kv(&table, &["mode", "include"], &mut text);
    if let Some(toml::Value::Table(g)) = table.get("guard") {
        text.push_str("\n[guard]\n");
        kv(g, &["users", "cgroups"], &mut text);
    }
    if let Some(toml::Value::Array(eps)) = table.get("endpoint") {
        for e in eps.iter().filter_map(|e| e.as_table()) {
            text.push_str("\n[[endpoint]]\n");
            kv(e, &["name", "addresses", "ports", "mode"], &mut text);
        }
    }
    Ok(Existing {
        path: path.to_path_buf(),
        names,
        text,
        rules_dropped: compiled.rules.len(),
    })
}

/// Learns a policy from event text. `label` names the input in comments and
/// diagnostics.
pub fn learn(
    events: &str,
    label: &str,
    existing_policy: Option<&Path>,
) -> Result<Learned, LearnError> {
    let existing = existing_policy.map(existing).transpose()?;
    let mut inp = read_events(events, label);
    if inp.stats.decisions + inp.stats.requests == 0 {
        return Err(LearnError::NothingToLearn {
            label: label.to_string(),
            diagnostics: inp.diagnostics,
        });
    }

    let mut out = String::new();
    let s = &inp.stats;
    let _ = writeln!(out, "# Proposed by `metaguard learn` from {}.", c(label));
    let mut kinds = vec![format!("{} decisions", s.decisions)];
    if s.requests > 0 {
        kinds.push(format!("{} HTTP requests", s.requests));
    }
    kinds.push(format!("{} lost-event reports", s.lost_reports));
    for (k, n) in &s.other {
        kinds.push(format!("{n} of type `{k}` (ignored)"));
    }
    let _ = writeln!(
        out,
        "# {} events read: {}.",
        s.valid(),
        c(&kinds.join(", "))
    );
    if s.malformed > 0 || s.skipped > 0 {
        let _ = writeln!(
            out,
            "# {} malformed lines and {} events that name no executable path or endpoint were left out (see stderr).",
            s.malformed, s.skipped
        );
    }
    let _ = writeln!(out, "# Time span: {}.", c(&inp.span.describe()));
    if s.lost_reports > 0 {
        let _ = writeln!(
            out,
            "# WARNING: the kernel lost {} events; traffic they carried is not in this proposal.",
            s.lost_events
        );
    }
    let _ = writeln!(
        out,
        "# Each [[allow]] rule allows one executable, run as one user, to reach the endpoints it was seen reaching."
    );
    let _ = writeln!(
        out,
        "# Review every rule; run it in audit mode, then set mode = \"enforce\"."
    );
    out.push('\n');

    // Endpoints: copied, or inferred.
    let mut stub_names: BTreeSet<String> = BTreeSet::new();
    match &existing {
        Some(ex) => {
            let _ = writeln!(
                out,
                "# mode, include, [guard] and [[endpoint]] are copied from {}{}.",
                c(&ex.path.display().to_string()),
                if ex.rules_dropped > 0 {
                    format!(
                        "; its {} [[allow]] rules are not (this proposal replaces them)",
                        ex.rules_dropped
                    )
                } else {
                    String::new()
                }
            );
            out.push_str(&ex.text);
            out.push('\n');
        }
        None => {
            let _ = writeln!(
                out,
                "mode = \"audit\"    # review the rules, then \"enforce\""
            );
            let mut presets_used: Vec<&str> = Vec::new();
            for name in inp.endpoints.keys() {
                match presets::preset_of_endpoint(name) {
                    Some(p) if !presets_used.contains(&p.name) => presets_used.push(p.name),
                    Some(_) => {}
                    None => {
                        stub_names.insert(name.clone());
                    }
                }
            }
            presets_used.sort_unstable();
            if !presets_used.is_empty() {
                let _ = writeln!(
                    out,
                    "include = {}    # presets of the endpoints seen",
                    list(presets_used.iter().map(|p| q(p)))
                );
            }
            for name in &stub_names {
                let ep = &inp.endpoints[name];
                out.push('\n');
                let _ = writeln!(
                    out,
                    "# TODO: addresses: `{}` is not a preset endpoint; these are only the destinations seen. List every address of it.",
                    c(name)
                );
                let _ = writeln!(out, "[[endpoint]]\nname = {}", q(name));
                let addrs = list(ep.addresses.iter().map(|a| q(a)));
                let _ = writeln!(out, "addresses = {addrs}");
                if ep.ports.iter().all(Option::is_some) {
                    let ports = list(ep.ports.iter().flatten().map(|p| p.to_string()));
                    let _ = writeln!(
                        out,
                        "ports = {ports}    # TODO: ports seen; remove to guard every port"
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "# no ports: some events carried none, so every port is guarded"
                    );
                }
            }
        }
    }

    // Rule names: the executable's file name, plus the user where two rules
    // would share it, plus a number if that is still not unique.
    let keys: Vec<(String, u32)> = inp.rules.keys().cloned().collect();
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "exe".into())
    };
    let mut per_base: BTreeMap<String, usize> = BTreeMap::new();
    for (p, _) in &keys {
        *per_base.entry(base(p)).or_default() += 1;
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut rules_written = 0;
    let mut rules_disabled = 0;
    let cgroup_mount = cgroup::cgroup2_mount();
    for (path, uid) in keys {
        let obs = inp.rules.remove(&(path.clone(), uid)).expect("key listed");
        let (user, user_name) = user_label(uid);
        let file = base(&path);
        let mut name = if per_base[&file] > 1 {
            format!(
                "{file}-{}",
                user_name.clone().unwrap_or_else(|| uid.to_string())
            )
        } else {
            file.clone()
        };
        if used.contains(&name) {
            let mut i = 2;
            while used.contains(&format!("{name}-{i}")) {
                i += 1;
            }
            name = format!("{name}-{i}");
        }
        used.insert(name.clone());

        let mut lines: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        let who = match &user_name {
            Some(n) => format!("{n} (uid {uid})"),
            None => format!("uid {uid} (no such user on this host)"),
        };
        let actions: Vec<String> = obs
            .actions
            .iter()
            .map(|(a, n)| format!("{n} {a}"))
            .collect();
        notes.push(format!(
            "{path} as {who}: {} decision{} ({}), {}",
            obs.decisions,
            if obs.decisions == 1 { "" } else { "s" },
            actions.join(", "),
            obs.span.describe()
        ));
        let endpoints: Vec<&String> = obs.endpoints.iter().collect();
        notes.push(format!(
            "endpoints: {}; {} pids; hooks: {}; reasons: {}",
            endpoints
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            obs.pids.len(),
            obs.hooks.iter().cloned().collect::<Vec<_>>().join(", "),
            obs.reasons.iter().cloned().collect::<Vec<_>>().join(", "),
        ));
        if is_interpreter(&file) {
            notes.push(format!(
                "{file} is an interpreter: this rule allows every script it runs as this user; prefer a cgroups selector or a dedicated binary"
            ));
        }

        // Endpoint references the proposal can resolve.
        let mut refs: Vec<String> = Vec::new();
        for e in &obs.endpoints {
            let known = match &existing {
                Some(ex) => ex.names.contains(e),
                None => true,
            };
            if known {
                refs.push(q(e));
            } else {
                notes.push(format!(
                    "endpoint `{e}` was seen but {} does not define it: left out",
                    existing
                        .as_ref()
                        .map(|x| x.path.display().to_string())
                        .unwrap_or_default()
                ));
            }
        }

        lines.push("[[allow]]".into());
        lines.push(format!("name = {}", q(&name)));
        lines.push(format!("endpoints = {}", list(refs.iter().cloned())));
        lines.push(format!("exe = {}", q(&path)));
        lines.push(format!("users = [{user}]"));

        // cgroups: only when every observation came from one known cgroup,
        // and only when it exists here (the compiler resolves it).
        let cgroups: Vec<&Option<String>> = obs.cgroups.iter().collect();
        match cgroups.as_slice() {
            [Some(c)] => {
                let found = cgroup_mount
                    .as_ref()
                    .map_err(|e| e.to_string())
                    .and_then(|m| cgroup::resolve(m, c).map_err(|e| e.to_string()));
                match found {
                    Ok(_) => lines.push(format!("cgroups = [{}]", q(c))),
                    Err(e) => {
                        notes.push(format!(
                            "always seen in cgroup {c}, which cannot be resolved on this host ({e}): uncomment cgroups where it exists"
                        ));
                        lines.push(format!("# cgroups = [{}]", q(c)));
                    }
                }
            }
            [None] => notes.push("cgroup path unknown (the cgroup was gone when the events were read): no cgroups selector".into()),
            many => notes.push(format!(
                "seen in {} cgroups ({}): no cgroups selector",
                many.len(),
                many.iter()
                    .map(|c| c.as_deref().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }

        if !obs.http.is_empty() || !obs.http_unusable.is_empty() {
            let (entries, collapsed) = collapse_http(&obs.http);
            notes.extend(collapsed);
            let imds: Vec<String> = obs.imds.iter().map(|(v, n)| format!("{n} {v}")).collect();
            notes.push(format!(
                "HTTP requests seen ({} distinct; IMDS versions: {}): `http` allows exactly these on its connections (delete it to allow any request)",
                obs.http.len() + obs.http_unusable.len(),
                imds.join(", ")
            ));
            if obs.imds.contains_key("v1") {
                notes.push(
                    "IMDSv1 requests were seen: consider requiring IMDSv2 (session tokens)".into(),
                );
            }
            if !entries.is_empty() {
                lines.push("http = [".into());
                for (m, p) in entries {
                    lines.push(format!("  {{ method = {}, path = {} }},", q(&m), q(&p)));
                }
                lines.push("]".into());
            }
            if !obs.http_unusable.is_empty() {
                notes.push(format!(
                    "{} request(s) cannot be written as a pattern (path truncated in the event, not canonical, or with a literal *): listed commented out",
                    obs.http_unusable.len()
                ));
                for (m, p) in &obs.http_unusable {
                    lines.push(format!("#   {{ method = {}, path = {} }}", q(m), q(p)));
                }
            }
        }

        // A rule the compiler would refuse is proposed commented out.
        let disabled = if refs.is_empty() {
            Some("none of its endpoints is defined by the policy".to_string())
        } else {
            match exe::identify(Path::new(&path)) {
                Ok(_) => None,
                Err(e) => Some(format!("exe {path} cannot be used on this host ({e})")),
            }
        };
        out.push('\n');
        for n in &notes {
            let _ = writeln!(out, "# {}", c(n));
        }
        match disabled {
            None => {
                rules_written += 1;
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            Some(why) => {
                rules_disabled += 1;
                inp.diagnostics
                    .push(format!("{label}: rule `{name}` is commented out: {why}"));
                let _ = writeln!(out, "# DISABLED: {}.", c(&why));
                for l in lines {
                    let sep = if l.starts_with('#') { "" } else { " " };
                    let _ = writeln!(out, "#{sep}{}", c(&l));
                }
            }
        }
    }
    if rules_written > MAX_RULES {
        let _ = writeln!(
            out,
            "\n# WARNING: {rules_written} rules, more than the {MAX_RULES} a policy may hold: merge rules that share selectors."
        );
    }
    let mut stats = inp.stats;
    stats.rules = rules_written;
    stats.disabled = rules_disabled;
    Ok(Learned {
        toml: out,
        diagnostics: inp.diagnostics,
        stats,
    })
}

/// `metaguard learn`: returns the process exit code (0 proposal written, 1
/// nothing learned or an I/O or self-check failure, 2 the existing policy is invalid).
pub fn main(opts: Options) -> u8 {
    let label = opts.from.display().to_string();
    let text = if opts.from.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map(|_| s)
            .map_err(|err| LearnError::Read {
                path: "stdin".into(),
                err,
            })
    } else {
        std::fs::read(&opts.from)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|err| LearnError::Read {
                path: label.clone(),
                err,
            })
    };
    let result = text.and_then(|t| learn(&t, &label, opts.policy.as_deref()));
    let learned = match result {
        Ok(l) => l,
        Err(e) => {
            if let LearnError::NothingToLearn { diagnostics, .. } = &e {
                for d in diagnostics {
                    eprintln!("{d}");
                }
            }
            eprintln!("metaguard learn: {e}");
            return if matches!(e, LearnError::Policy(_)) {
                2
            } else {
                1
            };
        }
    };
    for d in &learned.diagnostics {
        eprintln!("{d}");
    }
    // The proposal must be something `metaguard check` accepts here.
    let out_label = opts
        .out
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<proposal>".into());
    let check = policy::parse_str(&learned.toml, Path::new(&out_label));
    match &opts.out {
        Some(p) => {
            if let Err(err) = std::fs::write(p, &learned.toml) {
                eprintln!(
                    "metaguard learn: {}",
                    LearnError::Write {
                        path: p.display().to_string(),
                        err
                    }
                );
                return 1;
            }
        }
        None => print!("{}", learned.toml),
    }
    let s = &learned.stats;
    eprintln!(
        "metaguard learn: {} rules from {} decisions and {} requests ({} malformed lines, {} events skipped, {} lost-event reports)",
        s.rules, s.decisions, s.requests, s.malformed, s.skipped, s.lost_reports
    );
    if let Err(errs) = check {
        eprintln!("metaguard learn: the proposal does not compile on this host:\n{errs}");
        return 1;
    }
    0
}

#[cfg(test)]
mod tests;
