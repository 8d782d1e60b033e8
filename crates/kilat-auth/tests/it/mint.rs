use std::time::Duration;

use jsonwebtoken::Algorithm;
use kilat_auth::{MintError, TokenConfig, TokenError, TokenRequest, Verifier, mint, mint_with_key};
use serde_json::json;

use crate::common::{ED1_KEY, ED1_PUB, SECRET, ed_key, now, secret_verifier};

#[tokio::test]
async fn minted_connection_token_verifies() {
    let request = TokenRequest {
        channels: vec!["news".into()],
        ..TokenRequest::connection("alice")
            .with_ttl(Duration::from_secs(3600))
            .with_info(json!({"a": 1}))
    };
    let token = mint(SECRET.as_bytes(), Algorithm::HS256, &request).expect("mint");
    let claims = secret_verifier()
        .verify_connection(&token)
        .await
        .expect("verify");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.channels, vec!["news"]);
    assert_eq!(claims.info.as_ref().map(|i| i.get()), Some(r#"{"a":1}"#));
    let exp = claims.exp.expect("ttl sets exp");
    assert!((now() + 3590..=now() + 3600).contains(&exp), "{exp}");
    assert!(claims.iat.is_some());
}

#[tokio::test]
async fn minted_subscription_token_is_bound_to_its_channel() {
    let request = TokenRequest::subscription("alice", "chat:7");
    let token = mint(SECRET.as_bytes(), Algorithm::HS512, &request).expect("mint");
    let v = secret_verifier();
    let claims = v
        .verify_subscription(&token, "chat:7")
        .await
        .expect("own channel");
    assert_eq!(claims.exp, None, "no ttl, no exp");
    let err = v
        .verify_subscription(&token, "chat:8")
        .await
        .expect_err("other channel");
    assert!(matches!(err, TokenError::ChannelMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn zero_ttl_token_is_already_expired() {
    let request = TokenRequest::connection("u").with_ttl(Duration::ZERO);
    let token = mint(SECRET.as_bytes(), Algorithm::HS256, &request).expect("mint");
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("expired");
    assert!(err.is_expired(), "{err:?}");
}

#[tokio::test]
async fn mint_with_a_private_key_and_kid() {
    let token = mint_with_key(
        &ed_key(ED1_KEY),
        Algorithm::EdDSA,
        Some("k1"),
        &TokenRequest::connection("eve"),
    )
    .expect("mint");
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(header.kid.as_deref(), Some("k1"));
    let v = Verifier::new(&TokenConfig::with_public_key(ED1_PUB)).expect("config");
    assert_eq!(
        v.verify_connection(&token).await.expect("verify").sub,
        "eve"
    );

    let err = mint_with_key(
        &ed_key(ED1_KEY),
        Algorithm::RS256,
        None,
        &TokenRequest::connection("eve"),
    )
    .expect_err("key does not fit alg");
    assert!(matches!(err, MintError::Jwt(_)), "{err:?}");
}
