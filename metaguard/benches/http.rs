//! Keep-alive request round trip to the protected endpoint, in one run, side
//! by side: no guard, metaguard with a rule that allows the connection (the
//! connect guard and the per-send sender check), and metaguard with an
//! `http` rule (every request parsed and matched in the kernel). Prints the
//! ratios and the sk_msg program's own run time per message.
//!
//! Run as root: `cargo build --release -p metaguard-probe && cargo bench -p metaguard --bench http`
//! (or scripts/bench.sh). Traffic goes only to the sandbox's namespaces.
mod support;

use metaguard::demo::TempDir;
use metaguard_sandbox::Sandbox;
use support::{
    blocks, guard_on, keepalive_median, median, median_ratio, per_run, probe_policy, prog_stats,
    ratio_iqr, start, Drainer, StatsSwitch,
};

const REQUESTS: u32 = 1000;
const PATH: &str = "/latest/meta-data/instance-id";

fn main() {
    let Some((_quiet, cpu, probe)) = start("http") else {
        return;
    };
    let tmp = TempDir::new("bench-http").unwrap();
    let connect_only = probe_policy(&tmp.0, "connect.toml", &probe, "");
    let http = probe_policy(
        &tmp.0,
        "http.toml",
        &probe,
        &format!("http = [{{ method = \"GET\", path = \"{PATH}\" }}]\n"),
    );
    let sb = Sandbox::create("bench-http").unwrap();
    // Three cgroups side by side: the sandbox's own (no guard), one guarded
    // by a rule without `http`, one by a rule with it.
    // Siblings at one depth, so only the guards differ.
    let plain = sb.child_cgroup("plain").unwrap();
    let (conn_cg, http_cg) = (
        sb.child_cgroup("connect").unwrap(),
        sb.child_cgroup("http").unwrap(),
    );
    let mut conn_guard = guard_on(&connect_only, &conn_cg);
    let mut http_guard = guard_on(&http, &http_cg);
    let drains = [
        Drainer::start(&mut conn_guard),
        Drainer::start(&mut http_guard),
    ];

    // Round trips with bpf_stats off (its clock reads would be charged to
    // metaguard); the order of the three cells rotates every block.
    let n = blocks(30);
    let cells = [&plain, &conn_cg, &http_cg];
    let mut rt: [Vec<f64>; 3] = [vec![], vec![], vec![]];
    for block in 0..n {
        for i in 0..3 {
            let cell = (i + block) % 3;
            rt[cell].push(keepalive_median(&sb, cells[cell], &probe, PATH, REQUESTS));
        }
    }
    // Then the sk_msg program's run time per message, with bpf_stats on.
    let (mut conn_ns, mut req_ns) = (vec![], vec![]);
    let stats = StatsSwitch::on();
    for _ in 0..5 {
        let s0 = prog_stats(&conn_guard, "msg_sender");
        keepalive_median(&sb, &conn_cg, &probe, PATH, REQUESTS);
        conn_ns.push(per_run(s0, prog_stats(&conn_guard, "msg_sender")));
        let s0 = prog_stats(&http_guard, "msg_sender");
        keepalive_median(&sb, &http_cg, &probe, PATH, REQUESTS);
        req_ns.push(per_run(s0, prog_stats(&http_guard, "msg_sender")));
    }
    drop(stats);
    for d in drains {
        d.stop();
    }
    drop((conn_guard, http_guard));

    let [none, conn, req] = rt;
    let (c_n, r_n, r_c) = (
        median_ratio(&conn, &none),
        median_ratio(&req, &none),
        median_ratio(&req, &conn),
    );
    let iqr = ratio_iqr(&req, &conn);
    let (mut none, mut conn, mut req) = (none, conn, req);
    println!(
        "metaguard HTTP benchmark: {n} blocks x {REQUESTS} keep-alive GET {PATH} per cell, three cgroups side by side ({cpu}); ratios are medians of per-block ratios"
    );
    println!(
        "{:<52} {:>12} {:>10} {:>14}",
        "setup", "round trip", "vs none", "vs connect"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10} {:>14}",
        "no guard",
        median(&mut none),
        "1.000",
        "-"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10.3} {:>14}",
        "connect guard (rule without http; sender check)",
        median(&mut conn),
        c_n,
        "1.000"
    );
    println!(
        "{:<52} {:>10.0}ns {:>10.3} {:>14.3}",
        "kernel HTTP check (rule with http)",
        median(&mut req),
        r_n,
        r_c
    );
    println!(
        "HTTP check vs connect guard, interquartile range of the block ratios: {:.3}..{:.3}",
        iqr.0, iqr.1
    );
    println!(
        "msg_sender run time per message (bpf_stats): sender check only {:.0} ns, with the HTTP check {:.0} ns",
        median(&mut conn_ns),
        median(&mut req_ns)
    );
}
