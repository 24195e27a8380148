//! The audit log: escaping, chaining, concurrent writers, and a verifier that points at
//! every single-record tampering.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use forkyard_secure::audit::{self, AuditLog, AuditOptions, Finding, Head, Tamper, VerifyOptions};
use forkyard_secure::{Operand, Policy, ProgramRule, Request, Sandbox, Value};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use crate::support::{Uploads, probe};

fn audited_policy(log: &AuditLog, root: &Path) -> Policy {
    Policy::builder()
        .program(
            "p",
            ProgramRule::path(probe())
                .flag_value("-q", Value::integer(1, 100))
                .operand(Operand::path_beneath(root)),
        )
        .sandbox(Sandbox::minimal())
        .audit(log.clone())
        .build()
        .unwrap()
}

/// Writes `n` records (alternating allowed and denied decisions) and returns the file.
fn log_with(n: usize, options: AuditOptions) -> (tempfile::TempDir, std::path::PathBuf, Head) {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open_with(&path, options).unwrap();
    let policy = audited_policy(&log, &uploads.root());
    for i in 0..n {
        let request = if i % 2 == 0 {
            Request::new("p")
                .args(["-q", &(i + 1).to_string(), "in.txt"])
                .caller(format!("user{i}"))
        } else {
            Request::new("p")
                .args(["../etc/passwd"])
                .caller(format!("user{i}"))
        };
        let _ = policy.validate(&request);
    }
    let head = log.head();
    assert_eq!(head.seq, n as u64);
    (dir, path, head)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn decision_records_snapshot() {
    let (_dir, path, _) = log_with(2, AuditOptions::default());
    let records: Vec<serde_json::Value> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    insta::assert_json_snapshot!("decision_records", records, {
        "[].time_ms" => "[time]",
        "[].prev" => "[hash]",
        "[].hash" => "[hash]",
        "[].policy" => "[policy]",
        "[].exe" => "[exe]",
        "[].paths[].path" => "[path]",
        "[].env_sha256" => "[digest]",
    });
    let v = audit::verify(&path).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.lines, 2);
}

/// CWE-117: nothing in a request can start a new line, forge a record, or reach a terminal
/// raw. Each hostile argument round-trips exactly through the JSON.
#[test]
fn hostile_arguments_cannot_forge_lines_or_escape_the_terminal() {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let policy = audited_policy(&log, &uploads.root());
    let hostile: Vec<Vec<u8>> = vec![
        b"x\n{\"seq\":99,\"forged\":1}".to_vec(),
        b"\r\n".to_vec(),
        b"\x1b[2J\x1b]0;pwned\x07".to_vec(),
        "\u{202e}gpj.exe".as_bytes().to_vec(),
        "\u{2028}line separator".as_bytes().to_vec(),
        b"\xff\xfe invalid utf-8".to_vec(),
        b"quote\" and backslash \\".to_vec(),
    ];
    for arg in &hostile {
        let _ = policy.validate(&Request::new("p").arg(OsStr::from_bytes(arg)));
    }
    // A megabyte argument is refused by length and logged as length + digest.
    let mega = vec![b'A'; 1 << 20];
    let _ = policy.validate(&Request::new("p").arg(OsStr::from_bytes(&mega)));

    let text = std::fs::read(&path).unwrap();
    assert!(
        text.iter()
            .all(|&b| b.is_ascii() && (b >= 0x20 || b == b'\n') && b != 0x7f),
        "only printable ASCII"
    );
    let all = lines(&path);
    assert_eq!(all.len(), hostile.len() + 1, "one line per decision");
    for (line, arg) in all.iter().zip(&hostile) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(record.get("forged").is_none());
        let logged = &record["request"][0];
        match std::str::from_utf8(arg) {
            Ok(text) => assert_eq!(logged.as_str(), Some(text)),
            Err(_) => {
                let hex: String = arg.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(logged["hex"].as_str(), Some(hex.as_str()));
            }
        }
    }
    let last: serde_json::Value = serde_json::from_str(all.last().unwrap()).unwrap();
    assert_eq!(last["request"][0]["len"], 1 << 20);
    assert_eq!(last["rule"], "argv.length");
    assert!(line_len_max(&all) < 4096, "no megabyte line");
    assert!(audit::verify(&path).unwrap().is_intact());
}

fn line_len_max(lines: &[String]) -> usize {
    lines.iter().map(String::len).max().unwrap_or(0)
}

#[test]
fn concurrent_writers_never_interleave_and_keep_one_chain() {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // Two independent handles (separate open file descriptions, as two processes would
    // have), each shared by two threads.
    let handles = [
        AuditLog::open(&path).unwrap(),
        AuditLog::open(&path).unwrap(),
    ];
    let per_thread = 40;
    std::thread::scope(|s| {
        for log in &handles {
            for t in 0..2 {
                let policy = audited_policy(log, &uploads.root());
                s.spawn(move || {
                    for i in 0..per_thread {
                        let arg = format!("thread-{t}-{i}-{}", "x".repeat(i * 50));
                        let _ = policy.validate(&Request::new("p").arg(arg));
                    }
                });
            }
        }
    });
    let v = audit::verify(&path).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.lines, 4 * per_thread);
    assert_eq!(v.head.seq, (4 * per_thread) as u64);
    // A handle opened afterwards continues the same chain.
    let late = AuditLog::open(&path).unwrap();
    assert_eq!(late.head(), v.head);
}

#[test]
fn a_log_with_a_torn_last_line_is_not_continued() {
    let (_dir, path, _) = log_with(2, AuditOptions::default());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 10);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        AuditLog::open(&path),
        Err(forkyard_secure::AuditError::BadTail { .. })
    ));
}

/// Recomputes a record's plain SHA-256 seal, as an attacker without a key would.
fn reseal(line: &str) -> String {
    let split = line.len() - r#","hash":""}"#.len() - 64;
    let body = format!("{}}}", &line[..split]);
    let hash: String = Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{},\"hash\":\"{hash}\"}}", &line[..split])
}

#[derive(Debug, Clone)]
enum Tampering {
    /// Change one character inside line k.
    EditChar {
        k: usize,
        at: usize,
    },
    /// Change `decision` in line k and recompute its seal.
    EditAndReseal {
        k: usize,
    },
    Delete {
        k: usize,
    },
    /// Swap lines k and k+1.
    Swap {
        k: usize,
    },
    /// Insert a copy of line j before line k.
    Replay {
        k: usize,
        j: usize,
    },
    /// Insert a made-up line before line k.
    Garbage {
        k: usize,
    },
}

fn tampering(n: usize) -> impl Strategy<Value = Tampering> {
    prop_oneof![
        (0..n, any::<usize>()).prop_map(|(k, at)| Tampering::EditChar { k, at }),
        (0..n).prop_map(|k| Tampering::EditAndReseal { k }),
        (0..n).prop_map(|k| Tampering::Delete { k }),
        (0..n - 1).prop_map(|k| Tampering::Swap { k }),
        (0..=n, 0..n).prop_map(|(k, j)| Tampering::Replay { k, j }),
        (0..=n).prop_map(|k| Tampering::Garbage { k }),
    ]
}

fn apply(lines: &[String], t: &Tampering) -> Vec<String> {
    let mut out = lines.to_vec();
    match *t {
        Tampering::EditChar { k, at } => {
            let bytes = out[k].as_bytes();
            let positions: Vec<usize> = (0..bytes.len())
                .filter(|&i| bytes[i].is_ascii_alphanumeric())
                .collect();
            let i = positions[at % positions.len()];
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'1' { b'2' } else { b'1' };
            out[k] = String::from_utf8(b).unwrap();
        }
        Tampering::EditAndReseal { k } => {
            let edited = if out[k].contains("\"denied\"") {
                out[k].replace("\"denied\"", "\"allowed\"")
            } else {
                out[k].replace("\"allowed\"", "\"denied\"")
            };
            out[k] = reseal(&edited);
        }
        Tampering::Delete { k } => {
            out.remove(k);
        }
        Tampering::Swap { k } => out.swap(k, k + 1),
        Tampering::Replay { k, j } => {
            let copy = out[j].clone();
            out.insert(k, copy);
        }
        Tampering::Garbage { k } => out.insert(
            k,
            r#"{"seq":2,"kind":"decision","decision":"allowed"}"#.into(),
        ),
    }
    out
}

fn verify_lines(lines: &[String], options: &VerifyOptions) -> audit::Verification {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.jsonl");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    audit::verify_with(&path, options).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every single-record tampering is found, at the right line and with the right kind.
    /// The one thing a chain cannot see from the inside (the last record removed, or the
    /// last record edited and resealed) is caught once the head is checked against a copy.
    #[test]
    fn the_verifier_pinpoints_every_single_record_tampering(
        (n, t) in (3usize..9).prop_flat_map(|n| (Just(n), tampering(n)))
    ) {
        let (_dir, path, head) = log_with(n, AuditOptions::default());
        let original = lines(&path);
        let tampered = apply(&original, &t);
        let with_head = VerifyOptions::default().expected_head(head.clone());
        let found = verify_lines(&tampered, &VerifyOptions::default());
        let found_with_head = verify_lines(&tampered, &with_head);
        let first = |v: &audit::Verification| v.findings.first().cloned();
        let line = |f: &Option<Finding>| f.as_ref().map(|f| f.line);
        match t {
            Tampering::EditChar { k, .. } => {
                let f = first(&found);
                prop_assert_eq!(line(&f), Some(k + 1), "{:?}", found.findings);
                prop_assert!(matches!(f.unwrap().tamper, Tamper::Edited | Tamper::Malformed));
            }
            Tampering::EditAndReseal { k } if k + 1 < n => {
                prop_assert_eq!(first(&found), Some(Finding { line: k + 1, tamper: Tamper::Edited }), "{:?}", found.findings);
            }
            Tampering::EditAndReseal { k } => {
                prop_assert!(found.is_intact(), "a resealed last record is invisible without a head");
                prop_assert_eq!(first(&found_with_head), Some(Finding { line: k + 1, tamper: Tamper::Edited }));
            }
            Tampering::Delete { k } if k + 1 < n => {
                let seq = k as u64 + 1;
                prop_assert_eq!(first(&found), Some(Finding { line: k + 1, tamper: Tamper::Removed { first_seq: seq, last_seq: seq } }), "{:?}", found.findings);
            }
            Tampering::Delete { k } => {
                prop_assert!(found.is_intact(), "a removed last record is invisible without a head");
                prop_assert_eq!(
                    first(&found_with_head),
                    Some(Finding { line: k + 1, tamper: Tamper::Truncated { first_seq: n as u64, last_seq: n as u64 } })
                );
            }
            Tampering::Swap { k } => {
                prop_assert_eq!(first(&found), Some(Finding { line: k + 1, tamper: Tamper::Reordered { seq: k as u64 + 2 } }), "{:?}", found.findings);
            }
            Tampering::Replay { k, j } => {
                // A copy inserted right before (or right after) its original is the same
                // bytes twice; either may be called the inserted one.
                let f = first(&found).expect("found");
                prop_assert_eq!(&f.tamper, &Tamper::Inserted, "{:?}", found.findings);
                if j == k { prop_assert!(f.line == k + 1 || f.line == k + 2, "{:?}", f); }
                else { prop_assert_eq!(f.line, k + 1, "{:?}", found.findings); }
            }
            Tampering::Garbage { k } => {
                prop_assert_eq!(first(&found), Some(Finding { line: k + 1, tamper: Tamper::Malformed }));
            }
        }
        // Whatever the tampering, the untouched original verifies, with or without the head.
        prop_assert!(verify_lines(&original, &with_head).is_intact());
    }

    /// With an HMAC key even the last record cannot be resealed by someone without the key.
    #[test]
    fn with_a_key_a_resealed_record_is_caught_anywhere(n in 3usize..7, k in 0usize..7) {
        let k = k % n;
        let key = b"kept far from the log";
        let (_dir, path, _) = log_with(n, AuditOptions::default().hmac_key(key));
        let original = lines(&path);
        let options = VerifyOptions::default().hmac_key(key);
        prop_assert!(verify_lines(&original, &options).is_intact());
        let tampered = apply(&original, &Tampering::EditAndReseal { k });
        let found = verify_lines(&tampered, &options);
        prop_assert_eq!(found.findings.first().map(|f| f.line), Some(k + 1));
        // And a log written with a key does not verify without it.
        prop_assert!(!verify_lines(&original, &VerifyOptions::default()).is_intact());
    }

    /// The verifier reads whatever it is given without panicking, and never calls garbage
    /// intact.
    #[test]
    fn the_verifier_survives_garbage(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.jsonl");
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend(l.iter().filter(|&&b| b != b'\n'));
            bytes.push(b'\n');
        }
        std::fs::write(&path, &bytes).unwrap();
        let v = audit::verify(&path).unwrap();
        prop_assert!(!v.is_intact());
        prop_assert_eq!(v.findings[0].line, 1);
    }
}

/// An argument as the log wrote it: a JSON string, or `{"hex": ...}` for bytes that are not
/// UTF-8. (A refused request's long arguments are digested instead; see below.)
fn logged_arg(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(text) => text.as_bytes().to_vec(),
        other => {
            let hex = other["hex"]
                .as_str()
                .unwrap_or_else(|| panic!("not in full: {other}"));
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        }
    }
}

#[tokio::test]
async fn the_longest_accepted_argv_runs_and_is_recovered_from_the_log_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let policy = Policy::builder()
        .program(
            "p",
            ProgramRule::path(probe())
                .operands(Value::text())
                .layout(forkyard_secure::Layout::AsGiven),
        )
        .sandbox(Sandbox::minimal())
        .audit(log.clone())
        .build()
        .unwrap();
    // As many arguments as the rule takes (64), each as long as it takes (4096 bytes),
    // full of what JSON must escape and what a terminal would interpret.
    let pieces = [
        "\"quoted\" ",
        "back\\slash ",
        "new\nline ",
        "tab\t ",
        "\u{1b}[31m ",
        "é€😀 ",
    ];
    let mut args = vec!["argv".to_string()];
    for i in 0..63 {
        let mut arg = format!("a{i} ");
        let mut k = i;
        while arg.len() < 4096 {
            let piece = pieces[k % pieces.len()];
            if arg.len() + piece.len() > 4096 {
                arg.push_str(&"x".repeat(4096 - arg.len()));
            } else {
                arg.push_str(piece);
            }
            k += 1;
        }
        assert_eq!(arg.len(), 4096);
        args.push(arg);
    }
    let out = policy.run("p", &args).await.unwrap();
    // The program got exactly these arguments (the probe prints each one hex-encoded).
    let received: Vec<String> = out.stdout.text().lines().map(String::from).collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let expected: Vec<String> = args[1..].iter().map(|a| hex(a.as_bytes())).collect();
    assert_eq!(received, expected);
    // And the log has them, byte for byte.
    let records: Vec<serde_json::Value> = lines(&path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decision = records.iter().find(|r| r["kind"] == "decision").unwrap();
    assert_eq!(decision["decision"], "allowed");
    let logged: Vec<Vec<u8>> = decision["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(logged_arg)
        .collect();
    let wanted: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    assert_eq!(logged, wanted);
    let request: Vec<Vec<u8>> = decision["request"]
        .as_array()
        .unwrap()
        .iter()
        .map(logged_arg)
        .collect();
    assert_eq!(request, wanted);
    assert!(audit::verify(&path).unwrap().is_intact());

    // A refused request cannot grow the log by what it sends: a 1 MiB argument is digested.
    let huge = "y".repeat(1 << 20);
    assert!(
        policy
            .validate(&Request::new("p").args([huge.as_str()]))
            .is_err()
    );
    let last = lines(&path).pop().unwrap();
    assert!(
        last.len() < 4096,
        "a refused record of {} bytes",
        last.len()
    );
    let record: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(record["decision"], "denied");
    assert_eq!(record["request"][0]["len"], 1 << 20);
}
