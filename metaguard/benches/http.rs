//! Keep-alive request round trip to the protected endpoint, in one run, side
//! by side: no guard, metaguard with a rule that allows the connection (the
//! connect guard and the per-send sender check), and metaguard with an
//! `http` rule (every request parsed and matched in the kernel). Prints the
//! ratios and the sk_msg program's own run time per message.
//!
//! Run as root: `cargo build --release -p metaguard-probe && cargo bench -p metaguard --bench http`
//! (or scripts/bench.sh). Traffic goes only to the sandbox's namespaces.
mod support;

use std::path::Path;

use metaguard::{demo::TempDir, loader::Guard, policy};
use metaguard_sandbox::{addrs, Sandbox};
use support::{median, per_run, probe, prog_stats, Drainer, StatsSwitch};

const REQUESTS: &str = "2000";
const PATH: &str = "/latest/meta-data/instance-id";

fn rounds() -> usize {
    std::env::var("METAGUARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// Median round trip (ns) of keep-alive GETs on one connection.
fn keepalive_median(sb: &Sandbox, probe: &Path) -> f64 {
    let out = sb
        .client(probe)
        .args([
            "http-loop",
            &addrs::IMDS_V4.to_string(),
            "80",
            "--path",
            PATH,
            "--count",
            REQUESTS,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert!(out.status.success(), "http-loop failed: {v}");
    v["median_ns"].as_f64().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED bench http: needs root (BPF programs, network namespaces)");
        return;
    }
    let probe = probe();
    let tmp = TempDir::new("bench-http").unwrap();
    let endpoint =
        "[[endpoint]]\nname = \"aws-imds\"\naddresses = [\"169.254.169.254/32\"]\nports = [80]\n\n";
    let load = |name: &str, rule_extra: &str| {
        let p = tmp.0.join(name);
        std::fs::write(
            &p,
            format!(
                "{endpoint}[[allow]]\nname = \"probe\"\nexe = \"{}\"\n{rule_extra}",
                probe.display()
            ),
        )
        .unwrap();
        policy::load(&p).expect("bench policy")
    };
    let connect_only = load("connect.toml", "");
    let http = load(
        "http.toml",
        &format!("http = [{{ method = \"GET\", path = \"{PATH}\" }}]\n"),
    );
    let sb = Sandbox::create("bench-http").unwrap();
    let (mut none, mut conn, mut req) = (vec![], vec![], vec![]);
    let (mut conn_ns, mut req_ns) = (vec![], vec![]);
    for round in 0..rounds() {
        // Rotate the order each round so drift hits every cell alike.
        for cell in (0..3).map(|i| (i + round) % 3) {
            if cell == 0 {
                none.push(keepalive_median(&sb, &probe));
                continue;
            }
            let pol = if cell == 1 { &connect_only } else { &http };
            let mut guard = Guard::load().unwrap();
            guard.apply(pol).unwrap();
            guard.attach(sb.cgroup_dir()).unwrap();
            let drain = Drainer::start(&mut guard);
            // Round trip with bpf_stats off (its clock reads would be
            // charged to metaguard), then the program's run time with it on.
            let m = keepalive_median(&sb, &probe);
            let stats = StatsSwitch::on();
            let s0 = prog_stats(&guard, "msg_sender");
            keepalive_median(&sb, &probe);
            let s1 = prog_stats(&guard, "msg_sender");
            drop(stats);
            drain.stop();
            drop(guard);
            if cell == 1 {
                conn.push(m);
                conn_ns.push(per_run(s0, s1));
            } else {
                req.push(m);
                req_ns.push(per_run(s0, s1));
            }
        }
    }
    let (n, c, r) = (median(&mut none), median(&mut conn), median(&mut req));
    println!(
        "metaguard HTTP benchmark: {} rounds x {REQUESTS} keep-alive GET {PATH} per cell, medians of round medians",
        rounds()
    );
    println!(
        "{:<52} {:>12} {:>10} {:>14}",
        "setup", "round trip", "vs none", "vs connect"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10} {:>14}",
        "no guard", n, "1.000", "-"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10.3} {:>14}",
        "connect guard (rule without http; sender check)",
        c,
        c / n,
        "1.000"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10.3} {:>14.3}",
        "kernel HTTP check (rule with http)",
        r,
        r / n,
        r / c
    );
    println!(
        "msg_sender run time per message (bpf_stats): sender check only {:.0} ns, with the HTTP check {:.0} ns",
        median(&mut conn_ns),
        median(&mut req_ns)
    );
}
