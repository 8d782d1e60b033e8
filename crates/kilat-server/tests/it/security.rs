//! Regression tests for the attacks of issue 20, each through real sockets: the attacker's
//! request fails, and the victim or a bystander loses nothing.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::emulation::{Stream, post_emulation};
use crate::support::{TestServer, connect, next_non_presence};

/// The next frame on an emulated stream that is not a join or leave push.
async fn next_non_presence_on(stream: &mut Stream) -> serde_json::Value {
    loop {
        let frame = stream.next().await;
        let push = &frame["push"];
        if push.get("join").is_none() && push.get("leave").is_none() {
            return frame;
        }
    }
}

fn emulation_body(session: &str, node: &str, command: serde_json::Value) -> String {
    serde_json::json!({"session": session, "node": node, "command": command}).to_string()
}

/// Issue 20, defect 1: the client id that other users see (presence, join/leave, publication
/// info) does not authorise emulation POSTs; only the stream's secret session key does.
#[tokio::test]
async fn issue_20_a_client_id_learnt_from_presence_cannot_drive_another_users_stream() {
    let server = TestServer::start(|_| {}).await;
    let (status, mut alice) = Stream::open(server.addr, true, r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(status, 200);
    let connected = alice.next().await;
    let key = connected["connect"]["session"]
        .as_str()
        .expect("session key")
        .to_owned();
    let client = connected["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_owned();
    let node = connected["connect"]["node"]
        .as_str()
        .expect("node id")
        .to_owned();
    assert_ne!(key, client, "the session key must not be the client id");
    assert!(
        key.len() >= 32 && !key.contains(&client) && !client.contains(&key),
        "session key {key:?} must be 128 random bits, unrelated to the client id {client:?}"
    );
    let subscribe = serde_json::json!({"id": 2, "subscribe": {"channel": "chat:room"}});
    assert_eq!(
        post_emulation(server.addr, emulation_body(&key, &node, subscribe)).await,
        204
    );
    assert_eq!(alice.next().await["id"], 2);

    // Bob learns Alice's client id the way any member can: from presence.
    let (mut bob, _) = connect(&server).await;
    bob.send(Message::text(
        r#"{"id":2,"subscribe":{"channel":"chat:room"}}"#,
    ))
    .await
    .expect("subscribe");
    assert_eq!(next_non_presence(&mut bob).await["id"], 2);
    bob.send(Message::text(
        r#"{"id":3,"presence":{"channel":"chat:room"}}"#,
    ))
    .await
    .expect("presence");
    let presence = next_non_presence(&mut bob).await;
    assert!(
        presence["presence"]["clients"].get(&client).is_some(),
        "Alice's client id is visible to Bob: {presence}"
    );
    assert!(
        !presence.to_string().contains(&key),
        "the session key leaked in presence: {presence}"
    );

    // Bob posts as Alice with her client id: refused, whether the command is well-formed or not.
    let forged = serde_json::json!({"id": 77, "publish": {"channel": "chat:room", "data": {"text": "forged"}}});
    assert_eq!(
        post_emulation(server.addr, emulation_body(&client, &node, forged)).await,
        404
    );
    let broken = serde_json::json!("not a command");
    assert_eq!(
        post_emulation(server.addr, emulation_body(&client, &node, broken)).await,
        404
    );

    // The next publication everyone sees is Bob's own marker: the forged one never ran, and
    // Alice's stream is still open and well.
    bob.send(Message::text(
        r#"{"id":4,"publish":{"channel":"chat:room","data":{"text":"marker"}}}"#,
    ))
    .await
    .expect("publish");
    loop {
        let frame = next_non_presence(&mut bob).await;
        if frame["id"] == 4 {
            assert!(frame.get("error").is_none(), "{frame}");
            continue;
        }
        assert_eq!(frame["push"]["pub"]["data"]["text"], "marker", "{frame}");
        break;
    }
    let seen = next_non_presence_on(&mut alice).await;
    assert_eq!(seen["push"]["pub"]["data"]["text"], "marker", "{seen}");
}
