//! Sorted runs on disk and the k-way merge over them.
//!
//! A run is a sequence of frames, each a u32 little-endian length and the
//! postcard bytes of one `(key, values)` entry, in key order, each key once.
//! Map spills write runs; a map task's committed output is one run per
//! partition; a reduce task merges the runs of its partition from every map
//! task.
//!
//! Keys that are byte strings (`Vec<u8>`, `String`: most jobs' keys) take a
//! fast path through the same format: their postcard form is the length as
//! a varint and the bytes, which [`encode_key`] and [`decode_key`] write and
//! read as one slice, where serde would visit a `Vec<u8>` byte by byte. The
//! bytes on disk are the same either way (a unit test holds the two to it),
//! so a run written by one path is read by the other.

use std::any::{Any, TypeId};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::marker::PhantomData;

use serde::Serialize;

use crate::buffer::{Values, sort_prefix};
use serde::de::DeserializeOwned;

/// The largest frame a reader accepts (a key with its values), so that a
/// corrupt length cannot make it allocate gigabytes.
const MAX_FRAME: usize = 1 << 30;

/// What a reader asks of its input at a time, at most: a run is read a
/// chunk at a time, and frames are cut from the chunk in place.
const READ_CHUNK: usize = 64 << 10;

/// What a reader asks at a time, at least.
const MIN_READ_CHUNK: usize = 4 << 10;

/// The read buffers of all the runs one merge reads, together, as long as
/// each gets at least [`MIN_READ_CHUNK`] (up to 2,048 runs).
pub(crate) const MERGE_READ_BUDGET: usize = 8 << 20;

/// The chunk each of `runs` readers of one merge reads at a time: a share of
/// [`MERGE_READ_BUDGET`], between 4 and 64 KiB. A reduce over 320 map tasks
/// would hold 20 MiB of buffers at 64 KiB a run; it holds 8 MiB.
pub(crate) fn merge_chunk(runs: usize) -> usize {
    (MERGE_READ_BUDGET / runs.max(1)).clamp(MIN_READ_CHUNK, READ_CHUNK)
}

/// The bytes of a key that is a byte string (`Vec<u8>` or `String`), whose
/// order (`Ord`) is the order of those bytes; `None` for any other key type.
/// The type test is on a `TypeId`, a constant once monomorphised.
#[inline]
pub(crate) fn key_bytes<K: 'static>(key: &K) -> Option<&[u8]> {
    let any = key as &dyn Any;
    if let Some(bytes) = any.downcast_ref::<Vec<u8>>() {
        Some(bytes)
    } else {
        any.downcast_ref::<String>().map(String::as_bytes)
    }
}

/// Whether `K` is a byte-string key (see [`key_bytes`]).
pub(crate) fn is_byte_key<K: 'static>() -> bool {
    TypeId::of::<K>() == TypeId::of::<Vec<u8>>() || TypeId::of::<K>() == TypeId::of::<String>()
}

/// A byte-string key of type `K` made from `bytes`; `None` when `K` is not a
/// byte-string type, an error when `K` is `String` and `bytes` are not UTF-8.
fn key_from_bytes<K: 'static>(bytes: &[u8]) -> Option<io::Result<K>> {
    let mut slot: Option<K> = None;
    let any = &mut slot as &mut dyn Any;
    if let Some(slot) = any.downcast_mut::<Option<Vec<u8>>>() {
        *slot = Some(bytes.to_vec());
    } else if let Some(slot) = any.downcast_mut::<Option<String>>() {
        match std::str::from_utf8(bytes) {
            Ok(s) => *slot = Some(s.to_owned()),
            Err(e) => return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    } else {
        return None;
    }
    slot.map(Ok)
}

/// Appends `n` as a postcard varint (LEB128: 7 bits a byte, low bits first).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a postcard varint at the start of `bytes`: the value and its length.
fn take_varint(bytes: &[u8]) -> io::Result<(u64, usize)> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        // The 10th byte holds bit 63 only: more would overflow a u64
        // (postcard refuses it too).
        if i == 9 && b > 1 {
            break;
        }
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((n, i + 1));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "a run holds a truncated or overlong length",
    ))
}

/// Appends the postcard form of `key` to `out`, a byte-string key as one slice.
pub(crate) fn encode_key<K: Serialize + 'static>(key: &K, out: Vec<u8>) -> io::Result<Vec<u8>> {
    match key_bytes(key) {
        Some(bytes) => {
            let mut out = out;
            put_varint(&mut out, bytes.len() as u64);
            out.extend_from_slice(bytes);
            Ok(out)
        }
        None => {
            postcard::to_extend(key, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
    }
}

/// Reads a key in postcard form from the start of `bytes`: the key and the
/// bytes after it.
pub(crate) fn decode_key<K: DeserializeOwned + 'static>(bytes: &[u8]) -> io::Result<(K, &[u8])> {
    if is_byte_key::<K>() {
        let (len, n) = take_varint(bytes)?;
        let rest = &bytes[n..];
        if len > rest.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a run's key is longer than its frame",
            ));
        }
        let (key, rest) = rest.split_at(len as usize);
        if let Some(key) = key_from_bytes::<K>(key) {
            return Ok((key?, rest));
        }
    }
    postcard::take_from_bytes(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) struct RunWriter<W: Write> {
    out: W,
    frame: Vec<u8>,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

impl<W: Write> RunWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        RunWriter {
            out,
            frame: Vec::new(),
            entries: 0,
            bytes: 0,
        }
    }

    pub(crate) fn write<K: Serialize + 'static, V: Serialize>(
        &mut self,
        key: &K,
        values: &[V],
    ) -> io::Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        // The postcard form of `(key, values)`: the key's, then the values'.
        let frame = encode_key(key, frame)?;
        self.frame = postcard::to_extend(values, frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let len = (self.frame.len() - 4) as u32;
        self.frame[..4].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&self.frame)?;
        self.entries += 1;
        self.bytes += self.frame.len() as u64;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a run's entries. The input is read a chunk at a time into a buffer
/// of the reader's own, frames are decoded where they lie in it: one call
/// through the `dyn Read` per chunk, not three per frame.
pub(crate) struct RunReader<K, V> {
    input: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// What to ask of `input` at a time, at least.
    chunk: usize,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: DeserializeOwned + 'static, V: DeserializeOwned> RunReader<K, V> {
    /// A reader asking `input` for 64 KiB at a time.
    #[cfg(test)]
    pub(crate) fn new(input: Box<dyn Read + Send>) -> Self {
        RunReader::with_chunk(input, READ_CHUNK)
    }

    /// A reader asking `input` for `chunk` bytes at a time (more only for a
    /// frame that does not fit): its buffer stays at `chunk` bytes unless a
    /// frame is larger. `input` need not be buffered.
    pub(crate) fn with_chunk(input: Box<dyn Read + Send>, chunk: usize) -> Self {
        RunReader {
            input,
            buf: Vec::new(),
            chunk: chunk.max(1),
            start: 0,
            end: 0,
            _types: PhantomData,
        }
    }

    /// Makes at least `need` unread bytes available, unless the input ends
    /// first; returns how many are available.
    fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.end - self.start >= need {
            return Ok(self.end - self.start);
        }
        // Move what is left to the front, and make room for `need` and a chunk.
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let want = need.max(self.chunk);
        if self.buf.len() > 2 * want && self.end <= want {
            // Grown for a large frame (a key with many values, say): back
            // to what is wanted now, so that the buffers of a merge's runs
            // stay within its budget between large frames.
            self.buf.truncate(want);
            self.buf.shrink_to_fit();
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while self.end < need {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end)
    }

    pub(crate) fn next_entry(&mut self) -> io::Result<Option<(K, Vec<V>)>> {
        let truncated = || io::Error::new(io::ErrorKind::UnexpectedEof, "a run ends mid-frame");
        // A clean end is an end before the first byte of a length.
        match self.fill(4)? {
            0 => return Ok(None),
            1..=3 => return Err(truncated()),
            _ => {}
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[self.start..self.start + 4]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("run frame of {len} bytes is over the limit"),
            ));
        }
        if self.fill(4 + len)? < 4 + len {
            return Err(truncated());
        }
        let frame = &self.buf[self.start + 4..self.start + 4 + len];
        self.start += 4 + len;
        let (key, rest) = decode_key::<K>(frame)?;
        let values = postcard::from_bytes::<Vec<V>>(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((key, values)))
    }
}

/// One input of a merge.
pub(crate) enum Source<K, V> {
    Memory(std::vec::IntoIter<(K, Values<V>)>),
    Run(RunReader<K, V>),
}

impl<K: DeserializeOwned + 'static, V: DeserializeOwned> Source<K, V> {
    fn next_entry(&mut self) -> io::Result<Option<(K, Vec<V>)>> {
        match self {
            Source::Memory(it) => Ok(it.next().map(|(k, v)| (k, v.into_vec()))),
            Source::Run(r) => r.next_entry(),
        }
    }
}

/// The next entry of one source, in the merge's heap. `prefix` is the key's
/// [`sort_prefix`]: most comparisons of two byte-string keys end there.
struct Head<K> {
    prefix: u64,
    key: K,
    source: usize,
}

impl<K: Ord> Head<K> {
    /// The order of keys (prefix first, which agrees with it).
    fn key_cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key.cmp(&other.key))
    }
}

impl<K: Ord> PartialEq for Head<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Head<K> {}
impl<K: Ord> PartialOrd for Head<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Head<K> {
    // Reversed: BinaryHeap is a max-heap and the merge wants the least key,
    // and among equal keys the earliest source, so values keep source order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key_cmp(self)
            .then_with(|| other.source.cmp(&self.source))
    }
}

/// Merges sorted sources into one sorted stream, each key once with the
/// values of every source in source order, handed to `each`.
pub(crate) fn merge<K, V>(
    mut sources: Vec<Source<K, V>>,
    mut each: impl FnMut(K, Vec<V>) -> io::Result<()>,
) -> io::Result<()>
where
    K: Ord + DeserializeOwned + 'static,
    V: DeserializeOwned,
{
    let mut heap = BinaryHeap::with_capacity(sources.len());
    let mut pending: Vec<Vec<V>> = (0..sources.len()).map(|_| Vec::new()).collect();
    for (i, source) in sources.iter_mut().enumerate() {
        if let Some((key, values)) = source.next_entry()? {
            pending[i] = values;
            heap.push(Head {
                prefix: sort_prefix(&key),
                key,
                source: i,
            });
        }
    }
    while let Some(head) = heap.pop() {
        let mut values = std::mem::take(&mut pending[head.source]);
        refill(&mut sources, &mut pending, &mut heap, &head)?;
        while heap
            .peek()
            .is_some_and(|h| h.key_cmp(&head) == Ordering::Equal)
        {
            let Some(same) = heap.pop() else {
                break;
            };
            values.append(&mut pending[same.source]);
            refill(&mut sources, &mut pending, &mut heap, &same)?;
        }
        each(head.key, values)?;
    }
    Ok(())
}

/// Pushes the next entry of `last`'s source, which must come after `last`.
fn refill<K: Ord + DeserializeOwned + 'static, V: DeserializeOwned>(
    sources: &mut [Source<K, V>],
    pending: &mut [Vec<V>],
    heap: &mut BinaryHeap<Head<K>>,
    last: &Head<K>,
) -> io::Result<()> {
    if let Some((key, values)) = sources[last.source].next_entry()? {
        let next = Head {
            prefix: sort_prefix(&key),
            key,
            source: last.source,
        };
        if next.key_cmp(last) != Ordering::Greater {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a run is not sorted (or holds a key twice)",
            ));
        }
        pending[last.source] = values;
        heap.push(next);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_bytes<K: Serialize + 'static>(entries: &[(K, Vec<u8>)]) -> Vec<u8> {
        let mut w = RunWriter::new(Vec::new());
        for (k, v) in entries {
            w.write(k, v).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn merge_groups_equal_keys_in_source_order() {
        let a = run_bytes(&[(1u32, vec![1]), (3, vec![3])]);
        let b = run_bytes(&[(1u32, vec![2]), (2, vec![9]), (3, vec![4, 5])]);
        let sources = vec![
            Source::Run(RunReader::<u32, u8>::new(Box::new(std::io::Cursor::new(a)))),
            Source::Memory(vec![(0, Values::One(7)), (3, Values::Many(vec![6]))].into_iter()),
            Source::Run(RunReader::new(Box::new(std::io::Cursor::new(b)))),
        ];
        let mut got = Vec::new();
        merge(sources, |k, v| {
            got.push((k, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![
                (0, vec![7]),
                (1, vec![1, 2]),
                (2, vec![9]),
                (3, vec![3, 6, 4, 5])
            ]
        );
    }

    // A merge's readers share a budget: whatever the number of runs, their
    // chunks add up to at most the budget (past 2,048 runs, 4 KiB each).
    #[test]
    fn a_merge_reads_within_its_budget() {
        for runs in [0, 1, 9, 128, 129, 320, 2048, 2049, 100_000] {
            let chunk = merge_chunk(runs);
            assert!(
                (MIN_READ_CHUNK..=READ_CHUNK).contains(&chunk),
                "{runs}: {chunk}"
            );
            assert!(
                runs * chunk <= MERGE_READ_BUDGET.max(runs * MIN_READ_CHUNK),
                "{runs} runs of {chunk}"
            );
        }
        assert_eq!(merge_chunk(9), READ_CHUNK);
    }

    // A reader with a small chunk keeps its buffer at the chunk, reads
    // every entry, grows only for a frame larger than the chunk, and goes
    // back to the chunk after it.
    #[test]
    fn a_reader_keeps_to_its_chunk() {
        let mut entries: Vec<(u32, Vec<u8>)> = (0..2000).map(|i| (i, vec![i as u8; 5])).collect();
        entries.push((2000, vec![7; 10_000]));
        entries.extend((2001..4000).map(|i| (i, vec![i as u8; 5])));
        let mut r = RunReader::<u32, u8>::with_chunk(
            Box::new(std::io::Cursor::new(run_bytes(&entries))),
            MIN_READ_CHUNK,
        );
        let mut got = Vec::new();
        let mut largest = 0;
        while let Some(entry) = r.next_entry().unwrap() {
            largest = largest.max(r.buf.len());
            if got.len() < 2000 || got.len() > 2100 {
                assert_eq!(r.buf.len(), MIN_READ_CHUNK, "entry {}", got.len());
            }
            got.push(entry);
        }
        assert_eq!(got, entries);
        assert!(largest >= 10_000, "grown for the large frame");
    }

    fn read_all<K: DeserializeOwned + 'static>(bytes: Vec<u8>) -> io::Result<Vec<(K, Vec<u8>)>> {
        let mut r = RunReader::<K, u8>::new(Box::new(std::io::Cursor::new(bytes)));
        let mut got = Vec::new();
        while let Some(entry) = r.next_entry()? {
            got.push(entry);
        }
        Ok(got)
    }

    proptest::proptest! {
        // The byte-string fast path writes exactly postcard's bytes for
        // `(key, values)`, so runs of either path read back through the
        // other; and what it writes reads back as it was, key and values.
        #[test]
        fn byte_keys_are_framed_as_postcard_frames_them(
            entries in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..300), ".{0,40}", proptest::collection::vec(proptest::num::u8::ANY, 0..4)),
                0..20,
            ),
        ) {
            let bytes: Vec<(Vec<u8>, Vec<u8>)> = entries.iter().map(|(k, _, v)| (k.clone(), v.clone())).collect();
            let strings: Vec<(String, Vec<u8>)> = entries.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
            let framed = |parts: Vec<Vec<u8>>| -> Vec<u8> {
                parts.into_iter().flat_map(|p| {
                    let mut f = (p.len() as u32).to_le_bytes().to_vec();
                    f.extend(p);
                    f
                }).collect()
            };
            let want = framed(bytes.iter().map(|e| postcard::to_allocvec(e).unwrap()).collect());
            proptest::prop_assert_eq!(run_bytes(&bytes), want.clone());
            proptest::prop_assert_eq!(read_all::<Vec<u8>>(want).unwrap(), bytes);
            let want = framed(strings.iter().map(|e| postcard::to_allocvec(e).unwrap()).collect());
            proptest::prop_assert_eq!(run_bytes(&strings), want.clone());
            proptest::prop_assert_eq!(read_all::<String>(want).unwrap(), strings);
        }
    }

    /// Bytes where varint edges are likely: runs of 0x80..=0xff, then any.
    fn varint_edges() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::strategy::Strategy;
        (
            proptest::collection::vec(0x80u8..=0xff, 0..12),
            proptest::collection::vec(proptest::num::u8::ANY, 0..24),
        )
            .prop_map(|(mut a, b)| {
                a.extend(b);
                a
            })
    }

    proptest::proptest! {
        // decode_key's fast path agrees with postcard on any bytes: the same
        // key and rest, or both an error.
        #[test]
        fn decode_key_agrees_with_postcard(bytes in varint_edges()) {
            let ours = decode_key::<Vec<u8>>(&bytes).ok();
            let theirs = postcard::take_from_bytes::<Vec<u8>>(&bytes).ok();
            proptest::prop_assert_eq!(ours, theirs);
            let ours = decode_key::<String>(&bytes).ok();
            let theirs = postcard::take_from_bytes::<String>(&bytes).ok();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_tenth_varint_byte_over_one_is_an_error() {
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        assert!(take_varint(&bytes).is_err());
        assert!(postcard::take_from_bytes::<Vec<u8>>(&bytes).is_err());
        bytes[9] = 0x01;
        assert_eq!(take_varint(&bytes).unwrap(), (u64::MAX, 10));
    }

    #[test]
    fn a_run_out_of_order_is_an_error() {
        for keys in [
            [b"b".to_vec(), b"a".to_vec()],
            [b"a".to_vec(), b"a".to_vec()],
        ] {
            let run = run_bytes(&[(keys[0].clone(), vec![1]), (keys[1].clone(), vec![2])]);
            let sources = vec![Source::Run(RunReader::<Vec<u8>, u8>::new(Box::new(
                std::io::Cursor::new(run),
            )))];
            let err = merge(sources, |_, _| Ok(())).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{keys:?}");
        }
    }

    #[test]
    fn a_string_key_that_is_not_utf8_is_an_error() {
        let run = run_bytes(&[(vec![0xffu8, 0xfe], vec![1])]);
        let err = read_all::<String>(run).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_key_longer_than_its_frame_is_an_error() {
        // A frame of 2 bytes whose key claims 5.
        let err = read_all::<Vec<u8>>(vec![2, 0, 0, 0, 5, b'a']).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_truncated_run_is_an_error_not_a_panic() {
        let bytes = run_bytes(&[(1u32, vec![1, 2, 3])]);
        for cut in 1..bytes.len() {
            let mut r =
                RunReader::<u32, u8>::new(Box::new(std::io::Cursor::new(bytes[..cut].to_vec())));
            assert!(r.next_entry().is_err(), "cut at {cut}");
        }
    }
}
