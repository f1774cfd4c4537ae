//! Which tests may run at the same time on one kernel.
//!
//! A lab test is isolated by its own network namespaces: its daemon counts only its own
//! namespace's drops and connects (`namespaces = "own"`, filtered in the kernel), its
//! interfaces' TC counters and its namespace's netlink, so many run at once. A daemon that
//! counts every namespace's traffic (`namespaces = "all"`, or no kernel BTF, where nothing
//! can be told apart) would also count the other tests' (every lab uses the same
//! addresses): its test runs [`alone`].
//!
//! Every namespace the lab creates ([`crate::NetNs::new`]) holds a [`Share`] for the test
//! thread that created it; [`alone`] waits until no other test holds one, and keeps new
//! ones waiting until it ends. This orders the tests of one process (the suite); another
//! process's traffic (a second suite, a bench) is not held back.

use std::{
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    thread::{self, ThreadId},
};

struct State {
    /// Shares held, by the thread that took them.
    shares: Vec<(ThreadId, usize)>,
    /// The test running alone.
    alone: Option<ThreadId>,
    /// Tests waiting to run alone: new shares wait for them.
    waiting: usize,
}

impl State {
    fn held_by(&self, thread: ThreadId) -> usize {
        self.shares
            .iter()
            .find(|(t, _)| *t == thread)
            .map_or(0, |(_, n)| *n)
    }

    fn held_by_others(&self, thread: ThreadId) -> bool {
        self.shares.iter().any(|(t, n)| *t != thread && *n > 0)
    }
}

static STATE: Mutex<State> = Mutex::new(State {
    shares: Vec::new(),
    alone: None,
    waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait(guard: MutexGuard<'static, State>) -> MutexGuard<'static, State> {
    CHANGED.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// A test's share of the kernel: held while it has namespaces of its own.
#[derive(Debug)]
pub struct Share {
    thread: ThreadId,
}

/// Takes a share for the calling thread; waits while a test runs alone or waits to (unless
/// this thread already holds a share, or is the one running alone).
pub fn share() -> Share {
    let me = thread::current().id();
    let mut state = state();
    while state.held_by(me) == 0
        && state.alone != Some(me)
        && (state.alone.is_some() || state.waiting > 0)
    {
        state = wait(state);
    }
    match state.shares.iter_mut().find(|(t, _)| *t == me) {
        Some((_, n)) => *n += 1,
        None => state.shares.push((me, 1)),
    }
    Share { thread: me }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut state = state();
        if let Some(i) = state.shares.iter().position(|(t, _)| *t == self.thread) {
            state.shares[i].1 -= 1;
            if state.shares[i].1 == 0 {
                state.shares.swap_remove(i);
            }
        }
        CHANGED.notify_all();
    }
}

/// Held by a test that runs alone; others start again when it drops.
#[derive(Debug)]
#[must_use = "the test runs alone only while this is held"]
pub struct Alone(());

/// Waits until no other test of this process holds namespaces, then keeps new ones from
/// being created until the returned guard drops. Call it first in the test, before any
/// namespace exists (it panics otherwise: two such tests would wait for each other).
pub fn alone() -> Alone {
    let me = thread::current().id();
    let mut state = state();
    assert_eq!(
        state.held_by(me),
        0,
        "isolation::alone() after this test created namespaces: call it first"
    );
    state.waiting += 1;
    while state.alone.is_some() || state.held_by_others(me) {
        state = wait(state);
    }
    state.waiting -= 1;
    state.alone = Some(me);
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        state().alone = None;
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
            mpsc,
        },
        time::Duration,
    };

    use super::*;

    // One test: the gate is process-wide, and libtest runs this crate's tests in parallel.
    #[test]
    fn a_test_alone_waits_for_shares_and_holds_new_ones_back() {
        // Shares nest on one thread.
        let outer = share();
        let inner = share();
        let (held_tx, held_rx) = mpsc::channel();
        let running = Arc::new(AtomicBool::new(false));
        let alone_thread = {
            let running = running.clone();
            thread::spawn(move || {
                let guard = alone();
                running.store(true, Ordering::SeqCst);
                held_rx.recv().unwrap();
                running.store(false, Ordering::SeqCst);
                drop(guard);
            })
        };
        // Waits while this thread's shares are held.
        thread::sleep(Duration::from_millis(200));
        assert!(
            !running.load(Ordering::SeqCst),
            "alone() ran beside a share"
        );
        drop(inner);
        thread::sleep(Duration::from_millis(100));
        assert!(
            !running.load(Ordering::SeqCst),
            "alone() ran beside a share"
        );
        drop(outer);
        while !running.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
        // A new share waits until the test alone ends.
        let late = thread::spawn({
            let running = running.clone();
            move || {
                let _share = share();
                assert!(!running.load(Ordering::SeqCst), "a share while alone");
            }
        });
        thread::sleep(Duration::from_millis(200));
        assert!(
            !late.is_finished(),
            "a share was taken while a test ran alone"
        );
        held_tx.send(()).unwrap();
        alone_thread.join().unwrap();
        late.join().unwrap();
    }
}
