use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kilat_auth::{TokenConfig, Verifier};
use serde_json::Value;

pub(crate) const SECRET: &str = "kilat-test-secret";

pub(crate) const RSA1_KEY: &str = include_str!("../keys/rsa1.key.pem");
pub(crate) const RSA1_PUB: &str = include_str!("../keys/rsa1.pub.pem");
pub(crate) const RSA2_KEY: &str = include_str!("../keys/rsa2.key.pem");
pub(crate) const P256_KEY: &str = include_str!("../keys/p256.key.pem");
pub(crate) const P256_PUB: &str = include_str!("../keys/p256.pub.pem");
pub(crate) const P384_KEY: &str = include_str!("../keys/p384.key.pem");
pub(crate) const P384_PUB: &str = include_str!("../keys/p384.pub.pem");
pub(crate) const ED1_KEY: &str = include_str!("../keys/ed1.key.pem");
pub(crate) const ED1_PUB: &str = include_str!("../keys/ed1.pub.pem");
pub(crate) const ED2_KEY: &str = include_str!("../keys/ed2.key.pem");

pub(crate) fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("sane clock")
}

pub(crate) fn rsa_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test RSA key")
}

pub(crate) fn ec_key(pem: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(pem.as_bytes()).expect("test EC key")
}

pub(crate) fn ed_key(pem: &str) -> EncodingKey {
    EncodingKey::from_ed_pem(pem.as_bytes()).expect("test Ed25519 key")
}

/// Signs arbitrary claims; `kid` goes into the header when given.
pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("test token signs")
}

pub(crate) fn sign_hs(alg: Algorithm, claims: &Value) -> String {
    sign(
        alg,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

pub(crate) fn secret_verifier() -> Verifier {
    Verifier::new(&TokenConfig::with_secret(SECRET)).expect("secret config")
}

pub(crate) fn verifier(config: TokenConfig) -> Verifier {
    Verifier::new(&config).expect("valid test config")
}

/// A token whose header is exactly `header` (any JSON), unsigned.
pub(crate) fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = b64.encode(serde_json::to_vec(header).expect("json"));
    let p = b64.encode(serde_json::to_vec(claims).expect("json"));
    format!("{h}.{p}.{signature}")
}
