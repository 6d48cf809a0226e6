//! Kernel tests of `redact`: real clients (Python `requests`, botocore's
//! instance-metadata credential fetcher, curl) against the fake metadata
//! service, whose answers arrive whole, in many small segments (secrets
//! straddling their boundaries), chunked, and oversized. Processes under a
//! `redact` rule read the secrets masked and everything else intact; a
//! process whose rule has no `redact` reads them as sent.
#[macro_use]
mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use common::*;
use metaguard_sandbox::fake_imds::responses::{
    AWS_ACCESS_KEY_ID, AWS_ROLE, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_TOKEN,
    AZURE_ACCESS_TOKEN, AZURE_CERTIFICATE_DATA, GCE_ACCESS_TOKEN,
};
use serde_json::Value;

const CURL: &str = "/usr/bin/curl";
const SECRETS: [&str; 6] = [
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    GCE_ACCESS_TOKEN,
    AZURE_ACCESS_TOKEN,
    AZURE_CERTIFICATE_DATA,
];

/// The policies' start: enforcing, with the fake metadata service's address
/// as the endpoint the rules name.
const ENFORCE_IMDS: &str = r#"
mode = "enforce"

[[endpoint]]
name      = "aws-imds"
addresses = ["169.254.169.254/32"]
ports     = [80]
"#;

/// Python (requests, botocore) and curl get answers masked; a copy of curl
/// placed in the test's temp dir (`{tmp}/curl-entitled`) is entitled.
fn policy(python: &Path, curl: &Path) -> String {
    format!(
        r#"{ENFORCE_IMDS}
[[allow]]
name      = "python-monitoring"
endpoints = ["aws-imds"]
exe       = "{}"
redact    = ["aws-credentials", "gcp-access-token", "azure-access-token", "azure-wireserver-certificates"]

[[allow]]
name      = "curl-no-tokens"
endpoints = ["aws-imds"]
exe       = "{}"
http = [
  {{ method = "PUT", path = "/latest/api/token" }},
  {{ method = "GET", path = "/latest/meta-data/iam/security-credentials/*" }},
]
redact    = ["aws-imds-token", "aws-credentials"]

[[allow]]
name      = "entitled"
endpoints = ["aws-imds"]
exe       = "{{tmp}}/curl-entitled"
"#,
        python.display(),
        curl.display()
    )
}

fn setup(test: &str, tag: &str, module: &str) -> Option<(Env, PathBuf, PathBuf)> {
    let py = python_or_skip(test, module)?;
    let curl = PathBuf::from(CURL);
    if !curl.exists() {
        eprintln!("SKIPPED {test}: {CURL} is not installed");
        return None;
    }
    let curl = std::fs::canonicalize(curl).unwrap();
    let entitled = |tmp: &Path| {
        std::fs::copy(&curl, tmp.join("curl-entitled")).unwrap();
    };
    let env = Env::start_with(tag, &policy(&py, &curl), entitled);
    let copy = env.tmp.0.join("curl-entitled");
    Some((env, py, copy))
}

fn python(env: &Env, py: &Path, script: &str) -> Value {
    let out = env.sb.client(py).args(["-c", script]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        SECRETS.iter().all(|s| !stdout.contains(s)),
        "a secret reached the process: {stdout}"
    );
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("python printed no JSON: {out:?}"))
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

/// The credentials JSON as a client parsed it: the three secrets masked to
/// their length, the rest as the service sent it.
fn assert_masked_credentials(what: &str, j: &Value) {
    assert_eq!(
        j["AccessKeyId"],
        stars(AWS_ACCESS_KEY_ID.len()),
        "{what}: {j}"
    );
    assert_eq!(
        j["SecretAccessKey"],
        stars(AWS_SECRET_ACCESS_KEY.len()),
        "{what}: {j}"
    );
    assert_eq!(j["Token"], stars(AWS_SESSION_TOKEN.len()), "{what}: {j}");
    assert_eq!(j["Code"], "Success", "{what}: {j}");
    assert_eq!(j["Type"], "AWS-HMAC", "{what}: {j}");
    assert_eq!(j["Expiration"], "2099-01-01T00:00:00Z", "{what}: {j}");
    assert_eq!(j["LastUpdated"], "2024-01-01T00:00:00Z", "{what}: {j}");
}

const REQUESTS_SCRIPT: &str = r#"
import json, socket, time
import requests
base = "http://169.254.169.254"
creds = base + "/latest/meta-data/iam/security-credentials/ROLE"
out = {}
deliveries = {
    "whole": {},
    "split7": {"X-Fake-Split": "7"},
    "split1": {"X-Fake-Split": "1"},
    "chunked5": {"X-Fake-Chunked": "5"},
    "chunked3_split4": {"X-Fake-Chunked": "3", "X-Fake-Split": "4"},
}
for name, h in deliveries.items():
    r = requests.get(creds, headers=h, timeout=5)
    out[name] = {"status": r.status_code, "json": r.json(),
                 "chunked": r.headers.get("Transfer-Encoding")}
# Several answers on one kept-alive connection, whole and split.
s = requests.Session()
out["keepalive"] = [s.get(creds, headers=h, timeout=5).json()
                    for h in ({}, {"X-Fake-Split": "13"}, {"X-Fake-Chunked": "11"}, {})]
out["instance_id"] = s.get(base + "/latest/meta-data/instance-id", timeout=5).text
out["gce"] = requests.get(base + "/computeMetadata/v1/instance/service-accounts/default/token",
                          headers={"Metadata-Flavor": "Google", "X-Fake-Split": "9"}, timeout=5).json()
out["azure"] = requests.get(base + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
                            headers={"Metadata": "true", "X-Fake-Chunked": "8"}, timeout=5).json()
out["wireserver"] = requests.get(base + "/machine/?comp=certificates", timeout=5).text
# A HEAD answer (no body) then the credentials, on one connection.
import http.client
c = http.client.HTTPConnection("169.254.169.254", 80, timeout=5)
c.request("HEAD", "/latest/meta-data/instance-id")
r = c.getresponse()
r.read()
c.request("GET", "/latest/meta-data/iam/security-credentials/ROLE", headers={"X-Fake-Split": "6"})
out["after_head"] = json.loads(c.getresponse().read())
# An oversized header block: whatever arrives, no secret; the connection
# does not deliver a well-formed answer and is reset.
c = socket.create_connection(("169.254.169.254", 80), timeout=3)
c.sendall(("GET /latest/meta-data/iam/security-credentials/ROLE HTTP/1.1\r\n"
           "Host: x\r\nX-Fake-Pad: 9000\r\n\r\n").encode())
got = b""
t = time.monotonic()
end = "timeout"
while time.monotonic() - t < 3:
    try:
        b = c.recv(65536)
    except socket.timeout:
        break
    except OSError as e:
        end = "error:" + str(e.errno)
        break
    if not b:
        end = "eof"
        break
    got += b
out["oversize"] = {"bytes": len(got), "end": end, "stars": got.count(b"*"),
                   "elapsed": time.monotonic() - t,
                   "head_complete": b"\r\n\r\n" in got,
                   "secret": any(x in got for x in SECRETS)}
print(json.dumps(out))
"#;

#[test]
fn requests_reads_secrets_masked_in_every_delivery() {
    let test = "requests_reads_secrets_masked_in_every_delivery";
    let Some((env, py, entitled)) = setup(test, "rd-req", "requests") else {
        return;
    };
    let secrets: Vec<String> = SECRETS.iter().map(|s| format!("{s:?}.encode()")).collect();
    let script = REQUESTS_SCRIPT.replace("ROLE", AWS_ROLE).replace(
        "import requests",
        &format!("import requests\nSECRETS = [{}]", secrets.join(", ")),
    );
    let v = python(&env, &py, &script);
    eprintln!("requests under redact: {v}");
    for name in ["whole", "split7", "split1", "chunked5", "chunked3_split4"] {
        assert_eq!(v[name]["status"], 200, "{name}: {v}");
        assert_masked_credentials(name, &v[name]["json"]);
    }
    assert_eq!(v["chunked5"]["chunked"], "chunked", "{v}");
    for (i, j) in v["keepalive"].as_array().unwrap().iter().enumerate() {
        assert_masked_credentials(&format!("keep-alive answer {i}"), j);
    }
    assert_eq!(v["instance_id"], "i-0123456789abcdef0");
    assert_masked_credentials("after a HEAD answer", &v["after_head"]);
    assert_eq!(
        v["gce"]["access_token"],
        stars(GCE_ACCESS_TOKEN.len()),
        "{v}"
    );
    assert_eq!(v["gce"]["token_type"], "Bearer");
    assert_eq!(
        v["azure"]["access_token"],
        stars(AZURE_ACCESS_TOKEN.len()),
        "{v}"
    );
    assert_eq!(v["azure"]["resource"], "https://management.azure.com/");
    let ws = v["wireserver"].as_str().unwrap();
    assert!(
        ws.contains(&format!(
            "<Data>{}</Data>",
            stars(AZURE_CERTIFICATE_DATA.len())
        )) && ws.contains("<Format>Pkcs7BlobWithPfxContents</Format>"),
        "{ws}"
    );
    let o = &v["oversize"];
    assert_eq!(o["secret"], false, "{v}");
    assert_eq!(
        o["head_complete"], false,
        "an oversized head must not complete: {v}"
    );
    assert!(o["stars"].as_u64().unwrap() > 0, "{v}");
    // The daemon reset the connection (ECONNRESET on the next read)
    // without waiting for the client's timeout.
    assert_eq!(o["end"], "error:104", "{v}");
    assert!(o["elapsed"].as_f64().unwrap() < 2.0, "{v}");

    // Events name the shapes, never the values.
    let ev = env
        .wait_event(|e| {
            e["type"] == "redact"
                && e["rule"] == "python-monitoring"
                && e["redacted"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s == "aws-credentials"))
        })
        .unwrap_or_else(|| panic!("no redact event: {:#?}", env.events.lock().unwrap()));
    assert_eq!(ev["action"], "allow", "{ev}");
    assert_eq!(ev["reason"], "redacted", "{ev}");
    assert_eq!(ev["hook"], "response", "{ev}");
    assert!(ev["connection"].as_u64().is_some(), "{ev}");
    assert_eq!(ev["destination"]["address"], IMDS);
    for shape in ["gcp-access-token", "azure-wireserver-certificates", "cut"] {
        assert!(
            env.wait_event(|e| e["type"] == "redact"
                && e["redacted"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|s| s == shape)))
                .is_some(),
            "no redact event naming {shape}"
        );
    }
    // Reports are aggregated like decisions, and every answer counts once:
    // the script read 10 credentials answers (5 deliveries, 4 kept alive,
    // 1 after the HEAD), all masking exactly the AWS shape.
    let creds_answers = || -> (u64, usize) {
        let all = env.events.lock().unwrap();
        let evs: Vec<&Value> = all
            .iter()
            .filter(|e| {
                e["type"] == "redact"
                    && e["rule"] == "python-monitoring"
                    && e["redacted"] == serde_json::json!(["aws-credentials"])
            })
            .collect();
        (
            evs.iter().filter_map(|e| e["count"].as_u64()).sum(),
            evs.len(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while creds_answers().0 < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A late repeat report would show here as a count past 10.
    std::thread::sleep(Duration::from_millis(1200));
    let (answers, events) = creds_answers();
    assert_eq!(answers, 10, "{:#?}", env.events.lock().unwrap());
    eprintln!("10 credentials answers reported in {events} events");
    let all = env.events.lock().unwrap();
    for e in all.iter() {
        let t = e.to_string();
        assert!(
            SECRETS.iter().all(|s| !t.contains(s)),
            "secret in event {t}"
        );
    }
    drop(all);

    // The entitled copy reads the same answers unmasked, split and chunked.
    for h in ["X-Fake-Split: 5", "X-Fake-Chunked: 4"] {
        let out = env
            .sb
            .client(&entitled)
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "5",
                "-H",
                h,
                &format!("http://{IMDS}/latest/meta-data/iam/security-credentials/{AWS_ROLE}"),
            ])
            .output()
            .unwrap();
        let j: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("entitled curl ({h}): {e}: {out:?}"));
        assert_eq!(j["AccessKeyId"], AWS_ACCESS_KEY_ID, "{j}");
        assert_eq!(j["SecretAccessKey"], AWS_SECRET_ACCESS_KEY, "{j}");
        assert_eq!(j["Token"], AWS_SESSION_TOKEN, "{j}");
    }
}

const BOTOCORE_SCRIPT: &str = r#"
import json
from botocore.utils import InstanceMetadataFetcher
f = InstanceMetadataFetcher(timeout=5, num_attempts=1)
c = f.retrieve_iam_role_credentials()
print(json.dumps(c))
"#;

#[test]
fn botocore_fetcher_and_curl_get_masked_credentials() {
    let test = "botocore_fetcher_and_curl_get_masked_credentials";
    let Some((env, py, _)) = setup(test, "rd-boto", "botocore") else {
        return;
    };
    let t = Instant::now();
    let v = python(&env, &py, BOTOCORE_SCRIPT);
    eprintln!("botocore under redact ({:?}): {v}", t.elapsed());
    assert_eq!(v["role_name"], AWS_ROLE, "{v}");
    assert_eq!(v["access_key"], stars(AWS_ACCESS_KEY_ID.len()), "{v}");
    assert_eq!(v["secret_key"], stars(AWS_SECRET_ACCESS_KEY.len()), "{v}");
    assert_eq!(v["token"], stars(AWS_SESSION_TOKEN.len()), "{v}");
    assert_eq!(v["expiry_time"], "2099-01-01T00:00:00Z", "{v}");
    // botocore used IMDSv2: the token it got was not masked for python.
    assert!(env
        .sb
        .requests()
        .iter()
        .any(|r| r.header("x-aws-ec2-metadata-token") == Some(AWS_TOKEN)));

    // curl's rule masks IMDSv2 tokens too, and keeps HTTP rules first.
    let curl = std::fs::canonicalize(CURL).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--silent", "--show-error", "--max-time", "5"];
        all.extend_from_slice(args);
        env.sb.client(&curl).args(&all).output().unwrap()
    };
    let out = run(&[
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "-H",
        "X-Fake-Split: 3",
        &format!("http://{IMDS}/latest/api/token"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        stars(AWS_TOKEN.len()),
        "{out:?}"
    );
    let out = run(&[&format!(
        "http://{IMDS}/latest/meta-data/iam/security-credentials/{AWS_ROLE}"
    )]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_masked_credentials("curl", &j);
    // Not in its http list: refused before reaching the service.
    let before = env.requests_for("/latest/meta-data/instance-id");
    let out = run(&[&format!("http://{IMDS}/latest/meta-data/instance-id")]);
    assert!(!out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(env.requests_for("/latest/meta-data/instance-id"), before);
    assert!(env
        .wait_event(|e| e["type"] == "redact"
            && e["rule"] == "curl-no-tokens"
            && e["redacted"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s == "aws-imds-token")))
        .is_some());
}

const GROWING_SCRIPT: &str = r#"
import json, os, socket
SECRET = SECRET_BYTES
REQ = b"GET /latest/meta-data/iam/security-credentials/ROLE HTTP/1.1\r\nHost: x\r\n\r\n"
def fetch(s):
    s.sendall(REQ)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, body = got.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
    while len(body) < n:
        body += s.recv(4096)
    return {"secret_seen": SECRET in body, "stars": body.count(b"*")}
s = socket.create_connection(("169.254.169.254", 80), timeout=5)
out = {"root_first": fetch(s)}
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setuid(65534)
    os.write(w, json.dumps(fetch(s)).encode())
    os._exit(0)
os.waitpid(pid, 0)
out["nobody"] = json.loads(os.read(r, 4096))
out["root_after"] = fetch(s)
print(json.dumps(out))
"#;

/// What a connection masks only grows with its senders: a process whose
/// rules redact more than the previous sender's gets its shapes masked on
/// the same connection, and they stay masked when the first sends again
/// (the per-send program's shortcut for a repeat sender must not skip a
/// new one).
#[test]
fn a_stricter_sender_on_a_shared_connection_gets_its_shapes_masked() {
    let test = "a_stricter_sender_on_a_shared_connection_gets_its_shapes_masked";
    let Some(py) = python_or_skip(test, "json") else {
        return;
    };
    let policy = format!(
        r#"{ENFORCE_IMDS}
[[allow]]
name      = "python-root"
endpoints = ["aws-imds"]
exe       = "{py}"
users     = [0]
redact    = ["gcp-access-token"]

[[allow]]
name      = "python-nobody"
endpoints = ["aws-imds"]
exe       = "{py}"
users     = [65534]
redact    = ["aws-credentials"]
"#,
        py = py.display()
    );
    let env = Env::start_with("rd-grow", &policy, |_| {});
    let script = GROWING_SCRIPT.replace("ROLE", AWS_ROLE).replace(
        "SECRET_BYTES",
        &format!("{:?}.encode()", AWS_SECRET_ACCESS_KEY),
    );
    let v = python(&env, &py, &script);
    eprintln!("senders sharing a connection: {v}");
    // Root's rule does not redact AWS credentials: its first answer is as
    // sent (the check that the script can see a secret at all).
    assert_eq!(v["root_first"]["secret_seen"], true, "{v}");
    assert_eq!(v["nobody"]["secret_seen"], false, "{v}");
    assert!(v["nobody"]["stars"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["root_after"]["secret_seen"], false, "{v}");
    assert!(env
        .wait_event(|e| e["type"] == "redact"
            && e["rule"] == "python-nobody"
            && e["redacted"] == serde_json::json!(["aws-credentials"]))
        .is_some());
}
