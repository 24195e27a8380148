//! What the examples share: a generated Zipf corpus, the single-threaded
//! reference count, and the comparison with an output. The word-count job is
//! the library's `forkyard_mapreduce::jobs::WordCount`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use forkyard_mapreduce::partition;

pub(crate) fn contains(line: &[u8], needle: &str) -> bool {
    line.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The `i`th word of the vocabulary: lowercase letters, 2 to 9 of them.
pub(crate) fn word(i: usize) -> String {
    let mut n = i * 2_654_435_761 % 4_294_967_291 + 1;
    let len = 2 + i % 8;
    let mut w = String::with_capacity(len + 8);
    for _ in 0..len {
        w.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    // Unique: the index in base 26 as a suffix.
    let mut k = i;
    loop {
        w.push((b'a' + (k % 26) as u8) as char);
        k /= 26;
        if k == 0 {
            break;
        }
    }
    w
}

/// Writes about `bytes` bytes of lines of 4 to 14 words drawn from
/// `distinct` words with a Zipf(1.0) distribution; returns the line count.
pub(crate) fn zipf_corpus(path: &Path, bytes: u64, distinct: usize, seed: u64) -> io::Result<u64> {
    let words: Vec<String> = (0..distinct).map(word).collect();
    let mut cdf = Vec::with_capacity(distinct);
    let mut total = 0.0;
    for k in 1..=distinct {
        total += 1.0 / k as f64;
        cdf.push(total);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let (mut written, mut lines) = (0u64, 0u64);
    let mut line = String::new();
    while written < bytes {
        line.clear();
        for i in 0..rng.usize(4..15) {
            if i > 0 {
                line.push(' ');
            }
            let u = rng.f64() * total;
            let k = cdf.partition_point(|&c| c < u).min(distinct - 1);
            line.push_str(&words[k]);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// The single-threaded count: a `HashMap` over the words of `paths`,
/// skipping lines that contain `skip`.
pub(crate) fn reference(paths: &[&Path], skip: Option<&str>) -> io::Result<BTreeMap<Vec<u8>, u64>> {
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    for path in paths {
        let data = std::fs::read(path)?;
        for line in data.split(|&b| b == b'\n') {
            if skip.is_some_and(|s| contains(line, s)) {
                continue;
            }
            for w in line
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
            {
                match counts.get_mut(w) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(w.to_vec(), 1);
                    }
                }
            }
        }
    }
    Ok(counts.into_iter().collect())
}

/// Checks that `out` holds the part files of `counts` over `reducers`
/// partitions, byte for byte.
pub(crate) fn check_output(
    out: &Path,
    counts: &BTreeMap<Vec<u8>, u64>,
    reducers: u32,
) -> Result<(), String> {
    let mut parts = vec![Vec::new(); reducers as usize];
    for (k, v) in counts {
        let p = &mut parts[partition(k, reducers) as usize];
        p.extend_from_slice(k);
        p.push(b'\t');
        p.extend_from_slice(v.to_string().as_bytes());
        p.push(b'\n');
    }
    for (r, want) in parts.iter().enumerate() {
        let path = out.join(format!("part-{r:05}"));
        let got = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if got != *want {
            return Err(format!(
                "{} differs from the single-threaded count",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Whether two output directories hold the same part files, byte for byte.
pub(crate) fn same_parts(a: &Path, b: &Path, reducers: u32) -> Result<(), String> {
    for r in 0..reducers {
        let name = format!("part-{r:05}");
        let x = std::fs::read(a.join(&name))
            .map_err(|e| format!("{}: {e}", a.join(&name).display()))?;
        let y = std::fs::read(b.join(&name))
            .map_err(|e| format!("{}: {e}", b.join(&name).display()))?;
        if x != y {
            return Err(format!("{name} differs ({} vs {} bytes)", x.len(), y.len()));
        }
    }
    Ok(())
}
