//! Publishing to a Pusher Channels server through its HTTP API, as the Pusher server SDKs do:
//! `POST /apps/{app_id}/events` with `auth_key`, `auth_timestamp`, `auth_version`, `body_md5`
//! and `auth_signature` (hex HMAC-SHA256 of `POST\n<path>\n<sorted query>` under the app
//! secret). Written here rather than taken from a crate: the signing is a few lines over `hmac`,
//! `sha2` and `md-5`, and no maintained Rust Pusher SDK covers a keep-alive bench client.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// The app a Pusher bench publishes to (the defaults are `kilat serve --dev`'s and Soketi's
/// default app).
#[derive(Debug, Clone, Args)]
pub(crate) struct PusherOpts {
    /// Pusher app id (the HTTP API's /apps/{id}); with --protocol pusher.
    #[arg(long, default_value = "app-id")]
    pub(crate) pusher_app_id: String,
    /// Pusher app key (signs API calls; the WebSocket URL's /app/{key} is --url's).
    #[arg(long, default_value = "app-key")]
    pub(crate) pusher_key: String,
    /// Pusher app secret.
    #[arg(long, default_value = "app-secret")]
    pub(crate) pusher_secret: String,
}

impl PusherOpts {
    /// The path of the events endpoint, `/apps/{id}/events`.
    pub(crate) fn events_path(&self) -> String {
        format!("/apps/{}/events", self.pusher_app_id)
    }

    /// The signed path and query of a `POST` of `body` to `path`.
    pub(crate) fn signed(&self, path: &str, body: &[u8]) -> String {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.signed_at(path, body, timestamp)
    }

    fn signed_at(&self, path: &str, body: &[u8], timestamp: u64) -> String {
        let md5 = hex::encode(Md5::digest(body));
        // Already in the sorted order the signature needs.
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}",
            self.pusher_key
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.pusher_secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(format!("POST\n{path}\n{query}").as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        format!("{path}?{query}&auth_signature={signature}")
    }
}

/// The body of one event: `data` (the bench payload, a JSON object) as the string Pusher
/// events carry.
pub(crate) fn event_body(channel: &str, data: &str) -> String {
    let data = serde_json::to_string(data).unwrap_or_default();
    format!(r#"{{"name":"bench","channel":"{channel}","data":{data}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature of the example request in Pusher's HTTP API documentation (key
    /// 278d425bdf160c739803, secret 7ad3773142a6692b25b8, timestamp 1353088179).
    #[test]
    fn signs_like_the_documented_example() {
        let opts = PusherOpts {
            pusher_app_id: "3".into(),
            pusher_key: "278d425bdf160c739803".into(),
            pusher_secret: "7ad3773142a6692b25b8".into(),
        };
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(
            opts.signed_at(&opts.events_path(), body, 1_353_088_179),
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn event_data_is_a_json_string() {
        let body = event_body("bench0", r#"{"kb":[1,2,3]}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"], r#"{"kb":[1,2,3]}"#);
        assert_eq!(v["channel"], "bench0");
    }
}
