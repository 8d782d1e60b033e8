use std::time::{Duration, Instant};

use kilat_core::{Node, NodeConfig, Outbox, Session, TransportInfo};
use kilat_protocol::types::raw_json;
use serde_json::{Value, json};

use crate::support;

const WS: TransportInfo = TransportInfo {
    name: "websocket",
    emulated: false,
};

/// A client session on a node, with the outbox its transport would drain.
struct Client {
    session: Session,
    outbox: Outbox,
    next_id: u32,
    frames: Vec<Value>,
}

impl Client {
    async fn connect(node: &Node) -> Self {
        let outbox = Outbox::new(node.config().client_queue_max_bytes);
        let session = Session::new(node, WS, outbox.clone());
        let mut client = Client {
            session,
            outbox,
            next_id: 0,
            frames: Vec::new(),
        };
        let reply = client.call("connect", json!({})).await;
        assert!(reply.get("error").is_none(), "{reply}");
        client
    }

    fn drain(&mut self) {
        let mut batch = Vec::new();
        let _ = self.outbox.drain(&mut batch, usize::MAX);
        for frame in &batch {
            for line in frame.json().split(|&b| b == b'\n') {
                self.frames
                    .push(serde_json::from_slice(line).expect("frame is JSON"));
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({"id": id, method: params}).to_string();
        self.session
            .handle_message(text.as_bytes())
            .await
            .expect("no disconnect");
        self.drain();
        let at = self
            .frames
            .iter()
            .position(|f| f["id"] == json!(id))
            .unwrap_or_else(|| panic!("no reply to {method}"));
        self.frames.remove(at)
    }

    /// Waits (up to 5 s) for `n` publication pushes in `channel`; returns their (offset, data).
    async fn publications(&mut self, channel: &str, n: usize) -> Vec<(u64, Value)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.drain();
            let pubs: Vec<(u64, Value)> = self
                .frames
                .iter()
                .filter(|f| f["push"]["channel"] == json!(channel) && f["push"]["pub"].is_object())
                .map(|f| {
                    (
                        f["push"]["pub"]["offset"].as_u64().unwrap_or(0),
                        f["push"]["pub"]["data"].clone(),
                    )
                })
                .collect();
            if pubs.len() >= n {
                return pubs;
            }
            assert!(Instant::now() < deadline, "only {pubs:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn node(redis: &support::TestRedis) -> Node {
    let engine = support::engine(redis).await;
    Node::with_engine(NodeConfig::dev(), engine.clone(), engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_node_receives_and_recovers_what_another_node_publishes() {
    let Some(mut redis) = support::redis("a_client_on_one_node_receives_and_recovers") else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let ch = support::channel("nodes");
    let mut client = Client::connect(&b).await;
    let reply = client
        .call("subscribe", json!({"channel": ch, "recover": true}))
        .await;
    let epoch = reply["subscribe"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    for i in 1..=3 {
        a.publish(&ch, raw_json(&i.to_string()).expect("json"))
            .await
            .expect("publish on node A");
    }
    let live = client.publications(&ch, 3).await;
    assert_eq!(live, [(1, json!(1)), (2, json!(2)), (3, json!(3))]);

    // Node B's client goes away; two more publications; a new client recovers them on node B.
    client.session.close().await;
    for i in 4..=5 {
        a.publish(&ch, raw_json(&i.to_string()).expect("json"))
            .await
            .expect("publish");
    }
    let mut again = Client::connect(&b).await;
    let reply = again
        .call(
            "subscribe",
            json!({"channel": ch, "recover": true, "offset": 3, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(true), "{reply}");
    let recovered: Vec<_> = reply["subscribe"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(recovered, [Some(4), Some(5)]);
    again.session.close().await;

    // Redis restarts without persistence: the stream is gone, recovery must say so.
    if redis.is_local() {
        redis.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.publish(&ch, raw_json("6").expect("json")).await.is_err() {
            assert!(Instant::now() < deadline, "node A never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut after = Client::connect(&b).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            let reply = after
                .call(
                    "subscribe",
                    json!({"channel": ch, "recover": true, "offset": 5, "epoch": epoch}),
                )
                .await;
            if reply.get("error").is_none() {
                break reply;
            }
            assert!(
                Instant::now() < deadline,
                "subscribe never recovered: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(reply["subscribe"]["recovered"], json!(false), "{reply}");
        assert_ne!(reply["subscribe"]["epoch"], json!(epoch), "a new epoch");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_inboxes_work_on_a_single_redis() {
    let Some(redis) = support::redis("node_inboxes_work_on_a_single_redis") else {
        return;
    };
    let a = support::engine(&redis).await;
    let b = support::engine(&redis).await;
    support::check_node_inboxes(&a, &b).await;
}

/// Per-key conflation and latest values across two nodes sharing Redis: node A publishes,
/// a subscriber on node B gets the latest value of every key at once, then per-key conflated
/// live ones, no key dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_values_and_per_key_conflation_work_across_two_nodes() {
    let Some(redis) = support::redis("latest_values_and_per_key_conflation") else {
        return;
    };
    let keyed_node = || async {
        let mut config = NodeConfig::dev();
        config.namespaces.insert(
            "quotes".into(),
            kilat_core::NamespaceOptions {
                history_size: 1,
                conflate_ms: 50,
                conflate_key: Some("sym".into()),
                latest: true,
                ..kilat_core::NamespaceOptions::dev()
            },
        );
        let engine = support::engine(&redis).await;
        Node::with_engine(config, engine.clone(), engine)
    };
    let (a, b) = (keyed_node().await, keyed_node().await);
    let ch = format!("quotes:{}", support::channel("latest").replace(':', "-"));
    let price =
        |sym: u32, p: u32| raw_json(&json!({"sym": sym, "p": p}).to_string()).expect("json");
    for p in 0..3 {
        for sym in 0..50 {
            a.publish(&ch, price(sym, p)).await.expect("publish on A");
        }
    }
    let mut client = Client::connect(&b).await;
    let reply = client.call("subscribe", json!({"channel": ch})).await;
    let result = &reply["subscribe"];
    assert_eq!(result["latest"], json!(true), "{reply}");
    let values: Vec<Value> = result["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    let expected: Vec<Value> = (0..50).map(|sym| json!({"sym": sym, "p": 2})).collect();
    assert_eq!(
        values, expected,
        "the newest of each key, from node A's publishes"
    );
    assert_eq!(result["offset"], json!(150));

    // A burst on node A: every key moves 5 times; node B's subscriber ends with every key's
    // last value (conflated per key: no key dropped).
    for p in 3..8 {
        for sym in 0..50 {
            a.publish(&ch, price(sym, p)).await.expect("publish on A");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = client.publications(&ch, 1).await;
        let mut last = std::collections::HashMap::new();
        for (_, data) in &live {
            last.insert(
                data["sym"].as_u64().expect("sym"),
                data["p"].as_u64().expect("p"),
            );
        }
        if last.len() == 50 && last.values().all(|&p| p == 7) {
            assert!(live.len() <= 250, "{} deliveries", live.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every key reached 7: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A bad key is refused on either node.
    let refused = b
        .publish(&ch, raw_json(r#"{"sym":true}"#).expect("json"))
        .await
        .expect_err("a boolean key");
    assert_eq!(refused.to_client_error().code, 400);
}

/// The live stream demo's channels (`--dev` namespace `stream`, issue 19) across two nodes
/// sharing Redis: node A publishes a binary initialisation segment to `stream:R.init` and media
/// pieces to `stream:R`; a subscriber on node B gets the init segment and only the newest piece
/// in its subscribe replies (latest values, as bytes: `b64data` on JSON), then live pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_init_segment_and_newest_piece_reach_a_late_joiner_on_another_node() {
    let Some(redis) = support::redis("stream_init_segment_and_newest_piece") else {
        return;
    };
    let (a, b) = (node(&redis).await, node(&redis).await);
    let room = support::channel("cam").replace(':', "-");
    let (init_ch, media_ch) = (format!("stream:{room}.init"), format!("stream:{room}"));
    let bytes = |b: &[u8]| kilat_protocol::Payload::Binary(bytes::Bytes::copy_from_slice(b));
    // an EBML header's ID, then the pieces [1,2,3], [4,5,6], [7,8,9]
    a.publish_payload(&init_ch, bytes(&[0x1a, 0x45, 0xdf, 0xa3]))
        .await
        .expect("init on A");
    for piece in [[1, 2, 3], [4, 5, 6], [7, 8, 9]] {
        a.publish_payload(&media_ch, bytes(&piece))
            .await
            .expect("piece on A");
    }

    let mut client = Client::connect(&b).await;
    let reply = client.call("subscribe", json!({"channel": init_ch})).await;
    assert_eq!(reply["subscribe"]["latest"], json!(true), "{reply}");
    let pubs = reply["subscribe"]["publications"].as_array().expect("pubs");
    assert_eq!(pubs.len(), 1, "{reply}");
    assert_eq!(
        pubs[0]["b64data"],
        json!("GkXfow=="),
        "the init bytes: {reply}"
    );
    assert!(pubs[0].get("data").is_none(), "bytes, not JSON: {reply}");

    let reply = client.call("subscribe", json!({"channel": media_ch})).await;
    let pubs = reply["subscribe"]["publications"].as_array().expect("pubs");
    let shown: Vec<&Value> = pubs.iter().map(|p| &p["b64data"]).collect();
    assert_eq!(
        shown,
        [&json!("BwgJ")],
        "only the newest piece, [7,8,9]: {reply}"
    );
    assert_eq!(reply["subscribe"]["offset"], json!(3), "{reply}");

    // live: the next piece from node A reaches node B's subscriber, as bytes
    a.publish_payload(&media_ch, bytes(&[10, 11, 12]))
        .await
        .expect("live piece on A");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        client.drain();
        let live: Vec<&Value> = client
            .frames
            .iter()
            .filter(|f| f["push"]["channel"] == json!(media_ch) && f["push"]["pub"].is_object())
            .map(|f| &f["push"]["pub"])
            .collect();
        if let Some(p) = live.first() {
            assert_eq!(p["b64data"], json!("CgsM"), "{p}");
            assert_eq!(p["offset"], json!(4), "{p}");
            assert_eq!(live.len(), 1, "{live:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no live piece on node B");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
