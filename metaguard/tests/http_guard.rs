//! Kernel tests of the per-send check (sock_ops + sk_msg): a TCP socket to a
//! protected destination is usable only by a sender the policy allows, not
//! merely by whoever holds it.
#[macro_use]
mod common;

use common::*;

const ID_PATH: &str = "/latest/meta-data/instance-id";

/// The allowed probe connects; the socket is inherited across fork+exec by
/// the `exec`'d program, which sends the request on it.
fn pass_fd(env: &Env, sender: &std::path::Path, addr: &str) -> Outcome {
    pass_fd_mode(env, "pass-fd", sender, addr)
}

fn pass_fd_mode(env: &Env, mode: &str, sender: &std::path::Path, addr: &str) -> Outcome {
    env.run(
        &env.probe,
        &[
            mode,
            addr,
            "80",
            "--exec",
            sender.to_str().unwrap(),
            "send-fd",
            addr,
            "80",
        ],
    )
}

#[test]
fn allowed_sender_on_its_own_and_inherited_socket() {
    let env = env_or_skip!("sk-allow", PROBE_ONLY);
    let ok = env.run(&env.probe, &["tcp", IMDS, "80"]);
    assert!(ok.ok(), "allowed probe: {ok:?}");
    assert_eq!(ok.json["body"], "i-0123456789abcdef0");
    assert_eq!(env.requests_for(ID_PATH), 1);

    // The same image on the receiving end of the socket: still allowed.
    let ok = pass_fd(&env, &env.probe, IMDS);
    assert!(
        ok.ok(),
        "allowed probe sending on an inherited socket: {ok:?}"
    );
    assert_eq!(ok.json["mode"], "send-fd");
    assert_eq!(env.requests_for(ID_PATH), 2);
    assert!(
        env.wait_event(|e| e["hook"] == "sendmsg-tcp").is_none(),
        "allowed sends report nothing"
    );
}

#[test]
fn inherited_socket_is_unusable_by_a_denied_sender() {
    let env = env_or_skip!("sk-deny", PROBE_ONLY);
    let d = pass_fd(&env, &env.copy, IMDS);
    assert_eq!(d.code, 1, "the copy's send must be refused: {d:?}");
    assert_eq!(d.json["mode"], "send-fd", "{d:?}");
    assert_eq!(d.json["error"], "EACCES", "{d:?}");
    assert_eq!(
        env.requests_for(ID_PATH),
        0,
        "the refused request must never arrive"
    );
    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["hook"] == "sendmsg-tcp")
        .expect("a deny event for the send");
    assert_eq!(ev["pid"].as_u64(), d.json["pid"].as_u64());
    assert_eq!(ev["exe"]["name"], "probe-copy");
    assert_eq!(ev["destination"]["address"], IMDS);
    assert_eq!(ev["destination"]["port"], 80);
    assert_eq!(ev["protocol"], "tcp");
    assert_eq!(ev["reason"], "no-matching-rule");
    // The connect itself was the allowed probe's.
    assert!(env
        .wait_event(|e| e["action"] == "allow" && e["hook"] == "connect4")
        .is_some());
}

#[test]
fn inherited_ipv6_socket_is_unusable_by_a_denied_sender() {
    let env = env_or_skip!("sk-deny6", PROBE_ONLY);
    let d = pass_fd(&env, &env.copy, IMDS6);
    assert_eq!(d.code, 1, "{d:?}");
    assert_eq!(d.json["error"], "EACCES", "{d:?}");
    assert_eq!(env.requests_for(ID_PATH), 0);
    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["hook"] == "sendmsg-tcp")
        .expect("a deny event for the send");
    assert_eq!(ev["destination"]["address"], IMDS6);
    assert_eq!(ev["destination"]["port"], 80);
    assert!(pass_fd(&env, &env.probe, IMDS6).ok());
    assert_eq!(env.requests_for(ID_PATH), 1);
}

#[test]
fn inherited_ipv4_mapped_socket_is_unusable_by_a_denied_sender() {
    let env = env_or_skip!("sk-mapped", PROBE_ONLY);
    let d = pass_fd_mode(&env, "pass-fd6-mapped", &env.copy, IMDS);
    assert_eq!(d.code, 1, "{d:?}");
    assert_eq!(d.json["error"], "EACCES", "{d:?}");
    assert_eq!(env.requests_for(ID_PATH), 0);
    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["hook"] == "sendmsg-tcp")
        .expect("a deny event for the send");
    assert_eq!(ev["destination"]["address"], IMDS);
    assert!(pass_fd_mode(&env, "pass-fd6-mapped", &env.probe, IMDS).ok());
    assert_eq!(env.requests_for(ID_PATH), 1);
}

/// The probe may reach the endpoint, but only with these requests.
const HTTP_RULES: &str = r#"
[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32", "fd00:ec2::254/128"]
ports     = [80]

[[allow]]
name      = "probe-http"
endpoints = ["aws-imds"]
exe       = "{probe}"
http = [
  { method = "PUT", path = "/latest/api/token" },
  { method = "GET", path = "/latest/meta-data/instance-id", require_headers = ["x-aws-ec2-metadata-token"] },
  { method = "GET", path = "/latest/meta-data/placement/*" },
]
"#;

const TOKEN: &str = "X-aws-ec2-metadata-token: t0k3n\r\n";

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}\r\n")
}

fn close(req: &str) -> String {
    req.replacen("\r\nHost:", "\r\nConnection: close\r\nHost:", 1)
}

/// Sends `payload` as is, `chunk` bytes per send call.
fn raw(env: &Env, payload: &str, chunk: Option<usize>) -> Outcome {
    let chunk = chunk.map(|c| c.to_string());
    let mut args = vec![
        "http-raw",
        IMDS,
        "80",
        "--payload",
        payload,
        "--timeout-ms",
        "3000",
    ];
    if let Some(c) = &chunk {
        args.extend(["--count", c.as_str()]);
    }
    env.run(&env.probe, &args)
}

fn refused(o: &Outcome) -> bool {
    o.code == 1 && o.json["error"] == "EACCES"
}

fn targets(env: &Env) -> Vec<String> {
    env.sb.requests().iter().map(|r| r.target.clone()).collect()
}

/// The service's log once it holds at least `n` requests (or after 2 s):
/// it records a request while the client may already be done.
fn targets_at_least(env: &Env, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let t = targets(env);
        if t.len() >= n || std::time::Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn http_rules_allow_exactly_the_listed_requests() {
    let env = env_or_skip!("http-rules", HTTP_RULES);
    // Listed, with its required header.
    let ok = raw(&env, &close(&get(ID_PATH, TOKEN)), None);
    assert!(ok.ok(), "{ok:?}");
    // (The fake service answers 401 to a made-up token: what matters is that
    // the request reached it.)
    assert!(
        ok.json["body"].as_str().unwrap().starts_with("HTTP/1.1 "),
        "{ok:?}"
    );
    // The same path without the required header, another path, another method.
    for req in [
        get(ID_PATH, ""),
        get("/latest/meta-data/iam/security-credentials/", TOKEN),
        format!("POST {ID_PATH} HTTP/1.1\r\nHost: x\r\n{TOKEN}Content-Length: 0\r\n\r\n"),
        format!("get {ID_PATH} HTTP/1.1\r\nHost: x\r\n{TOKEN}\r\n"),
    ] {
        let d = raw(&env, &close(&req), None);
        assert!(refused(&d), "must be refused at send: {req:?} -> {d:?}");
    }
    assert_eq!(
        targets(&env),
        vec![ID_PATH.to_string()],
        "only the allowed request arrives"
    );
    // Wildcard: one or more segments below, nothing else.
    assert!(raw(
        &env,
        &close(&get("/latest/meta-data/placement/region", "")),
        None
    )
    .ok());
    assert!(raw(
        &env,
        &close(&get("/latest/meta-data/placement/a/b", "")),
        None
    )
    .ok());
    for path in [
        "/latest/meta-data/placement",
        "/latest/meta-data/placement/",
        "/latest/meta-data/placementX/a",
    ] {
        let d = raw(&env, &close(&get(path, "")), None);
        assert!(refused(&d), "{path}: {d:?}");
    }
    let ev = env
        .wait_event(|e| {
            e["type"] == "request"
                && e["action"] == "deny"
                && e["request"]["path"] == "/latest/meta-data/placement/"
        })
        .expect("an event for the refused request");
    assert_eq!(ev["reason"], "no-http-rule");
    assert_eq!(ev["request"]["method"], "GET");
    assert!(ev["connection"].as_u64().unwrap() > 0);
    let ok_ev = env
        .wait_event(|e| {
            e["type"] == "request" && e["action"] == "allow" && e["request"]["path"] == ID_PATH
        })
        .expect("an event for the allowed request");
    assert_eq!(ok_ev["rule"], "probe-http");
    // Header values never appear in events.
    assert!(!env
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.to_string().contains("t0k3n")));
}

#[test]
fn split_and_pipelined_requests_are_judged_whole() {
    let env = env_or_skip!("http-split", HTTP_RULES);
    // Byte by byte: the allowed request is gathered and passes; the refused
    // one never arrives, not even in part.
    let ok = raw(&env, &close(&get(ID_PATH, TOKEN)), Some(1));
    assert!(ok.ok(), "{ok:?}");
    let d = raw(&env, &close(&get(ID_PATH, "")), Some(1));
    assert!(refused(&d), "{d:?}");
    assert_eq!(targets(&env).len(), 1);
    // Two allowed requests in one send (keep-alive, pipelined): both served.
    let two = format!(
        "{}{}",
        get(ID_PATH, TOKEN),
        close(&get("/latest/meta-data/placement/zone", ""))
    );
    let ok = raw(&env, &two, None);
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(
        ok.json["body"]
            .as_str()
            .unwrap()
            .matches("HTTP/1.1 ")
            .count(),
        2,
        "{ok:?}"
    );
    // An allowed then a refused request in one send: the first is served,
    // the second never arrives and the send fails.
    let before = targets(&env).len();
    let mixed = format!(
        "{}{}",
        get(ID_PATH, TOKEN),
        close(&get("/latest/user-data", TOKEN))
    );
    let d = raw(&env, &mixed, None);
    assert!(refused(&d), "{d:?}");
    let after = targets_at_least(&env, before + 1);
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert!(!after.iter().any(|t| t == "/latest/user-data"));
    // A body sent in its own write passes by its length; the next request on
    // the connection is judged again.
    let put = "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 4\r\n\r\nbody";
    let split = put.replace("\r\n\r\nbody", "\r\n\r\n\u{1e}body\u{1e}");
    let ok = raw(
        &env,
        &format!("{split}{}", close(&get(ID_PATH, TOKEN))),
        None,
    );
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(
        ok.json["body"]
            .as_str()
            .unwrap()
            .matches("HTTP/1.1 ")
            .count(),
        2,
        "{ok:?}"
    );
    // A request cut off after another one in the same send cannot be held
    // back on its own: refused (documented), after the first was served.
    let d = raw(
        &env,
        &format!("{}{}", get(ID_PATH, TOKEN), close(&get(ID_PATH, TOKEN))),
        Some(130),
    );
    assert!(refused(&d), "{d:?}");
    assert!(env
        .wait_event(|e| e["type"] == "request" && e["request"]["check"] == "split-pipeline")
        .is_some());
    let smuggled = format!(
        "{}{}",
        put.replace("Content-Length: 4", "Content-Length: 0")
            .trim_end_matches("body"),
        close(&get("/latest/user-data", TOKEN))
    );
    assert!(refused(&raw(&env, &smuggled, None)));
    assert!(!targets(&env).iter().any(|t| t == "/latest/user-data"));
}

#[test]
fn ambiguous_requests_are_refused_and_canonical_forms_match() {
    let env = env_or_skip!("http-ambig", HTTP_RULES);
    // Spellings a server reads as the allowed path: allowed.
    for path in [
        "/latest/meta-data/./instance-id",
        "//latest//meta-data/instance-id",
        "/latest/meta-data/x/../instance-id",
        "/latest/meta-data/%69nstance-id",
        "http://169.254.169.254/latest/meta-data/instance-id",
    ] {
        let o = raw(&env, &close(&get(path, TOKEN)), None);
        assert!(o.ok(), "{path}: {o:?}");
    }
    // Ambiguous or unparseable: refused, and never arrive.
    let n = targets(&env).len();
    let cases = [
        ("encoded-slash", get("/latest/meta-data%2Finstance-id", TOKEN)),
        ("backslash", get("/latest/meta-data\\instance-id", TOKEN)),
        ("nul", get("/latest/meta-data/%00", TOKEN)),
        ("transfer-encoding", "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("transfer-encoding", "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string()),
        ("obs-fold", get(ID_PATH, &format!("{TOKEN}X-a: b\r\n c\r\n"))),
        ("bare-lf", format!("GET {ID_PATH} HTTP/1.1\nHost: x\n{TOKEN}\n")),
        ("bad-version", format!("GET {ID_PATH}\r\n\r\n")),
        ("bad-version", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string()),
        ("duplicate-content-length", "PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".to_string()),
        ("header-block-too-large", get(ID_PATH, &format!("{TOKEN}X-pad: {}\r\n", "a".repeat(5000)))),
    ];
    for (check, req) in &cases {
        let d = raw(&env, req, None);
        assert!(refused(&d), "{check}: {req:?} -> {d:?}");
        assert!(
            env.wait_event(|e| e["type"] == "request" && e["request"]["check"] == *check)
                .is_some(),
            "an event naming the check {check}"
        );
    }
    assert_eq!(targets(&env).len(), n, "no refused request arrived");
}

#[test]
fn imdsv2_can_be_required_and_requests_are_classified() {
    let policy = HTTP_RULES.replace(
        "ports     = [80]\n",
        "ports     = [80]\nrequire_imdsv2 = true\n",
    );
    let env = env_or_skip!("http-v2", &policy);
    // Allowed by the wildcard rule, but without a session token: refused.
    let d = raw(
        &env,
        &close(&get("/latest/meta-data/placement/region", "")),
        None,
    );
    assert!(refused(&d), "{d:?}");
    let ev = env
        .wait_event(|e| e["type"] == "request" && e["reason"] == "imdsv1-refused")
        .expect("an IMDSv1 refusal");
    assert_eq!(ev["request"]["imds"], "v1");
    let ok = raw(
        &env,
        &close(&get("/latest/meta-data/placement/region", TOKEN)),
        None,
    );
    assert!(ok.ok(), "{ok:?}");
    let ev = env
        .wait_event(|e| e["type"] == "request" && e["action"] == "allow")
        .expect("an allowed request");
    assert_eq!(ev["request"]["imds"], "v2");
}

/// AWS preset endpoints classify every request (IMDSv1 detection) even under
/// a rule without `http`, which still allows any request: nothing is refused.
#[test]
fn aws_requests_are_classified_under_rules_without_http() {
    let policy = "include = [\"aws\"]\n\n[[allow]]\nname = \"probe\"\nexe = \"{probe}\"\n";
    let env = env_or_skip!("http-classify", policy);
    let v1 = raw(&env, &close(&get(ID_PATH, "")), None);
    assert!(v1.ok(), "{v1:?}");
    let ev = env
        .wait_event(|e| e["type"] == "request" && e["request"]["imds"] == "v1")
        .expect("a v1 classification");
    assert_eq!(ev["action"], "allow");
    assert_eq!(ev["rule"], "probe");
    assert_eq!(ev["endpoint"], "aws-imds");
    let v2 = raw(&env, &close(&get(ID_PATH, TOKEN)), None);
    assert!(v2.ok(), "{v2:?}");
    assert!(env
        .wait_event(|e| e["type"] == "request" && e["request"]["imds"] == "v2")
        .is_some());
    // Not refused without `http` rules, but still reported.
    let odd = raw(
        &env,
        &close(&get("/latest/meta-data%2Finstance-id", "")),
        None,
    );
    assert!(odd.ok(), "{odd:?}");
    let ev = env
        .wait_event(|e| e["type"] == "request" && e["request"]["check"] == "encoded-slash")
        .expect("the odd request is reported");
    assert_eq!(ev["action"], "allow");
    assert_eq!(targets_at_least(&env, 3).len(), 3);
}

/// TCP Fast Open queues the request before the connection exists, where the
/// per-send check cannot see it: to an endpoint where the caller's requests
/// are checked, the Fast Open connect itself is refused (EPERM), on both
/// families, and nothing arrives. A plain connect by the same program
/// still works for its listed requests.
#[test]
fn fast_open_is_refused_where_requests_are_checked() {
    let env = env_or_skip!("http-tfo", HTTP_RULES);
    const CREDS: &str = "/latest/meta-data/iam/security-credentials/";
    for addr in [IMDS, IMDS6] {
        let d = env.run(&env.probe, &["tfo", addr, "80", "--path", CREDS]);
        assert!(d.denied(), "{addr}: Fast Open must fail at connect: {d:?}");
        let ev = env
            .wait_event(|e| {
                e["reason"] == "fast-open" && e["pid"].as_u64() == d.json["pid"].as_u64()
            })
            .unwrap_or_else(|| panic!("{addr}: a fast-open event"));
        assert_eq!(ev["action"], "deny");
        assert_eq!(ev["exe"]["name"], "metaguard-probe");
    }
    assert!(
        targets(&env).iter().all(|t| t != CREDS),
        "a Fast Open request arrived: {:?}",
        targets(&env)
    );
    let ok = raw(&env, &close(&get(ID_PATH, TOKEN)), None);
    assert!(ok.ok(), "{ok:?}");
}
