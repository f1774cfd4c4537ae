//! The measuring half of `cargo xtask bench mirror` (built in release, run inside the
//! bench's namespace): loads the network mirror, reports load time and memory, times
//! longest-prefix lookups, then runs `ip -batch <changes>` and reports how long the mirror
//! takes to reflect every change.
//!
//! Usage: `mirror_bench <ip-batch-file>`; each line `route replace <prefix> via <gateway>
//! …` of the file names a main-table route (metric 0) that must end up via `<gateway>`.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{IpAddr, Ipv4Addr},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use watchdog::{
    model::net::{Prefix, TABLE_MAIN},
    sources::mirror::Mirror,
};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let batch = args.next().ok_or("usage: mirror_bench <ip-batch-file>")?;
    let text = std::fs::read_to_string(&batch)?;
    let mut changes: Vec<(Prefix, IpAddr)> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["route", "replace", prefix, "via", gateway, ..] = words[..] {
            changes.push((prefix.parse()?, gateway.parse()?));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let rss_before = rss_kib();
        let heap_before = ALLOCATED.load(Ordering::Relaxed);
        let begin = Instant::now();
        let (mirror, _task) = Mirror::start().await?;
        let load = begin.elapsed();
        // Let the runtime drop the dump connection (aborted when the load ended).
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let rss_loaded = rss_kib();
        // Give freed dump buffers back to the kernel, to see what the snapshot keeps.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
        let rss_trimmed = rss_kib();
        let heap = ALLOCATED.load(Ordering::Relaxed) - heap_before;
        let counts = mirror.with_snapshot(|s| s.counts());
        println!("  initial load        {:>10.1} ms  ({counts:?})", ms(load));
        println!(
            "  memory (RSS delta)  {:>10.1} MiB  ({} KiB before, {} KiB after)",
            (rss_loaded - rss_before.min(rss_loaded)) as f64 / 1024.0,
            rss_before,
            rss_loaded
        );
        println!(
            "  heap in use         {:>10.1} MiB  (bytes allocated by the mirror after the load)",
            heap as f64 / (1 << 20) as f64
        );
        println!(
            "  memory kept         {:>10.1} MiB  (RSS delta after malloc_trim; {} B per Route)",
            (rss_trimmed - rss_before.min(rss_trimmed)) as f64 / 1024.0,
            std::mem::size_of::<watchdog::model::net::Route>()
        );

        let lookups = 1_000_000u32;
        let begin = Instant::now();
        let mut hits = 0u32;
        mirror.with_snapshot(|s| {
            for i in 0..lookups {
                // Spread over 20.0.0.0/8–21.255.255.255 and beyond (default route).
                let addr =
                    Ipv4Addr::from(0x1400_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761) >> 6));
                hits += u32::from(s.lookup(IpAddr::V4(addr)).is_some());
            }
        });
        let elapsed = begin.elapsed();
        println!(
            "  LPM lookup          {:>10.0} ns each ({lookups} lookups, {hits} matched)",
            elapsed.as_nanos() as f64 / f64::from(lookups)
        );

        let mut changed = mirror.subscribe();
        let pending = |mirror: &Mirror| {
            mirror.with_snapshot(|s| {
                changes
                    .iter()
                    .filter(|(dst, gateway)| {
                        s.route(TABLE_MAIN, dst, 0)
                            .is_none_or(|r| r.gateway != Some(*gateway))
                    })
                    .count()
            })
        };
        let updates_before = mirror.stats().updates;
        let begin = Instant::now();
        let mut ip = Command::new("ip").args(["-batch", &batch]).spawn()?;
        let deadline = begin + Duration::from_secs(120);
        let mut left = changes.len();
        while left > 0 && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), changed.changed()).await;
            left = pending(&mirror);
        }
        let reflected = begin.elapsed();
        let status = ip.wait()?;
        let ip_done = begin.elapsed();
        let stats = mirror.stats();
        println!(
            "  burst of {} route replaces: `ip -batch` took {:.1} ms, the mirror reflected all \
             of them after {:.1} ms{}",
            changes.len(),
            ms(ip_done),
            ms(reflected),
            if left > 0 {
                format!(" (NOT ALL: {left} missing after 120 s)")
            } else {
                String::new()
            }
        );
        println!(
            "  notifications applied {}, reloads after overrun {}, RSS now {} KiB",
            stats.updates - updates_before,
            stats.resyncs_overrun,
            rss_kib()
        );
        if !status.success() {
            return Err(format!("ip -batch failed: {status}").into());
        }
        if left > 0 {
            return Err("the mirror missed changes".into());
        }
        Ok(())
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
