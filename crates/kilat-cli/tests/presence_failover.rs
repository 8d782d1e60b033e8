//! A node killed with SIGKILL has its members removed everywhere, with leaves, within a bound:
//! three `kilat serve --engine redis` processes on one real `redis-server`; members subscribe
//! on the middle node, a watcher with join/leave on each of the other two. After the middle
//! node is killed, both watchers get a leave for every one of its members and the channel's
//! presence lists only the watchers: the node leaves the registry within three heartbeats
//! (15 s) and the next survivor tick (5 s) removes its members (docs/protocol.md, presence).
//!
//! Needs `redis-server` on PATH: skipped with a loud notice without it, a failure under
//! `CI=true`.

mod procs;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kilat_client::{Client, ClientConfig, Event, Events, SubscribeOptions};
use kilat_testkit::RedisServer;
use procs::{WAIT, start_node};

/// Members on the node that is killed.
const MEMBERS: usize = 5;
/// Registry TTL (3 heartbeats of 5 s) plus one reaper tick, and slack for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

async fn client(addr: SocketAddr) -> (Client, Events, String) {
    let mut config = ClientConfig::new(format!("ws://{addr}/connection/websocket"));
    config.min_reconnect_delay = Duration::from_millis(200);
    config.max_reconnect_delay = Duration::from_secs(2);
    let (client, mut events) = Client::connect(config).await.expect("connect");
    let id = loop {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Event::Connected { client, .. })) => break client,
            Ok(Some(_)) => {}
            other => panic!("no Connected event: {other:?}"),
        }
    };
    (client, events, id)
}

/// Waits until `events` has shown a join (`join`) or leave of every id in `ids`.
async fn await_changes(events: &mut Events, ids: &HashSet<String>, join: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = HashSet::new();
    while !ids.is_subset(&seen) {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {} members seen within {within:?} ({})",
                    seen.len(),
                    ids.len(),
                    if join { "joins" } else { "leaves" }
                )
            })
            .expect("event stream open");
        match event {
            Event::Join { info, .. } if join => {
                seen.insert(info.client);
            }
            Event::Leave { info, .. } if !join => {
                seen.insert(info.client);
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_members_leave_everywhere_within_the_bound() {
    const TEST: &str = "a_killed_nodes_members_leave_everywhere_within_the_bound";
    let Some(redis) = RedisServer::start(TEST) else {
        return;
    };
    let url = redis.url();
    let (_a, a_addr) = start_node(&url);
    let (mut victim, victim_addr) = start_node(&url);
    let (_b, b_addr) = start_node(&url);

    let watch = SubscribeOptions {
        join_leave: Some(true),
        ..SubscribeOptions::default()
    };
    let mut watchers = Vec::new();
    for addr in [a_addr, b_addr] {
        let (client, events, id) = client(addr).await;
        client
            .subscribe("room", watch.clone())
            .await
            .expect("watch");
        watchers.push((client, events, id));
    }
    let mut members = Vec::new();
    let mut ids = HashSet::new();
    for _ in 0..MEMBERS {
        let (client, events, id) = client(victim_addr).await;
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .expect("subscribe");
        ids.insert(id);
        members.push((client, events));
    }
    for (_, events, _) in &mut watchers {
        await_changes(events, &ids, true, WAIT).await;
    }
    let stats = watchers[0].0.presence_stats("room").await.expect("stats");
    assert_eq!(stats.num_clients as usize, MEMBERS + 2, "everyone is in");

    victim.0.kill().expect("SIGKILL the members' node");
    let _ = victim.0.wait();
    let killed = Instant::now();
    for (_, events, _) in &mut watchers {
        await_changes(events, &ids, false, BOUND).await;
    }
    let took = killed.elapsed();
    assert!(took < BOUND, "leaves within the bound: {took:?}");

    // Removed everywhere: the presence store lists the watchers only, on either node.
    let expected: HashSet<String> = watchers.iter().map(|(_, _, id)| id.clone()).collect();
    for (client, _, _) in &watchers {
        let listed: HashSet<String> = client
            .presence("room")
            .await
            .expect("presence")
            .clients
            .into_keys()
            .collect();
        assert_eq!(listed, expected, "only the watchers are left");
        let stats = client.presence_stats("room").await.expect("stats");
        assert_eq!(
            stats.num_clients, 2,
            "counts without the dead node's members"
        );
    }
    eprintln!(
        "{TEST}: {MEMBERS} members of a SIGKILLed node left everywhere {took:?} after the kill"
    );
    drop(members);
}
