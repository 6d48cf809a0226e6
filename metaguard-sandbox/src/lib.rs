//! Network-namespace sandbox with a fake cloud metadata service, for metaguard's
//! tests, demo and benchmarks.
//!
//! A [`Sandbox`] owns a child cgroup, a client netns and a metadata netns joined by
//! a veth pair. The metadata netns owns every address in [`addrs`] and runs the
//! [`fake_imds`] service there, so clients started with [`Sandbox::client`] reach
//! "cloud metadata" without any packet leaving the sandbox. Dropping the sandbox
//! (also while unwinding from a panic) removes all of it.
pub mod addrs;
mod client;
pub mod fake_imds;
pub mod http;
mod sandbox;
mod sys;

pub use client::ClientCommand;
pub use fake_imds::{RecordedDatagram, RecordedRequest};
pub use sandbox::Sandbox;

/// True when running as root; tests that need a sandbox skip (with a message) otherwise.
pub fn is_root() -> bool {
    sys::is_root()
}
