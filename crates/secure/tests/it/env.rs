//! Environment attacks: hook variables are always refused, everything else must be
//! allowlisted and valid.

use forkyard_secure::{EnvRule, Error, Policy, PolicyError, ProgramRule, Request, Sandbox, Value};

use crate::support::probe;

fn policy(env: EnvRule) -> Result<Policy, Error> {
    Policy::builder()
        .program("p", ProgramRule::path(probe()))
        .env(env)
        .sandbox(Sandbox::minimal())
        .build()
}

fn refusal(policy: &Policy, name: &str, value: &str) -> Option<&'static str> {
    match policy.validate(&Request::new("p").env(name, value)) {
        Ok(_) => None,
        Err(Error::Denied { denial, .. }) => Some(denial.rule()),
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn hook_variables_are_refused_under_every_spelling() {
    let policy = policy(EnvRule::allow(["LANG", "TZ", "TERM", "QUALITY"]).inherit(false)).unwrap();
    let table = [
        ("LD_PRELOAD", "/tmp/evil.so"),
        ("LD_LIBRARY_PATH", "/tmp"),
        ("LD_AUDIT", "/tmp/a.so"),
        ("GCONV_PATH", "/tmp/gconv"),
        ("BASH_ENV", "/tmp/x.sh"),
        ("ENV", "/tmp/x.sh"),
        ("BASH_FUNC_x%%", "() { id; }"),
        ("IFS", "/"),
        ("PYTHONPATH", "/tmp"),
        ("PYTHONSTARTUP", "/tmp/x.py"),
        ("NODE_OPTIONS", "--require /tmp/x.js"),
        ("PERL5OPT", "-Mevil"),
        ("PERL5LIB", "/tmp"),
        ("RUBYOPT", "-revil"),
        ("GIT_SSH_COMMAND", "touch /tmp/p"),
        ("GLIBC_TUNABLES", "glibc.malloc.check=3"),
        ("MALLOC_CHECK_", "3"),
        ("JAVA_TOOL_OPTIONS", "-javaagent:/tmp/a.jar"),
        ("LESSOPEN", "|id"),
        ("TERMINFO", "/tmp"),
    ];
    for (name, value) in table {
        assert_eq!(
            refusal(&policy, name, value),
            Some("env.dangerous"),
            "{name}"
        );
    }
    // A function definition is refused under any name, allowlisted or not.
    assert_eq!(
        refusal(&policy, "LANG", "() { :; }; id"),
        Some("env.shell-function")
    );
    assert_eq!(
        refusal(&policy, "QUALITY", " () { :; }"),
        Some("env.shell-function")
    );
    assert_eq!(refusal(&policy, "HOME", "/root"), Some("env.not-allowed"));
    assert_eq!(
        refusal(&policy, "PATH", "/tmp:/usr/bin"),
        Some("env.not-allowed")
    );
}

#[test]
fn allowlisted_values_are_validated() {
    let policy = policy(
        EnvRule::allow(["LANG", "LC_ALL", "TZ", "TERM", "NOTE"])
            .allow_with("QUALITY", Value::integer(1, 100))
            .inherit(false),
    )
    .unwrap();
    let bad = [
        ("LANG", "../../tmp/x"),
        ("LANG", "en_US/../../x"),
        ("LC_ALL", "C\nLD_PRELOAD=x"),
        ("TZ", "/etc/shadow"),
        ("TZ", ":/etc/shadow"),
        ("TZ", "../../../tmp/zone"),
        ("TERM", "xterm;id"),
        ("QUALITY", "101"),
        ("QUALITY", "9; id"),
        ("NOTE", "esc\u{1b}[2J"),
    ];
    for (name, value) in bad {
        assert_eq!(
            refusal(&policy, name, value),
            Some("env.invalid-value"),
            "{name}={value:?}"
        );
    }
    let v = policy
        .validate(
            &Request::new("p")
                .env("LANG", "de_DE.UTF-8")
                .env("TZ", "Europe/Berlin")
                .env("QUALITY", "85")
                .env("NOTE", "a b c"),
        )
        .unwrap();
    let env: Vec<(String, String)> = v
        .env()
        .iter()
        .map(|(k, v)| (k.to_string_lossy().into(), v.to_string_lossy().into()))
        .collect();
    assert_eq!(
        env,
        [
            ("LANG", "de_DE.UTF-8"),
            ("NOTE", "a b c"),
            ("PATH", "/usr/bin:/bin"),
            ("QUALITY", "85"),
            ("TZ", "Europe/Berlin")
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
}

#[test]
fn the_environment_starts_empty_and_inherits_only_allowlisted_names() {
    // This test process has HOME, PATH and CARGO_* set; none of them may leak.
    let policy = policy(EnvRule::allow(["CARGO_PKG_NAME"])).unwrap();
    let v = policy.validate(&Request::new("p")).unwrap();
    let names: Vec<String> = v
        .env()
        .iter()
        .map(|(k, _)| k.to_string_lossy().into())
        .collect();
    let expected: Vec<String> = if std::env::var_os("CARGO_PKG_NAME").is_some() {
        vec!["CARGO_PKG_NAME".into(), "PATH".into()]
    } else {
        vec!["PATH".into()]
    };
    assert_eq!(names, expected);
}

#[test]
fn dangerous_names_and_bad_constants_fail_the_policy_build() {
    for name in [
        "LD_PRELOAD",
        "BASH_ENV",
        "BASH_FUNC_ls%%",
        "IFS",
        "NODE_OPTIONS",
    ] {
        assert!(
            matches!(
                policy(EnvRule::allow([name])),
                Err(Error::Policy(PolicyError::DangerousEnv { .. }))
            ),
            "allow {name}"
        );
        assert!(
            matches!(
                policy(EnvRule::none().set(name, "x")),
                Err(Error::Policy(PolicyError::DangerousEnv { .. }))
            ),
            "set {name}"
        );
    }
    for path in [
        "/tmp:.",
        "/usr/bin::/bin",
        "bin:/usr/bin",
        "/usr/../tmp",
        "",
    ] {
        assert!(
            matches!(
                policy(EnvRule::none().set("PATH", path)),
                Err(Error::Policy(PolicyError::BadEnvConstant { .. }))
            ),
            "PATH={path:?}"
        );
    }
    assert!(matches!(
        policy(EnvRule::allow(["A=B"])),
        Err(Error::Policy(PolicyError::BadEnvConstant { .. }))
    ));
}
