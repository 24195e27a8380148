//! The map side's in-memory buffer: values grouped by key, combined as they
//! pile up, each key tagged with its partition; drained sorted at a spill.

use std::borrow::Borrow;
use std::hash::Hash;

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::partition::partition_of;
use crate::run::key_bytes;

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
    /// The map task the values belong to: an entry of an earlier task of
    /// this worker is a key kept for reuse, its values stale.
    generation: u32,
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

/// A sort key that orders byte-string keys (see [`key_bytes`]) as their
/// bytes do, as far as their first 8 bytes tell: their first 8 bytes, big
/// endian, zero-padded. Both directions hold: `a < b` implies
/// `sort_prefix(a) <= sort_prefix(b)` (sorting by prefix never contradicts
/// the keys' order), and `sort_prefix(a) < sort_prefix(b)` implies `a < b`
/// (a smaller prefix decides); equal prefixes say nothing, and the keys are
/// compared in full. Sorting by
/// `(prefix, key)` compares most pairs of words as two integers, not through
/// a `memcmp` of two heap strings. Other key types get 0 (every pair is
/// compared in full, by `Ord`).
#[inline]
pub(crate) fn sort_prefix<K: 'static>(key: &K) -> u64 {
    match key_bytes(key) {
        Some(bytes) => {
            let mut head = [0u8; 8];
            let n = bytes.len().min(8);
            head[..n].copy_from_slice(&bytes[..n]);
            u64::from_be_bytes(head)
        }
        None => 0,
    }
}

/// A sorted partition's worth of entries: `(key, values)` in key order.
pub(crate) type Sorted<K, V> = Vec<(K, Values<V>)>;

/// A map task's buffer.
///
/// A worker keeps its buffer from one map task to the next (see
/// `task::take_buffer`): the keys stay in the table, their values marked
/// stale by a generation number, so that a split's keys that an earlier
/// split already had (most of them, in a word count) cost neither an
/// allocation nor a serialization nor a table insert again. Only the keys of
/// the current generation are written out.
pub(crate) struct Buffer<K, V> {
    map: HashMap<K, Slot<V>, FxBuildHasher>,
    pub(crate) reducers: u32,
    generation: u32,
    /// Estimated bytes of the keys held, stale or not.
    key_bytes: usize,
    /// Estimated bytes held: the keys, and the values of this generation.
    pub(crate) bytes: usize,
    /// Pairs emitted into the buffer in this generation.
    pub(crate) emitted: u64,
    scratch: Vec<u8>,
}

impl<K: Hash + Eq + Serialize, V> Buffer<K, V> {
    /// An empty buffer.
    pub(crate) fn new(reducers: u32) -> Self {
        Buffer {
            map: HashMap::with_hasher(FxBuildHasher),
            reducers,
            generation: 0,
            key_bytes: 0,
            bytes: 0,
            emitted: 0,
            scratch: Vec::new(),
        }
    }

    fn value_cost() -> usize {
        std::mem::size_of::<V>().max(1)
    }

    // Out of line: the hot path, inlined into every `emit`, is the lookup
    // of a key the buffer has.
    #[inline(never)]
    fn insert_new(&mut self, key: K, value: V) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // Into a Vec through `Extend` (not `io::Write`, which costs a call per
        // byte of a byte-string key); it fails only for types that cannot
        // serialize at all, and then the key goes to partition 0.
        self.scratch = postcard::to_extend(&key, scratch).unwrap_or_default();
        let part = partition_of(&self.scratch, self.reducers);
        let cost = self.scratch.len() + KEY_OVERHEAD + Self::value_cost();
        self.key_bytes += cost;
        self.bytes += cost;
        self.map.insert(
            key,
            Slot {
                part,
                generation: self.generation,
                values: Values::One(value),
            },
        );
    }

    // Always inlined into the job's map (where `emit` is called), so that
    // the combiner, a constant there, is called directly, not through `dyn`.
    #[inline(always)]
    fn add(
        bytes: &mut usize,
        generation: u32,
        key: &K,
        slot: &mut Slot<V>,
        value: V,
        combine: Option<Combiner<'_, K, V>>,
    ) {
        if slot.generation != generation {
            // A key kept from an earlier task: its first value in this one.
            slot.generation = generation;
            slot.values = Values::One(value);
            return;
        }
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

    #[inline(always)]
    pub(crate) fn push(&mut self, key: K, value: V, combine: Option<Combiner<'_, K, V>>) {
        self.emitted += 1;
        match self.map.get_key_value_mut(&key) {
            Some((k, slot)) => Self::add(&mut self.bytes, self.generation, k, slot, value, combine),
            None => self.insert_new(key, value),
        }
    }

    #[inline(always)]
    pub(crate) fn push_ref<Q>(&mut self, key: &Q, value: V, combine: Option<Combiner<'_, K, V>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.emitted += 1;
        match self.map.get_key_value_mut(key) {
            Some((k, slot)) => Self::add(&mut self.bytes, self.generation, k, slot, value, combine),
            None => self.insert_new(key.to_owned(), value),
        }
    }

    /// Empties the buffer into one sorted vector per partition (the keys of
    /// this generation; stale keys are dropped).
    pub(crate) fn drain_sorted(&mut self) -> Vec<Sorted<K, V>>
    where
        K: Ord + 'static,
    {
        let generation = self.generation;
        let mut parts: Vec<Sorted<K, V>> = (0..self.reducers).map(|_| Vec::new()).collect();
        for (key, slot) in self.map.drain() {
            if slot.generation == generation {
                parts[slot.part as usize].push((key, slot.values));
            }
        }
        // Sorted in place, the prefixes computed at each comparison: a spill
        // is when memory is tight, and a vector of prefixes would cost 8
        // more bytes a key (or a second vector) just then.
        for part in &mut parts {
            part.sort_unstable_by(|a, b| {
                sort_prefix(&a.0)
                    .cmp(&sort_prefix(&b.0))
                    .then_with(|| a.0.cmp(&b.0))
            });
        }
        self.key_bytes = 0;
        self.bytes = 0;
        parts
    }

    /// Hands `each` the entries of this generation, partition by partition,
    /// sorted by key (each with its [`sort_prefix`]), and keeps the keys for
    /// the next generation (the next map task of this worker).
    pub(crate) fn write_sorted<E>(
        &mut self,
        mut each: impl FnMut(usize, &[(u64, &K, &[V])]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        K: Ord + 'static,
    {
        let generation = self.generation;
        let mut parts: Vec<Vec<(u64, &K, &[V])>> = (0..self.reducers).map(|_| Vec::new()).collect();
        for (key, slot) in &self.map {
            if slot.generation == generation {
                parts[slot.part as usize].push((sort_prefix(key), key, slot.values.as_slice()));
            }
        }
        for (r, part) in parts.iter_mut().enumerate() {
            part.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            each(r, part)?;
        }
        drop(parts);
        self.next_generation();
        Ok(())
    }

    /// Starts a new generation: every value held becomes stale.
    pub(crate) fn next_generation(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: a stale entry could pass for a live one.
            self.map.clear();
            self.key_bytes = 0;
        }
        for slot in self.map.values_mut() {
            if let Values::Many(values) = &mut slot.values {
                *values = Vec::new();
            }
        }
        self.bytes = self.key_bytes;
        self.emitted = 0;
    }

    /// Drops every key, keeping the table's allocation.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.key_bytes = 0;
        self.bytes = 0;
        self.emitted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Written = Vec<Vec<(Vec<u8>, Vec<u64>)>>;

    fn fill(buffer: &mut Buffer<Vec<u8>, u64>, words: &[Vec<u8>], combine: bool) {
        let sum = |_: &Vec<u8>, acc: &mut u64, v: u64| *acc += v;
        let combine: Option<Combiner<'_, Vec<u8>, u64>> = if combine { Some(&sum) } else { None };
        for (i, w) in words.iter().enumerate() {
            buffer.push_ref(w.as_slice(), i as u64, combine);
        }
    }

    fn written(buffer: &mut Buffer<Vec<u8>, u64>) -> Written {
        let mut out = Vec::new();
        buffer
            .write_sorted(|_, part| {
                out.push(
                    part.iter()
                        .map(|(_, k, v)| ((*k).clone(), v.to_vec()))
                        .collect(),
                );
                Ok::<(), ()>(())
            })
            .unwrap();
        out
    }

    fn words() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec("[a-f]{1,2}".prop_map(String::into_bytes), 0..60)
    }

    proptest! {
        // A buffer kept from earlier tasks writes for the next task exactly
        // what a new buffer writes: the earlier tasks' keys and values
        // never leak into it, with or without a combiner.
        #[test]
        fn a_kept_buffer_writes_what_a_new_one_writes(
            earlier in proptest::collection::vec(words(), 0..3),
            next in words(),
            combine in any::<bool>(),
        ) {
            let mut kept = Buffer::new(3);
            for words in &earlier {
                fill(&mut kept, words, combine);
                written(&mut kept);
            }
            fill(&mut kept, &next, combine);
            let mut new = Buffer::new(3);
            fill(&mut new, &next, combine);
            prop_assert_eq!(kept.emitted, new.emitted);
            prop_assert_eq!(written(&mut kept), written(&mut new));
        }
    }

    proptest! {
        // Sorting by (prefix, key) is sorting by key: a smaller prefix means
        // a smaller key, for byte strings of any length (zero bytes and
        // shared heads included) and for strings.
        #[test]
        fn the_sort_prefix_agrees_with_the_key_order(
            keys in proptest::collection::vec(proptest::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff), any::<u8>()], 0..12), 0..40),
            strings in proptest::collection::vec(".{0,10}", 0..40),
        ) {
            for a in &keys {
                for b in &keys {
                    if sort_prefix(a) < sort_prefix(b) {
                        prop_assert!(a < b, "{:?} {:?}", a, b);
                    }
                }
            }
            for a in &strings {
                for b in &strings {
                    if sort_prefix(a) < sort_prefix(b) {
                        prop_assert!(a < b, "{:?} {:?}", a, b);
                    }
                }
            }
            prop_assert_eq!(sort_prefix(&7u32), 0);
        }
    }

    #[test]
    fn a_spill_drains_only_the_current_generation() {
        let mut buffer = Buffer::new(1);
        fill(&mut buffer, &[b"old".to_vec()], true);
        written(&mut buffer);
        fill(&mut buffer, &[b"new".to_vec(), b"new".to_vec()], true);
        let drained = buffer.drain_sorted();
        assert_eq!(drained.len(), 1);
        assert_eq!(drained[0], vec![(b"new".to_vec(), Values::One(1))]);
        assert_eq!(buffer.bytes, 0);
    }
}
