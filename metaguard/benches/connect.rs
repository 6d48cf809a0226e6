//! Connect+close latency with and without metaguard, in one run, side by
//! side, and the programs' own run time per decision (kernel.bpf_stats_enabled).
//!
//! Run as root: `cargo build --release -p metaguard-probe && cargo bench -p metaguard --bench connect`
//! (or scripts/bench.sh). Traffic goes only to the sandbox's namespaces.
mod support;

use std::path::PathBuf;

use metaguard::{demo::TempDir, loader::Guard, policy};
use metaguard_sandbox::{addrs, Sandbox};
use support::{median, per_run, probe, prog_stats, Drainer, StatsSwitch};

const CONNECTS: &str = "2000";
/// Rounds per run; METAGUARD_BENCH_ROUNDS overrides it for quick looks.
fn rounds() -> usize {
    std::env::var("METAGUARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// Median connect+close latency (ns) of one probe run; `denied` runs must
/// fail every connect with EPERM.
fn connect_median(sb: &Sandbox, probe: &PathBuf, addr: &str, denied: bool) -> f64 {
    let out = sb
        .client(probe)
        .args(["connect-loop", addr, "80", "--count", CONNECTS])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    if denied {
        assert_eq!(
            v["errors"]["EPERM"].as_u64(),
            CONNECTS.parse().ok(),
            "denied run: {v}"
        );
    } else {
        assert!(out.status.success(), "connect-loop to {addr} failed: {v}");
    }
    v["median_ns"].as_f64().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED bench connect: needs root (BPF programs, network namespaces)");
        return;
    }
    let probe = probe();
    let tmp = TempDir::new("bench").unwrap();
    let policy_path = tmp.0.join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "[[endpoint]]\nname = \"aws-imds\"\naddresses = [\"169.254.169.254/32\", \"fd00:ec2::254/128\"]\nports = [80]\n\n[[allow]]\nname = \"probe\"\nexe = \"{}\"\n",
            probe.display()
        ),
    )
    .unwrap();
    let pol = policy::load(&policy_path).expect("bench policy");
    let sb = Sandbox::create("bench").unwrap();
    let unprot = addrs::UNPROTECTED_V4.to_string();
    let prot = addrs::IMDS_V4.to_string();

    let (mut base_u, mut base_p, mut mg_u, mut mg_p) = (vec![], vec![], vec![], vec![]);
    let (mut ns_u, mut ns_p, mut ns_d, mut mg_d) = (vec![], vec![], vec![], vec![]);
    let (mut eg_ns, mut eg_pkts) = (vec![], vec![]);
    let (mut ops_ns, mut ops_runs) = (vec![], vec![]);
    let copy = tmp.0.join("probe-copy");
    std::fs::copy(&probe, &copy).unwrap();
    for round in 0..rounds() {
        // Alternate the order each round so drift hits both sides alike.
        for guarded in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            if !guarded {
                base_u.push(connect_median(&sb, &probe, &unprot, false));
                base_p.push(connect_median(&sb, &probe, &prot, false));
                continue;
            }
            let mut guard = Guard::load().unwrap();
            guard.apply(&pol).unwrap();
            guard.attach(sb.cgroup_dir()).unwrap();
            let drain = Drainer::start(&mut guard);
            // Latency with bpf_stats off: its clock reads on every program
            // run would be charged to metaguard.
            mg_u.push(connect_median(&sb, &probe, &unprot, false));
            mg_p.push(connect_median(&sb, &probe, &prot, false));
            mg_d.push(connect_median(&sb, &copy, &prot, true));
            // Then the programs' own run time, with bpf_stats on.
            let stats = StatsSwitch::on();
            let e0 = prog_stats(&guard, "egress");
            let o0 = prog_stats(&guard, "sock_established");
            let s0 = prog_stats(&guard, "connect4");
            connect_median(&sb, &probe, &unprot, false);
            let s1 = prog_stats(&guard, "connect4");
            let e1 = prog_stats(&guard, "egress");
            let o1 = prog_stats(&guard, "sock_established");
            ops_ns.push(per_run(o0, o1));
            ops_runs.push((o1.1 - o0.1) as f64 / CONNECTS.parse::<f64>().unwrap());
            eg_ns.push(per_run(e0, e1));
            eg_pkts.push((e1.1 - e0.1) as f64 / CONNECTS.parse::<f64>().unwrap());
            connect_median(&sb, &probe, &prot, false);
            let s2 = prog_stats(&guard, "connect4");
            connect_median(&sb, &copy, &prot, true);
            let s3 = prog_stats(&guard, "connect4");
            drop(stats);
            ns_u.push(per_run(s0, s1));
            ns_p.push(per_run(s1, s2));
            ns_d.push(per_run(s2, s3));
            drain.stop();
            drop(guard);
        }
    }
    let (bu, bp, gu, gp) = (
        median(&mut base_u),
        median(&mut base_p),
        median(&mut mg_u),
        median(&mut mg_p),
    );
    println!("metaguard connect benchmark: {} rounds x {CONNECTS} connect+close per cell, medians of round medians", rounds());
    println!(
        "{:<44} {:>12} {:>14} {:>8}",
        "destination", "no guard ns", "metaguard ns", "ratio"
    );
    println!(
        "{:<44} {:>12.0} {:>14.0} {:>8.3}",
        format!("unprotected {unprot}:80"),
        bu,
        gu,
        gu / bu
    );
    println!(
        "{:<44} {:>12.0} {:>14.0} {:>8.3}",
        format!("protected {prot}:80 (allowed client)"),
        bp,
        gp,
        gp / bp
    );
    println!(
        "{:<44} {:>12} {:>14.0} {:>8}",
        format!("protected {prot}:80 (denied client, EPERM)"),
        "-",
        median(&mut mg_d),
        "-"
    );
    println!(
        "connect4 run time per decision (bpf_stats): unprotected {:.0} ns, protected allowed {:.0} ns, protected denied {:.0} ns",
        median(&mut ns_u),
        median(&mut ns_p),
        median(&mut ns_d)
    );
    println!(
        "egress backstop run time per packet (unprotected connects): {:.0} ns, {:.1} packets per connect+close",
        median(&mut eg_ns),
        median(&mut eg_pkts)
    );
    println!(
        "sock_ops run time per call (unprotected connects): {:.0} ns, {:.1} calls per connect+close",
        median(&mut ops_ns),
        median(&mut ops_runs)
    );
}
