//! The update every per-CPU hash map gets: count into this CPU's value of a key, inserting
//! the entry when it is absent. A per-CPU entry is shared by every CPU, so another CPU may
//! insert it first (the insert then fails with EEXIST): look again and count into it.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    maps::{LruPerCpuHashMap, PerCpuHashMap},
};

/// A per-CPU hash map, plain or LRU.
pub trait PerCpuMap<K, V> {
    /// This CPU's value of `key`, if the entry exists.
    fn value_ptr(&self, key: &K) -> Option<*mut V>;
    /// Inserts `key` with `value` (this CPU's slot; the others zeroed) unless it exists.
    fn insert_new(&self, key: &K, value: &V) -> bool;
}

impl<K, V> PerCpuMap<K, V> for PerCpuHashMap<K, V> {
    #[inline(always)]
    fn value_ptr(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }

    #[inline(always)]
    fn insert_new(&self, key: &K, value: &V) -> bool {
        self.insert(key, value, BPF_NOEXIST as u64).is_ok()
    }
}

impl<K, V> PerCpuMap<K, V> for LruPerCpuHashMap<K, V> {
    #[inline(always)]
    fn value_ptr(&self, key: &K) -> Option<*mut V> {
        self.get_ptr_mut(key)
    }

    #[inline(always)]
    fn insert_new(&self, key: &K, value: &V) -> bool {
        self.insert(key, value, BPF_NOEXIST as u64).is_ok()
    }
}

/// What [`update`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// The entry existed (or another CPU inserted it meanwhile): this CPU's value changed.
    Existing,
    /// The entry was inserted with `apply` applied to a default value.
    Inserted,
    /// The entry is absent and could not be inserted (map full): nothing was recorded.
    Full,
}

/// Applies `apply` to this CPU's value of `key` in `map`: get, else insert a default value
/// with `apply` applied, else (another CPU inserted first) get again.
#[inline(always)]
pub fn update<K, V: Default, M: PerCpuMap<K, V>>(
    map: &M,
    key: &K,
    apply: impl Fn(&mut V),
) -> Updated {
    if let Some(value) = map.value_ptr(key) {
        // SAFETY: this CPU's value of a live entry; nothing else writes it while the
        // program runs.
        apply(unsafe { &mut *value });
        return Updated::Existing;
    }
    let mut fresh = V::default();
    apply(&mut fresh);
    if map.insert_new(key, &fresh) {
        return Updated::Inserted;
    }
    match map.value_ptr(key) {
        Some(value) => {
            // SAFETY: as above.
            apply(unsafe { &mut *value });
            Updated::Existing
        }
        None => Updated::Full,
    }
}
