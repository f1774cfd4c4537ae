//! Cost of the TCP probe per connect: loopback connects per second with the probe's two
//! tracepoint programs detached and attached (rounds interleaved), and the programs' own
//! run time per connect from the kernel's BPF statistics. Run by `cargo xtask bench tcp`
//! (needs root).
//!
//! `tcp_bench [--seconds S] [--rounds R]`

use std::{
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    EbpfLoader,
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use watchdog::sources::{
    kernel::{btf::Btf, tracefs::Tracefs},
    probes::{KernelEnv, NetnsOffsets, tcp::Plan},
};
use watchdog_common::names::{globals, programs};

const PROGRAMS: [(&str, &str, &str); 2] = [
    (programs::INET_SOCK_SET_STATE, "sock", "inet_sock_set_state"),
    (programs::TCP_RETRANSMIT_SKB, "tcp", "tcp_retransmit_skb"),
];

/// Connects to `listener` and closes with a reset (no TIME_WAIT, so ports never run out)
/// for `period`; returns the number of connects.
fn storm(listener: &TcpListener, period: Duration) -> anyhow::Result<u64> {
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let mut connects = 0u64;
    while start.elapsed() < period {
        for _ in 0..100 {
            let stream = TcpStream::connect(addr).context("connect")?;
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and option buffer.
            unsafe {
                libc::setsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    size_of::<libc::linger>() as u32,
                );
            }
            drop(stream);
            connects += 1;
        }
    }
    Ok(connects)
}

/// A loopback listener with a deep accept queue (std's 128 overflows in a storm, and a
/// dropped SYN costs a second).
fn listen() -> anyhow::Result<TcpListener> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: plain socket calls on a descriptor we own until TcpListener takes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
            || libc::listen(fd, 4096) != 0
        {
            bail!("bind/listen: {}", std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut seconds = 2u64;
    let mut rounds = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--rounds" => rounds = value()?.parse().context("--rounds")?,
            _ => bail!("usage: tcp_bench [--seconds S] [--rounds R]"),
        }
    }
    let period = Duration::from_secs(seconds);

    // Configured as the daemon configures it: offsets from tracefs, this namespace only.
    let tracefs = Tracefs::locate().context("tracefs")?;
    let btf = Btf::from_file("/sys/kernel/btf/vmlinux".as_ref()).ok();
    let netns = btf
        .as_ref()
        .and_then(|btf| NetnsOffsets::from_btf(btf).ok());
    let own_netns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m) as u32)
        .context("own network namespace")?;
    let env = KernelEnv {
        tracefs: Some(&tracefs),
        btf: btf.as_ref(),
        filter_netns: Some(own_netns),
    };
    let plan = Plan::new(&env, netns.as_ref()).context("configuring the TCP probe")?;
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global(globals::TCP_CONFIG, &plan.config, true)
        .load(watchdog::sources::probes::EBPF_OBJECT)
        .context("loading the eBPF object (run as root)")?;
    for (name, _, _) in PROGRAMS {
        let program: &mut TracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
        program.load()?;
    }
    let mut links: [Option<TracePointLinkId>; 2] = [None, None];
    let mut attach = |on: bool| -> anyhow::Result<()> {
        for ((name, category, event), link) in PROGRAMS.iter().zip(&mut links) {
            let program: &mut TracePoint = ebpf.program_mut(name).context(*name)?.try_into()?;
            match link.take() {
                Some(id) if !on => program.detach(id)?,
                Some(id) => *link = Some(id),
                None if on => *link = Some(program.attach(category, event)?),
                None => {}
            }
        }
        Ok(())
    };

    let listener = listen()?;
    let acceptor = listener.try_clone()?;
    std::thread::spawn(move || {
        for stream in acceptor.incoming() {
            drop(stream);
        }
    });

    eprintln!("tcp_bench: {rounds} rounds x (detached, attached) x {period:?}");
    let (mut detached, mut attached) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which setup runs first, so a drifting machine load favours neither.
        for on in [round % 2 == 1, round % 2 == 0] {
            attach(on)?;
            let rate = storm(&listener, period)? as f64 / period.as_secs_f64();
            if on { &mut attached } else { &mut detached }.push(rate);
        }
        attach(false)?;
        eprintln!(
            "  round {}: detached {:.0}/s, attached {:.0}/s",
            round + 1,
            detached.last().unwrap(),
            attached.last().unwrap()
        );
    }

    // The programs' own time, from the kernel's run-time statistics (on while `stats` lives).
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    attach(true)?;
    let totals = |ebpf: &aya::Ebpf| -> anyhow::Result<(u64, u64)> {
        let mut sum = (0, 0);
        for (name, _, _) in PROGRAMS {
            let info = ebpf.program(name).context(name)?.info()?;
            sum.0 += info.run_time().as_nanos() as u64;
            sum.1 += info.run_count();
        }
        Ok(sum)
    };
    let before = totals(&ebpf)?;
    let connects = storm(&listener, period)?;
    let after = totals(&ebpf)?;
    drop(stats);

    let (detached, attached) = (median(&mut detached), median(&mut attached));
    println!(
        "TCP probe, loopback connects (reset on close), median of {rounds} rounds of {period:?}:"
    );
    println!("  probe detached   {detached:>10.0} connects/s");
    println!(
        "  probe attached   {attached:>10.0} connects/s   ratio {:.3}   {:+.0} ns per connect",
        attached / detached,
        1e9 / attached - 1e9 / detached
    );
    let (runs, ns) = (after.1 - before.1, after.0 - before.0);
    println!(
        "  programs' own time (BPF stats, {connects} connects): {:.0} ns per connect, {:.1} runs \
         per connect, {:.0} ns per run",
        ns as f64 / connects as f64,
        runs as f64 / connects as f64,
        ns as f64 / runs.max(1) as f64
    );
    Ok(())
}
