//! Sorted runs on disk and the k-way merge over them.
//!
//! A run is a sequence of frames, each a u32 little-endian length and the
//! postcard bytes of one `(key, values)` entry, in key order, each key once.
//! Map spills write runs; a map task's committed output is one run per
//! partition; a reduce task merges the runs of its partition from every map
//! task.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::marker::PhantomData;

use serde::Serialize;

use crate::buffer::Values;
use serde::de::DeserializeOwned;

/// The largest frame a reader accepts (a key with its values), so that a
/// corrupt length cannot make it allocate gigabytes.
const MAX_FRAME: usize = 1 << 30;

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

    pub(crate) fn write<K: Serialize, V: Serialize>(
        &mut self,
        key: &K,
        values: &[V],
    ) -> io::Result<()> {
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.extend_from_slice(&[0; 4]);
        self.frame = postcard::to_extend(&(key, values), frame)
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

pub(crate) struct RunReader<K, V> {
    input: Box<dyn Read + Send>,
    frame: Vec<u8>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: DeserializeOwned, V: DeserializeOwned> RunReader<K, V> {
    pub(crate) fn new(input: Box<dyn Read + Send>) -> Self {
        RunReader {
            input,
            frame: Vec::new(),
            _types: PhantomData,
        }
    }

    pub(crate) fn next_entry(&mut self) -> io::Result<Option<(K, Vec<V>)>> {
        let mut len = [0u8; 4];
        // A clean end is an end before the first byte of a length.
        match self.input.read(&mut len[..1])? {
            0 => return Ok(None),
            _ => self.input.read_exact(&mut len[1..])?,
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("run frame of {len} bytes is over the limit"),
            ));
        }
        self.frame.resize(len, 0);
        self.input.read_exact(&mut self.frame)?;
        postcard::from_bytes(&self.frame)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// One input of a merge.
pub(crate) enum Source<K, V> {
    Memory(std::vec::IntoIter<(K, Values<V>)>),
    Run(RunReader<K, V>),
}

impl<K: DeserializeOwned, V: DeserializeOwned> Source<K, V> {
    fn next_entry(&mut self) -> io::Result<Option<(K, Vec<V>)>> {
        match self {
            Source::Memory(it) => Ok(it.next().map(|(k, v)| (k, v.into_vec()))),
            Source::Run(r) => r.next_entry(),
        }
    }
}

struct Head<K> {
    key: K,
    source: usize,
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
            .key
            .cmp(&self.key)
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
    K: Ord + DeserializeOwned,
    V: DeserializeOwned,
{
    let mut heap = BinaryHeap::with_capacity(sources.len());
    let mut pending: Vec<Vec<V>> = (0..sources.len()).map(|_| Vec::new()).collect();
    for (i, source) in sources.iter_mut().enumerate() {
        if let Some((key, values)) = source.next_entry()? {
            pending[i] = values;
            heap.push(Head { key, source: i });
        }
    }
    while let Some(Head { key, source }) = heap.pop() {
        let mut values = std::mem::take(&mut pending[source]);
        refill(&mut sources, &mut pending, &mut heap, source, &key)?;
        while heap.peek().is_some_and(|h| h.key == key) {
            let Some(Head { source: s, .. }) = heap.pop() else {
                break;
            };
            values.append(&mut pending[s]);
            refill(&mut sources, &mut pending, &mut heap, s, &key)?;
        }
        each(key, values)?;
    }
    Ok(())
}

fn refill<K: Ord + DeserializeOwned, V: DeserializeOwned>(
    sources: &mut [Source<K, V>],
    pending: &mut [Vec<V>],
    heap: &mut BinaryHeap<Head<K>>,
    source: usize,
    last: &K,
) -> io::Result<()> {
    if let Some((key, values)) = sources[source].next_entry()? {
        if key <= *last {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a run is not sorted (or holds a key twice)",
            ));
        }
        pending[source] = values;
        heap.push(Head { key, source });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_bytes(entries: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut w = RunWriter::new(Vec::new());
        for (k, v) in entries {
            w.write(k, v).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn merge_groups_equal_keys_in_source_order() {
        let a = run_bytes(&[(1, vec![1]), (3, vec![3])]);
        let b = run_bytes(&[(1, vec![2]), (2, vec![9]), (3, vec![4, 5])]);
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

    #[test]
    fn a_truncated_run_is_an_error_not_a_panic() {
        let bytes = run_bytes(&[(1, vec![1, 2, 3])]);
        for cut in 1..bytes.len() {
            let mut r =
                RunReader::<u32, u8>::new(Box::new(std::io::Cursor::new(bytes[..cut].to_vec())));
            assert!(r.next_entry().is_err(), "cut at {cut}");
        }
    }
}
