//! The map side's in-memory buffer: values grouped by key, combined as they
//! pile up, each key tagged with its partition; drained sorted at a spill.

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::partition::partition_of;

/// What a key costs besides its serialized bytes: the table slot, the value
/// vector's header, allocator rounding. An estimate, not an accounting.
const KEY_OVERHEAD: usize = 64;

/// The values of one key: one value (always, for a job that combines: each
/// new value is folded into it) or several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Values<V> {
    One(V),
    Many(Vec<V>),
}

impl<V> Values<V> {
    pub(crate) fn as_slice(&self) -> &[V] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<V> {
        match self {
            Values::One(v) => vec![v],
            Values::Many(v) => v,
        }
    }
}

pub(crate) struct Slot<V> {
    part: u32,
    values: Values<V>,
}

/// A job's combine function, when it has one: folds a value into an accumulator.
pub(crate) type Combiner<'a, K, V> = &'a dyn Fn(&K, &mut V, V);

/// Folds `values` into one with `combine`.
pub(crate) fn fold<K, V>(combine: Combiner<'_, K, V>, key: &K, values: Vec<V>) -> Values<V> {
    let mut it = values.into_iter();
    match it.next() {
        Some(mut acc) => {
            for v in it {
                combine(key, &mut acc, v);
            }
            Values::One(acc)
        }
        None => Values::Many(Vec::new()),
    }
}

/// A sorted partition's worth of entries: `(key, values)` in key order.
pub(crate) type Sorted<K, V> = Vec<(K, Values<V>)>;

pub(crate) struct Buffer<K, V> {
    map: HashMap<K, Slot<V>, FxBuildHasher>,
    reducers: u32,
    /// Estimated bytes held.
    pub(crate) bytes: usize,
    /// Pairs emitted into the buffer, in all.
    pub(crate) emitted: u64,
    scratch: Vec<u8>,
}

impl<K: Hash + Eq + Serialize, V> Buffer<K, V> {
    /// A buffer sized for `keys` keys (a guess from the worker's last task,
    /// which saves growing the table step by step).
    pub(crate) fn new(reducers: u32, keys: usize) -> Self {
        Buffer {
            map: HashMap::with_capacity_and_hasher(keys, FxBuildHasher),
            reducers,
            bytes: 0,
            emitted: 0,
            scratch: Vec::new(),
        }
    }

    fn value_cost() -> usize {
        std::mem::size_of::<V>().max(1)
    }

    fn insert_new(&mut self, key: K, value: V) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // Into a Vec through `Extend` (not `io::Write`, which costs a call per
        // byte of a byte-string key); it fails only for types that cannot
        // serialize at all, and then the key goes to partition 0.
        self.scratch = postcard::to_extend(&key, scratch).unwrap_or_default();
        let part = partition_of(&self.scratch, self.reducers);
        self.bytes += self.scratch.len() + KEY_OVERHEAD + Self::value_cost();
        self.map.insert(
            key,
            Slot {
                part,
                values: Values::One(value),
            },
        );
    }

    #[inline]
    fn add(
        bytes: &mut usize,
        key: &K,
        slot: &mut Slot<V>,
        value: V,
        combine: Option<Combiner<'_, K, V>>,
    ) {
        match (&mut slot.values, combine) {
            (Values::One(acc), Some(combine)) => combine(key, acc, value),
            (Values::Many(values), _) => {
                values.push(value);
                *bytes += Self::value_cost();
            }
            (one @ Values::One(_), None) => {
                let Values::One(first) =
                    std::mem::replace(one, Values::Many(Vec::with_capacity(4)))
                else {
                    unreachable!("matched One above")
                };
                if let Values::Many(values) = one {
                    values.push(first);
                    values.push(value);
                }
                *bytes += Self::value_cost() + 24;
            }
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, key: K, value: V, combine: Option<Combiner<'_, K, V>>) {
        self.emitted += 1;
        match self.map.get_key_value_mut(&key) {
            Some((k, slot)) => Self::add(&mut self.bytes, k, slot, value, combine),
            None => self.insert_new(key, value),
        }
    }

    #[inline]
    pub(crate) fn push_ref<Q>(&mut self, key: &Q, value: V, combine: Option<Combiner<'_, K, V>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.emitted += 1;
        match self.map.get_key_value_mut(key) {
            Some((k, slot)) => Self::add(&mut self.bytes, k, slot, value, combine),
            None => self.insert_new(key.to_owned(), value),
        }
    }

    /// Keys held.
    pub(crate) fn keys(&self) -> usize {
        self.map.len()
    }

    /// Empties the buffer into one sorted vector per partition.
    pub(crate) fn drain_sorted(&mut self) -> Vec<Sorted<K, V>>
    where
        K: Ord,
    {
        let mut parts: Vec<Sorted<K, V>> = (0..self.reducers).map(|_| Vec::new()).collect();
        for (key, slot) in self.map.drain() {
            parts[slot.part as usize].push((key, slot.values));
        }
        for part in &mut parts {
            part.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        self.bytes = 0;
        parts
    }
}
