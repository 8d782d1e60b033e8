use std::time::Duration;

use kilat_core::{NamespaceOptions, Node, NodeConfig};
use kilat_protocol::types::raw_json;
use serde_json::{Value, json};

use crate::support::*;

const WINDOW: Duration = Duration::from_millis(100);

/// A node whose `ticker` namespace keeps history and conflates to one publication per 100 ms;
/// the default namespace keeps history too but does not conflate.
fn ticker_node() -> Node {
    let mut config = NodeConfig {
        allow_anonymous: true,
        default_namespace: Some(NamespaceOptions {
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            ..NamespaceOptions::dev()
        }),
        ..NodeConfig::default()
    };
    config.namespaces.insert(
        "ticker".into(),
        NamespaceOptions {
            conflate_ms: WINDOW.as_millis() as u64,
            ..config.default_namespace.clone().expect("set above")
        },
    );
    config.namespaces.insert(
        "game".into(),
        NamespaceOptions {
            conflate_ms: WINDOW.as_millis() as u64,
            conflate_key: Some("player".into()),
            ..config.default_namespace.clone().expect("set above")
        },
    );
    config.namespaces.insert(
        "quotes".into(),
        NamespaceOptions {
            history_size: 1,
            conflate_ms: WINDOW.as_millis() as u64,
            conflate_key: Some("sym".into()),
            latest: true,
            ..config.default_namespace.clone().expect("set above")
        },
    );
    Node::new(config)
}

async fn publish(node: &Node, channel: &str, n: u64) {
    node.publish(channel, raw_json(&n.to_string()).expect("json"))
        .await
        .expect("publish");
}

/// Sleeps on tokio's paused clock until just past the end of the window running now: the
/// window's timer fires first, so its delivery has happened when this returns.
async fn past_the_window() {
    tokio::time::sleep(WINDOW + Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_ticker_gets_the_first_price_at_once_then_the_newest_per_window() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c.call("subscribe", json!({"channel": "ticker:btc"})).await;
    assert!(reply.get("error").is_none(), "{reply}");

    for n in 1..=5 {
        publish(&node, "ticker:btc", n).await;
    }
    assert_eq!(
        pubs(&c.frames(), "ticker:btc"),
        [(Some(1), json!(1))],
        "the first publication after a quiet spell goes out at once"
    );
    past_the_window().await;
    assert_eq!(
        pubs(&c.frames(), "ticker:btc"),
        [(Some(5), json!(5))],
        "only the newest of the window, its offset skipping 2 to 4"
    );

    // A window with nothing new closes; the next publication goes out at once again.
    past_the_window().await;
    publish(&node, "ticker:btc", 6).await;
    let frames = c.frames();
    assert_eq!(pubs(&frames, "ticker:btc"), [(Some(6), json!(6))]);
    assert!(
        frames
            .iter()
            .all(|f| f["push"].get("unsubscribe").is_none()),
        "skipped offsets are not a lost position: {frames:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn history_keeps_every_publication_of_a_conflated_channel() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "ticker:eth"})).await;
    for n in 1..=4 {
        publish(&node, "ticker:eth", n).await;
    }
    past_the_window().await;
    assert_eq!(
        pubs(&c.frames(), "ticker:eth"),
        [(Some(1), json!(1)), (Some(4), json!(4))]
    );
    // Conflation thins live delivery only; a reader of history (or a recovering subscriber)
    // still finds every publication.
    let history = c
        .call("history", json!({"channel": "ticker:eth", "limit": 10}))
        .await;
    let offsets: Vec<u64> = history["history"]["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn channels_without_conflate_ms_get_every_publication() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "news"})).await;
    for n in 1..=5 {
        publish(&node, "news", n).await;
    }
    let offsets: Vec<Option<u64>> = pubs(&c.frames(), "news")
        .into_iter()
        .map(|(offset, _)| offset)
        .collect();
    assert_eq!(offsets, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
}

#[tokio::test(start_paused = true)]
async fn per_key_conflation_never_drops_one_players_update_for_anothers() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c.call("subscribe", json!({"channel": "game:arena"})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    // Three players at 10 moves each inside one window; player 3 moves once only.
    for step in 1..=10 {
        for player in [1, 2] {
            let data = json!({"player": player, "x": step});
            node.publish("game:arena", raw_json(&data.to_string()).expect("json"))
                .await
                .expect("publish");
        }
    }
    node.publish(
        "game:arena",
        raw_json(r#"{"player":"p3","x":0}"#).expect("json"),
    )
    .await
    .expect("publish");
    past_the_window().await;
    let data: Vec<Value> = pubs(&c.frames(), "game:arena")
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        data,
        [
            json!({"player": 1, "x": 1}),
            json!({"player": 1, "x": 10}),
            json!({"player": 2, "x": 10}),
            json!({"player": "p3", "x": 0}),
        ],
        "the first at once, then the newest of every player: no player dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_publication_without_its_key_is_refused_with_a_hint() {
    let node = ticker_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "game:arena"})).await;
    for (data, why) in [
        (json!({"x": 1}), "no such field"),
        (json!({"player": 1.5}), "not a string or an integer"),
        (json!({"player": [1]}), "not a string or an integer"),
        (json!([1, 2]), "not a JSON object"),
    ] {
        let reply = c
            .call("publish", json!({"channel": "game:arena", "data": data}))
            .await;
        assert_eq!(reply["error"]["code"], json!(400), "{reply}");
        let message = reply["error"]["message"].as_str().expect("message");
        assert!(
            message.contains(why) && message.contains("\"player\""),
            "{message}"
        );
    }
    let api = node
        .publish("game:arena", raw_json("{}").expect("json"))
        .await
        .expect_err("the server API checks the key too");
    assert_eq!(api.to_client_error().code, 400);
    // The subscriber saw none of them, and a good publication still goes through.
    let ok = c
        .call(
            "publish",
            json!({"channel": "game:arena", "data": {"player": 1}}),
        )
        .await;
    assert!(ok.get("error").is_none(), "{ok}");
    assert_eq!(pubs(&c.frames(), "game:arena").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_subscriber_gets_the_latest_value_of_every_key_at_once_then_live_ones() {
    let node = ticker_node();
    // 300 symbols, 3 prices each, before anyone subscribes; history keeps only 1.
    for round in 0..3 {
        for sym in 0..300 {
            let data = json!({"sym": format!("S{sym}"), "price": round * 1000 + sym});
            node.publish("quotes:all", raw_json(&data.to_string()).expect("json"))
                .await
                .expect("publish");
        }
    }
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c.call("subscribe", json!({"channel": "quotes:all"})).await;
    let result = &reply["subscribe"];
    assert_eq!(result["latest"], json!(true), "{reply}");
    let latest = result["publications"].as_array().expect("publications");
    assert_eq!(latest.len(), 300, "every symbol at once");
    for (sym, publication) in latest.iter().enumerate() {
        assert_eq!(
            publication["data"],
            json!({"sym": format!("S{sym}"), "price": 2000 + sym}),
            "the newest price of each symbol, in offset order"
        );
    }
    assert_eq!(result["offset"], json!(900));
    assert_eq!(latest.last().expect("some")["offset"], json!(900));

    // Live ones follow the reply, above its position.
    node.publish(
        "quotes:all",
        raw_json(r#"{"sym":"S7","price":1}"#).expect("json"),
    )
    .await
    .expect("publish");
    assert_eq!(
        pubs(&c.frames(), "quotes:all"),
        [(Some(901), json!({"sym": "S7", "price": 1}))]
    );

    // A recovering subscriber that is up to date recovers as usual (no latest values).
    let mut d = Client::new(&node);
    d.connect().await;
    let reply = d
        .call(
            "subscribe",
            json!({"channel": "quotes:all", "recover": true, "offset": 901,
                   "epoch": result["epoch"]}),
        )
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(true), "{reply}");
    assert!(reply["subscribe"].get("latest").is_none(), "{reply}");
}
