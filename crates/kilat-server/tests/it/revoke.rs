//! Token revocation through the server API: by `jti` and by user, on one node and across
//! nodes on a real redis-server (closed with 3505 within a second, refused afterwards).

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use kilat_auth::{Algorithm, TokenConfig, TokenRequest, mint};
use kilat_server::config::EngineKind;
use kilat_testkit::RedisServer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Client, TestServer, close_code, http_request, next_json};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";
const KEY: &str = "revoke-test-key";

async fn server(redis: Option<&RedisServer>) -> TestServer {
    let url = redis.map(RedisServer::url);
    TestServer::start(move |c| {
        c.token = Some(TokenConfig::with_secret(SECRET));
        c.api.key = Some(KEY.to_owned());
        if let Some(url) = url {
            c.engine.kind = EngineKind::Redis;
            c.engine.redis_url = url;
        }
    })
    .await
}

fn token(user: &str, jti: &str) -> String {
    let request = TokenRequest::connection(user)
        .with_ttl(Duration::from_secs(600))
        .with_jti(jti);
    mint(SECRET.as_bytes(), Algorithm::HS256, &request).expect("mint")
}

/// Connects with `token`; returns the socket and the first frame (the reply or an error).
async fn connect_with(server: &TestServer, token: &str) -> (Client, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("handshake");
    ws.send(Message::text(
        json!({"id": 1, "connect": {"token": token}}).to_string(),
    ))
    .await
    .expect("send connect");
    let reply = next_json(&mut ws).await;
    (ws, reply)
}

async fn connected(server: &TestServer, token: &str) -> Client {
    let (ws, reply) = connect_with(server, token).await;
    assert!(reply["connect"].is_object(), "{reply}");
    ws
}

/// A connect with `token` is refused: error 401 `token revoked`, then close 3505.
async fn refused(server: &TestServer, token: &str) {
    let (mut ws, reply) = connect_with(server, token).await;
    assert_eq!(reply["error"]["code"], 401, "{reply}");
    assert_eq!(reply["error"]["message"], "token revoked");
    assert_eq!(close_code(&mut ws).await, Some(3505));
}

async fn api(server: &TestServer, method: &str, body: Value) -> Value {
    let body = body.to_string();
    let (status, answer) = http_request(
        server.addr,
        format!(
            "POST /api/{method} HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).expect("JSON answer")
}

/// The connection still answers commands.
async fn alive(ws: &mut Client) {
    ws.send(Message::text(
        r#"{"id":9,"presence_stats":{"channel":"x"}}"#,
    ))
    .await
    .expect("send");
    let reply = next_json(ws).await;
    assert_eq!(reply["id"], 9, "{reply}");
}

#[tokio::test]
async fn revoking_a_jti_or_a_user_closes_and_refuses_on_one_node() {
    let server = server(None).await;
    let mut one = connected(&server, &token("alice", "t1")).await;
    let mut two = connected(&server, &token("alice", "t2")).await;
    let answer = api(&server, "revoke", json!({"jti": "t1"})).await;
    assert_eq!(answer["result"]["connections"], 1, "{answer}");
    assert_eq!(close_code(&mut one).await, Some(3505));
    alive(&mut two).await;
    refused(&server, &token("alice", "t1")).await;
    // A refresh to the revoked token is refused; the connection stays.
    two.send(Message::text(
        json!({"id": 3, "refresh": {"token": token("alice", "t1")}}).to_string(),
    ))
    .await
    .expect("send");
    let reply = next_json(&mut two).await;
    assert_eq!(reply["error"]["message"], "token revoked", "{reply}");
    alive(&mut two).await;
    // The whole user.
    let answer = api(&server, "revoke", json!({"user": "alice"})).await;
    // `two`, and the refused connection above if its task has not finished yet.
    let closed = answer["result"]["connections"].as_u64().expect("count");
    assert!((1..=2).contains(&closed), "{answer}");
    assert_eq!(close_code(&mut two).await, Some(3505));
    refused(&server, &token("alice", "t3")).await;
    connected(&server, &token("bob", "t4")).await;
    // Bad requests say what is wrong.
    let answer = api(&server, "revoke", json!({"jti": "a", "user": "b"})).await;
    assert_eq!(answer["error"]["code"], 400, "{answer}");
    let answer = api(&server, "revoke", json!({"jti": "a", "until": 1000})).await;
    assert_eq!(answer["error"]["code"], 400, "{answer}");
}

/// Waits (bounded) until node `server`'s `info` lists `n` nodes.
async fn until_nodes(server: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = api(server, "info", json!({})).await;
        if info["result"]["nodes"].as_array().map(Vec::len) == Some(n) {
            assert!(
                info["result"]["nodes"][1].get("revoked").is_none(),
                "the heartbeat's revocations stay out of info: {info}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "never {n} nodes: {info}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_node_within_a_second_and_nodes_started_later() {
    let Some(redis) = RedisServer::start(
        "a_revocation_reaches_every_node_within_a_second_and_nodes_started_later",
    ) else {
        return;
    };
    let a = server(Some(&redis)).await;
    let b = server(Some(&redis)).await;
    until_nodes(&a, 2).await;
    let mut on_b = connected(&b, &token("alice", "j1")).await;
    let mut user_on_b = connected(&b, &token("mallory", "m1")).await;
    let mut other_on_b = connected(&b, &token("alice", "j2")).await;

    let started = Instant::now();
    let answer = api(&a, "revoke", json!({"jti": "j1"})).await;
    assert_eq!(answer["result"]["connections"], 0, "none on A: {answer}");
    assert_eq!(close_code(&mut on_b).await, Some(3505));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "B closed it after {took:?}");
    alive(&mut other_on_b).await;
    refused(&b, &token("alice", "j1")).await;

    let started = Instant::now();
    api(&a, "revoke", json!({"user": "mallory"})).await;
    assert_eq!(close_code(&mut user_on_b).await, Some(3505));
    assert!(started.elapsed() < Duration::from_secs(1));
    refused(&b, &token("mallory", "m2")).await;

    // A node that starts after the revocations learns them from the others' heartbeats.
    let c = server(Some(&redis)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut ws, reply) = connect_with(&c, &token("alice", "j1")).await;
        if reply["error"]["message"] == "token revoked" {
            assert_eq!(close_code(&mut ws).await, Some(3505));
            break;
        }
        assert!(reply["connect"].is_object(), "{reply}");
        assert!(
            Instant::now() < deadline,
            "node C never learnt the revocation"
        );
        // Accepted before C merged the heartbeats: the merge closes this one too.
        assert_eq!(close_code(&mut ws).await, Some(3505));
    }
    refused(&c, &token("mallory", "m3")).await;
}
