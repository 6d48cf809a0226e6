//! metaguard-probe: a network client that reaches an endpoint in every way the
//! kernel offers and reports the result as one JSON line.
//!
//! Exit codes: 0 success, 1 denied (EPERM/EACCES), 2 other error, 3 timeout,
//! 4 feature unavailable on this kernel.

mod addr;
mod args;
mod errnames;
mod json;
mod modes;
mod net;
mod packet;
mod stats;

use std::io::Write;

use json::Outcome;
use modes::Report;

fn main() {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let report = match args::parse(&argv) {
        Ok(o) => modes::run(&o),
        Err((mode, msg)) => {
            eprintln!("metaguard-probe: {msg}");
            Report::Outcome(Outcome::other(&mode, "usage", msg))
        }
    };
    let code = match report {
        Report::Outcome(o) => {
            if !o.ok {
                eprintln!("metaguard-probe: {}: {}", o.mode, o.detail);
            }
            emit(&o.to_json());
            o.exit
        }
        Report::Relay(line, code) => {
            emit(&line);
            code
        }
        Report::Passed(code) => code,
    };
    std::process::exit(code);
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
