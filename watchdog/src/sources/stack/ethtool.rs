//! A device's checksum offload features through the ethtool ioctl (`SIOCETHTOOL`): the
//! feature names (`ETH_SS_FEATURES` strings) and which are active (`ETHTOOL_GFEATURES`),
//! as `ethtool -k` shows them. Read only for devices checksum drops were seen on.

use std::{collections::BTreeMap, io, mem, os::fd::AsRawFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with `ifr_data`.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The checksum features of `dev` (names with `checksum` or `csum`), on or off.
pub fn checksum_features(dev: &str) -> io::Result<BTreeMap<String, bool>> {
    // SAFETY: plain socket(2); owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let count = feature_count(&socket, dev)?;
    let names = feature_names(&socket, dev, count)?;
    let active = active_features(&socket, dev, count)?;
    Ok(names
        .into_iter()
        .enumerate()
        .filter(|(_, name)| name.contains("checksum") || name.contains("csum"))
        .map(|(i, name)| (name, active.get(i).copied().unwrap_or(false)))
        .collect())
}

/// Runs one `SIOCETHTOOL` command whose buffer is `data`.
fn ethtool(socket: &impl AsRawFd, dev: &str, data: &mut [u8]) -> io::Result<()> {
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{dev:?} is no interface name"),
        ));
    }
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: data.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    for (slot, byte) in request.name.iter_mut().zip(dev.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: SIOCETHTOOL with a valid ifreq whose data points at a buffer the command
    // fits in (each caller sizes it for its command).
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn feature_count(socket: &impl AsRawFd, dev: &str) -> io::Result<usize> {
    // struct ethtool_sset_info: cmd, reserved, sset_mask (u64), data[1] (u32).
    let mut buffer = [0u8; 4 + 4 + 8 + 4];
    buffer[0..4].copy_from_slice(&ETHTOOL_GSSET_INFO.to_ne_bytes());
    buffer[8..16].copy_from_slice(&(1u64 << ETH_SS_FEATURES).to_ne_bytes());
    ethtool(socket, dev, &mut buffer)?;
    let mask = u64::from_ne_bytes(buffer[8..16].try_into().expect("8"));
    if mask & (1 << ETH_SS_FEATURES) == 0 {
        return Ok(0);
    }
    Ok(u32::from_ne_bytes(buffer[16..20].try_into().expect("4")) as usize)
}

fn feature_names(socket: &impl AsRawFd, dev: &str, count: usize) -> io::Result<Vec<String>> {
    // struct ethtool_gstrings: cmd, string_set, len, data[len * ETH_GSTRING_LEN].
    let mut buffer = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    buffer[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    buffer[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    buffer[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ethtool(socket, dev, &mut buffer)?;
    Ok(buffer[12..]
        .chunks(ETH_GSTRING_LEN)
        .map(|name| {
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect())
}

fn active_features(socket: &impl AsRawFd, dev: &str, count: usize) -> io::Result<Vec<bool>> {
    // struct ethtool_gfeatures: cmd, size (blocks), features[size] (4 × u32 each:
    // available, requested, active, never_changed).
    let blocks = count.div_ceil(32);
    let block = 4 * mem::size_of::<u32>();
    let mut buffer = vec![0u8; 8 + blocks * block];
    buffer[0..4].copy_from_slice(&ETHTOOL_GFEATURES.to_ne_bytes());
    buffer[4..8].copy_from_slice(&(blocks as u32).to_ne_bytes());
    ethtool(socket, dev, &mut buffer)?;
    Ok((0..count)
        .map(|i| {
            let at = 8 + (i / 32) * block + 8;
            let active = u32::from_ne_bytes(buffer[at..at + 4].try_into().expect("4"));
            active & (1 << (i % 32)) != 0
        })
        .collect())
}

#[cfg(test)]
mod tests {
    /// Loopback is in every namespace and has checksum features (no privilege needed).
    #[test]
    fn loopback_has_checksum_features() {
        let features = super::checksum_features("lo").unwrap();
        assert!(features.contains_key("rx-checksum"), "{features:?}");
        assert!(
            features.keys().any(|name| name.starts_with("tx-checksum")),
            "{features:?}"
        );
        assert!(super::checksum_features("nosuchdevice0").is_err());
    }
}
