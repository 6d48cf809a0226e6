use std::path::Path;

use super::*;
use crate::{
    events::{CgroupInfo, Decision, Destination, ExeInfo},
    policy::Policy,
};

/// One event line exactly as `metaguard run` serializes a decision.
#[allow(clippy::too_many_arguments)]
fn decision(
    time: &str,
    action: &'static str,
    endpoint: &str,
    pid: u32,
    uid: u32,
    exe: Option<&str>,
    cgroup: Option<&str>,
    hook: &'static str,
) -> String {
    let d = Decision {
        time: time.into(),
        kind: "decision",
        action,
        reason: if action == "allow" {
            "rule-matched"
        } else {
            "no-matching-rule"
        },
        rule: None,
        endpoint: Some(endpoint.into()),
        pid: Some(pid),
        tid: Some(pid),
        uid,
        gid: Some(uid),
        comm: exe.map(|e| e.rsplit('/').next().unwrap().to_string()),
        exe: exe.map(|p| ExeInfo {
            path: Some(p.into()),
            name: p.rsplit('/').next().unwrap().into(),
            dev: "254:1".into(),
            ino: 1837,
            generation: 0,
        }),
        cgroup: CgroupInfo {
            id: 8812,
            path: cgroup.map(String::from),
        },
        destination: Destination {
            address: "169.254.169.254".into(),
            port: Some(80),
        },
        protocol: "tcp",
        hook,
        count: 1,
        policy_generation: 1,
        request: None,
        connection: None,
        redacted: None,
    };
    serde_json::to_string(&d).unwrap()
}

/// A future HTTP-level event: a decision's fields plus `request`.
fn request(
    time: &str,
    exe: &str,
    uid: u32,
    method: &str,
    path: &str,
    imds: Option<&str>,
) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&decision(
        time,
        "audit",
        "aws-imds",
        77,
        uid,
        Some(exe),
        Some("/"),
        "connect4",
    ))
    .unwrap();
    v["type"] = "request".into();
    v["request"] = serde_json::json!({"method": method, "path": path, "imds": imds});
    v.to_string()
}

fn compile(toml: &str) -> Policy {
    match policy::parse_str(toml, Path::new("learned.toml")) {
        Ok(p) => p,
        Err(e) => panic!("the proposal does not compile:\n{e}\n---\n{toml}"),
    }
}

/// Does some rule of `p` allow `exe` run as `uid` to reach `endpoint`?
fn allows(p: &Policy, exe: &str, uid: u32, endpoint: &str) -> bool {
    let ix = p.endpoint_index(endpoint).expect("endpoint defined");
    let id = crate::sys::exe::identify(Path::new(exe)).unwrap();
    p.rules.iter().any(|r| {
        r.endpoints.contains(&ix)
            && r.exe.as_ref().is_none_or(|x| x.id == id)
            && (r.users.is_empty() || r.users.contains(&uid))
    })
}

const SH: &str = "/bin/sh";
const ENV: &str = "/usr/bin/env";

#[test]
fn one_rule_per_exe_and_user_grouping_endpoints() {
    let lines = [
        decision(
            "2026-11-29T03:40:12.000000001Z",
            "audit",
            "aws-imds",
            10,
            0,
            Some(SH),
            Some("/"),
            "connect4",
        ),
        decision(
            "2026-11-29T03:40:13Z",
            "audit",
            "aws-ecs-task-metadata",
            11,
            0,
            Some(SH),
            Some("/"),
            "sendmsg4",
        ),
        decision(
            "2026-11-29T03:40:11Z",
            "deny",
            "aws-imds",
            12,
            0,
            Some(ENV),
            None,
            "connect6",
        ),
        decision(
            "2026-11-29T03:40:14Z",
            "allow",
            "gcp-metadata",
            13,
            4242,
            Some(ENV),
            Some("/"),
            "connect4",
        ),
        decision(
            "2026-11-29T03:40:15Z",
            "allow",
            "gcp-metadata",
            14,
            4242,
            Some(ENV),
            Some("/no/such/cgroup"),
            "connect4",
        ),
    ]
    .join("\n");
    let l = learn(&lines, "ev.jsonl", None).unwrap();
    let t = &l.toml;
    assert_eq!(l.stats.decisions, 5);
    assert_eq!(l.stats.rules, 3, "{t}");
    assert!(t.contains("include = [\"aws\", \"gcp\"]"), "{t}");
    assert!(t.contains("mode = \"audit\""), "{t}");
    assert!(
        t.contains("# Time span: 2026-11-29T03:40:11Z .. 2026-11-29T03:40:15Z."),
        "{t}"
    );
    // sh as root: both endpoints, one cgroup (which exists here: the root).
    assert!(t.contains("name = \"sh\"\nendpoints = [\"aws-ecs-task-metadata\", \"aws-imds\"]\nexe = \"/bin/sh\"\nusers = [\"root\"]\ncgroups = [\"/\"]"), "{t}");
    assert!(t.contains("2 decisions (2 audit)"), "{t}");
    assert!(t.contains("2 pids; hooks: connect4, sendmsg4"), "{t}");
    assert!(t.contains("sh is an interpreter"), "{t}");
    // env twice: named by user; uid 4242 has no passwd entry here.
    assert!(t.contains("name = \"env-root\""), "{t}");
    assert!(t.contains("name = \"env-4242\""), "{t}");
    assert!(t.contains("users = [4242]"), "{t}");
    assert!(t.contains("uid 4242 (no such user on this host)"), "{t}");
    // Two cgroups seen: no selector.
    assert!(
        t.contains("seen in 2 cgroups (/, /no/such/cgroup): no cgroups selector"),
        "{t}"
    );
    // Unknown cgroup path only: no selector either.
    assert!(t.contains("cgroup path unknown"), "{t}");

    let p = compile(t);
    assert_eq!(p.mode, policy::Mode::Audit);
    for (exe, uid, ep) in [
        (SH, 0, "aws-imds"),
        (SH, 0, "aws-ecs-task-metadata"),
        (ENV, 0, "aws-imds"),
        (ENV, 4242, "gcp-metadata"),
    ] {
        assert!(allows(&p, exe, uid, ep), "{exe} {uid} {ep}\n{t}");
    }
    // Minimal: nothing that was not seen.
    assert!(!allows(&p, ENV, 4242, "aws-imds"), "{t}");
    assert!(!allows(&p, SH, 4242, "gcp-metadata"), "{t}");
    assert_eq!(
        p.rules.iter().find(|r| r.name == "sh").unwrap().cgroups[0].path,
        "/"
    );
}

#[test]
fn lost_other_and_pathless_events_are_counted_and_reported() {
    let mut egress: serde_json::Value = serde_json::from_str(&decision(
        "2026-11-29T03:40:12Z",
        "deny",
        "aws-imds",
        1,
        33,
        None,
        Some("/"),
        "egress",
    ))
    .unwrap();
    egress["pid"] = serde_json::Value::Null;
    let mut pathless: serde_json::Value = serde_json::from_str(&decision(
        "2026-11-29T03:40:12Z",
        "deny",
        "aws-imds",
        9,
        33,
        Some(SH),
        Some("/"),
        "connect4",
    ))
    .unwrap();
    pathless["exe"]["path"] = serde_json::Value::Null;
    let lines = [
        decision(
            "2026-11-29T03:40:12Z",
            "deny",
            "aws-imds",
            10,
            0,
            Some(SH),
            Some("/"),
            "connect4",
        ),
        r#"{"time":"2026-11-29T03:41:00Z","type":"lost","lost":5,"total_lost":5}"#.to_string(),
        r#"{"type":"lost","lost":2,"total_lost":7}"#.to_string(),
        r#"{"type":"status","ok":true}"#.to_string(),
        egress.to_string(),
        pathless.to_string(),
    ]
    .join("\n");
    let l = learn(&lines, "ev.jsonl", None).unwrap();
    assert_eq!(l.stats.lost_reports, 2);
    assert_eq!(l.stats.lost_events, 7);
    assert_eq!(l.stats.skipped, 2);
    assert_eq!(l.stats.other.get("status"), Some(&1));
    let t = &l.toml;
    assert!(t.contains("2 lost-event reports"), "{t}");
    assert!(t.contains("the kernel lost 7 events"), "{t}");
    assert!(t.contains("1 of type `status` (ignored)"), "{t}");
    assert!(
        t.contains("2026-11-29T03:40:12Z .. 2026-11-29T03:41:00Z"),
        "{t}"
    );
    assert!(
        l.diagnostics
            .iter()
            .any(|d| d.starts_with("ev.jsonl:5: skipped:") && d.contains("no executable identity")),
        "{:?}",
        l.diagnostics
    );
    assert!(
        l.diagnostics
            .iter()
            .any(|d| d.starts_with("ev.jsonl:6: skipped:") && d.contains("had no path")),
        "{:?}",
        l.diagnostics
    );
    compile(t);
}

#[test]
fn http_requests_are_listed_deduplicated_and_collapsed() {
    let mut lines = vec![
        decision(
            "2026-11-29T03:40:12Z",
            "audit",
            "aws-imds",
            10,
            0,
            Some(SH),
            Some("/"),
            "connect4",
        ),
        request(
            "2026-11-29T03:40:12Z",
            SH,
            0,
            "PUT",
            "/latest/api/token",
            None,
        ),
        request(
            "2026-11-29T03:40:13Z",
            SH,
            0,
            "GET",
            "/latest/meta-data/instance-id",
            Some("v2"),
        ),
        request(
            "2026-11-29T03:40:13Z",
            SH,
            0,
            "GET",
            "/latest/meta-data/instance-id",
            Some("v2"),
        ),
    ];
    for i in 0..COLLAPSE_AT {
        lines.push(request(
            "2026-11-29T03:40:14Z",
            SH,
            0,
            "GET",
            &format!("/latest/meta-data/iam/info{i}"),
            Some("v1"),
        ));
    }
    let l = learn(&lines.join("\n"), "ev.jsonl", None).unwrap();
    assert_eq!(l.stats.requests, 3 + COLLAPSE_AT);
    let t = &l.toml;
    let want = "http = [\n\
                \x20 { method = \"GET\", path = \"/latest/meta-data/iam/*\" },\n\
                \x20 { method = \"GET\", path = \"/latest/meta-data/instance-id\" },\n\
                \x20 { method = \"PUT\", path = \"/latest/api/token\" },\n\
                ]\n";
    assert!(t.contains(want), "{t}");
    assert!(t.contains("8 distinct GET paths under /latest/meta-data/iam/ collapsed into /latest/meta-data/iam/*"), "{t}");
    assert!(t.contains("IMDS versions: 1 none, 8 v1, 2 v2"), "{t}");
    assert!(t.contains("consider requiring IMDSv2"), "{t}");
    compile(t);
}

#[test]
fn collapse_only_at_the_threshold() {
    let seen: BTreeSet<(String, String)> = (0..COLLAPSE_AT - 1)
        .map(|i| ("GET".to_string(), format!("/a/b/{i}")))
        .chain([
            ("GET".to_string(), "/a/c".to_string()),
            ("POST".to_string(), "/a/b/x".to_string()),
        ])
        .collect();
    let (entries, notes) = collapse_http(&seen);
    assert_eq!(entries.len(), COLLAPSE_AT + 1);
    assert!(notes.is_empty());
    let mut more = seen.clone();
    more.insert(("GET".into(), "/a/b/last".into()));
    let (entries, notes) = collapse_http(&more);
    assert_eq!(
        entries,
        vec![
            ("GET".to_string(), "/a/b/*".to_string()),
            ("GET".to_string(), "/a/c".to_string()),
            ("POST".to_string(), "/a/b/x".to_string())
        ]
    );
    assert_eq!(notes.len(), 1);
    assert_eq!(parent("/x"), "");
    assert_eq!(parent("/a/b/?q=1"), "/a");
}

#[test]
fn unknown_endpoints_get_stubs_from_the_destinations_seen() {
    let mut v: serde_json::Value = serde_json::from_str(&decision(
        "2026-11-29T03:40:12Z",
        "audit",
        "vault-agent",
        10,
        0,
        Some(ENV),
        Some("/"),
        "connect6",
    ))
    .unwrap();
    v["destination"] = serde_json::json!({"address": "fd00::1", "port": 8200});
    let l = learn(&v.to_string(), "ev.jsonl", None).unwrap();
    let t = &l.toml;
    assert!(!t.contains("include"), "{t}");
    assert!(t.contains("# TODO: addresses"), "{t}");
    assert!(
        t.contains(
            "[[endpoint]]\nname = \"vault-agent\"\naddresses = [\"fd00::1\"]\nports = [8200]"
        ),
        "{t}"
    );
    let p = compile(t);
    assert!(allows(&p, ENV, 0, "vault-agent"));
}

#[test]
fn missing_exes_are_proposed_commented_out_and_names_are_escaped() {
    let lines = [
        decision(
            "2026-11-29T03:40:12Z",
            "audit",
            "aws-imds",
            10,
            0,
            Some(SH),
            None,
            "connect4",
        ),
        decision(
            "2026-11-29T03:40:12Z",
            "audit",
            "aws-imds",
            10,
            0,
            Some("/opt/we\"ird/agent"),
            None,
            "connect4",
        ),
    ]
    .join("\n");
    let l = learn(&lines, "ev.jsonl", None).unwrap();
    let t = &l.toml;
    assert_eq!(l.stats.rules, 1);
    assert_eq!(l.stats.disabled, 1);
    assert!(
        t.contains("# DISABLED: exe /opt/we\"ird/agent cannot be used on this host"),
        "{t}"
    );
    assert!(t.contains("# exe = '/opt/we\"ird/agent'"), "{t}");
    let p = compile(t);
    assert_eq!(p.rules.len(), 1);

    // A file name with a newline cannot end a comment and inject policy text.
    let evil = decision(
        "2026-11-29T03:40:12Z",
        "audit",
        "aws-imds",
        10,
        0,
        Some("/tmp/x\n[[allow]]\nname = \"evil\"\nusers = [0]\n#"),
        None,
        "connect4",
    );
    let l = learn(&evil, "ev.jsonl", None).unwrap();
    assert!(
        !l.toml
            .lines()
            .any(|line| line.starts_with("name = \"evil\"")),
        "{}",
        l.toml
    );
    assert!(compile(&l.toml).rules.is_empty());
}

#[test]
fn an_existing_policy_keeps_its_sections_and_only_rules_are_generated() {
    let dir = crate::demo::TempDir::new("learn-existing").unwrap();
    let path = dir.0.join("existing.toml");
    std::fs::write(
        &path,
        "# operator's comment\nmode = \"enforce\"\ninclude = [\"aws\"]\n\n[guard]\nusers = [\"root\", 4242]\n\n[[endpoint]]\nname = \"local-vault\"\naddresses = [\"10.9.8.7\"]\nports = [8200]\n\n[[allow]]\nname = \"old\"\nexe = \"/bin/sh\"\n",
    )
    .unwrap();
    let mut gone: serde_json::Value = serde_json::from_str(&decision(
        "2026-11-29T03:40:13Z",
        "deny",
        "renamed-endpoint",
        12,
        0,
        Some(SH),
        Some("/"),
        "connect4",
    ))
    .unwrap();
    gone["destination"]["address"] = "10.1.1.1".into();
    let lines = [
        decision(
            "2026-11-29T03:40:12Z",
            "deny",
            "local-vault",
            10,
            0,
            Some(ENV),
            Some("/"),
            "connect4",
        ),
        decision(
            "2026-11-29T03:40:12Z",
            "allow",
            "aws-imds",
            11,
            0,
            Some(SH),
            Some("/"),
            "connect4",
        ),
        gone.to_string(),
    ]
    .join("\n");
    let l = learn(&lines, "ev.jsonl", Some(&path)).unwrap();
    let t = &l.toml;
    assert!(t.contains("mode = \"enforce\""), "{t}");
    assert!(t.contains("include = [\"aws\"]"), "{t}");
    assert!(t.contains("[guard]\nusers = [\"root\", 4242]"), "{t}");
    assert!(
        t.contains("mode = \"enforce\"\ninclude = [\"aws\"]\n"),
        "{t}"
    );
    assert!(
        t.contains(
            "[[endpoint]]\nname = \"local-vault\"\naddresses = [\"10.9.8.7\"]\nports = [8200]\n"
        ),
        "{t}"
    );
    assert!(t.contains("its 1 [[allow]] rules are not"), "{t}");
    assert!(!t.contains("name = \"old\""), "{t}");
    assert!(!t.contains("mode = \"audit\""), "{t}");
    assert!(
        t.contains("endpoint `renamed-endpoint` was seen but"),
        "{t}"
    );
    let p = compile(t);
    assert_eq!(p.mode, policy::Mode::Enforce);
    assert_eq!(p.guard.users, vec![0, 4242]);
    assert!(allows(&p, ENV, 0, "local-vault"));
    assert!(allows(&p, SH, 0, "aws-imds"));
    assert_eq!(p.rules.len(), 2);

    // An existing policy that does not compile is refused.
    std::fs::write(&path, "mode = \"enforcing\"\n").unwrap();
    assert!(matches!(
        learn(&lines, "ev.jsonl", Some(&path)),
        Err(LearnError::Policy(_))
    ));
}

#[test]
fn malformed_lines_are_reported_and_nothing_to_learn_is_an_error() {
    let lines = [
        "not json".to_string(),
        String::new(),
        r#"{"type":"decision","time":"x"}"#.to_string(),
        r#"{"no":"type"}"#.to_string(),
        r#"{"type":"request","time":"2026-11-29T03:40:12Z","action":"audit","endpoint":"aws-imds","pid":1,"uid":0,"exe":null,"cgroup":{"id":1,"path":"/"},"destination":{"address":"169.254.169.254","port":80},"hook":"connect4"}"#.to_string(),
        decision("2026-11-29T03:40:12Z", "audit", "aws-imds", 10, 0, Some(SH), Some("/"), "connect4"),
    ]
    .join("\n");
    let l = learn(&lines, "ev.jsonl", None).unwrap();
    assert_eq!(l.stats.malformed, 4, "{:?}", l.diagnostics);
    for n in [1, 3, 4, 5] {
        assert!(
            l.diagnostics
                .iter()
                .any(|d| d.starts_with(&format!("ev.jsonl:{n}: malformed event"))),
            "line {n}: {:?}",
            l.diagnostics
        );
    }
    assert_eq!(l.stats.rules, 1);
    assert!(matches!(
        learn(
            "garbage\n{\"type\":\"lost\",\"lost\":1,\"total_lost\":1}\n",
            "ev.jsonl",
            None
        ),
        Err(LearnError::NothingToLearn { .. })
    ));
}

#[test]
fn requests_that_are_no_exact_pattern_are_only_listed_in_comments() {
    let mut truncated: serde_json::Value = serde_json::from_str(&request(
        "2026-11-29T03:40:12Z",
        SH,
        0,
        "GET",
        "/latest/meta-data/a-very-long-path",
        None,
    ))
    .unwrap();
    truncated["request"]["path_truncated"] = true.into();
    let lines = [
        request(
            "2026-11-29T03:40:12Z",
            SH,
            0,
            "GET",
            "/latest/meta-data/instance-id",
            None,
        ),
        // A literal `*` would become a wildcard; `//` is not canonical.
        request("2026-11-29T03:40:12Z", SH, 0, "GET", "/latest/*", None),
        request("2026-11-29T03:40:12Z", SH, 0, "GET", "/a//b", None),
        truncated.to_string(),
    ];
    let l = learn(&lines.join("\n"), "ev.jsonl", None).unwrap();
    let t = &l.toml;
    assert!(
        t.contains(
            "http = [\n  { method = \"GET\", path = \"/latest/meta-data/instance-id\" },\n]\n"
        ),
        "{t}"
    );
    for p in ["/latest/*", "/a//b", "/latest/meta-data/a-very-long-path"] {
        assert!(
            t.contains(&format!("#   {{ method = \"GET\", path = \"{p}\" }}")),
            "{p} listed commented out: {t}"
        );
    }
    assert!(
        t.contains("3 request(s) cannot be written as a pattern"),
        "{t}"
    );
    let p = compile(t);
    let rule = p
        .rules
        .iter()
        .find(|r| r.name.contains("sh"))
        .expect("the sh rule");
    assert_eq!(
        rule.http.as_ref().map(|h| h.len()),
        Some(1),
        "only the exact request is allowed"
    );
}
