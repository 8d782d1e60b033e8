use jsonwebtoken::Algorithm;
use kilat_auth::{TokenConfig, TokenError};
use serde_json::json;

use crate::common::{SECRET, now, secret_verifier, sign, sign_hs, verifier};

#[tokio::test]
async fn valid_connection_token_yields_its_claims() {
    let exp = now() + 3600;
    let token = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": exp, "iat": now(), "info": {"name": "Alice", "n": [1, 2]},
                "channels": ["news", "chat:1"]}),
    );
    let claims = secret_verifier()
        .verify_connection(&token)
        .await
        .expect("valid token");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.exp, Some(exp));
    assert_eq!(claims.channels, vec!["news", "chat:1"]);
    let info = claims.info.as_ref().expect("info kept");
    // serde_json sorts object keys when signing; the point is that the text is kept as signed.
    assert_eq!(info.get(), r#"{"n":[1,2],"name":"Alice"}"#);
    let left = claims.expires_in().expect("has exp").as_secs();
    assert!((3590..=3600).contains(&left), "{left}");
}

#[tokio::test]
async fn every_hmac_size_verifies() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let token = sign_hs(alg, &json!({"sub": "u", "exp": now() + 60}));
        secret_verifier()
            .verify_connection(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    }
}

#[tokio::test]
async fn absent_sub_is_anonymous_and_absent_exp_never_expires() {
    let token = sign_hs(Algorithm::HS256, &json!({}));
    let claims = secret_verifier()
        .verify_connection(&token)
        .await
        .expect("valid");
    assert_eq!(claims.sub, "");
    assert_eq!(claims.exp, None);
    assert!(claims.expires_in().is_none());
    assert!(claims.channels.is_empty());

    let strict = verifier(TokenConfig {
        require_exp: true,
        ..TokenConfig::with_secret(SECRET)
    });
    let err = strict
        .verify_connection(&token)
        .await
        .expect_err("exp required");
    assert!(matches!(err, TokenError::MissingClaim("exp")), "{err:?}");
}

#[tokio::test]
async fn expired_token_is_refused_with_code_410() {
    let token = sign_hs(Algorithm::HS256, &json!({"sub": "u", "exp": now() - 10}));
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("expired");
    assert!(err.is_expired(), "{err:?}");
    assert!(!err.is_temporary());
    assert_eq!(err.code(), 410);

    let lenient = verifier(TokenConfig {
        leeway: 30,
        ..TokenConfig::with_secret(SECRET)
    });
    lenient
        .verify_connection(&token)
        .await
        .expect("within leeway");
}

#[tokio::test]
async fn token_from_the_future_is_not_yet_valid() {
    for claims in [json!({"nbf": now() + 600}), json!({"iat": now() + 600})] {
        let token = sign_hs(Algorithm::HS256, &claims);
        let err = secret_verifier()
            .verify_connection(&token)
            .await
            .expect_err("future");
        assert!(matches!(err, TokenError::NotYetValid), "{claims}: {err:?}");
        assert_eq!(err.code(), 401);
    }
}

#[tokio::test]
async fn wrong_secret_is_a_bad_signature() {
    let key = jsonwebtoken::EncodingKey::from_secret(b"another secret");
    let token = sign(Algorithm::HS256, &key, None, &json!({"sub": "u"}));
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("wrong key");
    assert!(matches!(err, TokenError::BadSignature), "{err:?}");
    assert_eq!(err.code(), 401);
}

#[tokio::test]
async fn tampered_payload_is_a_bad_signature() {
    let token = sign_hs(Algorithm::HS256, &json!({"sub": "alice"}));
    let forged = crate::common::raw_token(&json!({"alg": "HS256"}), &json!({"sub": "admin"}), "x");
    let signature = token.rsplit('.').next().expect("three segments");
    let forged = format!("{}{signature}", forged.trim_end_matches('x'));
    let err = secret_verifier()
        .verify_connection(&forged)
        .await
        .expect_err("forged");
    assert!(matches!(err, TokenError::BadSignature), "{err:?}");
}

#[tokio::test]
async fn audience_and_issuer_must_match_the_config() {
    let config = TokenConfig {
        audience: Some("kilat".into()),
        issuer: Some("https://app.example".into()),
        ..TokenConfig::with_secret(SECRET)
    };
    let v = verifier(config);
    let good = sign_hs(
        Algorithm::HS256,
        &json!({"aud": "kilat", "iss": "https://app.example"}),
    );
    v.verify_connection(&good)
        .await
        .expect("matching aud and iss");

    let other_aud = sign_hs(
        Algorithm::HS256,
        &json!({"aud": "other", "iss": "https://app.example"}),
    );
    let err = v.verify_connection(&other_aud).await.expect_err("aud");
    assert!(matches!(err, TokenError::WrongAudience), "{err:?}");

    let other_iss = sign_hs(
        Algorithm::HS256,
        &json!({"aud": ["x", "kilat"], "iss": "https://evil"}),
    );
    let err = v.verify_connection(&other_iss).await.expect_err("iss");
    assert!(matches!(err, TokenError::WrongIssuer), "{err:?}");

    // Without an audience in the config, a token meant for someone else is still refused.
    let err = secret_verifier()
        .verify_connection(&other_aud)
        .await
        .expect_err("foreign aud");
    assert!(matches!(err, TokenError::WrongAudience), "{err:?}");
}

#[tokio::test]
async fn subscription_token_opens_only_its_own_channel() {
    let token = sign_hs(
        Algorithm::HS256,
        &json!({"sub": "alice", "channel": "chat:1", "exp": now() + 60, "info": {"role": "mod"}}),
    );
    let v = secret_verifier();
    let claims = v
        .verify_subscription(&token, "chat:1")
        .await
        .expect("own channel");
    assert_eq!(
        (claims.sub.as_str(), claims.channel.as_str()),
        ("alice", "chat:1")
    );
    assert_eq!(
        claims.info.as_ref().map(|i| i.get()),
        Some(r#"{"role":"mod"}"#)
    );

    let err = v
        .verify_subscription(&token, "chat:2")
        .await
        .expect_err("other channel");
    assert!(matches!(err, TokenError::ChannelMismatch { .. }), "{err:?}");
    assert_eq!(err.code(), 401);
}

#[tokio::test]
async fn connection_token_is_not_a_subscription_token() {
    let token = sign_hs(Algorithm::HS256, &json!({"sub": "alice"}));
    let err = secret_verifier()
        .verify_subscription(&token, "news")
        .await
        .expect_err("no channel");
    assert!(matches!(err, TokenError::ChannelMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn expired_subscription_token_is_expired_not_mismatched() {
    let token = sign_hs(
        Algorithm::HS256,
        &json!({"channel": "news", "exp": now() - 1}),
    );
    let err = secret_verifier()
        .verify_subscription(&token, "news")
        .await
        .expect_err("expired");
    assert!(err.is_expired(), "{err:?}");
}

#[tokio::test]
async fn claims_of_the_wrong_type_are_malformed() {
    for claims in [
        json!({"exp": "tomorrow"}),
        json!({"channels": "news"}),
        json!({"sub": 42}),
        json!([1]),
    ] {
        let token = sign_hs(Algorithm::HS256, &claims);
        let err = secret_verifier()
            .verify_connection(&token)
            .await
            .expect_err("bad claims");
        assert!(matches!(err, TokenError::Malformed(_)), "{claims}: {err:?}");
    }
}

#[tokio::test]
async fn narrowed_algorithm_list_is_enforced() {
    let v = verifier(TokenConfig {
        algorithms: vec![Algorithm::HS512],
        ..TokenConfig::with_secret(SECRET)
    });
    let err = v
        .verify_connection(&sign_hs(Algorithm::HS256, &json!({})))
        .await
        .expect_err("HS256 not listed");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
    v.verify_connection(&sign_hs(Algorithm::HS512, &json!({})))
        .await
        .expect("HS512 listed");
}
