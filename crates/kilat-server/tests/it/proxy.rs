//! Backend proxy hooks through real sockets: each test runs its own backend HTTP server on a
//! loopback port that records what kilat sends and answers as the test wants.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use kilat_core::NamespaceOptions;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, TestServer, WAIT, close_code, next_json, next_non_presence};

/// One request the backend received.
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Value,
}

type Answer = dyn Fn(&str, &Value) -> Option<Value> + Send + Sync;

struct BackendState {
    requests: mpsc::UnboundedSender<Recorded>,
    answer: Box<Answer>,
}

/// A backend on a loopback port: `answer(path, body)` is the JSON reply, `None` never answers.
struct Backend {
    base: String,
    requests: mpsc::UnboundedReceiver<Recorded>,
}

impl Backend {
    async fn start(
        answer: impl Fn(&str, &Value) -> Option<Value> + Send + Sync + 'static,
    ) -> Backend {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(BackendState {
            requests: tx,
            answer: Box::new(answer),
        });
        let app = axum::Router::new().fallback(handle).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend {
            base: format!("http://{addr}"),
            requests: rx,
        }
    }

    fn url(&self, path: &str) -> Option<String> {
        Some(format!("{}{path}", self.base))
    }

    async fn next_request(&mut self) -> Recorded {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("timed out waiting for a backend request")
            .expect("backend gone")
    }
}

async fn handle(
    State(state): State<Arc<BackendState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = (state.answer)(uri.path(), &body);
    let _ = state.requests.send(Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    match answer {
        // As a backend in debug mode may answer (Flask's `jsonify` did by default).
        Some(reply) if uri.path().ends_with("/pretty") => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&reply).expect("json"),
        )
            .into_response(),
        Some(reply) => axum::Json(reply).into_response(),
        None => std::future::pending().await,
    }
}

/// A URL on a loopback port nobody listens on.
async fn closed_url() -> Option<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    Some(format!("http://{addr}/hook"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Opens a WebSocket with a Cookie header and sends `connect` (no token); returns the reply.
async fn connect_with_cookie(server: &TestServer, cookie: &str) -> (Client, Value) {
    let mut request = server.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("cookie", cookie.parse().expect("cookie value"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket handshake");
    send(&mut ws, json!({"id": 1, "connect": {"name": "test"}})).await;
    let reply = next_json(&mut ws).await;
    (ws, reply)
}

async fn send(ws: &mut Client, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send frame");
}

#[tokio::test]
async fn connect_proxy_names_the_user_and_sees_the_cookie() {
    let mut backend = Backend::start(|path, _| match path {
        "/connect" => Some(json!({"result": {"user": "alice", "info": {"name": "Alice"}}})),
        _ => None,
    })
    .await;
    let connect_url = backend.url("/connect");
    let server = TestServer::start(|config| config.proxy.connect_url = connect_url).await;

    let (mut ws, reply) = connect_with_cookie(&server, "session=abc123").await;
    let client = reply["connect"]["client"]
        .as_str()
        .unwrap_or_else(|| panic!("connect reply: {reply}"))
        .to_owned();
    let request = backend.next_request().await;
    assert_eq!(request.path, "/connect");
    assert_eq!(request.body["client"], client.as_str());
    assert_eq!(request.body["transport"], "websocket");
    assert_eq!(request.body["name"], "test");
    assert_eq!(request.headers["cookie"], "session=abc123");
    assert_eq!(request.headers["x-kilat-client"], client.as_str());
    assert_eq!(request.headers["content-type"], "application/json");

    send(&mut ws, json!({"id": 2, "subscribe": {"channel": "room"}})).await;
    assert!(next_non_presence(&mut ws).await["subscribe"].is_object());
    send(
        &mut ws,
        json!({"id": 3, "publish": {"channel": "room", "data": {"n": 1}}}),
    )
    .await;
    let mut publication = None;
    while publication.is_none() {
        let frame = next_non_presence(&mut ws).await;
        if frame["push"]["pub"].is_object() {
            publication = Some(frame);
        }
    }
    let publication = publication.unwrap_or_default();
    assert_eq!(publication["push"]["pub"]["info"]["user"], "alice");
    assert_eq!(publication["push"]["pub"]["info"]["info"]["name"], "Alice");
}

#[tokio::test]
async fn connect_proxy_refusals_reach_the_client() {
    let backend = Backend::start(|_, body| {
        if body["name"] == "banned" {
            Some(json!({"disconnect": {"code": 3504, "reason": "banned"}}))
        } else {
            Some(json!({"error": {"code": 403, "message": "no session"}}))
        }
    })
    .await;
    let connect_url = backend.url("/connect");
    let server = TestServer::start(|config| config.proxy.connect_url = connect_url).await;

    let (mut ws, reply) = connect_with_cookie(&server, "session=expired").await;
    assert_eq!(reply["error"]["code"], 403, "{reply}");
    assert_eq!(reply["error"]["message"], "no session", "{reply}");
    assert_eq!(close_code(&mut ws).await, Some(3501));

    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect("websocket handshake");
    send(&mut ws, json!({"id": 1, "connect": {"name": "banned"}})).await;
    assert_eq!(close_code(&mut ws).await, Some(3504));
}

#[tokio::test]
async fn subscribe_proxy_allows_and_refuses() {
    let mut backend = Backend::start(|_, body| {
        if body["channel"] == "guarded:open" {
            Some(json!({"result": {}}))
        } else {
            Some(json!({"error": {"code": 403, "message": "not a member"}}))
        }
    })
    .await;
    let subscribe_url = backend.url("/subscribe");
    let server = TestServer::start(|config| {
        config.proxy.subscribe_url = subscribe_url;
        config.node.namespaces.insert(
            "guarded".into(),
            NamespaceOptions {
                proxy_subscribe: true,
                ..NamespaceOptions::dev()
            },
        );
    })
    .await;
    let (mut ws, _) = crate::support::connect(&server).await;

    send(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": "guarded:secret", "data": {"why": "curious"}}}),
    )
    .await;
    let reply = next_non_presence(&mut ws).await;
    assert_eq!(reply["error"]["code"], 403, "{reply}");
    let request = backend.next_request().await;
    assert_eq!(request.body["channel"], "guarded:secret");
    assert_eq!(request.body["data"]["why"], "curious");
    assert_eq!(request.body["user"], "");

    send(
        &mut ws,
        json!({"id": 3, "subscribe": {"channel": "guarded:open"}}),
    )
    .await;
    let reply = next_non_presence(&mut ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");

    // Namespaces without `proxy_subscribe` never ask the backend.
    send(&mut ws, json!({"id": 4, "subscribe": {"channel": "lobby"}})).await;
    let reply = next_non_presence(&mut ws).await;
    assert!(reply["subscribe"].is_object(), "{reply}");
    backend.next_request().await;
    assert!(backend.requests.try_recv().is_err());
}

#[tokio::test]
async fn publish_proxy_replaces_the_data() {
    let mut backend = Backend::start(|_, body| {
        if body["data"]["text"] == "forbidden" {
            Some(json!({"error": {"code": 403, "message": "moderated"}}))
        } else {
            Some(json!({"result": {"data": {"text": "clean"}}}))
        }
    })
    .await;
    let publish_url = backend.url("/publish");
    let server = TestServer::start(|config| {
        config.proxy.publish_url = publish_url;
        config.node.namespaces.insert(
            "chat".into(),
            NamespaceOptions {
                proxy_publish: true,
                ..NamespaceOptions::dev()
            },
        );
    })
    .await;
    let (mut ws, _) = crate::support::connect(&server).await;
    send(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": "chat:1"}}),
    )
    .await;
    assert!(next_non_presence(&mut ws).await["subscribe"].is_object());

    send(
        &mut ws,
        json!({"id": 3, "publish": {"channel": "chat:1", "data": {"text": "forbidden"}}}),
    )
    .await;
    let reply = next_non_presence(&mut ws).await;
    assert_eq!(reply["error"]["code"], 403, "{reply}");

    send(
        &mut ws,
        json!({"id": 4, "publish": {"channel": "chat:1", "data": {"text": "dirty"}}}),
    )
    .await;
    let mut publication = Value::Null;
    let mut replied = false;
    while publication.is_null() || !replied {
        let frame = next_non_presence(&mut ws).await;
        if frame["push"]["pub"].is_object() {
            publication = frame["push"]["pub"].clone();
        } else if frame["id"] == 4 {
            assert!(frame["publish"].is_object(), "{frame}");
            replied = true;
        }
    }
    assert_eq!(publication["data"]["text"], "clean");
    assert_eq!(backend.next_request().await.body["channel"], "chat:1");
    let request = backend.next_request().await;
    assert_eq!(request.body["data"]["text"], "dirty");
}

/// Frames are `\n`-separated: a pretty-printed hook answer must not split the reply built
/// from it, and newlines escaped inside its strings must survive.
#[tokio::test]
async fn a_pretty_printed_hook_answer_stays_one_frame() {
    let backend = Backend::start(|_, body| {
        Some(json!({"result": {"data": {"method": body["method"], "lines": "one\ntwo", "list": [1, 2]}}}))
    })
    .await;
    let rpc_url = backend.url("/rpc/pretty");
    let server = TestServer::start(|config| config.proxy.rpc_url = rpc_url).await;
    let (mut ws, _) = crate::support::connect(&server).await;
    send(&mut ws, json!({"id": 2, "rpc": {"method": "lines"}})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["rpc"]["data"]["lines"], "one\ntwo", "{reply}");
    assert_eq!(reply["rpc"]["data"]["list"], json!([1, 2]), "{reply}");
    // The next frame is whole too.
    send(&mut ws, json!({"id": 3, "rpc": {"method": "again"}})).await;
    assert_eq!(next_json(&mut ws).await["rpc"]["data"]["method"], "again");
}

#[tokio::test]
async fn rpc_and_send_reach_the_backend() {
    let mut backend = Backend::start(|path, body| match path {
        "/rpc" => Some(json!({"result": {"data": {"method": body["method"], "sum": 3}}})),
        _ => Some(json!({})),
    })
    .await;
    let (rpc_url, send_url) = (backend.url("/rpc"), backend.url("/send"));
    let server = TestServer::start(|config| {
        config.proxy.rpc_url = rpc_url;
        config.proxy.send_url = send_url;
    })
    .await;
    let (mut ws, _) = crate::support::connect(&server).await;

    send(
        &mut ws,
        json!({"id": 2, "rpc": {"method": "add", "data": [1, 2]}}),
    )
    .await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert_eq!(reply["rpc"]["data"]["sum"], 3, "{reply}");
    assert_eq!(reply["rpc"]["data"]["method"], "add", "{reply}");
    let request = backend.next_request().await;
    assert_eq!(request.path, "/rpc");
    assert_eq!(request.body["data"], json!([1, 2]));

    send(&mut ws, json!({"send": {"data": {"typing": true}}})).await;
    let request = backend.next_request().await;
    assert_eq!(request.path, "/send");
    assert_eq!(request.body["data"]["typing"], true);
}

#[tokio::test]
async fn backend_down_is_503_at_once_and_others_are_fine() {
    let connect_url = closed_url().await;
    let rpc_url = closed_url().await;
    let server = TestServer::start(|config| config.proxy.connect_url = connect_url).await;

    let started = Instant::now();
    let (mut ws, reply) = connect_with_cookie(&server, "session=x").await;
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert_eq!(reply["error"]["temporary"], true, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(close_code(&mut ws).await, Some(3004));

    assert_eq!(
        crate::support::http_get(server.addr, "/health").await.0,
        200
    );

    let server_rpc_only = TestServer::start(|config| config.proxy.rpc_url = rpc_url).await;
    let (mut ws, _) = crate::support::connect(&server_rpc_only).await;
    let started = Instant::now();
    send(&mut ws, json!({"id": 2, "rpc": {"method": "m"}})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The connection and the server carry on.
    send(&mut ws, json!({"id": 3, "subscribe": {"channel": "room"}})).await;
    assert!(next_non_presence(&mut ws).await["subscribe"].is_object());
    let (mut other, _) = crate::support::connect(&server_rpc_only).await;
    send(
        &mut other,
        json!({"id": 2, "subscribe": {"channel": "room"}}),
    )
    .await;
    assert!(next_non_presence(&mut other).await["subscribe"].is_object());
}

#[tokio::test]
async fn slow_backend_is_503_after_the_timeout() {
    let backend = Backend::start(|_, _| None).await;
    let rpc_url = backend.url("/rpc");
    let server = TestServer::start(|config| {
        config.proxy.rpc_url = rpc_url;
        config.proxy.timeout = Duration::from_millis(300);
    })
    .await;
    let (mut ws, _) = crate::support::connect(&server).await;
    let started = Instant::now();
    send(&mut ws, json!({"id": 2, "rpc": {"method": "slow"}})).await;
    let reply = next_json(&mut ws).await;
    let waited = started.elapsed();
    assert_eq!(reply["error"]["code"], 503, "{reply}");
    assert_eq!(reply["error"]["message"], "backend unavailable", "{reply}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn refresh_proxy_extends_the_connection_instead_of_a_refresh_push() {
    let refreshes = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = refreshes.clone();
    let mut backend = Backend::start(move |path, _| match path {
        "/connect" => Some(json!({"result": {"user": "bob", "expire_at": unix_now() + 1}})),
        "/refresh" => {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                Some(json!({"result": {"expire_at": unix_now() + 2}}))
            } else {
                Some(json!({"disconnect": {"code": 3503, "reason": "logged out"}}))
            }
        }
        _ => None,
    })
    .await;
    let (connect_url, refresh_url) = (backend.url("/connect"), backend.url("/refresh"));
    let server = TestServer::start(|config| {
        config.proxy.connect_url = connect_url;
        config.proxy.refresh_url = refresh_url;
        config.node.token_refresh_grace = Duration::from_millis(300);
    })
    .await;
    let (mut ws, reply) = connect_with_cookie(&server, "session=bob").await;
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    assert_eq!(backend.next_request().await.path, "/connect");

    // The first refresh extends; the connection outlives its first expiry and grace, so the
    // backend is asked a second time, and its `disconnect` closes the connection.
    let mut frames = Vec::new();
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
            .await
            .expect("timed out waiting for the close")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(Message::Text(text))) => frames.push(text.to_string()),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(3503), "frames: {frames:?}");
    assert!(
        frames.iter().all(|f| !f.contains("refresh")),
        "no refresh push expected: {frames:?}"
    );
    let first = backend.next_request().await;
    assert_eq!(first.path, "/refresh");
    assert_eq!(first.body["user"], "bob");
    assert_eq!(first.headers["cookie"], "session=bob");
    assert_eq!(first.headers["x-kilat-user"], "bob");
    assert_eq!(backend.next_request().await.path, "/refresh");
}

#[tokio::test]
async fn http_streaming_forwards_the_cookie_to_the_connect_hook() {
    use http_body_util::{BodyExt, Full};

    let mut backend = Backend::start(|_, _| Some(json!({"result": {"user": "carol"}}))).await;
    let connect_url = backend.url("/connect");
    let server = TestServer::start(|config| config.proxy.connect_url = connect_url).await;

    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post("/connection/stream")
        .header("host", server.addr.to_string())
        .header("cookie", "session=carol")
        .header("x-not-forwarded", "secret")
        .body(Full::new(Bytes::from_static(br#"{"id":1,"connect":{}}"#)))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while !buffer.contains(&b'\n') {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("stream frame in time")
            .expect("stream open")
            .expect("stream frame");
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
    let line = buffer.split(|b| *b == b'\n').next().unwrap_or_default();
    let reply: Value = serde_json::from_slice(line).expect("json line");
    assert!(reply["connect"]["client"].is_string(), "{reply}");

    let request = backend.next_request().await;
    assert_eq!(request.body["transport"], "http_stream");
    assert_eq!(request.headers["cookie"], "session=carol");
    assert!(request.headers.get("x-not-forwarded").is_none());
}

#[tokio::test]
async fn the_sub_refresh_hook_is_asked_at_a_subscriptions_expiry_and_its_refusal_ends_it() {
    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256!";
    let mut backend = Backend::start(|path, _| match path {
        "/connect" => Some(json!({"result": {"user": "alice"}})),
        "/sub_refresh" => Some(json!({"error": {"code": 403, "message": "membership ended"}})),
        _ => None,
    })
    .await;
    let connect_url = backend.url("/connect");
    let sub_refresh_url = backend.url("/sub_refresh");
    let server = TestServer::start(|config| {
        config.proxy.connect_url = connect_url;
        config.proxy.sub_refresh_url = sub_refresh_url;
        config.token = Some(kilat_auth::TokenConfig::with_secret(SECRET));
        config.node.token_refresh_grace = Duration::from_secs(1);
        let private: NamespaceOptions =
            toml::from_str("allow_subscribe = \"token\"").expect("namespace");
        config.node.namespaces.insert("private".into(), private);
    })
    .await;
    let (mut ws, _) = connect_with_cookie(&server, "session=1").await;
    backend.next_request().await; // the connect hook
    let token = kilat_auth::mint(
        SECRET.as_bytes(),
        kilat_auth::Algorithm::HS256,
        &kilat_auth::TokenRequest::subscription("alice", "private:room")
            .with_ttl(Duration::from_secs(1)),
    )
    .expect("mint");
    send(
        &mut ws,
        json!({"id": 2, "subscribe": {"channel": "private:room", "token": token}}),
    )
    .await;
    let reply = next_non_presence(&mut ws).await;
    assert_eq!(reply["subscribe"]["expires"], true, "{reply}");
    // At the expiry the backend is asked, with the channel and user.
    let request = backend.next_request().await;
    assert_eq!(request.path, "/sub_refresh");
    assert_eq!(request.body["channel"], "private:room");
    assert_eq!(request.body["user"], "alice");
    // Refused: the subscription ends with 410 (no `refresh` push to the client first).
    let push = next_non_presence(&mut ws).await;
    assert_eq!(push["push"]["channel"], "private:room", "{push}");
    assert_eq!(push["push"]["unsubscribe"]["code"], 410, "{push}");
}
