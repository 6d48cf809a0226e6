//! Credentials fetch round trip with and without redaction, side by side in
//! one run: keep-alive GETs of the IAM role credentials (a JSON answer with
//! three secrets) by a process whose rule has no `redact`, and by one whose
//! rule redacts `aws-credentials` (every answer scanned and masked in the
//! kernel by the sk_skb verdict program). Prints the ratio (target: within
//! 15%) and the verdict program's own run time per received skb.
//!
//! Run as root: `cargo build --release -p metaguard-probe && cargo bench -p metaguard --bench redact`
//! (or scripts/bench.sh). Traffic goes only to the sandbox's namespaces.
mod support;

use std::path::Path;

use metaguard::{demo::TempDir, loader::Guard, policy};
use metaguard_sandbox::{addrs, fake_imds::responses::AWS_ROLE, Sandbox};
use support::{median, per_run, probe, prog_stats, Drainer, StatsSwitch};

const REQUESTS: &str = "2000";

fn rounds() -> usize {
    std::env::var("METAGUARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
}

/// The credentials (`METAGUARD_BENCH_PATH` fetches another path instead).
fn creds_path() -> String {
    std::env::var("METAGUARD_BENCH_PATH")
        .unwrap_or_else(|_| format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}"))
}

/// Median round trip (ns) of keep-alive credential fetches on one connection.
fn keepalive_median(sb: &Sandbox, probe: &Path) -> f64 {
    let out = sb
        .client(probe)
        .args([
            "http-loop",
            &addrs::IMDS_V4.to_string(),
            "80",
            "--path",
            &creds_path(),
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
        eprintln!("SKIPPED bench redact: needs root (BPF programs, network namespaces)");
        return;
    }
    let probe = probe();
    let tmp = TempDir::new("bench-redact").unwrap();
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
    let plain = load("plain.toml", "");
    // METAGUARD_BENCH_SHAPE redacts another shape (e.g. one the answer
    // does not hold: the scan without writes).
    let shape = std::env::var("METAGUARD_BENCH_SHAPE").unwrap_or("aws-credentials".into());
    let redacting = load("redact.toml", &format!("redact = [\"{shape}\"]\n"));
    let sb = Sandbox::create("bench-redact").unwrap();
    let (mut without, mut with, mut verdict_ns, mut runs_per_fetch) =
        (vec![], vec![], vec![], vec![]);
    let count: f64 = REQUESTS.parse().unwrap();
    for round in 0..rounds() {
        // Rotate the order each round so drift hits both cells alike.
        for cell in (0..2).map(|i| (i + round) % 2) {
            let pol = if cell == 0 { &plain } else { &redacting };
            let mut guard = Guard::load().unwrap();
            guard.apply(pol).unwrap();
            guard.attach(sb.cgroup_dir()).unwrap();
            let drain = Drainer::start(&mut guard);
            // Round trip with bpf_stats off, then the verdict program's
            // run time with it on.
            let m = keepalive_median(&sb, &probe);
            if cell == 0 {
                without.push(m);
            } else {
                let stats = StatsSwitch::on();
                let s0 = prog_stats(&guard, "redact_verdict");
                keepalive_median(&sb, &probe);
                let s1 = prog_stats(&guard, "redact_verdict");
                drop(stats);
                with.push(m);
                verdict_ns.push(per_run(s0, s1));
                runs_per_fetch.push((s1.1 - s0.1) as f64 / count);
            }
            drain.stop();
            drop(guard);
        }
    }
    let (a, b) = (median(&mut without), median(&mut with));
    println!(
        "metaguard redaction benchmark: {} rounds x {REQUESTS} keep-alive GET {} per cell, medians of round medians",
        rounds(),
        creds_path()
    );
    println!("{:<52} {:>12} {:>10}", "setup", "round trip", "ratio");
    println!(
        "{:<52} {:>10.0}ns {:>10}",
        "rule without redact (answers as sent)", a, "1.000"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10.3}",
        &format!("rule with redact = [\"{shape}\"]"),
        b,
        b / a
    );
    println!(
        "redact_verdict run time (bpf_stats): {:.0} ns per run, {:.2} runs per fetch; target ratio <= 1.150: {}",
        median(&mut verdict_ns),
        median(&mut runs_per_fetch),
        if b / a <= 1.15 { "met" } else { "NOT met" }
    );
}
