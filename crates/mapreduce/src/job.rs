//! The job: what a user writes.

use std::borrow::Borrow;
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::buffer::{Buffer, Combiner};

/// A map-reduce job: a `map` from records to key-value pairs, an optional
/// `combine` that folds values of one key early, and a `reduce` from a key and
/// all its values to output values.
///
/// The job value itself is sent to every worker (postcard), so a job can carry
/// parameters (a pattern to grep for, say). Keys are ordered: each output
/// partition is sorted by key.
///
/// ```
/// use forkyard_mapreduce::{Emit, Job};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct WordCount;
///
/// impl Job for WordCount {
///     type Key = Vec<u8>;
///     type Value = u64;
///     type Output = u64;
///     const COMBINES: bool = true;
///
///     fn map(&self, line: &[u8], emit: &mut Emit<'_, Vec<u8>, u64>) {
///         for word in line.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
///             emit.emit_ref(word, 1);
///         }
///     }
///     fn combine(&self, _word: &Vec<u8>, count: &mut u64, more: u64) {
///         *count += more;
///     }
///     fn reduce(&self, _word: &Vec<u8>, counts: Vec<u64>, emit: &mut dyn FnMut(u64)) {
///         emit(counts.iter().sum())
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The intermediate and output key.
    type Key: Ord + Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Field + 'static;
    /// The intermediate value.
    type Value: Serialize + DeserializeOwned + Send + 'static;
    /// What `reduce` emits for a key; written as `key<TAB>output`.
    type Output: Serialize + Field + 'static;
    /// Whether [`Job::combine`] does anything; when false the engine never calls it.
    const COMBINES: bool = false;

    /// The name workers know the job by; unique within a binary.
    fn name() -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Maps one record (a line, without its `\n`) to key-value pairs.
    fn map(&self, record: &[u8], emit: &mut Emit<'_, Self::Key, Self::Value>);

    /// Folds `value` into `acc`, two values of `key` becoming one that
    /// reduces to the same result (`*acc += value` for a count). Runs in the
    /// map task, as values are emitted and when runs are merged, on any
    /// grouping of the values in any order: it must be associative and
    /// commutative. Only called when [`Job::COMBINES`] is true.
    ///
    /// The paper's combiner takes a key and all its values; a fold takes them
    /// one at a time, so the buffer keeps one value per key, in place, instead
    /// of a list that grows until it is combined.
    fn combine(&self, _key: &Self::Key, _acc: &mut Self::Value, _value: Self::Value) {}

    /// Reduces all the values of one key (in the order the map tasks emitted
    /// them, map task by map task) to output values.
    fn reduce(&self, key: &Self::Key, values: Vec<Self::Value>, emit: &mut dyn FnMut(Self::Output));
}

/// The `emit` a map function is given: it feeds the map task's in-memory
/// buffer (combining values of a key as they pile up, when the job combines).
pub struct Emit<'a, K, V> {
    pub(crate) buffer: &'a mut Buffer<K, V>,
    pub(crate) combine: Option<Combiner<'a, K, V>>,
}

impl<K, V> std::fmt::Debug for Emit<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emit").finish_non_exhaustive()
    }
}

impl<K, V> Emit<'_, K, V>
where
    K: Hash + Eq + Serialize + 'static,
{
    /// Emits a key-value pair.
    #[inline(always)]
    pub fn emit(&mut self, key: K, value: V) {
        self.buffer.push(key, value, self.combine);
    }

    /// Emits a pair whose key is given in a borrowed form (`&[u8]` for a
    /// `Vec<u8>` key, `&str` for a `String`): the key is copied only when the
    /// buffer has not seen it yet, which is what makes a word count fast.
    #[inline(always)]
    pub fn emit_ref<Q>(&mut self, key: &Q, value: V)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized + 'static,
    {
        self.buffer.push_ref(key, value, self.combine);
    }
}

/// How a key or an output value is written in a `key<TAB>value` line.
///
/// Implemented for strings, byte strings (written as they are), integers,
/// floats, `bool`, and pairs (written as two TAB-separated fields).
pub trait Field {
    /// Appends the text form to `out`.
    fn write_field(&self, out: &mut Vec<u8>);
}

impl Field for String {
    fn write_field(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}
impl Field for Vec<u8> {
    fn write_field(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}
macro_rules! display_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn write_field(&self, out: &mut Vec<u8>) {
                use std::io::Write;
                let _ = write!(out, "{}", self);
            }
        }
    )*};
}
display_field!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, bool, char
);

impl<A: Field, B: Field> Field for (A, B) {
    fn write_field(&self, out: &mut Vec<u8>) {
        self.0.write_field(out);
        out.push(b'\t');
        self.1.write_field(out);
    }
}
