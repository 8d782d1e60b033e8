use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, close_code, http_post, next_json};

/// Opens `/app/{key}` with tungstenite and reads `pusher:connection_established`.
async fn pusher_connect(server: &TestServer, key: &str) -> (Client, serde_json::Value) {
    let url = format!("ws://{}/app/{key}?protocol=7&client=test", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    let first = next_json(&mut ws).await;
    (ws, first)
}

/// The socket id from `pusher:connection_established` (its data is a JSON string).
fn socket_id(established: &serde_json::Value) -> String {
    assert_eq!(established["event"], "pusher:connection_established");
    let data: serde_json::Value =
        serde_json::from_str(established["data"].as_str().expect("data is a string"))
            .expect("data holds JSON");
    let id = data["socket_id"].as_str().expect("socket_id").to_owned();
    let (a, b) = id.split_once('.').expect("NNNN.NNNN");
    assert!(
        a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()),
        "{id}"
    );
    assert!(data["activity_timeout"].as_u64().is_some_and(|t| t > 0));
    id
}

async fn send(ws: &mut Client, text: &str) {
    ws.send(Message::text(text.to_owned())).await.expect("send");
}

/// The next frame that is not a `pusher:ping`.
async fn next_event(ws: &mut Client) -> serde_json::Value {
    loop {
        let frame = next_json(ws).await;
        if frame["event"] != "pusher:ping" {
            return frame;
        }
    }
}

#[tokio::test]
async fn every_malformed_frame_gets_pusher_error_and_a_bystander_keeps_working() {
    let server = TestServer::start(|_| {}).await;
    let (mut bystander, established) = pusher_connect(&server, "app-key").await;
    socket_id(&established);
    send(
        &mut bystander,
        r#"{"event":"pusher:subscribe","data":{"channel":"calm"}}"#,
    )
    .await;
    let ok = next_event(&mut bystander).await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );

    let (mut abuser, _) = pusher_connect(&server, "app-key").await;
    for bad in [
        "not json",
        "[1,2,3]",
        "null",
        r#"{"no":"event"}"#,
        r#"{"event":42}"#,
        r#"{"event":"pusher:subscribe"}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":7}}"#,
        r#"{"event":"pusher:subscribe","data":"{broken"}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"bad name!"}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"private-x"}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"app-key:00"}}"#,
        r#"{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"app-key:zz","channel_data":"{}"}}"#,
        r#"{"event":"pusher:signin","data":{"auth":"app-key:00","user_data":"{\"id\":\"1\"}"}}"#,
        r#"{"event":"client-x","channel":"calm","data":{}}"#,
        r#"{"event":"client-x","channel":"private-never-joined","data":{}}"#,
        r#"{"event":"client-x","data":{}}"#,
    ] {
        send(&mut abuser, bad).await;
        let answer = next_event(&mut abuser).await;
        assert_eq!(answer["event"], "pusher:error", "for {bad}: {answer}");
        assert!(
            answer["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "for {bad}: {answer}"
        );
    }
    // The bystander still gets what is published in its channel, and the abuser still works.
    send(
        &mut abuser,
        r#"{"event":"pusher:subscribe","data":{"channel":"calm"}}"#,
    )
    .await;
    let joined = next_event(&mut abuser).await;
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    send(&mut bystander, r#"{"event":"pusher:ping","data":{}}"#).await;
    assert_eq!(next_event(&mut bystander).await["event"], "pusher:pong");
    // A publication through kilat's own server API reaches both, translated once.
    let (status, body) = http_post(
        server.addr,
        "/api/publish",
        r#"{"channel":"pusher.app-id:calm","data":{"event":"after","data":"{\"n\":1}"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for ws in [&mut bystander, &mut abuser] {
        let event = next_event(ws).await;
        assert_eq!(event["event"], "after", "{event}");
        assert_eq!(event["channel"], "calm", "{event}");
        assert_eq!(event["data"], r#"{"n":1}"#, "{event}");
    }
}

#[tokio::test]
async fn unknown_key_gets_4001_and_a_disabled_app_4003() {
    let server = TestServer::start(|c| {
        let mut off = kilat_server::pusher::PusherApp::dev();
        off.id = "off".into();
        off.key = "off-key".into();
        off.enabled = false;
        c.pusher.apps = vec![kilat_server::pusher::PusherApp::dev(), off];
    })
    .await;
    for (key, code) in [("nope", 4001u16), ("off-key", 4003)] {
        let (mut ws, first) = pusher_connect(&server, key).await;
        assert_eq!(first["event"], "pusher:error", "{first}");
        assert_eq!(first["data"]["code"], code, "{first}");
        assert_eq!(close_code(&mut ws).await, Some(code));
    }
    let (_ok, established) = pusher_connect(&server, "app-key").await;
    socket_id(&established);
}

#[tokio::test]
async fn client_events_past_the_rate_get_4301() {
    let server = TestServer::start(|c| {
        let mut app = kilat_server::pusher::PusherApp::dev();
        app.limits.client_events_per_second = 2;
        c.pusher.apps = vec![app];
    })
    .await;
    let (mut ws, established) = pusher_connect(&server, "app-key").await;
    let socket = socket_id(&established);
    let channel = "private-rate";
    let auth = sign("app-secret", &format!("{socket}:{channel}"));
    send(
        &mut ws,
        &format!(
            r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","auth":"app-key:{auth}"}}}}"#
        ),
    )
    .await;
    assert_eq!(
        next_event(&mut ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    for _ in 0..3 {
        send(
            &mut ws,
            &format!(r#"{{"event":"client-x","channel":"{channel}","data":{{}}}}"#),
        )
        .await;
    }
    let refused = next_event(&mut ws).await;
    assert_eq!(refused["event"], "pusher:error", "{refused}");
    assert_eq!(refused["data"]["code"], 4301, "{refused}");
}

/// HMAC-SHA256 hex, as an application backend computes it (written here from the RFC 2104
/// construction so the test does not share the server's code).
fn sign(secret: &str, message: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut key = [0u8; 64];
    key[..secret.len()].copy_from_slice(secret.as_bytes());
    let pad = |byte: u8| key.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message.as_bytes())
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}
