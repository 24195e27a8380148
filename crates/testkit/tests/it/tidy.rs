//! Tidy: the house rules, checked on every test run (`cargo nextest run --workspace`).
//!
//! Each rule reads the source tree, collects every violation with its file and line,
//! and fails with the whole list, so one run shows everything to fix. The rules:
//!
//! 1. every crate's `src/lib.rs` is a lesson: its crate docs have the headings *The
//!    problem*, *The approach*, *Example*, *Caveats* and *See also*, in that order
//!    (a heading may go on, as in "The approach: layers, each testable alone");
//! 2. test code does not `sleep(`: tests wait on events, or poll with a deadline
//!    through testkit's `wait_until` / `wait_for` (the only sanctioned sleeps);
//! 3. no `#[ignore]`: a test that cannot run is deleted or fixed;
//! 4. every `unsafe fn` has a `# Safety` section in its doc comment;
//! 5. every figure in a README names the command that reproduces it: a section (a
//!    heading and what follows, up to the next heading) that states a measured figure
//!    (a number with a unit of time, size, rate or a ratio such as `1.6x`) must show a
//!    command in itself or in a section it belongs to: a fenced block with a `cargo`
//!    line, or an inline `` `cargo ...` `` span.
//!
//! Crates are found by listing `crates/`, so a new crate is checked as soon as its folder
//! exists.
//! Violations in files whose owner is busy elsewhere are listed in [`KNOWN`] with a
//! reason: they are printed on every run, but do not fail it. An entry that no longer matches anything is printed as
//! stale, to be removed.

use std::path::{Path, PathBuf};

/// Known violations that do not fail the run: (rule or `*` for any, a file or a folder
/// prefix relative to the workspace root, why it is tolerated for now). Each is printed on
/// every run; an entry that matches nothing any more is printed as stale.
const KNOWN: &[(&str, &str, &str)] = &[];

fn is_known(v: &Violation) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|(rule, path, _)| (*rule == "*" || *rule == v.rule) && v.file.starts_with(path))
        .map(|(_, _, why)| *why)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the root")
        .to_path_buf()
}

/// One violation: a rule, a file (relative to the root) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    rule: &'static str,
    file: String,
    detail: String,
}

/// Every `.rs` file under `dir`, sorted (target and hidden folders skipped).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The crate folders under `crates/`, sorted.
fn crate_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("crates/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Rule 1: the lesson's headings, in order, in each crate's `src/lib.rs`.
fn lesson_sections(root: &Path) -> Vec<Violation> {
    const SECTIONS: [&str; 5] = [
        "The problem",
        "The approach",
        "Example",
        "Caveats",
        "See also",
    ];
    let mut found = Vec::new();
    for dir in crate_dirs(root) {
        let lib = dir.join("src/lib.rs");
        if !lib.exists() {
            continue;
        }
        let text = read(&lib);
        // The crate docs' headings: `//! # Title`, outside fenced code (where `# ` hides
        // a doc-test line).
        let mut in_code = false;
        let mut headings = Vec::new();
        for line in text.lines() {
            let Some(doc) = line.strip_prefix("//!") else {
                continue;
            };
            let doc = doc.strip_prefix(' ').unwrap_or(doc);
            if doc.trim_start().starts_with("```") {
                in_code = !in_code;
            } else if !in_code && let Some(h) = doc.strip_prefix("# ") {
                headings.push(h.trim().to_owned());
            }
        }
        let mut next = 0;
        let mut missing = Vec::new();
        for section in SECTIONS {
            match headings[next..].iter().position(|h| h.starts_with(section)) {
                Some(i) => next += i + 1,
                None => missing.push(section),
            }
        }
        if !missing.is_empty() {
            found.push(Violation {
                rule: "lesson",
                file: relative(root, &lib),
                detail: format!(
                    "crate docs lack (or misorder) {missing:?}; headings are {headings:?}"
                ),
            });
        }
    }
    found
}

/// Whether `path` (under a crate) is test code, and from which line on: integration
/// tests and `tests.rs` modules entirely, other sources from their `#[cfg(test)]` on.
fn test_code_start(path: &Path, text: &str) -> Option<usize> {
    let s = path.to_string_lossy();
    if s.contains("/tests/") || s.ends_with("/tests.rs") {
        return Some(0);
    }
    if s.contains("/src/") {
        return text.lines().position(|l| l.trim() == "#[cfg(test)]");
    }
    None
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//")
}

/// Rule 2: no `sleep(` in test code. The deadline helpers live in testkit's
/// `src/lib.rs`, which is not test code; the fixture binary sleeps on purpose (it
/// plays a misbehaving program) and is not test code either.
fn no_sleeps_in_tests(root: &Path) -> Vec<Violation> {
    let mut found = Vec::new();
    for dir in crate_dirs(root) {
        for file in rust_files(&dir) {
            // This file names the rule's pattern in its own code.
            if relative(&dir, &file).starts_with("src/bin") || file.ends_with("tests/it/tidy.rs") {
                continue;
            }
            let text = read(&file);
            let Some(start) = test_code_start(&file, &text) else {
                continue;
            };
            for (n, line) in text.lines().enumerate().skip(start) {
                if line.contains("sleep(") && !is_comment(line) {
                    found.push(Violation {
                        rule: "no-sleep",
                        file: relative(root, &file),
                        detail: format!("line {}: {}", n + 1, line.trim()),
                    });
                }
            }
        }
    }
    found
}

/// Rule 3: no `#[ignore]` anywhere.
fn no_ignored_tests(root: &Path) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut files = rust_files(&root.join("crates"));
    files.extend(rust_files(&root.join("xtask")));
    for file in files {
        for (n, line) in read(&file).lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("#[ignore") {
                found.push(Violation {
                    rule: "no-ignore",
                    file: relative(root, &file),
                    detail: format!("line {}: {}", n + 1, line.trim()),
                });
            }
        }
    }
    found
}

/// Rule 4: every `unsafe fn` has a `# Safety` section in the doc comment above it.
fn unsafe_fns_document_safety(root: &Path) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut files = rust_files(&root.join("crates"));
    files.extend(rust_files(&root.join("xtask")));
    for file in files {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if is_comment(t) || !declares_unsafe_fn(t) {
                continue;
            }
            // Walk up over attributes and doc comments.
            let mut documented = false;
            for above in lines[..n].iter().rev() {
                let a = above.trim_start();
                if a.starts_with("///") {
                    if a.trim_start_matches('/').trim() == "# Safety" {
                        documented = true;
                    }
                } else if !a.starts_with("#[") {
                    break;
                }
            }
            if !documented {
                found.push(Violation {
                    rule: "unsafe-fn-safety",
                    file: relative(root, &file),
                    detail: format!("line {}: {}", n + 1, t),
                });
            }
        }
    }
    found
}

/// `unsafe fn name` (also `unsafe extern "C" fn name`), after any visibility and
/// qualifiers; not a function pointer type such as `unsafe fn(` or `unsafe extern "C" fn(`.
fn declares_unsafe_fn(line: &str) -> bool {
    let mut words = line.split_whitespace().peekable();
    while let Some(w) =
        words.next_if(|w| w.starts_with("pub") || matches!(*w, "const" | "async" | "default"))
    {
        let _ = w;
    }
    if words.next() != Some("unsafe") {
        return false;
    }
    if words.next_if(|w| *w == "extern").is_some() {
        words.next_if(|w| w.starts_with('"'));
    }
    words.next() == Some("fn")
        && words
            .next()
            .is_some_and(|name| name.starts_with(|c: char| c.is_alphabetic() || c == '_'))
}

/// A measured figure in prose or a table: a number with a unit of time, size, rate,
/// or a ratio (`1.6x`), or a percentage. A number that follows a word of setting ("over
/// 1 KiB", "at most 4 MiB") or a range (`1/16..4x`) states a configuration, not a
/// measurement, and is not a figure.
fn has_figure(line: &str) -> bool {
    const UNITS: [&str; 17] = [
        "ns", "µs", "us", "ms", "s", "MiB", "KiB", "GiB", "MB", "kB", "KB", "GB", "x", "%", "/s",
        "tasks/s", "req/s",
    ];
    let bytes: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_alphanumeric()) {
            let mut j = i;
            // Digits with '.' or ',' inside, but not a range's "..".
            while j < bytes.len()
                && (bytes[j].is_ascii_digit()
                    || (matches!(bytes[j], '.' | ',') && bytes.get(j + 1) != Some(&'.')))
            {
                j += 1;
            }
            // A trailing '.' or ',' ends a sentence, not the number.
            let mut k = j;
            while k > i && matches!(bytes[k - 1], '.' | ',') {
                k -= 1;
            }
            let rest: String = bytes[k..].iter().collect();
            let rest = rest.strip_prefix(' ').unwrap_or(&rest);
            let before: String = bytes[..i].iter().collect();
            let before = before.trim_end().to_lowercase();
            const SETTINGS: [&str; 11] = [
                "over", "under", "up to", "at most", "at least", "beyond", "above", "below",
                "limit of", "cap of", "..",
            ];
            if SETTINGS.iter().any(|w| before.ends_with(w)) {
                i = j.max(i + 1);
                continue;
            }
            for unit in UNITS {
                if let Some(after) = rest.strip_prefix(unit)
                    && !after.starts_with(|c: char| c.is_alphanumeric())
                {
                    return true;
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    false
}

/// Whether a line shows a command: a `cargo` line inside a fenced block (or a `$ `
/// prompt), or an inline `` `cargo ...` `` span in prose.
fn names_command(line: &str, in_code: bool) -> bool {
    let t = line.trim_start();
    if in_code {
        return t.starts_with("cargo ") || t.starts_with("$ ");
    }
    line.contains("`cargo ")
}

/// Rule 5: every README section with a figure shows the command that reproduces it,
/// in itself or in an enclosing section.
fn readme_figures_name_commands(root: &Path) -> Vec<Violation> {
    let mut readmes = vec![root.join("README.md")];
    readmes.extend(
        crate_dirs(root)
            .into_iter()
            .map(|d| d.join("README.md"))
            .filter(|p| p.exists()),
    );
    let mut found = Vec::new();
    for readme in readmes {
        let text = read(&readme);
        // Sections: (level, title, has a command, first line with a figure).
        struct Section {
            level: usize,
            title: String,
            command: bool,
            figure: Option<(usize, String)>,
        }
        let mut sections = vec![Section {
            level: 0,
            title: "(top)".into(),
            command: false,
            figure: None,
        }];
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if !in_code && line.starts_with('#') {
                let level = line.chars().take_while(|&c| c == '#').count();
                sections.push(Section {
                    level,
                    title: line[level..].trim().to_owned(),
                    // A heading such as "benches (`cargo bench -p forkyard-perf`)".
                    command: names_command(line, false),
                    figure: None,
                });
                continue;
            }
            let current = sections.last_mut().expect("the top section");
            if names_command(line, in_code) {
                current.command = true;
            }
            if !in_code && current.figure.is_none() && has_figure(line) {
                current.figure = Some((n + 1, line.trim().to_owned()));
            }
        }
        for (i, section) in sections.iter().enumerate() {
            let Some((line, figure)) = &section.figure else {
                continue;
            };
            // This section, or the nearest enclosing one at each higher level.
            let mut level = section.level;
            let mut command = section.command;
            for outer in sections[..i].iter().rev() {
                if outer.level < level {
                    command |= outer.command;
                    level = outer.level;
                }
            }
            if !command {
                found.push(Violation {
                    rule: "readme-figure-command",
                    file: relative(root, &readme),
                    detail: format!(
                        "section \"{}\" states a figure (line {line}: {figure}) but names no command that reproduces it",
                        section.title
                    ),
                });
            }
        }
    }
    found
}

#[test]
fn tidy() {
    let root = workspace_root();
    let mut all = Vec::new();
    all.extend(lesson_sections(&root));
    all.extend(no_sleeps_in_tests(&root));
    all.extend(no_ignored_tests(&root));
    all.extend(unsafe_fns_document_safety(&root));
    all.extend(readme_figures_name_commands(&root));

    for (rule, path, _) in KNOWN {
        let matches = |v: &Violation| (*rule == "*" || v.rule == *rule) && v.file.starts_with(path);
        if !all.iter().any(matches) {
            eprintln!("tidy: stale known entry ({rule}, {path}): it passes now; remove it");
        }
    }
    for v in &all {
        if let Some(why) = is_known(v) {
            eprintln!(
                "tidy: known, tolerated ({why}): [{}] {}: {}",
                v.rule, v.file, v.detail
            );
        }
    }
    let failures: Vec<String> = all
        .iter()
        .filter(|v| is_known(v).is_none())
        .map(|v| format!("[{}] {}: {}", v.rule, v.file, v.detail))
        .collect();
    assert!(
        failures.is_empty(),
        "{} tidy violation(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn figures_are_recognised() {
    let cases = [
        ("| `forkyard_child::Child` | 1.72 ms | 1.61x |", true),
        ("about 70–100 µs per spawn", true),
        ("400,000-450,000 tasks/s with", true),
        ("gone about 0.1–1 ms after", true),
        ("2 cores shared by the parent", false),
        ("Rust 1.88 or later", false),
        ("kernel 6.9 or later", false),
        ("see issue 10.", false),
        ("a 64 MiB limit", true),
        ("35% of the time", true),
        (
            "a refused request's arguments over 1 KiB are still digested",
            false,
        ),
        ("caches of 1/16..4x the size", false),
        ("at most 16 MiB queued", false),
    ];
    for (line, expected) in cases {
        assert_eq!(has_figure(line), expected, "{line}");
    }
}

#[test]
fn unsafe_fn_declarations_are_recognised() {
    let cases = [
        ("pub(crate) unsafe fn register_self(sock: RawFd) {", true),
        ("unsafe fn grow(&mut self) -> bool {", true),
        ("pub unsafe extern \"C\" fn handler(sig: i32) {", true),
        ("let f: unsafe fn() = g;", false),
        ("type Hook = unsafe extern \"C\" fn(i32);", false),
    ];
    for (line, expected) in cases {
        assert_eq!(declares_unsafe_fn(line), expected, "{line}");
    }
}
