//! metaguard: decides in the kernel which processes may reach cloud metadata
//! services and other protected endpoints.
//!
//! - `policy`: the TOML policy model, its validation and compilation.
//! - `loader`: loads the eBPF programs, fills their maps, attaches them.
//! - `events`: the event path from the kernel ring buffer to JSON lines.
pub mod policy;
pub mod sys;
