//! Kernel tests of the per-send check (sock_ops + sk_msg): a TCP socket to a
//! protected destination is usable only by a sender the policy allows, not
//! merely by whoever holds it.
mod common;

use common::*;

const ID_PATH: &str = "/latest/meta-data/instance-id";

macro_rules! env_or_skip {
    ($tag:expr, $policy:expr) => {{
        if !root_or_skip($tag) {
            return;
        }
        Env::start($tag, $policy)
    }};
}

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

/// The HTTP checker in sk_msg: an encoded slash in the target is refused at
/// send (the request never arrives); a plain request still goes through.
#[test]
fn encoded_slash_is_dropped_at_send() {
    let env = env_or_skip!("sk-http", PROBE_ONLY);
    let d = env.run(
        &env.probe,
        &[
            "tcp",
            IMDS,
            "80",
            "--path",
            "/latest/meta-data%2Finstance-id",
        ],
    );
    assert_eq!(d.code, 1, "an encoded slash must be refused: {d:?}");
    assert_eq!(d.json["error"], "EACCES", "{d:?}");
    assert!(
        env.sb.requests().is_empty(),
        "nothing may arrive: {:?}",
        env.sb.requests()
    );
    let ok = env.run(&env.probe, &["tcp", IMDS, "80"]);
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(env.requests_for(ID_PATH), 1);
}
