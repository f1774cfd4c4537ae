//! Per-packet cost of the TC peer programs, measured by the kernel with
//! BPF_PROG_TEST_RUN. Run by `cargo xtask bench tc` (needs root).

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{Context as _, bail};
use aya::{EbpfLoader, programs::SchedClassifier};

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

const BPF_PROG_TEST_RUN: libc::c_long = 10;

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
    // SAFETY: attr and both buffers outlive the call; sizes match the buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if rc != 0 {
        bail!("BPF_PROG_TEST_RUN: {}", std::io::Error::last_os_error());
    }
    Ok(attr.duration)
}

/// An Ethernet frame: IPv4 (or IPv6) + UDP to `dport`, `payload` bytes.
fn frame(ipv6: bool, dport: u16, payload: usize) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let udp_len = 8 + payload;
    if ipv6 {
        frame.extend([0x86, 0xdd]);
        frame.extend([0x60, 0, 0, 0]);
        frame.extend((udp_len as u16).to_be_bytes());
        frame.extend([17, 64]);
        frame.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        frame.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        frame.extend([0x08, 0x00]);
        frame.extend([0x45, 0]);
        frame.extend(((20 + udp_len) as u16).to_be_bytes());
        frame.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend([10, 0, 0, 1, 10, 0, 0, 2]);
    }
    frame.extend(40000u16.to_be_bytes());
    frame.extend(dport.to_be_bytes());
    frame.extend((udp_len as u16).to_be_bytes());
    frame.extend([0, 0]);
    frame.extend(std::iter::repeat_n(0u8, payload));
    frame
}

fn main() -> anyhow::Result<()> {
    let repeat: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()
        .context("the argument is the repeat count")?
        .unwrap_or(1_000_000);
    // As the daemon configures it on this kernel (5.11+: the coarse clock).
    let config = watchdog_common::TcConfig {
        coarse_clock: 1,
        ..watchdog_common::TcConfig::DEFAULT
    };
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global("TC_CONFIG", &config, true)
        .load(watchdog::sources::probes::EBPF_OBJECT)
        .context("loading the eBPF object (run as root)")?;
    let cases = [
        ("IPv4 UDP 64 B", frame(false, 7777, 64)),
        ("IPv6 UDP 64 B", frame(true, 7777, 64)),
        ("IPv4 VXLAN (UDP 8472) 1400 B", frame(false, 8472, 1400)),
    ];
    println!("TC peer program cost, BPF_PROG_TEST_RUN, {repeat} runs each (ns per packet):");
    for program in ["peers_egress", "peers_ingress"] {
        let classifier: &mut SchedClassifier = ebpf
            .program_mut(program)
            .context("program missing")?
            .try_into()?;
        classifier.load()?;
        let fd = classifier.fd()?.as_fd().as_raw_fd();
        for (label, packet) in &cases {
            // The first run inserts the peer; the timed runs update it, the steady state.
            test_run(fd, packet, 1)?;
            let ns = test_run(fd, packet, repeat)?;
            println!("  {program:<14} {label:<30} {ns:>5} ns");
        }
    }
    Ok(())
}
