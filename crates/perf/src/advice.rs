//! Cache-size advice: a miss-ratio curve from a recorded key trace.
//!
//! "Would a bigger cache help, and how big?" is answered by replaying the
//! trace of keys the cache saw against simulated caches of other sizes: an
//! LRU, and an LRU behind a TinyLFU admission filter (what moka does). The
//! trace may be spatially sampled (SHARDS: keep only keys whose hash falls in
//! a fixed share `R` of the hash space, and simulate caches `R` times the
//! size), which keeps it small for long runs at a small cost in accuracy.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use rustc_hash::FxHashMap;
use serde::Serialize;

/// The factors of the current size that [`Advice`] simulates.
pub const FACTORS: [f64; 7] = [1.0 / 16.0, 1.0 / 8.0, 1.0 / 4.0, 1.0 / 2.0, 1.0, 2.0, 4.0];

/// A bounded record of lookups: key hash and entry size in bytes.
#[derive(Debug, Clone)]
pub struct Trace {
    events: VecDeque<(u64, u32)>,
    max: usize,
    rate: f64,
    threshold: u64,
}

impl Trace {
    /// Keeps the last `max` sampled lookups; `rate` is the share of the key
    /// space sampled (1.0: every key).
    pub fn new(max: usize, rate: f64) -> Trace {
        let rate = rate.clamp(1e-4, 1.0);
        Trace {
            events: VecDeque::new(),
            max: max.max(1),
            rate,
            threshold: (rate * u64::MAX as f64) as u64,
        }
    }

    /// Records one lookup of the key with this hash, whose entry is `bytes`
    /// big (0 if unknown, e.g. the call failed).
    pub fn push(&mut self, hash: u64, bytes: u32) {
        // Mix the hash so that sampling does not depend on its low bits.
        if self.rate < 1.0 && mix(hash) > self.threshold {
            return;
        }
        if self.events.len() == self.max {
            self.events.pop_front();
        }
        self.events.push_back((hash, bytes));
    }

    /// Lookups recorded.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The miss-ratio curve at [`FACTORS`] times `current_bytes`, and the
    /// smallest simulated size whose hit rate reaches `target`.
    pub fn advise(&self, current_bytes: u64, target: f64) -> Advice {
        // Sizes are learnt from later lookups of a key if the first one failed.
        let mut size: FxHashMap<u64, u32> = FxHashMap::default();
        for &(k, b) in &self.events {
            if b > 0 {
                size.insert(k, b);
            }
        }
        let trace: Vec<(u64, u32)> = self
            .events
            .iter()
            .map(|&(k, b)| {
                (
                    k,
                    if b > 0 {
                        b
                    } else {
                        size.get(&k).copied().unwrap_or(1)
                    },
                )
            })
            .collect();
        let distinct = size.len().max(
            trace
                .iter()
                .map(|e| e.0)
                .collect::<std::collections::HashSet<_>>()
                .len(),
        );
        let rows = FACTORS
            .iter()
            .map(|&factor| {
                let bytes = (current_bytes as f64 * factor) as u64;
                let scaled = ((bytes as f64) * self.rate) as u64;
                Row {
                    factor,
                    bytes,
                    lru: simulate(&trace, scaled, false),
                    tinylfu: simulate(&trace, scaled, true),
                }
            })
            .collect::<Vec<_>>();
        let smallest = rows
            .iter()
            .find(|r| r.lru.max(r.tinylfu) >= target)
            .map(|r| r.bytes);
        let compulsory = if trace.is_empty() {
            0.0
        } else {
            1.0 - distinct as f64 / trace.len() as f64
        };
        Advice {
            lookups: trace.len() as u64,
            sample_rate: self.rate,
            current_bytes,
            target,
            ceiling: compulsory,
            rows,
            smallest,
        }
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// One size in an [`Advice`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Row {
    /// The size as a factor of the current one.
    pub factor: f64,
    /// The size in bytes.
    pub bytes: u64,
    /// Hit rate of a byte-bounded LRU of this size over the trace.
    pub lru: f64,
    /// Hit rate of the same LRU behind a TinyLFU admission filter.
    pub tinylfu: f64,
}

/// A miss-ratio curve and the size it advises; from [`Trace::advise`] or
/// [`Cached::advise`](crate::Cached::advise).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Advice {
    /// Lookups in the trace.
    pub lookups: u64,
    /// Share of the key space the trace sampled.
    pub sample_rate: f64,
    /// The cache's size now.
    pub current_bytes: u64,
    /// The hit rate asked for.
    pub target: f64,
    /// The best hit rate any cache could reach on this trace (every first
    /// lookup of a key misses).
    pub ceiling: f64,
    /// One row per simulated size, smallest first.
    pub rows: Vec<Row>,
    /// The smallest simulated size reaching the target, if any does.
    pub smallest: Option<u64>,
}

impl Advice {
    /// The hit rate simulated at the current size (TinyLFU, as moka).
    pub fn current_hit_rate(&self) -> f64 {
        self.rows
            .iter()
            .find(|r| r.factor == 1.0)
            .map_or(0.0, |r| r.tinylfu)
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cache-size advice over {} lookups (sample rate {:.2}; best possible hit rate {:.2}):",
            self.lookups, self.sample_rate, self.ceiling
        )?;
        writeln!(
            f,
            "  {:>7}  {:>10}  {:>6}  {:>8}",
            "size", "bytes", "LRU", "TinyLFU"
        )?;
        for r in &self.rows {
            let label = if r.factor < 1.0 {
                format!("1/{:.0}x", 1.0 / r.factor)
            } else {
                format!("{:.0}x", r.factor)
            };
            writeln!(
                f,
                "  {:>7}  {:>10}  {:>6.3}  {:>8.3}",
                label, r.bytes, r.lru, r.tinylfu
            )?;
        }
        match self.smallest {
            Some(b) => write!(
                f,
                "  smallest size reaching hit rate {:.2}: {} bytes ({:.2}x now)",
                self.target,
                b,
                b as f64 / self.current_bytes.max(1) as f64
            ),
            None => write!(f, "  no size up to 4x reaches hit rate {:.2}", self.target),
        }
    }
}

/// Replays `trace` against a byte-bounded LRU of `capacity` bytes, with or
/// without a TinyLFU admission filter; returns the hit rate.
pub fn simulate(trace: &[(u64, u32)], capacity: u64, tinylfu: bool) -> f64 {
    if trace.is_empty() {
        return 0.0;
    }
    let mut lru = Lru::default();
    let mut sketch = Sketch::new(trace.len().min(1 << 20));
    let mut hits = 0u64;
    for &(key, bytes) in trace {
        if tinylfu {
            sketch.add(key);
        }
        if lru.touch(key) {
            hits += 1;
            continue;
        }
        let bytes = u64::from(bytes);
        if bytes > capacity {
            continue;
        }
        // Make room; with TinyLFU the newcomer must be more frequent than
        // each victim it would push out.
        let mut victims = Vec::new();
        let mut freed = 0;
        let mut admit = true;
        for (victim, vbytes) in lru.oldest() {
            if lru.bytes - freed + bytes <= capacity {
                break;
            }
            if tinylfu && sketch.estimate(victim) >= sketch.estimate(key) {
                admit = false;
                break;
            }
            victims.push(victim);
            freed += vbytes;
        }
        if admit && lru.bytes - freed + bytes <= capacity {
            for v in victims {
                lru.remove(v);
            }
            lru.insert(key, bytes);
        }
    }
    hits as f64 / trace.len() as f64
}

/// An LRU over key hashes: recency order in a BTreeMap.
#[derive(Default)]
struct Lru {
    seq: u64,
    by_key: FxHashMap<u64, (u64, u64)>,
    order: BTreeMap<u64, u64>,
    bytes: u64,
}

impl Lru {
    fn touch(&mut self, key: u64) -> bool {
        let Some((seq, _)) = self.by_key.get_mut(&key) else {
            return false;
        };
        self.order.remove(seq);
        self.seq += 1;
        *seq = self.seq;
        self.order.insert(self.seq, key);
        true
    }

    fn oldest(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.order.values().map(|k| (*k, self.by_key[k].1))
    }

    fn remove(&mut self, key: u64) {
        if let Some((seq, bytes)) = self.by_key.remove(&key) {
            self.order.remove(&seq);
            self.bytes -= bytes;
        }
    }

    fn insert(&mut self, key: u64, bytes: u64) {
        self.seq += 1;
        self.by_key.insert(key, (self.seq, bytes));
        self.order.insert(self.seq, key);
        self.bytes += bytes;
    }
}

/// A count-min sketch of 4 rows with saturating 4-bit-like counters (u8
/// capped at 15), halved every `10 × width` additions, as TinyLFU does.
struct Sketch {
    rows: [Vec<u8>; 4],
    mask: usize,
    added: usize,
    reset_at: usize,
}

impl Sketch {
    fn new(expected: usize) -> Sketch {
        let width = expected.next_power_of_two().max(64);
        Sketch {
            rows: std::array::from_fn(|_| vec![0; width]),
            mask: width - 1,
            added: 0,
            reset_at: width * 10,
        }
    }

    fn index(&self, key: u64, row: usize) -> usize {
        (mix(key ^ (row as u64).wrapping_mul(0x9e3779b97f4a7c15)) as usize) & self.mask
    }

    fn add(&mut self, key: u64) {
        for r in 0..4 {
            let i = self.index(key, r);
            let c = &mut self.rows[r][i];
            *c = (*c + 1).min(15);
        }
        self.added += 1;
        if self.added >= self.reset_at {
            for row in &mut self.rows {
                for c in row.iter_mut() {
                    *c /= 2;
                }
            }
            self.added /= 2;
        }
    }

    fn estimate(&self, key: u64) -> u8 {
        (0..4)
            .map(|r| self.rows[r][self.index(key, r)])
            .min()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_holding_every_key_misses_only_the_first_time() {
        let trace: Vec<(u64, u32)> = (0..1000).map(|i| (i % 10, 10)).collect();
        assert_eq!(simulate(&trace, 100, false), 0.99);
        assert_eq!(simulate(&trace, 100, true), 0.99);
    }

    #[test]
    fn lru_thrashes_on_a_loop_bigger_than_it_and_tinylfu_keeps_what_it_can() {
        // A loop over 11 keys in a cache of 10: LRU evicts each key just before its reuse.
        let trace: Vec<(u64, u32)> = (0..11_000).map(|i| (i % 11, 1)).collect();
        assert_eq!(simulate(&trace, 10, false), 0.0);
        assert!(simulate(&trace, 10, true) > 0.5);
    }

    #[test]
    fn advice_names_the_smallest_size_reaching_the_target() {
        let mut t = Trace::new(100_000, 1.0);
        for i in 0..20_000u64 {
            t.push(i % 100, 100);
        }
        // 100 keys of 100 bytes: 10,000 bytes hold them all.
        let a = t.advise(10_000, 0.9);
        assert_eq!(a.smallest, Some(10_000));
        assert!(a.rows[0].lru < 0.5);
        assert!((a.ceiling - 0.995).abs() < 1e-9);
        insta::assert_snapshot!(a.to_string());
    }
}
