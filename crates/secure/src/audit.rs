//! A tamper-evident audit log: one JSON line per decision and per exit, hash-chained.
//!
//! # Format
//!
//! Every line is one JSON object, ASCII only, ending in
//! `"prev":"<64 hex>","hash":"<64 hex>"}` and a newline:
//!
//! * `seq` counts records from 1;
//! * `prev` is the `hash` of the previous record (64 zeros for the first);
//! * `hash` is SHA-256 (or HMAC-SHA-256 with a key, see [`AuditOptions::hmac_key`]) of the
//!   line up to and including `prev`'s value, with the closing `}` appended.
//!
//! So each record seals itself *and* the one before it: editing a byte breaks the record's own
//! hash; removing, reordering or inserting records breaks `prev` links or the `seq` sequence.
//! [`verify`] walks the file and says which line was edited, removed, reordered or inserted.
//!
//! # Escaping
//!
//! Arguments come from untrusted requests. They are written with JSON escaping *and* every
//! non-ASCII character as `\uXXXX`, so neither a newline (`\n{"forged":1}`) nor a terminal
//! escape (`\x1b[2J`) nor a bidi override reaches the file raw. An argument that is not UTF-8
//! is written as `{"hex":"..."}`. A record can therefore never span two lines or imitate
//! another record. Every argument of an *accepted* request, and of the argv that runs, is
//! written in full (the grammar's `max_args` and `max_arg_len` bound it), so the log
//! reproduces every run byte for byte; an argument of a *refused* request longer than 1024
//! bytes is written as its length, sha256 and first 64 bytes, so a hostile caller cannot
//! grow the log by sending more.
//!
//! # Concurrency and durability
//!
//! Each record is written with one `write(2)` to a file opened `O_APPEND`, under an exclusive
//! `flock(2)`, so concurrent writers (threads sharing one [`AuditLog`], several handles, or
//! several processes) never interleave partial lines and always chain onto the true last
//! record. Nothing is buffered in user space; [`AuditOptions::fsync`] adds an `fsync` per
//! record.
//!
//! # What it does not protect against
//!
//! A plain hash chain can be *recomputed* by someone who can rewrite the file: after editing
//! line k they can rehash k and every later line. Two counters: an HMAC key kept away from
//! the log ([`AuditOptions::hmac_key`]), and the current [`Head`] copied somewhere else
//! (another machine, a ticket, a transparency log) and passed to [`verify_with`]; the head
//! also reveals a truncated tail, which no chain can see from the inside.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{KeyInit as _, Mac as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::{AuditError, VerifyError};
use crate::program::to_hex;

const ZERO_HASH: [u8; 32] = [0; 32];
const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

/// Options for [`AuditLog::open_with`].
#[derive(Clone, Default)]
pub struct AuditOptions {
    key: Option<Arc<[u8]>>,
    fsync: bool,
}

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("fsync", &self.fsync)
            .finish()
    }
}

impl AuditOptions {
    /// Chains with HMAC-SHA-256 under `key` instead of plain SHA-256: without the key nobody
    /// can recompute the chain after editing it. Verify with the same key.
    pub fn hmac_key(mut self, key: impl AsRef<[u8]>) -> AuditOptions {
        self.key = Some(Arc::from(key.as_ref()));
        self
    }

    /// `fsync(2)` after every record (default: off; records still go straight to the kernel).
    pub fn fsync(mut self, fsync: bool) -> AuditOptions {
        self.fsync = fsync;
        self
    }
}

/// The newest record of a log: its sequence number and hash. Keep a copy outside the log to
/// detect truncation and recomputed chains ([`verify_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the newest record (0 for an empty log).
    pub seq: u64,
    /// Its hash, lowercase hex.
    pub hash: String,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seq {} hash {}", self.seq, &self.hash)
    }
}

/// An append-only, hash-chained JSON-lines audit log. Cloning shares the writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
    path: Arc<Path>,
}

#[derive(Debug)]
struct Writer {
    file: File,
    options: AuditOptions,
    chain: Chain,
}

#[derive(Debug)]
struct Chain {
    seq: u64,
    last_hash: [u8; 32],
    /// File length after our last append; if the file grew since, someone else appended and
    /// we re-read the tail before chaining.
    end: u64,
}

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path`, continuing its chain.
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        AuditLog::open_with(path, AuditOptions::default())
    }

    /// Opens the log with options.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        let path = path.as_ref();
        let io_err = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err)?;
        let mut writer = Writer {
            file,
            options,
            chain: Chain {
                seq: 0,
                last_hash: ZERO_HASH,
                end: 0,
            },
        };
        {
            let _lock = Flock::exclusive(&writer.file).map_err(io_err)?;
            writer.chain.resync(&writer.file, path)?;
        }
        Ok(AuditLog {
            inner: Arc::new(Mutex::new(writer)),
            path: Arc::from(path),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest record as this handle last saw it.
    pub fn head(&self) -> Head {
        let writer = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Head {
            seq: writer.chain.seq,
            hash: to_hex(&writer.chain.last_hash),
        }
    }

    /// Appends one record; returns its sequence number.
    pub(crate) fn append<T: Serialize>(&self, event: &T) -> Result<u64, AuditError> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let writer = &mut *guard;
        let path = &self.path;
        let io_err = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = Flock::exclusive(&writer.file).map_err(io_err)?;
        let len = writer.file.metadata().map_err(io_err)?.len();
        if len != writer.chain.end {
            writer.chain.resync(&writer.file, path)?;
        }
        let seq = writer.chain.seq + 1;
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let envelope = Envelope {
            seq,
            time_ms,
            event,
            prev: to_hex(&writer.chain.last_hash),
        };
        let json = serde_json::to_string(&envelope)
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        let body = ascii_only(&json);
        let hash = chain_hash(writer.options.key.as_deref(), body.as_bytes());
        let mut line = body;
        line.pop(); // the closing brace, re-added after the hash
        line.push_str(r#","hash":""#);
        line.push_str(&to_hex(&hash));
        line.push_str("\"}\n");
        // One write(2) of the whole line: with O_APPEND and the flock held, no other writer's
        // bytes can land inside it.
        (&writer.file).write_all(line.as_bytes()).map_err(io_err)?;
        if writer.options.fsync {
            writer.file.sync_data().map_err(io_err)?;
        }
        writer.chain.seq = seq;
        writer.chain.last_hash = hash;
        writer.chain.end = len + line.len() as u64;
        drop(lock);
        Ok(seq)
    }
}

impl Chain {
    /// Re-reads the last line of the file to learn the chain's head.
    fn resync(&mut self, file: &File, path: &Path) -> Result<(), AuditError> {
        let io_err = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let len = file.metadata().map_err(io_err)?.len();
        if len == 0 {
            self.seq = 0;
            self.last_hash = ZERO_HASH;
            self.end = 0;
            return Ok(());
        }
        let last = read_last_line(file, len).map_err(io_err)?;
        let parsed = last.as_deref().and_then(|l| parse_line(l, None).ok());
        let Some(parsed) = parsed else {
            return Err(AuditError::BadTail {
                path: path.to_owned(),
            });
        };
        self.seq = parsed.seq;
        self.last_hash = parsed.claimed_hash;
        self.end = len;
        Ok(())
    }
}

/// Reads the final line (without its newline). `None` if the file does not end in a newline.
fn read_last_line(mut file: &File, len: u64) -> io::Result<Option<Vec<u8>>> {
    let mut tail = Vec::new();
    let mut pos = len;
    let chunk = 4096u64;
    loop {
        let start = pos.saturating_sub(chunk);
        let mut buf = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
        pos = start;
        if tail.last() != Some(&b'\n') {
            return Ok(None);
        }
        let body = &tail[..tail.len() - 1];
        if let Some(nl) = body.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(body[nl + 1..].to_vec()));
        }
        if pos == 0 {
            return Ok(Some(body.to_vec()));
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    seq: u64,
    time_ms: u64,
    #[serde(flatten)]
    event: &'a T,
    prev: String,
}

fn chain_hash(key: Option<&[u8]>, body: &[u8]) -> [u8; 32] {
    match key {
        None => Sha256::digest(body).into(),
        Some(key) => {
            let mut mac =
                hmac::Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key length");
            mac.update(body);
            mac.finalize().into_bytes().into()
        }
    }
}

/// Re-escapes serde_json's output so that it is pure ASCII: every non-ASCII character and
/// DEL become `\uXXXX` escapes (surrogate pairs above the BMP). Non-ASCII characters can only
/// occur inside JSON strings, where such escapes mean the same thing.
fn ascii_only(json: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// One argument as written to the log.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum AuditArg {
    Text(String),
    Hex {
        hex: String,
    },
    Long {
        len: usize,
        sha256: String,
        head: String,
    },
}

/// The longest argument of a *refused* request logged in full; a longer one is logged as its
/// length, digest and first 64 bytes, so that a hostile caller cannot grow the log without
/// bound. Accepted arguments are always logged in full: the log reproduces every run.
const MAX_LOGGED_REFUSED_ARG: usize = 1024;

impl AuditArg {
    /// The argument in full: as text when it is UTF-8, else hex-encoded.
    pub(crate) fn new(arg: &std::ffi::OsStr) -> AuditArg {
        let bytes = arg.as_bytes();
        match std::str::from_utf8(bytes) {
            Ok(text) => AuditArg::Text(text.to_owned()),
            Err(_) => AuditArg::Hex { hex: to_hex(bytes) },
        }
    }

    /// The argument of a refused request: in full up to [`MAX_LOGGED_REFUSED_ARG`] bytes.
    pub(crate) fn capped(arg: &std::ffi::OsStr) -> AuditArg {
        let bytes = arg.as_bytes();
        if bytes.len() > MAX_LOGGED_REFUSED_ARG {
            let head = String::from_utf8_lossy(&bytes[..64]).into_owned();
            return AuditArg::Long {
                len: bytes.len(),
                sha256: to_hex(&Sha256::digest(bytes)),
                head,
            };
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => AuditArg::Text(text.to_owned()),
            Err(_) => AuditArg::Hex { hex: to_hex(bytes) },
        }
    }
}

/// Verification options: the HMAC key the log was written with, and a head saved elsewhere.
#[derive(Clone, Default)]
pub struct VerifyOptions {
    key: Option<Arc<[u8]>>,
    expected_head: Option<Head>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("expected_head", &self.expected_head)
            .finish()
    }
}

impl VerifyOptions {
    /// The HMAC key the log was written with.
    pub fn hmac_key(mut self, key: impl AsRef<[u8]>) -> VerifyOptions {
        self.key = Some(Arc::from(key.as_ref()));
        self
    }

    /// A head saved outside the log: the log must contain exactly this record at this
    /// sequence number (more records after it are fine).
    pub fn expected_head(mut self, head: Head) -> VerifyOptions {
        self.expected_head = Some(head);
        self
    }
}

/// What kind of tampering a [`Finding`] points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum Tamper {
    /// The line is not a record this crate writes (bad JSON, missing fields, bad hash field).
    Malformed,
    /// The record's content no longer matches its hash, or its hash no longer matches the
    /// `prev` the next record recorded (edited and rehashed).
    Edited,
    /// Records are missing before this line.
    Removed {
        /// First missing sequence number.
        first_seq: u64,
        /// Last missing sequence number.
        last_seq: u64,
    },
    /// This record is out of order.
    Reordered {
        /// The record's sequence number.
        seq: u64,
    },
    /// This line is not part of the chain (a forged or replayed record).
    Inserted,
    /// The log ends before the expected head: records at the end were removed.
    Truncated {
        /// First missing sequence number.
        first_seq: u64,
        /// Last missing sequence number (the expected head's).
        last_seq: u64,
    },
}

/// One problem found by [`verify`], pinned to a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The line the problem is at (for [`Tamper::Truncated`]: one past the last line).
    pub line: usize,
    /// What is wrong there.
    #[serde(flatten)]
    pub tamper: Tamper,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tamper {
            Tamper::Malformed => write!(f, "line {}: not a valid audit record", self.line),
            Tamper::Edited => write!(f, "line {}: record was edited", self.line),
            Tamper::Removed {
                first_seq,
                last_seq,
            } => {
                write!(
                    f,
                    "line {}: records {first_seq}..={last_seq} were removed before it",
                    self.line
                )
            }
            Tamper::Reordered { seq } => {
                write!(f, "line {}: record {seq} is out of order", self.line)
            }
            Tamper::Inserted => write!(f, "line {}: record was inserted", self.line),
            Tamper::Truncated {
                first_seq,
                last_seq,
            } => {
                write!(
                    f,
                    "line {}: log ends early, records {first_seq}..={last_seq} are missing",
                    self.line
                )
            }
        }
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Lines read.
    pub lines: usize,
    /// The newest record that chains correctly.
    pub head: Head,
    /// Problems, in file order. Empty means intact.
    pub findings: Vec<Finding>,
}

impl Verification {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies the log at `path` (plain SHA-256 chain, no expected head).
pub fn verify(path: impl AsRef<Path>) -> Result<Verification, VerifyError> {
    verify_with(path, &VerifyOptions::default())
}

/// Verifies the log at `path` with options.
pub fn verify_with(
    path: impl AsRef<Path>,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_bytes(&data, options))
}

struct Parsed {
    seq: u64,
    prev: [u8; 32],
    claimed_hash: [u8; 32],
    /// Whether `claimed_hash` is the hash of the body.
    sealed: bool,
}

fn parse_line(line: &[u8], key: Option<&[u8]>) -> Result<Parsed, ()> {
    #[derive(serde::Deserialize)]
    struct Fields {
        seq: u64,
        prev: String,
        hash: String,
    }
    if line.len() < HASH_SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return Err(());
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    if !line[split..].starts_with(br#","hash":""#) {
        return Err(());
    }
    let fields: Fields = serde_json::from_slice(line).map_err(|_| ())?;
    let prev = parse_hash(&fields.prev).ok_or(())?;
    let claimed_hash = parse_hash(&fields.hash).ok_or(())?;
    let mut body = line[..split].to_vec();
    body.push(b'}');
    // The suffix must be exactly the hash field, and the body must end with the prev field,
    // so nothing unhashed can hide after `prev`.
    if !line[split..].ends_with(format!("{}\"}}", fields.hash).as_bytes())
        || !body.ends_with(format!(r#""prev":"{}"}}"#, fields.prev).as_bytes())
    {
        return Err(());
    }
    let sealed = chain_hash(key, &body) == claimed_hash;
    Ok(Parsed {
        seq: fields.seq,
        prev,
        claimed_hash,
        sealed,
    })
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The verifier proper, on bytes (so tests can tamper in memory).
pub(crate) fn verify_bytes(data: &[u8], options: &VerifyOptions) -> Verification {
    let key = options.key.as_deref();
    let mut raw: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if raw.last() == Some(&&b""[..]) {
        raw.pop();
    }
    let parsed: Vec<Option<Parsed>> = raw.iter().map(|l| parse_line(l, key).ok()).collect();
    let mut findings = Vec::new();
    let mut expected_prev = ZERO_HASH;
    let mut expected_seq = 1u64;
    let mut seen = std::collections::HashSet::new();
    let chains = |p: &Option<Parsed>, prev: &[u8; 32], seq: u64| {
        p.as_ref()
            .is_some_and(|p| p.sealed && &p.prev == prev && p.seq == seq)
    };

    let mut i = 0;
    while i < parsed.len() {
        let line = i + 1;
        let Some(p) = &parsed[i] else {
            findings.push(Finding {
                line,
                tamper: Tamper::Malformed,
            });
            i += 1;
            continue;
        };
        if !p.sealed {
            // Content edited without recomputing the hash; the hash itself still links the
            // chain, so carry on from it.
            // Its seq field may be the edited part, so assume it is the record that belongs
            // here.
            findings.push(Finding {
                line,
                tamper: Tamper::Edited,
            });
            seen.insert(expected_seq);
            expected_prev = p.claimed_hash;
            expected_seq += 1;
            i += 1;
            continue;
        }
        if p.prev == expected_prev && p.seq == expected_seq {
            seen.insert(p.seq);
            expected_prev = p.claimed_hash;
            expected_seq = p.seq + 1;
            i += 1;
            continue;
        }
        let next = parsed.get(i + 1);
        // Two adjacent records swapped: the next line is the one that belongs here, this one
        // chains onto it, and the line after the pair (if any) chains onto this one. (Without
        // that last test, a replayed copy of the next record would look like a swap.)
        let after_pair_continues = parsed
            .get(i + 2)
            .is_none_or(|after| chains(after, &p.claimed_hash, p.seq + 1));
        if let Some(n) = next
            && chains(n, &expected_prev, expected_seq)
            && let Some(n) = n
            && p.prev == n.claimed_hash
            && p.seq == n.seq + 1
            && after_pair_continues
        {
            findings.push(Finding {
                line,
                tamper: Tamper::Reordered { seq: p.seq },
            });
            seen.insert(p.seq);
            seen.insert(n.seq);
            expected_prev = p.claimed_hash;
            expected_seq = p.seq + 1;
            i += 2;
            continue;
        }
        // This line is extra: skipping it restores the chain, or it repeats a record already
        // seen, or it is the last line and claims a place already taken.
        let skip_restores = next.is_some_and(|n| chains(n, &expected_prev, expected_seq));
        if skip_restores || seen.contains(&p.seq) || (p.seq < expected_seq) {
            findings.push(Finding {
                line,
                tamper: Tamper::Inserted,
            });
            i += 1;
            continue;
        }
        if p.seq == expected_seq {
            // Right place, wrong link: the previous record was edited and rehashed (or this
            // one's link was).
            let blamed = if line > 1 { line - 1 } else { line };
            findings.push(Finding {
                line: blamed,
                tamper: Tamper::Edited,
            });
        } else {
            // p.seq > expected_seq: records are missing here, unless they turn up later.
            let later = parsed[i + 1..]
                .iter()
                .flatten()
                .any(|q| q.seq >= expected_seq && q.seq < p.seq);
            if later {
                findings.push(Finding {
                    line,
                    tamper: Tamper::Reordered { seq: p.seq },
                });
            } else {
                findings.push(Finding {
                    line,
                    tamper: Tamper::Removed {
                        first_seq: expected_seq,
                        last_seq: p.seq - 1,
                    },
                });
            }
        }
        seen.insert(p.seq);
        expected_prev = p.claimed_hash;
        expected_seq = p.seq + 1;
        i += 1;
    }

    let head = Head {
        seq: expected_seq - 1,
        hash: to_hex(&expected_prev),
    };
    if let Some(want) = &options.expected_head {
        if want.seq > head.seq {
            findings.push(Finding {
                line: parsed.len() + 1,
                tamper: Tamper::Truncated {
                    first_seq: head.seq + 1,
                    last_seq: want.seq,
                },
            });
        } else {
            let at = parsed
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| p.seq == want.seq));
            let matches = at
                .and_then(|at| parsed[at].as_ref())
                .is_some_and(|p| to_hex(&p.claimed_hash) == want.hash);
            if !matches {
                findings.push(Finding {
                    line: at.map_or(parsed.len(), |a| a + 1),
                    tamper: Tamper::Edited,
                });
            }
        }
    }
    Verification {
        lines: parsed.len(),
        head,
        findings,
    }
}

/// `flock(2)` held for one append.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Flock<'a>> {
        loop {
            match rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Flock(file)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}
