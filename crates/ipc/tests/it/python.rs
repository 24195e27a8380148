//! A worker in Python over the JSON-lines codec: the wire format is all it takes.

use forkyard_child::Child;
use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};
use forkyard_ipc::{Codec, Config, Error};

use crate::support::{Baseline, mt, wait_for_async};
use crate::wire::{Ask, Job};

#[test]
fn a_python_worker_answers_calls_back_fails_and_dies_like_a_rust_one() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/ipc_worker.py"));
        let (mut child, chan): (Child, RpcChannel<Job, u64, Ask, u64>) = forkyard_ipc::spawn_with(
            Child::builder(&mut cmd),
            Config::new().codec(Codec::JsonLines),
        )
        .unwrap();
        let rpc = Rpc::new(chan, RpcConfig::new(), |ask: Ask| async move {
            match ask {
                Ask::Double(n) => Ok::<_, String>(2 * n),
            }
        });
        assert_eq!(rpc.call(Job::Echo(42)).await.unwrap(), 42);
        assert_eq!(rpc.call(Job::Pid).await.unwrap(), u64::from(child.id()));
        // Many in flight, answered out of order by the worker's threads.
        let (a, b, c) = tokio::join!(
            rpc.call(Job::Sleep { ms: 60, value: 1 }),
            rpc.call(Job::Sleep { ms: 1, value: 2 }),
            rpc.call(Job::AskParent(20)),
        );
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 2, 41));
        match rpc.call(Job::Fail("bad input".into())).await {
            Err(Error::Remote(m)) => assert_eq!(m, "ValueError: bad input"),
            other => panic!("expected a remote error, got {other:?}"),
        }
        // A call given up on is cancelled on the Python side too.
        let hang = rpc.call(Job::Hang { tag: 1 });
        let _ = tokio::time::timeout(std::time::Duration::from_millis(1), hang).await;
        wait_for_async("the cancel to reach the worker", || {
            let rpc = rpc.clone();
            async move {
                match rpc.call(Job::WasCancelled { tag: 1 }).await {
                    Ok(1) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        assert!(matches!(rpc.call(Job::Die).await, Err(Error::Closed)));
        assert_eq!(child.wait().await.unwrap().code(), Some(9));
        drop((rpc, child));
        base.assert_clean().await;
    });
}
