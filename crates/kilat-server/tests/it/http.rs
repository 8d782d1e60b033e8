use crate::support::{TestServer, http_get};

#[tokio::test]
async fn health_and_ready_answer_ok() {
    let server = TestServer::start(|_| {}).await;
    assert_eq!(
        http_get(server.addr, "/health").await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        http_get(server.addr, "/ready").await,
        (200, "ready\n".to_owned())
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = TestServer::start(|_| {}).await;
    let (_client, _) = crate::support::connect(&server).await;
    let (status, body) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE kilat_connections gauge"), "{body}");
    assert!(
        body.contains("\nkilat_connections 1\n"),
        "one open connection: {body}"
    );
}

#[tokio::test]
async fn web_ui_is_served_and_unknown_paths_are_404() {
    let server = TestServer::start(|_| {}).await;
    let (status, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>kilat</title>"));
    assert_eq!(http_get(server.addr, "/no/such/page").await.0, 404);
}

#[tokio::test]
async fn sdk_is_served_as_javascript() {
    let server = TestServer::start(|_| {}).await;
    let (status, body) = http_get(server.addr, "/sdk/kilat.js").await;
    assert_eq!(status, 200);
    assert!(body.contains("export"), "an ES module: {body}");
    assert_eq!(http_get(server.addr, "/sdk/missing.js").await.0, 404);
}

/// Issue 22: a locked-down deployment can stop serving the unauthenticated extras; health,
/// readiness, the SDK and the connection endpoints stay.
#[tokio::test]
async fn metrics_and_the_web_ui_can_be_switched_off() {
    let open = TestServer::start(|_| {}).await;
    assert_eq!(http_get(open.addr, "/demo/chat").await.0, 200);
    assert_eq!(http_get(open.addr, "/ui/index.html").await.0, 200);
    let server = TestServer::start(|c| {
        c.server.metrics = false;
        c.server.ui = false;
    })
    .await;
    for path in [
        "/metrics",
        "/",
        "/ui/index.html",
        "/demo/chat",
        "/demo/chat/chat.js",
    ] {
        assert_eq!(http_get(server.addr, path).await.0, 404, "{path}");
    }
    assert_eq!(http_get(server.addr, "/health").await.0, 200);
    assert_eq!(http_get(server.addr, "/ready").await.0, 200);
    assert_eq!(http_get(server.addr, "/sdk/kilat.js").await.0, 200);
    let (_client, _) = crate::support::connect(&server).await;
}
