//! Turns a compiled policy into the map entries the kernel programs read.
//!
//! Destinations: every distinct prefix of every endpoint becomes an LPM entry
//! whose *prefix set* lists all endpoints covering it (the LPM trie returns
//! only the most specific match, so less specific endpoints are folded in).
//! Per set and port, `Protected` holds the union of the rules allowing any
//! endpoint there; it is audit-only when every such endpoint is in audit mode
//! (deny wins).
//!
//! Every key is written for one policy slot (see `metaguard_common::maps`,
//! "Policy slots"): [`encode`] takes the slot and puts it in each key and in
//! the configuration; prefixes and pre-filter flags are kept per slot here
//! and placed by the loader (`slot_prefix_key`, `prefilter_with`).
use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use metaguard_common::http::{HeaderTable, HttpKey};
use metaguard_common::{
    addr::{
        is_v4_mapped, key_from_v4_octets, prefilter_bucket, PREFILTER_BUCKETS,
        V4_MAPPED_PREFIX_BITS,
    },
    maps::{
        slot_scope, CgroupKey, Config, DestKey, ExeEntry, ExeKey, HttpAllow, IdKey, PortKey,
        PrefixInfo, Protected, SubjectEntry, CONFIG_ENFORCE, CONFIG_GROUPS, CONFIG_GUARD_ALL,
        CONFIG_UIDS, EXE_CHECK_GENERATION, MAX_CGROUP_LEVEL, MAX_HTTP_SCOPES, PORT_ANY,
        PREFILTER_DESTS, PREFILTER_LPM, PROTECTED_AUDIT, PROTECTED_IMDSV2, PROTECTED_INSPECT,
    },
    ruleset::RuleSet,
};

use crate::policy::{Mode, Policy};

/// A destination prefix in the programs' key space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPrefix {
    pub bits: u32,
    pub key: [u8; 16],
}

impl KeyPrefix {
    pub fn from_net(net: &IpNet) -> KeyPrefix {
        match net.trunc() {
            IpNet::V4(n) => KeyPrefix {
                bits: V4_MAPPED_PREFIX_BITS + n.prefix_len() as u32,
                key: key_from_v4_octets(n.network().octets()),
            },
            IpNet::V6(n) => KeyPrefix {
                bits: n.prefix_len() as u32,
                key: n.network().octets(),
            },
        }
    }

    /// A single address: found through `DESTS` without the LPM trie.
    pub fn is_host(&self) -> bool {
        self.bits == 128
    }

    /// Whether `self` covers `other` (same or shorter prefix, same leading bits).
    pub fn covers(&self, other: &KeyPrefix) -> bool {
        self.bits <= other.bits && {
            let (a, b) = (
                u128::from_be_bytes(self.key),
                u128::from_be_bytes(other.key),
            );
            let mask = if self.bits == 0 {
                0
            } else {
                u128::MAX << (128 - self.bits)
            };
            a & mask == b & mask
        }
    }
}

/// Everything the maps hold for one policy, in one slot (`config.slot`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Encoded {
    pub config: Config,
    /// Pre-filter buckets (see `addr::prefilter_index`) holding a protected
    /// prefix, with the lookups they need (`PREFILTER_LPM` | `PREFILTER_DESTS`).
    pub prefilter: Vec<(u32, u32)>,
    pub prefixes: Vec<(KeyPrefix, PrefixInfo)>,
    pub ports: Vec<(PortKey, Protected)>,
    pub dests: Vec<(DestKey, Protected)>,
    pub exes: Vec<(ExeKey, ExeEntry)>,
    pub uids: Vec<(IdKey, SubjectEntry)>,
    pub gids: Vec<(IdKey, SubjectEntry)>,
    pub cgroups: Vec<(CgroupKey, SubjectEntry)>,
    /// Requests allowed by rules with `http` lists.
    pub http_rules: Vec<(HttpKey, HttpAllow)>,
    /// Header names the kernel notes while parsing requests.
    pub headers: HeaderTable,
}

/// The map entries of `policy` as generation `generation`, in `slot`.
/// What of `enc` does not fit the kernel maps (per policy slot), one line
/// per map: such a policy is refused as a whole, by `check` and `reload`
/// alike, rather than half written.
pub fn capacity_problems(enc: &Encoded) -> Vec<String> {
    use metaguard_common::maps::{
        MAX_DESTS, MAX_EXES, MAX_HTTP_RULES, MAX_PORT_ENTRIES, MAX_PREFIXES, MAX_SUBJECTS,
    };
    let checks = [
        (
            "protected prefixes (distinct addresses and networks)",
            enc.prefixes.len(),
            MAX_PREFIXES,
        ),
        ("prefix-and-port entries", enc.ports.len(), MAX_PORT_ENTRIES),
        (
            "single-address-and-port entries",
            enc.dests.len(),
            MAX_DESTS,
        ),
        ("executables", enc.exes.len(), MAX_EXES),
        ("users", enc.uids.len(), MAX_SUBJECTS),
        ("groups", enc.gids.len(), MAX_SUBJECTS),
        ("cgroups", enc.cgroups.len(), MAX_SUBJECTS),
        (
            "http request patterns",
            enc.http_rules.len(),
            MAX_HTTP_RULES,
        ),
    ];
    checks
        .iter()
        .filter(|(_, n, max)| *n > *max as usize)
        .map(|(what, n, max)| format!("the policy needs {n} {what}; metaguard holds at most {max}"))
        .collect()
}

pub fn encode(policy: &Policy, generation: u32, slot: u32) -> Encoded {
    let mut out = Encoded::default();
    encode_destinations(policy, slot, &mut out);
    encode_subjects(policy, slot, &mut out);
    encode_http(policy, slot, &mut out);
    out.config.slot = slot;
    out.config.generation = generation;
    out.config.aggregate_ns = policy.events.aggregate.as_nanos() as u64;
    // Endpoint modes are already resolved against the top-level mode.
    out.config.flags |= CONFIG_ENFORCE;
    out
}

/// Rules that allow endpoint `e`.
fn rules_for_endpoint(policy: &Policy, e: usize) -> RuleSet {
    let mut s = RuleSet::EMPTY;
    for (i, r) in policy.rules.iter().enumerate() {
        if r.endpoints.contains(&e) {
            s.insert(i);
        }
    }
    s
}

fn encode_destinations(policy: &Policy, slot: u32, out: &mut Encoded) {
    let eps: Vec<(usize, Vec<KeyPrefix>)> = policy
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e.prefixes.iter().map(KeyPrefix::from_net).collect()))
        .collect();
    let all: BTreeSet<KeyPrefix> = eps.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    out.prefilter = (0..PREFILTER_BUCKETS)
        .filter_map(|i| {
            let (bits, key) = prefilter_bucket(i);
            let bucket = KeyPrefix { bits, key };
            // IPv4-mapped keys are looked up in the IPv4 buckets only.
            let v6_bucket = i >= 256;
            let flags = all
                .iter()
                .filter(|p| !(v6_bucket && p.bits >= V4_MAPPED_PREFIX_BITS && is_v4_mapped(&p.key)))
                .filter(|p| p.covers(&bucket) || bucket.covers(p))
                .fold(0, |f, p| {
                    f | if p.is_host() {
                        PREFILTER_DESTS
                    } else {
                        PREFILTER_LPM
                    }
                });
            (flags != 0).then_some((i, flags))
        })
        .collect();
    let mut set_ids: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    for p in &all {
        let covering: Vec<usize> = eps
            .iter()
            .filter(|(_, ps)| ps.iter().any(|q| q.covers(p)))
            .map(|(i, _)| *i)
            .collect();
        let next = set_ids.len() as u32;
        let set = *set_ids.entry(covering.clone()).or_insert(next);
        let all_audit = covering
            .iter()
            .all(|&e| policy.endpoints[e].mode == Mode::Audit);
        let info = PrefixInfo {
            set,
            endpoint: covering[0] as u32,
            flags: if all_audit { PROTECTED_AUDIT } else { 0 },
        };
        out.prefixes.push((*p, info));
    }
    for (members, &set) in &set_ids {
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        for &e in members {
            match &policy.endpoints[e].ports {
                None => {
                    ports.insert(PORT_ANY);
                }
                Some(ps) => ports.extend(ps.iter().map(|&p| p as u32)),
            }
        }
        for port in ports {
            // At a given port: endpoints listing it, and every-port endpoints.
            let contributing: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&e| match &policy.endpoints[e].ports {
                    None => true,
                    Some(ps) => port != PORT_ANY && ps.contains(&(port as u16)),
                })
                .collect();
            let mut rules = RuleSet::EMPTY;
            for &e in &contributing {
                rules = rules.or(&rules_for_endpoint(policy, e));
            }
            let all_audit = contributing
                .iter()
                .all(|&e| policy.endpoints[e].mode == Mode::Audit);
            let imdsv2 = contributing
                .iter()
                .any(|&e| policy.endpoints[e].require_imdsv2);
            // AWS endpoints classify every request as IMDSv1 or v2.
            let inspect = imdsv2
                || contributing
                    .iter()
                    .any(|&e| policy.endpoints[e].preset.as_deref() == Some("aws"));
            let flags = if all_audit { PROTECTED_AUDIT } else { 0 }
                | if imdsv2 { PROTECTED_IMDSV2 } else { 0 }
                | if inspect { PROTECTED_INSPECT } else { 0 };
            out.ports.push((
                PortKey { set, port, slot },
                Protected {
                    endpoint: contributing[0] as u32,
                    flags,
                    rules,
                },
            ));
        }
    }
    // Single addresses: what the LPM path answers, keyed by address.
    for (p, info) in out.prefixes.iter().filter(|(p, _)| p.is_host()) {
        for (k, prot) in out.ports.iter().filter(|(k, _)| k.set == info.set) {
            out.dests.push((
                DestKey {
                    addr: p.key,
                    port: k.port,
                    slot,
                },
                *prot,
            ));
        }
    }
}

fn encode_subjects(policy: &Policy, slot: u32, out: &mut Encoded) {
    let cfg = &mut out.config;
    let mut exes: BTreeMap<ExeKey, ExeEntry> = BTreeMap::new();
    let mut uids: BTreeMap<u32, SubjectEntry> = BTreeMap::new();
    let mut gids: BTreeMap<u32, SubjectEntry> = BTreeMap::new();
    let mut cgroups: BTreeMap<u64, SubjectEntry> = BTreeMap::new();
    for (i, r) in policy.rules.iter().enumerate() {
        match &r.exe {
            None => cfg.any_exe.insert(i),
            Some(x) => {
                let key = ExeKey {
                    ino: x.id.ino,
                    dev: x.id.kdev,
                    slot,
                };
                let e = exes.entry(key).or_default();
                e.rules.insert(i);
                if let Some(g) = x.id.generation {
                    e.generation = g;
                    e.flags |= EXE_CHECK_GENERATION;
                }
            }
        }
        if r.users.is_empty() {
            cfg.any_uid.insert(i);
        }
        for &u in &r.users {
            uids.entry(u).or_default().rules.insert(i);
        }
        if r.groups.is_empty() {
            cfg.any_gid.insert(i);
        } else {
            cfg.flags |= CONFIG_GROUPS;
        }
        for &g in &r.groups {
            gids.entry(g).or_default().rules.insert(i);
        }
        if r.cgroups.is_empty() {
            cfg.any_cgroup.insert(i);
        }
        for c in &r.cgroups {
            cgroups.entry(c.id).or_default().rules.insert(i);
            cfg.cgroup_levels |= level_bit(c.level);
        }
    }
    for &u in &policy.guard.users {
        uids.entry(u).or_default().guard = 1;
    }
    for c in &policy.guard.cgroups {
        cgroups.entry(c.id).or_default().guard = 1;
        cfg.cgroup_levels |= level_bit(c.level);
    }
    if policy.guard.users.is_empty() && policy.guard.cgroups.is_empty() {
        cfg.flags |= CONFIG_GUARD_ALL;
    }
    if !uids.is_empty() {
        cfg.flags |= CONFIG_UIDS;
    }
    out.exes = exes.into_iter().collect();
    out.uids = uids
        .into_iter()
        .map(|(id, e)| (IdKey { id, slot }, e))
        .collect();
    out.gids = gids
        .into_iter()
        .map(|(id, e)| (IdKey { id, slot }, e))
        .collect();
    out.cgroups = cgroups
        .into_iter()
        .map(|(id, e)| (CgroupKey { id, slot, _pad: 0 }, e))
        .collect();
}

/// Each `http` entry becomes a key scoped by the set of headers it requires;
/// entries of several rules with the same key share it (their rules are
/// or-ed). Exact paths and wildcard prefixes are distinct key kinds.
fn encode_http(policy: &Policy, slot: u32, out: &mut Encoded) {
    out.headers = HeaderTable::with_defaults();
    let mut keys: BTreeMap<Vec<u8>, (HttpKey, RuleSet)> = BTreeMap::new();
    let mut scopes: BTreeSet<u16> = BTreeSet::new();
    for (i, r) in policy.rules.iter().enumerate() {
        let Some(http) = &r.http else { continue };
        out.config.http_rules.insert(i);
        for h in http {
            let mut required = 0u16;
            for name in &h.require_headers {
                let bit = match out.headers.find(name.as_bytes()) {
                    Some(b) => b,
                    // The compiler bounds the distinct names to the table.
                    None => out
                        .headers
                        .push(name.as_bytes())
                        .expect("header table sized by the compiler"),
                };
                required |= 1 << bit;
            }
            scopes.insert(required);
            // The configuration lists the header sets; keys carry the slot too.
            let scope = slot_scope(slot, required as u32);
            let key = if h.wildcard {
                out.config.http_wildcards = 1;
                HttpKey::prefix(scope, h.method.as_bytes(), h.path.as_bytes())
            } else {
                HttpKey::exact(scope, h.method.as_bytes(), h.path.as_bytes())
            }
            .expect("the compiler checked method and path");
            let raw = unsafe {
                std::slice::from_raw_parts(
                    &key as *const HttpKey as *const u8,
                    std::mem::size_of::<HttpKey>(),
                )
            }
            .to_vec();
            keys.entry(raw).or_insert((key, RuleSet::EMPTY)).1.insert(i);
        }
    }
    for (n, s) in scopes.iter().take(MAX_HTTP_SCOPES).enumerate() {
        out.config.http_scopes[n] = *s;
        out.config.http_scope_count = n as u32 + 1;
    }
    out.http_rules = keys
        .into_values()
        .map(|(k, rules)| (k, HttpAllow { rules }))
        .collect();
}

fn level_bit(level: u32) -> u32 {
    1u32 << level.min(MAX_CGROUP_LEVEL)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{
        policy::{Endpoint, ExeRef, Guard, Rule},
        sys::{cgroup::CgroupRef, exe::ExeId},
    };

    fn endpoint(name: &str, nets: &[&str], ports: Option<Vec<u16>>, mode: Mode) -> Endpoint {
        Endpoint {
            name: name.into(),
            preset: None,
            prefixes: nets.iter().map(|n| n.parse().unwrap()).collect(),
            ports,
            mode,
            require_imdsv2: false,
        }
    }

    fn rule(name: &str, endpoints: Vec<usize>) -> Rule {
        Rule {
            name: name.into(),
            endpoints,
            exe: None,
            users: vec![],
            groups: vec![],
            cgroups: vec![],
            http: None,
            redact: vec![],
        }
    }

    fn policy(endpoints: Vec<Endpoint>, rules: Vec<Rule>) -> Policy {
        Policy {
            source: PathBuf::from("t.toml"),
            mode: Mode::Enforce,
            guard: Guard {
                users: vec![],
                cgroups: vec![],
            },
            endpoints,
            rules,
            events: Default::default(),
        }
    }

    fn prefix(enc: &Encoded, net: &str) -> PrefixInfo {
        let k = KeyPrefix::from_net(&net.parse().unwrap());
        enc.prefixes
            .iter()
            .find(|(p, _)| *p == k)
            .map(|(_, i)| *i)
            .unwrap_or_else(|| panic!("{net} not encoded"))
    }

    fn at(enc: &Encoded, set: u32, port: u32) -> Option<Protected> {
        enc.ports
            .iter()
            .find(|(k, _)| *k == PortKey { set, port, slot: 0 })
            .map(|(_, v)| *v)
    }

    #[test]
    fn v4_prefixes_are_mapped_and_truncated() {
        let k = KeyPrefix::from_net(&"169.254.169.254/32".parse().unwrap());
        assert_eq!(k.bits, 128);
        assert_eq!(&k.key[10..], &[0xff, 0xff, 169, 254, 169, 254]);
        let wide = KeyPrefix::from_net(&"169.254.0.0/16".parse().unwrap());
        assert_eq!(wide.bits, 112);
        assert!(wide.covers(&k) && !k.covers(&wide));
        let v6 = KeyPrefix::from_net(&"fd00:ec2::254/128".parse().unwrap());
        assert!(!wide.covers(&v6));
    }

    #[test]
    fn overlapping_endpoints_fold_into_the_specific_prefix() {
        // "linklocal" covers all of 169.254/16 on every port; "imds" is one address on port 80.
        let p = policy(
            vec![
                endpoint("linklocal", &["169.254.0.0/16"], None, Mode::Enforce),
                endpoint(
                    "imds",
                    &["169.254.169.254/32"],
                    Some(vec![80]),
                    Mode::Enforce,
                ),
            ],
            vec![rule("ll", vec![0]), rule("imds", vec![1])],
        );
        let enc = encode(&p, 1, 0);
        let host = prefix(&enc, "169.254.169.254/32");
        let net = prefix(&enc, "169.254.0.0/16");
        assert_ne!(host.set, net.set);
        // Port 80 of the host: both endpoints, so both rules.
        let p80 = at(&enc, host.set, 80).unwrap();
        assert!(p80.rules.contains(0) && p80.rules.contains(1));
        // Other ports of the host: only the every-port endpoint.
        let any = at(&enc, host.set, PORT_ANY).unwrap();
        assert!(any.rules.contains(0) && !any.rules.contains(1));
        assert_eq!(any.endpoint, 0);
        // Elsewhere in the /16: only "linklocal", on every port.
        assert!(at(&enc, net.set, 80).is_none());
        assert!(at(&enc, net.set, PORT_ANY).unwrap().rules.contains(0));
        // The single address's shortcut answers exactly what the LPM path does.
        let dest = |port| {
            enc.dests
                .iter()
                .find(|(k, _)| {
                    k.addr == KeyPrefix::from_net(&"169.254.169.254/32".parse().unwrap()).key
                        && k.port == port
                })
                .map(|(_, v)| *v)
        };
        assert_eq!(dest(80), Some(p80));
        assert_eq!(dest(PORT_ANY), Some(any));
        assert_eq!(enc.dests.len(), 2, "only the single address has shortcuts");
        assert_eq!(enc.prefilter, vec![(169, PREFILTER_LPM | PREFILTER_DESTS)]);
    }

    #[test]
    fn prefilter_marks_only_buckets_with_protected_prefixes() {
        let p = policy(
            vec![endpoint(
                "e",
                &["169.254.169.254/32", "fd00:ec2::254/128", "100.64.0.0/10"],
                None,
                Mode::Enforce,
            )],
            vec![],
        );
        let enc = encode(&p, 1, 0);
        assert_eq!(
            enc.prefilter,
            vec![
                (100, PREFILTER_LPM),
                (169, PREFILTER_DESTS),
                (256 + 0xfd, PREFILTER_DESTS)
            ]
        );
        // A prefix wider than a bucket marks every bucket it covers.
        let wide = policy(
            vec![endpoint("w", &["8.0.0.0/6"], None, Mode::Enforce)],
            vec![],
        );
        assert_eq!(
            encode(&wide, 1, 0).prefilter,
            [8, 9, 10, 11].map(|b| (b, PREFILTER_LPM))
        );
    }

    #[test]
    fn deny_wins_over_audit_where_endpoints_overlap() {
        let p = policy(
            vec![
                endpoint("a", &["169.254.169.254/32"], None, Mode::Audit),
                endpoint("b", &["169.254.169.254/32"], Some(vec![80]), Mode::Enforce),
            ],
            vec![],
        );
        let enc = encode(&p, 1, 0);
        let set = prefix(&enc, "169.254.169.254/32").set;
        assert_eq!(at(&enc, set, 80).unwrap().flags & PROTECTED_AUDIT, 0);
        assert_eq!(
            at(&enc, set, PORT_ANY).unwrap().flags & PROTECTED_AUDIT,
            PROTECTED_AUDIT
        );
        assert_eq!(
            prefix(&enc, "169.254.169.254/32").flags & PROTECTED_AUDIT,
            0
        );
    }

    #[test]
    fn selectors_become_rule_sets() {
        let cg = CgroupRef {
            path: "/a/b".into(),
            dir: PathBuf::from("/x/a/b"),
            id: 99,
            level: 2,
        };
        let mut r0 = rule("exe-and-user", vec![0]);
        r0.exe = Some(ExeRef {
            path: "/bin/x".into(),
            id: ExeId {
                dev: 0x801,
                kdev: (8 << 20) | 1,
                ino: 42,
                generation: Some(7),
            },
        });
        r0.users = vec![1000];
        let mut r1 = rule("cgroup", vec![0]);
        r1.cgroups = vec![cg.clone()];
        r1.groups = vec![4];
        let mut p = policy(
            vec![endpoint("e", &["10.0.0.1/32"], None, Mode::Enforce)],
            vec![r0, r1],
        );
        p.guard.users = vec![33];
        let enc = encode(&p, 3, 0);
        let c = enc.config;
        assert_eq!(c.generation, 3);
        assert_eq!(c.flags & CONFIG_GUARD_ALL, 0, "a [guard] is given");
        assert!(!c.any_exe.contains(0) && c.any_exe.contains(1));
        assert!(!c.any_uid.contains(0) && c.any_uid.contains(1));
        assert!(c.any_gid.contains(0) && !c.any_gid.contains(1));
        assert!(c.any_cgroup.contains(0) && !c.any_cgroup.contains(1));
        assert_eq!(c.cgroup_levels, 1 << 2);
        let (k, e) = enc.exes[0];
        assert_eq!((k.ino, k.dev), (42, (8 << 20) | 1));
        assert_eq!((e.generation, e.flags), (7, EXE_CHECK_GENERATION));
        assert!(e.rules.contains(0));
        let uid = |u: u32| {
            enc.uids
                .iter()
                .find(|(k, _)| k.id == u)
                .map(|(_, v)| *v)
                .unwrap()
        };
        assert!(uid(1000).rules.contains(0) && uid(1000).guard == 0);
        assert!(uid(33).rules.is_empty() && uid(33).guard == 1);
        assert_eq!(
            enc.cgroups,
            vec![(
                CgroupKey {
                    id: 99,
                    slot: 0,
                    _pad: 0
                },
                SubjectEntry {
                    guard: 0,
                    _pad: 0,
                    rules: {
                        let mut s = RuleSet::EMPTY;
                        s.insert(1);
                        s
                    }
                }
            )]
        );
    }

    #[test]
    fn no_guard_section_guards_everyone() {
        let enc = encode(&policy(vec![], vec![]), 1, 0);
        assert_ne!(enc.config.flags & CONFIG_GUARD_ALL, 0);
        assert_ne!(enc.config.flags & CONFIG_ENFORCE, 0);
    }

    #[test]
    fn http_entries_become_keys_scoped_by_rule() {
        use crate::policy::HttpRule;
        let mut r0 = rule("web", vec![0]);
        r0.http = Some(vec![
            HttpRule {
                method: "GET".into(),
                path: "/latest/meta-data/instance-id".into(),
                wildcard: false,
                require_headers: vec!["x-aws-ec2-metadata-token".into(), "x-extra".into()],
            },
            HttpRule {
                method: "GET".into(),
                path: "/latest/meta-data/placement/".into(),
                wildcard: true,
                require_headers: vec![],
            },
        ]);
        let mut ep = endpoint(
            "imds",
            &["169.254.169.254/32"],
            Some(vec![80]),
            Mode::Enforce,
        );
        ep.require_imdsv2 = true;
        let p = policy(vec![ep], vec![rule("any", vec![0]), r0]);
        let enc = encode(&p, 1, 0);
        assert!(enc.config.http_rules.contains(1) && !enc.config.http_rules.contains(0));
        assert_eq!(enc.http_rules.len(), 2);
        // Entry 0 is the IMDSv2 token header; the rule's other header comes next.
        assert_eq!(enc.headers.find(b"x-extra"), Some(1));
        let exact = HttpKey::exact(0b11, b"GET", b"/latest/meta-data/instance-id").unwrap();
        let prefix = HttpKey::prefix(0, b"GET", b"/latest/meta-data/placement/").unwrap();
        for (k, v) in &enc.http_rules {
            assert!(*k == exact || *k == prefix, "{k:?}");
            assert!(v.rules.contains(1) && !v.rules.contains(0));
        }
        assert_eq!(enc.config.http_scope_count, 2);
        assert_eq!(&enc.config.http_scopes[..2], &[0, 0b11]);
        assert_eq!(enc.config.http_wildcards, 1);
        assert!(enc
            .ports
            .iter()
            .all(|(_, p)| p.flags & PROTECTED_IMDSV2 != 0));
    }

    /// The same policy in slot 0 and slot 1: the same entries, each key
    /// naming its slot, so the two can sit in the maps side by side.
    #[test]
    fn each_slot_gets_the_same_entries_under_its_own_keys() {
        use crate::policy::HttpRule;
        let cg = CgroupRef {
            path: "/a".into(),
            dir: PathBuf::from("/x/a"),
            id: 7,
            level: 1,
        };
        let mut r0 = rule("all-selectors", vec![0, 1]);
        r0.exe = Some(ExeRef {
            path: "/bin/x".into(),
            id: ExeId {
                dev: 0x801,
                kdev: (8 << 20) | 1,
                ino: 42,
                generation: None,
            },
        });
        r0.users = vec![1000];
        r0.groups = vec![5];
        r0.cgroups = vec![cg.clone()];
        r0.http = Some(vec![HttpRule {
            method: "GET".into(),
            path: "/a/".into(),
            wildcard: true,
            require_headers: vec!["x-aws-ec2-metadata-token".into()],
        }]);
        let mut p = policy(
            vec![
                endpoint(
                    "one",
                    &["169.254.169.254/32"],
                    Some(vec![80]),
                    Mode::Enforce,
                ),
                endpoint("net", &["100.64.0.0/10"], None, Mode::Audit),
            ],
            vec![r0],
        );
        p.guard.cgroups = vec![cg];
        let a = encode(&p, 4, 0);
        let b = encode(&p, 4, 1);
        for (enc, slot) in [(&a, 0), (&b, 1)] {
            assert_eq!(enc.config.slot, slot);
            assert!(!enc.ports.is_empty() && enc.ports.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.dests.is_empty() && enc.dests.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.exes.is_empty() && enc.exes.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.uids.is_empty() && enc.uids.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.gids.is_empty() && enc.gids.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.cgroups.is_empty() && enc.cgroups.iter().all(|(k, _)| k.slot == slot));
            assert!(!enc.http_rules.is_empty());
            for (k, _) in &enc.http_rules {
                assert_eq!(k.scope >> metaguard_common::maps::HTTP_SLOT_SHIFT, slot);
                // The header-set part matches a scope the configuration lists.
                let scopes = &enc.config.http_scopes[..enc.config.http_scope_count as usize];
                assert!(scopes.contains(&((k.scope & 0xffff) as u16)));
            }
        }
        // Slot 1's keys never equal slot 0's: both fit in the maps at once.
        assert!(a
            .ports
            .iter()
            .all(|(k, _)| b.ports.iter().all(|(l, _)| k != l)));
        assert!(a
            .http_rules
            .iter()
            .all(|(k, _)| b.http_rules.iter().all(|(l, _)| k != l)));
        // Apart from the slot, the entries are the same.
        let strip = |mut e: Encoded| {
            e.config.slot = 0;
            e.ports.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.dests.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.exes.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.uids.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.gids.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.cgroups.iter_mut().for_each(|(k, _)| k.slot = 0);
            e.http_rules.iter_mut().for_each(|(k, _)| k.scope &= 0xffff);
            e
        };
        assert_eq!(strip(a), strip(b));
    }

    #[test]
    fn capacity_is_checked_per_map() {
        let nets: Vec<String> = (0..(metaguard_common::maps::MAX_PREFIXES + 1))
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = nets.iter().map(|s| s.as_str()).collect();
        let big = policy(vec![endpoint("big", &refs, None, Mode::Enforce)], vec![]);
        let problems = capacity_problems(&encode(&big, 1, 0));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("protected prefixes"), "{problems:?}");
        let small = policy(
            vec![endpoint("small", &refs[..10], None, Mode::Enforce)],
            vec![],
        );
        assert!(capacity_problems(&encode(&small, 1, 0)).is_empty());
    }
}
