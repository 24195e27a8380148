//! Hostile requests, one table per attack class: each is refused by the right rule or
//! arrives as one literal argument.

use std::path::Path;

use forkyard_secure::{
    Error, Layout, Limits, Operand, PassAs, Policy, PolicyError, ProgramRule, Request, Sandbox,
    Value,
};
use proptest::prelude::*;

use crate::support::{Uploads, check, policy, probe};

/// CWE-78: shell metacharacters. There is no shell, so each one is a single literal argv
/// element, placed after `--`.
#[test]
fn shell_metacharacters_arrive_as_one_literal_argument() {
    let policy = policy(|p| ProgramRule::path(p).operands(Value::text()));
    let table: &[&str] = &[
        "; id",
        "| id",
        "$(id)",
        "`id`",
        "%0aid",
        "a);id",
        "${IFS}cat${IFS}/etc/passwd",
        "& ping -i 30 127.0.0.1 &",
        "a\nid",
        "x > /etc/passwd",
        "'quoted' \"twice\"",
        "*",
        "~root",
    ];
    for input in table {
        let argv = check(&policy, &[input.as_bytes()]);
        assert_eq!(
            argv,
            Ok(vec!["--".to_string(), (*input).to_string()]),
            "input {input:?}"
        );
    }
}

/// CWE-88: argument injection. Anything that looks like an option and is not declared is
/// refused; declared value flags refuse option-looking values; after `--` an operand that
/// looks like an option is still refused.
#[test]
fn argument_injection_is_refused_by_the_grammar() {
    let policy = policy(|p| {
        ProgramRule::path(p)
            .flags(["-v"])
            .flag_value("-o", Value::text())
            .flag_value("--format", Value::one_of(["png", "jpg"]))
            .operands(Value::text())
    });
    let table: &[(&[&str], &str)] = &[
        // Attached short values are not a spelling the grammar knows: `-o` is declared,
        // `-oProxyCommand=...` is not.
        (
            &["-oProxyCommand=touch /tmp/p", "host"],
            "argv.unknown-flag",
        ),
        (&["--upload-pack=touch /tmp/x", "repo"], "argv.unknown-flag"),
        (&["-u$({touch,/tmp/foo})"], "argv.unknown-flag"),
        (
            &["--checkpoint=1", "--checkpoint-action=exec=sh x.sh"],
            "argv.unknown-flag",
        ),
        (&["--help"], "argv.unknown-flag"),
        (&["-h"], "argv.unknown-flag"),
        (&["-vv"], "argv.unknown-flag"),
        (&["-o", "-x"], "argv.option-like-operand"),
        (&["-o"], "argv.missing-value"),
        (&["--format=exe"], "argv.invalid-value"),
        (&["--format", "--help"], "argv.invalid-value"),
        (&["-v=1"], "argv.unknown-flag"),
        (&["--", "-h"], "argv.option-like-operand"),
        (&["--", "--upload-pack=x"], "argv.option-like-operand"),
    ];
    for (input, rule) in table {
        let bytes: Vec<&[u8]> = input.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(check(&policy, &bytes), Err(*rule), "input {input:?}");
    }
    // The legitimate spellings, re-laid out canonically.
    let ok: &[(&[&str], &[&str])] = &[
        (&["-v", "a"], &["-v", "--", "a"]),
        (&["a", "-o", "out", "b"], &["-o", "out", "--", "a", "b"]),
        (&["--format=png", "x"], &["--format", "png", "--", "x"]),
        (&["--format", "jpg"], &["--format", "jpg"]),
        (&["--", "a"], &["--", "a"]),
    ];
    for (input, want) in ok {
        let bytes: Vec<&[u8]> = input.iter().map(|s| s.as_bytes()).collect();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(check(&policy, &bytes), Ok(want), "input {input:?}");
    }
}

#[test]
fn counts_lengths_and_nul_bytes_are_bounded() {
    let policy = policy(|p| {
        ProgramRule::path(p)
            .flag_value("-n", Value::integer(1, 100))
            .flag_value("-g", Value::charset("0123456789x%"))
            .operands(Value::text().max_len(8))
            .operand_count(1, 3)
            .max_args(6)
            .max_arg_len(64)
    });
    let long = vec![b'a'; 65];
    let mega = vec![b'a'; 1 << 20];
    let table: &[(&[&[u8]], &str)] = &[
        (&[b"a", b"b", b"c", b"d", b"e", b"f", b"g"], "argv.count"),
        (&[&long], "argv.length"),
        (&[&mega], "argv.length"),
        (&[b"a\0b"], "argv.nul"),
        (&[b"123456789"], "argv.length"),
        (&[], "argv.operand-count"),
        (&[b"a", b"b", b"c", b"d"], "argv.operand-count"),
        (&[b"-n", b"0", b"a"], "argv.invalid-value"),
        (&[b"-n", b"1e3", b"a"], "argv.invalid-value"),
        (&[b"-n", b"-5", b"a"], "argv.option-like-operand"),
        (&[b"-g", b"50%;id", b"a"], "argv.invalid-value"),
        (&[b"\xff\xfe"], "argv.invalid-value"),
    ];
    for (input, rule) in table {
        assert_eq!(check(&policy, input), Err(*rule), "input {input:?}");
    }
    assert_eq!(
        check(&policy, &[b"-n", b"42", b"-g", b"50%", b"a"]),
        Ok(vec!["-n", "42", "-g", "50%", "--", "a"]
            .into_iter()
            .map(String::from)
            .collect())
    );
}

/// CWE-22 in its encodings: every escape is refused by the kernel's path walk, and encoded
/// forms are just odd file names that do not exist beneath the root.
#[test]
fn path_traversal_in_every_encoding_stays_beneath_the_root() {
    let uploads = Uploads::new();
    let root = uploads.root();
    let policy = policy(|p| {
        ProgramRule::path(p).operand(Operand::path_beneath(&root).pass_as(PassAs::Path))
    });
    let table: &[(&[u8], &str)] = &[
        (b"../../etc/passwd", "path.escapes-root"),
        (b"../outside/secret.txt", "path.escapes-root"),
        (b"sub/../../outside/secret.txt", "path.escapes-root"),
        (b"/etc/shadow", "path.escapes-root"),
        (b"/proc/self/root/etc/shadow", "path.escapes-root"),
        (b"/proc/self/fd/3", "path.escapes-root"),
        (b"link-etc/passwd", "path.escapes-root"),
        (b"up/outside/secret.txt", "path.escapes-root"),
        (b"%2e%2e%2f%2e%2e%2fetc%2fpasswd", "path.not-found"),
        (b"%252e%252e%252f", "path.not-found"),
        (b"..././", "path.not-found"),
        (b"%c0%ae%c0%ae%c0%af", "path.not-found"),
        (b"a%00.png", "path.not-found"),
        (b"a\0.png", "argv.nul"),
        (b"", "path.not-found"),
        (b"sub", "path.not-regular"),
        (b"fifo", "path.not-regular"),
        (b"-h", "argv.unknown-flag"),
    ];
    for (input, rule) in table {
        assert_eq!(
            check(&policy, &[input]),
            Err(*rule),
            "input {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let inside = root.join("in.txt").to_string_lossy().into_owned();
    for ok in [
        &b"in.txt"[..],
        b"./in.txt",
        b"sub/../in.txt",
        b"inner",
        b"sub//../in.txt",
    ] {
        assert_eq!(
            check(&policy, &[ok]),
            Ok(vec!["--".into(), inside.clone()]),
            "input {ok:?}"
        );
    }
}

#[test]
fn no_symlinks_refuses_even_symlinks_that_stay_inside() {
    let uploads = Uploads::new();
    let policy = policy(|p| {
        ProgramRule::path(p).operand(Operand::path_beneath(uploads.root()).no_symlinks())
    });
    assert_eq!(check(&policy, &[b"inner"]), Err("path.symlink"));
    assert_eq!(
        check(&policy, &[b"in.txt"]),
        Ok(vec!["--".into(), "/proc/self/fd/4".into()])
    );
}

#[test]
fn output_operands_create_files_and_refused_requests_remove_them() {
    let uploads = Uploads::new();
    let root = uploads.root();
    let policy = policy(|p| {
        ProgramRule::path(p)
            .operand(Operand::path_beneath(&root).create_new())
            .operand(Operand::path_beneath(&root).create_new())
            .operand(Operand::path_beneath(&root))
    });
    // The third operand escapes: the request is refused and both outputs are gone again.
    assert_eq!(
        check(&policy, &[b"out1", b"out2", b"../outside/secret.txt"]),
        Err("path.escapes-root")
    );
    assert!(!root.join("out1").exists() && !root.join("out2").exists());
    // Outputs are opened after inputs, so a missing input creates nothing.
    assert_eq!(
        check(&policy, &[b"out1", b"out2", b"missing.txt"]),
        Err("path.not-found")
    );
    assert!(!root.join("out1").exists());
    // A create-new output that exists is refused.
    assert_eq!(
        check(&policy, &[b"in.txt", b"out2", b"in.txt"]),
        Err("path.exists")
    );
    // Accepted: fds 4.. (3 is kept for an ipc channel) in order of opening (inputs first).
    let argv = check(&policy, &[b"out1", b"out2", b"in.txt"]).unwrap();
    assert_eq!(
        argv,
        vec![
            "--",
            "/proc/self/fd/5",
            "/proc/self/fd/6",
            "/proc/self/fd/4"
        ]
    );
    assert!(root.join("out1").exists() && root.join("out2").exists());
}

#[test]
fn layouts_place_operands_as_declared() {
    let uploads = Uploads::new();
    let root = uploads.root();
    let rule = |layout| {
        let root = root.clone();
        move |p: &Path| {
            ProgramRule::path(p)
                .flag_value("-resize", Value::charset("0123456789x%"))
                .operands(Operand::path_beneath(root).pass_as(PassAs::Path))
                .layout(layout)
        }
    };
    let inside = root.join("in.txt").to_string_lossy().into_owned();
    let input: &[&[u8]] = &[b"in.txt", b"-resize", b"50%", b"sub/doc.txt"];
    let doc = root.join("sub/doc.txt").to_string_lossy().into_owned();
    assert_eq!(
        check(&policy(rule(Layout::AsGiven)), input),
        Ok(vec![
            inside.clone(),
            "-resize".into(),
            "50%".into(),
            doc.clone()
        ])
    );
    assert_eq!(
        check(&policy(rule(Layout::OptionsFirst)), input),
        Ok(vec![
            "-resize".into(),
            "50%".into(),
            inside.clone(),
            doc.clone()
        ])
    );
    assert_eq!(
        check(&policy(rule(Layout::DoubleDash)), input),
        Ok(vec![
            "-resize".into(),
            "50%".into(),
            "--".into(),
            inside,
            doc
        ])
    );
}

/// Allowlist bypasses: the request names programs by key, exactly; rules name programs by
/// absolute, normalised path; shells and interpreters need an explicit opt-in.
#[test]
fn allowlist_bypasses_are_refused() {
    let policy = policy(|p| ProgramRule::path(p));
    for name in ["./p", "p ", " p", "P", "/p", "p\0", "../p", "p;id", "sh"] {
        match policy.validate(&Request::new(name)) {
            Err(Error::Denied { denial, .. }) => {
                assert_eq!(denial.rule(), "program.unknown", "name {name:?}")
            }
            other => panic!("name {name:?}: {other:?}"),
        }
    }
    let build = |path: &str| {
        Policy::builder()
            .program("x", ProgramRule::path(path))
            .sandbox(Sandbox::minimal())
            .build()
    };
    for path in [
        "/usr/bin/../../tmp/ls",
        "usr/bin/iconv",
        "/usr/bin//iconv",
        "/usr/bin/./iconv",
        "/usr/bin/iconv/",
    ] {
        assert!(
            matches!(
                build(path),
                Err(Error::Policy(PolicyError::ProgramPathNotCanonical { .. }))
            ),
            "path {path}"
        );
    }
    for shell in [
        "/bin/sh",
        "/bin/bash",
        "/usr/bin/env",
        "/usr/bin/xargs",
        "/usr/bin/find",
        "/usr/bin/awk",
        "/usr/bin/sed",
        "/usr/bin/perl",
        "/usr/bin/python3",
    ] {
        if !Path::new(shell).exists() {
            continue;
        }
        assert!(
            matches!(
                build(shell),
                Err(Error::Policy(PolicyError::InterpreterNotAllowed { .. }))
            ),
            "interpreter {shell}: {:?}",
            build(shell).map(|_| ())
        );
    }
    // Named explicitly, a shell is allowed, but its grammar still has no `-c`.
    let sh = Policy::builder()
        .program(
            "sh",
            ProgramRule::path("/bin/sh")
                .allow_interpreter()
                .operand(Value::one_of(["/srv/script.sh"])),
        )
        .sandbox(Sandbox::minimal())
        .build()
        .unwrap();
    let denied = sh
        .validate(&Request::new("sh").args(["-c", "id"]))
        .unwrap_err();
    assert!(matches!(denied, Error::Denied { denial, .. } if denial.rule() == "argv.unknown-flag"));
    assert!(matches!(
        build("/nonexistent/tool"),
        Err(Error::Policy(PolicyError::ProgramMissing { .. }))
    ));
    assert!(matches!(
        build("/etc/passwd"),
        Err(Error::Policy(PolicyError::ProgramNotExecutable { .. }))
    ));
}

#[test]
fn sha256_pins_are_checked_and_the_hashed_descriptor_is_executed() {
    let digest = forkyard_secure::sha256_file(probe()).unwrap();
    let pinned = policy(|p| ProgramRule::path(p).sha256(&digest).operands(Value::text()));
    let v = pinned.validate(&Request::new("p").arg("x")).unwrap();
    // The executable travels as a descriptor after the operands' ones.
    assert_eq!(v.passed_fds().collect::<Vec<_>>(), vec![4]);
    let wrong = "0".repeat(64);
    let err = Policy::builder()
        .program("p", ProgramRule::path(probe()).sha256(wrong))
        .sandbox(Sandbox::minimal())
        .limits(Limits::none())
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Policy(PolicyError::Sha256Mismatch { .. })
    ));
    let err = Policy::builder()
        .program("p", ProgramRule::path(probe()).sha256("xyz"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Policy(PolicyError::BadSha256 { .. })));
}

#[test]
fn a_swapped_pinned_executable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tool");
    std::fs::copy(probe(), &exe).unwrap();
    let digest = forkyard_secure::sha256_file(&exe).unwrap();
    let policy = Policy::builder()
        .program("tool", ProgramRule::path(&exe).sha256(digest))
        .sandbox(Sandbox::minimal())
        .build()
        .unwrap();
    assert!(policy.validate(&Request::new("tool")).is_ok());
    // Replace the file (new inode, same path) with other content.
    let tmp = dir.path().join("tool.new");
    std::fs::write(&tmp, b"#!/bin/sh\nid\n").unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    match policy.validate(&Request::new("tool")) {
        Err(Error::Denied { denial, .. }) => assert_eq!(denial.rule(), "program.sha256"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_policies_are_refused_at_build_time() {
    let base = || Policy::builder().sandbox(Sandbox::minimal());
    assert!(matches!(
        base().build(),
        Err(Error::Policy(PolicyError::Empty))
    ));
    let bad_flag = base()
        .program("p", ProgramRule::path(probe()).flags(["x"]))
        .build();
    assert!(matches!(
        bad_flag,
        Err(Error::Policy(PolicyError::BadFlag { .. }))
    ));
    let dup_flag = base()
        .program("p", ProgramRule::path(probe()).flags(["-x", "-x"]))
        .build();
    assert!(matches!(
        dup_flag,
        Err(Error::Policy(PolicyError::BadFlag { .. }))
    ));
    let dup = base()
        .program("p", ProgramRule::path(probe()))
        .program("p", ProgramRule::path(probe()))
        .build();
    assert!(matches!(
        dup,
        Err(Error::Policy(PolicyError::DuplicateProgram { .. }))
    ));
    let bad_name = base().program("-p", ProgramRule::path(probe())).build();
    assert!(matches!(
        bad_name,
        Err(Error::Policy(PolicyError::BadProgramName { .. }))
    ));
    let bad_root = base()
        .program(
            "p",
            ProgramRule::path(probe()).operand(Operand::path_beneath("/nonexistent/root")),
        )
        .build();
    assert!(matches!(
        bad_root,
        Err(Error::Policy(PolicyError::BadRoot { .. }))
    ));
    let zero_wall = base()
        .program("p", ProgramRule::path(probe()))
        .limits(Limits {
            wall: Some(std::time::Duration::ZERO),
            ..Limits::default()
        })
        .build();
    assert!(matches!(
        zero_wall,
        Err(Error::Policy(PolicyError::BadLimit { name: "wall", .. }))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the request, an accepted argv holds only: declared flags, validated values,
    /// `--`, and paths that resolved beneath the root. No element is ever interpreted:
    /// operand text reaches the program byte for byte, and the program is the one in the
    /// policy, never a shell.
    #[test]
    fn no_generated_argv_escapes_its_root_or_changes_meaning(
        args in proptest::collection::vec(
            proptest::string::string_regex("(-{0,2}[a-z]{0,3}|\\.\\./|/|%2e|in\\.txt|sub/|link-etc/|up/|inner|[;|&$`()* \n]|\\.){0,6}").unwrap(),
            0..6,
        )
    ) {
        let uploads = Uploads::new();
        let root = uploads.root();
        let policy = policy(|p| {
            ProgramRule::path(p)
                .flags(["-v"])
                .flag_value("-o", Operand::path_beneath(&root).pass_as(PassAs::Path))
                .operands(Operand::path_beneath(&root).pass_as(PassAs::Path))
        });
        let request = Request::new("p").args(&args);
        match policy.validate(&request) {
            Ok(v) => {
                let exe = probe();
                prop_assert_eq!(v.executable(), exe.as_path());
                let mut after_dd = false;
                for a in v.args() {
                    let a = a.to_string_lossy();
                    if a == "--" { after_dd = true; continue; }
                    if a == "-v" || a == "-o" { prop_assert!(!after_dd); continue; }
                    prop_assert!(a.starts_with(root.to_str().unwrap()), "{} escapes", a);
                    let real = std::fs::canonicalize(a.as_ref()).unwrap();
                    prop_assert!(real.starts_with(&root));
                }
                for p in v.opened_paths() {
                    prop_assert!(p.starts_with(&root));
                }
            }
            Err(Error::Denied { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error {other:?}"),
        }
        // Nothing was created or changed outside the root.
        prop_assert_eq!(std::fs::read_to_string(uploads.outside().join("secret.txt")).unwrap(), "secret");
    }
}
