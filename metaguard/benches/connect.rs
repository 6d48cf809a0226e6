//! Connect+close latency with and without metaguard, in one run, side by
//! side, and the programs' own run time per decision (kernel.bpf_stats_enabled).
//!
//! One guard is loaded once and attached to a child cgroup of the sandbox's;
//! a sibling child cgroup stays plain. Each block then runs the same
//! client in both, back to back, in alternating order, so that drift (other
//! load, frequency, caches) hits both sides of every ratio alike; the ratio
//! reported is the median over blocks of guarded/plain.
//!
//! Run as root: `cargo build --release -p metaguard-probe && cargo bench -p metaguard --bench connect`
//! (or scripts/bench.sh). Traffic goes only to the sandbox's namespaces.
mod support;

use std::path::Path;

use metaguard::{demo::TempDir, policy};
use metaguard_sandbox::{addrs, Sandbox};
use support::{
    blocks, guard_on, median, median_ratio, per_run, prog_stats, ratio_iqr, start, Drainer,
    StatsSwitch,
};

const CONNECTS: u32 = 1000;

/// Median connect+close latency (ns) of one probe run in `cgroup`; `denied`
/// runs must fail every connect with EPERM.
fn connect_median(sb: &Sandbox, cgroup: &Path, probe: &Path, addr: &str, denied: bool) -> f64 {
    let out = sb
        .client_in(probe, cgroup)
        .unwrap()
        .args(["connect-loop", addr, "80", "--count", &CONNECTS.to_string()])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    if denied {
        assert_eq!(
            v["errors"]["EPERM"].as_u64(),
            Some(CONNECTS as u64),
            "denied run: {v}"
        );
    } else {
        assert!(out.status.success(), "connect-loop to {addr} failed: {v}");
    }
    v["median_ns"].as_f64().unwrap()
}

fn main() {
    let Some((_quiet, cpu, probe)) = start("connect") else {
        return;
    };
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
    // Siblings at the same depth: a deeper cgroup costs more per socket
    // (memory charging walks the hierarchy), which is not metaguard's cost.
    let plain = sb.child_cgroup("plain").unwrap();
    let guarded = sb.child_cgroup("guarded").unwrap();
    let unprot = addrs::UNPROTECTED_V4.to_string();
    let prot = addrs::IMDS_V4.to_string();
    let copy = tmp.0.join("probe-copy");
    std::fs::copy(&probe, &copy).unwrap();

    let mut guard = guard_on(&pol, &guarded);
    let drain = Drainer::start(&mut guard);

    // Latency, with bpf_stats off: its clock reads on every program run
    // would be charged to metaguard.
    let n = blocks(30);
    let (mut base_u, mut base_p, mut mg_u, mut mg_p, mut mg_d) =
        (vec![], vec![], vec![], vec![], vec![]);
    for block in 0..n {
        let order: [bool; 2] = if block % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for dest in [&unprot, &prot] {
            for g in order {
                let cg = if g { &guarded } else { &plain };
                let m = connect_median(&sb, cg, &probe, dest, false);
                match (dest == &unprot, g) {
                    (true, false) => base_u.push(m),
                    (true, true) => mg_u.push(m),
                    (false, false) => base_p.push(m),
                    (false, true) => mg_p.push(m),
                }
            }
        }
        mg_d.push(connect_median(&sb, &guarded, &copy, &prot, true));
    }

    // Then the programs' own run time, with bpf_stats on.
    let (mut ns_u, mut ns_p, mut ns_d) = (vec![], vec![], vec![]);
    let (mut eg_ns, mut eg_pkts, mut ops_ns, mut ops_runs) = (vec![], vec![], vec![], vec![]);
    let (mut eg_prot_ns, mut ops_prot_ns) = (vec![], vec![]);
    let stats = StatsSwitch::on();
    for _ in 0..5 {
        let e0 = prog_stats(&guard, "egress");
        let o0 = prog_stats(&guard, "sock_established");
        let s0 = prog_stats(&guard, "connect4");
        connect_median(&sb, &guarded, &probe, &unprot, false);
        let s1 = prog_stats(&guard, "connect4");
        let e1 = prog_stats(&guard, "egress");
        let o1 = prog_stats(&guard, "sock_established");
        ops_ns.push(per_run(o0, o1));
        ops_runs.push((o1.1 - o0.1) as f64 / CONNECTS as f64);
        eg_ns.push(per_run(e0, e1));
        eg_pkts.push((e1.1 - e0.1) as f64 / CONNECTS as f64);
        connect_median(&sb, &guarded, &probe, &prot, false);
        let s2 = prog_stats(&guard, "connect4");
        let (e2, o2) = (
            prog_stats(&guard, "egress"),
            prog_stats(&guard, "sock_established"),
        );
        eg_prot_ns.push(per_run(e1, e2));
        ops_prot_ns.push(per_run(o1, o2));
        connect_median(&sb, &guarded, &copy, &prot, true);
        let s3 = prog_stats(&guard, "connect4");
        ns_u.push(per_run(s0, s1));
        ns_p.push(per_run(s1, s2));
        ns_d.push(per_run(s2, s3));
    }
    drop(stats);
    drain.stop();
    drop(guard);

    let (ru, rp) = (median_ratio(&mg_u, &base_u), median_ratio(&mg_p, &base_p));
    let (iu, ip) = (ratio_iqr(&mg_u, &base_u), ratio_iqr(&mg_p, &base_p));
    println!(
        "metaguard connect benchmark: {n} blocks x {CONNECTS} connect+close per cell, guarded and plain cgroups side by side ({cpu})"
    );
    println!(
        "{:<44} {:>12} {:>14} {:>8} {:>16}",
        "destination", "no guard ns", "metaguard ns", "ratio", "ratio IQR"
    );
    println!(
        "{:<44} {:>12.0} {:>14.0} {:>8.3} {:>7.3}..{:<7.3}",
        format!("unprotected {unprot}:80"),
        median(&mut base_u),
        median(&mut mg_u),
        ru,
        iu.0,
        iu.1
    );
    println!(
        "{:<44} {:>12.0} {:>14.0} {:>8.3} {:>7.3}..{:<7.3}",
        format!("protected {prot}:80 (allowed client)"),
        median(&mut base_p),
        median(&mut mg_p),
        rp,
        ip.0,
        ip.1
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
        "egress backstop run time per packet: unprotected {:.0} ns, protected allowed {:.0} ns; {:.1} packets per connect+close",
        median(&mut eg_ns),
        median(&mut eg_prot_ns),
        median(&mut eg_pkts)
    );
    // On a protected connection one of the calls puts the socket in the
    // socket map for the per-send check (the kernel sets up its psock).
    println!(
        "sock_ops run time per call: unprotected {:.0} ns, protected allowed {:.0} ns; {:.1} calls per connect+close",
        median(&mut ops_ns),
        median(&mut ops_prot_ns),
        median(&mut ops_runs)
    );
}
