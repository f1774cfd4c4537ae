//! The watchdog's eBPF programs, linked into one object that the daemon embeds.
//!
//! Programs only count into bounded maps; nothing per-packet crosses to userspace.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

/// Fails the build when an item's name in the object (its identifier) differs from the
/// shared name in `watchdog_common::names`, which the daemon asks for.
#[cfg(target_arch = "bpf")]
macro_rules! named {
    ($item:ident, $name:expr) => {
        const _: () = assert!(watchdog_common::same_name(stringify!($item), $name));
    };
}

#[cfg(target_arch = "bpf")]
mod kfree_skb;
#[cfg(target_arch = "bpf")]
mod peers;
#[cfg(target_arch = "bpf")]
mod percpu;
#[cfg(target_arch = "bpf")]
mod tcp;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// "Dual MIT/GPL" is GPL-compatible, which `bpf_probe_read_kernel` requires.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Host builds (e.g. `cargo clippy --workspace`) get an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
