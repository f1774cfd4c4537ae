//! An `aya::EbpfLoader` that has not read the kernel's BTF.
//!
//! aya 0.14's `EbpfLoader::new()` reads `/sys/kernel/btf/vmlinux` whole and parses it
//! (aya-rs/aya#1172): 5 MiB read and 14 MiB of parsed types on a distribution kernel, more
//! than the rest of the daemon holds at start-up, thrown away a moment later when
//! `.btf(None)` says it is not wanted (the programs are classic tracepoints and TC
//! programs: no CO-RE). The constructor offers no way to skip it. So the loader is made
//! while this thread may not allocate [`LARGE`] bytes or more: `std::fs::read` asks for the
//! file's size at once, cannot get it, and returns an error, which aya takes as "no kernel
//! BTF". Everything else the constructor allocates is a few bytes.
//!
//! The refusal is this thread's and lasts only the constructor's call; other threads and
//! every other allocation go to the system allocator unchanged. It needs [`Allocator`] as
//! the program's global allocator (the `watchdog` binary installs it); under another one
//! the loader is made the way aya makes it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

/// Allocations this large are refused while a thread is in [`without_kernel_btf`].
pub const LARGE: usize = 1 << 20;

thread_local! {
    static REFUSE_LARGE: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, except inside [`without_kernel_btf`]: the `watchdog` binary's
/// global allocator.
pub struct Allocator;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

fn refused(size: usize) -> bool {
    size >= LARGE && REFUSE_LARGE.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded to `System` unchanged, or answered with null (allowed:
// "the allocation failed") without touching memory.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` while this thread's allocations of [`LARGE`] bytes or more fail.
fn refusing_large<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            REFUSE_LARGE.set(false);
        }
    }
    REFUSE_LARGE.set(true);
    let _reset = Reset;
    f()
}

/// A new loader, without the kernel BTF aya would read and parse (see the module's
/// documentation); set `.btf(…)` on it to give it one.
pub fn without_kernel_btf<'a>() -> aya::EbpfLoader<'a> {
    refusing_large(aya::EbpfLoader::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a buffer of `bytes` can be had.
    fn can_allocate(bytes: usize) -> bool {
        Vec::<u8>::new().try_reserve_exact(bytes).is_ok()
    }

    #[test]
    fn large_allocations_fail_only_inside_and_only_on_this_thread() {
        let inside = refusing_large(|| {
            let mut grown = vec![0u8; 16];
            let grow = grown.try_reserve_exact(LARGE).is_ok();
            let elsewhere = std::thread::spawn(|| can_allocate(LARGE)).join().unwrap();
            (
                can_allocate(LARGE - 1),
                can_allocate(LARGE),
                grow,
                elsewhere,
            )
        });
        assert_eq!(inside, (true, false, false, true));
        assert!(can_allocate(LARGE), "reset after");
    }

    /// What the loader relies on: `std::fs::read` of a large file fails (does not abort)
    /// when its buffer cannot be had.
    #[test]
    fn reading_a_large_file_fails_inside() {
        let path = std::env::temp_dir().join(format!("wd-loader-{}", std::process::id()));
        std::fs::write(&path, vec![1u8; LARGE + 1]).unwrap();
        let inside = refusing_large(|| std::fs::read(&path).map(|bytes| bytes.len()));
        let outside = std::fs::read(&path).map(|bytes| bytes.len());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(inside.unwrap_err().kind(), std::io::ErrorKind::OutOfMemory);
        assert_eq!(outside.unwrap(), LARGE + 1);
    }

    /// The loader is made, and the kernel's BTF (where it exists) was not read into it.
    #[test]
    fn the_loader_is_made_without_kernel_btf() {
        let loader = without_kernel_btf();
        let debug = format!("{loader:?}");
        assert!(debug.contains("btf: None"), "{debug}");
    }
}
