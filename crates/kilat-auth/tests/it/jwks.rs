use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use kilat_auth::{JwksError, TokenConfig, TokenError, Verifier};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{ED1_KEY, ED2_KEY, P256_KEY, RSA1_KEY, ec_key, ed_key, now, rsa_key, sign};

/// A minimal HTTP/1.1 server on 127.0.0.1:0 answering every request with the current body
/// (`None`: HTTP 500) and counting requests.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new(Some(body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (Arc::clone(&body), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (b, h) = (Arc::clone(&b), Arc::clone(&h));
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(request.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                    h.fetch_add(1, Ordering::SeqCst);
                    let current = b.lock().expect("lock").clone();
                    let response = match current {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned(),
                    };
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            body,
            hits,
            task,
        }
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock().expect("lock") = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> serde_json::Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK from private key");
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).expect("json")
}

fn key_set(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn jwks_verifier(url: &str, min_refresh: u64) -> Verifier {
    let config = TokenConfig {
        jwks_min_refresh_interval: min_refresh,
        jwks_timeout_ms: 2_000,
        ..TokenConfig::with_jwks_url(url)
    };
    Verifier::new(&config).expect("jwks config")
}

fn ed_token(pem: &str, kid: &str) -> String {
    sign(
        Algorithm::EdDSA,
        &ed_key(pem),
        Some(kid),
        &json!({"sub": "carol", "exp": now() + 60}),
    )
}

#[tokio::test]
async fn verifies_from_jwks_then_follows_a_key_rotation() {
    let server = JwksServer::start(key_set(&[jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1")])).await;
    let v = jwks_verifier(&server.url, 0);

    let claims = v
        .verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("k1 verifies");
    assert_eq!(claims.sub, "carol");
    v.verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("cached");
    assert_eq!(server.hits(), 1, "a known kid is served from the cache");

    // Rotate: the provider now publishes only k2.
    server.serve(Some(key_set(&[jwk(
        &ed_key(ED2_KEY),
        Algorithm::EdDSA,
        "k2",
    )])));
    v.verify_connection(&ed_token(ED2_KEY, "k2"))
        .await
        .expect("k2 verifies after refresh");
    assert_eq!(server.hits(), 2);

    // A token signed with k2's key but naming k1 is not accepted under another id.
    let err = v
        .verify_connection(&ed_token(ED2_KEY, "k1"))
        .await
        .expect_err("k1 retired");
    assert!(
        matches!(err, TokenError::UnknownKid(ref kid) if kid == "k1"),
        "{err:?}"
    );
    assert_eq!(err.code(), 401);
}

#[tokio::test]
async fn each_key_type_in_one_set_verifies_only_its_own_algorithms() {
    let set = key_set(&[
        jwk(&rsa_key(RSA1_KEY), Algorithm::RS256, "rsa"),
        jwk(&ec_key(P256_KEY), Algorithm::ES256, "ec"),
        jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "ed"),
    ]);
    let server = JwksServer::start(set).await;
    let v = jwks_verifier(&server.url, 60);
    let claims = json!({"sub": "dave"});
    for (alg, key, kid) in [
        (Algorithm::RS256, rsa_key(RSA1_KEY), "rsa"),
        (Algorithm::ES256, ec_key(P256_KEY), "ec"),
        (Algorithm::EdDSA, ed_key(ED1_KEY), "ed"),
    ] {
        let token = sign(alg, &key, Some(kid), &claims);
        v.verify_connection(&token)
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e:?}"));
    }
    // An RS256 token naming the Ed25519 key: the key decides the algorithm, not the header.
    let token = sign(Algorithm::RS256, &rsa_key(RSA1_KEY), Some("ed"), &claims);
    let err = v
        .verify_connection(&token)
        .await
        .expect_err("wrong alg for key");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn made_up_kids_cost_at_most_one_fetch_per_interval() {
    let server = JwksServer::start(key_set(&[jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1")])).await;
    let v = jwks_verifier(&server.url, 60);
    v.verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("k1");
    for i in 0..50 {
        let err = v
            .verify_connection(&ed_token(ED1_KEY, &format!("bogus-{i}")))
            .await
            .expect_err("bogus");
        assert!(matches!(err, TokenError::UnknownKid(_)), "{err:?}");
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn concurrent_first_verifications_share_one_fetch() {
    let server = JwksServer::start(key_set(&[jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1")])).await;
    let v = jwks_verifier(&server.url, 0);
    let token = ed_token(ED1_KEY, "k1");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, token) = (v.clone(), token.clone());
            tokio::spawn(async move { v.verify_connection(&token).await.map(|c| c.sub) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").expect("verifies"), "carol");
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn hmac_tokens_and_missing_kids_never_reach_the_endpoint() {
    let server = JwksServer::start(key_set(&[jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1")])).await;
    let v = jwks_verifier(&server.url, 0);
    let hs = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"guess"),
        Some("k1"),
        &json!({}),
    );
    let err = v.verify_connection(&hs).await.expect_err("HS256 with JWKS");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
    let no_kid = sign(Algorithm::EdDSA, &ed_key(ED1_KEY), None, &json!({}));
    let err = v.verify_connection(&no_kid).await.expect_err("no kid");
    assert!(matches!(err, TokenError::MissingKid), "{err:?}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn prefetch_warms_the_cache_and_excluded_algorithms_never_fetch() {
    let server = JwksServer::start(key_set(&[
        jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1"),
        jwk(&rsa_key(RSA1_KEY), Algorithm::RS256, "rsa"),
    ]))
    .await;
    let config = TokenConfig {
        algorithms: vec![Algorithm::EdDSA],
        ..TokenConfig::with_jwks_url(&server.url)
    };
    let v = Verifier::new(&config).expect("config");
    let rs = sign(
        Algorithm::RS256,
        &rsa_key(RSA1_KEY),
        Some("rsa"),
        &json!({}),
    );
    let err = v
        .verify_connection(&rs)
        .await
        .expect_err("RS256 excluded by config");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
    assert_eq!(server.hits(), 0);

    v.prefetch().await.expect("prefetch");
    assert_eq!(server.hits(), 1);
    v.verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("k1 from the warm cache");
    assert_eq!(server.hits(), 1);
    // Listed in the set but its algorithm is excluded: the key was dropped when parsing.
    let err = v.verify_connection(&rs).await.expect_err("still excluded");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn endpoint_down_is_a_temporary_error_and_is_not_retried_at_once() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }; // dropped: connections to it are refused
    let v = jwks_verifier(&format!("http://{addr}/jwks"), 60);
    let err = v
        .verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect_err("down");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Connect(_))),
        "{err:?}"
    );
    assert!(err.is_temporary());
    assert_eq!(err.code(), 503);

    let err = v
        .verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect_err("backoff");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Backoff)),
        "{err:?}"
    );
    assert!(err.is_temporary());
}

#[tokio::test]
async fn silent_endpoint_times_out_instead_of_hanging() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Accepts and holds connections, never answers.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = TokenConfig {
        jwks_timeout_ms: 300,
        ..TokenConfig::with_jwks_url(format!("http://{addr}/jwks"))
    };
    let v = Verifier::new(&config).expect("config");
    let started = Instant::now();
    let err = v
        .verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect_err("timeout");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Timeout)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    holder.abort();
}

#[tokio::test]
async fn cached_keys_survive_an_outage_and_errors_are_temporary() {
    let server = JwksServer::start(key_set(&[jwk(&ed_key(ED1_KEY), Algorithm::EdDSA, "k1")])).await;
    let config = TokenConfig {
        jwks_min_refresh_interval: 0,
        jwks_max_age: 0, // every verification wants a refresh
        ..TokenConfig::with_jwks_url(&server.url)
    };
    let v = Verifier::new(&config).expect("config");
    v.verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("k1");

    server.serve(None); // HTTP 500 from now on
    v.verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect("stale k1 still verifies");
    assert_eq!(server.hits(), 2, "the refresh was attempted");

    let err = v
        .verify_connection(&ed_token(ED2_KEY, "k2"))
        .await
        .expect_err("new kid, no JWKS");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Status(500))),
        "{err:?}"
    );
    assert!(err.is_temporary());

    server.serve(Some("this is not json".to_owned()));
    let err = v
        .verify_connection(&ed_token(ED2_KEY, "k2"))
        .await
        .expect_err("garbage JWKS");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Json(_))),
        "{err:?}"
    );
}

/// With the `https` feature, an https URL speaks TLS: a server answering plain HTTP fails
/// the handshake with a temporary error.
#[cfg(feature = "https")]
#[tokio::test]
async fn https_endpoint_that_is_not_tls_fails_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let plain = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let v = jwks_verifier(&format!("https://{addr}/jwks"), 60);
    let err = v
        .verify_connection(&ed_token(ED1_KEY, "k1"))
        .await
        .expect_err("not TLS");
    assert!(
        matches!(err, TokenError::JwksUnavailable(JwksError::Tls(_))),
        "{err:?}"
    );
    assert!(err.is_temporary());
    plain.abort();
}
