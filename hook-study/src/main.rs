//! hook-study: the hook study, measured (docs/hook-study.md).
//!
//! `sudo hook-study [--out-dir DIR]` builds the sandbox and measures every
//! implementation side by side (see study.rs); `client`, `proxy` are the
//! processes it starts inside the sandbox; `compare A B` checks two runs'
//! ratio files against each other.
mod bpf;
mod client;
mod proxy;
mod stats;
mod study;
mod svg;
mod tls;
mod util;

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("client") => client::run(args.get(1).context("client MODE")?, &args[2..]),
        Some("proxy") => proxy::run(&args[1..]),
        Some("compare") => {
            if args.len() != 3 {
                bail!("usage: hook-study compare RATIOS_A.json RATIOS_B.json");
            }
            study::compare(args[1].as_ref(), args[2].as_ref())
        }
        // cargo bench/test harness flags, for `cargo test --workspace`.
        Some("--list") => Ok(()),
        _ => {
            let mut cfg = study::Config::from_env();
            let mut it = args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--out-dir" => {
                        cfg.out_dir = Some(PathBuf::from(it.next().context("--out-dir DIR")?))
                    }
                    other => bail!("unknown argument {other}; usage: hook-study [--out-dir DIR]"),
                }
            }
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("hook-study needs root (BPF programs, network namespaces, nftables)");
            }
            if let Some(d) = &cfg.out_dir {
                std::fs::create_dir_all(d)?;
            }
            let out_dir = cfg.out_dir.clone();
            study::catch_signals();
            // Program run-time figures turn bpf_stats on for their own runs.
            let _quiet = metaguard::sys::bpf_stats::StatsSwitch::off();
            let mut env = study::Env::create(cfg)?;
            let r = env.run();
            if let Some(d) = out_dir {
                std::fs::write(d.join("hook-study-output.txt"), env.output())?;
            }
            r
        }
    }
}
