use jsonwebtoken::{Algorithm, EncodingKey};
use kilat_auth::{ConfigError, TokenConfig, TokenError, Verifier};
use serde_json::json;

use crate::common::{
    ED1_KEY, ED1_PUB, ED2_KEY, P256_KEY, P256_PUB, P384_KEY, P384_PUB, RSA1_KEY, RSA1_PUB,
    RSA2_KEY, ec_key, ed_key, now, raw_token, rsa_key, secret_verifier, sign, sign_hs, verifier,
};

fn pem_verifier(pem: &str) -> Verifier {
    verifier(TokenConfig::with_public_key(pem))
}

fn claims() -> serde_json::Value {
    json!({"sub": "bob", "exp": now() + 60})
}

#[tokio::test]
async fn each_public_key_algorithm_verifies() {
    let cases = [
        (RSA1_PUB, Algorithm::RS256, rsa_key(RSA1_KEY)),
        (RSA1_PUB, Algorithm::RS384, rsa_key(RSA1_KEY)),
        (RSA1_PUB, Algorithm::RS512, rsa_key(RSA1_KEY)),
        (P256_PUB, Algorithm::ES256, ec_key(P256_KEY)),
        (P384_PUB, Algorithm::ES384, ec_key(P384_KEY)),
        (ED1_PUB, Algorithm::EdDSA, ed_key(ED1_KEY)),
    ];
    for (public, alg, key) in cases {
        let token = sign(alg, &key, None, &claims());
        let got = pem_verifier(public).verify_connection(&token).await;
        assert_eq!(got.unwrap_or_else(|e| panic!("{alg:?}: {e:?}")).sub, "bob");
    }
}

#[tokio::test]
async fn token_signed_by_another_key_of_the_same_type_is_refused() {
    let token = sign(Algorithm::RS256, &rsa_key(RSA2_KEY), None, &claims());
    let err = pem_verifier(RSA1_PUB)
        .verify_connection(&token)
        .await
        .expect_err("other RSA key");
    assert!(matches!(err, TokenError::BadSignature), "{err:?}");

    let token = sign(Algorithm::EdDSA, &ed_key(ED2_KEY), None, &claims());
    let err = pem_verifier(ED1_PUB)
        .verify_connection(&token)
        .await
        .expect_err("other Ed key");
    assert!(matches!(err, TokenError::BadSignature), "{err:?}");
}

/// The classic attack: sign HS256 with the (public) RSA key bytes as the HMAC secret.
#[tokio::test]
async fn hmac_token_against_a_public_key_is_algorithm_confusion() {
    for public in [RSA1_PUB, P256_PUB, ED1_PUB] {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
            None,
            &claims(),
        );
        let err = pem_verifier(public)
            .verify_connection(&token)
            .await
            .expect_err("confusion");
        assert!(
            matches!(err, TokenError::AlgorithmNotAllowed { .. }),
            "{err:?}"
        );
        assert_eq!(err.code(), 401);
    }
}

#[tokio::test]
async fn public_key_token_against_a_secret_config_is_refused() {
    for (alg, key) in [
        (Algorithm::RS256, rsa_key(RSA1_KEY)),
        (Algorithm::ES256, ec_key(P256_KEY)),
        (Algorithm::EdDSA, ed_key(ED1_KEY)),
    ] {
        let token = sign(alg, &key, None, &claims());
        let err = secret_verifier()
            .verify_connection(&token)
            .await
            .expect_err("wrong family");
        assert!(
            matches!(err, TokenError::AlgorithmNotAllowed { .. }),
            "{alg:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn ec_keys_are_pinned_to_their_curve() {
    // A P-384 signature presented as ES384 to a P-256 key, and the reverse.
    let token = sign(Algorithm::ES384, &ec_key(P384_KEY), None, &claims());
    let err = pem_verifier(P256_PUB)
        .verify_connection(&token)
        .await
        .expect_err("ES384 vs P-256");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
    let token = sign(Algorithm::ES256, &ec_key(P256_KEY), None, &claims());
    let err = pem_verifier(P384_PUB)
        .verify_connection(&token)
        .await
        .expect_err("ES256 vs P-384");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn alg_none_is_refused_whatever_the_key() {
    let verifiers = [
        secret_verifier(),
        pem_verifier(RSA1_PUB),
        pem_verifier(ED1_PUB),
    ];
    for alg in ["none", "None", "NONE"] {
        for signature in ["", "c2ln"] {
            let token = raw_token(
                &json!({"alg": alg, "typ": "JWT"}),
                &json!({"sub": "admin"}),
                signature,
            );
            for v in &verifiers {
                let err = v.verify_connection(&token).await.expect_err("unsigned");
                assert!(
                    matches!(err, TokenError::AlgorithmNotAllowed { .. }),
                    "{alg} {v:?}: {err:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn unknown_algorithms_and_critical_headers_are_refused() {
    let token = raw_token(&json!({"alg": "HS1024"}), &json!({}), "c2ln");
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("unknown alg");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );

    let token = raw_token(
        &json!({"alg": "HS256", "crit": ["exp"]}),
        &json!({}),
        "c2ln",
    );
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("crit");
    assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");

    let token = raw_token(&json!({"typ": "JWT"}), &json!({}), "c2ln");
    let err = secret_verifier()
        .verify_connection(&token)
        .await
        .expect_err("no alg");
    assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn listed_ps_algorithm_works_with_an_rsa_key() {
    let config = TokenConfig {
        algorithms: vec![Algorithm::PS256],
        ..TokenConfig::with_public_key(RSA1_PUB)
    };
    let v = verifier(config);
    let token = sign(Algorithm::PS256, &rsa_key(RSA1_KEY), None, &claims());
    v.verify_connection(&token).await.expect("PS256 listed");
    let token = sign(Algorithm::RS256, &rsa_key(RSA1_KEY), None, &claims());
    let err = v
        .verify_connection(&token)
        .await
        .expect_err("RS256 not listed");
    assert!(
        matches!(err, TokenError::AlgorithmNotAllowed { .. }),
        "{err:?}"
    );
}

#[test]
fn algorithms_of_another_key_type_are_a_config_error() {
    for (pem, alg) in [
        (RSA1_PUB, Algorithm::HS256),
        (RSA1_PUB, Algorithm::ES256),
        (P256_PUB, Algorithm::ES384),
        (ED1_PUB, Algorithm::RS256),
    ] {
        let config = TokenConfig {
            algorithms: vec![alg],
            ..TokenConfig::with_public_key(pem)
        };
        let err = Verifier::new(&config).expect_err("mismatch");
        assert!(
            matches!(err, ConfigError::AlgorithmMismatch { .. }),
            "{alg:?}: {err:?}"
        );
    }
    // A private key is not a public key.
    let err = Verifier::new(&TokenConfig::with_public_key(RSA1_KEY)).expect_err("private key");
    assert!(matches!(err, ConfigError::InvalidPublicKey), "{err:?}");
}

#[tokio::test]
async fn hmac_token_still_fine_for_the_secret_verifier() {
    // Sanity check that the confusion tests above fail for the right reason.
    let token = sign_hs(Algorithm::HS256, &claims());
    secret_verifier()
        .verify_connection(&token)
        .await
        .expect("valid");
}
