//! nkey authentication: a `nats-server` whose only user is an nkey (a
//! config file: the server has no flag for nkeys), a node and a
//! coordinator that present its seed, and a wrong seed refused.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use forkyard_mapreduce::dist::{ConnectFailure, DistError, DistOptions, NatsConfig};
use forkyard_testkit::nats::NatsServer;
use forkyard_testkit::wait_for;

use crate::dist::{dist_job, expected, input};
use crate::support::*;

/// A server that requires `public` (an nkey user), killed and reaped on drop.
struct NkeyServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NkeyServer {
    async fn start(public: &str) -> NkeyServer {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?} }}\n\
                 authorization {{ users = [ {{ nkey: {public} }} ] }}\n",
                dir.path().join("store")
            ),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = NkeyServer {
            child,
            port,
            _dir: dir,
        };
        wait_for("the nkey server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NkeyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_user_runs_a_job_and_a_wrong_seed_is_refused() {
    let base = Baseline::take().await;
    if !NatsServer::available() {
        return;
    }
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let server = NkeyServer::start(&user.public_key()).await;

    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let err = NatsConfig::new(server.url())
        .nkey(stranger)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DistError::Connect {
                kind: ConnectFailure::Credentials,
                ..
            }
        ),
        "{err:?}"
    );

    // A node that takes its seed from NATS_NKEY, a coordinator given it.
    let mut node = KillOnDrop::spawn(node_command(&server.url()).env("NATS_NKEY", &seed));
    let dir = tempfile::tempdir().unwrap();
    let (inp, data) = input(dir.path(), 41);
    let out = dir.path().join("out");
    let cluster = NatsConfig::new(server.url())
        .nkey(seed)
        .connect()
        .await
        .unwrap();
    let done = dist_job(&inp, &out)
        .run_on_with(
            &cluster,
            DistOptions::new().deadline(std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_output(&out, &expected(&data));
    assert_eq!(done.nodes.len(), 1, "{:?}", done.nodes);
    cluster.close().await;
    // SIGTERM: the node finishes what it holds and exits cleanly.
    let status = node.stop();
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(server);
    base.assert_clean().await;
}
