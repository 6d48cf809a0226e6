//! Checks the parsed tree key by key, collecting every problem, and resolves
//! names against this host.
use std::time::Duration;
use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    ops::Range,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use nix::unistd::{Group, User};

use super::{
    error::{line_column, Diagnostics},
    presets,
    tree::{self, Entry, Node, Value},
    CgroupRef, Endpoint, EventSettings, ExeRef, Guard, HttpRule, Mode, Policy, PolicyErrors,
    Redact, Rule, MAX_RULES,
};
use crate::sys::{cgroup, exe};

const TOP_KEYS: [&str; 6] = ["mode", "include", "guard", "endpoint", "allow", "events"];
const EVENTS_KEYS: [&str; 1] = ["aggregate"];
/// Longest aggregation window: counts must reach operators while they matter.
const MAX_AGGREGATE: Duration = Duration::from_secs(60);
const GUARD_KEYS: [&str; 2] = ["users", "cgroups"];
const ENDPOINT_KEYS: [&str; 5] = ["name", "addresses", "ports", "mode", "require_imdsv2"];
const ALLOW_KEYS: [&str; 8] = [
    "name",
    "endpoints",
    "exe",
    "users",
    "groups",
    "cgroups",
    "http",
    "redact",
];
const HTTP_KEYS: [&str; 3] = ["method", "path", "require_headers"];
/// Distinct `require_headers` names a policy may use (the kernel's header
/// table has 16 entries; the first is the IMDSv2 token header).
const MAX_REQUIRED_HEADERS: usize = 15;

pub(crate) fn compile(src: &str, file: &Path) -> Result<Policy, PolicyErrors> {
    let mut c = Compiler {
        d: Diagnostics::new(file, src),
        cgroup_mount: None,
    };
    let root = match tree::parse(src) {
        Ok(root) => root,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            c.d.error(&span, e.message().trim().replace('\n', "; "));
            return Err(PolicyErrors::new(c.d.errors));
        }
    };
    let policy = c.policy(&root);
    if c.d.errors.is_empty() {
        Ok(policy)
    } else {
        Err(PolicyErrors::new(c.d.errors))
    }
}

struct Compiler<'a> {
    d: Diagnostics<'a>,
    cgroup_mount: Option<Result<PathBuf, String>>,
}

/// Where an endpoint name was defined, for duplicate messages.
enum Origin {
    Preset(&'static str),
    File(Range<usize>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IdKind {
    User,
    Group,
}

impl<'a> Compiler<'a> {
    fn err(&mut self, span: &Range<usize>, msg: impl Into<String>) {
        self.d.error(span, msg);
    }

    fn policy(&mut self, root: &[Entry]) -> Policy {
        let [mode, include, guard, endpoint, allow, events] =
            self.fields(root, "the top level", &TOP_KEYS);
        let events = match events {
            Some(e) => self.events(e),
            None => EventSettings::default(),
        };
        let mode = mode.and_then(|e| self.mode(e)).unwrap_or_default();

        // Presets, in include order, each once.
        let mut included: Vec<(&'static presets::Preset, Range<usize>)> = Vec::new();
        if let Some(e) = include {
            for (name, span) in self.strings(e, "a preset name", "[\"aws\"]") {
                match presets::preset(name) {
                    Some(p) if included.iter().any(|(q, _)| q.name == p.name) => {}
                    Some(p) => included.push((p, span.clone())),
                    None => self.err(
                        span,
                        format!(
                            "unknown preset `{name}`: known presets are {}",
                            presets::names()
                        ),
                    ),
                }
            }
        }

        let guard = match guard {
            Some(e) => self.guard(e),
            None => Guard::default(),
        };

        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut names: HashMap<String, Origin> = HashMap::new();
        for (p, _) in &included {
            for pe in p.endpoints {
                endpoints.push(Endpoint {
                    name: pe.name.to_string(),
                    preset: Some(p.name.to_string()),
                    prefixes: pe
                        .addresses
                        .iter()
                        .map(|a| a.parse().expect("preset addresses are valid"))
                        .collect(),
                    ports: pe.ports.map(|p| p.to_vec()),
                    mode,
                    require_imdsv2: false,
                });
                names.insert(pe.name.to_string(), Origin::Preset(p.name));
            }
        }
        let endpoint_tables = endpoint
            .map(|e| self.tables(e, "endpoint"))
            .unwrap_or_default();
        for t in &endpoint_tables {
            if let Some(ep) = self.endpoint(t, mode, &mut names) {
                endpoints.push(ep);
            }
        }
        let no_include =
            include.is_none_or(|e| matches!(&e.node.value, Value::Array(a) if a.is_empty()));
        if no_include && endpoint.is_none() {
            self.err(
                &(0..0),
                "the policy defines no endpoints: add include = [\"aws\"] (or another preset) or an [[endpoint]]",
            );
        }

        let mut rules = Vec::new();
        let allow_tables = allow.map(|e| self.tables(e, "allow")).unwrap_or_default();
        if allow_tables.len() > MAX_RULES {
            let first_extra = allow_tables[MAX_RULES].span.clone();
            self.err(
                &first_extra,
                format!(
                    "too many [[allow]] rules: {}, the limit is {MAX_RULES}; merge rules that share selectors",
                    allow_tables.len()
                ),
            );
        }
        let mut rule_names: HashMap<String, Range<usize>> = HashMap::new();
        for t in &allow_tables {
            if let Some(r) = self.rule(t, &endpoints, &included, &mut rule_names) {
                rules.push(r);
            }
        }

        let mut headers: Vec<&str> = rules
            .iter()
            .flat_map(|r: &Rule| r.http.iter().flatten())
            .flat_map(|h| h.require_headers.iter().map(String::as_str))
            .filter(|h| *h != "x-aws-ec2-metadata-token")
            .collect();
        headers.sort_unstable();
        headers.dedup();
        let mut sets: Vec<&Vec<String>> = rules
            .iter()
            .flat_map(|r: &Rule| r.http.iter().flatten())
            .map(|h| &h.require_headers)
            .collect();
        sets.sort();
        sets.dedup();
        if sets.len() > metaguard_common::maps::MAX_HTTP_SCOPES {
            let span = allow.map(|e| e.key_span.clone()).unwrap_or(0..0);
            self.err(
                &span,
                format!(
                    "the rules use {} distinct require_headers lists; at most {} are supported",
                    sets.len(),
                    metaguard_common::maps::MAX_HTTP_SCOPES
                ),
            );
        }
        if headers.len() > MAX_REQUIRED_HEADERS {
            let span = allow.map(|e| e.key_span.clone()).unwrap_or(0..0);
            self.err(
                &span,
                format!(
                    "the rules require {} distinct headers; at most {MAX_REQUIRED_HEADERS} are supported",
                    headers.len()
                ),
            );
        }

        let mut keys: Vec<&str> = Vec::new();
        for r in &rules {
            for k in r.redact.iter().filter_map(|e| match e {
                Redact::Key(k) => Some(k.as_str()),
                Redact::Builtin(_) => None,
            }) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        if keys.len() > metaguard_common::redact::MAX_CUSTOM {
            let span = allow.map(|e| e.key_span.clone()).unwrap_or(0..0);
            self.err(
                &span,
                format!(
                    "the rules name {} distinct custom `redact` keys; at most {} are supported",
                    keys.len(),
                    metaguard_common::redact::MAX_CUSTOM
                ),
            );
        }

        Policy {
            source: self.d.file.to_path_buf(),
            mode,
            guard,
            endpoints,
            rules,
            events,
        }
    }

    fn events(&mut self, e: &Entry) -> EventSettings {
        let mut out = EventSettings::default();
        let Value::Table(t) = &e.node.value else {
            self.err(
                &e.node.span,
                format!(
                    "`events` must be a table ([events]), found {}",
                    e.node.value.kind()
                ),
            );
            return out;
        };
        let [aggregate] = self.fields(t, "[events]", &EVENTS_KEYS);
        if let Some(a) = aggregate {
            if let Some(s) = self.string(a) {
                match humantime::parse_duration(s) {
                    Ok(d) if d <= MAX_AGGREGATE => out.aggregate = d,
                    Ok(_) => self.err(
                        &a.node.span,
                        format!("aggregate window `{s}` is too long: at most 60s"),
                    ),
                    Err(err) => self.err(
                        &a.node.span,
                        format!("bad duration `{s}` ({err}): write e.g. \"1s\", \"500ms\", or \"0s\" to send every decision"),
                    ),
                }
            }
        }
        out
    }

    // ---- generic shape checks -------------------------------------------

    /// Splits a table into the known keys (in `allowed` order), reporting unknown ones.
    fn fields<'t, const N: usize>(
        &mut self,
        table: &'t [Entry],
        section: &str,
        allowed: &[&str; N],
    ) -> [Option<&'t Entry>; N] {
        let mut out = [None; N];
        for e in table {
            match allowed.iter().position(|k| *k == e.key) {
                Some(i) => out[i] = Some(e),
                None => self.err(
                    &e.key_span,
                    format!(
                        "unknown key `{}` in {section}: expected one of {}",
                        e.key,
                        allowed.join(", ")
                    ),
                ),
            }
        }
        out
    }

    /// The tables of an array of tables (`[[endpoint]]`, `[[allow]]`).
    fn tables<'t>(&mut self, e: &'t Entry, key: &str) -> Vec<TableRef<'t>> {
        match &e.node.value {
            Value::Array(items) => items
                .iter()
                .filter_map(|n| match &n.value {
                    Value::Table(t) => Some(TableRef {
                        span: n.span.clone(),
                        entries: t,
                    }),
                    other => {
                        self.err(
                            &n.span,
                            format!("each `{key}` must be a table, found {}", other.kind()),
                        );
                        None
                    }
                })
                .collect(),
            Value::Table(_) => {
                self.err(
                    &e.key_span,
                    format!("`{key}` must be an array of tables: write [[{key}]], not [{key}]"),
                );
                Vec::new()
            }
            other => {
                self.err(
                    &e.node.span,
                    format!(
                        "`{key}` must be an array of tables ([[{key}]]), found {}",
                        other.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    fn string<'t>(&mut self, e: &'t Entry) -> Option<&'t str> {
        match &e.node.value {
            Value::String(s) => Some(s),
            other => {
                self.err(
                    &e.node.span,
                    format!("`{}` must be a string, found {}", e.key, other.kind()),
                );
                None
            }
        }
    }

    /// The items of an array value.
    fn array<'t>(&mut self, e: &'t Entry, example: &str) -> Option<&'t [Node]> {
        match &e.node.value {
            Value::Array(items) => Some(items),
            other => {
                self.err(
                    &e.node.span,
                    format!(
                        "`{}` must be an array like {example}, found {}",
                        e.key,
                        other.kind()
                    ),
                );
                None
            }
        }
    }

    /// An array of strings; wrong items are reported and skipped.
    fn strings<'t>(
        &mut self,
        e: &'t Entry,
        what: &str,
        example: &str,
    ) -> Vec<(&'t str, &'t Range<usize>)> {
        let Some(items) = self.array(e, example) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for n in items {
            match &n.value {
                Value::String(s) => out.push((s.as_str(), &n.span)),
                other => self.err(
                    &n.span,
                    format!(
                        "each entry of `{}` must be {what}, found {}",
                        e.key,
                        other.kind()
                    ),
                ),
            }
        }
        out
    }

    fn mode(&mut self, e: &Entry) -> Option<Mode> {
        match self.string(e)? {
            "enforce" => Some(Mode::Enforce),
            "audit" => Some(Mode::Audit),
            other => {
                self.err(
                    &e.node.span,
                    format!("unknown mode `{other}`: use \"enforce\" or \"audit\""),
                );
                None
            }
        }
    }

    fn name(&mut self, e: Option<&Entry>, table: &TableRef<'_>, section: &str) -> Option<String> {
        let Some(e) = e else {
            self.err(
                &table.span,
                format!("{section} has no `name`: give it a unique name"),
            );
            return None;
        };
        let name = self.string(e)?;
        if name.trim().is_empty() {
            self.err(&e.node.span, "`name` must not be empty");
            return None;
        }
        Some(name.to_string())
    }

    // ---- sections -------------------------------------------------------

    fn guard(&mut self, e: &Entry) -> Guard {
        let Value::Table(t) = &e.node.value else {
            self.err(
                &e.node.span,
                format!(
                    "`guard` must be a table ([guard]), found {}",
                    e.node.value.kind()
                ),
            );
            return Guard::default();
        };
        let [users, cgroups] = self.fields(t, "[guard]", &GUARD_KEYS);
        Guard {
            users: users
                .map(|e| self.ids(e, IdKind::User, true))
                .unwrap_or_default(),
            cgroups: cgroups.map(|e| self.cgroups(e, true)).unwrap_or_default(),
        }
    }

    fn endpoint(
        &mut self,
        t: &TableRef<'_>,
        top_mode: Mode,
        names: &mut HashMap<String, Origin>,
    ) -> Option<Endpoint> {
        let [name_e, addresses, ports, mode, require_imdsv2] =
            self.fields(t.entries, "[[endpoint]]", &ENDPOINT_KEYS);
        let name = self.name(name_e, t, "this [[endpoint]]");
        if let (Some(n), Some(ne)) = (&name, name_e) {
            let span = &ne.node.span;
            if presets::preset(n).is_some() {
                self.err(
                    span,
                    format!("endpoint name `{n}` is the name of a preset: choose another name"),
                );
            } else if let Some(o) = names.get(n) {
                let msg = match o {
                    Origin::Preset(p) => {
                        format!("duplicate endpoint name `{n}`: preset \"{p}\" (in include) already defines it; rename this endpoint")
                    }
                    Origin::File(first) => {
                        let (l, c) = line_column(self.d.src, first.start);
                        format!("duplicate endpoint name `{n}`: already defined at {l}:{c}; rename one of them")
                    }
                };
                self.err(span, msg);
            } else {
                names.insert(n.clone(), Origin::File(span.clone()));
            }
        }
        let label = name.clone().unwrap_or_else(|| "this endpoint".into());

        let mut prefixes: Vec<IpNet> = Vec::new();
        match addresses {
            None => self.err(
                &t.span,
                format!(
                    "endpoint `{label}` has no `addresses`: list the addresses or CIDRs it covers"
                ),
            ),
            Some(e) => {
                let items =
                    self.strings(e, "an address or CIDR string", "[\"169.254.169.254/32\"]");
                if matches!(&e.node.value, Value::Array(a) if a.is_empty()) {
                    self.err(
                        &e.node.span,
                        "`addresses` is empty: list at least one address or CIDR, like \"169.254.169.254/32\"",
                    );
                }
                for (s, span) in items {
                    if let Some(net) = self.address(s, span) {
                        if !prefixes.contains(&net) {
                            prefixes.push(net);
                        }
                    }
                }
            }
        }

        let ports = ports.and_then(|e| self.ports(e));
        let mode = mode.and_then(|e| self.mode(e)).unwrap_or(top_mode);
        let require_imdsv2 = require_imdsv2
            .and_then(|e| self.boolean(e))
            .unwrap_or(false);
        Some(Endpoint {
            name: name?,
            preset: None,
            prefixes,
            ports,
            mode,
            require_imdsv2,
        })
    }

    fn address(&mut self, s: &str, span: &Range<usize>) -> Option<IpNet> {
        let t = s.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            let trunc = net.trunc();
            if trunc != net {
                let single = IpNet::from(net.addr());
                self.err(
                    span,
                    format!(
                        "`{t}` has host bits set: write {trunc} for the network, or {single} for the single address"
                    ),
                );
                return None;
            }
            return Some(net);
        }
        if let Ok(addr) = t.parse::<IpAddr>() {
            return Some(IpNet::from(addr));
        }
        self.err(
            span,
            format!("invalid address `{s}`: expected an IP address or CIDR, like \"169.254.169.254/32\" or \"fd00:ec2::254/128\""),
        );
        None
    }

    fn ports(&mut self, e: &Entry) -> Option<Vec<u16>> {
        let items = self.array(e, "[80, 443]")?;
        if items.is_empty() {
            self.err(
                &e.node.span,
                "`ports` is empty: list ports, or remove the key to cover every port",
            );
            return None;
        }
        let mut ports = Vec::new();
        for n in items {
            match n.value {
                Value::Integer(p) if (1..=65535).contains(&p) => ports.push(p as u16),
                Value::Integer(0) => self
                    .err(&n.span, "port 0 is not a valid port: use 1 to 65535, or remove `ports` to cover every port"),
                Value::Integer(p) => self.err(&n.span, format!("port {p} is out of range: ports are 1 to 65535")),
                ref other => {
                    self.err(&n.span, format!("each entry of `ports` must be a port number, found {}", other.kind()))
                }
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Some(ports)
    }

    fn rule(
        &mut self,
        t: &TableRef<'_>,
        endpoints: &[Endpoint],
        included: &[(&'static presets::Preset, Range<usize>)],
        rule_names: &mut HashMap<String, Range<usize>>,
    ) -> Option<Rule> {
        let [name_e, eps, exe, users, groups, cgroups, http, redact] =
            self.fields(t.entries, "[[allow]]", &ALLOW_KEYS);
        let name = self.name(name_e, t, "this [[allow]] rule");
        if let (Some(n), Some(ne)) = (&name, name_e) {
            if let Some(first) = rule_names.get(n) {
                let (l, c) = line_column(self.d.src, first.start);
                self.err(
                    &ne.node.span,
                    format!(
                        "duplicate rule name `{n}`: already used at {l}:{c}; rename one of them"
                    ),
                );
            } else {
                rule_names.insert(n.clone(), ne.node.span.clone());
            }
        }
        let label = name.clone().unwrap_or_else(|| "this rule".into());

        let endpoint_ix = match eps {
            None => (0..endpoints.len()).collect(),
            Some(e) => {
                let items = self.strings(e, "an endpoint name", "[\"aws-imds\"]");
                if matches!(&e.node.value, Value::Array(a) if a.is_empty()) {
                    self.err(
                        &e.node.span,
                        "`endpoints` is empty: name endpoints, or remove the key to allow every endpoint",
                    );
                }
                let mut ix = Vec::new();
                for (s, span) in items {
                    self.endpoint_ref(s, span, endpoints, included, &mut ix);
                }
                ix.sort_unstable();
                ix.dedup();
                ix
            }
        };

        if exe.is_none() && users.is_none() && groups.is_none() && cgroups.is_none() {
            self.err(
                &t.span,
                format!("rule `{label}` has no selector, so it would allow every process: add exe, users, groups or cgroups"),
            );
        }
        let exe = exe.and_then(|e| self.exe(e));
        let users = users
            .map(|e| self.ids(e, IdKind::User, false))
            .unwrap_or_default();
        let groups = groups
            .map(|e| self.ids(e, IdKind::Group, false))
            .unwrap_or_default();
        let cgroups = cgroups.map(|e| self.cgroups(e, false)).unwrap_or_default();
        let http = http.map(|e| self.http(e));
        let redact = redact.map(|e| self.redact(e)).unwrap_or_default();
        Some(Rule {
            name: name?,
            endpoints: endpoint_ix,
            exe,
            users,
            groups,
            cgroups,
            http,
            redact,
        })
    }

    /// `redact = ["aws-credentials", '"client_secret"']`: built-in shape
    /// names, or JSON keys written in double quotes.
    fn redact(&mut self, e: &Entry) -> Vec<Redact> {
        use metaguard_common::redact::{BUILTIN_SHAPES, MAX_CUSTOM_LEN};
        let items = self.strings(e, "a secret shape", "[\"aws-credentials\"]");
        if matches!(&e.node.value, Value::Array(a) if a.is_empty()) {
            self.err(
                &e.node.span,
                "`redact` is empty: name secret shapes, or remove the key to pass answers unmasked",
            );
        }
        let mut out = Vec::new();
        for (s, span) in items {
            let entry = if let Some(key) = s.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                let ok = !key.is_empty()
                    && key.len() <= MAX_CUSTOM_LEN
                    && key
                        .bytes()
                        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
                if !ok {
                    self.err(
                        span,
                        format!("`{s}`: a custom shape is a JSON key in double quotes, 1 to {MAX_CUSTOM_LEN} printable ASCII characters without quotes or backslashes"),
                    );
                    continue;
                }
                Redact::Key(key.to_string())
            } else if let Some((name, _)) = BUILTIN_SHAPES.iter().find(|(n, _)| *n == s) {
                Redact::Builtin(name)
            } else {
                let names: Vec<&str> = BUILTIN_SHAPES.iter().map(|(n, _)| *n).collect();
                self.err(
                    span,
                    format!(
                        "unknown secret shape `{s}`: expected one of {}, or a JSON key in double quotes like '\"client_secret\"'",
                        names.join(", ")
                    ),
                );
                continue;
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
        out.sort();
        out
    }

    fn boolean(&mut self, e: &Entry) -> Option<bool> {
        match &e.node.value {
            Value::Boolean(b) => Some(*b),
            other => {
                self.err(
                    &e.node.span,
                    format!("`{}` must be true or false, found {}", e.key, other.kind()),
                );
                None
            }
        }
    }

    /// `http = [{ method = "GET", path = "/a/*", require_headers = [...] }, ...]`
    fn http(&mut self, e: &Entry) -> Vec<HttpRule> {
        let example = "[{ method = \"GET\", path = \"/latest/meta-data/instance-id\" }]";
        let Some(items) = self.array(e, example) else {
            return Vec::new();
        };
        if items.is_empty() {
            self.err(
                &e.node.span,
                "`http` is empty, which would allow no request: list requests, or remove the key to allow any",
            );
        }
        let mut out: Vec<HttpRule> = Vec::new();
        for n in items {
            let Value::Table(t) = &n.value else {
                self.err(
                    &n.span,
                    format!(
                        "each `http` entry must be a table like {example}, found {}",
                        n.value.kind()
                    ),
                );
                continue;
            };
            let [method, path, headers] = self.fields(t, "an `http` entry", &HTTP_KEYS);
            let (Some(method_e), Some(path_e)) = (method, path) else {
                self.err(&n.span, "an `http` entry needs both `method` and `path`");
                continue;
            };
            let method = self.string(method_e).and_then(|m| {
                let ok = !m.is_empty()
                    && m.len() <= metaguard_common::http::MAX_METHOD
                    && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                if !ok {
                    self.err(&method_e.node.span, format!("`{m}` is not an HTTP method (a token of up to 16 characters, like \"GET\"; methods are case-sensitive)"));
                }
                ok.then(|| m.to_string())
            });
            let path = self
                .string(path_e)
                .and_then(|p| self.http_path(p, &path_e.node.span));
            let mut require_headers = Vec::new();
            if let Some(h) = headers {
                for (name, span) in
                    self.strings(h, "a header name", "[\"x-aws-ec2-metadata-token\"]")
                {
                    let ok = !name.is_empty()
                        && name.len() <= metaguard_common::http::TABLE_NAME_MAX
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if ok {
                        let lower = name.to_ascii_lowercase();
                        if !require_headers.contains(&lower) {
                            require_headers.push(lower);
                        }
                    } else {
                        self.err(
                            span,
                            format!(
                                "`{name}` is not a header name (a token of up to 32 characters)"
                            ),
                        );
                    }
                }
                require_headers.sort();
            }
            if let (Some(method), Some((path, wildcard))) = (method, path) {
                let rule = HttpRule {
                    method,
                    path,
                    wildcard,
                    require_headers,
                };
                if out.iter().any(|r| {
                    r.method == rule.method && r.path == rule.path && r.wildcard == rule.wildcard
                }) {
                    self.err(
                        &n.span,
                        format!(
                            "duplicate `http` entry for {} {}{}: merge them",
                            rule.method,
                            rule.path,
                            if rule.wildcard { "*" } else { "" }
                        ),
                    );
                } else {
                    out.push(rule);
                }
            }
        }
        out
    }

    /// A pattern path, which must already be in canonical form (so that the
    /// policy says what is matched), with an optional trailing `/*`.
    fn http_path(&mut self, p: &str, span: &Range<usize>) -> Option<(String, bool)> {
        use metaguard_common::http::canonical_pattern;
        match canonical_pattern(p.as_bytes()) {
            Ok((buf, len, wildcard)) => {
                let canon = String::from_utf8_lossy(&buf[..len]).into_owned();
                let written = if wildcard {
                    format!("{canon}*")
                } else {
                    canon.clone()
                };
                if written != p {
                    self.err(
                        span,
                        format!("path `{p}` is not in canonical form: write `{written}` (requests are matched after the same canonicalisation)"),
                    );
                    return None;
                }
                Some((canon, wildcard))
            }
            Err(r) => {
                self.err(
                    span,
                    format!("path `{p}` cannot be matched: {} (patterns are absolute paths, optionally ending in `/*`)", r.name()),
                );
                None
            }
        }
    }

    fn endpoint_ref(
        &mut self,
        s: &str,
        span: &Range<usize>,
        endpoints: &[Endpoint],
        included: &[(&'static presets::Preset, Range<usize>)],
        out: &mut Vec<usize>,
    ) {
        if let Some(i) = endpoints.iter().position(|e| e.name == s) {
            out.push(i);
            return;
        }
        if let Some(p) = presets::preset(s) {
            if included.iter().any(|(q, _)| q.name == p.name) {
                out.extend(
                    endpoints
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.preset.as_deref() == Some(p.name))
                        .map(|(i, _)| i),
                );
            } else {
                self.err(
                    span,
                    format!(
                        "endpoint `{s}` is a preset that is not included: add \"{s}\" to include"
                    ),
                );
            }
            return;
        }
        if let Some(p) = presets::preset_of_endpoint(s) {
            self.err(
                span,
                format!(
                    "unknown endpoint `{s}`: it belongs to preset \"{}\"; add \"{}\" to include",
                    p.name, p.name
                ),
            );
            return;
        }
        let mut known: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
        let hint = if known.is_empty() {
            "no endpoints are defined".to_string()
        } else if known.len() <= 12 {
            known.sort_unstable();
            known.dedup();
            format!("known endpoints are {}", known.join(", "))
        } else {
            "define it with [[endpoint]] or include its preset".to_string()
        };
        self.err(span, format!("unknown endpoint `{s}`: {hint}"));
    }

    // ---- host resolution ------------------------------------------------

    fn ids(&mut self, e: &Entry, kind: IdKind, allow_empty: bool) -> Vec<u32> {
        let (what, example) = match kind {
            IdKind::User => ("user name or uid", "[\"www-data\", 1001]"),
            IdKind::Group => ("group name or gid", "[\"adm\", 4]"),
        };
        let Some(items) = self.array(e, example) else {
            return Vec::new();
        };
        if items.is_empty() && !allow_empty {
            self.err(
                &e.node.span,
                format!(
                    "`{}` is empty: list at least one {what}, or remove the key",
                    e.key
                ),
            );
        }
        let mut ids = Vec::new();
        for n in items {
            match &n.value {
                Value::Integer(i) => match u32::try_from(*i) {
                    Ok(id) => ids.push(id),
                    Err(_) => {
                        let id = if kind == IdKind::User { "uid" } else { "gid" };
                        self.err(
                            &n.span,
                            format!("{id} {i} is out of range: use 0 to {}", u32::MAX),
                        );
                    }
                },
                Value::String(s) => {
                    if let Some(id) = self.lookup(s, kind, &n.span) {
                        ids.push(id);
                    }
                }
                other => self.err(
                    &n.span,
                    format!(
                        "each entry of `{}` must be a {what}, found {}",
                        e.key,
                        other.kind()
                    ),
                ),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn lookup(&mut self, name: &str, kind: IdKind, span: &Range<usize>) -> Option<u32> {
        let found = match kind {
            IdKind::User => User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
            IdKind::Group => Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
        };
        let what = if kind == IdKind::User {
            "user"
        } else {
            "group"
        };
        match found {
            Ok(Some(id)) => Some(id),
            Ok(None) => {
                let numeric = if kind == IdKind::User { "uid" } else { "gid" };
                self.err(
                    span,
                    format!(
                        "unknown {what} `{name}`: no such {what} on this host; create it or give a numeric {numeric}"
                    ),
                );
                None
            }
            Err(e) => {
                self.err(span, format!("cannot look up {what} `{name}`: {e}"));
                None
            }
        }
    }

    fn cgroups(&mut self, e: &Entry, allow_empty: bool) -> Vec<CgroupRef> {
        let items = self.strings(e, "a cgroup path", "[\"/system.slice/app.service\"]");
        if matches!(&e.node.value, Value::Array(a) if a.is_empty()) && !allow_empty {
            self.err(
                &e.node.span,
                "`cgroups` is empty: list at least one cgroup path, or remove the key",
            );
        }
        let mut out: Vec<CgroupRef> = Vec::new();
        for (s, span) in items {
            if let Some(c) = self.cgroup(s, span) {
                if !out.iter().any(|o| o.id == c.id) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn cgroup(&mut self, path: &str, span: &Range<usize>) -> Option<CgroupRef> {
        if path.is_empty() {
            self.err(
                span,
                "empty cgroup path: write a path relative to the cgroup2 mount, like \"/system.slice/app.service\"",
            );
            return None;
        }
        if path.split('/').any(|c| c == "." || c == "..") {
            self.err(
                span,
                format!("cgroup path `{path}` must not contain `.` or `..` components"),
            );
            return None;
        }
        let mount = match self
            .cgroup_mount
            .get_or_insert_with(|| cgroup::cgroup2_mount().map_err(|e| e.to_string()))
        {
            Ok(m) => m.clone(),
            Err(e) => {
                let msg = format!("cannot resolve cgroup `{path}`: {e}");
                self.err(span, msg);
                return None;
            }
        };
        let mount_str = mount.to_string_lossy().to_string();
        match cgroup::resolve(&mount, path) {
            Ok(c) => Some(c),
            Err(e) => {
                let rel = path.trim_start_matches('/');
                let full = if rel.is_empty() {
                    mount.clone()
                } else {
                    mount.join(rel)
                };
                let mut msg = if e.kind() == io::ErrorKind::NotFound {
                    format!(
                        "cgroup `{path}` does not exist: {} not found",
                        full.display()
                    )
                } else {
                    format!("cgroup `{path}` cannot be used: {}: {e}", full.display())
                };
                if mount_str != "/" && path.starts_with(&mount_str) {
                    let rel = &path[mount_str.len()..];
                    msg.push_str(&format!(
                        "; write it relative to the cgroup2 mount ({mount_str}): \"{rel}\""
                    ));
                } else {
                    msg.push_str(
                        "; create it or fix the path (it is relative to the cgroup2 mount)",
                    );
                }
                self.err(span, msg);
                None
            }
        }
    }

    fn exe(&mut self, e: &Entry) -> Option<ExeRef> {
        let s = self.string(e)?;
        let span = &e.node.span;
        let path = Path::new(s);
        if !path.is_absolute() {
            self.err(
                span,
                format!("exe `{s}` is not an absolute path: write the full path, starting with /"),
            );
            return None;
        }
        match exe::identify(path) {
            Ok(id) => {
                let mode = std::fs::metadata(path)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o755);
                if mode & 0o111 == 0 {
                    self.err(
                        span,
                        format!(
                            "exe `{s}` is not executable (mode {:o}): chmod +x it or fix the path",
                            mode & 0o7777
                        ),
                    );
                    return None;
                }
                Some(ExeRef {
                    path: path.to_path_buf(),
                    id,
                })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.err(
                    span,
                    format!("exe `{s}` does not exist: install it or fix the path"),
                );
                None
            }
            Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
                self.err(
                    span,
                    format!("exe `{s}` is not a regular file: name the program file itself"),
                );
                None
            }
            Err(err) => {
                self.err(span, format!("cannot inspect exe `{s}`: {err}"));
                None
            }
        }
    }
}

/// One table of an array of tables, with the span the parser gave it.
struct TableRef<'t> {
    span: Range<usize>,
    entries: &'t [Entry],
}
