//! The map side's in-memory buffer: values grouped by key, combined as they
//! pile up, each key tagged with its partition; drained sorted at a spill.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use hashbrown::HashTable;
use rustc_hash::FxHasher;
use serde::Serialize;

use crate::partition::partition_of;
use crate::run::{is_byte_key, key_bytes};

/// What a key costs besides its serialized bytes: its index slot and entry
/// (fingerprint, partition, values, key header), allocator rounding. An
/// estimate, not an accounting.
const KEY_OVERHEAD: usize = 96;

/// A byte-string key, as its `Hash` hands its bytes to the hasher: its
/// length and two words which, for a key of at most 16 bytes, hold all of
/// its bytes (its first and last 8 bytes, or 4, overlapping; for 1 to 3
/// bytes, the first, the middle and the last).
///
/// Two keys of at most 16 bytes are equal exactly when their fingerprints
/// are: the buffer compares them as three integers held in the key's entry,
/// where `==` on the keys would follow a pointer to each key's heap bytes
/// and call `memcmp` (a third of a word count's time, measured with perf).
/// A longer key's fingerprint (its head and tail) only rules keys out; a
/// key that is not a byte string gets [`Fingerprint::UNKNOWN`] and is
/// always compared in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    lo: u64,
    hi: u64,
    /// The key's length; `u32::MAX - 1` for any longer one.
    len: u32,
}

impl Fingerprint {
    /// The fingerprint of a key that is not a byte string.
    const UNKNOWN: Fingerprint = Fingerprint {
        lo: 0,
        hi: 0,
        len: u32::MAX,
    };

    #[inline(always)]
    fn of(b: &[u8]) -> Fingerprint {
        let len = b.len();
        let (lo, hi) = if let (Some(h), Some(t)) = (b.first_chunk::<8>(), b.last_chunk::<8>()) {
            (u64::from_le_bytes(*h), u64::from_le_bytes(*t))
        } else if let (Some(h), Some(t)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
            (
                u64::from(u32::from_le_bytes(*h)),
                u64::from(u32::from_le_bytes(*t)),
            )
        } else if let (Some(first), Some(last)) = (b.first(), b.last()) {
            // 1 to 3 bytes: the first, the middle one and the last.
            (
                u64::from(*first) | (u64::from(b[len / 2]) << 8),
                u64::from(*last),
            )
        } else {
            (0, 0)
        };
        Fingerprint {
            lo,
            hi,
            len: u32::try_from(len).map_or(u32::MAX - 1, |n| n.min(u32::MAX - 1)),
        }
    }

    /// Whether `hot` has this fingerprint.
    #[inline(always)]
    fn is_of<V>(&self, hot: &Hot<V>) -> bool {
        hot.len == self.len && hot.lo == self.lo && hot.hi == self.hi
    }

    /// Whether equal fingerprints mean equal keys.
    #[inline(always)]
    fn exact(&self) -> bool {
        self.len <= 16
    }
}

/// The buffer's hasher: FxHash of what a key's `Hash` writes, except that a
/// byte-string key of at most 16 bytes is hashed from its fingerprint (three
/// words, not a loop over its bytes), and that a byte-string key's
/// fingerprint is caught on the way.
///
/// Catching is only for `Vec<u8>` and `String` keys (and so `[u8]` and `str`
/// queries), whose `Hash` writes their bytes in one `write` call, besides a
/// length or a terminator: for any other type, the bytes of one `write` need
/// not be the whole key.
struct Probe {
    fx: FxHasher,
    fp: Fingerprint,
    catch: bool,
}

impl Hasher for Probe {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.fx.finish()
    }

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        if self.catch {
            self.catch = false;
            let fp = Fingerprint::of(bytes);
            self.fp = fp;
            if fp.exact() {
                self.fx.write_u64(fp.lo);
                self.fx.write_u64(fp.hi);
                self.fx.write_u32(fp.len);
                return;
            }
        }
        self.fx.write(bytes);
    }

    #[inline(always)]
    fn write_u8(&mut self, i: u8) {
        self.fx.write_u8(i);
    }

    #[inline(always)]
    fn write_u16(&mut self, i: u16) {
        self.fx.write_u16(i);
    }

    #[inline(always)]
    fn write_u32(&mut self, i: u32) {
        self.fx.write_u32(i);
    }

    #[inline(always)]
    fn write_u64(&mut self, i: u64) {
        self.fx.write_u64(i);
    }

    #[inline(always)]
    fn write_u128(&mut self, i: u128) {
        self.fx.write_u128(i);
    }

    // Every `write_uN` goes straight to the FxHasher (the `write_iN`s call
    // them): only `write` may catch, or a `Vec<u8>`'s length prefix
    // (`write_usize`) would be taken for the key.
    #[inline(always)]
    fn write_usize(&mut self, i: usize) {
        self.fx.write_usize(i);
    }
}

/// Whether `Q` is a borrowed form of a byte-string key whose `Hash` the
/// [`Probe`] knows: `[u8]`, `Vec<u8>`, `str` or `String`.
fn is_byte_query<Q: ?Sized + 'static>() -> bool {
    use std::any::TypeId;
    let q = TypeId::of::<Q>();
    q == TypeId::of::<[u8]>()
        || q == TypeId::of::<Vec<u8>>()
        || q == TypeId::of::<str>()
        || q == TypeId::of::<String>()
}

/// The hash and fingerprint of `key`, a key of type `K` or a borrowed form of one.
#[inline(always)]
fn probe<K: 'static, Q: Hash + ?Sized>(key: &Q) -> (u64, Fingerprint) {
    let mut probe = Probe {
        fx: FxHasher::default(),
        fp: Fingerprint::UNKNOWN,
        catch: is_byte_key::<K>(),
    };
    key.hash(&mut probe);
    (probe.finish(), probe.fp)
}

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

/// What the buffer holds of a key for the current map task.
enum Held<V> {
    /// Nothing: a key kept from an earlier map task of this worker.
    Stale,
    /// One value (always, for a job that combines).
    One(V),
    /// Several values, boxed: a vector's three words would make every entry
    /// larger, for a case (no combiner, a key emitted twice) that can pay
    /// for one more allocation.
    #[allow(clippy::box_collection, reason = "one word in every entry, not three")]
    Many(Box<Vec<V>>),
}

impl<V> Held<V> {
    fn as_slice(&self) -> &[V] {
        match self {
            Held::Stale => &[],
            Held::One(v) => std::slice::from_ref(v),
            Held::Many(v) => v,
        }
    }

    fn into_values(self) -> Option<Values<V>> {
        match self {
            Held::Stale => None,
            Held::One(v) => Some(Values::One(v)),
            Held::Many(v) => Some(Values::Many(*v)),
        }
    }
}

/// What a lookup reads of a key: its fingerprint (flattened, so that the
/// partition fills what would be its padding) and its values; 40 bytes for
/// a `u64` value. The key itself is in a vector of its own, read only to
/// compare a key longer than 16 bytes, to rehash the index when it grows,
/// and to write the buffer out.
struct Hot<V> {
    lo: u64,
    hi: u64,
    len: u32,
    part: u32,
    held: Held<V>,
}

/// The most keys a buffer holds: its index is of `u32`s (half the size of
/// `usize`s, and the index is read at every lookup). Each key is counted as
/// at least [`KEY_OVERHEAD`] bytes, so a buffer reaches this many keys only
/// past some 400 GB of memory bound: [`Buffer::full`] asks for a spill at
/// half of it.
const MAX_KEYS: usize = u32::MAX as usize;

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
/// `task::take_buffer`): the keys stay, their values marked stale, so that a
/// split's keys that an earlier split already had (most of them, in a word
/// count) cost neither an allocation nor a serialization nor a table insert
/// again. Only the keys of the current map task are written out.
///
/// The hash table is an index into vectors in the order the keys first came
/// (as `indexmap` does), not a table of entries: a lookup reads the index's
/// slot (4 bytes) and then the key's [`Hot`] entry, and the keys a job emits
/// most (in a word count: "the", "of", ...) come early, so their entries sit
/// together at the start of the vector and stay in the cache. In a table of
/// entries each of them would take a cache line of its own at a random
/// place; perf showed a word count's lookups waiting on those lines.
pub(crate) struct Buffer<K, V> {
    index: HashTable<u32>,
    hot: Vec<Hot<V>>,
    /// The keys, at the same positions as their entries in `hot`.
    keys: Vec<K>,
    pub(crate) reducers: u32,
    /// Estimated bytes of the keys held, stale or not.
    key_bytes: usize,
    /// Estimated bytes held: the keys, and the values of this map task.
    pub(crate) bytes: usize,
    /// Pairs emitted into the buffer in this map task.
    pub(crate) emitted: u64,
    scratch: Vec<u8>,
}

impl<K: Hash + Eq + Serialize + 'static, V> Buffer<K, V> {
    /// An empty buffer.
    pub(crate) fn new(reducers: u32) -> Self {
        Buffer {
            index: HashTable::new(),
            hot: Vec::new(),
            keys: Vec::new(),
            reducers,
            key_bytes: 0,
            bytes: 0,
            emitted: 0,
            scratch: Vec::new(),
        }
    }

    fn value_cost() -> usize {
        std::mem::size_of::<V>().max(1)
    }

    /// Whether the buffer should be spilled before more is emitted into it:
    /// past `memory` bytes, or half way to the most keys it can hold.
    pub(crate) fn full(&self, memory: u64) -> bool {
        self.bytes as u64 > memory || self.keys.len() > MAX_KEYS / 2
    }

    // Out of line: the hot path, inlined into every `emit`, is the lookup
    // of a key the buffer has.
    #[inline(never)]
    fn insert_new(&mut self, hash: u64, fp: Fingerprint, key: K, value: V) {
        let Ok(i) = u32::try_from(self.keys.len()) else {
            // Only a single record emitting some two billion new keys gets
            // here (see `full`); the engine treats the panic as a bad record.
            panic!("a map task's buffer holds at most 2^32 keys");
        };
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
        self.hot.push(Hot {
            lo: fp.lo,
            hi: fp.hi,
            len: fp.len,
            part,
            held: Held::One(value),
        });
        self.keys.push(key);
        let keys = &self.keys;
        self.index
            .insert_unique(hash, i, |&j| probe::<K, K>(&keys[j as usize]).0);
    }

    // Always inlined into the job's map (where `emit` is called), so that
    // the combiner, a constant there, is called directly, not through `dyn`.
    #[inline(always)]
    fn add(
        bytes: &mut usize,
        key: &K,
        held: &mut Held<V>,
        value: V,
        combine: Option<Combiner<'_, K, V>>,
    ) {
        match (held, combine) {
            (Held::One(acc), Some(combine)) => combine(key, acc, value),
            (Held::Many(values), _) => {
                values.push(value);
                *bytes += Self::value_cost();
            }
            // A key kept from an earlier task: its first value in this one.
            (held @ Held::Stale, _) => *held = Held::One(value),
            (held @ Held::One(_), None) => {
                if let Held::One(first) = std::mem::replace(held, Held::Stale) {
                    let mut values = Vec::with_capacity(4);
                    values.push(first);
                    values.push(value);
                    *held = Held::Many(Box::new(values));
                }
                *bytes += Self::value_cost() + 48;
            }
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, key: K, value: V, combine: Option<Combiner<'_, K, V>>) {
        self.emitted += 1;
        let (hash, fp) = probe::<K, K>(&key);
        let (hot, keys) = (&self.hot, &self.keys);
        let found = self.index.find(hash, |&i| {
            fp.is_of(&hot[i as usize]) && (fp.exact() || keys[i as usize] == key)
        });
        match found.copied() {
            Some(i) => {
                let i = i as usize;
                Self::add(
                    &mut self.bytes,
                    &self.keys[i],
                    &mut self.hot[i].held,
                    value,
                    combine,
                )
            }
            None => self.insert_new(hash, fp, key, value),
        }
    }

    #[inline(always)]
    pub(crate) fn push_ref<Q>(&mut self, key: &Q, value: V, combine: Option<Combiner<'_, K, V>>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized + 'static,
    {
        if is_byte_key::<K>() && !is_byte_query::<Q>() {
            // A borrowed form of a byte-string key the probe does not know
            // (another crate's `Borrow` impl): its `Hash` need not write the
            // bytes as the key's does, so it would not hash alike. Look the
            // key up as itself. (A constant once monomorphised.)
            self.push(key.to_owned(), value, combine);
            return;
        }
        self.emitted += 1;
        let (hash, fp) = probe::<K, Q>(key);
        let (hot, keys) = (&self.hot, &self.keys);
        let found = self.index.find(hash, |&i| {
            fp.is_of(&hot[i as usize]) && (fp.exact() || keys[i as usize].borrow() == key)
        });
        match found.copied() {
            Some(i) => {
                let i = i as usize;
                Self::add(
                    &mut self.bytes,
                    &self.keys[i],
                    &mut self.hot[i].held,
                    value,
                    combine,
                )
            }
            None => self.insert_new(hash, fp, key.to_owned(), value),
        }
    }

    /// Empties the buffer into one sorted vector per partition (the keys of
    /// this map task; stale keys are dropped).
    pub(crate) fn drain_sorted(&mut self) -> Vec<Sorted<K, V>>
    where
        K: Ord + 'static,
    {
        let mut parts: Vec<Sorted<K, V>> = (0..self.reducers).map(|_| Vec::new()).collect();
        self.index.clear();
        for (hot, key) in self.hot.drain(..).zip(self.keys.drain(..)) {
            if let Some(values) = hot.held.into_values() {
                parts[hot.part as usize].push((key, values));
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

    /// Hands `each` the entries of this map task, partition by partition,
    /// sorted by key (each with its [`sort_prefix`]), and keeps the keys for
    /// the next map task of this worker.
    pub(crate) fn write_sorted<E>(
        &mut self,
        mut each: impl FnMut(usize, &[(u64, &K, &[V])]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        K: Ord + 'static,
    {
        let mut parts: Vec<Vec<(u64, &K, &[V])>> = (0..self.reducers).map(|_| Vec::new()).collect();
        for (hot, key) in self.hot.iter().zip(&self.keys) {
            if !matches!(hot.held, Held::Stale) {
                parts[hot.part as usize].push((sort_prefix(key), key, hot.held.as_slice()));
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

    /// Starts the next map task: every value held becomes stale.
    pub(crate) fn next_generation(&mut self) {
        for hot in &mut self.hot {
            hot.held = Held::Stale;
        }
        self.bytes = self.key_bytes;
        self.emitted = 0;
    }

    /// Drops every key, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.hot.clear();
        self.keys.clear();
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

    /// Byte strings over a two-letter alphabet that share as much as they
    /// can: short ones (0 to 16 bytes), and longer ones made of one of two
    /// heads, a middle of 1 to 5 bytes and one of two tails, so that many
    /// share their length, their first 8 and their last 8 bytes.
    fn alike() -> impl Strategy<Value = Vec<u8>> {
        let letters = |n| proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b')], n);
        let end = || prop_oneof![Just(b"aaaaaaaa".to_vec()), Just(b"abababab".to_vec())];
        prop_oneof![
            letters(0..17),
            (end(), letters(1..6), end()).prop_map(|(h, m, t)| [h, m, t].concat()),
        ]
    }

    // Every byte string of at most 16 bytes over two letters (131,071 of
    // them: each length, and the 1-3-byte "middle byte" case among them)
    // has a fingerprint of its own.
    #[test]
    fn short_keys_have_fingerprints_of_their_own() {
        let mut seen = std::collections::HashSet::new();
        let mut count = 0;
        for len in 0..=16u32 {
            for bits in 0..1u32 << len {
                let key: Vec<u8> = (0..len)
                    .map(|i| if bits >> i & 1 == 1 { b'b' } else { b'a' })
                    .collect();
                let fp = Fingerprint::of(&key);
                assert!(fp.exact());
                assert!(seen.insert((fp.lo, fp.hi, fp.len)), "{key:?}");
                count += 1;
            }
        }
        assert_eq!(count, 131_071);
    }

    proptest! {
        // Two byte strings of at most 16 bytes have the same fingerprint
        // exactly when they are equal; any two equal strings have the same
        // fingerprint; what the probe catches while hashing a key is the
        // key's fingerprint, for `Vec<u8>` and `String` keys and for no other.
        #[test]
        fn a_short_key_is_its_fingerprint(a in alike(), b in alike()) {
            let (fa, fb) = (Fingerprint::of(&a), Fingerprint::of(&b));
            if a == b {
                prop_assert_eq!(fa, fb);
            }
            if a.len() <= 16 && b.len() <= 16 {
                prop_assert_eq!(fa == fb, a == b);
                prop_assert!(fa.exact());
            } else if a.len() > 16 {
                prop_assert!(!fa.exact());
            }
            let text = String::from_utf8(a.clone()).unwrap();
            prop_assert_eq!(probe::<Vec<u8>, Vec<u8>>(&a).1, fa);
            prop_assert_eq!(probe::<String, String>(&text).1, fa);
            prop_assert_eq!(probe::<(Vec<u8>, u32), _>(&(a.clone(), 0)).1, Fingerprint::UNKNOWN);
            // A key and its borrowed form hash alike, and a `String` as its `str`.
            prop_assert_eq!(probe::<Vec<u8>, [u8]>(&a[..]), probe::<Vec<u8>, Vec<u8>>(&a));
            prop_assert_eq!(probe::<String, str>(&text), probe::<String, String>(&text));
        }

        // The buffer counts what a `BTreeMap` counts, for byte-string keys
        // whose fingerprints collide as often as they can (long keys with
        // equal heads and tails), for `String` keys, and for keys that are
        // not byte strings (a pair of a byte string and a number), each key
        // emitted by value and by reference in turn, so that a key inserted
        // one way is found the other way.
        #[test]
        fn the_buffer_counts_what_a_btreemap_counts(
            keys in proptest::collection::vec((alike(), 0u32..3), 0..200),
        ) {
            let add_bytes = |_: &Vec<u8>, acc: &mut u64, v: u64| *acc += v;
            let add_string = |_: &String, acc: &mut u64, v: u64| *acc += v;
            let add_pair = |_: &(Vec<u8>, u32), acc: &mut u64, v: u64| *acc += v;
            let mut model = std::collections::BTreeMap::new();
            let mut bytes: Buffer<Vec<u8>, u64> = Buffer::new(2);
            let mut strings: Buffer<String, u64> = Buffer::new(2);
            let mut pairs: Buffer<(Vec<u8>, u32), u64> = Buffer::new(2);
            for (i, (k, n)) in keys.iter().enumerate() {
                *model.entry((k.clone(), *n)).or_insert(0u64) += 1;
                let text = std::str::from_utf8(k).unwrap();
                if i % 2 == 0 {
                    bytes.push_ref(k.as_slice(), 1, Some(&add_bytes));
                    strings.push_ref(text, 1, Some(&add_string));
                } else {
                    bytes.push(k.clone(), 1, Some(&add_bytes));
                    strings.push(text.to_owned(), 1, Some(&add_string));
                }
                pairs.push((k.clone(), *n), 1, Some(&add_pair));
            }
            let mut by_key = std::collections::BTreeMap::new();
            for ((k, _), c) in &model {
                *by_key.entry(k.clone()).or_insert(0u64) += c;
            }
            fn counts<K: Hash + Eq + Serialize + Ord + Clone + 'static>(
                buffer: &mut Buffer<K, u64>,
            ) -> Vec<(K, u64)> {
                let mut out = Vec::new();
                buffer
                    .write_sorted(|_, part| {
                        out.extend(part.iter().map(|(_, k, v)| ((*k).clone(), v.iter().sum())));
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                out.sort();
                out
            }
            let expected: Vec<(Vec<u8>, u64)> = by_key.into_iter().collect();
            prop_assert_eq!(counts(&mut bytes), expected.clone());
            let strings: Vec<(Vec<u8>, u64)> =
                counts(&mut strings).into_iter().map(|(k, c)| (k.into_bytes(), c)).collect();
            prop_assert_eq!(strings, expected);
            let expected: Vec<((Vec<u8>, u32), u64)> = model.into_iter().collect();
            prop_assert_eq!(counts(&mut pairs), expected);
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
