//! metaguard command line: `check`, `run`, `status`, `reload`, `events`,
//! `learn`, `demo`.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use metaguard::{control, daemon, demo, events::Format, learn, loader::pins, policy};

#[derive(Parser)]
#[command(
    name = "metaguard",
    version,
    about = "Deny-by-default, in-kernel guard for cloud metadata services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy file and print what it compiles to (exit 2 on errors).
    Check { policy: PathBuf },
    /// Load the kernel programs, enforce the policy, print one event per decision.
    Run {
        #[arg(long)]
        policy: PathBuf,
        /// cgroup2 directory to guard (absolute, or relative to the cgroup2 mount); default: the whole host.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off by default.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Control socket for `status`, `reload` and `events`.
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// bpffs directory where the attachments are pinned (they outlive the daemon).
        #[arg(long, value_name = "PATH", default_value = pins::DEFAULT_ROOT)]
        pin_dir: PathBuf,
        /// Detach on SIGINT/SIGTERM; by default the programs keep enforcing after the daemon stops.
        #[arg(long)]
        detach_on_exit: bool,
        /// Test only (hidden): load map MAP with N entries instead of its
        /// built-in capacity, so a test can run a daemon whose maps differ
        /// from another's without a second build (upgrade tests).
        #[arg(long, hide = true, value_name = "MAP=N")]
        test_map_entries: Vec<String>,
    },
    /// Remove metaguard's programs (all pinned attachments, or those on --cgroup).
    Unload {
        /// Only the attachments on this cgroup2 directory.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        #[arg(long, value_name = "PATH", default_value = pins::DEFAULT_ROOT)]
        pin_dir: PathBuf,
    },
    /// Let one running process reach protected endpoints for a while (by its identity now, not its pid).
    Grant {
        #[arg(long)]
        pid: u32,
        /// How long, e.g. 60s, 10m (at most 24h).
        #[arg(long, default_value = "60s")]
        ttl: humantime::Duration,
        /// Only this endpoint; default: every endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
    },
    /// Remove a process's grant before it expires.
    Revoke {
        #[arg(long)]
        pid: u32,
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
    },
    /// Show the running daemon's programs, policy and counts (exit 1 if none answers).
    Status {
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Make the running daemon re-read its policy (exit 2, old policy kept, if invalid).
    Reload {
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
    },
    /// Follow the running daemon's events live, until it stops.
    Events {
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// Propose a policy allowing exactly the traffic in `run`'s JSON events (needs no root).
    Learn {
        /// JSON-lines events as `metaguard run` prints them; `-` for standard input.
        #[arg(long, required_unless_present = "live", conflicts_with = "live")]
        from: Option<PathBuf>,
        /// Instead: follow the running daemon's events for this long (e.g. 10m).
        #[arg(long)]
        live: Option<humantime::Duration>,
        /// The daemon's control socket, for --live.
        #[arg(long, value_name = "PATH", default_value = control::DEFAULT_SOCKET)]
        control: PathBuf,
        /// Write the proposal here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep this policy's mode, include, [guard] and [[endpoint]]s; generate only the rules.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Build a sandbox with a fake metadata service and show allowed and denied clients live.
    Demo {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { policy: path } => match policy::load(&path) {
            Ok(p) => {
                print!("{}", policy::summary(&p));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            policy,
            cgroup,
            format,
            metrics,
            control,
            pin_dir,
            detach_on_exit,
            test_map_entries,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(daemon::run(daemon::RunOptions {
                policy,
                cgroup,
                format,
                metrics,
                control,
                pin_dir,
                detach_on_exit,
                test_map_entries,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("metaguard: {e:#}");
                    ExitCode::from(exit_code(&e))
                }
            }
        }
        Command::Status { control, format } => {
            client(control::status(&control, format).map(|s| print!("{s}")))
        }
        Command::Reload { control } => client(control::reload(&control).map(|s| print!("{s}"))),
        Command::Unload { cgroup, pin_dir } => match daemon::unload(cgroup.as_deref(), &pin_dir) {
            Ok(n) => {
                println!(
                    "metaguard: removed {n} pinned attachment set(s) under {}",
                    pin_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("metaguard unload: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Grant {
            pid,
            ttl,
            endpoint,
            control,
        } => client(control::grant(&control, pid, ttl.as_secs(), endpoint).map(|s| print!("{s}"))),
        Command::Revoke { pid, control } => {
            client(control::revoke(&control, pid).map(|s| print!("{s}")))
        }
        Command::Events { control, format } => {
            client(control::events(&control, format, &mut std::io::stdout()))
        }
        Command::Learn {
            from,
            live,
            control,
            out,
            policy,
        } => {
            let (from, recorded) = match (from, live) {
                (Some(f), _) => (f, false),
                (None, Some(d)) => match control::record_events(&control, d.into()) {
                    Ok(file) => (file, true),
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(e.code);
                    }
                },
                (None, None) => unreachable!("clap requires --from or --live"),
            };
            let code = learn::main(learn::Options {
                from: from.clone(),
                out,
                policy,
            });
            if recorded {
                // The recording was only the input: leave nothing behind.
                if let Some(dir) = from.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            ExitCode::from(code)
        }
        Command::Demo { format } => match demo::run(format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("metaguard demo: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// A control client's outcome: errors on stderr, with their exit code.
fn client(r: Result<(), control::ClientError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.code)
        }
    }
}

/// 2 for a policy the operator must fix, 1 for everything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<policy::PolicyErrors>().is_some() {
        2
    } else {
        1
    }
}
