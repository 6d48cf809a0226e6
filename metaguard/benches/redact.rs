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

use metaguard::demo::TempDir;
use metaguard_sandbox::{fake_imds::responses::AWS_ROLE, Sandbox};
use support::{
    blocks, guard_on, keepalive_median, median, median_ratio, per_run, probe_policy, prog_stats,
    ratio_iqr, start, Drainer, StatsSwitch,
};

const REQUESTS: u32 = 1000;

/// The credentials (`METAGUARD_BENCH_PATH` fetches another path instead).
fn creds_path() -> String {
    std::env::var("METAGUARD_BENCH_PATH")
        .unwrap_or_else(|_| format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}"))
}

fn main() {
    let Some((_quiet, cpu, probe)) = start("redact") else {
        return;
    };
    let tmp = TempDir::new("bench-redact").unwrap();
    let plain = probe_policy(&tmp.0, "plain.toml", &probe, "");
    let path = creds_path();
    // METAGUARD_BENCH_SHAPE redacts another shape (e.g. one the answer
    // does not hold: the scan without writes).
    let shape = std::env::var("METAGUARD_BENCH_SHAPE").unwrap_or("aws-credentials".into());
    let redacting = probe_policy(
        &tmp.0,
        "redact.toml",
        &probe,
        &format!("redact = [\"{shape}\"]\n"),
    );
    let sb = Sandbox::create("bench-redact").unwrap();
    // Two guarded cgroups side by side, one per policy, each with its guard
    // attached for the whole run; blocks alternate between them.
    let (plain_cg, redact_cg) = (
        sb.child_cgroup("plain").unwrap(),
        sb.child_cgroup("redact").unwrap(),
    );
    let mut plain_guard = guard_on(&plain, &plain_cg);
    let mut redact_guard = guard_on(&redacting, &redact_cg);
    let drains = [
        Drainer::start(&mut plain_guard),
        Drainer::start(&mut redact_guard),
    ];
    let n = blocks(30);
    let (mut without, mut with) = (vec![], vec![]);
    for block in 0..n {
        let order = if block % 2 == 0 { [0, 1] } else { [1, 0] };
        for cell in order {
            if cell == 0 {
                without.push(keepalive_median(&sb, &plain_cg, &probe, &path, REQUESTS));
            } else {
                with.push(keepalive_median(&sb, &redact_cg, &probe, &path, REQUESTS));
            }
        }
    }
    // The verdict program's run time, and the per-send program's in both
    // cells (a redacting connection's sends also set its mask), with
    // bpf_stats on.
    let (mut verdict_ns, mut runs_per_fetch) = (vec![], vec![]);
    let (mut send_plain_ns, mut send_redact_ns) = (vec![], vec![]);
    let count = REQUESTS as f64;
    let stats = StatsSwitch::on();
    for _ in 0..5 {
        let p0 = prog_stats(&plain_guard, "msg_sender");
        keepalive_median(&sb, &plain_cg, &probe, &path, REQUESTS);
        let p1 = prog_stats(&plain_guard, "msg_sender");
        send_plain_ns.push(per_run(p0, p1));
        let (s0, m0) = (
            prog_stats(&redact_guard, "redact_verdict"),
            prog_stats(&redact_guard, "msg_sender"),
        );
        keepalive_median(&sb, &redact_cg, &probe, &path, REQUESTS);
        let (s1, m1) = (
            prog_stats(&redact_guard, "redact_verdict"),
            prog_stats(&redact_guard, "msg_sender"),
        );
        verdict_ns.push(per_run(s0, s1));
        runs_per_fetch.push((s1.1 - s0.1) as f64 / count);
        send_redact_ns.push(per_run(m0, m1));
    }
    drop(stats);
    for d in drains {
        d.stop();
    }
    drop((plain_guard, redact_guard));
    let ratio = median_ratio(&with, &without);
    let iqr = ratio_iqr(&with, &without);
    let (a, b) = (median(&mut without), median(&mut with));
    println!(
        "metaguard redaction benchmark: {n} blocks x {REQUESTS} keep-alive GET {} per cell, both cgroups side by side ({cpu}); the ratio is the median of per-block ratios",
        path
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
        ratio
    );
    println!(
        "ratio interquartile range over blocks: {:.3}..{:.3}",
        iqr.0, iqr.1
    );
    println!(
        "redact_verdict run time (bpf_stats): {:.0} ns per run, {:.2} runs per fetch; target ratio <= 1.150: {}",
        median(&mut verdict_ns),
        median(&mut runs_per_fetch),
        if ratio <= 1.15 { "met" } else { "NOT met" }
    );
    println!(
        "msg_sender run time per request (bpf_stats): {:.0} ns without redact, {:.0} ns with it",
        median(&mut send_plain_ns),
        median(&mut send_redact_ns)
    );
}
