//! Request-response against real worker processes.

use std::time::Duration;

use forkyard_ipc::Error;
use forkyard_ipc::rpc::{Rpc, RpcChannel, RpcConfig};

use crate::support::{Baseline, DEADLINE, fixture, mt, wait_for_async};
use crate::wire::{Ask, Job};

/// A parent endpoint to an `rpc` fixture worker that answers its `Ask`s.
fn start(config: RpcConfig) -> (forkyard_child::Child, Rpc<Job, u64>) {
    let (child, chan): (_, RpcChannel<Job, u64, Ask, u64>) =
        forkyard_ipc::spawn(&mut fixture(&["rpc"])).unwrap();
    let rpc = Rpc::new(chan, config, |ask: Ask| async move {
        match ask {
            Ask::Double(n) => Ok::<_, String>(2 * n),
        }
    });
    (child, rpc)
}

/// Drops the endpoint: the worker sees the end of its channel and exits 0.
async fn finish(rpc: Rpc<Job, u64>, mut child: forkyard_child::Child) {
    drop(rpc);
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

/// Polls `fut` once and drops it: the request is sent, then abandoned.
async fn send_and_abandon<F: std::future::Future>(fut: F) {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        assert!(fut.as_mut().poll(cx).is_pending(), "answered at once");
        std::task::Poll::Ready(())
    })
    .await;
}

#[test]
fn many_calls_in_flight_come_back_to_their_callers_in_both_directions() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let (child, rpc) = start(RpcConfig::new());
        // 200 calls at once, finishing in scrambled order.
        let calls = (0..200u64).map(|i| {
            let rpc = rpc.clone();
            async move {
                rpc.call(Job::Sleep {
                    ms: (i * 7) % 13,
                    value: i,
                })
                .await
            }
        });
        let answers = futures_join_all(calls).await;
        for (i, a) in answers.into_iter().enumerate() {
            assert_eq!(a.unwrap(), i as u64);
        }
        // The worker calls the parent back while handling a request.
        let (a, b, c) = tokio::join!(
            rpc.call(Job::AskParent(5)),
            rpc.call(Job::Echo(3)),
            rpc.call(Job::AskParent(7))
        );
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (11, 3, 15));
        assert_eq!(rpc.in_flight(), 0);
        match rpc.call(Job::Fail("boom".into())).await {
            Err(Error::Remote(m)) => assert_eq!(m, "boom"),
            other => panic!("expected a remote error, got {other:?}"),
        }
        finish(rpc, child).await;
        base.assert_clean().await;
    });
}

/// Joins futures without pulling in a crate: spawns none, polls all.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn a_dropped_call_cancels_the_handler_in_the_worker() {
    mt().block_on(async {
        let base = Baseline::take().await;
        // No deadline: only the cancellation can end the handler.
        let (child, rpc) = start(RpcConfig::new().deadline(None));
        send_and_abandon(rpc.call(Job::Hang { tag: 1 })).await;
        assert_eq!(rpc.in_flight(), 0, "the abandoned call is forgotten");
        wait_for_async("the worker to drop the cancelled handler", || {
            let rpc = rpc.clone();
            async move {
                match rpc.call(Job::WasCancelled { tag: 1 }).await {
                    Ok(1) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        finish(rpc, child).await;
        base.assert_clean().await;
    });
}

#[test]
fn a_deadline_fails_the_call_and_the_worker_gives_up_too() {
    mt().block_on(async {
        let base = Baseline::take().await;
        let (child, rpc) = start(RpcConfig::new());
        match rpc
            .call_with_deadline(Job::Hang { tag: 2 }, Duration::from_millis(50))
            .await
        {
            Err(Error::DeadlineExceeded(d)) => assert_eq!(d, Duration::from_millis(50)),
            other => panic!("expected DeadlineExceeded, got {other:?}"),
        }
        wait_for_async("the worker to drop the timed-out handler", || {
            let rpc = rpc.clone();
            async move {
                match rpc.call(Job::WasCancelled { tag: 2 }).await {
                    Ok(1) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await;
        // The channel goes on after a deadline.
        assert_eq!(rpc.call(Job::Echo(4)).await.unwrap(), 4);
        finish(rpc, child).await;
        base.assert_clean().await;
    });
}

#[test]
fn a_worker_dying_with_requests_in_flight_fails_them_at_once() {
    // (how it dies: exits by itself mid-request, or is SIGKILLed from outside)
    for external_kill in [false, true] {
        mt().block_on(async {
            let base = Baseline::take().await;
            let (mut child, rpc) = start(RpcConfig::new().deadline(Some(DEADLINE)));
            let pid = rpc.call(Job::Pid).await.unwrap();
            assert_eq!(pid, u64::from(child.id()));
            let hangs: Vec<_> = (0..3)
                .map(|tag| {
                    let rpc = rpc.clone();
                    tokio::spawn(async move { rpc.call(Job::Hang { tag: 100 + tag }).await })
                })
                .collect();
            let start = std::time::Instant::now();
            if external_kill {
                wait_for_async("three calls in flight", || {
                    let n = rpc.in_flight();
                    async move { if n >= 3 { Ok(()) } else { Err(format!("{n}")) } }
                })
                .await;
                child.signal(forkyard_child::Signal::KILL).unwrap();
            } else {
                let died = rpc.call(Job::Die).await;
                assert!(matches!(died, Err(Error::Closed)), "{died:?}");
            }
            for h in hangs {
                let r = h.await.unwrap();
                assert!(matches!(r, Err(Error::Closed)), "{r:?}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "failed by the peer's death, not by the deadline"
            );
            assert!(rpc.is_closed());
            assert!(matches!(rpc.call(Job::Echo(1)).await, Err(Error::Closed)));
            let exit = child.wait().await.unwrap();
            if external_kill {
                assert_eq!(exit.signal(), Some(forkyard_child::Signal::KILL));
            } else {
                assert_eq!(exit.code(), Some(9));
            }
            drop((rpc, child));
            base.assert_clean().await;
        });
    }
}

#[test]
fn requests_both_ways_in_one_process_pair_of_channels() {
    // The same endpoint type on both sides: the parent can be called too.
    mt().block_on(async {
        type Both = RpcChannel<u64, u64, u64, u64>;
        let (a, b): (Both, Both) = forkyard_ipc::Channel::pair().unwrap();
        let a = Rpc::new(a, RpcConfig::new(), |n: u64| async move {
            Ok::<_, String>(n + 1)
        });
        let b = Rpc::new(b, RpcConfig::new(), |n: u64| async move {
            Ok::<_, String>(n * 10)
        });
        let (x, y) = tokio::join!(a.call(4), b.call(4));
        assert_eq!((x.unwrap(), y.unwrap()), (40, 5));
    });
}
