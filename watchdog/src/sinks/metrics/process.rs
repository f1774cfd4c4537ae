//! `watchdog_process_*`: the daemon's own CPU time and resident memory, read from /proc on
//! each scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// CPU time and resident memory of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
}

/// Reads /proc/self/stat and /proc/self/statm; zeros where they cannot be read.
pub fn self_usage() -> Usage {
    let mut usage = Usage::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
                .sum();
            usage.cpu_seconds = ticks as f64 / sysconf(libc::_SC_CLK_TCK, 100) as f64;
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|pages| pages.parse().ok())
            .unwrap_or(0);
        usage.resident_bytes = pages * sysconf(libc::_SC_PAGESIZE, 4096);
    }
    usage
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

/// Encodes the process's usage on each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self_usage();
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "watchdog_process_cpu_seconds",
            "User and system CPU time of the watchdog process.",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(usage.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "watchdog_process_resident_memory_bytes",
            "Resident memory of the watchdog process.",
            None,
            rss.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let usage = self_usage();
        assert!(usage.resident_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
    }
}
