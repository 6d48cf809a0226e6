//! The verdict, from what the kernel programs' lookups found. Pure and
//! allocation-free so the same function decides in the kernel and in tests.
use crate::{
    maps::{
        Config, ExeEntry, Protected, SubjectEntry, CONFIG_ENFORCE, CONFIG_GUARD_ALL,
        EXE_CHECK_GENERATION, PROTECTED_AUDIT, PROTECTED_IMDSV2,
    },
    ruleset::RuleSet,
};

/// The caller as the kernel sees it, with its lookup results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Subject<'a> {
    /// Generation of the running image's inode, when one could be read.
    pub exe_generation: Option<u32>,
    pub exe: Option<&'a ExeEntry>,
    pub uid: Option<&'a SubjectEntry>,
    pub gid: Option<&'a SubjectEntry>,
    /// Union of the entries of the caller's supplementary groups.
    pub groups_rules: RuleSet,
    /// Union of the entries of the caller's cgroup ancestors that are named.
    pub cgroup_guard: bool,
    pub cgroup_rules: RuleSet,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow = 1,
    Deny = 2,
    /// Would have been denied; audit mode let it through.
    Audit = 3,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// An allow rule matched.
    RuleMatched = 1,
    /// The caller is not guarded by the policy.
    Unguarded = 2,
    /// No allow rule matched the caller for this destination.
    NoRule = 3,
    /// Egress backstop: the packet's socket was not allowed this destination.
    Untagged = 4,
    /// Egress backstop: the packet's socket could not be inspected.
    NoSocket = 5,
    /// A request on an allowed connection that no `http` entry of the
    /// caller's rules allows (or whose required headers are missing).
    HttpNoRule = 6,
    /// A request the HTTP checker refused (the event names the check).
    HttpRejected = 7,
    /// A request without the IMDSv2 session token to an endpoint that
    /// requires it.
    Imdsv1 = 8,
    /// No rule matched, but a temporary grant for this process did.
    Granted = 9,
    /// Secrets in an answer were masked (`redact`).
    Redacted = 10,
    /// An answer under `redact` could not be followed: the rest of the
    /// connection's input is masked and its sends refused.
    RedactCut = 11,
    /// A sender whose rules redact answers, on a connection that cannot
    /// redact them (established before the policy asked for it).
    RedactUnavailable = 12,
    /// A TCP Fast Open send to an endpoint where requests are checked: its
    /// data would leave with the handshake, before the per-send check can
    /// see it.
    FastOpen = 13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub reason: Reason,
    pub rule: Option<u16>,
}

impl Verdict {
    /// Whether the kernel lets the operation proceed.
    #[inline(always)]
    pub fn passes(&self) -> bool {
        !matches!(self.action, Action::Deny)
    }
}

/// Whether the policy applies to the caller.
#[inline(always)]
pub fn is_guarded(cfg: &Config, uid: Option<&SubjectEntry>, cgroup_guard: bool) -> bool {
    cfg.flags & CONFIG_GUARD_ALL != 0 || cgroup_guard || matches!(uid, Some(e) if e.guard != 0)
}

/// Rules whose every selector the caller satisfies.
#[inline(always)]
pub fn matching_rules(cfg: &Config, s: &Subject) -> RuleSet {
    let exe = match s.exe {
        Some(e) if exe_generation_ok(e, s.exe_generation) => e.rules.or(&cfg.any_exe),
        _ => cfg.any_exe,
    };
    let uid = match s.uid {
        Some(e) => e.rules.or(&cfg.any_uid),
        None => cfg.any_uid,
    };
    let gid = match s.gid {
        Some(e) => e.rules.or(&cfg.any_gid),
        None => cfg.any_gid,
    }
    .or(&s.groups_rules);
    let cgroup = s.cgroup_rules.or(&cfg.any_cgroup);
    exe.and(&uid).and(&gid).and(&cgroup)
}

#[inline(always)]
fn exe_generation_ok(e: &ExeEntry, running: Option<u32>) -> bool {
    e.flags & EXE_CHECK_GENERATION == 0 || running == Some(e.generation)
}

/// The decision for a guarded-or-not caller reaching a protected destination.
#[inline(always)]
pub fn decide(cfg: &Config, dest: &Protected, s: &Subject) -> Verdict {
    let guarded = is_guarded(cfg, s.uid, s.cgroup_guard);
    verdict(cfg, dest, guarded, &matching_rules(cfg, s).and(&dest.rules))
}

/// The decision, once it is known whether the caller is guarded and which
/// of its rules allow `dest` (`allowed`).
#[inline(always)]
pub fn verdict(cfg: &Config, dest: &Protected, guarded: bool, allowed: &RuleSet) -> Verdict {
    if !guarded {
        return Verdict {
            action: Action::Allow,
            reason: Reason::Unguarded,
            rule: None,
        };
    }
    first_rule_or(cfg, dest, allowed, Reason::NoRule)
}

/// Allowed by the first rule of `rules`, else refused for `reason`.
#[inline(always)]
fn first_rule_or(cfg: &Config, dest: &Protected, rules: &RuleSet, reason: Reason) -> Verdict {
    match rules.first() {
        Some(rule) => Verdict {
            action: Action::Allow,
            reason: Reason::RuleMatched,
            rule: Some(rule),
        },
        None => Verdict {
            action: refusal(cfg, dest),
            reason,
            rule: None,
        },
    }
}

/// Of the caller's `allowed` rules, those without an `http` list: they allow
/// any request on the connection.
#[inline(always)]
pub fn any_request_rules(cfg: &Config, allowed: &RuleSet) -> RuleSet {
    allowed.and(&cfg.http_rules.not())
}

/// The verdict on one parsed request on a connection to `dest`, for a caller
/// whose rules for `dest` are `allowed` (identity already checked: empty
/// means the sender was refused before any byte was parsed).
/// `http_allowed`: rules with an `http` entry matching the request (method,
/// path, and required headers present); `token`: the IMDSv2 session token
/// header is present.
#[inline(always)]
pub fn http_request(
    cfg: &Config,
    dest: &Protected,
    guarded: bool,
    allowed: &RuleSet,
    http_allowed: &RuleSet,
    token: bool,
) -> Verdict {
    if !guarded {
        return Verdict {
            action: Action::Allow,
            reason: Reason::Unguarded,
            rule: None,
        };
    }
    if dest.flags & PROTECTED_IMDSV2 != 0 && !token {
        return Verdict {
            action: refusal(cfg, dest),
            reason: Reason::Imdsv1,
            rule: None,
        };
    }
    // Rules without an `http` list allow any request; the others only theirs.
    let any_request = any_request_rules(cfg, allowed);
    let rules = if any_request.first().is_some() {
        any_request
    } else {
        allowed.and(&cfg.http_rules).and(http_allowed)
    };
    first_rule_or(cfg, dest, &rules, Reason::HttpNoRule)
}

/// Deny, or Audit where the policy or the endpoint says so.
#[inline(always)]
pub fn refusal(cfg: &Config, dest: &Protected) -> Action {
    if cfg.flags & CONFIG_ENFORCE == 0 || dest.flags & PROTECTED_AUDIT != 0 {
        Action::Audit
    } else {
        Action::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &[usize]) -> RuleSet {
        let mut s = RuleSet::EMPTY;
        for &r in rules {
            s.insert(r);
        }
        s
    }

    fn cfg(flags: u32) -> Config {
        Config {
            flags,
            ..Default::default()
        }
    }

    fn dest(rules: &[usize]) -> Protected {
        Protected {
            endpoint: 0,
            flags: 0,
            rules: set(rules),
        }
    }

    fn exe(rules: &[usize]) -> ExeEntry {
        ExeEntry {
            generation: 0,
            flags: 0,
            rules: set(rules),
        }
    }

    fn subject(rules: &[usize]) -> SubjectEntry {
        SubjectEntry {
            guard: 0,
            _pad: 0,
            rules: set(rules),
        }
    }

    const ENFORCE_ALL: u32 = CONFIG_ENFORCE | CONFIG_GUARD_ALL;

    #[test]
    fn unknown_caller_is_denied() {
        let c = cfg(ENFORCE_ALL);
        let v = decide(&c, &dest(&[0]), &Subject::default());
        assert_eq!(
            v,
            Verdict {
                action: Action::Deny,
                reason: Reason::NoRule,
                rule: None
            }
        );
        assert!(!v.passes());
    }

    #[test]
    fn exe_rule_allows_only_its_endpoints() {
        // Rule 0: exe only. Other selectors unconstrained.
        let mut c = cfg(ENFORCE_ALL);
        c.any_uid = set(&[0]);
        c.any_gid = set(&[0]);
        c.any_cgroup = set(&[0]);
        let e = exe(&[0]);
        let s = Subject {
            exe: Some(&e),
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[0]), &s).rule, Some(0));
        assert_eq!(decide(&c, &dest(&[1]), &s).action, Action::Deny);
    }

    #[test]
    fn every_given_selector_must_match() {
        // Rule 3: exe AND uid. Rule 5: uid only.
        let mut c = cfg(ENFORCE_ALL);
        c.any_exe = set(&[5]);
        c.any_gid = set(&[3, 5]);
        c.any_cgroup = set(&[3, 5]);
        let e = exe(&[3]);
        let root = subject(&[3]);
        let s_exe_only = Subject {
            exe: Some(&e),
            ..Default::default()
        };
        let s_uid_only = Subject {
            uid: Some(&root),
            ..Default::default()
        };
        let s_both = Subject {
            exe: Some(&e),
            uid: Some(&root),
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[3]), &s_exe_only).action, Action::Deny);
        assert_eq!(decide(&c, &dest(&[3]), &s_uid_only).action, Action::Deny);
        assert_eq!(decide(&c, &dest(&[3]), &s_both).rule, Some(3));
        let www = subject(&[5]);
        let s_www = Subject {
            uid: Some(&www),
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[3, 5]), &s_www).rule, Some(5));
    }

    #[test]
    fn supplementary_groups_satisfy_group_selectors() {
        let mut c = cfg(ENFORCE_ALL);
        c.any_exe = set(&[2]);
        c.any_uid = set(&[2]);
        c.any_cgroup = set(&[2]);
        let s = Subject {
            groups_rules: set(&[2]),
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[2]), &s).rule, Some(2));
        assert!(!decide(&c, &dest(&[2]), &Subject::default()).passes());
    }

    #[test]
    fn generation_mismatch_is_a_different_file() {
        let mut c = cfg(ENFORCE_ALL);
        c.any_uid = set(&[0]);
        c.any_gid = set(&[0]);
        c.any_cgroup = set(&[0]);
        let e = ExeEntry {
            generation: 7,
            flags: EXE_CHECK_GENERATION,
            rules: set(&[0]),
        };
        let same = Subject {
            exe: Some(&e),
            exe_generation: Some(7),
            ..Default::default()
        };
        let reused = Subject {
            exe: Some(&e),
            exe_generation: Some(8),
            ..Default::default()
        };
        let unknown = Subject {
            exe: Some(&e),
            exe_generation: None,
            ..Default::default()
        };
        assert!(decide(&c, &dest(&[0]), &same).passes());
        assert!(!decide(&c, &dest(&[0]), &reused).passes());
        assert!(!decide(&c, &dest(&[0]), &unknown).passes());
    }

    #[test]
    fn guard_selects_by_uid_or_cgroup() {
        let c = cfg(CONFIG_ENFORCE);
        let guarded_uid = SubjectEntry {
            guard: 1,
            ..Default::default()
        };
        assert_eq!(
            decide(&c, &dest(&[]), &Subject::default()).reason,
            Reason::Unguarded
        );
        let s = Subject {
            uid: Some(&guarded_uid),
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[]), &s).action, Action::Deny);
        let s = Subject {
            cgroup_guard: true,
            ..Default::default()
        };
        assert_eq!(decide(&c, &dest(&[]), &s).action, Action::Deny);
    }

    #[test]
    fn audit_mode_and_audit_endpoints_pass_but_report() {
        let c = cfg(CONFIG_GUARD_ALL);
        let v = decide(&c, &dest(&[]), &Subject::default());
        assert_eq!((v.action, v.passes()), (Action::Audit, true));
        let c = cfg(ENFORCE_ALL);
        let d = Protected {
            flags: PROTECTED_AUDIT,
            ..dest(&[])
        };
        assert_eq!(decide(&c, &d, &Subject::default()).action, Action::Audit);
    }
}
