//! The daemon's own memory: what it holds (for the start-up log), and giving back the heap
//! only start-up used.
//!
//! Resident memory is anonymous (heap, stacks, written data: `RssAnon`) and file-backed
//! (the executable's code and constants: `RssFile`). Only the first is the daemon's to
//! give back: the executable's pages are clean, the kernel reclaims them under pressure
//! and reads them again when they run. Dropping them from the process's mapping after
//! start-up (which an earlier version did) lowered `VmRSS` but not what the machine needs;
//! a smaller binary is what lowers both.

/// Resident memory now and at its peak (`VmRSS`, `VmHWM`), in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// `VmRSS`.
    pub resident_kib: u64,
    /// `VmHWM`: the most ever resident.
    pub peak_kib: u64,
}

/// This process's [`Usage`], from `/proc/self/status`; `None` if it cannot be read.
pub fn usage() -> Option<Usage> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(Usage {
        resident_kib: status_kib(&status, "VmRSS:")?,
        peak_kib: status_kib(&status, "VmHWM:")?,
    })
}

/// A `kB` line of a `/proc/<pid>/status` text.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Logs (debug) the resident memory after a start-up step: `cargo xtask bench memory`
/// prints these lines as the start-up's steps.
pub fn log_step(step: &str) {
    if let Some(usage) = usage() {
        tracing::debug!(
            resident_kib = usage.resident_kib,
            peak_kib = usage.peak_kib,
            "memory after {step}"
        );
    }
}

/// Gives back what start-up held in the heap (its buffers were freed; the allocator would
/// keep their pages). Call once, when start-up is over.
pub fn release_start_up() {
    release_free_heap();
    log_step("start-up (its free heap released)");
}

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_usage() {
        let usage = usage().expect("/proc/self/status");
        assert!(usage.resident_kib > 0 && usage.peak_kib >= usage.resident_kib);
        assert_eq!(status_kib("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert_eq!(status_kib("VmHWM:\t  1 kB\n", "VmRSS:"), None);
    }

    #[test]
    fn releasing_the_free_heap_keeps_what_is_used() {
        let kept = vec![7u8; 1 << 20];
        drop(vec![1u8; 8 << 20]);
        release_start_up();
        assert!(kept.iter().all(|&b| b == 7));
        assert!(usage().is_some_and(|u| u.resident_kib > 0));
    }
}
