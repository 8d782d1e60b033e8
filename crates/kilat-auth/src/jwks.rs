//! JWKS: fetch a JSON Web Key Set over HTTP, cache it by `kid`, refresh it sparingly.
//!
//! Refresh policy: the set is fetched on first use; afterwards a token whose `kid` is not in
//! the cache, or a cache older than `jwks_max_age`, triggers a refetch, but never more than
//! one fetch per `jwks_min_refresh_interval` (successful or not). Concurrent misses wait for
//! the one fetch in flight instead of starting their own. A failed fetch keeps the previous
//! keys, so a JWKS outage only affects tokens signed with keys we have never seen.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::config::{ConfigError, TokenConfig};
use crate::error::TokenError;
use crate::verify::{JWKS_ALLOWED, RSA_DEFAULT};

/// A JWKS larger than this is refused: real ones hold a handful of keys (a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Why the JWKS could not be fetched; the source of [`TokenError::JwksUnavailable`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The fetch (connect, request and body) took longer than `jwks_timeout_ms`.
    #[error("JWKS fetch timed out")]
    Timeout,
    /// TCP connect failed.
    #[error("cannot connect to the JWKS endpoint")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake with an `https://` endpoint failed (feature `https`).
    #[cfg(feature = "https")]
    #[error("TLS handshake with the JWKS endpoint failed")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP error talking to the JWKS endpoint")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad host or path in the URL).
    #[error("cannot build the JWKS request")]
    Request(#[from] http::Error),
    /// The endpoint answered with a non-2xx status.
    #[error("JWKS endpoint answered HTTP {0}")]
    Status(u16),
    /// The body could not be read or was larger than 1 MiB.
    #[error("cannot read the JWKS body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The body is not a JWKS document.
    #[error("JWKS body is not a key set")]
    Json(#[from] serde_json::Error),
    /// The last fetch failed less than `jwks_min_refresh_interval` ago, so no new fetch was
    /// attempted.
    #[error("JWKS fetch failed recently; waiting before retrying")]
    Backoff,
}

/// One usable key of the set, with the algorithms it may verify.
#[derive(Debug)]
pub(crate) struct JwkKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithms: Vec<Algorithm>,
}

#[derive(Debug, Default)]
struct KeySet {
    keys: HashMap<String, Arc<JwkKey>>,
    /// When this set was fetched; `None` until the first successful fetch. Also serves as the
    /// set's identity: a waiter compares it to learn whether someone else refreshed meanwhile.
    fetched_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct RefreshState {
    /// Start of the last fetch attempt, successful or not: the rate limit counts from here.
    last_attempt: Option<Instant>,
    /// Whether that attempt failed, so that callers within the interval get a temporary error
    /// rather than "unknown kid".
    last_failed: bool,
}

/// Where to send the GET, split out of the URL once at startup.
#[derive(Debug)]
struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    path: String,
    /// Set for `https://` URLs (feature `https`).
    #[cfg(feature = "https")]
    tls: Option<Tls>,
}

/// The TLS client for an `https://` endpoint, built once at startup.
#[cfg(feature = "https")]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: tokio_rustls::rustls::pki_types::ServerName<'static>,
}

#[cfg(feature = "https")]
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "https")]
fn tls_client(host: &str) -> Option<Tls> {
    use tokio_rustls::rustls;
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned()).ok()?;
    Some(Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// The cached key set plus what is needed to refetch it.
#[derive(Debug)]
pub(crate) struct JwksCache {
    endpoint: Endpoint,
    timeout: Duration,
    min_refresh: Duration,
    max_age: Duration,
    /// `[token] algorithms`, empty for "whatever the key type allows".
    configured: Vec<Algorithm>,
    /// Read on every verification; written only after a successful fetch.
    keys: RwLock<Arc<KeySet>>,
    /// Held for the whole fetch so that concurrent misses coalesce into one request.
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl JwksCache {
    pub(crate) fn new(url: &str, config: &TokenConfig) -> Result<Self, ConfigError> {
        let bad_url = || ConfigError::InvalidJwksUrl {
            url: url.to_owned(),
        };
        let uri = http::Uri::from_str(url).map_err(|_| bad_url())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            #[cfg(feature = "https")]
            Some("https") => true,
            _ => return Err(bad_url()),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad_url)?;
        let authority = uri.authority().ok_or_else(bad_url)?.as_str().to_owned();
        // `[::1]` in a URL, `::1` for a socket address and a TLS server name.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let endpoint = Endpoint {
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
            #[cfg(feature = "https")]
            tls: if https {
                Some(tls_client(&host).ok_or_else(bad_url)?)
            } else {
                None
            },
            host,
        };
        Ok(JwksCache {
            endpoint,
            timeout: config.jwks_timeout(),
            min_refresh: Duration::from_secs(config.jwks_min_refresh_interval),
            max_age: Duration::from_secs(config.jwks_max_age),
            configured: config.algorithms.clone(),
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        })
    }

    /// Whether any key of this set may verify `alg`: checked before the `kid` lookup so that
    /// tokens with an algorithm we would refuse anyway never trigger a fetch.
    pub(crate) fn may_verify(&self, alg: Algorithm) -> bool {
        JWKS_ALLOWED.contains(&alg)
            && (self.configured.is_empty() || self.configured.contains(&alg))
    }

    /// Fetches the set now unless the rate limit forbids it; for warming the cache at startup.
    pub(crate) async fn prefetch(&self) -> Result<(), TokenError> {
        let seen = self.snapshot().fetched_at;
        let state = self.refresh.lock().await;
        self.refresh_locked(state, seen).await
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The key named `kid`, fetching the set if it is unknown or stale (subject to the
    /// refresh rate limit).
    ///
    /// # Errors
    /// [`TokenError::UnknownKid`] when no key has this id even after the refresh (or the
    /// refresh was not due yet); [`TokenError::JwksUnavailable`] when the fetch failed and no
    /// cached key fits.
    pub(crate) async fn key_for(&self, kid: &str) -> Result<Arc<JwkKey>, TokenError> {
        let set = self.snapshot();
        let cached = set.keys.get(kid);
        let fresh = set.fetched_at.is_some_and(|at| at.elapsed() < self.max_age);
        if let (Some(key), true) = (cached, fresh) {
            return Ok(Arc::clone(key));
        }
        let state = match (cached, self.refresh.try_lock()) {
            // A stale key while another task refreshes: use it rather than queue up.
            (Some(key), Err(_)) => return Ok(Arc::clone(key)),
            (_, Ok(state)) => state,
            (None, Err(_)) => self.refresh.lock().await,
        };
        if let Err(err) = self.refresh_locked(state, set.fetched_at).await {
            // A stale key beats no key while the endpoint is down.
            return match cached {
                Some(key) => Ok(Arc::clone(key)),
                None => Err(err),
            };
        }
        self.snapshot()
            .keys
            .get(kid)
            .map(Arc::clone)
            .ok_or_else(|| TokenError::UnknownKid(kid.to_owned()))
    }

    /// Fetches the set unless someone else did since we looked (`seen`) or the last attempt
    /// was too recent. `Ok` means "look again", not "the set changed".
    async fn refresh_locked(
        &self,
        mut state: tokio::sync::MutexGuard<'_, RefreshState>,
        seen: Option<Instant>,
    ) -> Result<(), TokenError> {
        if self.snapshot().fetched_at != seen {
            return Ok(());
        }
        if let Some(last) = state.last_attempt
            && last.elapsed() < self.min_refresh
        {
            return if state.last_failed {
                Err(TokenError::JwksUnavailable(JwksError::Backoff))
            } else {
                Ok(())
            };
        }
        state.last_attempt = Some(Instant::now());
        let fetched = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .unwrap_or(Err(JwksError::Timeout))
            .and_then(|body| parse_key_set(&body, &self.configured));
        state.last_failed = fetched.is_err();
        let keys = fetched?;
        tracing::debug!(keys = keys.len(), "JWKS refreshed");
        let set = KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        };
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
        Ok(())
    }

    /// One GET over a fresh HTTP/1.1 connection. Refreshes are rare (rate limited), so a
    /// connection pool would only add state.
    async fn fetch(&self) -> Result<Bytes, JwksError> {
        let stream = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
            .await
            .map_err(JwksError::Connect)?;
        #[cfg(feature = "https")]
        if let Some(tls) = &self.endpoint.tls {
            let stream = tls
                .connector
                .connect(tls.server_name.clone(), stream)
                .await
                .map_err(JwksError::Tls)?;
            return self.get(stream).await;
        }
        self.get(stream).await
    }

    async fn get<S>(&self, io: S) -> Result<Bytes, JwksError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        // The connection future drives the socket; it ends when `sender` is dropped. The
        // guard also ends it if this future is dropped by the timeout.
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "JWKS connection ended with an error");
            }
        }));
        let request = http::Request::get(self.endpoint.path.as_str())
            .header(http::header::HOST, self.endpoint.authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(JwksError::Body)?
            .to_bytes();
        drop(driver);
        Ok(body)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS body, keeping the keys we can use and skipping (with a debug log) the rest:
/// one exotic key must not take the whole set down.
fn parse_key_set(
    body: &[u8],
    configured: &[Algorithm],
) -> Result<HashMap<String, Arc<JwkKey>>, JwksError> {
    let raw: RawKeySet = serde_json::from_slice(body)?;
    let mut keys = HashMap::with_capacity(raw.keys.len());
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(err) => {
                tracing::debug!(error = %err, "JWKS entry skipped: not a JWK");
                continue;
            }
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            tracing::debug!("JWKS entry skipped: no kid");
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let mut algorithms = jwk_algorithms(&jwk);
        if !configured.is_empty() {
            algorithms.retain(|alg| configured.contains(alg));
        }
        if algorithms.is_empty() {
            tracing::debug!(kid, "JWKS entry skipped: no allowed algorithm for this key");
            continue;
        }
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => {
                keys.insert(kid, Arc::new(JwkKey { key, algorithms }));
            }
            Err(err) => tracing::debug!(kid, error = %err, "JWKS entry skipped: bad key"),
        }
    }
    Ok(keys)
}

/// The algorithms a JWK may verify: its own `alg` if it names one (and it fits the key type),
/// otherwise every algorithm of its key type. Symmetric (`oct`) keys get none: a shared secret
/// has no business in a published key set, and accepting one would reopen algorithm confusion.
fn jwk_algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_DEFAULT,
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => &[],
    };
    match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(named) => match Algorithm::from_str(&named.to_string()) {
            Ok(alg) if by_type.contains(&alg) => vec![alg],
            // An RSA key may name a PS* algorithm, which the type default leaves out.
            Ok(alg)
                if matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
                    && alg.family() == AlgorithmFamily::Rsa =>
            {
                vec![alg]
            }
            _ => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(url: &str) -> Result<JwksCache, ConfigError> {
        JwksCache::new(url, &TokenConfig::with_jwks_url(url))
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(cache("http://127.0.0.1:8080/.well-known/jwks.json").is_ok());
        assert!(cache("http://[::1]/keys").is_ok());
        assert_eq!(
            cache("https://example.com/jwks").is_ok(),
            cfg!(feature = "https")
        );
        assert!(cache("ftp://example.com/jwks").is_err());
        assert!(cache("/jwks").is_err());
        assert!(cache("not a url").is_err());
    }

    #[test]
    fn endpoint_keeps_path_query_and_default_port() {
        let c = cache("http://localhost/k?x=1").expect("valid url");
        assert_eq!(c.endpoint.port, 80);
        assert_eq!(c.endpoint.path, "/k?x=1");
        assert_eq!(c.endpoint.authority, "localhost");
    }

    #[test]
    fn unusable_entries_are_skipped_not_fatal() {
        let body = br#"{"keys": [
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "weird", "kid": "w"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let keys = parse_key_set(body, &[]).expect("valid set");
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ed"]);
        assert_eq!(keys["ed"].algorithms, vec![Algorithm::EdDSA]);
        assert!(parse_key_set(br#"{"keys": "no"}"#, &[]).is_err());
        assert!(parse_key_set(&[0xff, 0x00], &[]).is_err());
    }
}
