//! Kernel tests of the connect guard: real programs attached to a sandbox
//! cgroup, real sockets, a fake metadata service that records what arrives.
//! Each test asserts both what the client saw and what the service received.
#[macro_use]
mod common;

use common::*;

const ID_PATH: &str = "/latest/meta-data/instance-id";

#[test]
fn tcp_ipv4_allowed_program_and_denied_copy() {
    let env = env_or_skip!("tcp4", PROBE_ONLY);
    let ok = env.run(&env.probe, &["tcp", IMDS, "80"]);
    assert!(ok.ok(), "allowed probe: {ok:?}");
    assert_eq!(ok.json["body"], "i-0123456789abcdef0");
    assert_eq!(env.requests_for(ID_PATH), 1);

    let denied = env.run(&env.copy, &["tcp", IMDS, "80"]);
    assert!(
        denied.denied(),
        "copy of the probe must get EPERM: {denied:?}"
    );
    assert_eq!(
        env.requests_for(ID_PATH),
        1,
        "the denied request must never arrive"
    );

    let ev = env
        .wait_event(|e| e["action"] == "deny" && e["hook"] == "connect4")
        .expect("a deny event for the copy");
    let pid = denied.json["pid"].as_u64().unwrap();
    assert_eq!(ev["pid"].as_u64(), Some(pid));
    assert_eq!(ev["tid"].as_u64(), Some(pid));
    assert_eq!(ev["endpoint"], "aws-imds");
    assert_eq!(ev["rule"], serde_json::Value::Null);
    assert_eq!(ev["reason"], "no-matching-rule");
    assert_eq!(ev["uid"], 0);
    assert_eq!(ev["gid"], 0);
    assert_eq!(ev["protocol"], "tcp");
    assert_eq!(ev["destination"]["address"], IMDS);
    assert_eq!(ev["destination"]["port"], 80);
    assert_eq!(ev["comm"], "probe-copy");
    assert_eq!(ev["exe"]["name"], "probe-copy");
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&env.copy).unwrap());
    assert_eq!(ev["exe"]["ino"].as_u64(), Some(ino));
    // The path is a label read from /proc while the process lives; the
    // identity (dev, ino) is the kernel's and is always there.
    assert!(
        ev["exe"]["path"] == env.copy.to_str().unwrap() || ev["exe"]["path"].is_null(),
        "{ev}"
    );
    assert!(ev["exe"]["dev"].as_str().unwrap().contains(':'));
    assert_eq!(ev["cgroup"]["path"], env.sb.cgroup_rel());
    assert!(
        ev["time"].as_str().unwrap().contains('T'),
        "RFC 3339 time: {ev}"
    );

    let allow = env
        .wait_event(|e| e["action"] == "allow")
        .expect("an allow event");
    assert_eq!(allow["rule"], "probe");
    assert_eq!(allow["exe"]["path"], env.probe.to_str().unwrap());
}

#[test]
fn tcp_ipv6_and_ipv4_mapped() {
    let env = env_or_skip!("tcp6", PROBE_ONLY);
    assert!(env.run(&env.probe, &["tcp", IMDS6, "80"]).ok());
    let d = env.run(&env.copy, &["tcp", IMDS6, "80"]);
    assert!(d.denied(), "{d:?}");
    assert!(env
        .wait_event(|e| e["action"] == "deny"
            && e["hook"] == "connect6"
            && e["destination"]["address"] == IMDS6)
        .is_some());

    // ::ffff:169.254.169.254 on a dual-stack socket reaches connect6, not connect4.
    assert!(env.run(&env.probe, &["tcp6-mapped", IMDS, "80"]).ok());
    let d = env.run(&env.copy, &["tcp6-mapped", IMDS, "80"]);
    assert!(d.denied(), "{d:?}");
    assert!(env
        .wait_event(|e| e["action"] == "deny"
            && e["hook"] == "connect6"
            && e["destination"]["address"] == IMDS)
        .is_some());
    assert_eq!(
        env.requests_for(ID_PATH),
        2,
        "only the allowed requests arrived"
    );
}

#[test]
fn other_spellings_of_the_address() {
    let env = env_or_skip!("spell", PROBE_ONLY);
    for spelling in [
        "2852039166",
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        "169.254.43518",
    ] {
        let d = env.run(&env.copy, &["tcp", spelling, "80"]);
        assert!(d.denied(), "{spelling}: {d:?}");
    }
    assert!(env.run(&env.probe, &["tcp", "2852039166", "80"]).ok());
    assert_eq!(env.requests_for(ID_PATH), 1);
}

#[test]
fn udp_unconnected_and_connected_both_families() {
    let env = env_or_skip!("udp", PROBE_ONLY);
    let cases: &[(&str, &str, &str)] = &[
        ("udp-sendto", IMDS, "sendmsg4"),
        ("udp-sendmsg", IMDS, "sendmsg4"),
        ("udp-connected", IMDS, "connect4"),
        ("udp-sendto", IMDS6, "sendmsg6"),
        ("udp-sendmsg", IMDS6, "sendmsg6"),
        ("udp-connected", IMDS6, "connect6"),
        ("udp6-mapped", IMDS, "sendmsg4"),
    ];
    for (mode, addr, hook) in cases {
        let d = env.run(&env.copy, &[mode, addr, "80", "--payload", "denied"]);
        assert!(d.denied(), "{mode} {addr}: {d:?}");
        assert!(
            env.wait_event(|e| e["action"] == "deny"
                && e["hook"] == *hook
                && e["protocol"] == "udp")
                .is_some(),
            "{mode} {addr}: deny event from {hook}"
        );
        let a = env.run(&env.probe, &[mode, addr, "80", "--payload", "allowed"]);
        assert!(a.ok(), "{mode} {addr}: {a:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let got = env.sb.datagrams();
    assert!(
        got.iter().all(|d| d.payload != b"denied"),
        "a denied datagram arrived"
    );
    assert_eq!(
        got.iter().filter(|d| d.payload == b"allowed").count(),
        cases.len()
    );
}

#[test]
fn tcp_fast_open_both_families() {
    let env = env_or_skip!("tfo", PROBE_ONLY);
    for addr in [IMDS, IMDS6] {
        let d = env.run(&env.copy, &["tfo", addr, "80"]);
        assert!(d.denied(), "{addr}: {d:?}");
        let a = env.run(&env.probe, &["tfo", addr, "80"]);
        assert!(a.ok(), "{addr}: {a:?}");
    }
    assert_eq!(env.requests_for(ID_PATH), 2);
}

#[test]
fn mptcp_both_families() {
    let env = env_or_skip!("mptcp", PROBE_ONLY);
    for addr in [IMDS, IMDS6] {
        let d = env.run(&env.copy, &["mptcp", addr, "80"]);
        if d.unsupported() {
            eprintln!(
                "SKIPPED mptcp: this kernel has no MPTCP ({})",
                d.stderr.trim()
            );
            return;
        }
        assert!(d.denied(), "{addr}: {d:?}");
        let a = env.run(&env.probe, &["mptcp", addr, "80"]);
        assert!(a.ok(), "{addr}: {a:?}");
    }
    assert_eq!(env.requests_for(ID_PATH), 2);
}

#[test]
fn io_uring_connects() {
    let env = env_or_skip!("uring", PROBE_ONLY);
    for mode in ["uring", "uring-sqpoll"] {
        let d = env.run(&env.copy, &[mode, IMDS, "80"]);
        if d.unsupported() {
            eprintln!(
                "SKIPPED {mode}: io_uring unavailable here ({})",
                d.stderr.trim()
            );
            continue;
        }
        assert!(d.denied(), "{mode}: {d:?}");
        let a = env.run(&env.probe, &[mode, IMDS, "80"]);
        assert!(a.ok(), "{mode}: {a:?}");
    }
}

#[test]
fn fork_keeps_identity_exec_changes_it() {
    let env = env_or_skip!("exec", PROBE_ONLY);
    let forked = env.run(&env.probe, &["fork", IMDS, "80", "--then", "tcp"]);
    assert!(
        forked.ok(),
        "forked child of the allowed program: {forked:?}"
    );
    let copy = env.copy.to_str().unwrap().to_string();
    let execd = env.run(
        &env.probe,
        &["exec", IMDS, "80", "--exec", &copy, "tcp", IMDS, "80"],
    );
    assert_eq!(
        execd.code, 1,
        "child exec'ing another binary must be denied: {execd:?}"
    );
    assert_eq!(env.requests_for(ID_PATH), 1);
}

#[test]
fn dynamic_loader_runs_as_the_loader() {
    let env = env_or_skip!("ldso", PROBE_ONLY);
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("a dynamic loader");
    let probe = env.probe.to_str().unwrap().to_string();
    let d = env.run(std::path::Path::new(loader), &[&probe, "tcp", IMDS, "80"]);
    assert!(d.denied(), "ld.so <allowed> runs the loader's image: {d:?}");
    assert!(env
        .wait_event(
            |e| e["action"] == "deny" && e["exe"]["name"].as_str().unwrap_or("").starts_with("ld-")
        )
        .is_some());
    assert_eq!(env.requests_for(ID_PATH), 0);
}

#[test]
fn bind_mount_over_the_allowed_path() {
    let env = env_or_skip!("bindmnt", PROBE_ONLY);
    let script = format!(
        "mount --bind {copy} {probe} && exec {probe} tcp {IMDS} 80",
        copy = env.copy.display(),
        probe = env.probe.display()
    );
    let d = env.run(
        std::path::Path::new("unshare"),
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    assert_eq!(
        d.code, 1,
        "another file mounted over the allowed path: {d:?}"
    );
    assert_eq!(d.json["error"], "EPERM");
    assert_eq!(env.requests_for(ID_PATH), 0);
    // The host's view is untouched: the real file is still allowed.
    assert!(env.run(&env.probe, &["tcp", IMDS, "80"]).ok());
}

#[test]
fn replaced_binary_is_denied_until_it_is_the_named_file_again() {
    if !root_or_skip("replace") {
        return;
    }
    let policy = PROBE_ONLY.replace("exe       = \"{probe}\"", "exe       = \"{tmp}/agent\"");
    // The agent file must exist before the policy is loaded.
    let env = Env::start_with("replace", &policy, |tmp| {
        std::fs::copy(probe_binary(), tmp.join("agent")).unwrap();
    });
    let agent = env.tmp.0.join("agent");
    let old = env.tmp.0.join("agent.old");
    assert!(env.run(&agent, &["tcp", IMDS, "80"]).ok());
    // Move the named file away and put a new one at its path (a new inode).
    std::fs::rename(&agent, &old).unwrap();
    std::fs::copy(&env.probe, &agent).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if env.run(&agent, &["connect-only", IMDS, "80"]).ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new file at the named path was not re-resolved within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let d = env.run(&old, &["tcp", IMDS, "80"]);
    assert!(
        d.denied(),
        "the old file is no longer the one the policy names: {d:?}"
    );
}

#[test]
fn raw_socket_is_stopped_by_the_egress_backstop() {
    let env = env_or_skip!("raw", PROBE_ONLY);
    for program in [&env.copy, &env.probe] {
        let r = env.run(program, &["raw-udp", IMDS, "80", "--payload", "raw"]);
        // The send may succeed locally (or fail with EPERM); the packet must not leave.
        assert!(r.code == 0 || r.code == 1, "{r:?}");
    }
    assert!(env
        .wait_event(|e| e["hook"] == "egress" && e["action"] == "deny" && e["protocol"] == "udp")
        .is_some());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        env.sb.datagrams().iter().all(|d| d.payload != b"raw"),
        "a raw packet reached the service"
    );
}

#[test]
fn nat_rewrite_to_a_protected_address_is_stopped() {
    let env = env_or_skip!("dnat", PROBE_ONLY);
    let un = addrs::UNPROTECTED_V4.to_string();
    // Sanity: the unprotected host is reachable before the rewrite.
    assert!(env
        .run(&env.copy, &["tcp", &un, "80", "--path", "/unprotected"])
        .ok());
    env.sb
        .in_client_ns(&["nft", "add table ip mgdnat"])
        .and_then(|_| {
            env.sb.in_client_ns(&[
                "nft",
                "add chain ip mgdnat out { type nat hook output priority -100 ; }",
            ])
        })
        .and_then(|_| {
            env.sb.in_client_ns(&[
                "nft",
                &format!("add rule ip mgdnat out ip daddr {un} dnat to {IMDS}"),
            ])
        })
        .expect("nft DNAT rule");
    let t = env.run(&env.copy, &["tcp", &un, "80", "--timeout-ms", "1500"]);
    assert!(!t.ok(), "TCP through DNAT must not connect: {t:?}");
    let u = env.run(
        &env.copy,
        &[
            "udp-sendto",
            &un,
            "80",
            "--payload",
            "natted",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(u.code <= 1, "{u:?}");
    assert!(env
        .wait_event(|e| e["hook"] == "egress" && e["action"] == "deny")
        .is_some());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        env.requests_for(ID_PATH),
        0,
        "a request rewritten to the IMDS arrived"
    );
    assert!(env.sb.datagrams().iter().all(|d| d.payload != b"natted"));
}

#[test]
fn packet_socket_is_a_documented_gap() {
    let env = env_or_skip!("packet", PROBE_ONLY);
    let iface = env.sb.veth_names().0.to_string();
    let src = addrs::CLIENT_V4.to_string();
    let r = env.run(
        &env.copy,
        &[
            "packet",
            IMDS,
            "80",
            "--iface",
            &iface,
            "--src",
            &src,
            "--payload",
            "via-af-packet",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let arrived = env
        .sb
        .datagrams()
        .iter()
        .any(|d| d.payload == b"via-af-packet");
    // AF_PACKET frames pass no socket hook and no cgroup egress hook; with
    // CAP_NET_RAW a process can reach the endpoint. README's threat model says so.
    eprintln!(
        "AF_PACKET frame with CAP_NET_RAW reached the service: {arrived} (known gap, see README)"
    );
    assert!(
        arrived,
        "expected the documented AF_PACKET gap to be observable; if it closed, update the README"
    );
}

#[test]
fn unprotected_destinations_are_untouched() {
    let env = env_or_skip!("unprot", PROBE_ONLY);
    let un = addrs::UNPROTECTED_V4.to_string();
    let un6 = addrs::UNPROTECTED_V6.to_string();
    assert!(env.run(&env.copy, &["tcp", &un, "80"]).ok());
    assert!(env.run(&env.copy, &["tcp", &un6, "80"]).ok());
    assert!(env.run(&env.copy, &["udp-sendto", &un, "80"]).ok());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        env.events.lock().unwrap().is_empty(),
        "no decision (and no event) for unprotected destinations"
    );
}

#[test]
fn users_groups_and_cgroups_selectors() {
    let policy = r#"
mode = "enforce"
[[endpoint]]
name = "imds"
addresses = ["169.254.169.254"]
ports = [80]

[[allow]]
name = "nobody-user"
users = [65534]

[[allow]]
name = "group-4242"
groups = [4242]

[[allow]]
name = "probe-in-sandbox"
exe = "{probe}"
cgroups = ["{cgroup}"]
"#;
    let env = env_or_skip!("subjects", policy);
    let as_nobody = env.run_as(&env.copy, &["tcp", IMDS, "80"], Some((65534, 65534)));
    assert!(
        as_nobody.ok(),
        "uid 65534 is allowed by user rule: {as_nobody:?}"
    );
    let as_group = env.run_as(&env.copy, &["tcp", IMDS, "80"], Some((4243, 4242)));
    assert!(
        as_group.ok(),
        "gid 4242 is allowed by group rule: {as_group:?}"
    );
    // A supplementary group counts as much as the primary one.
    let mut c = env.sb.client(&env.copy);
    c.args(["tcp", IMDS, "80"])
        .gid(4243)
        .uid(4243)
        .groups(&[4243, 4242]);
    let supp = common::outcome(c.output().unwrap());
    assert!(
        supp.ok(),
        "supplementary gid 4242 is allowed by group rule: {supp:?}"
    );
    let other = env.run_as(&env.copy, &["tcp", IMDS, "80"], Some((4243, 4243)));
    assert!(other.denied(), "{other:?}");
    assert!(
        env.run(&env.probe, &["tcp", IMDS, "80"]).ok(),
        "probe inside the named cgroup"
    );
    // Port 8080 is not protected by this policy.
    assert!(env
        .run_as(&env.copy, &["tcp", IMDS, "8080"], Some((4243, 4243)))
        .ok());
    let ev = env.wait_event(|e| e["rule"] == "group-4242").unwrap();
    assert_eq!(ev["gid"], 4242);
}

#[test]
fn guard_limits_who_is_guarded() {
    let policy = r#"
[guard]
users = [65534]

[[endpoint]]
name = "imds"
addresses = ["169.254.169.254/32"]

[[allow]]
name = "probe"
exe = "{probe}"
"#;
    let env = env_or_skip!("guard", policy);
    let root = env.run(&env.copy, &["tcp", IMDS, "80"]);
    assert!(root.ok(), "root is not guarded: {root:?}");
    assert!(env.wait_event(|e| e["reason"] == "unguarded").is_some());
    let nobody = env.run_as(&env.copy, &["tcp", IMDS, "80"], Some((65534, 65534)));
    assert!(nobody.denied(), "{nobody:?}");
    let nobody_probe = env.run_as(&env.probe, &["tcp", IMDS, "80"], Some((65534, 65534)));
    assert!(nobody_probe.ok(), "{nobody_probe:?}");
}

#[test]
fn audit_mode_decides_and_blocks_nothing() {
    let env = env_or_skip!(
        "audit",
        &PROBE_ONLY.replace("mode = \"enforce\"", "mode = \"audit\"")
    );
    assert!(env.run(&env.copy, &["tcp", IMDS, "80"]).ok());
    let ev = env
        .wait_event(|e| e["action"] == "audit")
        .expect("audit event");
    assert_eq!(ev["reason"], "no-matching-rule");
    assert_eq!(env.requests_for(ID_PATH), 1);
}

#[test]
fn ring_buffer_overflow_is_reported() {
    // Every decision sent one by one: identical repeats would be aggregated.
    let policy = format!("{PROBE_ONLY}\n[events]\naggregate = \"0s\"\n");
    let env = env_or_skip!("lost", &policy);
    // Stop the daemon's reader so the 4 MiB ring (about 23,800 events) fills, then resume it.
    let pid = env.daemon.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let r = env.run(&env.copy, &["connect-loop", IMDS, "80", "--count", "30000"]);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(r.json["errors"]["EPERM"].as_u64(), Some(30000), "{r:?}");
    let lost = env
        .wait_event(|e| e["type"] == "lost")
        .expect("a lost-events report");
    assert!(lost["lost"].as_u64().unwrap() > 0);
    // Every decision is either delivered or counted as lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (delivered, total_lost) = {
            let evs = env.events.lock().unwrap();
            let d = evs.iter().filter(|e| e["type"] == "decision").count() as u64;
            let l = evs
                .iter()
                .filter_map(|e| e["total_lost"].as_u64())
                .max()
                .unwrap_or(0);
            (d, l)
        };
        if delivered + total_lost == 30000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered {delivered} + lost {total_lost} != 30000"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn repeated_decisions_are_aggregated_with_exact_counts() {
    let env = env_or_skip!("repeat", PROBE_ONLY);
    let n = 3000u64;
    let denied = env.run(&env.copy, &["connect-loop", IMDS, "80", "--count", "3000"]);
    assert_eq!(
        denied.json["errors"]["EPERM"].as_u64(),
        Some(n),
        "{denied:?}"
    );
    let allowed = env.run(&env.probe, &["connect-loop", IMDS, "80", "--count", "3000"]);
    assert_eq!(
        allowed.json["errors"].as_object().map(|e| e.len()),
        Some(0),
        "{allowed:?}"
    );
    // Counts of one action's decision events, and how many events carried them.
    let tally = |action: &str| {
        let evs = env.events.lock().unwrap();
        let mine: Vec<_> = evs
            .iter()
            .filter(|e| e["type"] == "decision" && e["action"] == action)
            .collect();
        (
            mine.iter()
                .map(|e| e["count"].as_u64().unwrap())
                .sum::<u64>(),
            mine.len(),
        )
    };
    // Repeats are reported by the daemon's once-a-second sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while (tally("deny").0, tally("allow").0) != (n, n) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for action in ["deny", "allow"] {
        let (sum, events) = tally(action);
        assert_eq!(sum, n, "{action}: every decision counted exactly once");
        assert!(
            events < 40,
            "{action}: {events} events for {n} identical decisions"
        );
    }
    let evs = env.events.lock().unwrap();
    let repeat = evs
        .iter()
        .find(|e| e["action"] == "deny" && e["count"].as_u64() > Some(1))
        .expect("an aggregated denial");
    // The repeat carries the identity of the first report.
    assert_eq!(repeat["rule"], serde_json::Value::Null);
    assert_eq!(repeat["destination"]["address"], IMDS);
    assert!(
        repeat["exe"]["name"]
            .as_str()
            .unwrap()
            .starts_with("probe-copy"),
        "{repeat}"
    );
}

#[test]
fn metrics_count_decisions_reloads_and_runs() {
    if !root_or_skip("metrics") {
        return;
    }
    // A free loopback port; the daemon binds it next.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let env = Env::start_full("metrics", PROBE_ONLY, |_| {}, &["--metrics", &addr]);
    let denied = env.run(&env.copy, &["connect-loop", IMDS, "80", "--count", "5"]);
    assert_eq!(
        denied.json["errors"]["EPERM"].as_u64(),
        Some(5),
        "{denied:?}"
    );
    let ok = env.run(&env.probe, &["tcp", IMDS, "80"]);
    assert!(ok.ok(), "{ok:?}");
    std::fs::write(&env.policy, "mode = \"sometimes\"\n").unwrap();
    unsafe { libc::kill(env.daemon.pid() as i32, libc::SIGHUP) };
    let scrape = || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    };
    let want = [
        r#"metaguard_decisions_total{action="deny",rule="",endpoint="aws-imds"} 5"#,
        r#"metaguard_decisions_total{action="allow",rule="probe",endpoint="aws-imds"} 1"#,
        r#"metaguard_policy_reloads_total{result="rejected"} 1"#,
        r#"metaguard_program_runs{program="connect4"}"#,
    ];
    // Repeats and reload results reach the metrics within the daemon's 1 s sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut body = scrape();
    while !want.iter().all(|w| body.contains(w)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        body = scrape();
    }
    for w in want {
        assert!(body.contains(w), "missing {w} in:\n{body}");
    }
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
}

/// A cgroup removed on drop (after its processes have exited).
struct SubCgroup(std::path::PathBuf);

impl Drop for SubCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

#[test]
fn cgroup_rules_cover_descendants() {
    let policy = r#"
[[endpoint]]
name = "imds"
addresses = ["169.254.169.254/32"]

[[allow]]
name = "sandbox-cgroup"
cgroups = ["{cgroup}"]
"#;
    let env = env_or_skip!("cgdesc", policy);
    let sub = SubCgroup(env.sb.cgroup_dir().join("metaguard-nested").join("deeper"));
    std::fs::create_dir_all(&sub.0).unwrap();
    let _mid = SubCgroup(sub.0.parent().unwrap().to_path_buf());
    let _sub = sub;
    let deeper = _sub.0.join("cgroup.procs");
    let script = format!(
        "echo $$ > {} && exec {} tcp {IMDS} 80",
        deeper.display(),
        env.copy.display()
    );
    let nested = env.run(std::path::Path::new("sh"), &["-c", &script]);
    assert!(
        nested.ok(),
        "a process two levels below the named cgroup is covered: {nested:?}"
    );
    let ev = env
        .wait_event(|e| e["rule"] == "sandbox-cgroup")
        .expect("allow event");
    assert!(
        ev["cgroup"]["path"]
            .as_str()
            .unwrap()
            .ends_with("/metaguard-nested/deeper"),
        "{ev}"
    );
}

#[test]
fn sighup_reloads_and_a_bad_policy_keeps_the_old_one() {
    let env = env_or_skip!("reload", PROBE_ONLY);
    assert!(env.run(&env.probe, &["connect-only", IMDS, "80"]).ok());
    assert!(env.run(&env.copy, &["connect-only", IMDS, "80"]).denied());
    let hup = || unsafe { libc::kill(env.daemon.pid() as i32, libc::SIGHUP) };
    let eventually = |program: &std::path::Path, allowed: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let o = env.run(program, &["connect-only", IMDS, "80"]);
            if o.ok() == allowed && (allowed || o.denied()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} still {:?} after reload",
                program.display(),
                o
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // Swap who is allowed: the copy now, not the probe.
    let text = std::fs::read_to_string(&env.policy).unwrap();
    let swapped = text.replace(env.probe.to_str().unwrap(), env.copy.to_str().unwrap());
    std::fs::write(&env.policy, &swapped).unwrap();
    hup();
    eventually(&env.copy, true);
    eventually(&env.probe, false);
    // An invalid policy is rejected; the running one stays in force.
    std::fs::write(&env.policy, "mode = \"enforcing\"\n").unwrap();
    hup();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(env.run(&env.copy, &["connect-only", IMDS, "80"]).ok());
    assert!(env.run(&env.probe, &["connect-only", IMDS, "80"]).denied());
}
