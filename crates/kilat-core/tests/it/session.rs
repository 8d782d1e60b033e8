use kilat_core::{AllowPublish, AllowSubscribe, NamespaceOptions, Node, NodeConfig};
use kilat_protocol::DisconnectCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn connect_replies_with_client_version_and_ping() {
    let node = dev_node();
    let mut c = Client::new(&node);
    let reply = c.connect().await;
    let result = &reply["connect"];
    assert_eq!(result["client"].as_str().map(str::len), Some(36));
    assert_eq!(result["ping"], json!(25));
    assert!(result["version"].is_string());
    assert!(
        result.get("session").is_none(),
        "only emulated transports get a session"
    );
    assert_eq!(node.stats().connections, 1);
    c.close().await;
    assert_eq!(node.stats().connections, 0);
}

#[tokio::test]
async fn emulated_transports_get_session_and_node() {
    let node = dev_node();
    let outbox = kilat_core::Outbox::new(1 << 20);
    let mut session = kilat_core::Session::new(
        &node,
        kilat_core::TransportInfo {
            name: "sse",
            emulated: true,
        },
        outbox.clone(),
    );
    // The transport gives the session its secret key (issue 20); the client id is never it.
    session.set_emulation_key("0123456789abcdef0123456789abcdef");
    session
        .handle_message(br#"{"id":1,"connect":{}}"#)
        .await
        .expect("connect");
    let mut batch = Vec::new();
    outbox.drain(&mut batch, usize::MAX);
    let reply: serde_json::Value = serde_json::from_slice(batch[0].json()).expect("json");
    assert!(reply["connect"]["session"].is_string());
    assert_eq!(
        reply["connect"]["session"],
        "0123456789abcdef0123456789abcdef"
    );
    assert_ne!(reply["connect"]["session"], reply["connect"]["client"]);
    assert_eq!(reply["connect"]["node"], json!(node.id()));
    session.close().await;
}

#[tokio::test]
async fn command_before_connect_disconnects_unauthorized() {
    let node = dev_node();
    let mut c = Client::new(&node);
    let err = c
        .send_raw(r#"{"id":1,"subscribe":{"channel":"a"}}"#)
        .await
        .expect_err("must connect first");
    assert_eq!(err.code, DisconnectCode::UNAUTHORIZED.0);
    assert!(!err.reconnect);
}

#[tokio::test]
async fn token_without_verifier_is_refused_with_401_then_3501() {
    let node = dev_node();
    let mut c = Client::new(&node);
    let err = c
        .send_raw(r#"{"id":1,"connect":{"token":"x.y.z"}}"#)
        .await
        .expect_err("no verifier");
    assert_eq!(err.code, 3501);
    let frames = c.frames();
    assert_eq!(error_code(&frames[0]), Some(401));
}

#[tokio::test]
async fn anonymous_is_refused_unless_allowed() {
    let node = Node::new(NodeConfig::default());
    let mut c = Client::new(&node);
    let err = c
        .send_raw(r#"{"id":1,"connect":{}}"#)
        .await
        .expect_err("anonymous");
    assert_eq!(err.code, 3501);
    assert_eq!(error_code(&c.frames()[0]), Some(401));
}

#[tokio::test]
async fn second_connect_is_a_400() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    assert_eq!(error_code(&c.connect().await), Some(400));
}

#[tokio::test]
async fn malformed_frames_disconnect_3500_or_answer_400_404() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": 5})).await),
        Some(400)
    );
    assert_eq!(
        error_code(&c.call("frobnicate", json!({})).await),
        Some(404)
    );
    let err = c.send_raw("not json").await.expect_err("not json");
    assert_eq!(err.code, 3500);
    let err = c
        .send_raw(r#"{"id":0,"publish":{}}"#)
        .await
        .expect_err("id 0");
    assert_eq!(err.code, 3500);
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_round_trip() {
    let node = dev_node();
    let mut alice = Client::new(&node);
    let mut bob = Client::new(&node);
    alice.connect().await;
    bob.connect().await;
    let sub = bob.call("subscribe", json!({"channel": "chat:room"})).await;
    assert_eq!(sub["subscribe"]["recoverable"], json!(true));
    assert_eq!(sub["subscribe"]["recovered"], json!(false));
    assert_eq!(sub["subscribe"]["offset"], json!(0));
    let published = alice
        .call(
            "publish",
            json!({"channel": "chat:room", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(published["publish"]["offset"], json!(1));
    let frames = bob.frames();
    assert_eq!(
        pubs(&frames, "chat:room"),
        [(Some(1), json!({"text": "hi"}))]
    );
    let info = &frames
        .iter()
        .find(|f| f["push"]["pub"].is_object())
        .expect("pub")["push"]["pub"]["info"];
    assert_eq!(
        info["client"],
        alice
            .session()
            .client()
            .map(|c| json!(c.client))
            .expect("connected")
    );
    assert_eq!(node.stats().subscriptions, 1);
    assert_eq!(node.stats().channels, 1);
    assert_eq!(node.channels(), ["chat:room"]);
    let unsub = bob
        .call("unsubscribe", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(unsub["unsubscribe"], json!({}));
    alice
        .call("publish", json!({"channel": "chat:room", "data": 2}))
        .await;
    assert!(
        pubs(&bob.frames(), "chat:room").is_empty(),
        "no delivery after unsubscribe"
    );
    assert_eq!(node.stats().subscriptions, 0);
    assert_eq!(node.stats().publications, 2);
}

#[tokio::test]
async fn publication_data_is_delivered_byte_identical_and_encoded_once() {
    let node = dev_node();
    let mut subs: Vec<Client> = (0..3).map(|_| Client::new(&node)).collect();
    for c in &mut subs {
        c.connect().await;
        c.call("subscribe", json!({"channel": "x"})).await;
    }
    let mut publisher = Client::new(&node);
    publisher.connect().await;
    publisher
        .send_raw(r#"{"id":9,"publish":{"channel":"x","data":{"b" : [1, 2.50, "é"]}}}"#)
        .await
        .expect("publish");
    let mut frames = Vec::new();
    for c in &subs {
        let mut batch = Vec::new();
        c.outbox.drain(&mut batch, usize::MAX);
        frames.push(batch.pop().expect("a pub frame"));
    }
    let text = String::from_utf8(frames[0].json().to_vec()).expect("utf8");
    assert!(
        text.contains(r#""data":{"b" : [1, 2.50, "é"]}"#),
        "raw data kept: {text}"
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[0].json().as_ptr() == w[1].json().as_ptr()),
        "every subscriber got the same shared bytes"
    );
    assert_eq!(node.stats().deliveries, 3);
}

#[tokio::test]
async fn already_subscribed_is_409_and_bad_channel_400_unknown_namespace_404() {
    let node = node_with(
        "chat",
        NamespaceOptions {
            allow_subscribe: AllowSubscribe::Public,
            ..NamespaceOptions::default()
        },
    );
    let mut c = Client::new(&node);
    c.connect().await;
    assert!(c.call("subscribe", json!({"channel": "chat:a"})).await["subscribe"].is_object());
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "chat:a"})).await),
        Some(409)
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "chat:a b"})).await),
        Some(400)
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": ""})).await),
        Some(400)
    );
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "nope:a"})).await),
        Some(404)
    );
    assert_eq!(
        error_code(
            &c.call("publish", json!({"channel": "nope:a", "data": 1}))
                .await
        ),
        Some(404)
    );
}

#[tokio::test]
async fn permissions_are_enforced_with_403() {
    let node = node_with("news", NamespaceOptions::default());
    let mut c = Client::new(&node);
    c.connect().await;
    // allow_subscribe = authenticated and this connection is anonymous.
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "news:a"})).await),
        Some(403)
    );
    // allow_publish = none.
    assert_eq!(
        error_code(
            &c.call("publish", json!({"channel": "news:a", "data": 1}))
                .await
        ),
        Some(403)
    );
    // presence and history are off.
    assert_eq!(
        error_code(&c.call("presence", json!({"channel": "news:a"})).await),
        Some(403)
    );
    assert_eq!(
        error_code(&c.call("presence_stats", json!({"channel": "news:a"})).await),
        Some(403)
    );
    assert_eq!(
        error_code(&c.call("history", json!({"channel": "news:a"})).await),
        Some(403)
    );
}

#[tokio::test]
async fn token_subscribe_mode_needs_a_verifier() {
    let node = node_with(
        "private",
        NamespaceOptions {
            allow_subscribe: AllowSubscribe::Token,
            ..NamespaceOptions::default()
        },
    );
    let mut c = Client::new(&node);
    c.connect().await;
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "private:a"})).await),
        Some(403)
    );
    assert_eq!(
        error_code(
            &c.call("subscribe", json!({"channel": "private:a", "token": "t"}))
                .await
        ),
        Some(401)
    );
}

#[tokio::test]
async fn user_limited_channels_refuse_other_users() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    // Anonymous user "" is never in the list.
    assert_eq!(
        error_code(
            &c.call("subscribe", json!({"channel": "dm:#alice,bob"}))
                .await
        ),
        Some(403)
    );
    assert_eq!(
        error_code(
            &c.call("publish", json!({"channel": "dm:#alice,bob", "data": 1}))
                .await
        ),
        Some(403)
    );
}

#[tokio::test]
async fn publish_to_subscribers_only_and_size_limit() {
    let node = node_with(
        "room",
        NamespaceOptions {
            allow_subscribe: AllowSubscribe::Public,
            allow_publish: AllowPublish::Subscribers,
            max_message_size: 16,
            ..NamespaceOptions::default()
        },
    );
    let mut c = Client::new(&node);
    c.connect().await;
    assert_eq!(
        error_code(
            &c.call("publish", json!({"channel": "room:a", "data": 1}))
                .await
        ),
        Some(403)
    );
    c.call("subscribe", json!({"channel": "room:a"})).await;
    let ok = c
        .call("publish", json!({"channel": "room:a", "data": 1}))
        .await;
    assert!(ok["publish"].is_object(), "{ok}");
    assert!(
        ok["publish"].get("offset").is_none(),
        "no history, no offset"
    );
    assert_eq!(
        error_code(
            &c.call(
                "publish",
                json!({"channel": "room:a", "data": "x".repeat(20)})
            )
            .await
        ),
        Some(413)
    );
    assert_eq!(pubs(&c.frames(), "room:a"), [(None, json!(1))]);
}

#[tokio::test]
async fn channel_limit_is_429() {
    let mut config = NodeConfig::dev();
    config.max_channels_per_connection = 2;
    let node = Node::new(config);
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "a"})).await;
    c.call("subscribe", json!({"channel": "b"})).await;
    let reply = c.call("subscribe", json!({"channel": "c"})).await;
    assert_eq!(error_code(&reply), Some(429));
    assert_eq!(reply["error"]["temporary"], json!(true));
}

#[tokio::test]
async fn rpc_refresh_and_sub_refresh_without_backends() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    assert_eq!(
        error_code(&c.call("rpc", json!({"method": "m", "data": {}})).await),
        Some(404)
    );
    assert_eq!(
        error_code(&c.call("refresh", json!({"token": "t"})).await),
        Some(401)
    );
    c.call("subscribe", json!({"channel": "a"})).await;
    assert_eq!(
        error_code(
            &c.call("sub_refresh", json!({"channel": "a", "token": "t"}))
                .await
        ),
        Some(401)
    );
    assert_eq!(
        error_code(
            &c.call("sub_refresh", json!({"channel": "b", "token": "t"}))
                .await
        ),
        Some(404)
    );
    // send is fire-and-forget: no reply at all.
    c.frames();
    c.send_raw(r#"{"send":{"data":1}}"#).await.expect("send");
    assert!(c.frames().is_empty());
}

#[tokio::test]
async fn batched_commands_are_answered_in_order() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.send_raw(
        "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n{\"id\":3,\"publish\":{\"channel\":\"a\",\"data\":7}}",
    )
    .await
    .expect("batch");
    let frames = c.frames();
    let ids: Vec<_> = frames.iter().filter_map(|f| f["id"].as_u64()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(pubs(&frames, "a"), [(Some(1), json!(7))]);
}

#[tokio::test]
async fn history_limit_since_and_reverse() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    for i in 1..=5 {
        c.call("publish", json!({"channel": "h", "data": i})).await;
    }
    let offsets = |reply: &serde_json::Value| -> Vec<u64> {
        reply["history"]["publications"]
            .as_array()
            .expect("publications")
            .iter()
            .map(|p| p["offset"].as_u64().expect("offset"))
            .collect()
    };
    let all = c.call("history", json!({"channel": "h"})).await;
    assert_eq!(offsets(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all["history"]["offset"], json!(5));
    let epoch = all["history"]["epoch"].clone();
    let last2 = c.call("history", json!({"channel": "h", "limit": 2})).await;
    assert_eq!(offsets(&last2), [4, 5]);
    let rev = c
        .call(
            "history",
            json!({"channel": "h", "limit": 2, "reverse": true}),
        )
        .await;
    assert_eq!(offsets(&rev), [5, 4]);
    let since = c
        .call(
            "history",
            json!({"channel": "h", "limit": 2, "since": {"offset": 1, "epoch": epoch}}),
        )
        .await;
    assert_eq!(offsets(&since), [2, 3]);
    let before = c
        .call(
            "history",
            json!({"channel": "h", "limit": 2, "reverse": true, "since": {"offset": 4, "epoch": epoch}}),
        )
        .await;
    assert_eq!(offsets(&before), [3, 2]);
    let zero = c.call("history", json!({"channel": "h", "limit": 0})).await;
    assert_eq!(offsets(&zero), Vec::<u64>::new());
    assert_eq!(zero["history"]["offset"], json!(5));
    let mismatch = c
        .call(
            "history",
            json!({"channel": "h", "since": {"offset": 1, "epoch": "other"}}),
        )
        .await;
    assert_eq!(error_code(&mismatch), Some(503));
}

#[tokio::test]
async fn server_side_api_publish_history_presence_disconnect() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("subscribe", json!({"channel": "api"})).await;
    let position = node
        .publish(
            "api",
            kilat_protocol::types::raw_json("\"srv\"").expect("json"),
        )
        .await
        .expect("publish")
        .expect("history on");
    assert_eq!(position.offset, 1);
    assert_eq!(pubs(&c.frames(), "api"), [(Some(1), json!("srv"))]);
    let history = node
        .history("api", kilat_core::HistoryOptions::default())
        .await
        .expect("history");
    assert_eq!(history.publications.len(), 1);
    assert_eq!(
        node.presence_stats("api").await.expect("stats").num_clients,
        1
    );
    node.history_remove("api").await.expect("remove");
    let after = node
        .history("api", kilat_core::HistoryOptions::default())
        .await
        .expect("history");
    assert_ne!(after.epoch, history.epoch);
    assert_eq!(
        node.disconnect("", None, kilat_protocol::Disconnect::FORCE_NO_RECONNECT),
        1
    );
    assert_eq!(c.close_reason().map(|d| d.code), Some(3503));
}

#[tokio::test]
async fn shutdown_sends_3000_to_every_session_and_new_ones() {
    let node = dev_node();
    let mut a = Client::new(&node);
    a.connect().await;
    node.shutdown();
    assert_eq!(a.close_reason().map(|d| d.code), Some(3000));
    let late = Client::new(&node);
    assert_eq!(late.close_reason().map(|d| d.code), Some(3000));
}

#[tokio::test]
async fn server_side_subscribe_and_unsubscribe_of_a_user() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    c.call("publish", json!({"channel": "srv", "data": 0}))
        .await;
    assert_eq!(node.subscribe_user("", "srv").await.expect("subscribe"), 1);
    assert_eq!(
        node.subscribe_user("", "srv").await.expect("again"),
        0,
        "already subscribed"
    );
    let frames = c.frames();
    let push = frames
        .iter()
        .find(|f| f["push"]["subscribe"].is_object())
        .expect("subscribe push");
    assert_eq!(push["push"]["channel"], json!("srv"));
    assert_eq!(push["push"]["subscribe"]["offset"], json!(1));
    assert_eq!(push["push"]["subscribe"]["positioned"], json!(true));
    node.publish("srv", kilat_protocol::types::raw_json("1").expect("json"))
        .await
        .expect("publish");
    assert_eq!(pubs(&c.frames(), "srv"), [(Some(2), json!(1))]);
    // The session knows the subscription: a client subscribe is 409, presence is there.
    assert_eq!(
        error_code(&c.call("subscribe", json!({"channel": "srv"})).await),
        Some(409)
    );
    assert_eq!(
        node.presence_stats("srv").await.expect("stats").num_clients,
        1
    );
    assert_eq!(
        node.unsubscribe_user("", "srv").await.expect("unsubscribe"),
        1
    );
    let frames = c.frames();
    let unsub = frames
        .iter()
        .find(|f| f["push"]["unsubscribe"].is_object())
        .expect("unsubscribe push");
    assert_eq!(unsub["push"]["unsubscribe"]["code"], json!(2000));
    assert_eq!(
        node.presence_stats("srv").await.expect("stats").num_clients,
        0
    );
    assert!(c.call("subscribe", json!({"channel": "srv"})).await["subscribe"].is_object());
    c.close().await;
    assert_eq!(node.stats().subscriptions, 0);
}

#[tokio::test]
async fn server_side_subscription_is_cleaned_up_on_close() {
    let node = dev_node();
    let mut c = Client::new(&node);
    c.connect().await;
    node.subscribe_user("", "srv").await.expect("subscribe");
    // Closed before the session ever looked at the change.
    c.close().await;
    assert_eq!(node.stats().subscriptions, 0);
    assert_eq!(
        node.presence_stats("srv").await.expect("stats").num_clients,
        0
    );
    assert_eq!(node.subscribe_user("", "srv").await.expect("nobody"), 0);
}
