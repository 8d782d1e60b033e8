//! Pusher's HMAC-SHA256 signatures: channel authorisations (`key:signature` over
//! `socket_id:channel[:channel_data]`), user sign-in (over `socket_id::user::user_data`) and
//! HTTP API requests (over `METHOD\nPATH\nsorted query`). Every comparison is constant time
//! (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

/// The hex HMAC-SHA256 of `message` under `secret` (what the server SDKs compute; webhooks).
pub(crate) fn sign(secret: &str, message: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC of `message` under `secret`, in constant time.
pub(crate) fn verify(secret: &str, message: &[u8], signature_hex: &str) -> bool {
    // A signature of the wrong length or not hex cannot match; refusing it early reveals only
    // that (its length), not anything about the expected value.
    let Ok(signature) = hex::decode(signature_hex) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(message);
    mac.verify_slice(&signature).is_ok()
}

/// Checks a client's `auth` field (`<app key>:<hex signature>`) over `parts` joined with `:`.
pub(crate) fn verify_client_auth(key: &str, secret: &str, auth: &str, parts: &[&str]) -> bool {
    let Some((auth_key, signature)) = auth.split_once(':') else {
        return false;
    };
    if auth_key != key {
        return false;
    }
    verify(secret, parts.join(":").as_bytes(), signature)
}

/// The hex MD5 of a request body (`body_md5`).
pub(crate) fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Why a signed API request is refused (Pusher answers these with 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unsigned {
    Missing(&'static str),
    UnknownKey,
    Expired,
    BadVersion,
    BadBodyMd5,
    BadSignature,
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::Missing(what) => write!(f, "Missing parameter: {what}"),
            Unsigned::UnknownKey => write!(f, "Unknown auth_key"),
            Unsigned::Expired => write!(
                f,
                "Timestamp expired: auth_timestamp must be within 600 s of the server's clock"
            ),
            Unsigned::BadVersion => write!(f, "Unsupported auth_version: use 1.0"),
            Unsigned::BadBodyMd5 => write!(f, "Invalid body_md5: the MD5 of the body differs"),
            Unsigned::BadSignature => write!(
                f,
                "Invalid signature: sign METHOD\\nPATH\\nsorted query (without auth_signature) with the app secret"
            ),
        }
    }
}

/// Checks a signed HTTP API request: `query` are the decoded query pairs, `now` Unix seconds.
///
/// # Errors
/// What is wrong, for a 401 answer.
pub(crate) fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &[u8],
    now: u64,
) -> Result<(), Unsigned> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let auth_key = get("auth_key").ok_or(Unsigned::Missing("auth_key"))?;
    let timestamp = get("auth_timestamp").ok_or(Unsigned::Missing("auth_timestamp"))?;
    let version = get("auth_version").ok_or(Unsigned::Missing("auth_version"))?;
    let signature = get("auth_signature").ok_or(Unsigned::Missing("auth_signature"))?;
    if auth_key != key {
        return Err(Unsigned::UnknownKey);
    }
    if version != "1.0" {
        return Err(Unsigned::BadVersion);
    }
    let timestamp: u64 = timestamp.parse().map_err(|_| Unsigned::Expired)?;
    if timestamp.abs_diff(now) > 600 {
        return Err(Unsigned::Expired);
    }
    if !body.is_empty() {
        let md5 = get("body_md5").ok_or(Unsigned::Missing("body_md5"))?;
        if md5 != body_md5(body) {
            return Err(Unsigned::BadBodyMd5);
        }
    }
    let mut pairs: Vec<(String, &str)> = query
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    pairs.sort();
    let sorted: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let message = format!("{method}\n{path}\n{}", sorted.join("&"));
    if verify(secret, message.as_bytes(), signature) {
        Ok(())
    } else {
        Err(Unsigned::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Pusher's published authentication docs (channel `private-foobar`,
    /// socket `1234.1234`, key `278d425bdf160c739803`, secret `7ad3773142a6692b25b8`).
    #[test]
    fn private_channel_signature_matches_the_documented_example() {
        let signature = sign("7ad3773142a6692b25b8", b"1234.1234:private-foobar");
        assert_eq!(
            signature,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(verify_client_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            &format!("278d425bdf160c739803:{signature}"),
            &["1234.1234", "private-foobar"],
        ));
        assert!(!verify_client_auth(
            "278d425bdf160c739803",
            "7ad3773142a6692b25b8",
            &format!("278d425bdf160c739803:{signature}"),
            &["1234.1235", "private-foobar"],
        ));
        assert!(!verify("s", b"m", "zz"));
        assert!(!verify("s", b"m", ""));
    }

    #[test]
    fn request_signature_checks_key_time_version_md5_and_signature() {
        let body = br#"{"name":"e","channel":"c","data":"{}"}"#;
        let mut query = vec![
            ("auth_key".to_owned(), "k".to_owned()),
            ("auth_timestamp".to_owned(), "1000".to_owned()),
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("body_md5".to_owned(), body_md5(body)),
        ];
        let message = format!(
            "POST\n/apps/1/events\nauth_key=k&auth_timestamp=1000&auth_version=1.0&body_md5={}",
            body_md5(body)
        );
        query.push(("auth_signature".to_owned(), sign("s", message.as_bytes())));
        let check = |q: &[(String, String)], body: &[u8], now| {
            verify_request("k", "s", "POST", "/apps/1/events", q, body, now)
        };
        assert_eq!(check(&query, body, 1000), Ok(()));
        assert_eq!(check(&query, body, 1601), Err(Unsigned::Expired));
        assert_eq!(check(&query, b"{}", 1000), Err(Unsigned::BadBodyMd5));
        let mut wrong = query.clone();
        wrong[0].1 = "other".into();
        assert_eq!(check(&wrong, body, 1000), Err(Unsigned::UnknownKey));
        let mut tampered = query.clone();
        tampered.last_mut().expect("signature").1 = sign("s", b"something else");
        assert_eq!(check(&tampered, body, 1000), Err(Unsigned::BadSignature));
    }
}
