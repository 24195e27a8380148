//! Pub-sub with the parent as broker, against real worker processes.

use forkyard_child::{Child, Input, Output};
use forkyard_ipc::pubsub::{Broker, BrokerConfig, Client, FromBroker, Overflow, ToBroker};
use forkyard_ipc::{Channel, Config};
use tokio::io::AsyncWriteExt;

use crate::support::{Baseline, fixture, rt, wait_for};

type Parent = Channel<FromBroker<String>, ToBroker<String>>;

/// Spawns a fixture pub-sub worker attached to `broker`, its stdout as lines.
fn attach(broker: &Broker<String>, args: &[&str]) -> Child {
    let mut cmd = fixture(args);
    let builder = Child::builder(&mut cmd)
        .stdout(Output::lines())
        .stdin(Input::Piped);
    let (child, chan): (Child, Parent) = forkyard_ipc::spawn_with(builder, Config::new()).unwrap();
    broker.attach(chan);
    child
}

/// The child's next stdout line.
async fn line(child: &mut Child) -> String {
    let l = tokio::time::timeout(crate::support::DEADLINE, child.next_line())
        .await
        .expect("a line in time")
        .expect("a line before the end");
    l.text().into_owned()
}

#[test]
fn topics_reach_their_subscribers_from_the_parent_and_from_workers() {
    rt().block_on(async {
        let base = Baseline::take().await;
        let broker = Broker::<String>::new(BrokerConfig::new());
        let mut news_only = attach(&broker, &["sub", "news"]);
        let mut both = attach(&broker, &["sub", "news", "sports"]);
        let mut local = broker.subscribe("sports");
        assert_eq!(line(&mut news_only).await, "subscribed");
        assert_eq!(line(&mut both).await, "subscribed");
        assert_eq!(
            (broker.subscribers("news"), broker.subscribers("sports")),
            (2, 2)
        );

        assert_eq!(broker.publish("news", &"n1".into()), 2);
        assert_eq!(broker.publish("sports", &"s1".into()), 2);
        assert_eq!(broker.publish("weather", &"w1".into()), 0, "nobody listens");
        assert_eq!(line(&mut news_only).await, "got news n1 dropped=0");
        assert_eq!(line(&mut both).await, "got news n1 dropped=0");
        assert_eq!(line(&mut both).await, "got sports s1 dropped=0");
        let d = local.recv().await.unwrap();
        assert_eq!((d.topic.as_str(), d.message.as_str()), ("sports", "s1"));

        // A worker publishes; everyone on the topic gets it, in order.
        let mut publisher = attach(&broker, &["pub", "sports", "3"]);
        assert_eq!(line(&mut publisher).await, "published");
        for i in 0..3 {
            assert_eq!(line(&mut both).await, format!("got sports m{i} dropped=0"));
            assert_eq!(local.recv().await.unwrap().message, format!("m{i}"));
        }
        assert_eq!(publisher.wait().await.unwrap().code(), Some(0));
        drop(publisher);

        // Closing the broker ends every client cleanly.
        broker.close();
        assert_eq!(line(&mut news_only).await, "closed");
        assert_eq!(line(&mut both).await, "closed");
        assert!(local.recv().await.is_none());
        for mut c in [news_only, both] {
            assert_eq!(c.wait().await.unwrap().code(), Some(0));
        }
        let stats = broker.stats();
        assert_eq!(stats.iter().map(|s| s.published).sum::<u64>(), 3);
        assert!(stats.iter().all(|s| s.gone && s.dropped == 0));
        drop(local);
        base.assert_clean().await;
    });
}

#[test]
fn unsubscribe_stops_the_routing() {
    rt().block_on(async {
        let broker = Broker::<String>::new(BrokerConfig::new());
        let (parent, worker) = Channel::pair().unwrap();
        broker.attach(parent);
        let mut client = Client::new(worker);
        client.subscribe("a").await.unwrap();
        client.subscribe("b").await.unwrap();
        client.unsubscribe("a").await.unwrap();
        assert_eq!((broker.subscribers("a"), broker.subscribers("b")), (0, 1));
        assert_eq!(broker.publish("a", &"x".into()), 0);
        assert_eq!(broker.publish("b", &"y".into()), 1);
        let d = client.recv().await.unwrap().unwrap();
        assert_eq!((d.topic.as_str(), d.message.as_str()), ("b", "y"));
        drop(client);
        wait_for("the closed client to be removed", || {
            (broker.subscribers("b") == 0)
                .then_some(())
                .ok_or_else(|| format!("{:?}", broker.stats()))
        })
        .await;
    });
}

/// A subscriber that reads nothing: publishing far more than its buffer
/// holds never waits, memory stays at the buffer, and once it reads it gets
/// the newest messages, each telling how many were lost before it.
#[test]
fn a_slow_subscriber_loses_the_oldest_and_is_told_how_many() {
    rt().block_on(async {
        let base = Baseline::take().await;
        let broker =
            Broker::<String>::new(BrokerConfig::new().buffer(4).overflow(Overflow::DropOldest));
        let mut slow = attach(&broker, &["slow-sub", "t"]);
        assert_eq!(line(&mut slow).await, "subscribed");
        let big = "x".repeat(16 << 10);
        let n = 500u64;
        for i in 0..n {
            broker.publish("t", &format!("{i}:{big}"));
            let queued: usize = broker.stats().iter().map(|s| s.queued).sum();
            assert!(queued <= 4, "buffer exceeded: {queued}");
            if i % 50 == 0 {
                tokio::task::yield_now().await; // let the writer fill the socket
            }
        }
        slow.take_stdin().unwrap().write_all(b"go\n").await.unwrap();
        let mut received = Vec::new();
        let mut dropped = 0;
        while received.last() != Some(&(n - 1)) {
            let l = line(&mut slow).await;
            let rest = l
                .strip_prefix("got t ")
                .unwrap_or_else(|| panic!("unexpected line {l:?}"));
            let (msg, d) = rest.rsplit_once(" dropped=").unwrap();
            received.push(msg.split(':').next().unwrap().parse::<u64>().unwrap());
            dropped += d.parse::<u64>().unwrap();
        }
        assert!(
            dropped > 0,
            "nothing was dropped: the test published too little"
        );
        assert_eq!(
            received.len() as u64 + dropped,
            n,
            "every message is either delivered or counted"
        );
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "in order: {received:?}"
        );
        let stats = broker.stats();
        assert_eq!(stats[0].dropped, dropped);
        broker.close();
        assert_eq!(line(&mut slow).await, "closed");
        drop(slow);
        base.assert_clean().await;
    });
}

#[test]
fn the_disconnect_policy_cuts_off_only_the_slow_subscriber() {
    rt().block_on(async {
        let base = Baseline::take().await;
        let broker =
            Broker::<String>::new(BrokerConfig::new().buffer(2).overflow(Overflow::Disconnect));
        let mut slow = attach(&broker, &["slow-sub", "t"]);
        assert_eq!(line(&mut slow).await, "subscribed");
        let mut fast = broker.subscribe("t");
        let big = "x".repeat(16 << 10);
        let mut sent = 0u64;
        while !broker.stats().iter().any(|s| s.disconnected_for_overflow) {
            assert!(sent < 100_000, "never disconnected");
            broker.publish("t", &format!("{sent}:{big}"));
            tokio::task::yield_now().await; // the slow one's writer fills its socket
            // The fast subscriber keeps up and never overflows.
            let d = fast.recv().await.unwrap();
            assert_eq!(d.message.split(':').next().unwrap(), sent.to_string());
            assert_eq!(d.dropped, 0);
            sent += 1;
        }
        assert_eq!(broker.subscribers("t"), 1, "only the fast one is left");
        // The slow one reads what reached its socket, then sees the end.
        slow.take_stdin().unwrap().write_all(b"go\n").await.unwrap();
        loop {
            let l = line(&mut slow).await;
            if l == "closed" {
                break;
            }
            assert!(l.starts_with("got t ") && l.ends_with(" dropped=0"), "{l}");
        }
        assert_eq!(slow.wait().await.unwrap().code(), Some(0));
        broker.publish("t", &"after".into());
        assert_eq!(fast.recv().await.unwrap().message, "after");
        drop((slow, fast));
        base.assert_clean().await;
    });
}

#[test]
fn a_killed_subscriber_is_removed_and_the_rest_carry_on() {
    rt().block_on(async {
        let base = Baseline::take().await;
        let broker = Broker::<String>::new(BrokerConfig::new());
        let mut a = attach(&broker, &["sub", "t"]);
        let mut b = attach(&broker, &["sub", "t"]);
        assert_eq!(line(&mut a).await, "subscribed");
        assert_eq!(line(&mut b).await, "subscribed");
        a.kill().await.unwrap();
        wait_for("the dead subscriber to be removed", || {
            (broker.subscribers("t") == 1)
                .then_some(())
                .ok_or_else(|| format!("{:?}", broker.stats()))
        })
        .await;
        assert_eq!(broker.publish("t", &"m".into()), 1);
        assert_eq!(line(&mut b).await, "got t m dropped=0");
        broker.close();
        assert_eq!(line(&mut b).await, "closed");
        drop((a, b));
        base.assert_clean().await;
    });
}
