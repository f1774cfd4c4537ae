//! Builds `watchdog-ebpf` for the BPF target and leaves the object in OUT_DIR, where
//! `src/probes` embeds it with `include_bytes_aligned!`.
//!
//! Needs `bpf-linker` on PATH and the rust-src component (`cargo xtask setup` installs both).
//! The eBPF crate needs `-Z build-std=core`; on a stable toolchain that is allowed by
//! RUSTC_BOOTSTRAP=1, which we set for the nested cargo only.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    if std::env::var_os("AYA_BUILD_SKIP").is_none() && which("bpf-linker").is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it builds bpf-linker against \
             rustc's own LLVM), or add ~/.cargo/bin to PATH"
        ));
    }
    // SAFETY: build scripts are single-threaded here; aya-build reads the variable and passes
    // it to the nested `cargo build` of the eBPF crate.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    let package = aya_build::Package {
        name: "watchdog-ebpf",
        root_dir: "../watchdog-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
        .context("building the eBPF programs (watchdog-ebpf) failed")
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
