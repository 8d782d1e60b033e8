//! `delta: "fossil"` subscriptions against a real server over sockets: the client applies the
//! deltas so the application sees the same documents as a plain subscriber, a raw WebSocket
//! shows deltas really are on the wire, and after a connection loss recovery delivers full
//! payloads before deltas resume.

use futures_util::{SinkExt, StreamExt};
use kilat_client::{Event, Publication, SubscribeOptions};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// A document that changes a little with each revision.
fn document(n: u64) -> Value {
    json!({
        "title": "Quarterly report",
        "owner": "alice",
        "sections": ["intro", "numbers", "outlook", "appendix"],
        "revision": n,
        "words": 1000 + 7 * n,
        "status": "draft"
    })
}

fn documents(publications: &[Publication]) -> Vec<Value> {
    publications
        .iter()
        .map(|p| serde_json::from_str(p.data.get()).expect("a full JSON payload"))
        .collect()
}

/// The `pub` bodies a raw WebSocket subscriber with `delta: "fossil"` receives.
async fn raw_delta_pubs(
    url: &str,
    channel: &str,
    n: usize,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> Vec<Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    ws.send(Message::text(r#"{"id":1,"connect":{}}"#))
        .await
        .expect("send");
    let subscribe = json!({"id": 2, "subscribe": {"channel": channel, "delta": "fossil"}});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    let mut subscribed = Some(subscribed);
    let mut pubs = Vec::new();
    while pubs.len() < n {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        let Message::Text(text) = message else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let frame: Value = serde_json::from_str(line).expect("json");
            if frame["id"] == json!(2) {
                assert_eq!(frame["subscribe"]["delta"], json!(true), "{frame}");
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(());
                }
            }
            if frame["push"]["pub"].is_object() {
                pubs.push(frame["push"]["pub"].clone());
            }
        }
    }
    pubs
}

#[tokio::test]
async fn a_delta_subscriber_gets_the_same_documents_as_a_plain_one() {
    let server = TestServer::start().await;
    let (plain, mut plain_events) = connect(server.url()).await;
    let (delta, mut delta_events) = connect(server.url()).await;
    let (writer, _writer_events) = connect(server.url()).await;
    plain
        .subscribe("doc", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let reply = delta
        .subscribe(
            "doc",
            SubscribeOptions {
                delta: true,
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe with delta");
    assert!(reply.delta, "the server granted the delta");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let url = server.url();
    let raw = tokio::spawn(async move { raw_delta_pubs(&url, "doc", 6, tx).await });
    rx.await.expect("the raw subscriber subscribed");

    for n in 1..=6 {
        writer.publish("doc", &document(n)).await.expect("publish");
    }
    let expected: Vec<Value> = (1..=6).map(document).collect();
    assert_eq!(
        documents(&publications(&mut plain_events, "doc", 6).await),
        expected
    );
    assert_eq!(
        documents(&publications(&mut delta_events, "doc", 6).await),
        expected
    );

    let on_the_wire = raw.await.expect("raw subscriber");
    let kinds: Vec<_> = on_the_wire.iter().map(|p| p["delta"].clone()).collect();
    assert_eq!(
        kinds,
        [
            json!(false),
            json!(true),
            json!(true),
            json!(true),
            json!(true),
            json!(true)
        ],
        "the first in full, then deltas: {on_the_wire:?}"
    );
    let full = on_the_wire[0]["data"].as_str().expect("a string").len();
    for later in &on_the_wire[1..] {
        let sent = later["data"].as_str().expect("a string").len();
        assert!(
            sent * 2 < full,
            "a delta of {sent} bytes for a {full}-byte document"
        );
    }
}

#[tokio::test]
async fn after_a_connection_loss_recovery_brings_full_payloads_then_deltas_resume() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (reader, mut events) = connect(proxy.url()).await;
    let (writer, _writer_events) = connect(server.url()).await;
    reader
        .subscribe(
            "doc",
            SubscribeOptions {
                delta: true,
                ..SubscribeOptions::recoverable()
            },
        )
        .await
        .expect("subscribe");
    for n in 1..=3 {
        writer.publish("doc", &document(n)).await.expect("publish");
    }
    assert_eq!(
        documents(&publications(&mut events, "doc", 3).await),
        (1..=3).map(document).collect::<Vec<_>>()
    );

    proxy.cut();
    next_matching(&mut events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    // Missed while away: the client's base (revision 3) is no base for revision 6's delta.
    for n in 4..=6 {
        writer.publish("doc", &document(n)).await.expect("publish");
    }
    proxy.restore();
    next_matching(&mut events, "the resubscribe", |e| {
        matches!(
            e,
            Event::Subscribed {
                resubscribed: true,
                recovered: true,
                ..
            }
        )
    })
    .await;
    for n in 7..=9 {
        writer.publish("doc", &document(n)).await.expect("publish");
    }
    // Every publication arrives once, with no second resubscribe: a delta against the wrong
    // base would make the client resubscribe to heal.
    let mut got = Vec::new();
    while got.len() < 6 {
        let event = next_matching(&mut events, "a publication", |e| {
            matches!(e, Event::Publication { .. } | Event::Subscribed { .. })
        })
        .await;
        match event {
            Event::Publication { publication, .. } => got.push(publication),
            other => panic!("a second subscribe: {other:?}"),
        }
    }
    assert_eq!(offsets(&got), (4..=9).collect::<Vec<_>>());
    assert_eq!(documents(&got), (4..=9).map(document).collect::<Vec<_>>());
}
