//! An access-log report: requests per path and per status from
//! combined-log-format lines, malformed lines skipped and counted.
//!
//! ```sh
//! cargo run --release -p forkyard-mapreduce --example logs                    # over 200,000 generated lines
//! cargo run --release -p forkyard-mapreduce --example logs -- access.log ...  # over your logs
//! ```

use std::collections::BTreeMap;

use anyhow::Result;
use forkyard_mapreduce::{Emit, Job, LineFiles, MapReduce};

/// Counts by `(what, value)`: `("path", "/index.html")`, `("status", "404")`,
/// `("malformed", "lines")`, and bytes sent in `("bytes", "total")`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LogReport;

impl Job for LogReport {
    type Key = (String, String);
    type Value = u64;
    type Output = u64;
    const COMBINES: bool = true;

    fn name() -> &'static str {
        "logs"
    }

    fn map(&self, line: &[u8], emit: &mut Emit<'_, (String, String), u64>) {
        match parse(line) {
            Some((path, status, bytes)) => {
                emit.emit(("path".into(), path.into()), 1);
                emit.emit(("status".into(), status.into()), 1);
                emit.emit(("bytes".into(), "total".into()), bytes);
            }
            None => emit.emit(("malformed".into(), "lines".into()), 1),
        }
    }

    fn combine(&self, _: &(String, String), acc: &mut u64, more: u64) {
        *acc += more;
    }

    fn reduce(&self, _: &(String, String), values: Vec<u64>, emit: &mut dyn FnMut(u64)) {
        emit(values.iter().sum());
    }
}

/// `host ident user [time] "METHOD PATH PROTO" STATUS BYTES "referer" "agent"`:
/// the path, the status and the bytes, or `None` for a malformed line.
fn parse(line: &[u8]) -> Option<(&str, &str, u64)> {
    let line = std::str::from_utf8(line).ok()?;
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split(' ');
    let (_method, path, _proto) = (request.next()?, request.next()?, request.next()?);
    let mut fields = rest.split_whitespace();
    let status = fields.next()?;
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = match fields.next()? {
        "-" => 0,
        n => n.parse().ok()?,
    };
    Some((path, status, bytes))
}

fn generate(path: &std::path::Path, lines: usize) -> Result<()> {
    use std::io::Write;
    let paths = [
        "/",
        "/index.html",
        "/about",
        "/api/items",
        "/api/items/42",
        "/login",
        "/static/app.js",
        "/static/app.css",
        "/favicon.ico",
        "/search?q=rust",
    ];
    let statuses = ["200", "200", "200", "200", "304", "404", "500", "301"];
    let mut rng = fastrand::Rng::with_seed(9);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..lines {
        if rng.u32(0..100) == 0 {
            writeln!(out, "garbage line {i} without the format")?;
            continue;
        }
        // Skewed: the first paths are the popular ones.
        let p = paths[rng.usize(0..paths.len()).min(rng.usize(0..paths.len()))];
        let s = statuses[rng.usize(0..statuses.len())];
        writeln!(
            out,
            "10.0.{}.{} - - [07/Dec/2026:10:{:02}:{:02} +0000] \"GET {p} HTTP/1.1\" {s} {} \"-\" \"curl/8.0\"",
            rng.u8(..),
            rng.u8(..),
            i / 60 % 60,
            i % 60,
            rng.u32(100..20_000)
        )?;
    }
    Ok(())
}

fn main() -> Result<()> {
    forkyard_mapreduce::serve_if_worker::<LogReport>();
    let dir = tempfile::tempdir()?;
    let mut inputs: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    if inputs.is_empty() {
        let path = dir.path().join("access.log");
        generate(&path, 200_000)?;
        inputs.push(path);
    }
    let out = dir.path().join("report");
    let report = MapReduce::new(LogReport)
        .input(LineFiles::new(&inputs))
        .out_dir(&out)
        .workers(2)
        .reducers(2)
        .run_blocking()?;
    // The output is small: read it back and rank it.
    let mut counts: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for r in 0..2 {
        for line in std::fs::read_to_string(out.join(format!("part-{r:05}")))?.lines() {
            let mut f = line.split('\t');
            if let (Some(what), Some(value), Some(n)) = (f.next(), f.next(), f.next()) {
                counts
                    .entry(what.into())
                    .or_default()
                    .push((value.into(), n.parse()?));
            }
        }
    }
    for v in counts.values_mut() {
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    println!("top paths:");
    for (path, n) in counts.get("path").into_iter().flatten().take(10) {
        println!("  {n:>8}  {path}");
    }
    println!("statuses:");
    for (status, n) in counts.get("status").into_iter().flatten() {
        println!("  {n:>8}  {status}");
    }
    let malformed = counts
        .get("malformed")
        .and_then(|v| v.first())
        .map_or(0, |v| v.1);
    let bytes = counts
        .get("bytes")
        .and_then(|v| v.first())
        .map_or(0, |v| v.1);
    println!(
        "malformed lines skipped: {malformed}; bytes sent: {:.1} MB",
        bytes as f64 / 1e6
    );
    println!("{}", report.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_combined_format() {
        let line = br#"1.2.3.4 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08""#;
        assert_eq!(super::parse(line), Some(("/apache_pb.gif", "200", 2326)));
        assert_eq!(super::parse(b"not a log line"), None);
    }
}
