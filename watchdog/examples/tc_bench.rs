//! Per-packet cost of the TC peer programs, measured by the kernel with
//! BPF_PROG_TEST_RUN, minus the harness (a program that only returns). Run by
//! `cargo xtask bench tc` (needs root).
//!
//! `tc_bench [--rounds R] [--repeat N] [--baseline OBJECT]`: with `--baseline`, the same
//! cases also run on another build of the eBPF object (e.g. the previous commit's), rounds
//! interleaving the two, so before and after are measured side by side.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
};

use anyhow::{Context as _, bail};
use aya::{Ebpf, EbpfLoader, programs::SchedClassifier};
use watchdog_common::{
    PeerKey, TcConfig,
    names::{globals, programs},
    peer_cache_slot,
};

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `union bpf_attr` as BPF_PROG_LOAD reads it (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a bpf_attr prefix of the size passed; pointers in it outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The harness alone: a classifier that returns TC_ACT_UNSPEC and does nothing else.
fn harness() -> anyhow::Result<OwnedFd> {
    // r0 = -1 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT).
    let insns: [u64; 2] = [0xb7 | (0xffff_ffffu64 << 32), 0x95];
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..7].copy_from_slice(b"harness");
    let fd = bpf(BPF_PROG_LOAD, &mut attr).context("loading the harness program")?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs the program `repeat` times on `packet`; returns nanoseconds per run.
fn test_run(fd: i32, packet: &[u8], repeat: u32) -> anyhow::Result<u32> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok(attr.duration)
}

/// An Ethernet frame: IPv4 (or IPv6) + UDP to `dport`, `payload` bytes, from and to `addr`
/// (so the peer is `addr` on egress and on ingress alike).
fn frame(addr: std::net::IpAddr, dport: u16, payload: usize) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let udp_len = 8 + payload;
    match addr {
        std::net::IpAddr::V6(addr) => {
            frame.extend([0x86, 0xdd]);
            frame.extend([0x60, 0, 0, 0]);
            frame.extend((udp_len as u16).to_be_bytes());
            frame.extend([17, 64]);
            frame.extend(addr.octets());
            frame.extend(addr.octets());
        }
        std::net::IpAddr::V4(addr) => {
            frame.extend([0x08, 0x00]);
            frame.extend([0x45, 0]);
            frame.extend(((20 + udp_len) as u16).to_be_bytes());
            frame.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
            frame.extend(addr.octets());
            frame.extend(addr.octets());
        }
    }
    frame.extend(40000u16.to_be_bytes());
    frame.extend(dport.to_be_bytes());
    frame.extend((udp_len as u16).to_be_bytes());
    frame.extend([0, 0]);
    frame.extend(std::iter::repeat_n(0u8, payload));
    frame
}

/// An IPv4 `frame` with another protocol number (the bytes after the header unchanged).
fn with_protocol(mut frame: Vec<u8>, protocol: u8) -> Vec<u8> {
    frame[14 + 9] = protocol;
    frame
}

/// An ICMP host unreachable from `from` about a UDP datagram to `dst`: what the ingress
/// program records in `ICMP_ERRORS`.
fn host_unreachable(from: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Vec<u8> {
    let original = &frame(std::net::IpAddr::V4(dst), 8125, 0)[14..];
    let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(original);
    // A frame of the right length, its UDP header and payload replaced by the ICMP message.
    let mut frame = frame(std::net::IpAddr::V4(from), 0, icmp.len() - 8);
    frame.truncate(14 + 20);
    frame.extend(icmp);
    with_protocol(frame, 1)
}

/// The cache slot of IPv4 peer `addr` on interface `ifindex`.
fn slot(addr: std::net::Ipv4Addr, ifindex: u32) -> u32 {
    let mut key = PeerKey {
        ifindex,
        family: 4,
        ..PeerKey::default()
    };
    key.addr[..4].copy_from_slice(&addr.octets());
    peer_cache_slot(key.words())
}

/// How packets are fed to the program.
enum Feed {
    /// The same packet `repeat` times in one BPF_PROG_TEST_RUN (consecutive packets to
    /// one peer: the common case).
    Repeat(Vec<u8>),
    /// One packet per BPF_PROG_TEST_RUN, cycling through these.
    Each(Vec<Vec<u8>>),
}

struct Case {
    label: &'static str,
    feed: Feed,
}

fn cases() -> anyhow::Result<Vec<Case>> {
    use std::net::{IpAddr, Ipv4Addr};
    // BPF_PROG_TEST_RUN runs on the loopback device of the caller's namespace.
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if lo == 0 {
        bail!("no loopback interface");
    }
    let a = Ipv4Addr::new(10, 0, 0, 2);
    let b = (0..=u16::MAX)
        .map(|n| Ipv4Addr::new(10, 1, (n >> 8) as u8, n as u8))
        .find(|b| slot(*b, lo) == slot(a, lo))
        .context("no address shares a's cache slot")?;
    let new_peers = (0..65_536u32)
        .map(|n| frame(IpAddr::V4(Ipv4Addr::from(0x0a80_0000 + n)), 7777, 64))
        .collect();
    Ok(vec![
        Case {
            label: "IPv4 UDP 64 B, recent peer",
            feed: Feed::Repeat(frame(IpAddr::V4(a), 7777, 64)),
        },
        Case {
            label: "IPv6 UDP 64 B, recent peer",
            feed: Feed::Repeat(frame("fd00::2".parse()?, 7777, 64)),
        },
        Case {
            label: "IPv4 VXLAN 1400 B, recent peer",
            feed: Feed::Repeat(frame(IpAddr::V4(a), 8472, 1400)),
        },
        Case {
            label: "IPv4 TCP 64 B, recent peer",
            feed: Feed::Repeat(with_protocol(frame(IpAddr::V4(a), 7777, 64), 6)),
        },
        Case {
            label: "IPv4 ICMP host unreachable",
            feed: Feed::Repeat(host_unreachable(a, Ipv4Addr::new(10, 244, 2, 77))),
        },
        Case {
            label: "IPv4, 2 peers alternating, 1 slot",
            feed: Feed::Each(vec![
                frame(IpAddr::V4(a), 7777, 64),
                frame(IpAddr::V4(b), 7777, 64),
            ]),
        },
        Case {
            label: "IPv4, new peer each packet",
            feed: Feed::Each(new_peers),
        },
    ])
}

/// One build of the programs, loaded as the daemon configures them on this kernel.
struct Object {
    name: &'static str,
    _ebpf: Option<Ebpf>,
    /// (program name, fd)
    programs: Vec<(&'static str, i32)>,
    info: Vec<(&'static str, aya::programs::ProgramInfo)>,
}

const PROGRAMS: [&str; 2] = [programs::PEERS_EGRESS, programs::PEERS_INGRESS];

fn load(name: &'static str, bytes: &[u8], cache: bool) -> anyhow::Result<Object> {
    let config = TcConfig {
        coarse_clock: u32::from(
            aya::util::KernelVersion::current()
                .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 11, 0)),
        ),
        peer_cache: u32::from(cache && watchdog::sources::probes::peers::cache_supported()),
        ..TcConfig::DEFAULT
    };
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global(globals::TC_CONFIG, &config, true)
        .load(bytes)
        .with_context(|| format!("loading the {name} eBPF object (run as root)"))?;
    let mut programs = Vec::new();
    let mut info = Vec::new();
    for program in PROGRAMS {
        let classifier: &mut SchedClassifier = ebpf
            .program_mut(program)
            .with_context(|| format!("{name}: no {program}"))?
            .try_into()?;
        classifier
            .load()
            .with_context(|| format!("{name}: the kernel rejected {program}"))?;
        programs.push((program, classifier.fd()?.as_fd().as_raw_fd()));
        info.push((program, classifier.info()?));
    }
    Ok(Object {
        name,
        _ebpf: Some(ebpf),
        programs,
        info,
    })
}

/// Nanoseconds per packet of `fd` on `case`.
fn measure(fd: i32, case: &Case, repeat: u32) -> anyhow::Result<f64> {
    match &case.feed {
        Feed::Repeat(packet) => {
            // The first run inserts the peer; the timed runs update it, the steady state.
            test_run(fd, packet, 1)?;
            Ok(f64::from(test_run(fd, packet, repeat)?))
        }
        Feed::Each(packets) => {
            let mut total = 0u64;
            let runs = packets.len().max(repeat as usize / 50);
            for packet in packets.iter().cycle().take(runs) {
                total += u64::from(test_run(fd, packet, 1)?);
            }
            Ok(total as f64 / runs as f64)
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Keeps this thread on one CPU: the per-CPU cache and the timings stay on it.
fn pin_to_one_cpu() -> anyhow::Result<usize> {
    // SAFETY: sched_getcpu has no preconditions; cpu_set_t is plain data.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            bail!("sched_getcpu: {}", std::io::Error::last_os_error());
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
        Ok(cpu as usize)
    }
}

struct Args {
    rounds: usize,
    repeat: u32,
    baseline: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 7,
        repeat: 1_000_000,
        baseline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
            "--repeat" => args.repeat = value()?.parse().context("--repeat")?,
            "--baseline" => args.baseline = Some(value()?.into()),
            _ => bail!("usage: tc_bench [--rounds R] [--repeat N] [--baseline OBJECT]"),
        }
    }
    if args.rounds == 0 || args.repeat == 0 {
        bail!("--rounds and --repeat must be at least 1");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let cpu = pin_to_one_cpu()?;
    let cases = cases()?;
    let harness_fd = harness()?;
    let harness = Object {
        name: "harness",
        _ebpf: None,
        programs: PROGRAMS
            .iter()
            .map(|p| (*p, harness_fd.as_raw_fd()))
            .collect(),
        info: Vec::new(),
    };
    let mut objects = vec![harness];
    let baseline_bytes;
    if let Some(path) = &args.baseline {
        baseline_bytes =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        // Both ways, as this tree's object below: before/after pairs with and without it.
        objects.push(load("before nc", &baseline_bytes, false)?);
        objects.push(load("before", &baseline_bytes, true)?);
    }
    // The cache off: what the program costs where the reader cannot freeze it.
    objects.push(load(
        "after nc",
        watchdog::sources::probes::EBPF_OBJECT,
        false,
    )?);
    objects.push(load("after", watchdog::sources::probes::EBPF_OBJECT, true)?);

    // samples[object][program][case]
    let mut samples = vec![vec![vec![Vec::new(); cases.len()]; PROGRAMS.len()]; objects.len()];
    eprintln!(
        "tc_bench: {} rounds on CPU {cpu}, {} runs per repeated case",
        args.rounds, args.repeat
    );
    for round in 0..args.rounds {
        // Rotate the order so no object always runs first (or right after another).
        for i in 0..objects.len() {
            let o = (i + round) % objects.len();
            for (p, (_, fd)) in objects[o].programs.iter().enumerate() {
                for (c, case) in cases.iter().enumerate() {
                    samples[o][p][c].push(measure(*fd, case, args.repeat)?);
                }
            }
        }
    }
    let medians: Vec<Vec<Vec<f64>>> = samples
        .iter_mut()
        .map(|o| {
            o.iter_mut()
                .map(|p| p.iter_mut().map(|c| median(c)).collect())
                .collect()
        })
        .collect();

    println!(
        "TC peer programs, BPF_PROG_TEST_RUN on one CPU, median of {} rounds, ns per packet \
         (the harness, a program that only returns, subtracted; nc: the per-CPU cache off, \
         as where the reader cannot freeze it):",
        args.rounds
    );
    print!("  {:<14} {:<36} {:>8}", "program", "case", "harness");
    for object in &objects[1..] {
        print!(" {:>9}", object.name);
    }
    println!();
    for (p, program) in PROGRAMS.iter().enumerate() {
        for (c, case) in cases.iter().enumerate() {
            let harness = medians[0][p][c];
            print!("  {program:<14} {:<36} {harness:>8.1}", case.label);
            for object in &medians[1..] {
                print!(" {:>9.1}", object[p][c] - harness);
            }
            println!();
        }
    }
    println!("instructions (xlated: after the verifier's rewrites; jited: bytes of machine code):");
    for object in &objects[1..] {
        for (program, info) in &object.info {
            println!(
                "  {:<9} {program:<14} xlated {:>5} insns  jited {:>6} bytes  verifier processed {:>6}",
                object.name,
                info.size_translated().unwrap_or(0) / 8,
                info.size_jitted(),
                info.verified_instruction_count()
                    .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            );
        }
    }
    Ok(())
}
