//! Stable partitioning: which reduce partition a key belongs to.
//!
//! std's `HashMap` hasher is seeded at random per process, so two map workers
//! would disagree on where a key goes. The partition is FNV-1a (64 bit) of the
//! key's postcard bytes, mod R: a function of the key's value alone, the same
//! in every process, on every machine, in every build.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `bytes`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The partition of a key given its postcard bytes.
pub(crate) fn partition_of(key_bytes: &[u8], reducers: u32) -> u32 {
    (fnv1a(key_bytes) % u64::from(reducers.max(1))) as u32
}

/// The partition `key` goes to among `reducers` partitions: stable across
/// processes and machines.
///
/// ```
/// let p = forkyard_mapreduce::partition(&"hello".to_string(), 4);
/// assert!(p < 4);
/// assert_eq!(p, forkyard_mapreduce::partition(&"hello".to_string(), 4));
/// ```
pub fn partition<K: serde::Serialize>(key: &K, reducers: u32) -> u32 {
    let bytes = postcard::to_allocvec(key).unwrap_or_default();
    partition_of(&bytes, reducers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partitions_are_pinned() {
        // Pinned values: a change here moves keys between partitions and breaks
        // resuming a job written by an older build.
        let got: Vec<u32> = ["the", "quick", "brown", "fox"]
            .iter()
            .map(|w| partition(&w.as_bytes().to_vec(), 4))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 4] = [1, 3, 0, 3];
}
