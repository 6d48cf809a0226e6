//! Kernel tests with real HTTP clients (curl, Python's `http.client`,
//! Python `requests`) against the fake IMDS through the per-request HTTP
//! check, and a socket handed to another process with SCM_RIGHTS.
#[macro_use]
mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use common::*;
use metaguard_sandbox::fake_imds::responses::{AWS_INSTANCE_ID, AWS_TOKEN};
use serde_json::Value;

const TOKEN_PATH: &str = "/latest/api/token";
const ID_PATH: &str = "/latest/meta-data/instance-id";
const CREDS_PATH: &str = "/latest/meta-data/iam/security-credentials/";
const BASE: &str = "http://169.254.169.254";
/// How long a refused request may take to fail at the client.
const PROMPT: Duration = Duration::from_secs(2);

/// One client binary allowed the IMDSv2 flow, and nothing else.
fn client_policy(exe: &Path) -> String {
    format!(
        r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32"]
ports     = [80]

[[allow]]
name      = "client-imdsv2"
endpoints = ["aws-imds"]
exe       = "{}"
http = [
  {{ method = "PUT", path = "/latest/api/token" }},
  {{ method = "GET", path = "/latest/meta-data/instance-id", require_headers = ["x-aws-ec2-metadata-token"] }},
]
"#,
        exe.display()
    )
}

/// Runs `program args` in the sandbox (client netns and cgroup), timed.
fn run_client(env: &Env, program: &Path, args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = env.sb.client(program).args(args).output().unwrap();
    (out, start.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The requests the fake service recorded for `path`, after giving it a
/// moment: it may record a request after the client is already done.
fn settled_requests_for(env: &Env, path: &str, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let n = env.requests_for(path);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (c): the daemon reported the two allowed requests and the refused one,
/// each as a `request` event with its method and path, from `exe_name`.
fn assert_request_events(env: &Env, exe_name: &str) {
    let find = |action: &str, method: &str, path: &str| {
        env.wait_event(|e| {
            e["type"] == "request"
                && e["action"] == action
                && e["request"]["method"] == method
                && e["request"]["path"] == path
        })
        .unwrap_or_else(|| {
            panic!(
                "no {action} request event for {method} {path}; events: {:#?}",
                env.events.lock().unwrap()
            )
        })
    };
    let put = find("allow", "PUT", TOKEN_PATH);
    assert_eq!(put["rule"], "client-imdsv2");
    assert_eq!(put["exe"]["name"], exe_name, "{put}");
    let get = find("allow", "GET", ID_PATH);
    assert_eq!(get["rule"], "client-imdsv2");
    let deny = find("deny", "GET", CREDS_PATH);
    assert_eq!(deny["reason"], "no-http-rule", "{deny}");
    assert_eq!(deny["exe"]["name"], exe_name, "{deny}");
    assert_eq!(deny["destination"]["address"], IMDS);
    assert_eq!(deny["destination"]["port"], 80);
    // Header values (the token) never appear in events.
    assert!(!env
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.to_string().contains(AWS_TOKEN)));
}

// ---------------------------------------------------------------- curl

const CURL: &str = "/usr/bin/curl";

fn curl_or_skip(test: &str) -> Option<PathBuf> {
    if !root_or_skip(test) {
        return None;
    }
    let p = PathBuf::from(CURL);
    if !p.exists() {
        eprintln!("SKIPPED {test}: {CURL} is not installed");
        return None;
    }
    Some(std::fs::canonicalize(p).unwrap())
}

fn curl(env: &Env, curl: &Path, args: &[&str]) -> (Output, Duration) {
    let mut all = vec!["--silent", "--show-error", "--max-time", "5"];
    all.extend_from_slice(args);
    run_client(env, curl, &all)
}

#[test]
fn curl_imdsv2_flow_and_refused_request() {
    let Some(bin) = curl_or_skip("curl_imdsv2_flow_and_refused_request") else {
        return;
    };
    let env = Env::start("cl-curl", &client_policy(&bin));
    let token_url = format!("{BASE}{TOKEN_PATH}");
    let (out, _) = curl(
        &env,
        &bin,
        &[
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
            &token_url,
        ],
    );
    assert!(out.status.success(), "PUT token: {out:?}");
    let token = text(&out.stdout);
    assert_eq!(token, AWS_TOKEN);

    let header = format!("X-aws-ec2-metadata-token: {token}");
    let (out, _) = curl(&env, &bin, &["-H", &header, &format!("{BASE}{ID_PATH}")]);
    assert!(out.status.success(), "GET instance-id: {out:?}");
    assert_eq!(text(&out.stdout), AWS_INSTANCE_ID);

    let (out, took) = curl(&env, &bin, &["-H", &header, &format!("{BASE}{CREDS_PATH}")]);
    let stderr = text(&out.stderr);
    eprintln!(
        "curl, refused request: exit {:?} after {took:?}: {}",
        out.status.code(),
        stderr.trim()
    );
    // CURLE_SEND_ERROR: "Failed sending data to the peer".
    assert_eq!(out.status.code(), Some(55), "{out:?}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(took < PROMPT, "the refusal took {took:?}");
    assert_eq!(settled_requests_for(&env, CREDS_PATH, 1), 0);
    assert_eq!(env.requests_for(TOKEN_PATH), 1);
    assert_eq!(env.requests_for(ID_PATH), 1);
    assert_request_events(&env, "curl");
}

/// One curl run, two URLs: the second request goes on the connection the
/// first one used (keep-alive) and is refused there. curl takes a failed
/// send on a reused connection for a connection the server closed, and
/// retries once on a fresh one, where the request is refused again.
#[test]
fn curl_refused_request_on_a_reused_connection() {
    let Some(bin) = curl_or_skip("curl_refused_request_on_a_reused_connection") else {
        return;
    };
    let env = Env::start("cl-curl-ka", &client_policy(&bin));
    let header = format!("X-aws-ec2-metadata-token: {AWS_TOKEN}");
    let (out, took) = curl(
        &env,
        &bin,
        &[
            "--verbose",
            "-H",
            &header,
            &format!("{BASE}{ID_PATH}"),
            &format!("{BASE}{CREDS_PATH}"),
        ],
    );
    let stderr = text(&out.stderr);
    eprintln!(
        "curl, refused second request on a kept-alive connection: exit {:?} after {took:?}",
        out.status.code(),
    );
    assert_eq!(text(&out.stdout), AWS_INSTANCE_ID, "{out:?}");
    assert_eq!(out.status.code(), Some(55), "{stderr}");
    assert!(
        stderr.contains("Re-using existing connection"),
        "the second request went on the first connection: {stderr}"
    );
    assert!(
        stderr.contains("Connection died, retrying a fresh connect"),
        "{stderr}"
    );
    assert!(
        stderr.matches("Send failure: Permission denied").count() >= 2,
        "refused on the reused connection and on the fresh one: {stderr}"
    );
    assert!(took < PROMPT, "the refusal took {took:?}");
    assert_eq!(settled_requests_for(&env, CREDS_PATH, 1), 0);
    assert_eq!(env.requests_for(ID_PATH), 1);
    assert_eq!(env.sb.connections(), 2, "the first and curl's retry");
    assert!(env
        .wait_event(|e| e["type"] == "request"
            && e["action"] == "deny"
            && e["request"]["path"] == CREDS_PATH)
        .is_some());
}

// ---------------------------------------------------------------- Python

/// Runs a Python script that prints one JSON object as its last line.
fn python(env: &Env, py: &Path, script: &str) -> (Value, Duration, Output) {
    let (out, took) = run_client(env, py, &["-c", script]);
    let stdout = text(&out.stdout);
    let v = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("python printed no JSON: {out:?}"));
    (v, took, out)
}

/// Shared by both Python scripts: a description of an exception and the
/// first errno found on it or on what caused it.
const PY_HELPERS: &str = r#"
import json, sys, time

def errno_of(e, seen=None):
    seen = seen if seen is not None else set()
    if e is None or id(e) in seen:
        return None
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno:
        return e.errno
    for a in getattr(e, "args", ()):
        if isinstance(a, BaseException):
            n = errno_of(a, seen)
            if n:
                return n
    return errno_of(e.__cause__, seen) or errno_of(e.__context__, seen)

def describe(e):
    return {"type": type(e).__module__ + "." + type(e).__qualname__,
            "errno": errno_of(e), "str": str(e)}
"#;

const HTTP_CLIENT_SCRIPT: &str = r#"
import http.client
out = {}
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
c.request("PUT", "/latest/api/token", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
r = c.getresponse()
tok = r.read().decode()
out["token_status"], out["token"] = r.status, tok
hdr = {"X-aws-ec2-metadata-token": tok}
c.request("GET", "/latest/meta-data/instance-id", headers=hdr)
r = c.getresponse()
out["id_status"], out["id"] = r.status, r.read().decode()
# The refused request, on the same kept-alive connection.
t = time.monotonic()
try:
    c.request("GET", "/latest/meta-data/iam/security-credentials/", headers=hdr)
    r = c.getresponse()
    out["creds"] = [r.status, r.read().decode()]
except Exception as e:
    out["error"] = describe(e)
out["elapsed"] = time.monotonic() - t
# And on a fresh connection.
c2 = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
t = time.monotonic()
try:
    c2.request("GET", "/latest/meta-data/iam/security-credentials/", headers=hdr)
    r = c2.getresponse()
    out["creds_fresh"] = [r.status, r.read().decode()]
except Exception as e:
    out["error_fresh"] = describe(e)
out["elapsed_fresh"] = time.monotonic() - t
print(json.dumps(out))
"#;

const REQUESTS_SCRIPT: &str = r#"
import requests
out = {}
base = "http://169.254.169.254"
s = requests.Session()
r = s.put(base + "/latest/api/token",
          headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}, timeout=5)
tok = r.text
out["token_status"], out["token"] = r.status_code, tok
hdr = {"X-aws-ec2-metadata-token": tok}
r = s.get(base + "/latest/meta-data/instance-id", headers=hdr, timeout=5)
out["id_status"], out["id"] = r.status_code, r.text
# The refused request, on the session's kept-alive connection.
t = time.monotonic()
try:
    r = s.get(base + "/latest/meta-data/iam/security-credentials/", headers=hdr, timeout=5)
    out["creds"] = [r.status_code, r.text]
except Exception as e:
    out["error"] = describe(e)
out["elapsed"] = time.monotonic() - t
# And on a fresh connection.
t = time.monotonic()
try:
    r = requests.get(base + "/latest/meta-data/iam/security-credentials/", headers=hdr, timeout=5)
    out["creds_fresh"] = [r.status_code, r.text]
except Exception as e:
    out["error_fresh"] = describe(e)
out["elapsed_fresh"] = time.monotonic() - t
print(json.dumps(out))
"#;

/// (a) and (b) for a Python script's report; `error_type` is the
/// exception the refused request raises.
fn assert_python_report(env: &Env, v: &Value, took: Duration, error_type: &str) {
    assert_eq!(v["token_status"], 200, "{v}");
    assert_eq!(v["token"], AWS_TOKEN, "{v}");
    assert_eq!(v["id_status"], 200, "{v}");
    assert_eq!(v["id"], AWS_INSTANCE_ID, "{v}");
    for (err, elapsed) in [("error", "elapsed"), ("error_fresh", "elapsed_fresh")] {
        let e = &v[err];
        assert_eq!(e["errno"], libc::EACCES, "{err}: {v}");
        assert_eq!(e["type"], error_type, "{err}: {v}");
        let secs = v[elapsed].as_f64().unwrap();
        assert!(secs < PROMPT.as_secs_f64(), "{err} took {secs} s: {v}");
    }
    assert!(took < Duration::from_secs(10), "the script took {took:?}");
    assert_eq!(settled_requests_for(env, CREDS_PATH, 1), 0, "{v}");
    assert_eq!(env.requests_for(TOKEN_PATH), 1);
    assert_eq!(env.requests_for(ID_PATH), 1);
}

#[test]
fn python_http_client_imdsv2_flow_and_refused_request() {
    let test = "python_http_client_imdsv2_flow_and_refused_request";
    let Some(py) = python_or_skip(test, "http.client") else {
        return;
    };
    let env = Env::start("cl-pyhttp", &client_policy(&py));
    let (v, took, _) = python(&env, &py, &format!("{PY_HELPERS}{HTTP_CLIENT_SCRIPT}"));
    eprintln!("python http.client ({}): {v}", py.display());
    assert_python_report(&env, &v, took, "builtins.PermissionError");
    assert_eq!(v["error"]["str"], "[Errno 13] Permission denied", "{v}");
    assert_request_events(&env, py.file_name().unwrap().to_str().unwrap());
}

#[test]
fn python_requests_imdsv2_flow_and_refused_request() {
    let test = "python_requests_imdsv2_flow_and_refused_request";
    let Some(py) = python_or_skip(test, "requests") else {
        return;
    };
    let env = Env::start("cl-pyreq", &client_policy(&py));
    let (v, took, _) = python(&env, &py, &format!("{PY_HELPERS}{REQUESTS_SCRIPT}"));
    eprintln!("python requests ({}): {v}", py.display());
    assert_python_report(&env, &v, took, "requests.exceptions.ConnectionError");
    let msg = v["error"]["str"].as_str().unwrap();
    assert!(msg.contains("Permission denied"), "{v}");
    assert_request_events(&env, py.file_name().unwrap().to_str().unwrap());
}

// ---------------------------------------------------------------- SCM_RIGHTS

/// The allowed probe connects, then hands the socket with SCM_RIGHTS to
/// `receiver` (which inherits only the Unix socket), and `receiver` sends
/// the GET for `path` on it.
fn pass_scm(env: &Env, receiver: &Path, path: &str) -> Outcome {
    env.run(
        &env.probe,
        &[
            "pass-scm",
            IMDS,
            "80",
            "--exec",
            receiver.to_str().unwrap(),
            "send-fd",
            IMDS,
            "80",
            "--path",
            path,
        ],
    )
}

fn assert_received_and_refused(env: &Env, d: &Outcome, path: &str) {
    assert_eq!(d.code, 1, "the receiver's send must be refused: {d:?}");
    assert_eq!(d.json["mode"], "send-fd", "{d:?}");
    assert_eq!(d.json["error"], "EACCES", "{d:?}");
    assert!(
        d.json["detail"].as_str().unwrap().contains("SCM_RIGHTS"),
        "{d:?}"
    );
    assert_eq!(
        settled_requests_for(env, path, 1),
        0,
        "the refused request must never arrive"
    );
}

#[test]
fn socket_passed_with_scm_rights_is_unusable_by_a_denied_receiver() {
    if !root_or_skip("scm-deny") {
        return;
    }
    let env = Env::start("cl-scm", PROBE_ONLY);
    let d = pass_scm(&env, &env.copy, ID_PATH);
    assert_received_and_refused(&env, &d, ID_PATH);
    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["hook"] == "sendmsg-tcp")
        .expect("a deny event for the send");
    assert_eq!(ev["exe"]["name"], "probe-copy");
    assert_eq!(ev["pid"].as_u64(), d.json["pid"].as_u64());
    assert_eq!(ev["destination"]["address"], IMDS);
    assert_eq!(ev["reason"], "no-matching-rule");
    assert!(env
        .wait_event(|e| e["action"] == "allow" && e["hook"] == "connect4")
        .is_some());

    // The allowed image on the receiving end: the same hand-over works.
    let ok = pass_scm(&env, &env.probe, ID_PATH);
    assert!(ok.ok(), "allowed receiver: {ok:?}");
    assert_eq!(ok.json["mode"], "send-fd");
    assert_eq!(ok.json["body"], AWS_INSTANCE_ID);
    assert_eq!(settled_requests_for(&env, ID_PATH, 1), 1);
}

/// The probe may reach the endpoint only for instance-id.
const PROBE_HTTP: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32"]
ports     = [80]

[[allow]]
name      = "probe-http"
endpoints = ["aws-imds"]
exe       = "{probe}"
http = [ { method = "GET", path = "/latest/meta-data/instance-id" } ]
"#;

#[test]
fn socket_passed_with_scm_rights_under_http_rules() {
    if !root_or_skip("scm-http") {
        return;
    }
    let env = Env::start("cl-scm-http", PROBE_HTTP);
    // A denied receiver: refused, whatever it asks.
    let d = pass_scm(&env, &env.copy, ID_PATH);
    assert_received_and_refused(&env, &d, ID_PATH);
    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["exe"]["name"] == "probe-copy")
        .expect("a deny event for the copy's send");
    assert_eq!(ev["pid"].as_u64(), d.json["pid"].as_u64(), "{ev}");

    // The allowed receiver: its listed request passes ...
    let ok = pass_scm(&env, &env.probe, ID_PATH);
    assert!(ok.ok(), "allowed receiver, listed request: {ok:?}");
    assert_eq!(ok.json["body"], AWS_INSTANCE_ID);
    assert_eq!(settled_requests_for(&env, ID_PATH, 1), 1);
    // ... and an unlisted one is refused by the HTTP rules.
    let d = pass_scm(&env, &env.probe, CREDS_PATH);
    assert_received_and_refused(&env, &d, CREDS_PATH);
    let ev = env
        .wait_event(|e| {
            e["type"] == "request" && e["action"] == "deny" && e["request"]["path"] == CREDS_PATH
        })
        .expect("a request event for the refused request");
    assert_eq!(ev["reason"], "no-http-rule", "{ev}");
    assert_eq!(ev["request"]["method"], "GET");
}
