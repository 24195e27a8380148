//! Inside the strict sandbox: what the probe can no longer do, and how it ends when it
//! tries the forbidden.

use std::net::TcpListener;
use std::time::Duration;

use forkyard_secure::audit::{self, AuditLog};
use forkyard_secure::{
    EndCause, Enforcement, Layer, LayerStatus, Layout, Limits, Network, Operand, Policy,
    ProgramRule, Request, Sandbox, Value,
};
use proptest::prelude::*;

use crate::run::{assert_nothing_left, probe_policy};
use crate::support::{Uploads, probe};

fn limits() -> Limits {
    Limits {
        wall: Some(Duration::from_secs(30)),
        ..Limits::default()
    }
}

/// Runs the probe in `sandbox`; returns its one-line report and the end cause.
async fn probe_in(sandbox: Sandbox, args: &[&str]) -> (String, EndCause) {
    let uploads = Uploads::new();
    let policy = probe_policy(limits(), sandbox, &uploads.root());
    let out = policy.run("probe", args).await.unwrap();
    (out.stdout.text().trim().to_string(), out.cause)
}

#[tokio::test]
async fn every_layer_applies_on_this_kernel_and_the_child_confirms_it() {
    let uploads = Uploads::new();
    let policy = probe_policy(limits(), Sandbox::strict(), &uploads.root());
    let out = policy.run("probe", ["status"]).await.unwrap();
    assert_eq!(out.stdout.text().trim(), "no_new_privs 1 seccomp 2");
    for report in &out.layers {
        println!("{report}");
    }
    for layer in [
        Layer::Session,
        Layer::ParentDeathSignal,
        Layer::Rlimits,
        Layer::NoNewPrivs,
        Layer::Landlock,
        Layer::Seccomp,
    ] {
        let r = out.layers.iter().find(|r| r.layer == layer).unwrap();
        assert_eq!(r.status, LayerStatus::Applied, "{r}");
    }
    // Best-effort layers are either applied or say why not; never silently missing.
    for layer in [Layer::Cgroup, Layer::NetworkNamespace, Layer::Capabilities] {
        let r = out.layers.iter().find(|r| r.layer == layer).unwrap();
        assert!(
            matches!(
                r.status,
                LayerStatus::Applied | LayerStatus::Partial | LayerStatus::Unavailable
            ),
            "{r}"
        );
        assert!(!r.detail.is_empty(), "{r}");
    }
    assert_eq!(
        out.layers
            .iter()
            .find(|r| r.layer == Layer::PidNamespace)
            .unwrap()
            .status,
        LayerStatus::Off
    );
    assert_nothing_left();
}

#[tokio::test]
async fn files_outside_the_allowed_paths_cannot_be_read() {
    let uploads = Uploads::new();
    let secret = uploads.outside().join("secret.txt");
    let policy = probe_policy(limits(), Sandbox::strict(), &uploads.root());
    let cases = [
        ("/etc/shadow", "err EACCES"),
        (secret.to_str().unwrap(), "err EACCES"),
        ("/proc/self/status", "err EACCES"),
        ("/tmp", "err EACCES"),
        ("/etc/passwd", "ok"),
    ];
    for (path, want) in cases {
        let out = policy.run("probe", ["read", path]).await.unwrap();
        assert!(
            out.stdout.text().starts_with(want),
            "read {path}: {}",
            out.stdout.text()
        );
    }
    // The parent's environment is another process's file: off limits too.
    let environ = format!("/proc/{}/environ", std::process::id());
    let out = policy.run("probe", ["read", &environ]).await.unwrap();
    assert!(
        out.stdout.text().starts_with("err"),
        "{}",
        out.stdout.text()
    );
    // Without Landlock the same probe reads the secret: the layer is what stops it.
    let open = probe_policy(limits(), Sandbox::minimal(), &uploads.root());
    let out = open
        .run("probe", ["read", secret.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(out.stdout.text().trim(), "ok 6");
    assert_nothing_left();
}

#[tokio::test]
async fn the_output_operand_is_writable_through_its_descriptor() {
    let uploads = Uploads::new();
    let policy = probe_policy(limits(), Sandbox::strict(), &uploads.root());
    let out = policy
        .run("probe", ["write", "--out", "result.txt", "converted"])
        .await
        .unwrap();
    assert_eq!(out.stdout.text().trim(), "ok");
    assert_eq!(
        std::fs::read_to_string(uploads.root().join("result.txt")).unwrap(),
        "converted"
    );
    assert_nothing_left();
}

#[tokio::test]
async fn no_socket_can_be_opened_when_the_network_is_off() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for family in ["inet", "inet6", "unix"] {
        let (line, cause) = probe_in(Sandbox::strict(), &["socket", family]).await;
        assert_eq!(
            (line.as_str(), cause),
            ("err EAFNOSUPPORT", EndCause::Exited { code: 0 }),
            "{family}"
        );
    }
    let (line, _) = probe_in(Sandbox::strict(), &["connect", &addr]).await;
    assert_eq!(line, "err EAFNOSUPPORT");
    // The network namespace alone (no seccomp): sockets open, but the loopback we listen
    // on is not there.
    let netns_only = Sandbox::minimal()
        .network(Network::Off)
        .network_namespace(Some(Enforcement::Required));
    let (line, _) = probe_in(netns_only, &["connect", &addr]).await;
    assert_eq!(line, "err ENETUNREACH");
    // And with the host network the listener is reachable: the layers are what stop it.
    let (line, _) = probe_in(Sandbox::minimal(), &["connect", &addr]).await;
    assert_eq!(line, "ok");
    assert_nothing_left();
}

#[tokio::test]
async fn denied_system_calls_kill_with_sigsys_or_fail_as_designed() {
    let kills = [
        "ptrace",
        "bpf",
        "unshare",
        "mount",
        "keyctl",
        "userfaultfd",
        "x32",
    ];
    for call in kills {
        let (line, cause) = probe_in(Sandbox::strict(), &["syscall", call]).await;
        assert_eq!(cause, EndCause::SeccompKill, "{call}: {line}");
        assert_eq!(line, "", "{call} never returned");
    }
    for (call, want) in [
        ("io-uring", "err ENOSYS"),
        ("clone3", "err ENOSYS"),
        ("tiocsti", "err EPERM"),
    ] {
        let (line, cause) = probe_in(Sandbox::strict(), &["syscall", call]).await;
        assert_eq!(
            (line.as_str(), cause),
            (want, EndCause::Exited { code: 0 }),
            "{call}"
        );
    }
    // Without seccomp, ptrace(TRACEME) simply works: the filter is what kills.
    let (line, cause) = probe_in(Sandbox::minimal(), &["syscall", "ptrace"]).await;
    assert_eq!(
        (line.as_str(), cause),
        ("ok 0", EndCause::Exited { code: 0 })
    );
    assert_nothing_left();
}

#[tokio::test]
async fn the_sandboxed_program_cannot_signal_its_parent() {
    let (line, _) = probe_in(Sandbox::strict(), &["signal-parent"]).await;
    assert_eq!(line, "err EPERM");
    let (line, _) = probe_in(Sandbox::minimal(), &["signal-parent"]).await;
    assert_eq!(line, "ok");
    assert_nothing_left();
}

#[tokio::test]
async fn in_a_pid_namespace_the_program_is_pid_one_and_takes_everything_with_it() {
    let sandbox = Sandbox::strict().pid_namespace(Some(Enforcement::Required));
    let (line, cause) = probe_in(sandbox.clone(), &["pid"]).await;
    assert_eq!(
        (line.as_str(), cause),
        ("pid 1", EndCause::Exited { code: 0 })
    );
    // The relay reports the program's exit exactly, signals included.
    let (_, cause) = probe_in(sandbox.clone(), &["syscall", "bpf"]).await;
    assert_eq!(cause, EndCause::SeccompKill);
    let policy = crate::run::fixture_policy(
        Limits {
            wall: Some(Duration::from_millis(800)),
            ..Limits::default()
        },
        sandbox,
    );
    let out = policy
        .run("fixture", ["grandchild", "--setsid", "--children", "2"])
        .await
        .unwrap();
    assert_eq!(out.cause, EndCause::Timeout);
    assert_nothing_left();
}

#[tokio::test]
async fn the_environment_is_exactly_the_validated_one() {
    let uploads = Uploads::new();
    let policy = Policy::builder()
        .program(
            "probe",
            ProgramRule::path(probe())
                .operands(Value::text())
                .layout(Layout::AsGiven),
        )
        .env(forkyard_secure::EnvRule::allow(["LANG"]).inherit(false))
        .limits(limits())
        .build()
        .unwrap();
    let out = policy
        .run_request(Request::new("probe").arg("env").env("LANG", "C.UTF-8"))
        .await
        .unwrap();
    let env: Vec<String> = out
        .stdout
        .text()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            format!("{}={}", unhex(k), unhex(v))
        })
        .collect();
    assert_eq!(env, ["LANG=C.UTF-8", "PATH=/usr/bin:/bin"]);
    drop(uploads);
    assert_nothing_left();
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn exit_records_snapshot() {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    let policy = Policy::builder()
        .program(
            "probe",
            ProgramRule::path(probe())
                .operands(Value::text())
                .flag_value("--out", Operand::path_beneath(uploads.root()).write())
                .layout(Layout::AsGiven),
        )
        .limits(limits())
        .audit(log.clone())
        .build()
        .unwrap();
    policy
        .run_request(Request::new("probe").args(["status"]).caller("alice"))
        .await
        .unwrap();
    policy
        .run_request(
            Request::new("probe")
                .args(["syscall", "ptrace"])
                .caller("mallory"),
        )
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    insta::assert_json_snapshot!("exit_records", records, {
        "[].time_ms" => "[time]",
        "[].prev" => "[hash]",
        "[].hash" => "[hash]",
        "[].policy" => "[policy]",
        "[].exe" => "[exe]",
        "[].env_sha256" => "[digest]",
        "[].pid" => "[pid]",
        "[].wall_ms" => "[ms]",
        "[].rusage" => "[rusage]",
        "[].layers[].detail" => "[detail]",
    });
    let v = audit::verify(&path).unwrap();
    assert!(v.is_intact(), "{:?}", v.findings);
    assert_eq!(v.head, log.head());
    assert_nothing_left();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// End to end: whatever validated argv we build, the program receives exactly it,
    /// element for element, byte for byte; no shell ever re-splits or expands it.
    #[test]
    fn the_program_receives_exactly_the_validated_argv(
        args in proptest::collection::vec("[a-z;|&$`()*?~'\" \t\\\\<>{}\\[\\]!#%^=+,.:@]{1,12}", 0..6)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let policy = Policy::builder()
            .program("probe", ProgramRule::path(probe()).operands(Value::text()).layout(Layout::AsGiven))
            .limits(limits())
            .build()
            .unwrap();
        let mut request = vec!["argv".to_string()];
        request.extend(args.iter().cloned());
        let out = runtime.block_on(policy.run("probe", &request)).unwrap();
        let received: Vec<String> = out.stdout.text().lines().map(unhex).collect();
        prop_assert_eq!(received, args);
    }
}

/// The path for pools and supervisors: a `SecureCommand` spawned through its own builder
/// (here with line streaming instead of capture), finished by hand; and one dropped while
/// running, which kills the run and is still recorded.
#[tokio::test]
async fn a_secure_command_runs_through_a_custom_builder_and_is_always_recorded() {
    let uploads = Uploads::new();
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
    let policy = Policy::builder()
        .program(
            "probe",
            ProgramRule::path(probe())
                .operands(Value::text())
                .layout(Layout::AsGiven),
        )
        .limits(limits())
        .audit(log.clone())
        .build()
        .unwrap();

    let mut cmd = policy.command("probe", ["argv", "a b", "c"]).unwrap();
    let mut child = cmd
        .builder()
        .stdout(forkyard_child::Output::lines())
        .spawn()
        .unwrap();
    cmd.spawned(&child);
    let seccomp = cmd
        .layers()
        .iter()
        .find(|r| r.layer == Layer::Seccomp)
        .unwrap()
        .status;
    assert_eq!(seccomp, LayerStatus::Applied);
    let mut lines = Vec::new();
    while let Some(line) = child.next_line().await {
        lines.push(unhex(&line.text()));
    }
    let exit = child.wait().await.unwrap();
    let (cause, stragglers) = cmd.finish(&exit, 0, 0).unwrap();
    assert_eq!((cause, stragglers), (EndCause::Exited { code: 0 }, 0));
    assert_eq!(lines, ["a b", "c"]);

    // Spawned, then dropped unwaited: the paused fork-bomb children die with it.
    let running = policy
        .command("probe", ["fork-bomb"])
        .unwrap()
        .spawn()
        .unwrap();
    drop(running);
    assert_nothing_left();

    let records: Vec<serde_json::Value> = std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["cause"].as_str().or(r["decision"].as_str()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("decision", "allowed"),
            ("exit", "exit"),
            ("decision", "allowed"),
            ("exit", "abandoned")
        ]
    );
    assert!(audit::verify(log.path()).unwrap().is_intact());
    drop(uploads);
}

/// A parent with many descriptors open: the child has to raise the open-files limit to get
/// through forkyard-child's hook, and the parent lowers it right after exec, before the
/// program (waiting on stdin here) gets to look.
#[tokio::test]
async fn the_open_files_limit_holds_even_in_a_parent_with_many_descriptors() {
    let uploads = Uploads::new();
    let hoard: Vec<std::fs::File> = (0..150)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    for sandbox in [
        Sandbox::strict(),
        Sandbox::strict().pid_namespace(Some(Enforcement::Required)),
    ] {
        let policy = probe_policy(
            Limits {
                open_files: Some(16),
                ..limits()
            },
            sandbox,
            &uploads.root(),
        );
        let mut cmd = policy.command("probe", ["nofile"]).unwrap();
        let child = spawn_waiting(&mut cmd);
        let rlimits = layer_report(&mut cmd, Layer::Rlimits).detail;
        assert!(rlimits.contains("lowered to 16"), "{rlimits}");
        let out = release(child).await;
        assert_eq!(out.stdout.text().trim(), "nofile 16 16");
        cmd.finish(&out.exit, out.stdout.total, 0).unwrap();
    }
    drop(hoard);
    assert_nothing_left();
}

/// Spawns a hardened probe that waits on its stdin (see [`release`]), and tells the
/// command it runs.
fn spawn_waiting(cmd: &mut forkyard_secure::SecureCommand) -> forkyard_child::Child {
    let child = cmd
        .builder()
        .stdin(forkyard_child::Input::Piped)
        .spawn()
        .unwrap();
    cmd.spawned(&child);
    child
}

/// Lets a probe started by [`spawn_waiting`] go on, and collects its output.
async fn release(mut child: forkyard_child::Child) -> forkyard_child::ChildOutput {
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.take_stdin().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

/// What the child confirmed about `layer`.
fn layer_report(
    cmd: &mut forkyard_secure::SecureCommand,
    layer: Layer,
) -> forkyard_secure::LayerReport {
    cmd.layers()
        .iter()
        .find(|r| r.layer == layer)
        .unwrap_or_else(|| panic!("no report for {layer:?}"))
        .clone()
}

/// The capability sets of a process, from `/proc/<pid>/status`, by name.
fn capability_sets(pid: u32) -> Vec<(String, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| {
            let (name, hex) = l.split_once(':').unwrap();
            (
                name.to_string(),
                u64::from_str_radix(hex.trim(), 16).unwrap(),
            )
        })
        .collect()
}

/// A root parent's capabilities do not reach the program: while it runs (waiting on its
/// stdin), every capability set in its `/proc/<pid>/status` is empty, read from here since
/// Landlock keeps the program itself out of `/proc`. In a pid namespace the relay holds
/// none either.
#[tokio::test]
async fn the_program_holds_no_capability_while_it_runs() {
    let uploads = Uploads::new();
    for (sandbox, pid_namespace) in [
        (Sandbox::strict(), false),
        (
            Sandbox::strict().pid_namespace(Some(Enforcement::Required)),
            true,
        ),
        (Sandbox::minimal(), false),
    ] {
        let policy = probe_policy(limits(), sandbox, &uploads.root());
        let mut cmd = policy.command("probe", ["nofile"]).unwrap();
        let child = spawn_waiting(&mut cmd);
        let layer = layer_report(&mut cmd, Layer::Capabilities);
        // Spawn returns once the program has exec'd (or, in a pid namespace, once the relay
        // has forked it, after the capabilities were dropped).
        let mut pids = vec![child.id()];
        if pid_namespace {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                    .unwrap();
            pids.extend(
                children
                    .split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap()),
            );
            assert_eq!(pids.len(), 2, "the relay and the program");
        }
        // Root (or any parent with CAP_SETPCAP) empties all five; an unprivileged one cannot
        // touch the bounding set.
        let wanted: &[&str] = match layer.status {
            LayerStatus::Applied => &["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"],
            LayerStatus::Partial => &["CapInh", "CapPrm", "CapEff", "CapAmb"],
            _ => panic!("{layer}"),
        };
        for pid in pids {
            let sets = capability_sets(pid);
            for name in wanted {
                let (_, value) = sets.iter().find(|(n, _)| n == name).unwrap();
                assert_eq!(*value, 0, "{name} of {pid}: {sets:?} ({layer})");
            }
        }
        let out = release(child).await;
        assert!(
            out.stdout.text().starts_with("nofile"),
            "{}",
            out.stdout.text()
        );
        cmd.finish(&out.exit, out.stdout.total, 0).unwrap();
    }
    drop(uploads);
    assert_nothing_left();
}

/// What a capability would allow fails: root without `CAP_CHOWN` cannot give a file away
/// (neither Landlock nor seccomp stops `chown`; only the capabilities layer does).
#[tokio::test]
async fn without_capabilities_root_cannot_give_a_file_away() {
    let uploads = Uploads::new();
    let root = rustix::process::geteuid().is_root();
    // Root gets EPERM once CAP_CHOWN is gone; a parent that was never root is refused too
    // (EINVAL in a user namespace where uid 12345 is not mapped).
    let refused = |line: &str| {
        if root {
            line == "err EPERM"
        } else {
            line.starts_with("err ")
        }
    };
    let cases = [
        (Sandbox::strict(), "strict.txt", false),
        (Sandbox::minimal(), "minimal.txt", false),
        (
            Sandbox::strict().capabilities(Some(Enforcement::Required)),
            "required.txt",
            false,
        ),
        // The layer is what stops it: without it, root's CAP_CHOWN lets it through.
        (Sandbox::strict().capabilities(None), "kept.txt", root),
    ];
    for (sandbox, file, allowed) in cases {
        let policy = probe_policy(limits(), sandbox, &uploads.root());
        let out = match policy.run("probe", ["chown", "--out", file, "12345"]).await {
            Ok(out) => out,
            // Required without CAP_SETPCAP or a user namespace: refused, as documented.
            Err(forkyard_secure::Error::LayerUnavailable {
                layer: Layer::Capabilities,
                ..
            }) if !root => continue,
            Err(e) => panic!("{file}: {e}"),
        };
        let line = out.stdout.text().trim().to_string();
        assert_eq!(out.cause, EndCause::Exited { code: 0 }, "{file}");
        if allowed {
            assert_eq!(line, "ok", "{file}");
        } else {
            assert!(refused(&line), "{file}: {line}");
        }
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(uploads.root().join(file)).unwrap(),
        );
        assert_eq!(owner == 12345, allowed, "{file} owned by {owner}");
    }
    assert_nothing_left();
}

/// Fds in flight (sent over a socket, never received) are counted per user, and the
/// kernel refuses to pass more from a process without capabilities while that count is
/// above the sender's open-files limit. Starting a hardened child once passed an fd from
/// inside the child, after its capabilities were gone and its limit lowered, so a few
/// hundred fds held in flight by anyone of the same user made every hardened spawn fail
/// (issue #17). Now nothing is passed, and strict refuses the socket pair to begin with.
#[tokio::test]
async fn fds_held_in_flight_cannot_stop_other_hardened_spawns() {
    let uploads = Uploads::new();
    let policy = probe_policy(limits(), Sandbox::strict(), &uploads.root());
    // Strict refuses the socket pair a flood needs.
    let mut cmd = policy
        .command("probe", ["hold-fds-in-flight", "1000"])
        .unwrap();
    let out = release(spawn_waiting(&mut cmd)).await;
    assert_eq!(out.stdout.text().trim(), "err EAFNOSUPPORT");
    cmd.finish(&out.exit, out.stdout.total, 0).unwrap();

    // A sandboxed flooder that may make one (minimal: no seccomp, no capabilities), and
    // an unrelated process of the same user with its capabilities: each holds its fds
    // in flight while 20 strict spawns run.
    let minimal = probe_policy(limits(), Sandbox::minimal(), &uploads.root());
    let mut flooder = minimal
        .command("probe", ["hold-fds-in-flight", "1000"])
        .unwrap();
    let sandboxed = spawn_holding(flooder.builder()).await;
    flooder.spawned(&sandboxed.0);
    let mut plain = std::process::Command::new(probe());
    plain.args(["hold-fds-in-flight", "1000"]);
    let unrelated = spawn_holding(forkyard_child::Child::builder(&mut plain)).await;
    assert_eq!(unrelated.1, "holding 1000");
    // The sandboxed one gets as far as its own limit lets it: past 253, which was
    // enough to stop the spawns.
    let held: usize = sandboxed
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(held >= 253, "{}", sandboxed.1);
    for i in 0..20 {
        let out = policy.run("probe", ["pid"]).await;
        let out = out.unwrap_or_else(|e| panic!("spawn {i} with fds in flight: {e:#}"));
        assert_eq!(out.cause, EndCause::Exited { code: 0 }, "spawn {i}");
    }
    let out = release(sandboxed.0).await;
    flooder.finish(&out.exit, out.stdout.total, 0).unwrap();
    release(unrelated.0).await;
    assert_nothing_left();
}

/// Spawns a `hold-fds-in-flight` probe with its stdin piped and returns it with its
/// first line, once it holds its fds.
async fn spawn_holding(builder: forkyard_child::Builder<'_>) -> (forkyard_child::Child, String) {
    let mut child = builder
        .stdin(forkyard_child::Input::Piped)
        .stdout(forkyard_child::Output::lines())
        .spawn()
        .unwrap();
    let line = tokio::time::timeout(forkyard_testkit::DEADLINE, child.next_line())
        .await
        .expect("the flooder reports within the deadline")
        .expect("the flooder prints a line");
    (
        child,
        String::from_utf8_lossy(&line.bytes).trim().to_string(),
    )
}
