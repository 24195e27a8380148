//! Channel round trip and streaming against the raw socket, in one process
//! (the peer runs on its own thread). `examples/compare.rs` measures the same
//! between two processes, and HTTP against Node.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forkyard_ipc::Channel;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(5));

    let (a, mut b) = UnixStream::pair().unwrap();
    let raw_peer = std::thread::spawn(move || {
        let mut buf = [0u8; 8];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut raw = a;
    group.bench_function("raw_socketpair (baseline)", |bench| {
        bench.iter(|| {
            raw.write_all(&7u64.to_le_bytes()).unwrap();
            let mut back = [0u8; 8];
            raw.read_exact(&mut back).unwrap();
        })
    });
    drop(raw);
    raw_peer.join().unwrap();

    let rt = current_thread();
    let (a, b) = UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let mut chan: Channel<u64, u64> = Channel::from_stream(b).unwrap();
            while let Ok(Some(n)) = chan.recv().await {
                if chan.send(&n).await.is_err() {
                    break;
                }
            }
        });
    });
    let mut chan: Channel<u64, u64> = {
        let _guard = rt.enter();
        Channel::from_stream(a).unwrap()
    };
    // bench target: `round_trip/channel` at most 1.3x
    group.bench_function("channel", |bench| {
        bench.iter(|| {
            rt.block_on(async {
                chan.send(&7).await.unwrap();
                chan.recv().await.unwrap().unwrap()
            })
        })
    });
    drop(chan);
    peer.join().unwrap();
    group.finish();
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Msg64([u8; 32], [u8; 32]);

fn streaming(c: &mut Criterion) {
    const N: u64 = 10_000;
    let mut group = c.benchmark_group("stream_64_bytes");
    group.throughput(Throughput::Elements(N));
    group.measurement_time(Duration::from_secs(5));

    let (mut a, mut b) = UnixStream::pair().unwrap();
    let sink = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    group.bench_function("raw_write_per_message (baseline)", |bench| {
        let msg = [7u8; 64];
        bench.iter(|| {
            for _ in 0..N {
                a.write_all(&msg).unwrap();
            }
        })
    });
    drop(a);
    sink.join().unwrap();

    let rt = current_thread();
    let (a, b) = UnixStream::pair().unwrap();
    let sink = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let mut chan: Channel<(), Msg64> = Channel::from_stream(b).unwrap();
            while let Ok(Some(_)) = chan.recv().await {}
        });
    });
    let mut chan: Channel<Msg64, ()> = {
        let _guard = rt.enter();
        Channel::from_stream(a).unwrap()
    };
    // Times for N messages: at most 1x is at least the raw rate.
    // bench target: `stream_64_bytes/channel_feed` at most 1x
    group.bench_function("channel_feed", |bench| {
        let msg = Msg64([7; 32], [9; 32]);
        bench.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    chan.feed(&msg).await.unwrap();
                }
                chan.flush().await.unwrap();
            })
        })
    });
    drop(chan);
    sink.join().unwrap();
    group.finish();
}

criterion_group!(benches, round_trip, streaming);
criterion_main!(benches);
