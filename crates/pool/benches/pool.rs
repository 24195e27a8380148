//! Criterion: forkyard-pool next to what a pool replaces, written by hand.
//!
//! - `round_trip`: one tiny task (`n -> n + 1`) through a 1-worker pool, against a raw
//!   blocking ping-pong of 8 bytes with one echo process over a socketpair (the floor
//!   for any request that crosses to another process and back);
//! - `throughput_1000_tasks`: 1,000 tiny tasks through a 2-worker pool with all of them
//!   in flight (`call` from 1,000 futures at once), and the same 1,000 items as one
//!   batch (`Pool::map`, in chunks), against a hand-written batch loop over two echo
//!   processes: write 500 requests to each, then read the 500 answers.
//!
//! `cargo bench -p forkyard-pool --bench pool` (or `cargo xtask bench pool`, which
//! prints each group's rows as ratios to its baseline). Peers that are other programs
//! (Node's `child_process.fork`, Python's `multiprocessing.Pool`) are in
//! `examples/compare.rs`. The bench binary is its own worker and its own echo process.
//! The pool's rows are timed in a task on the runtime's threads, as a server's handlers
//! call a pool (and as `examples/compare.rs` measures), not on the thread that called
//! `block_on`.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use forkyard_pool::{Pool, ShutdownMode, worker};
use futures::StreamExt;

/// Set in the environment of the echo processes this bench spawns of itself.
const ECHO_ENV: &str = "FORKYARD_POOL_BENCH_ECHO";
const BATCH: u64 = 1_000;

/// The raw baseline's process: echoes 8-byte messages on the socket it got as stdin.
fn echo() -> ! {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("stdin is the socket");
    let mut sock = UnixStream::from(fd);
    let mut buf = [0u8; 8];
    while sock.read_exact(&mut buf).is_ok() {
        if sock.write_all(&buf).is_err() {
            break;
        }
    }
    std::process::exit(0)
}

/// An echo process of this binary on one end of a socketpair; the other end is ours.
struct Echo {
    child: std::process::Child,
    sock: UnixStream,
}

impl Echo {
    fn spawn() -> Echo {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let child = Command::new(std::env::current_exe().expect("current exe"))
            .env(ECHO_ENV, "1")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .expect("spawn the echo process");
        Echo { child, sock: ours }
    }

    fn stop(mut self) {
        self.sock
            .shutdown(std::net::Shutdown::Both)
            .expect("shutdown");
        self.child.wait().expect("the echo process exits at EOF");
    }
}

async fn pool(workers: usize) -> Pool<u64, u64> {
    Pool::<u64, u64>::builder()
        .self_exec(std::iter::empty::<&str>())
        .expect("self_exec")
        .workers(workers)
        .max_in_flight_per_worker(256)
        .queue_capacity(2_000)
        .build()
        .await
        .expect("the pool starts")
}

/// Times `work` run as a task on the runtime's threads, as a server's handlers run,
/// rather than on the thread that called `block_on` (each wake-up of that thread is a
/// wake-up of another thread, which the pool's callers do not pay).
fn on_runtime<F, Fut>(rt: &tokio::runtime::Runtime, pool: &Pool<u64, u64>, work: F) -> Duration
where
    F: FnOnce(Pool<u64, u64>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = work(pool.clone());
    let task = rt.spawn(async move {
        let start = std::time::Instant::now();
        run.await;
        start.elapsed()
    });
    rt.block_on(task).expect("the measuring task")
}

fn drain(rt: &tokio::runtime::Runtime, pool: Pool<u64, u64>) {
    rt.block_on(pool.shutdown(ShutdownMode::Drain {
        grace: Duration::from_secs(5),
    }));
}

fn round_trip(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("round_trip");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4));

    let mut echo = Echo::spawn();
    let mut n = 0u64;
    group.bench_function("raw socketpair ping-pong (baseline)", |b| {
        b.iter(|| {
            n += 1;
            echo.sock.write_all(&n.to_le_bytes()).expect("write");
            let mut back = [0u8; 8];
            echo.sock.read_exact(&mut back).expect("read");
            assert_eq!(u64::from_le_bytes(back), n);
        })
    });
    echo.stop();

    let pool = rt.block_on(pool(1));
    // The target of the pool's issue: a round trip within 1.5x the raw ping-pong.
    // bench target: `round_trip/Pool::call, 1 worker` at most 1.5x
    group.bench_function("Pool::call, 1 worker", |b| {
        b.iter_custom(|iters| {
            on_runtime(rt, &pool, move |pool| async move {
                for _ in 0..iters {
                    assert_eq!(pool.call(41).await.expect("tiny task"), 42);
                }
            })
        })
    });
    drain(rt, pool);
    group.finish();
}

fn throughput(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("throughput_1000_tasks");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH));

    let mut echoes = [Echo::spawn(), Echo::spawn()];
    let per_echo = BATCH / echoes.len() as u64;
    group.bench_function("hand-written batch loop, 2 processes (baseline)", |b| {
        b.iter(|| {
            // All requests out first (4 KB per socket: well within its buffer), then
            // every answer back: both echo processes work at once.
            let requests: Vec<u8> = (0..per_echo).flat_map(u64::to_le_bytes).collect();
            for echo in &mut echoes {
                echo.sock.write_all(&requests).expect("write");
            }
            let mut answers = vec![0u8; requests.len()];
            for echo in &mut echoes {
                echo.sock.read_exact(&mut answers).expect("read");
                assert_eq!(answers, requests);
            }
        })
    });
    for echo in echoes {
        echo.stop();
    }

    let pool = rt.block_on(pool(2));
    group.bench_function("Pool::call, 2 workers, 1000 in flight", |b| {
        b.iter_custom(|iters| {
            on_runtime(rt, &pool, move |pool| async move {
                for _ in 0..iters {
                    let calls = (0..BATCH).map(|n| pool.call(n));
                    let answers = futures::future::join_all(calls).await;
                    for (n, answer) in answers.into_iter().enumerate() {
                        assert_eq!(answer.expect("tiny task"), n as u64 + 1);
                    }
                }
            })
        })
    });
    // The same 1,000 items as one batch: chunks, one message each way per chunk.
    group.bench_function("Pool::map, 2 workers", |b| {
        b.iter_custom(|iters| {
            on_runtime(rt, &pool, move |pool| async move {
                for _ in 0..iters {
                    let answers: Vec<_> = pool.map(0..BATCH).collect().await;
                    for (n, answer) in answers.into_iter().enumerate() {
                        assert_eq!(answer.expect("tiny item"), n as u64 + 1);
                    }
                }
            })
        })
    });
    drain(rt, pool);
    group.finish();
}

fn main() {
    if worker::is_worker() {
        worker::serve(|n: u64| async move { Ok::<u64, String>(n + 1) });
    }
    if std::env::var_os(ECHO_ENV).is_some() {
        echo();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    round_trip(&mut c, &rt);
    throughput(&mut c, &rt);
    c.final_summary();
}
