//! Random interleavings of publish, subscribe, unsubscribe, disconnect, reconnect-with-recovery
//! and history loss across several clients and channels. For every client and channel: no gap,
//! no duplicate, order kept, and `recovered` true exactly when the window still held everything.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use kilat_core::engine::PublishOptions;
use kilat_core::engine::memory::{MemoryBroker, MemoryPresence};
use kilat_core::{HistoryOptions, NamespaceOptions, Node, NodeConfig};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::*;

const CHANNELS: [&str; 2] = ["a", "b"];
const CLIENTS: usize = 3;
const HISTORY_SIZE: u64 = 4;

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Disconnect(usize),
    Reconnect(usize),
    RemoveHistory(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS.len();
    let cl = 0..CLIENTS;
    prop_oneof![
        6 => ch.clone().prop_map(Op::Publish),
        3 => (cl.clone(), ch.clone()).prop_map(|(c, h)| Op::Subscribe(c, h)),
        1 => (cl.clone(), ch.clone()).prop_map(|(c, h)| Op::Unsubscribe(c, h)),
        2 => cl.clone().prop_map(Op::Disconnect),
        2 => cl.prop_map(Op::Reconnect),
        1 => ch.prop_map(Op::RemoveHistory),
    ]
}

/// Last position a client saw in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    offset: u64,
    epoch: String,
}

#[derive(Default)]
struct Model {
    client: Option<Client>,
    /// Channels the client holds subscriptions to (survives disconnects: re-sent in connect.subs).
    subscribed: BTreeMap<String, ()>,
    positions: HashMap<String, Position>,
    /// Subscriptions the server dropped with `resubscribe: true`.
    resubscribe: Vec<String>,
}

async fn current(node: &Node, channel: &str) -> Position {
    let h = node
        .history(
            channel,
            HistoryOptions {
                limit: Some(0),
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("history");
    Position {
        offset: h.offset,
        epoch: h.epoch,
    }
}

/// Checks one subscribe result against the position the client had before.
fn check_result(
    m: &mut Model,
    channel: &str,
    result: &Value,
    before: Option<&Position>,
    now: &Position,
) {
    let expect_recovered = before.is_some_and(|b| {
        b.epoch == now.epoch && b.offset <= now.offset && now.offset - b.offset <= HISTORY_SIZE
    });
    assert_eq!(
        result["recovered"],
        json!(expect_recovered),
        "{channel}: recovered from {before:?} at {now:?}: {result}"
    );
    let offsets: Vec<u64> = result["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    if expect_recovered {
        let from = before.map_or(0, |b| b.offset);
        let expected: Vec<u64> = (from + 1..=now.offset).collect();
        assert_eq!(offsets, expected, "{channel}: recovered publications");
    }
    assert_eq!(
        result["offset"],
        json!(now.offset),
        "{channel}: result position"
    );
    assert_eq!(result["epoch"], json!(now.epoch));
    m.positions.insert(
        channel.to_owned(),
        Position {
            offset: now.offset,
            epoch: now.epoch.clone(),
        },
    );
}

/// Processes pushes: every publication is exactly the next offset of its channel.
fn check_frames(m: &mut Model, frames: Vec<Value>) {
    for frame in frames {
        let push = &frame["push"];
        let Some(channel) = push["channel"].as_str() else {
            continue;
        };
        if let Some(p) = push.get("pub") {
            assert!(
                m.subscribed.contains_key(channel),
                "pub for {channel} without subscription"
            );
            let offset = p["offset"].as_u64().expect("offset");
            let pos = m.positions.get_mut(channel).expect("positioned");
            assert_eq!(
                offset,
                pos.offset + 1,
                "{channel}: no gap, no duplicate, in order"
            );
            pos.offset = offset;
        } else if push["unsubscribe"]["resubscribe"] == json!(true) {
            m.resubscribe.push(channel.to_owned());
        }
    }
}

fn recover_params(m: &Model, channel: &str) -> Value {
    match m.positions.get(channel) {
        Some(p) => json!({"recover": true, "offset": p.offset, "epoch": p.epoch}),
        None => json!({"recover": true}),
    }
}

async fn subscribe(node: &Node, m: &mut Model, channel: &str, interleaved: u64) {
    let mut now = current(node, channel).await;
    if m.positions.contains_key(channel) {
        // Publications the engine interleaves before the recovery read are recovered.
        now.offset += interleaved;
    }
    let before = m.positions.get(channel).cloned();
    let mut params = recover_params(m, channel);
    params["channel"] = json!(channel);
    let Some(client) = m.client.as_mut() else {
        return;
    };
    let reply = client.call("subscribe", params).await;
    let frames = client.frames();
    m.subscribed.insert(channel.to_owned(), ());
    check_result(m, channel, &reply["subscribe"], before.as_ref(), &now);
    check_frames(m, frames);
}

async fn drain_all(node: &Node, models: &mut [Model], interleaved: u64) {
    for m in models.iter_mut() {
        let Some(client) = m.client.as_mut() else {
            continue;
        };
        let frames = client.frames();
        check_frames(m, frames);
        while let Some(channel) = m.resubscribe.pop() {
            subscribe(node, m, &channel, interleaved).await;
        }
    }
}

/// Runs `ops`; with `interleaved > 0` the engine publishes that many publications before and
/// after every recovery read, as other nodes would while a subscriber recovers.
async fn run(ops: Vec<Op>, interleaved: u64) {
    let mut config = NodeConfig::dev();
    let ns = NamespaceOptions {
        history_size: HISTORY_SIZE as usize,
        join_leave: false,
        ..NamespaceOptions::dev()
    };
    config.default_namespace = Some(ns.clone());
    let broker = Arc::new(Twisted(Interleaving {
        inner: MemoryBroker::default(),
        before: interleaved,
        after: interleaved,
        only_since: true,
        options: PublishOptions {
            history_size: ns.history_size,
            history_ttl: ns.history_ttl,
        },
    }));
    let node = Node::with_engine(config, broker, Arc::new(MemoryPresence::new()));
    let mut models: Vec<Model> = (0..CLIENTS).map(|_| Model::default()).collect();
    for m in models.iter_mut() {
        let mut client = Client::new(&node);
        client.connect().await;
        m.client = Some(client);
    }
    for op in ops {
        match op {
            Op::Publish(ch) => {
                node.publish(
                    CHANNELS[ch],
                    kilat_protocol::types::raw_json("0").expect("json"),
                )
                .await
                .expect("publish");
            }
            Op::Subscribe(c, ch) => {
                let m = &mut models[c];
                if m.client.is_some() && !m.subscribed.contains_key(CHANNELS[ch]) {
                    subscribe(&node, m, CHANNELS[ch], interleaved).await;
                }
            }
            Op::Unsubscribe(c, ch) => {
                let m = &mut models[c];
                if let Some(client) = m.client.as_mut() {
                    client
                        .call("unsubscribe", json!({"channel": CHANNELS[ch]}))
                        .await;
                    let frames = client.frames();
                    check_frames(m, frames);
                    m.subscribed.remove(CHANNELS[ch]);
                    m.resubscribe.retain(|r| r != CHANNELS[ch]);
                }
            }
            Op::Disconnect(c) => {
                let m = &mut models[c];
                if let Some(mut client) = m.client.take() {
                    let frames = client.frames();
                    m.client = Some(client);
                    check_frames(m, frames);
                    if let Some(mut client) = m.client.take() {
                        client.close().await;
                    }
                }
            }
            Op::Reconnect(c) => {
                let m = &mut models[c];
                if m.client.is_none() {
                    let mut subs = serde_json::Map::new();
                    let mut expected = Vec::new();
                    for channel in m.subscribed.keys() {
                        subs.insert(channel.clone(), recover_params(m, channel));
                        expected.push((
                            channel.clone(),
                            m.positions.get(channel).cloned(),
                            current(&node, channel).await,
                        ));
                    }
                    let mut client = Client::new(&node);
                    let reply = client.call("connect", json!({"subs": subs})).await;
                    let frames = client.frames();
                    m.client = Some(client);
                    m.resubscribe.clear();
                    for (channel, before, mut now) in expected {
                        if before.is_some() {
                            now.offset += interleaved;
                        }
                        let result = reply["connect"]["subs"][&channel].clone();
                        check_result(m, &channel, &result, before.as_ref(), &now);
                    }
                    check_frames(m, frames);
                }
            }
            Op::RemoveHistory(ch) => {
                node.history_remove(CHANNELS[ch]).await.expect("remove");
            }
        }
        drain_all(&node, &mut models, interleaved).await;
    }
    for m in models.iter_mut() {
        if let Some(mut client) = m.client.take() {
            client.close().await;
        }
    }
    assert_eq!(
        node.stats().subscriptions,
        0,
        "every subscription cleaned up"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn hub_keeps_the_delivery_guarantee(
        ops in proptest::collection::vec(op(), 1..80),
        interleaved in 0u64..3,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(run(ops, interleaved));
    }
}
