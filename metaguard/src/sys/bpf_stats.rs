//! `kernel.bpf_stats_enabled`, switched for a measurement (benches, the
//! hook study) and put back afterwards.

const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets `kernel.bpf_stats_enabled`; restores the old value on drop.
/// Latency is measured with it off whatever the machine had: with it on,
/// every program run pays two clock reads, charged to the filter.
pub struct StatsSwitch(String);

impl StatsSwitch {
    pub fn on() -> StatsSwitch {
        StatsSwitch::set("1")
    }

    pub fn off() -> StatsSwitch {
        StatsSwitch::set("0")
    }

    fn set(value: &str) -> StatsSwitch {
        let old = std::fs::read_to_string(PATH).unwrap_or_else(|_| "0".into());
        let _ = std::fs::write(PATH, value);
        StatsSwitch(old.trim().to_string())
    }
}

impl Drop for StatsSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(PATH, &self.0);
    }
}
