//! metaguard: decides in the kernel which processes may reach cloud metadata
//! services and other protected endpoints.
//!
//! - [`policy`]: the TOML policy model, its validation and compilation.
//! - [`loader`]: loads the eBPF programs, fills their maps, attaches them
//!   (`loader::encode` turns a policy into map entries).
//! - [`events`]: the event path from the kernel ring buffer to JSON lines.
//! - [`daemon`]: `metaguard run`; [`demo`]: `metaguard demo`.
//! - [`control`]: the daemon's control socket and `status`, `reload`, `events`.
//! - [`learn`]: `metaguard learn`, from recorded events to a proposed policy.
pub mod control;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod learn;
pub mod loader;
pub mod metrics;
pub mod policy;
pub mod repeats;
pub mod sys;
