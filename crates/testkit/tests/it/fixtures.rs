//! The fixture binary as the tests find it.

use std::path::Path;

/// Regression (issue 10): the first two fixture tests of a CI run took about 58 s
/// each on a busy machine, because `cargo nextest run --workspace` did not build the
/// fixture binary and those tests built it themselves, waiting for cargo's lock.
/// Now this package has integration tests, so cargo builds the binary with them,
/// and `fixture_path` finds it built and current: nothing to build inside a test.
#[test]
fn a_workspace_run_builds_the_fixture_before_the_tests() {
    let built = Path::new(env!("CARGO_BIN_EXE_forkyard-fixture"));
    let found = forkyard_testkit::fixture_path();
    assert_eq!(
        found.canonicalize().unwrap(),
        built.canonicalize().unwrap(),
        "fixture_path finds the binary cargo built for this run"
    );
}

#[test]
fn a_fixture_runs_and_exits_with_the_code_asked_for() {
    let mut cmd = forkyard_testkit::fixture("exit-with");
    cmd.arg("3");
    assert_eq!(cmd.status().unwrap().code(), Some(3));
}
