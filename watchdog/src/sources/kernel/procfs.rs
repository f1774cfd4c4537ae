//! Small reads about this process and its host: network namespace, page size, node name.

use std::os::unix::fs::MetadataExt as _;

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

/// A sysctl of this process's network namespace (`key` as under `/proc/sys`, e.g.
/// `net/ipv4/ip_forward_use_pmtu`); `None` when it cannot be read.
pub fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(std::path::Path::new("/proc/sys").join(key)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_namespace_and_page_size() {
        assert!(own_netns().unwrap() > 0);
        assert!(page_size().is_power_of_two());
    }
}
