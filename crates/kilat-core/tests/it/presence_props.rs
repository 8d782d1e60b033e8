//! Presence equals the subscribed set after any interleaving of subscribe, unsubscribe,
//! re-subscribe (same client id), disconnect, reconnect (a new client id) and the ping timer,
//! whose presence refresh runs in a background task that the other steps may overtake (as the
//! connection loop does when the client's next message is already buffered). Found by the
//! one-hour soak: a refresh started at a ping and run after the leave it raced re-added the
//! entry, which stayed until its TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kilat_core::{Node, NodeConfig};
use proptest::prelude::*;
use serde_json::json;

use crate::support::*;

const CHANNELS: [&str; 3] = ["room:a", "room:b", "room:c"];
const CLIENTS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    /// Unsubscribe and subscribe the same channel again at once (same client id).
    Resubscribe(usize, usize),
    /// Close the session (its cleanup runs to the end before anything else does).
    Disconnect(usize),
    /// A new session (new client id) in the slot, if it was closed.
    Reconnect(usize),
    /// The client's ping is due: `on_timer` queues the ping and starts the presence refresh
    /// task, which does not run until something yields.
    Ping(usize),
    /// Let the background tasks run.
    Yield,
}

fn step() -> impl Strategy<Value = Step> {
    let cl = 0..CLIENTS;
    let ch = 0..CHANNELS.len();
    prop_oneof![
        4 => (cl.clone(), ch.clone()).prop_map(|(c, h)| Step::Subscribe(c, h)),
        2 => (cl.clone(), ch.clone()).prop_map(|(c, h)| Step::Unsubscribe(c, h)),
        2 => (cl.clone(), ch).prop_map(|(c, h)| Step::Resubscribe(c, h)),
        2 => cl.clone().prop_map(Step::Disconnect),
        2 => cl.clone().prop_map(Step::Reconnect),
        4 => cl.prop_map(Step::Ping),
        2 => Just(Step::Yield),
    ]
}

struct Slot {
    client: Option<Client>,
    id: String,
    subscribed: BTreeSet<usize>,
}

async fn connect(node: &Node) -> Slot {
    let mut client = Client::new(node);
    let reply = client.connect().await;
    let id = reply["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_owned();
    Slot {
        client: Some(client),
        id,
        subscribed: BTreeSet::new(),
    }
}

async fn subscribe(slot: &mut Slot, h: usize) {
    let Some(client) = slot.client.as_mut() else {
        return;
    };
    let reply = client
        .call("subscribe", json!({"channel": CHANNELS[h]}))
        .await;
    if reply.get("error").is_none() {
        slot.subscribed.insert(h);
    } else {
        assert!(slot.subscribed.contains(&h), "refused: {reply}");
    }
}

async fn unsubscribe(slot: &mut Slot, h: usize) {
    let Some(client) = slot.client.as_mut() else {
        return;
    };
    let reply = client
        .call("unsubscribe", json!({"channel": CHANNELS[h]}))
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    slot.subscribed.remove(&h);
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut config = NodeConfig::dev();
    // Entries live far longer than the test, so only removals take them away; every step of
    // time is one ping interval; no pong deadline (the tests' clients never answer pings).
    config.presence_ttl = Duration::from_secs(3600);
    config.ping_interval = Duration::from_secs(1);
    config.pong_timeout = Duration::ZERO;
    let node = Node::new(config);
    let mut slots = Vec::new();
    for _ in 0..CLIENTS {
        slots.push(connect(&node).await);
    }
    for step in steps {
        match step {
            Step::Subscribe(c, h) => subscribe(&mut slots[c], h).await,
            Step::Unsubscribe(c, h) => unsubscribe(&mut slots[c], h).await,
            Step::Resubscribe(c, h) => {
                unsubscribe(&mut slots[c], h).await;
                subscribe(&mut slots[c], h).await;
            }
            Step::Disconnect(c) => {
                if let Some(mut client) = slots[c].client.take() {
                    client.close().await;
                }
                slots[c].subscribed.clear();
            }
            Step::Reconnect(c) => {
                if slots[c].client.is_none() {
                    slots[c] = connect(&node).await;
                }
            }
            Step::Ping(c) => {
                tokio::time::advance(Duration::from_secs(1)).await;
                if let Some(client) = slots[c].client.as_mut() {
                    let now = tokio::time::Instant::now();
                    client.session().on_timer(now).expect("no disconnect");
                    client.frames();
                }
            }
            Step::Yield => {
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    assert!(
        node.finish_tasks(Duration::from_secs(5)).await,
        "background tasks finish"
    );
    let mut expected: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for slot in &slots {
        for &h in &slot.subscribed {
            expected.entry(h).or_default().insert(slot.id.clone());
        }
    }
    for (h, channel) in CHANNELS.iter().enumerate() {
        let listed: BTreeSet<String> = node
            .presence(channel)
            .await
            .expect("presence")
            .clients
            .into_keys()
            .collect();
        let want = expected.remove(&h).unwrap_or_default();
        prop_assert_eq!(&listed, &want, "presence of {}", channel);
        let stats = node.presence_stats(channel).await.expect("stats");
        prop_assert_eq!(
            stats.num_clients as usize,
            want.len(),
            "count of {}",
            channel
        );
    }
    for slot in &mut slots {
        if let Some(client) = slot.client.as_mut() {
            client.close().await;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn presence_equals_the_subscribed_set(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(run(steps))?;
    }
}

/// The race the soak hit, step by step: the ping's refresh task is overtaken by an unsubscribe
/// (and, for a second client, by the close of its session).
#[tokio::test(start_paused = true)]
async fn a_refresh_overtaken_by_a_leave_does_not_bring_the_entry_back() {
    let mut config = NodeConfig::dev();
    config.ping_interval = Duration::from_secs(1);
    config.pong_timeout = Duration::ZERO;
    let node = Node::new(config);
    let mut a = connect(&node).await;
    let mut b = connect(&node).await;
    subscribe(&mut a, 0).await;
    subscribe(&mut b, 0).await;
    subscribe(&mut b, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let now = tokio::time::Instant::now();
    for slot in [&mut a, &mut b] {
        let client = slot.client.as_mut().expect("open");
        client.session().on_timer(now).expect("ping");
    }
    // Before the refresh tasks run: a leaves room:a, b closes.
    unsubscribe(&mut a, 0).await;
    b.client.take().expect("open").close().await;
    assert!(node.finish_tasks(Duration::from_secs(5)).await);
    for channel in ["room:a", "room:b"] {
        let stats = node.presence_stats(channel).await.expect("stats");
        assert_eq!(stats.num_clients, 0, "{channel}: no entry left behind");
    }
}
