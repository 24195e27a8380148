//! Bad input: each spawn failure is a typed error whose message names the program.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use forkyard_child::{Child, Error};

use crate::support::Baseline;

/// Replaces the per-run temp directory in a message so snapshots are stable.
fn redact(message: String, tmp: &std::path::Path) -> String {
    message.replace(&tmp.display().to_string(), "[tmp]")
}

#[tokio::test]
async fn spawn_failures_are_typed_and_name_the_program() {
    let base = Baseline::take().await;
    let tmp = tempdir();
    let not_exec = tmp.join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut rows = Vec::new();
    let mut check = |label: &str, cmd: &mut Command, is_expected: fn(&Error) -> bool| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let err = Child::spawn(cmd).expect_err(label);
        assert!(is_expected(&err), "{label}: unexpected {err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&program),
            "{label}: message `{message}` does not name `{program}`"
        );
        rows.push(format!("{label}: {}", redact(message, &tmp)));
    };
    check(
        "missing program",
        &mut Command::new("forkyard-no-such-program"),
        |e| matches!(e, Error::ProgramNotFound { .. }),
    );
    check(
        "missing absolute path",
        &mut Command::new("/nonexistent/bin/tool"),
        |e| matches!(e, Error::ProgramNotFound { .. }),
    );
    check("not executable", &mut Command::new(&not_exec), |e| {
        matches!(e, Error::PermissionDenied { .. })
    });
    check("a directory", &mut Command::new(&tmp), |e| {
        matches!(e, Error::PermissionDenied { .. })
    });
    let mut cmd = Command::new("/bin/true");
    cmd.current_dir(tmp.join("no-such-dir"));
    check("nonexistent cwd", &mut cmd, |e| {
        matches!(e, Error::BadCwd { .. })
    });
    let mut cmd = Command::new("/bin/true");
    cmd.current_dir(&not_exec);
    check("cwd is a file", &mut cmd, |e| {
        matches!(e, Error::BadCwd { .. })
    });
    insta::assert_debug_snapshot!(rows);
    std::fs::remove_dir_all(&tmp).unwrap();
    base.assert_clean().await;
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Child::spawn(&mut Command::new("/bin/true")).expect_err("no runtime");
    assert!(matches!(err, Error::NoRuntime { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot spawn `/bin/true`: no tokio runtime (spawn must be called from within one)"
    );
}

#[tokio::test]
async fn pass_fd_to_a_stdio_number_is_refused() {
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let err = Child::builder(&mut Command::new("/bin/true"))
        .pass_fd(r, 1)
        .spawn()
        .expect_err("stdio target");
    assert!(matches!(err, Error::Spawn { .. }), "{err:?}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("stdio"),
        "{err:?}"
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("forkyard-child-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
