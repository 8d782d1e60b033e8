use kilat_client::{Error, Event, SubscribeOptions};
use kilat_core::{AllowPublish, NamespaceOptions};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn publication_reaches_another_client_with_offset_and_info() {
    let server = TestServer::start().await;
    let (reader, mut reader_events) = connect(server.url()).await;
    let (writer, mut writer_events) = connect(server.url()).await;
    let writer_id = connected(&mut writer_events).await;

    let sub = reader
        .subscribe("chat:lobby", SubscribeOptions::default())
        .await
        .expect("subscribe");
    assert!(sub.recoverable, "dev channels keep history");
    let subscribed = next_matching(&mut reader_events, "Subscribed", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    assert!(matches!(
        subscribed,
        Event::Subscribed {
            resubscribed: false,
            server_side: false,
            ..
        }
    ));

    let published = writer
        .publish("chat:lobby", &json!({"text": "hi"}))
        .await
        .expect("publish");
    let got = publications(&mut reader_events, "chat:lobby", 1).await;
    assert_eq!(got[0].offset, published.offset);
    assert_eq!(published.offset, Some(sub.offset + 1));
    let data: serde_json::Value = serde_json::from_str(got[0].data.get()).expect("json");
    assert_eq!(data, json!({"text": "hi"}));
    let info = got[0]
        .info
        .as_ref()
        .expect("client publications carry info");
    assert_eq!(info.client, writer_id);
}

#[tokio::test]
async fn many_publications_arrive_in_offset_order() {
    let server = TestServer::start().await;
    let (reader, mut events) = connect(server.url()).await;
    let (writer, _writer_events) = connect(server.url()).await;
    reader
        .subscribe("ordered", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let writes = (0..50).map(|n| {
        let writer = writer.clone();
        async move { writer.publish("ordered", &n).await.expect("publish") }
    });
    // Concurrent publishes through one connection: replies are matched by id, not by order.
    let results = futures_util::future::join_all(writes).await;
    let mut published: Vec<u64> = results.iter().map(|r| r.offset.expect("offset")).collect();
    published.sort_unstable();
    assert_eq!(published, (1..=50).collect::<Vec<_>>());
    let got = offsets(&publications(&mut events, "ordered", 50).await);
    assert_eq!(got, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn publishing_raw_json_keeps_the_bytes() {
    let server = TestServer::start().await;
    let (client, mut events) = connect(server.url()).await;
    client
        .subscribe("raw", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let raw = kilat_protocol::types::raw_json(r#"{"b": [1, 2]}"#).expect("json");
    client.publish_raw("raw", raw).await.expect("publish");
    let got = publications(&mut events, "raw", 1).await;
    assert_eq!(got[0].data.get(), r#"{"b": [1, 2]}"#);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let (client, mut events) = connect(server.url()).await;
    client
        .subscribe("gone", SubscribeOptions::default())
        .await
        .expect("subscribe");
    client.unsubscribe("gone").await.expect("unsubscribe");
    client.publish("gone", &1).await.expect("publish");
    assert_no_publication(&mut events).await;
}

#[tokio::test]
async fn errors_keep_the_server_code() {
    let server = TestServer::start_with(|config| {
        config.node.namespaces.insert(
            "readonly".into(),
            NamespaceOptions {
                allow_publish: AllowPublish::None,
                ..NamespaceOptions::dev()
            },
        );
    })
    .await;
    let (client, _events) = connect(server.url()).await;
    let code = |e: Error| e.server_error().map(|e| e.code);

    let bad = client
        .subscribe("no spaces allowed", SubscribeOptions::default())
        .await;
    assert_eq!(code(bad.expect_err("bad channel name")), Some(400));

    client
        .subscribe("twice", SubscribeOptions::default())
        .await
        .expect("first");
    let again = client.subscribe("twice", SubscribeOptions::default()).await;
    assert_eq!(code(again.expect_err("second")), Some(409));

    let denied = client.publish("readonly:news", &1).await;
    assert_eq!(code(denied.expect_err("no client publish")), Some(403));
}

/// `publish_bytes` sends a binary publication; plain and `delta` subscribers get its bytes in
/// `Publication::binary`, history returns them, and a delta subscriber's next JSON publication
/// still resolves (binary publications come in full and are no delta base).
#[tokio::test]
async fn binary_publications_arrive_as_bytes() {
    let server = TestServer::start().await;
    let (plain, mut plain_events) = connect(server.url()).await;
    let (delta, mut delta_events) = connect(server.url()).await;
    plain
        .subscribe("media", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let granted = delta
        .subscribe(
            "media",
            SubscribeOptions {
                delta: true,
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe with delta");
    assert!(granted.delta);
    let chunk: Vec<u8> = (0..=255u8).chain(*b"\n\0").collect();
    let doc = json!({"title": "a document long enough for a delta", "rev": 1});
    plain.publish("media", &doc).await.expect("publish json");
    let published = plain
        .publish_bytes("media", &chunk)
        .await
        .expect("publish bytes");
    let mut doc2 = doc.clone();
    doc2["rev"] = json!(2);
    plain.publish("media", &doc2).await.expect("publish json");
    for events in [&mut plain_events, &mut delta_events] {
        let got = publications(events, "media", 3).await;
        assert_eq!(got[1].binary.as_deref(), Some(&chunk[..]));
        assert_eq!(got[1].offset, published.offset);
        assert!(got[0].binary.is_none() && got[2].binary.is_none());
        let last: serde_json::Value = serde_json::from_str(got[2].data.get()).expect("json");
        assert_eq!(last, doc2);
    }
    let history = plain
        .history("media", kilat_client::HistoryOptions::default())
        .await
        .expect("history");
    assert_eq!(
        history.publications[1].binary.as_deref(),
        Some(&chunk[..]),
        "history keeps the bytes"
    );
}
