//! A bounded queue per sink: the oldest message is dropped when full. Detection only ever
//! calls [`Queue::push`], which never waits; the sink's delivery task pops.

use std::{collections::VecDeque, sync::Mutex};

/// A bounded FIFO; pushing into a full queue drops the oldest entry.
#[derive(Debug)]
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    ready: tokio::sync::Notify,
}

impl<T> Queue<T> {
    /// An empty queue holding at most `capacity` (≥ 1) entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
            ready: tokio::sync::Notify::new(),
        }
    }

    /// Adds `item` without waiting; returns the entry dropped to make room, if any.
    pub fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = self.items.lock().expect("queue lock");
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Takes the oldest entry, if any.
    pub fn try_pop(&self) -> Option<T> {
        self.items.lock().expect("queue lock").pop_front()
    }

    /// Waits for an entry.
    pub async fn pop(&self) -> T {
        loop {
            if let Some(item) = self.try_pop() {
                return item;
            }
            self.ready.notified().await;
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.items.lock().expect("queue lock").len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let queue = Queue::new(2);
        assert_eq!(queue.push(1), None);
        assert_eq!(queue.push(2), None);
        assert_eq!(queue.push(3), Some(1));
        assert_eq!(queue.push(4), Some(2));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.try_pop(), Some(3));
        assert_eq!(queue.try_pop(), Some(4));
        assert!(queue.is_empty());
    }

    #[test]
    fn pop_waits_for_a_push() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let queue = std::sync::Arc::new(Queue::new(4));
        let waiter = runtime.spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        runtime.block_on(async {
            tokio::task::yield_now().await;
            queue.push("x");
        });
        assert_eq!(runtime.block_on(waiter).unwrap(), "x");
    }
}
