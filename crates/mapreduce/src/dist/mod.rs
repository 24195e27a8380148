//! The same jobs across machines, through NATS JetStream (feature `nats`).
//!
//! A coordinator publishes a job's tasks to a JetStream work-queue stream;
//! [`Node`]s on any machine pull them and run them on their own
//! forkyard-pool workers; map output travels through the object store and
//! commits are KV creates, so the first attempt to commit wins.

mod call;
mod coordinator;
mod node;
mod wire;

use std::time::Duration;

use futures::StreamExt;

pub use call::{CallError, Caller, Service, Services};
pub use coordinator::{DistOptions, DistReport};
pub use node::Node;

/// How to reach the NATS server: its URL, the credentials, how long to try.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    url: String,
    user: Option<(String, String)>,
    nkey: Option<String>,
    connect_timeout: Duration,
    name: String,
}

impl NatsConfig {
    /// A server at `url` (`nats://127.0.0.1:4222`), no credentials, 5 s to
    /// connect.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            user: None,
            nkey: None,
            connect_timeout: Duration::from_secs(5),
            name: format!("forkyard-{}", std::process::id()),
        }
    }

    /// Authenticates with a user and password.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Authenticates with an nkey seed (`SU...`).
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.nkey = Some(seed.into());
        self
    }

    /// How long connecting may take before [`DistError::Connect`] (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The connection's name, as the server shows it (default `forkyard-PID`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Reads `NATS_USER`/`NATS_PASSWORD` (or `NATS_NKEY`, a seed) from the
    /// environment, when set: how the examples take credentials without
    /// putting them on a command line.
    pub fn credentials_from_env(mut self) -> Self {
        if let (Ok(u), Ok(p)) = (std::env::var("NATS_USER"), std::env::var("NATS_PASSWORD")) {
            self.user = Some((u, p));
        }
        if let Ok(seed) = std::env::var("NATS_NKEY") {
            self.nkey = Some(seed);
        }
        self
    }

    /// Connects: fails with [`DistError::Connect`] within the connect timeout
    /// when the server is unreachable or refuses the credentials. Once
    /// connected, the client reconnects by itself (a broker restart).
    pub async fn connect(&self) -> Result<Cluster, DistError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(&self.name)
            .connection_timeout(self.connect_timeout)
            .ping_interval(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(5)))
            // Keep trying after a broker restart, without a cap.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((50u64 << attempt.min(5) as u64).min(1000))
            });
        if let Some((u, p)) = &self.user {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(seed) = &self.nkey {
            opts = opts.nkey(seed.clone());
        }
        let connect = opts.connect(self.url.as_str());
        let client = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    async_nats::ConnectErrorKind::AuthorizationViolation
                    | async_nats::ConnectErrorKind::Authentication => ConnectFailure::Credentials,
                    async_nats::ConnectErrorKind::TimedOut => ConnectFailure::TimedOut,
                    async_nats::ConnectErrorKind::ServerParse => ConnectFailure::BadUrl,
                    _ => ConnectFailure::Unreachable,
                };
                return Err(DistError::Connect {
                    url: self.url.clone(),
                    kind,
                    source: Some(Box::new(e)),
                });
            }
            Err(_) => {
                return Err(DistError::Connect {
                    url: self.url.clone(),
                    kind: ConnectFailure::TimedOut,
                    source: None,
                });
            }
        };
        let js = async_nats::jetstream::new(client.clone());
        // A server without JetStream does not answer its API.
        let probe = async {
            let mut names = js.stream_names();
            names.next().await.transpose()
        };
        tokio::time::timeout(self.connect_timeout, probe)
            .await
            .map_err(|_| DistError::Connect {
                url: self.url.clone(),
                kind: ConnectFailure::TimedOut,
                source: None,
            })?
            .map_err(|e| DistError::Broker {
                what: "JetStream does not answer (is the server started with -js?)".into(),
                source: Box::new(e),
            })?;
        Ok(Cluster { client, js })
    }
}

/// Waits until `shutdown` says true (returns nothing, so no guard of the
/// channel lives across an await).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// A connection to the NATS server, with JetStream.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub(crate) client: async_nats::Client,
    pub(crate) js: async_nats::jetstream::Context,
}

impl Cluster {
    /// The underlying client (to publish or subscribe to anything else).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Why connecting failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// Nothing answered at the address (refused, reset, no route).
    Unreachable,
    /// Nothing answered within the connect timeout.
    TimedOut,
    /// The server refused the user/password or nkey.
    Credentials,
    /// The URL does not parse.
    BadUrl,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectFailure::Unreachable => "the server is unreachable",
            ConnectFailure::TimedOut => "the server did not answer in time",
            ConnectFailure::Credentials => "the server refused the credentials",
            ConnectFailure::BadUrl => "the URL is not a NATS server address",
        })
    }
}

/// What can go wrong on the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistError {
    /// Could not connect to the server.
    #[error("cannot connect to NATS at {url}: {kind}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
        kind: ConnectFailure,
        /// The client's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A JetStream operation failed (for longer than the retries cover).
    #[error("{what}")]
    Broker {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The job failed, as it would have locally (a task failed too often,
    /// too many bad records, a bad output directory...).
    #[error(transparent)]
    Job(#[from] crate::Error),
    /// A task was delivered to nodes as many times as the stream allows
    /// without any node finishing it (each one died or stalled holding it).
    #[error(
        "{task} was delivered {deliveries} times and never finished (the nodes running it died or stalled)"
    )]
    Undeliverable {
        /// The task (`map task 3`, `reduce partition 1`).
        task: String,
        /// Deliveries made.
        deliveries: u64,
    },
    /// A message too large for the server (a split of inline records).
    #[error("{what} is {bytes} bytes, over the server's limit of {limit}")]
    TooLarge {
        /// What.
        what: String,
        /// Its size.
        bytes: usize,
        /// The server's max_payload.
        limit: usize,
    },
    /// Local I/O (the node's scratch space, the coordinator's output).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl DistError {
    pub(crate) fn broker(
        what: impl Into<String>,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DistError::Broker {
            what: what.into(),
            source: e.into(),
        }
    }
}
