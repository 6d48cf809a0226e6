//! Thin, host-specific helpers around kernel interfaces (cgroupfs, stat, ioctls).
pub mod bpf_stats;
pub mod cgroup;
pub mod cut;
pub mod exe;
pub mod rcu;
