//! Builds `watchdog-ebpf` for the BPF target and leaves the object in OUT_DIR, where
//! `src/probes` embeds it with `include_bytes_aligned!`.
//!
//! Needs `bpf-linker` on PATH and the rust-src component (`cargo xtask setup` installs both).
//! The eBPF crate needs `-Z build-std=core`; on a stable toolchain that is allowed by
//! RUSTC_BOOTSTRAP=1, which we set for the nested cargo only.

use anyhow::{Context as _, anyhow};
use object::build::elf::SectionData;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=RUSTUP_TOOLCHAIN");
    add_cargo_bin_to_path();
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
    share_ebpf_target_dir();
    let package = aya_build::Package {
        name: "watchdog-ebpf",
        root_dir: "../watchdog-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain))
        .context("building the eBPF programs (watchdog-ebpf) failed")?;
    if let Some(out_dir) = std::env::var_os("OUT_DIR") {
        strip_dwarf(&std::path::Path::new(&out_dir).join("watchdog-ebpf"))?;
    }
    pack_relative_relocations();
    Ok(())
}

/// Removes the DWARF sections (`.debug_*` and their relocations) from the eBPF object the
/// daemon embeds: bpf-linker needs the eBPF crate's debuginfo to write BTF, but the daemon
/// loads only the programs, maps, `.BTF` and `.BTF.ext`; the DWARF was four fifths of the
/// object (449 → 81 KB), embedded in the executable and read by aya's parser at start-up.
/// Without the object (`AYA_BUILD_SKIP`), nothing to do.
fn strip_dwarf(object: &std::path::Path) -> anyhow::Result<()> {
    let Ok(data) = std::fs::read(object) else {
        return Ok(());
    };
    let mut builder = object::build::elf::Builder::read(&*data)
        .with_context(|| format!("{}: not an ELF object", object.display()))?;
    let dwarf = |name: &[u8]| {
        [&b".debug_"[..], b".rel.debug_", b".rela.debug_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    for section in builder.sections.iter_mut() {
        if dwarf(section.name.as_slice()) {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    // LLVM names the sections from the symbols' `.strtab`; the writer wants its own table.
    let has_section_names = builder
        .sections
        .iter()
        .any(|section| matches!(section.data, SectionData::SectionString));
    if !has_section_names {
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = object::elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = SectionData::SectionString;
    }
    let mut stripped = Vec::new();
    builder
        .write(&mut stripped)
        .with_context(|| format!("{}: writing it without DWARF failed", object.display()))?;
    std::fs::write(object, stripped).with_context(|| format!("{}", object.display()))
}

/// Links the daemon with packed relative relocations (`DT_RELR`, glibc 2.36+): a PIE's
/// relative relocations, one 24-byte entry each in `.rela.dyn` (417 KB, read whole by the
/// dynamic loader at every start), become a bitmap of a few KB. The image ships the glibc
/// it was built with; a binary for a host needs glibc 2.36 there (Debian 12, Ubuntu 22.10).
fn pack_relative_relocations() {
    let gnu_linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if gnu_linux {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Lets every build of this crate (dev, test, release, clippy's check, each target) share one
/// target directory for the nested eBPF build, `<target>/ebpf/<arch>`: aya-build puts it in
/// OUT_DIR (`OUT_DIR/aya-build/target/watchdog-ebpf`), which is new for each profile and
/// target, so each of them compiled `core` and the programs again (30–90 s each, five times
/// in a CI run). The nested cargo locks the shared directory and rebuilds it when the eBPF
/// sources change; one directory per architecture, as the programs' cfg differs.
/// Without a cargo target directory above OUT_DIR (no `CACHEDIR.TAG`), aya-build's default.
fn share_ebpf_target_dir() {
    let (Some(out_dir), Some(arch)) = (
        std::env::var_os("OUT_DIR"),
        std::env::var_os("CARGO_CFG_TARGET_ARCH"),
    ) else {
        return;
    };
    let out_dir = std::path::PathBuf::from(out_dir);
    let Some(target_dir) = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
    else {
        return;
    };
    let shared = target_dir.join("ebpf").join(arch);
    // aya-build 0.2's layout: `OUT_DIR/aya-build/target/<package>`.
    let link = out_dir.join("aya-build/target/watchdog-ebpf");
    if std::fs::read_link(&link).is_ok_and(|to| to == shared) {
        return;
    }
    if link.is_dir() && !link.is_symlink() {
        let _ = std::fs::remove_dir_all(&link);
    } else {
        let _ = std::fs::remove_file(&link);
    }
    let made = std::fs::create_dir_all(&shared)
        .and_then(|()| std::fs::create_dir_all(link.parent().expect("a parent")))
        .and_then(|()| std::os::unix::fs::symlink(&shared, &link));
    if let Err(err) = made {
        println!(
            "cargo:warning=cannot share the eBPF build at {}: {err}; building in OUT_DIR",
            shared.display()
        );
    }
}

/// `cargo install` puts bpf-linker in $CARGO_HOME/bin, which a bare PATH may lack.
fn add_cargo_bin_to_path() {
    let Some(cargo_home) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
        })
    else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    let bin = cargo_home.join("bin");
    if !dirs.contains(&bin) {
        dirs.push(bin);
        if let Ok(joined) = std::env::join_paths(dirs) {
            // SAFETY: single-threaded build script; the nested cargo inherits it.
            unsafe { std::env::set_var("PATH", joined) };
        }
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
