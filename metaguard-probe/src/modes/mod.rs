//! One module per family of modes; `run` dispatches on the mode name.

pub mod loops;
pub mod process;
pub mod raw;
pub mod stream;
pub mod udp;
pub mod uring;

use crate::args::Opts;
use crate::json::Outcome;

/// What the process prints and how it exits.
pub enum Report {
    /// Print this outcome's JSON line, exit with its code.
    Outcome(Outcome),
    /// A child's JSON line, relayed verbatim, and the child's exit code.
    Relay(String, i32),
    /// The child's stdout was already copied through; only exit with this code.
    Passed(i32),
}

/// Run the mode named in `o.mode`.
pub fn run(o: &Opts) -> Report {
    match o.mode.as_str() {
        "fork" => process::fork_then(o),
        "exec" => process::fork_exec(o),
        "pass-fd" => process::pass_fd(o, false),
        "pass-fd6-mapped" => process::pass_fd(o, true),
        "pass-scm" => process::pass_scm(o),
        "hold" => process::hold(o),
        _ => Report::Outcome(run_network(o)),
    }
}

/// Run a mode that makes the network attempt in this process.
pub fn run_network(o: &Opts) -> Outcome {
    let m = o.mode.as_str();
    match m {
        "tcp" => stream::tcp(o, m, false),
        "http-raw" => stream::http_raw(o, m),
        "tcp6-mapped" => stream::tcp(o, m, true),
        "mptcp" => stream::mptcp(o, m),
        "connect-only" => stream::connect_only(o, m),
        "tfo" => stream::tfo(o, m),
        "udp-sendto" => udp::sendto(o, m, false),
        "udp6-mapped" => udp::sendto(o, m, true),
        "udp-sendmsg" => udp::sendmsg(o, m),
        "udp-connected" => udp::connected(o, m),
        "uring" => uring::connect(o, m, false),
        "uring-sqpoll" => uring::connect(o, m, true),
        "raw-udp" => raw::raw_udp(o, m),
        "raw-tcp-syn" => raw::raw_tcp_syn(o, m),
        "packet" => raw::packet(o, m),
        "connect-loop" => loops::connect_loop(o, m),
        "http-loop" => loops::http_loop(o, m),
        "send-fd" => stream::send_fd(o, m),
        _ => Outcome::other(m, "usage", format!("mode {m:?} cannot run here")),
    }
}
