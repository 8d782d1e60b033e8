use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kilat_auth::{TokenConfig, Verifier};
use proptest::prelude::*;

use crate::common::{ED1_PUB, RSA1_PUB, SECRET};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn verifiers() -> &'static [Verifier] {
    static V: OnceLock<Vec<Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        [
            TokenConfig::with_secret(SECRET),
            TokenConfig::with_public_key(RSA1_PUB),
            TokenConfig::with_public_key(ED1_PUB),
        ]
        .iter()
        .map(|c| Verifier::new(c).expect("config"))
        .collect()
    })
}

/// Runs both verify functions on every verifier; random input must never verify.
fn check(token: &str) {
    runtime().block_on(async {
        for v in verifiers() {
            assert!(
                v.verify_connection(token).await.is_err(),
                "{token:?} verified"
            );
            assert!(
                v.verify_subscription(token, "news").await.is_err(),
                "{token:?} verified"
            );
        }
    });
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// JSON-ish header text: real algorithm names (and `none`) mixed with junk.
fn header_json() -> impl Strategy<Value = String> {
    let alg = prop_oneof![
        Just("HS256".to_owned()),
        Just("RS256".to_owned()),
        Just("EdDSA".to_owned()),
        Just("none".to_owned()),
        ".{0,8}",
    ];
    (alg, proptest::option::of(".{0,8}"), any::<bool>()).prop_map(|(alg, kid, crit)| {
        let mut header = serde_json::json!({ "alg": alg });
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        if crit {
            header["crit"] = serde_json::json!(["x"]);
        }
        header.to_string()
    })
}

/// Claims-ish payload text: valid JSON objects with odd types, or junk.
fn payload_json() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| format!(r#"{{"exp": {n}, "sub": "x", "channel": "news"}}"#)),
        any::<f64>().prop_map(|f| format!(r#"{{"exp": {f}, "nbf": {f}}}"#)),
        Just(r#"{"channels": [1, 2], "info": {"deep": [[[[]]]]}}"#.to_owned()),
        ".{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_string_is_refused_without_panic(token in ".{0,200}") {
        check(&token);
    }

    #[test]
    fn random_bytes_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_base64_segments_are_refused_without_panic(
        segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..5),
    ) {
        let token: Vec<String> = segments.iter().map(|s| b64(s)).collect();
        check(&token.join("."));
    }

    #[test]
    fn plausible_headers_and_payloads_are_refused_without_panic(
        header in header_json(),
        payload in payload_json(),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check(&format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), b64(&signature)));
    }
}
