//! Small reads from /proc about this process and its network namespace.

use std::os::unix::fs::MetadataExt as _;

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
        usage.resident_bytes = pages * page_size();
    }
    usage
}

/// The runtime page size (16 KiB on Raspberry Pi 5 kernels).
pub fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE, 4096)
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .unwrap_or(fallback)
}

/// The inode number of this process's network namespace, as the kernel's `ns.inum`.
pub fn own_netns() -> std::io::Result<u32> {
    let inode = std::fs::metadata("/proc/self/ns/net")?.ino();
    u32::try_from(inode).map_err(|_| std::io::Error::other("namespace inode beyond 32 bits"))
}

/// This node's name: `NODE_NAME` (set from the Kubernetes downward API), else the host
/// name.
pub fn node_name() -> String {
    if let Ok(name) = std::env::var("NODE_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage_and_namespace() {
        let usage = self_usage();
        assert!(usage.resident_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
        assert!(own_netns().unwrap() > 0);
        assert!(page_size().is_power_of_two());
    }
}
