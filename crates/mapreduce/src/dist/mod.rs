//! The same jobs across machines, through NATS JetStream (feature `nats`).
//!
//! # The problem
//!
//! A job that outgrows one machine should not need another tool: the same
//! job type, the same binary, should run on several machines. What changes
//! when tasks cross machines is not the map or the reduce but the failures:
//! a machine dies with its disk (its map output with it), a network
//! partition makes a live node look dead, a message can arrive twice, a
//! stalled node holds a task nobody else sees.
//!
//! # The approach: a proven broker, not a home-made network layer
//!
//! One `nats-server -js` (a single binary, Debian-packaged) carries
//! everything:
//!
//! - **Tasks** are messages on a per-job *work-queue* stream `FY_<id>`
//!   (subjects `fy.<id>.task.>`), pulled through one durable consumer with
//!   explicit acks. A [`Node`] pulls one task per free worker, so a fast node
//!   takes more, and runs it on its own forkyard-pool workers with the local
//!   engine's task functions (so everything the pool guarantees still holds
//!   on each machine).
//! - **Data**: inputs are read by path (a shared filesystem), or uploaded
//!   by the coordinator to the job's *object store*
//!   ([`DistOptions::upload_inputs`]: one object per map task, holding
//!   just the lines of its split), or travel inline
//!   ([`Records`](crate::Records)); map runs and output parts go through
//!   the object store too (nodes share no disk).
//! - **Commits** are `create` calls on the job's *KV bucket*
//!   (`commit.m.00003`): create-if-absent, so the first attempt to commit
//!   wins and every later one (a redelivery, a backup) discards its output.
//!   The coordinator follows the bucket, decides retries, bad-record skips
//!   and backups exactly as the local engine does, and writes the output
//!   directory itself: the same part files, job records and report.
//!
//! # Lesson: what changes when tasks cross machines
//!
//! - **Delivery is at least once.** The broker redelivers a task whose node
//!   did not ack it within the *ack wait*: the node may be dead, or only
//!   slow, or cut off. So the same task can run twice, at once, on two
//!   nodes. Nothing here tries to prevent that (it cannot be prevented
//!   without giving up liveness); instead every effect is **idempotent**:
//!   attempts write under their own names, and one atomic create-if-absent
//!   decides whose output counts. A late ack from a stale node (nats-server
//!   #4786) changes nothing either.
//! - **Ack wait versus task time.** A short ack wait finds dead nodes fast
//!   but redelivers long tasks that are merely running; a long one makes a
//!   dead node expensive. Nodes send an *in-progress* ack every third of the
//!   ack wait while a task runs, so the ack wait bounds the time to notice a
//!   dead or stopped node, not the task time ([`DistOptions::ack_wait`]).
//!   A node that is alive but whose *worker* stalls keeps acking: that
//!   straggler is what backup tasks are for, near the end of a phase.
//! - **A frozen node holds what it pulled.** A node stopped (SIGSTOP, a
//!   paused VM) while its pull request is out at the server is still
//!   delivered a task, which it never starts: the broker counts it
//!   delivered and waits the whole ack wait before redelivering it, and no
//!   start record tells the coordinator anyone has it. So the coordinator
//!   also backs up an attempt that has not started long after it was
//!   published, once the broker has nothing left to deliver (the job
//!   consumer's `num_pending` is 0, so the attempt was delivered and is
//!   held), up to 3 backups a task.
//! - **No bucket listings.** A KV bucket's key listing is an ordered
//!   consumer that ends when the server says nothing is pending; on
//!   nats-server 2.9, with keys being overwritten, it sometimes never ends
//!   (nats-server#3481). A coordinator taking over a job reads each task's
//!   commit key instead: it knows which keys can exist.
//! - **Max deliveries.** A task whose deliveries all die (a record that
//!   kills whole nodes) fails the job with [`DistError::Undeliverable`] once
//!   the stream's delivery cap is reached, rather than circling forever.
//!   Failures a node *can* report (a panic on a record, a crashed worker, an
//!   I/O error) are acked and reported, and the coordinator re-publishes the
//!   task with what it learned (records to skip, careful mode).
//! - **Poison messages.** A message on a job's stream that is not a task is
//!   terminated (never redelivered) and reported in [`DistReport::rejected`].
//! - **The broker restarts.** Streams are on file storage: a restarted
//!   server still has the queue, the commits and the map output; the
//!   clients reconnect, publishes and commits are retried (a task message
//!   carries a `Nats-Msg-Id`, so a retried publish is not a second task).
//!
//! # Example
//!
//! ```no_run
//! use forkyard_mapreduce::dist::{DistOptions, NatsConfig, Node};
//! use forkyard_mapreduce::{Emit, Job, LineFiles, MapReduce};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct WordCount;
//! # impl Job for WordCount { type Key = Vec<u8>; type Value = u64; type Output = u64;
//! #   fn map(&self, _: &[u8], _: &mut Emit<'_, Vec<u8>, u64>) {}
//! #   fn reduce(&self, _: &Vec<u8>, _: Vec<u64>, _: &mut dyn FnMut(u64)) {} }
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! forkyard_mapreduce::serve_if_worker::<WordCount>(); // first thing in main
//! let cluster = NatsConfig::new("nats://127.0.0.1:4222").connect().await?;
//! if std::env::args().any(|a| a == "--serve") {
//!     // On every machine: a node with 2 workers, until SIGINT/SIGTERM.
//!     Node::new(cluster).workers(2).run_until_signal().await?;
//! } else {
//!     // Anywhere: the job, on whatever nodes are up.
//!     let done = MapReduce::new(WordCount)
//!         .input(LineFiles::new(["corpus.txt"])) // read by path on the nodes
//!         .out_dir("counts")
//!         .run_on_with(&cluster, DistOptions::new().ack_wait(std::time::Duration::from_secs(10)))
//!         .await?;
//!     println!("{}", done.report.summary());
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/wordcount.rs` is this with a command line (`--serve`, `--nats`).
//! The crate's node program, `forkyard-mapreduce-node --serve --nats URL
//! --workers N`, is the same node for the library's jobs
//! ([`crate::jobs`]): install it on each machine (`cargo install --path
//! crates/mapreduce --bin forkyard-mapreduce-node`) and submit
//! [`jobs::WordCount`](crate::jobs::WordCount) jobs from any program.
//! `--list-jobs` and `--remove-job ID` show and delete what jobs left on
//! the server ([`jobs_on`], [`remove_job`]). Its `--serve` and the
//! example's are one function, [`serve_jobs_blocking`].
//!
//! # Caveats
//!
//! - Input files are read **by path** on the nodes unless
//!   [`DistOptions::upload_inputs`] is set: by path they need a shared
//!   filesystem; uploaded, every input byte goes through the broker once
//!   more (inline records travel in the task message, up to the server's
//!   `max_payload`, 1 MiB by default: [`DistError::TooLarge`] past it).
//!   async-nats reads objects whole (no ranged reads), so the coordinator
//!   uploads each split's share as its own object rather than each file.
//! - Map output is not kept when a node dies: it is already in the object
//!   store, so completed maps never re-run (unlike the paper's, whose output
//!   was on the dead machine's disk).
//! - **A coordinator killed mid-job** leaves the job's stream, bucket and
//!   object store (`FY_<id>`, `KV_FY_<id>`, `OBJ_FY_<id>`) on the server,
//!   and nodes keep running its queued tasks. Running the same job again
//!   (same output directory: the job id is recorded in its job directory)
//!   **resumes** it: the tasks committed in the bucket are not run again
//!   (their map output is still in the object store), the killed run's
//!   queued messages are dropped, and the rest is published anew, as the
//!   local engine's job directory resumes a local job. Only a killed
//!   coordinator leaves a job to resume: a run that ends, done or failed
//!   (any error, [`DistError::Deadline`] and [`DistError::Broker`] included),
//!   deletes all three, so a failed job starts over when run again. The
//!   job's identity (name, parameters, splits, reducers) is recorded in the
//!   bucket: the same id for another job is refused
//!   ([`DistError::OtherJob`]); so is taking over a job whose coordinator
//!   refreshed its lease less than three of its ack waits ago
//!   ([`DistError::CoordinatorLive`]: it may be alive). A job nobody will resume is
//!   removed with [`remove_job`] (`forkyard-mapreduce-node --remove-job
//!   ID`; [`jobs_on`] lists them).
//! - Security: use [`NatsConfig::user`] or [`NatsConfig::nkey`] and a server
//!   that requires them; subjects are namespaced per job (`fy.<id>.`), which
//!   a server's permissions can restrict. Nothing here listens on a port: only
//!   the server does (the tests bind it to 127.0.0.1).
//! - async-nats 0.46 cannot read a 2.9 server's account info, so the KV
//!   bucket's stream is created by hand with the layout `create_key_value`
//!   uses.
//!
//! # Compared with
//!
//! Redis Streams consumer groups leave a dead consumer's entries pending
//! until someone runs `XAUTOCLAIM`, with no delivery cap; RabbitMQ requeues
//! on channel close but needs Erlang and a cluster to be useful; Ballista
//! re-runs stages but only for SQL plans; timely dataflow stops on the first
//! failure. JetStream redelivers, caps and accepts progress acks by itself,
//! so the node has no janitor loop.

mod call;
mod coordinator;
mod node;
mod wire;

use std::time::Duration;

use futures::StreamExt;

pub use call::{CallError, Caller, Service, Services};
pub use coordinator::{DistOptions, DistReport, jobs_on, remove_job};
pub use node::{Node, serve_jobs_blocking};
pub use wire::{RejectReason, Rejection};

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
        // How `close` knows the socket is closed: async-nats keeps the event
        // callback in its event task, which ends only after the connection
        // task has dropped its socket (that task holds the event channel's
        // only sender). The callback owns `gone_tx`, so `gone` sees the
        // sender dropped exactly then.
        let (gone_tx, gone) = tokio::sync::watch::channel(());
        opts = opts.event_callback(move |_event| {
            let _owned_until_the_connection_ends = &gone_tx;
            std::future::ready(())
        });
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
        Ok(Cluster {
            client,
            js,
            gone,
            close_timeout: self.connect_timeout,
        })
    }
}

/// A multi-threaded tokio runtime (2 worker threads) for the blocking
/// entry points ([`MapReduce::run_on_blocking`](crate::MapReduce::run_on_blocking),
/// [`serve_jobs_blocking`]).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, DistError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| DistError::Io {
            what: "cannot start a tokio runtime".into(),
            source,
        })
}

/// Prints `{program}: error: ` and `error` followed by each of its causes,
/// `: `-separated, as one line on stderr, and returns
/// [`ExitCode::FAILURE`](std::process::ExitCode::FAILURE): how the node
/// program and the `wordcount` example end on an error, e.g.
/// `wordcount: error: cannot connect to NATS at nats://127.0.0.1:4222: the
/// server refused the credentials: ...`.
pub fn report_error(program: &str, error: &dyn std::error::Error) -> std::process::ExitCode {
    let mut line = format!("{program}: error: {error}");
    let mut source = error.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    eprintln!("{line}");
    std::process::ExitCode::FAILURE
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
    /// Never written: fails `changed()` once the connection's socket is
    /// closed (see `NatsConfig::connect`).
    gone: tokio::sync::watch::Receiver<()>,
    /// How long `close` waits for that (the connect timeout).
    close_timeout: Duration,
}

impl Cluster {
    /// The underlying client (to publish or subscribe to anything else).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Flushes what was published, closes the connection (every clone of
    /// this `Cluster` with it) and returns once its socket is closed.
    ///
    /// `async_nats::Client::drain` only queues the request: the client's
    /// connection task then flushes, waits for the server's answer to a
    /// ping and ends, dropping the socket. A server that goes away in
    /// between (stopped right after `drain` returned) leaves that task
    /// reconnecting, with no cap, holding the dead socket until the server
    /// is back or the tokio runtime ends. So `close` waits for the task's
    /// end, for at most the connect timeout; a client that has lost its
    /// server cannot drain, and `close` then logs a warning and returns.
    /// Dropping the last clone also closes the connection, but only once
    /// the client's background task notices.
    pub async fn close(self) {
        let Cluster {
            client,
            js,
            mut gone,
            close_timeout,
        } = self;
        let _ = client.drain().await;
        drop((client, js));
        let ended = async { while gone.changed().await.is_ok() {} };
        if tokio::time::timeout(close_timeout, ended).await.is_err() {
            tracing::warn!(
                "the NATS connection did not close within {close_timeout:?} (is the server gone?): \
                 its socket stays open until the server is back or the runtime ends"
            );
        }
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
        "{} was delivered {deliveries} time(s) and never finished (the nodes running it died or stalled)",
        task_label(*phase, *index)
    )]
    Undeliverable {
        /// The task's phase.
        phase: crate::Phase,
        /// The map task's index, or the reduce partition.
        index: u32,
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
    /// The job ran past [`DistOptions::deadline`].
    #[error("the job did not finish within its deadline of {deadline:?}")]
    Deadline {
        /// The deadline.
        deadline: std::time::Duration,
    },
    /// The job id is on the server for a different job (other inputs,
    /// parameters or reducers): taking it over would mix two jobs' work.
    #[error(
        "job id {id} is already on the server for a different job (other inputs or parameters): choose another id, or remove it (remove_job, `forkyard-mapreduce-node --remove-job`)"
    )]
    OtherJob {
        /// The job id.
        id: String,
    },
    /// Another coordinator holds the job's lease: it refreshed it `age` ago,
    /// less than three ack waits, so it is running (or died too recently to
    /// tell). Run the job again once that one is gone.
    #[error(
        "job {id} has a live coordinator (its lease was refreshed {age:?} ago, under three ack waits): run it again once that one is gone"
    )]
    CoordinatorLive {
        /// The job id.
        id: String,
        /// The age of the other coordinator's lease.
        age: std::time::Duration,
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

fn task_label(phase: crate::Phase, index: u32) -> String {
    match phase {
        crate::Phase::Map => format!("map task {index}"),
        crate::Phase::Reduce => format!("reduce partition {index}"),
    }
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
