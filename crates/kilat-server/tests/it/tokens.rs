use std::time::Duration;

use futures_util::SinkExt;
use kilat_auth::{Algorithm, TokenConfig, TokenRequest, mint};
use kilat_server::Config;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, close_code, next_json};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";

/// A locked-down server (no dev mode) that verifies HS256 tokens and has a `chat` namespace
/// open to authenticated users and a `private` one that needs subscription tokens.
async fn secured() -> TestServer {
    TestServer::start(|config: &mut Config| {
        config.node.dev = false;
        config.token = Some(TokenConfig::with_secret(SECRET));
        let chat: kilat_core::NamespaceOptions =
            toml::from_str("allow_subscribe = \"authenticated\"\nallow_publish = \"subscribers\"")
                .expect("namespace");
        config.node.namespaces.insert("chat".into(), chat);
        let private: kilat_core::NamespaceOptions =
            toml::from_str("allow_subscribe = \"token\"").expect("namespace");
        config.node.namespaces.insert("private".into(), private);
    })
    .await
}

fn token(request: &TokenRequest) -> String {
    mint(SECRET.as_bytes(), Algorithm::HS256, request).expect("mint")
}

async fn open(server: &TestServer) -> Client {
    tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("handshake")
        .0
}

async fn send(ws: &mut Client, frame: String) {
    ws.send(Message::text(frame)).await.expect("send");
}

#[tokio::test]
async fn anonymous_connections_are_refused_without_dev_mode() {
    let server = secured().await;
    let mut ws = open(&server).await;
    send(&mut ws, r#"{"id":1,"connect":{}}"#.into()).await;
    assert_eq!(close_code(&mut ws).await, Some(3501));
}

#[tokio::test]
async fn a_valid_token_connects_as_its_user() {
    let server = secured().await;
    let mut ws = open(&server).await;
    let t = token(&TokenRequest::connection("alice").with_ttl(Duration::from_secs(600)));
    send(
        &mut ws,
        format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    send(
        &mut ws,
        r#"{"id":2,"subscribe":{"channel":"chat:room"}}"#.into(),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");
}

#[tokio::test]
async fn expired_wrong_key_and_alg_none_tokens_are_refused() {
    let server = secured().await;
    let expired = token(&TokenRequest::connection("alice").with_ttl(Duration::ZERO));
    let wrong_key = mint(
        b"another-secret-another-secret-another-secret",
        Algorithm::HS256,
        &TokenRequest::connection("alice"),
    )
    .expect("mint");
    // {"alg":"none"} . {"sub":"alice"} . (no signature)
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.";
    for (what, t, code) in [
        ("expired", expired, 410),
        ("wrong key", wrong_key, 401),
        ("alg none", none.to_owned(), 401),
    ] {
        let mut ws = open(&server).await;
        send(
            &mut ws,
            format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
        )
        .await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
    }
}

#[tokio::test]
async fn subscription_tokens_are_bound_to_their_channel_and_user() {
    let server = secured().await;
    let mut ws = open(&server).await;
    let t = token(&TokenRequest::connection("alice"));
    send(
        &mut ws,
        format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    next_json(&mut ws).await;

    // No token: the namespace requires one.
    send(
        &mut ws,
        r#"{"id":2,"subscribe":{"channel":"private:a"}}"#.into(),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], 403, "{reply}");

    // A token for another channel.
    let other = token(&TokenRequest::subscription("alice", "private:b"));
    send(
        &mut ws,
        format!(r#"{{"id":3,"subscribe":{{"channel":"private:a","token":"{other}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], 401, "{reply}");

    // A token for this channel but another user.
    let bob = token(&TokenRequest::subscription("bob", "private:a"));
    send(
        &mut ws,
        format!(r#"{{"id":4,"subscribe":{{"channel":"private:a","token":"{bob}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], 403, "{reply}");

    // The right token.
    let good = token(&TokenRequest::subscription("alice", "private:a"));
    send(
        &mut ws,
        format!(r#"{{"id":5,"subscribe":{{"channel":"private:a","token":"{good}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");
}

/// Issue 20, defect 4: a subscription token (it names a `channel`) connects nobody and refreshes
/// no connection; the reverse (a connection token used to subscribe) was already refused.
#[tokio::test]
async fn issue_20_subscription_tokens_are_not_connection_tokens() {
    let server = secured().await;
    let sub = token(
        &TokenRequest::subscription("mallory", "private:a").with_ttl(Duration::from_secs(600)),
    );

    // As a connect token: refused like any bad token, and the connection is closed.
    let mut ws = open(&server).await;
    send(
        &mut ws,
        format!(r#"{{"id":1,"connect":{{"token":"{sub}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], 401, "{reply}");
    assert_eq!(close_code(&mut ws).await, Some(3501));

    // As a refresh token on a live connection: refused, and the connection keeps its user.
    let mut ws = open(&server).await;
    let t = token(&TokenRequest::connection("alice").with_ttl(Duration::from_secs(600)));
    send(
        &mut ws,
        format!(r#"{{"id":1,"connect":{{"token":"{t}"}}}}"#),
    )
    .await;
    assert!(next_json(&mut ws).await["connect"].is_object());
    send(
        &mut ws,
        format!(r#"{{"id":2,"refresh":{{"token":"{sub}"}}}}"#),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["error"]["code"], 401, "{reply}");
    send(
        &mut ws,
        r#"{"id":3,"presence_stats":{"channel":"chat:x"}}"#.into(),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 3, "the connection stays usable: {reply}");
}
