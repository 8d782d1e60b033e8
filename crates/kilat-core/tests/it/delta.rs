//! `delta: "fossil"` subscriptions through real sessions: the reply says so, live publications
//! come as strings (full or delta), recovery and conflation send full payloads, and a channel
//! without history refuses with 400.

use std::time::Duration;

use kilat_core::{NamespaceOptions, Node, NodeConfig};
use kilat_protocol::types::raw_json;
use serde_json::{Value, json};

use crate::support::*;

fn node() -> Node {
    let history = NamespaceOptions {
        history_size: 100,
        history_ttl: Duration::from_secs(600),
        ..NamespaceOptions::dev()
    };
    let mut config = NodeConfig {
        allow_anonymous: true,
        default_namespace: Some(history.clone()),
        ..NodeConfig::default()
    };
    config.namespaces.insert(
        "plain".into(),
        NamespaceOptions {
            history_size: 0,
            ..NamespaceOptions::dev()
        },
    );
    config.namespaces.insert(
        "ticker".into(),
        NamespaceOptions {
            conflate_ms: 100,
            ..history
        },
    );
    Node::new(config)
}

fn document(n: u64) -> String {
    format!(
        r#"{{"title":"Quarterly report","owner":"alice","sections":["intro","numbers","outlook"],"revision":{n},"words":{}}}"#,
        1000 + 7 * n
    )
}

async fn publish(node: &Node, channel: &str, n: u64) {
    node.publish(channel, raw_json(&document(n)).expect("json"))
        .await
        .expect("publish");
}

/// The payloads a delta subscriber reconstructs from its `pub` pushes, with whether each was
/// a delta; `base` is its last payload text.
fn apply(frames: &[Value], channel: &str, base: &mut Option<String>) -> Vec<(bool, Value)> {
    let mut out = Vec::new();
    for push in frames.iter().map(|f| &f["push"]) {
        if push["channel"] != json!(channel) || !push["pub"].is_object() {
            continue;
        }
        let body = &push["pub"];
        let text = match (body["delta"].as_bool(), body["data"].as_str()) {
            (Some(false), Some(text)) => text.to_owned(),
            (Some(true), Some(delta)) => {
                let source = base.as_deref().expect("a delta comes after a base");
                let out =
                    kilat_protocol::delta::apply(source.as_bytes(), delta.as_bytes(), 1 << 20)
                        .expect("applies");
                String::from_utf8(out).expect("utf8")
            }
            _ => panic!("not in the delta form: {body}"),
        };
        out.push((
            body["delta"] == json!(true),
            serde_json::from_str(&text).expect("json"),
        ));
        *base = Some(text);
    }
    out
}

#[tokio::test]
async fn a_delta_subscriber_and_a_plain_one_receive_the_same_documents() {
    let node = node();
    let mut plain = Client::new(&node);
    let mut delta = Client::new(&node);
    plain.connect().await;
    delta.connect().await;
    let reply = plain.call("subscribe", json!({"channel": "doc"})).await;
    assert!(reply["subscribe"].get("delta").is_none(), "{reply}");
    let reply = delta
        .call("subscribe", json!({"channel": "doc", "delta": "fossil"}))
        .await;
    assert_eq!(reply["subscribe"]["delta"], json!(true), "{reply}");
    for n in 1..=6 {
        publish(&node, "doc", n).await;
    }
    let expected: Vec<Value> = (1..=6)
        .map(|n| serde_json::from_str(&document(n)).expect("json"))
        .collect();
    let got: Vec<Value> = pubs(&plain.frames(), "doc")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(got, expected);
    let mut base = None;
    let got = apply(&delta.frames(), "doc", &mut base);
    assert_eq!(
        got.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        [false, true, true, true, true, true]
    );
    assert_eq!(
        got.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        expected
    );
}

#[tokio::test]
async fn recovery_sends_full_payloads_and_the_first_live_one_in_full() {
    let node = node();
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c
        .call("subscribe", json!({"channel": "doc", "delta": "fossil"}))
        .await;
    let epoch = reply["subscribe"]["epoch"].clone();
    publish(&node, "doc", 1).await;
    c.call("unsubscribe", json!({"channel": "doc"})).await;
    for n in 2..=3 {
        publish(&node, "doc", n).await;
    }
    c.frames();
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "doc", "delta": "fossil", "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await;
    assert_eq!(reply["subscribe"]["recovered"], json!(true), "{reply}");
    let recovered = &reply["subscribe"]["publications"];
    assert_eq!(
        recovered[0]["data"],
        serde_json::from_str::<Value>(&document(2)).expect("json")
    );
    publish(&node, "doc", 4).await;
    publish(&node, "doc", 5).await;
    let mut base = None;
    let got = apply(&c.frames(), "doc", &mut base);
    assert_eq!(
        got.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(
        got[1].1,
        serde_json::from_str::<Value>(&document(5)).expect("json")
    );
}

#[tokio::test]
async fn delta_needs_history_and_a_known_type() {
    let node = node();
    let mut c = Client::new(&node);
    c.connect().await;
    let reply = c
        .call(
            "subscribe",
            json!({"channel": "plain:x", "delta": "fossil"}),
        )
        .await;
    assert_eq!(error_code(&reply), Some(400), "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("history")),
        "{reply}"
    );
    let reply = c
        .call("subscribe", json!({"channel": "doc", "delta": "xdelta"}))
        .await;
    assert_eq!(error_code(&reply), Some(400), "{reply}");
    let reply = c.call("subscribe", json!({"channel": "doc"})).await;
    assert!(
        reply.get("error").is_none(),
        "a refused delta leaves no subscription: {reply}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflated_window_end_sends_a_full_payload_and_the_next_delta_follows_it() {
    let node = node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call(
        "subscribe",
        json!({"channel": "ticker:a", "delta": "fossil"}),
    )
    .await;
    for n in 1..=3 {
        publish(&node, "ticker:a", n).await;
    }
    // The window's length is what is tested: its end delivers the newest one.
    tokio::time::sleep(Duration::from_millis(101)).await;
    let frames = c.frames();
    let sent: Vec<_> = frames
        .iter()
        .filter(|f| f["push"]["pub"].is_object())
        .map(|f| f["push"]["pub"].clone())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0]["delta"], json!(false));
    assert!(
        sent[1].get("delta").is_none(),
        "the window's end is plain: {:?}",
        sent[1]
    );
    assert_eq!(
        sent[1]["data"],
        serde_json::from_str::<Value>(&document(3)).expect("json")
    );
}
