use std::sync::Arc;
use std::time::Duration;

use kilat_core::engine::{
    Broker, HistoryQuery, JoinLeave, NodeRegistry, PresenceStore, PublishOptions,
};

use crate::support::{self, Recorder};

const HISTORY: PublishOptions = PublishOptions {
    history_size: 100,
    history_ttl: Duration::from_secs(60),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publication_from_one_node_reaches_the_other_once_in_offset_order() {
    let Some(redis) = support::redis("publication_from_one_node_reaches_the_other_once") else {
        return;
    };
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let (seen_a, seen_b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    a.set_handler(seen_a.clone());
    b.set_handler(seen_b.clone());
    let ch = support::channel("fanout");
    // No wait between the subscribe and the first publish: subscribe returns once Redis
    // confirmed it, so the very next publication must arrive.
    b.subscribe(&ch).await.expect("subscribe");
    let mut epoch = None;
    for i in 1..=50u64 {
        let position = a
            .publish(&ch, support::publication(&i.to_string()), HISTORY)
            .await
            .expect("publish")
            .expect("position");
        assert_eq!(position.offset, i);
        epoch.get_or_insert(position.epoch);
    }
    let seen = seen_b.wait_until(&ch, |s| s.len() >= 50).await;
    let expected: Vec<_> = (1..=50u64)
        .map(|i| {
            (
                ch.clone(),
                Some(i),
                epoch.clone().expect("epoch"),
                i.to_string(),
            )
        })
        .collect();
    assert_eq!(seen, expected, "once each, in offset order, with the epoch");
    // A marker behind them proves nothing else (no duplicate) was in flight.
    a.publish(&ch, support::publication("\"end\""), HISTORY)
        .await
        .expect("publish");
    let seen = seen_b.wait_until(&ch, |s| s.len() >= 51).await;
    assert_eq!(seen.len(), 51);
    assert!(seen_a.seen(&ch).is_empty(), "node A never subscribed");

    // Join/leave fan out too.
    a.publish_join_leave(&ch, support::info("c1", "u1"), JoinLeave::Join)
        .await
        .expect("join");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen_b.joins(&ch).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "join not delivered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(seen_b.joins(&ch), [("c1".to_owned(), true)]);

    b.unsubscribe(&ch).await.expect("unsubscribe");
    b.unsubscribe(&ch).await.expect("unsubscribe is idempotent");
    assert_eq!(b.subscribed_channels(), 0);
    a.publish(&ch, support::publication("\"after\""), HISTORY)
        .await
        .expect("publish");
    // Node B subscribes a second channel and hears a publication there, which Redis sent
    // after the one above: had B still been subscribed to `ch`, it would have it by now.
    let probe = support::channel("probe");
    b.subscribe(&probe).await.expect("subscribe");
    a.publish(&probe, support::publication("1"), HISTORY)
        .await
        .expect("publish");
    seen_b.wait_until(&probe, |s| s.len() == 1).await;
    assert_eq!(seen_b.seen(&ch).len(), 51, "nothing after unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_presence_are_shared_between_nodes() {
    let Some(redis) = support::redis("history_and_presence_are_shared_between_nodes") else {
        return;
    };
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let ch = support::channel("shared");
    let before = b
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    for i in 1..=3 {
        a.publish(&ch, support::publication(&i.to_string()), HISTORY)
            .await
            .expect("publish");
    }
    let page = b
        .history(
            &ch,
            HistoryQuery {
                since: Some(1),
                ..HistoryQuery::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(page.position.offset, 3);
    assert_eq!(
        page.position.epoch, before.position.epoch,
        "the epoch node B read before any publish is the one node A's publishes got"
    );
    let offsets: Vec<_> = page.publications.iter().filter_map(|p| p.offset).collect();
    assert_eq!(offsets, [2, 3]);

    let ttl = Duration::from_secs(60);
    a.add(&ch, support::info("c1", "alice"), ttl)
        .await
        .expect("add");
    b.add(&ch, support::info("c2", "bob"), ttl)
        .await
        .expect("add");
    let stats = b.stats(&ch).await.expect("stats");
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    b.remove(&ch, "c1").await.expect("remove");
    let list = a.list(&ch).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].client, "c2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_a_node_that_stops_refreshing_expires() {
    let Some(redis) = support::redis("presence_of_a_node_that_stops_refreshing_expires") else {
        return;
    };
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let ch = support::channel("expiry");
    // Node A "dies" after one add with a short TTL; node B keeps refreshing its client.
    a.add(&ch, support::info("dead", "x"), Duration::from_millis(300))
        .await
        .expect("add");
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        b.add(&ch, support::info("alive", "y"), Duration::from_secs(60))
            .await
            .expect("refresh");
        let clients: Vec<_> = b
            .list(&ch)
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.client)
            .collect();
        if clients == ["alive"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {clients:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = b.stats(&ch).await.expect("stats");
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_entries_expire_one_by_one_after_their_ttl() {
    let Some(redis) = support::redis("history_entries_expire_one_by_one_after_their_ttl") else {
        return;
    };
    let a = support::engine(&redis).await;
    let ch = support::channel("ttl");
    let short = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_millis(300),
    };
    a.publish(&ch, support::publication("1"), short)
        .await
        .expect("publish");
    // A later publication with a long TTL keeps the stream alive; the first still expires.
    a.publish(&ch, support::publication("2"), HISTORY)
        .await
        .expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = a
            .history(&ch, HistoryQuery::default())
            .await
            .expect("history");
        let offsets: Vec<_> = page.publications.iter().filter_map(|p| p.offset).collect();
        assert_eq!(page.position.offset, 2);
        if offsets == [2] {
            break;
        }
        assert_eq!(offsets, [1, 2]);
        assert!(
            tokio::time::Instant::now() < deadline,
            "entry 1 never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The offset and epoch outlive the entries (meta TTL): the next publish continues.
    let next = a
        .publish(&ch, support::publication("3"), short)
        .await
        .expect("publish")
        .expect("position");
    assert_eq!(next.offset, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pubsub_connections_survive_their_pings() {
    let Some(redis) = support::redis("idle_pubsub_connections_survive_their_pings") else {
        return;
    };
    let mut config = support::config(&redis);
    config.pubsub_ping_interval = Duration::from_millis(50);
    let a = Arc::new(
        kilat_engine_redis::RedisEngine::connect(config)
            .await
            .expect("connects"),
    );
    let seen = Arc::new(Recorder::default());
    a.set_handler(seen.clone());
    let ch = support::channel("idle");
    a.subscribe(&ch).await.expect("subscribe");
    // Several ping intervals with no traffic: the pings must be answered, not reconnect.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.pubsub_reconnects(),
        0,
        "a healthy idle connection is kept"
    );
    a.publish(&ch, support::publication("1"), HISTORY)
        .await
        .expect("publish");
    seen.wait_until(&ch, |s| s.len() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_in_the_registry_until_a_heartbeat_lapses() {
    let Some(redis) = support::redis("nodes_see_each_other_in_the_registry") else {
        return;
    };
    let mut config = support::config(&redis);
    // A prefix of its own: the registry is global to a prefix, other tests share the Redis.
    config.key_prefix = format!("registry-{}", kilat_core::new_epoch());
    let connect = || kilat_engine_redis::RedisEngine::connect(config.clone());
    let (a, b) = (connect().await.expect("a"), connect().await.expect("b"));
    // Through the role trait the server uses.
    let (a, b): (&dyn NodeRegistry, &dyn NodeRegistry) = (&a, &b);
    let json = |s: &str| kilat_protocol::types::raw_json(s).expect("json");
    a.heartbeat("a", &json(r#"{"id":"a"}"#), Duration::from_millis(300))
        .await
        .expect("heartbeat");
    b.heartbeat("b", &json(r#"{"id":"b"}"#), Duration::from_secs(60))
        .await
        .expect("heartbeat");
    let mut ids: Vec<String> = b
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .map(|n| n.get().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, [r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
    // Node A stops heartbeating: it drops out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.nodes().await.expect("nodes").len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node a never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.deregister("b").await.expect("remove");
    assert!(a.nodes().await.expect("nodes").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_two_nodes_get_distinct_offsets_delivered_in_order() {
    let Some(redis) = support::redis("concurrent_publishers_on_two_nodes") else {
        return;
    };
    let (a, b) = (support::engine(&redis).await, support::engine(&redis).await);
    let (seen_a, seen_b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    a.set_handler(seen_a.clone());
    b.set_handler(seen_b.clone());
    let ch = support::channel("race");
    a.subscribe(&ch).await.expect("subscribe");
    b.subscribe(&ch).await.expect("subscribe");
    let mut tasks = Vec::new();
    for (node, engine) in [("a", a.clone()), ("b", b.clone())] {
        for task in 0..4 {
            let (engine, ch) = (engine.clone(), ch.clone());
            tasks.push(tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..25 {
                    let data = format!("\"{node}{task}-{i}\"");
                    let position = engine
                        .publish(&ch, support::publication(&data), HISTORY)
                        .await
                        .expect("publish")
                        .expect("position");
                    offsets.push(position.offset);
                }
                offsets
            }));
        }
    }
    let mut returned = Vec::new();
    for task in tasks {
        returned.extend(task.await.expect("publisher"));
    }
    returned.sort_unstable();
    assert_eq!(
        returned,
        (1..=200).collect::<Vec<u64>>(),
        "no gap, no repeat"
    );
    let got_a = seen_a.wait_until(&ch, |s| s.len() >= 200).await;
    let got_b = seen_b.wait_until(&ch, |s| s.len() >= 200).await;
    let offsets = |seen: &[support::Seen]| seen.iter().filter_map(|s| s.1).collect::<Vec<_>>();
    assert_eq!(
        offsets(&got_a),
        (1..=200).collect::<Vec<u64>>(),
        "node A: offset order"
    );
    assert_eq!(got_a, got_b, "both nodes see the same sequence");
    let page = a
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    let history: Vec<_> = page.publications.iter().map(|p| p.data.get()).collect();
    let live: Vec<_> = got_a[100..].iter().map(|s| s.3.as_str()).collect();
    assert_eq!(
        history, live,
        "history holds the newest 100 in the delivered order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_subscribes_and_unsubscribes_leave_redis_and_the_node_in_agreement() {
    let Some(redis) = support::redis("racing_subscribes_and_unsubscribes") else {
        return;
    };
    let a = support::engine(&redis).await;
    let ch = support::channel("storm");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let (a, ch) = (a.clone(), ch.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                if (t + i) % 2 == 0 {
                    a.subscribe(&ch).await.expect("subscribe");
                } else {
                    a.unsubscribe(&ch).await.expect("unsubscribe");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let client = redis::Client::open(redis.url()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let name = format!("{{kilat:ch:{ch}}}:pub");
    let numsub = async |admin: &mut redis::aio::MultiplexedConnection| {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&name)
            .query_async(admin)
            .await
            .expect("PUBSUB NUMSUB");
        n
    };
    // Whatever the interleaving, the engine's view matches Redis', and a final call wins.
    let wanted = a.subscribed_channels() as u64;
    assert_eq!(numsub(&mut admin).await, wanted);
    a.subscribe(&ch).await.expect("subscribe");
    assert_eq!(numsub(&mut admin).await, 1);
    a.unsubscribe(&ch).await.expect("unsubscribe");
    assert_eq!(numsub(&mut admin).await, 0);
    assert_eq!(a.subscribed_channels(), 0);
}
