use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::SinkExt;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, WAIT, connect, next_json, next_non_presence};

const KEY: &str = "test-api-key";

/// POSTs `body` to `/api/<method>` with `key`; returns the status and the JSON answer.
async fn call(addr: SocketAddr, method: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::post(format!("/api/{method}"))
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("authorization", format!("apikey {key}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("in time")
        .expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

async fn keyed_server() -> TestServer {
    TestServer::start(|c| c.api.key = Some(KEY.to_owned())).await
}

/// Every documented method with an example body, as the OpenAPI document gives it.
fn examples() -> Vec<(String, String)> {
    let doc: Value = serde_json::from_str(include_str!("../../src/openapi.json")).expect("openapi");
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter_map(|(path, item)| {
            let method = path.strip_prefix("/api/")?;
            let example = &item["post"]["requestBody"]["content"]["application/json"]["example"];
            (!example.is_null()).then(|| (method.to_owned(), example.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn every_method_is_refused_without_the_key() {
    let server = keyed_server().await;
    for (method, body) in examples() {
        let (status, answer) = call(server.addr, &method, None, &body).await;
        assert_eq!(status, 401, "{method}: {answer}");
        let (status, _) = call(server.addr, &method, Some("wrong"), &body).await;
        assert_eq!(status, 401, "{method} with a wrong key");
    }
}

#[tokio::test]
async fn every_documented_example_answers_with_its_documented_result() {
    let server = keyed_server().await;
    let doc: Value = serde_json::from_str(include_str!("../../src/openapi.json")).expect("openapi");
    // A subscriber for presence and for the server-side subscribe.
    let (_ws, _) = connect(&server).await;
    for (method, body) in examples() {
        let (status, answer) = call(server.addr, &method, Some(KEY), &body).await;
        assert_eq!(status, 200, "{method}: {answer}");
        assert!(answer.get("error").is_none(), "{method} {body}: {answer}");
        let result = &answer["result"];
        let schema = &doc["paths"][format!("/api/{method}")]["post"]["responses"]["200"]["content"]
            ["application/json"]["schema"]["oneOf"][0]["properties"]["result"];
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().expect("field name");
            assert!(
                result.get(field).is_some(),
                "{method}: result lacks `{field}`: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn malformed_json_is_400_and_unknown_method_is_an_error() {
    let server = keyed_server().await;
    let (status, _) = call(server.addr, "publish", Some(KEY), "{not json").await;
    assert_eq!(status, 400);
    let (status, answer) = call(server.addr, "nope", Some(KEY), "{}").await;
    assert_eq!(status, 200);
    assert_eq!(answer["error"]["code"], 404, "{answer}");
}

#[tokio::test]
async fn api_publish_reaches_subscribers_and_idempotency_keys_dedupe() {
    let server = keyed_server().await;
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::text(r#"{"id":2,"subscribe":{"channel":"news"}}"#))
        .await
        .expect("subscribe");
    next_json(&mut ws).await;
    // Pretty-printed: the newlines in `data` must not split the push frame (they did).
    let body = serde_json::to_string_pretty(
        &json!({"channel": "news", "data": {"n": 1}, "idempotency_key": "k1"}),
    )
    .expect("json");
    let (_, first) = call(server.addr, "publish", Some(KEY), &body).await;
    let (_, again) = call(server.addr, "publish", Some(KEY), &body).await;
    assert_eq!(first, again, "a retried publish returns the first result");
    let push = next_non_presence(&mut ws).await;
    assert_eq!(push["push"]["pub"]["data"]["n"], 1, "{push}");
    let (_, history) = call(server.addr, "history", Some(KEY), r#"{"channel":"news"}"#).await;
    assert_eq!(
        history["result"]["publications"].as_array().map(Vec::len),
        Some(1),
        "published once: {history}"
    );
}

#[tokio::test]
async fn api_disconnect_closes_the_users_connections() {
    let server = keyed_server().await;
    let (mut ws, _) = connect(&server).await;
    let (_, answer) = call(server.addr, "disconnect", Some(KEY), r#"{"user":""}"#).await;
    assert_eq!(answer["result"]["connections"], 1, "{answer}");
    assert_eq!(crate::support::close_code(&mut ws).await, Some(3503));
}

#[tokio::test]
async fn api_send_reaches_one_connection_as_a_message_push_and_refuses_an_ack_from_it() {
    let server = keyed_server().await;
    let (mut a, reply_a) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    let client_a = reply_a["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_owned();
    // Pretty-printed: the newlines in `data` must not split the frame.
    let body = serde_json::to_string_pretty(
        &json!({"client": client_a, "data": {"text": "only a", "n": [1, 2]}}),
    )
    .expect("json");
    let (status, answer) = call(server.addr, "send", Some(KEY), &body).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"result": {"connections": 1}}));
    let push = next_non_presence(&mut a).await;
    assert_eq!(
        push,
        json!({"push": {"message": {"data": {"text": "only a", "n": [1, 2]}}}})
    );
    // Every connection of the user: both anonymous connections are user "".
    let (_, answer) = call(
        server.addr,
        "send",
        Some(KEY),
        r#"{"user":"","data":"all"}"#,
    )
    .await;
    assert_eq!(answer["result"]["connections"], 2, "{answer}");
    assert_eq!(
        next_non_presence(&mut a).await["push"]["message"]["data"],
        "all"
    );
    // b got only the message for every connection: the first was a's alone.
    assert_eq!(
        next_non_presence(&mut b).await["push"]["message"]["data"],
        "all"
    );
    // A native client does not answer acks: refused at once, with the reason.
    let body = json!({"client": client_a, "data": 1, "ack": true}).to_string();
    let (_, answer) = call(server.addr, "send", Some(KEY), &body).await;
    assert_eq!(answer["error"]["code"], 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not supported for this transport"),
        "{answer}"
    );
}

#[tokio::test]
async fn openapi_document_is_served() {
    let server = keyed_server().await;
    let (status, body) = crate::support::http_get(server.addr, "/api/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["openapi"], "3.0.3");
}

#[tokio::test]
async fn api_presence_pages_list_every_member_once_and_refuse_a_made_up_cursor() {
    let server = keyed_server().await;
    let mut sockets = Vec::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        let (mut ws, connected) = connect(&server).await;
        ids.push(
            connected["connect"]["client"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
        ws.send(Message::text(format!(
            r#"{{"id":{},"subscribe":{{"channel":"room"}}}}"#,
            n + 2
        )))
        .await
        .expect("subscribe");
        next_non_presence(&mut ws).await;
        sockets.push(ws);
    }
    let mut seen = Vec::new();
    let mut body = json!({"channel": "room", "limit": 2});
    let mut pages = 0;
    loop {
        let (status, answer) = call(server.addr, "presence", Some(KEY), &body.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        let result = &answer["result"];
        let clients = result["clients"].as_object().expect("clients");
        assert!(clients.len() <= 2, "at most the limit: {answer}");
        seen.extend(clients.keys().cloned());
        pages += 1;
        match result.get("cursor").and_then(Value::as_str) {
            Some(cursor) => body["cursor"] = json!(cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3, "5 members in pages of 2");
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every member once");
    let long = json!({"channel": "room", "cursor": "x".repeat(300)}).to_string();
    let (_, answer) = call(server.addr, "presence", Some(KEY), &long).await;
    assert_eq!(answer["error"]["code"], 400, "{answer}");
}

#[tokio::test]
async fn api_publish_and_broadcast_take_base64_binary_data() {
    let server = keyed_server().await;
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::text(r#"{"id":2,"subscribe":{"channel":"media"}}"#))
        .await
        .expect("subscribe");
    next_json(&mut ws).await;
    // 0x00 0x01 0xfe 0xff 0x0a: not UTF-8, with a NUL and a newline.
    let body = json!({"channel": "media", "b64data": "AAH+/wo="}).to_string();
    let (status, answer) = call(server.addr, "publish", Some(KEY), &body).await;
    assert_eq!((status, answer.get("error")), (200, None), "{answer}");
    let push = next_non_presence(&mut ws).await;
    assert_eq!(push["push"]["pub"]["b64data"], "AAH+/wo=", "{push}");
    let body = json!({"channels": ["media", "other"], "b64data": "BQ=="}).to_string();
    let (_, answer) = call(server.addr, "broadcast", Some(KEY), &body).await;
    assert_eq!(
        answer["result"]["responses"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    let push = next_non_presence(&mut ws).await;
    assert_eq!(push["push"]["pub"]["b64data"], "BQ==", "{push}");
    let (_, history) = call(server.addr, "history", Some(KEY), r#"{"channel":"media"}"#).await;
    let pubs = &history["result"]["publications"];
    assert_eq!(pubs[0]["b64data"], "AAH+/wo=", "{history}");
    assert_eq!(pubs[1]["b64data"], "BQ==", "{history}");

    let body = json!({"channel": "media", "b64data": "AAH+/w"}).to_string();
    let (status, answer) = call(server.addr, "publish", Some(KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["error"]["code"], 400, "{answer}");
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(message.contains("padding"), "a hint: {message}");
    let body = json!({"channel": "media", "b64data": "AA==", "data": 1}).to_string();
    let (_, answer) = call(server.addr, "publish", Some(KEY), &body).await;
    assert_eq!(answer["error"]["code"], 400, "both: {answer}");
    let (_, answer) = call(
        server.addr,
        "broadcast",
        Some(KEY),
        r#"{"channels":["media"]}"#,
    )
    .await;
    assert_eq!(answer["error"]["code"], 400, "neither: {answer}");
}
