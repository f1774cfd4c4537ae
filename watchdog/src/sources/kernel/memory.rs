//! The daemon's own memory: what it holds (for the start-up log), and giving back what
//! only start-up needed.
//!
//! Most of an idle daemon's resident memory is its own executable: code and read-only data
//! mapped from the file. Start-up runs code that never runs again (the command line, the
//! config, the BTF lookups, parsing and loading the eBPF object, the first dumps) and
//! leaves it mapped: measured on x86_64, 8.6 MiB of the binary resident after start-up,
//! of which 2.5 MiB were used again in the next 30 s. [`release_start_up`] unmaps the
//! executable's read-only pages once start-up is over; what the daemon still runs comes
//! back from the file on first use (a minor fault while the page is cached).

use std::{
    ffi::{c_int, c_void},
    ops::Range,
};

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

/// Gives back what start-up held: the allocator's free pages, and the mappings of the
/// executable's read-only segments (code, constants), which the daemon faults back in as
/// it runs them. Call once, when start-up is over.
pub fn release_start_up() {
    release_free_heap();
    for range in read_only_segments() {
        let len = range.end - range.start;
        let start = range.start as *mut c_void;
        // MADV_PAGEOUT reclaims the pages nothing else maps (the page cache copy too);
        // MADV_DONTNEED then drops this process's mapping of any it could not (e.g. a
        // binary on tmpfs without swap, or a kernel before 5.4). Both are hints on pages
        // that were never written: a later access reads them from the file again.
        for advice in [libc::MADV_PAGEOUT, libc::MADV_DONTNEED] {
            // SAFETY: the range is whole pages of this executable's own read-only,
            // file-backed segments (never written, so nothing is lost).
            let _ = unsafe { libc::madvise(start, len, advice) };
        }
    }
    log_step("start-up (its code and free heap released)");
}

/// Returns freed heap pages to the kernel (glibc keeps them otherwise).
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The whole pages of the executable's loadable segments that are not writable (neither
/// data nor relocated data, which live in writable segments).
fn read_only_segments() -> Vec<Range<usize>> {
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the call, and `data` is the
        // `Vec` below.
        let (info, segments) = unsafe { (&*info, &mut *data.cast::<Vec<Range<usize>>>()) };
        let page = super::procfs::page_size() as usize;
        for i in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
            let header = unsafe { &*info.dlpi_phdr.add(i) };
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = info.dlpi_addr as usize + header.p_vaddr as usize;
            let end = start + header.p_memsz as usize;
            // Only pages wholly inside the segment.
            let range = start.next_multiple_of(page)..end / page * page;
            if range.start < range.end {
                segments.push(range);
            }
        }
        1 // The first object is the executable: stop.
    }
    let mut segments: Vec<Range<usize>> = Vec::new();
    // SAFETY: the callback only reads what the loader passes and writes `segments`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            (&mut segments as *mut Vec<Range<usize>>).cast(),
        );
    }
    segments
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
    fn the_executable_has_read_only_segments_holding_this_code() {
        let segments = read_only_segments();
        let here = the_executable_has_read_only_segments_holding_this_code as *const () as usize;
        assert!(
            segments.iter().any(|s| s.contains(&here)),
            "{here:#x} in none of {segments:x?}"
        );
        let page = crate::sources::kernel::procfs::page_size() as usize;
        assert!(
            segments
                .iter()
                .all(|s| s.start % page == 0 && s.end % page == 0)
        );
    }

    /// Released code and constants are there again when used (read from the file).
    #[test]
    fn released_code_still_runs() {
        release_start_up();
        assert!(usage().is_some_and(|u| u.resident_kib > 0));
        assert!(format!("{:?}", Usage::default()).contains("resident_kib: 0"));
    }
}
