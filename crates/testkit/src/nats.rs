//! A `nats-server` for one test: JetStream on, a free loopback port, a
//! temporary store, stopped by pid.
//!
//! [`NatsServer::start`] runs `nats-server -js -a 127.0.0.1 -p PORT -sd DIR`
//! and returns once the server has logged `Server is ready` (an event, not a
//! guess). Dropping it SIGKILLs and reaps the server and removes the store.
//! [`NatsServer::kill`] and [`NatsServer::restart`] stop it and start it again
//! on the same port and store, for broker-restart tests.
//!
//! Tests that need a server call [`NatsServer::available`] first: when
//! `nats-server` is not on the PATH it fails the test with a clear message
//! under `CI=true`, and otherwise prints `skipped: nats-server not on PATH` and
//! returns false, so a developer without the server still gets a green run.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The program's name, looked up on the PATH.
pub const NATS_SERVER_BIN: &str = "nats-server";

/// How long a server may take to log `Server is ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Where `nats-server` is on the PATH, if it is.
pub fn nats_server_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(NATS_SERVER_BIN))
        .find(|p| p.is_file())
}

/// A running `nats-server` with JetStream, owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    user: Option<(String, String)>,
    // Removed after Drop has killed and reaped the server.
    store: tempfile_dir::TempStore,
}

impl NatsServer {
    /// Whether a test can start a server. Without `nats-server` on the PATH:
    /// panics under `CI=true` (CI must run these tests), otherwise prints
    /// `skipped: nats-server not on PATH` and returns false.
    pub fn available() -> bool {
        if nats_server_path().is_some() {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "nats-server is not on PATH, and CI=true: CI must run the distributed tests \
                 (install it with `apt-get install nats-server`)"
            );
        }
        eprintln!("skipped: nats-server not on PATH");
        false
    }

    /// Starts a server without authentication.
    pub fn start() -> std::io::Result<NatsServer> {
        Self::start_inner(None)
    }

    /// Starts a server that requires this user and password.
    pub fn start_with_user(user: &str, password: &str) -> std::io::Result<NatsServer> {
        Self::start_inner(Some((user.to_owned(), password.to_owned())))
    }

    fn start_inner(user: Option<(String, String)>) -> std::io::Result<NatsServer> {
        let mut store = tempfile_dir::TempStore::new()?;
        // A free port: the kernel picks one, we let go of it and the server
        // binds it. Another process may take it in between; then the server
        // exits before it is ready, and we try another.
        let mut last = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = NatsServer {
                child: None,
                port,
                user: user.clone(),
                store,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last = Some(e);
                    store = std::mem::replace(&mut server.store, tempfile_dir::TempStore::empty());
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("nats-server did not start")))
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let mut cmd = Command::new(NATS_SERVER_BIN);
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((user, pass)) = &self.user {
            cmd.args(["--user", user, "--pass", pass]);
        }
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the log until the server exits (the pipe then closes), so a
        // chatty server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut log = String::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                } else if ready_tx.is_some() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
            if let Some(tx) = ready_tx {
                let _ = tx.send(Err(log));
            }
        });
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(log)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "nats-server exited before it was ready:\n{log}"
                )))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "nats-server was not ready after {READY_TIMEOUT:?}"
                )))
            }
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same after [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// SIGKILLs the server and reaps it; the store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (after
    /// [`NatsServer::kill`]; kills it first if it still runs).
    ///
    /// The port was let go of while the server was down: another process
    /// may hold it for a moment (a client's ephemeral port). Tries a few
    /// times, then fails with [`std::io::ErrorKind::AddrInUse`] naming the
    /// port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let mut last = None;
        for attempt in 0..5u64 {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if e.to_string().contains("address already in use") => {
                    last = Some(e);
                    // Backoff before retrying a port someone else holds.
                    std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "cannot restart nats-server: port {} taken by another process ({})",
                self.port,
                last.map(|e| e.to_string()).unwrap_or_default()
            ),
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory removed on drop, without a tempfile dependency.
mod tempfile_dir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    pub(super) struct TempStore(Option<PathBuf>);

    impl TempStore {
        pub(super) fn new() -> std::io::Result<TempStore> {
            use std::hash::{BuildHasher, Hasher};
            static N: AtomicU64 = AtomicU64::new(0);
            // A random name, created (never reused: `create_dir` fails on
            // an existing path, stale or someone else's), owner-only.
            for _ in 0..16 {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(N.fetch_add(1, Ordering::Relaxed));
                let dir = std::env::temp_dir().join(format!(
                    "forkyard-nats-{}-{:016x}",
                    std::process::id(),
                    h.finish()
                ));
                let mut builder = std::fs::DirBuilder::new();
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                match builder.create(&dir) {
                    Ok(()) => return Ok(TempStore(Some(dir))),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "cannot find a fresh name for the nats-server store",
            ))
        }

        pub(super) fn empty() -> TempStore {
            TempStore(None)
        }

        pub(super) fn path(&self) -> &Path {
            self.0.as_deref().unwrap_or(Path::new(""))
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            if let Some(dir) = self.0.take() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}
