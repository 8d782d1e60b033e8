//! The binary (MessagePack) encoding over a real socket: the same protocol scenario passes over
//! JSON and over `kilat.msgpack`, a publication reaches JSON and binary subscribers alike, and a
//! malformed binary message, a text message on a binary connection or an unknown encoding gets
//! its error without disturbing a bystander.

use futures_util::{SinkExt, StreamExt};
use kilat_core::NamespaceOptions;
use kilat_protocol::Encoding;
use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, TestServer, UPGRADE_HEADERS, WAIT, close_code, raw_upgrade};

async fn start() -> TestServer {
    TestServer::start(|config| {
        config.node.namespaces.insert(
            "feed".into(),
            NamespaceOptions {
                history_size: 10,
                history_ttl: std::time::Duration::from_secs(60),
                ..NamespaceOptions::dev()
            },
        );
    })
    .await
}

/// A protocol client that speaks either encoding; tests write and read JSON values.
struct EncClient {
    ws: Client,
    encoding: Encoding,
    /// Frames received but not yet read (a message may batch several).
    pending: std::collections::VecDeque<Value>,
}

impl EncClient {
    async fn open(server: &TestServer, encoding: Encoding) -> EncClient {
        let mut request = server.ws_url().into_client_request().expect("request");
        if encoding == Encoding::Msgpack {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                "kilat.msgpack".parse().expect("header"),
            );
        }
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        let agreed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ascii").to_owned());
        match encoding {
            Encoding::Msgpack => assert_eq!(agreed.as_deref(), Some("kilat.msgpack")),
            Encoding::Json => assert_eq!(agreed, None),
        }
        EncClient {
            ws,
            encoding,
            pending: Default::default(),
        }
    }

    async fn connected(server: &TestServer, encoding: Encoding) -> EncClient {
        let mut client = EncClient::open(server, encoding).await;
        client.send(json!({"id": 1, "connect": {}})).await;
        let reply = client.next().await;
        assert!(reply["connect"]["client"].is_string(), "{reply}");
        client
    }

    async fn send(&mut self, frame: Value) {
        let text = frame.to_string();
        let message = match self.encoding {
            Encoding::Json => Message::text(text),
            Encoding::Msgpack => Message::binary(json_to_msgpack(text.as_bytes()).expect("pack")),
        };
        self.ws.send(message).await.expect("send");
    }

    /// The next frame that is not a ping or a presence change.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                let push = &frame["push"];
                if frame != json!({})
                    && push.get("join").is_none()
                    && push.get("presence_diff").is_none()
                {
                    return frame;
                }
                continue;
            }
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("stream ended")
                .expect("websocket error");
            let json = match (self.encoding, message) {
                (Encoding::Json, Message::Text(text)) => text.as_str().to_owned(),
                (Encoding::Msgpack, Message::Binary(packed)) => {
                    String::from_utf8(msgpack_to_json(&packed, 1 << 24).expect("valid msgpack"))
                        .expect("utf8")
                }
                (_, Message::Ping(_) | Message::Pong(_)) => continue,
                (encoding, other) => panic!("{encoding:?} connection got {other:?}"),
            };
            for line in json.split('\n') {
                self.pending
                    .push_back(serde_json::from_str(line).expect("json frame"));
            }
        }
    }

    /// The reply to `id`, with the pushes seen before it.
    async fn reply(&mut self, id: u64) -> (Value, Vec<Value>) {
        let mut pushes = Vec::new();
        loop {
            let frame = self.next().await;
            if frame["id"] == json!(id) {
                return (frame, pushes);
            }
            pushes.push(frame);
        }
    }
}

/// One scenario of the protocol, run over an encoding: subscribe, publish (JSON and bytes),
/// receive, history, an error reply, presence, unsubscribe.
async fn scenario(encoding: Encoding) {
    let server = start().await;
    let mut a = EncClient::connected(&server, encoding).await;
    let mut b = EncClient::connected(&server, encoding).await;
    for c in [&mut a, &mut b] {
        c.send(json!({"id": 2, "subscribe": {"channel": "feed:x"}}))
            .await;
        let (reply, _) = c.reply(2).await;
        assert_eq!(reply["subscribe"]["recoverable"], true, "{reply}");
    }
    a.send(json!({"id": 3, "publish": {"channel": "feed:x", "data": {"price": 1.5, "n": [1, -2, 300000]}}}))
        .await;
    let (reply, _) = a.reply(3).await;
    assert_eq!(reply["publish"]["offset"], 1, "{reply}");
    let push = b.next().await;
    assert_eq!(push["push"]["channel"], "feed:x");
    assert_eq!(
        push["push"]["pub"]["data"],
        json!({"price": 1.5, "n": [1, -2, 300000]})
    );
    assert_eq!(push["push"]["pub"]["offset"], 1);

    b.send(json!({"id": 4, "history": {"channel": "feed:x", "limit": 10}}))
        .await;
    let (history, _) = b.reply(4).await;
    assert_eq!(history["history"]["publications"][0]["data"]["price"], 1.5);
    assert_eq!(history["history"]["offset"], 1);

    // An error reply goes out in the connection's encoding.
    b.send(json!({"id": 5, "subscribe": {"channel": "feed:x"}}))
        .await;
    let (error, _) = b.reply(5).await;
    assert_eq!(error["error"]["code"], 409, "already subscribed: {error}");

    b.send(json!({"id": 6, "presence_stats": {"channel": "feed:x"}}))
        .await;
    let (stats, _) = b.reply(6).await;
    assert_eq!(stats["presence_stats"]["num_clients"], 2, "{stats}");

    b.send(json!({"id": 7, "unsubscribe": {"channel": "feed:x"}}))
        .await;
    let (unsub, _) = b.reply(7).await;
    assert_eq!(unsub, json!({"id": 7, "unsubscribe": {}}));

    // A batch of two commands in one message gets both replies.
    let batch = [
        json!({"id": 8, "presence_stats": {"channel": "feed:x"}}),
        json!({"id": 9, "presence_stats": {"channel": "feed:x"}}),
    ];
    let message = match encoding {
        Encoding::Json => Message::text(format!("{}\n{}", batch[0], batch[1])),
        Encoding::Msgpack => {
            let mut packed = json_to_msgpack(batch[0].to_string().as_bytes()).expect("pack");
            packed.extend(json_to_msgpack(batch[1].to_string().as_bytes()).expect("pack"));
            Message::binary(packed)
        }
    };
    a.ws.send(message).await.expect("send");
    let (r8, _) = a.reply(8).await;
    let (r9, _) = a.reply(9).await;
    assert_eq!(r8["presence_stats"]["num_clients"], 1);
    assert_eq!(r9["presence_stats"]["num_clients"], 1);
}

#[tokio::test]
async fn the_protocol_scenario_passes_over_json() {
    scenario(Encoding::Json).await;
}

#[tokio::test]
async fn the_protocol_scenario_passes_over_msgpack() {
    scenario(Encoding::Msgpack).await;
}

#[tokio::test]
async fn one_publication_reaches_json_and_binary_subscribers_alike() {
    let server = start().await;
    let mut json_sub = EncClient::connected(&server, Encoding::Json).await;
    let mut bin_sub = EncClient::connected(&server, Encoding::Msgpack).await;
    for c in [&mut json_sub, &mut bin_sub] {
        c.send(json!({"id": 2, "subscribe": {"channel": "feed:both"}}))
            .await;
        c.reply(2).await;
    }
    json_sub
        .send(json!({"id": 3, "publish": {"channel": "feed:both", "data": {"t": "héllo\n", "v": [true, null]}}}))
        .await;
    // The publisher's own push may arrive before or after its reply.
    let (_, mut early) = json_sub.reply(3).await;
    let seen_json = match early.pop() {
        Some(push) => push,
        None => json_sub.next().await,
    };
    let seen_bin = bin_sub.next().await;
    assert_eq!(seen_json, seen_bin);
    assert_eq!(seen_bin["push"]["pub"]["data"]["t"], "héllo\n");
}

#[tokio::test]
async fn a_malformed_binary_message_closes_only_its_sender() {
    let server = start().await;
    let mut bystander = EncClient::connected(&server, Encoding::Msgpack).await;
    bystander
        .send(json!({"id": 2, "subscribe": {"channel": "feed:calm"}}))
        .await;
    bystander.reply(2).await;

    // Truncated: a map announcing a key that never comes.
    let mut bad = EncClient::connected(&server, Encoding::Msgpack).await;
    bad.ws
        .send(Message::binary(vec![0x81u8, 0xa2, b'i']))
        .await
        .expect("send");
    assert_eq!(close_code(&mut bad.ws).await, Some(3500));

    // A text message on a binary connection.
    let mut texter = EncClient::connected(&server, Encoding::Msgpack).await;
    texter
        .ws
        .send(Message::text(
            r#"{"id":2,"presence":{"channel":"feed:calm"}}"#,
        ))
        .await
        .expect("send");
    assert_eq!(close_code(&mut texter.ws).await, Some(3500));

    // A binary message on a JSON connection.
    let mut json_client = EncClient::connected(&server, Encoding::Json).await;
    json_client
        .ws
        .send(Message::binary(vec![0x80u8]))
        .await
        .expect("send");
    assert_eq!(close_code(&mut json_client.ws).await, Some(3500));

    // The bystander still gets publications and answers.
    let mut publisher = EncClient::connected(&server, Encoding::Json).await;
    publisher
        .send(json!({"id": 2, "publish": {"channel": "feed:calm", "data": 42}}))
        .await;
    publisher.reply(2).await;
    let push = bystander.next().await;
    assert_eq!(push["push"]["pub"]["data"], 42, "{push}");
}

#[tokio::test]
async fn an_unknown_encoding_is_refused_with_a_readable_reason() {
    let server = start().await;
    let (status, head, mut stream) = raw_upgrade(
        server.addr,
        &format!("{UPGRADE_HEADERS}Sec-WebSocket-Protocol: kilat.cbor\r\n"),
    )
    .await;
    assert_eq!(status, 400, "{head}");
    // The one-line body ends with a newline.
    let mut body = Vec::new();
    while !body.ends_with(b"\n") {
        let mut chunk = [0u8; 512];
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stream, &mut chunk))
            .await
            .expect("timed out reading the body")
            .expect("read");
        assert!(n > 0, "the body ended early: {body:?}");
        body.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("kilat.cbor") && body.contains("kilat.msgpack"),
        "{body}"
    );

    // Other subprotocols are not kilat's business: the upgrade goes on, in JSON.
    let (status, head, _stream) = raw_upgrade(
        server.addr,
        &format!("{UPGRADE_HEADERS}Sec-WebSocket-Protocol: chat, kilat.msgpack\r\n"),
    )
    .await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: kilat.msgpack"),
        "{head}"
    );
}

/// Sends `POST path` with `body` on a new connection; the status and the response body.
async fn post(
    server: &TestServer,
    path: &str,
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, hyper::body::Incoming) {
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", server.addr.to_string())
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.into_body())
}

/// Reads MessagePack frames from an HTTP stream body (values one after another).
struct PackedStream {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
    frames: std::collections::VecDeque<Value>,
}

impl PackedStream {
    async fn next(&mut self) -> Value {
        use http_body_util::BodyExt;
        loop {
            if let Some(frame) = self.frames.pop_front() {
                if frame != json!({}) {
                    return frame;
                }
                continue;
            }
            // Whole values only: a value cut by the chunking fails to decode until its rest
            // arrives.
            if !self.buffer.is_empty()
                && let Ok(json) = msgpack_to_json(&self.buffer, 1 << 24)
            {
                self.buffer.clear();
                let text = String::from_utf8(json).expect("utf8");
                for line in text.split('\n') {
                    self.frames
                        .push_back(serde_json::from_str(line).expect("json"));
                }
                continue;
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("stream frame in time")
                .expect("stream still open")
                .expect("body frame");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }
}

#[tokio::test]
async fn http_streaming_and_emulation_speak_msgpack_with_the_query_parameter() {
    let server = start().await;
    let connect = json_to_msgpack(br#"{"id":1,"connect":{}}"#).expect("pack");
    let (status, headers, body) =
        post(&server, "/connection/stream?encoding=msgpack", connect).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/vnd.kilat.msgpack");
    let mut stream = PackedStream {
        body,
        buffer: Vec::new(),
        frames: Default::default(),
    };
    let reply = stream.next().await;
    let session = reply["connect"]["session"]
        .as_str()
        .expect("session")
        .to_owned();
    let node = reply["connect"]["node"].as_str().expect("node").to_owned();

    // The emulation POST in MessagePack too.
    let command = json!({"session": session, "node": node, "command": {"id": 2, "subscribe": {"channel": "feed:http"}}});
    let packed = json_to_msgpack(command.to_string().as_bytes()).expect("pack");
    let (status, _, _) = post(&server, "/connection/emulation?encoding=msgpack", packed).await;
    assert_eq!(status, 204);
    let reply = stream.next().await;
    assert_eq!(reply["id"], 2);
    assert_eq!(reply["subscribe"]["recoverable"], true, "{reply}");

    let mut publisher = EncClient::connected(&server, Encoding::Json).await;
    publisher
        .send(json!({"id": 2, "publish": {"channel": "feed:http", "data": {"n": 1}}}))
        .await;
    publisher.reply(2).await;
    let mut push = stream.next().await;
    while push["push"].get("pub").is_none() {
        push = stream.next().await;
    }
    assert_eq!(push["push"]["pub"]["data"], json!({"n": 1}));

    // A malformed MessagePack POST is a 400; the stream goes on.
    let (status, _, _) = post(
        &server,
        "/connection/emulation?encoding=msgpack",
        vec![0x81, 0xa1],
    )
    .await;
    assert_eq!(status, 400);
    publisher
        .send(json!({"id": 3, "publish": {"channel": "feed:http", "data": {"n": 2}}}))
        .await;
    let mut push = stream.next().await;
    while push["push"].get("pub").is_none() {
        push = stream.next().await;
    }
    assert_eq!(push["push"]["pub"]["data"], json!({"n": 2}));
}

#[tokio::test]
async fn emulated_transports_refuse_what_they_cannot_speak() {
    let server = start().await;
    let connect = json_to_msgpack(br#"{"id":1,"connect":{}}"#).expect("pack");
    let (status, _, _) = post(&server, "/connection/stream?encoding=cbor", connect.clone()).await;
    assert_eq!(status, 400);
    let (status, _, _) = post(&server, "/connection/stream?encoding=msgpack", vec![0xc1]).await;
    assert_eq!(status, 400);
    let (status, body) = crate::support::http_get(
        server.addr,
        "/connection/sse?encoding=msgpack&connect=%7B%22id%22%3A1%2C%22connect%22%3A%7B%7D%7D",
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("SSE carries text"), "{body}");
}

/// Bytes no text encoding would survive: every byte value, NUL, newline, invalid UTF-8.
fn media_chunk() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255u8).rev().collect();
    bytes.extend_from_slice(b"\n\0{\"data\":1}");
    bytes
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The pub push of `channel` among `early` (frames before a reply) or the next frames.
async fn next_pub(client: &mut EncClient, early: &mut Vec<Value>) -> Value {
    let frame = if early.is_empty() {
        client.next().await
    } else {
        early.remove(0)
    };
    assert!(frame["push"]["pub"].is_object(), "not a pub push: {frame}");
    frame
}

/// Binary publications both ways between a JSON and a MessagePack client: published as `bin`
/// `data` over MessagePack and as `b64data` over JSON, received as `b64data` by the JSON client
/// and as `bin` by the MessagePack one (its frames are transcoded back to JSON here, and the
/// transcoder makes `b64data` only out of a `bin` value), in live pushes, history and recovery.
#[tokio::test]
async fn binary_publications_travel_as_bin_and_as_base64() {
    let server = start().await;
    let mut json_c = EncClient::connected(&server, Encoding::Json).await;
    let mut bin_c = EncClient::connected(&server, Encoding::Msgpack).await;
    for c in [&mut json_c, &mut bin_c] {
        c.send(json!({"id": 2, "subscribe": {"channel": "feed:media"}}))
            .await;
        c.reply(2).await;
    }
    let chunk = media_chunk();
    // The MessagePack client's frame carries the bytes as `bin` (json_to_msgpack turns the
    // b64data member into a bin data member, as the golden frames show).
    bin_c
        .send(json!({"id": 3, "publish": {"channel": "feed:media", "b64data": b64(&chunk)}}))
        .await;
    let (reply, mut early) = bin_c.reply(3).await;
    assert_eq!(reply["publish"]["offset"], 1, "{reply}");
    let own = next_pub(&mut bin_c, &mut early).await;
    let seen = next_pub(&mut json_c, &mut Vec::new()).await;
    assert_eq!(own, seen, "the same publication in both encodings");
    assert_eq!(seen["push"]["pub"]["b64data"], b64(&chunk));
    assert!(seen["push"]["pub"].get("data").is_none(), "{seen}");

    json_c
        .send(json!({"id": 4, "publish": {"channel": "feed:media", "b64data": b64(b"\x00\x01")}}))
        .await;
    let (reply, mut early) = json_c.reply(4).await;
    assert_eq!(reply["publish"]["offset"], 2, "{reply}");
    let seen = next_pub(&mut bin_c, &mut Vec::new()).await;
    assert_eq!(seen["push"]["pub"]["b64data"], "AAE=");
    assert_eq!(next_pub(&mut json_c, &mut early).await, seen);

    for c in [&mut json_c, &mut bin_c] {
        c.send(json!({"id": 5, "history": {"channel": "feed:media"}}))
            .await;
        let (history, _) = c.reply(5).await;
        let pubs = &history["history"]["publications"];
        assert_eq!(pubs[0]["b64data"], b64(&chunk), "{history}");
        assert_eq!(pubs[1]["b64data"], "AAE=", "{history}");
    }

    // Recovery from offset 0 brings both back, as bytes.
    let mut late = EncClient::connected(&server, Encoding::Msgpack).await;
    late.send(json!({"id": 2, "subscribe": {"channel": "feed:media", "recover": true, "offset": 0, "epoch": reply_epoch(&mut json_c).await}}))
        .await;
    let (reply, _) = late.reply(2).await;
    assert_eq!(reply["subscribe"]["recovered"], true, "{reply}");
    assert_eq!(
        reply["subscribe"]["publications"][0]["b64data"],
        b64(&chunk)
    );
}

async fn reply_epoch(client: &mut EncClient) -> Value {
    client
        .send(json!({"id": 90, "history": {"channel": "feed:media", "limit": 0}}))
        .await;
    let (history, _) = client.reply(90).await;
    history["history"]["epoch"].clone()
}

/// Malformed base64, both payload fields, and bytes over the limit get their error; the
/// connection and a subscriber go on.
#[tokio::test]
async fn bad_binary_publishes_get_errors_and_disturb_nobody() {
    let server = TestServer::start(|config| {
        config.node.namespaces.insert(
            "small".into(),
            NamespaceOptions {
                max_message_size: 64,
                ..NamespaceOptions::dev()
            },
        );
    })
    .await;
    for encoding in [Encoding::Json, Encoding::Msgpack] {
        let mut sub = EncClient::connected(&server, Encoding::Json).await;
        sub.send(json!({"id": 2, "subscribe": {"channel": "small:x"}}))
            .await;
        sub.reply(2).await;
        let mut c = EncClient::connected(&server, encoding).await;
        if encoding == Encoding::Json {
            c.send(json!({"id": 3, "publish": {"channel": "small:x", "b64data": "not base64!"}}))
                .await;
            let (error, _) = c.reply(3).await;
            assert_eq!(error["error"]["code"], 400, "{error}");
            let message = error["error"]["message"].as_str().expect("message");
            assert!(message.contains("standard base64"), "a hint: {message}");
            c.send(
                json!({"id": 4, "publish": {"channel": "small:x", "b64data": "AA==", "data": 1}}),
            )
            .await;
            let (error, _) = c.reply(4).await;
            assert_eq!(error["error"]["code"], 400, "{error}");
        }
        // The limit counts the decoded bytes: 64 pass (86 base64 characters), 65 do not.
        c.send(json!({"id": 5, "publish": {"channel": "small:x", "b64data": b64(&[9; 65])}}))
            .await;
        let (error, _) = c.reply(5).await;
        assert_eq!(error["error"]["code"], 413, "{error}");
        c.send(json!({"id": 6, "publish": {"channel": "small:x", "b64data": b64(&[9; 64])}}))
            .await;
        let (ok, _) = c.reply(6).await;
        assert!(ok.get("publish").is_some(), "{ok}");
        let seen = sub.next().await;
        assert_eq!(seen["push"]["pub"]["b64data"], b64(&[9; 64]), "{seen}");
    }
}

/// A `delta: "fossil"` subscriber gets binary publications in full (no `delta` form), and the
/// JSON publication after one in full too; a plain subscriber sees the same payloads.
#[tokio::test]
async fn delta_subscribers_get_binary_publications_in_full() {
    let server = start().await;
    let mut delta = EncClient::connected(&server, Encoding::Json).await;
    delta
        .send(json!({"id": 2, "subscribe": {"channel": "feed:doc", "delta": "fossil"}}))
        .await;
    let (reply, _) = delta.reply(2).await;
    assert_eq!(reply["subscribe"]["delta"], true, "{reply}");
    let mut publisher = EncClient::connected(&server, Encoding::Msgpack).await;
    let doc = json!({"title": "a long enough title to make a delta worth it", "rev": 1});
    let mut doc2 = doc.clone();
    doc2["rev"] = json!(2);
    let publishes = [
        json!({"channel": "feed:doc", "data": doc}),
        json!({"channel": "feed:doc", "b64data": b64(&media_chunk())}),
        json!({"channel": "feed:doc", "data": doc2}),
    ];
    for (i, params) in publishes.into_iter().enumerate() {
        let id = 10 + i as u64;
        publisher.send(json!({"id": id, "publish": params})).await;
        let (reply, _) = publisher.reply(id).await;
        assert!(reply.get("publish").is_some(), "{reply}");
    }
    let first = delta.next().await;
    assert_eq!(first["push"]["pub"]["delta"], false, "{first}");
    let binary = delta.next().await;
    assert_eq!(
        binary["push"]["pub"]["b64data"],
        b64(&media_chunk()),
        "{binary}"
    );
    assert!(
        binary["push"]["pub"].get("delta").is_none(),
        "plain form: {binary}"
    );
    let after = delta.next().await;
    assert_eq!(
        after["push"]["pub"]["delta"], false,
        "full after binary: {after}"
    );
    let text = after["push"]["pub"]["data"]
        .as_str()
        .expect("delta-form data");
    assert_eq!(serde_json::from_str::<Value>(text).expect("json"), doc2);
}
