//! [`HttpBackend`]: the core's [`Backend`] seam over HTTP. Each configured hook POSTs a JSON
//! event to its URL and reads a JSON reply (`docs/proxy.md` is the contract).
//!
//! Design decisions:
//! - One HTTP/1.1 connection per call (hyper's client connection, no pool): hooks run at
//!   connect, subscribe and on explicit commands, not per publication, and a fresh connection
//!   never trips over a backend that closed an idle one.
//! - The whole call (connect, write, read the body) runs under one timeout; any failure is the
//!   same client error, 503 "backend unavailable" (temporary), and one warn line naming the hook
//!   and the kind of failure, never the headers (they carry cookies).
//! - `https://` URLs go through rustls (ring) with certificate and host name verification
//!   against the Mozilla roots (webpki-roots) plus `proxy.ca_file` for a private CA. There is
//!   deliberately no option to skip verification: the hooks carry users' cookies.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use kilat_core::engine::BoxFuture;
use kilat_core::proxy::{
    ConnectEvent, ConnectReply, PublishEvent, PublishReply, RefreshEvent, RefreshReply, RpcEvent,
    RpcReply, SendEvent, SubRefreshEvent, SubRefreshReply, SubscribeEvent, SubscribeReply,
};
use kilat_core::{Backend, Credentials, Hook, RequestHeaders};
use kilat_protocol::{ClientError, Disconnect, DisconnectCode, ErrorCode, RawJson};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;

use crate::config::ProxyConfig;

/// Largest backend reply body read, in bytes.
const MAX_REPLY: usize = 1024 * 1024;

/// A `[proxy]` URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyConfigError {
    /// Not an absolute `http://` or `https://host[:port]/path` URL.
    #[error("proxy.{key} = {url:?} is not an http:// or https:// URL")]
    BadUrl {
        /// The config key.
        key: &'static str,
        /// Its value.
        url: String,
    },
    /// A `forward_headers` entry is not a header name.
    #[error("proxy.forward_headers: {0:?} is not a header name")]
    BadHeader(String),
    /// `proxy.ca_file` cannot be read or holds no usable certificate.
    #[error("proxy.ca_file {}: {reason} (hint: a PEM file with one or more CERTIFICATE blocks)", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// One hook's endpoint, parsed once.
#[derive(Debug, Clone)]
struct Endpoint {
    uri: Uri,
    /// `host[:port]` to dial and to send as `Host`.
    authority: String,
    /// For `https://`: the name the certificate must carry (host name or IP address).
    tls: Option<rustls::pki_types::ServerName<'static>>,
}

impl Endpoint {
    fn parse(key: &'static str, url: &str) -> Result<Endpoint, ProxyConfigError> {
        let bad = || ProxyConfigError::BadUrl {
            key,
            url: url.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:{}", authority.host(), if https { 443 } else { 80 }),
        };
        let tls = if https {
            // `[::1]` in a URL, `::1` as a server name.
            let host = uri.host().ok_or_else(bad)?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| bad())?)
        } else {
            None
        };
        Ok(Endpoint {
            uri,
            authority,
            tls,
        })
    }
}

/// The backend hooks of the `[proxy]` section.
#[derive(Debug)]
pub(crate) struct HttpBackend {
    connect: Option<Endpoint>,
    subscribe: Option<Endpoint>,
    publish: Option<Endpoint>,
    rpc: Option<Endpoint>,
    send: Option<Endpoint>,
    refresh: Option<Endpoint>,
    sub_refresh: Option<Endpoint>,
    /// Bound on each whole call.
    timeout: Duration,
    /// Lowercase handshake header names sessions keep and every call forwards.
    forward_headers: Box<[Box<str>]>,
    /// The TLS client for `https://` hooks (built only when one is configured).
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// The TLS client of the hooks: the Mozilla roots, plus the CAs of `ca_file`.
fn tls_client(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ProxyConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |reason: String| ProxyConfigError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no certificate in it".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyConfigError::CaFile {
            path: ca_file.map(Path::to_owned).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl HttpBackend {
    /// The backend for `config`, or `None` when no hook is configured.
    pub(crate) fn from_config(
        config: &ProxyConfig,
    ) -> Result<Option<HttpBackend>, ProxyConfigError> {
        let parse = |key: &'static str, url: &Option<String>| {
            url.as_deref()
                .filter(|url| !url.is_empty())
                .map(|url| Endpoint::parse(key, url))
                .transpose()
        };
        let backend = HttpBackend {
            connect: parse("connect_url", &config.connect_url)?,
            subscribe: parse("subscribe_url", &config.subscribe_url)?,
            publish: parse("publish_url", &config.publish_url)?,
            rpc: parse("rpc_url", &config.rpc_url)?,
            send: parse("send_url", &config.send_url)?,
            refresh: parse("refresh_url", &config.refresh_url)?,
            sub_refresh: parse("sub_refresh_url", &config.sub_refresh_url)?,
            timeout: config.timeout,
            forward_headers: config
                .forward_headers
                .iter()
                .map(|name| {
                    HeaderName::from_bytes(name.as_bytes())
                        .map(|name| Box::from(name.as_str()))
                        .map_err(|_| ProxyConfigError::BadHeader(name.clone()))
                })
                .collect::<Result<_, _>>()?,
            tls: None,
        };
        let mut backend = backend;
        let endpoints = backend.endpoints();
        let https = endpoints
            .iter()
            .any(|e| e.as_ref().is_some_and(|e| e.tls.is_some()));
        let any = endpoints.iter().any(|e| e.is_some());
        if https || config.ca_file.is_some() {
            backend.tls = Some(tls_client(config.ca_file.as_deref())?);
        }
        Ok(any.then_some(backend))
    }

    /// Every hook's endpoint, configured or not.
    fn endpoints(&self) -> [&Option<Endpoint>; 7] {
        [
            &self.connect,
            &self.subscribe,
            &self.publish,
            &self.rpc,
            &self.send,
            &self.refresh,
            &self.sub_refresh,
        ]
    }

    fn endpoint(&self, hook: Hook) -> Option<&Endpoint> {
        match hook {
            Hook::Connect => self.connect.as_ref(),
            Hook::Subscribe => self.subscribe.as_ref(),
            Hook::Publish => self.publish.as_ref(),
            Hook::Rpc => self.rpc.as_ref(),
            Hook::Send => self.send.as_ref(),
            Hook::Refresh => self.refresh.as_ref(),
            Hook::SubRefresh => self.sub_refresh.as_ref(),
            _ => None,
        }
    }

    /// POSTs `body` to the hook's URL and decodes the reply envelope.
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        hook: Hook,
        body: &impl Serialize,
        headers: &RequestHeaders,
        client: &str,
        user: Option<&str>,
    ) -> Result<Envelope<T>, ClientError> {
        let bytes = self.call_raw(hook, body, headers, client, user).await?;
        // A pretty-printed answer's raw `data` and `info` must not split the frames they go into.
        serde_json::from_slice(&crate::body::one_line_json(&bytes)).map_err(|error| {
            tracing::warn!(hook = ?hook, %error, "backend hook answered malformed JSON");
            unavailable()
        })
    }

    /// [`Self::call`] for hooks that only accept or refuse: the result, or the refusal as a
    /// client error.
    async fn call_for_result<T: for<'de> Deserialize<'de>>(
        &self,
        hook: Hook,
        body: &impl Serialize,
        headers: &RequestHeaders,
        client: &str,
        user: Option<&str>,
    ) -> Result<T, ClientError> {
        let envelope: Envelope<T> = self.call(hook, body, headers, client, user).await?;
        envelope.into_result(hook)
    }

    /// POSTs `body` to the hook's URL and returns the reply body of a 2xx answer.
    async fn call_raw(
        &self,
        hook: Hook,
        body: &impl Serialize,
        headers: &RequestHeaders,
        client: &str,
        user: Option<&str>,
    ) -> Result<Bytes, ClientError> {
        let Some(endpoint) = self.endpoint(hook) else {
            return Err(unavailable());
        };
        let body = serde_json::to_vec(body).map_err(|_| unavailable())?;
        let request = build_request(endpoint, body, headers, client, user);
        let reply =
            tokio::time::timeout(self.timeout, post(endpoint, self.tls.as_ref(), request)).await;
        match reply {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(failure)) => {
                tracing::warn!(hook = ?hook, %failure, "backend hook failed");
                Err(unavailable())
            }
            Err(_) => {
                tracing::warn!(hook = ?hook, timeout_s = self.timeout.as_secs_f64(), "backend hook timed out");
                Err(unavailable())
            }
        }
    }
}

fn unavailable() -> ClientError {
    ClientError::new(ErrorCode::UNAVAILABLE, "backend unavailable")
}

fn build_request(
    endpoint: &Endpoint,
    body: Vec<u8>,
    headers: &RequestHeaders,
    client: &str,
    user: Option<&str>,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::from(body)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = endpoint
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    let map = request.headers_mut();
    for (name, value) in headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.append(name, value);
        }
    }
    if let Ok(host) = HeaderValue::from_str(&endpoint.authority) {
        map.insert(HOST, host);
    }
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(client) = HeaderValue::from_str(client) {
        map.insert("x-kilat-client", client);
    }
    if let Some(Ok(user)) = user.map(HeaderValue::from_str) {
        map.insert("x-kilat-user", user);
    }
    request
}

/// Why one backend call failed: logged where the hook is called; the client gets 503.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// No TCP connection to the backend.
    #[error("connect: {}", .0.kind())]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed (an unknown issuer, a name mismatch, an expired certificate).
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// Sending the request or reading the response head failed.
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
    /// The backend answered with a status other than 2xx.
    #[error("status {}", .0.as_u16())]
    Status(http::StatusCode),
    /// Reading the body failed or it was larger than `MAX_REPLY`.
    #[error("body: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// One HTTP/1.1 POST on a connection of its own, over TLS for an `https://` endpoint.
async fn post(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    request: Request<Full<Bytes>>,
) -> Result<Bytes, CallError> {
    let stream = TcpStream::connect(&endpoint.authority)
        .await
        .map_err(CallError::Connect)?;
    let _ = stream.set_nodelay(true);
    match (&endpoint.tls, tls) {
        (Some(name), Some(config)) => {
            let stream = TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .map_err(CallError::Tls)?;
            exchange(stream, request).await
        }
        (Some(_), None) => Err(CallError::Tls(std::io::Error::other(
            "no TLS client configured",
        ))),
        (None, _) => exchange(stream, request).await,
    }
}

/// Sends `request` on `io` and reads the answer.
async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Bytes, CallError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(CallError::Handshake)?;
    let call = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(CallError::Request)?;
        let status = response.status();
        if !status.is_success() {
            return Err(CallError::Status(status));
        }
        let body = Limited::new(response.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(CallError::Body)?;
        Ok(body.to_bytes())
    };
    // The connection is driven here, not in a task of its own, so a timed-out call drops it
    // (and its socket) instead of leaving it to wait for a backend that never answers.
    tokio::pin!(call);
    tokio::select! {
        biased;
        result = &mut call => return result,
        _ = connection => {}
    }
    // The backend closed the connection: what it sent (or the error) is with the call.
    call.await
}

/// Picks the headers of a handshake request the node's backend wants forwarded (none without a
/// backend, so connections keep nothing).
pub(crate) fn pick_headers(node: &kilat_core::Node, headers: &HeaderMap) -> RequestHeaders {
    let Some(backend) = node.backend() else {
        return RequestHeaders::default();
    };
    backend
        .forward_headers()
        .iter()
        .flat_map(|name| {
            headers
                .get_all(name.as_ref())
                .iter()
                .filter_map(move |value| {
                    value
                        .to_str()
                        .ok()
                        .map(|value| (name.clone(), Box::from(value)))
                })
        })
        .collect()
}

/// A backend reply: exactly one of the three is expected.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    result: Option<T>,
    error: Option<ErrorBody>,
    disconnect: Option<DisconnectBody>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: u32,
    #[serde(default)]
    message: String,
    temporary: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DisconnectBody {
    code: u16,
    #[serde(default)]
    reason: String,
}

impl ErrorBody {
    fn into_client_error(self) -> ClientError {
        let mut error = ClientError::new(ErrorCode(self.code), self.message);
        if let Some(temporary) = self.temporary {
            error.temporary = temporary;
        }
        error
    }
}

impl DisconnectBody {
    fn into_disconnect(self) -> Disconnect {
        Disconnect::new(DisconnectCode(self.code), self.reason)
    }
}

impl<T> Envelope<T> {
    /// The result, or the refusal as a client error. A `disconnect` where the hook cannot
    /// disconnect is a refusal with 403.
    fn into_result(self, hook: Hook) -> Result<T, ClientError> {
        if let Some(error) = self.error {
            return Err(error.into_client_error());
        }
        if let Some(disconnect) = self.disconnect {
            return Err(ClientError::new(
                ErrorCode::PERMISSION_DENIED,
                disconnect.reason,
            ));
        }
        self.result.ok_or_else(|| {
            tracing::warn!(hook = ?hook, "backend hook answered without result, error or disconnect");
            unavailable()
        })
    }
}

#[derive(Serialize)]
struct ConnectBody<'a> {
    client: &'a str,
    transport: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawJson>,
}

#[derive(Deserialize)]
struct ConnectResultBody {
    #[serde(default)]
    user: String,
    info: Option<RawJson>,
    #[serde(default)]
    channels: Vec<String>,
    expire_at: Option<u64>,
}

#[derive(Serialize)]
struct ChannelBody<'a> {
    client: &'a str,
    user: &'a str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawJson>,
}

#[derive(Deserialize)]
struct SubscribeResultBody {
    info: Option<RawJson>,
}

#[derive(Deserialize)]
struct DataResultBody {
    data: Option<RawJson>,
}

#[derive(Serialize)]
struct RpcBody<'a> {
    client: &'a str,
    user: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawJson>,
}

#[derive(Serialize)]
struct SendBody<'a> {
    client: &'a str,
    user: &'a str,
    data: &'a RawJson,
}

#[derive(Serialize)]
struct RefreshBody<'a> {
    client: &'a str,
    user: &'a str,
}

#[derive(Serialize)]
struct SubRefreshBody<'a> {
    client: &'a str,
    user: &'a str,
    channel: &'a str,
}

#[derive(Debug, Deserialize)]
struct SubRefreshResultBody {
    expire_at: Option<u64>,
    #[serde(default)]
    expired: bool,
}

#[derive(Deserialize)]
struct RefreshResultBody {
    expire_at: Option<u64>,
    info: Option<RawJson>,
}

impl Backend for HttpBackend {
    fn handles(&self, hook: Hook) -> bool {
        self.endpoint(hook).is_some()
    }

    fn forward_headers(&self) -> &[Box<str>] {
        &self.forward_headers
    }

    fn connect(&self, event: ConnectEvent) -> BoxFuture<'_, Result<ConnectReply, ClientError>> {
        Box::pin(async move {
            let body = ConnectBody {
                client: &event.client,
                transport: event.transport,
                name: event.name.as_deref(),
                version: event.version.as_deref(),
                data: event.data.as_ref(),
            };
            let envelope: Envelope<ConnectResultBody> = self
                .call(Hook::Connect, &body, &event.headers, &event.client, None)
                .await?;
            if let Some(disconnect) = envelope.disconnect {
                return Ok(ConnectReply::Disconnect(disconnect.into_disconnect()));
            }
            let result = envelope.into_result(Hook::Connect)?;
            Ok(ConnectReply::Accept(Credentials {
                user: result.user,
                info: result.info,
                expires_at: result.expire_at,
                channels: result.channels,
                token_id: None,
            }))
        })
    }

    fn subscribe(
        &self,
        event: SubscribeEvent,
    ) -> BoxFuture<'_, Result<SubscribeReply, ClientError>> {
        Box::pin(async move {
            let body = ChannelBody {
                client: &event.client,
                user: &event.user,
                channel: &event.channel,
                data: event.data.as_ref(),
            };
            let result: SubscribeResultBody = self
                .call_for_result(
                    Hook::Subscribe,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await?;
            Ok(SubscribeReply { info: result.info })
        })
    }

    fn publish(&self, event: PublishEvent) -> BoxFuture<'_, Result<PublishReply, ClientError>> {
        Box::pin(async move {
            let body = ChannelBody {
                client: &event.client,
                user: &event.user,
                channel: &event.channel,
                data: Some(&event.data),
            };
            let result: DataResultBody = self
                .call_for_result(
                    Hook::Publish,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await?;
            Ok(PublishReply { data: result.data })
        })
    }

    fn rpc(&self, event: RpcEvent) -> BoxFuture<'_, Result<RpcReply, ClientError>> {
        Box::pin(async move {
            let body = RpcBody {
                client: &event.client,
                user: &event.user,
                method: &event.method,
                data: event.data.as_ref(),
            };
            let result: DataResultBody = self
                .call_for_result(
                    Hook::Rpc,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await?;
            let data = match result.data {
                Some(data) => data,
                None => serde_json::value::RawValue::from_string("null".to_owned())
                    .map_err(|_| unavailable())?,
            };
            Ok(RpcReply { data })
        })
    }

    fn send(&self, event: SendEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let body = SendBody {
                client: &event.client,
                user: &event.user,
                data: &event.data,
            };
            // The reply is not used; failures are logged by `call`.
            let _ = self
                .call_raw(
                    Hook::Send,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await;
        })
    }

    fn refresh(&self, event: RefreshEvent) -> BoxFuture<'_, Result<RefreshReply, ClientError>> {
        Box::pin(async move {
            let body = RefreshBody {
                client: &event.client,
                user: &event.user,
            };
            let envelope: Envelope<RefreshResultBody> = self
                .call(
                    Hook::Refresh,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await?;
            if let Some(disconnect) = envelope.disconnect {
                return Ok(RefreshReply::Disconnect(disconnect.into_disconnect()));
            }
            if let Some(error) = envelope.error {
                // A refusal ends the connection as an expired one would.
                return Ok(RefreshReply::Disconnect(Disconnect::new(
                    DisconnectCode::TOKEN_EXPIRED,
                    error.message,
                )));
            }
            let result = envelope.into_result(Hook::Refresh)?;
            Ok(RefreshReply::Extend {
                expires_at: result.expire_at,
                info: result.info,
            })
        })
    }

    fn sub_refresh(
        &self,
        event: SubRefreshEvent,
    ) -> BoxFuture<'_, Result<SubRefreshReply, ClientError>> {
        Box::pin(async move {
            let body = SubRefreshBody {
                client: &event.client,
                user: &event.user,
                channel: &event.channel,
            };
            let envelope: Envelope<SubRefreshResultBody> = self
                .call(
                    Hook::SubRefresh,
                    &body,
                    &event.headers,
                    &event.client,
                    Some(&event.user),
                )
                .await?;
            // An error or a disconnect answer refuses: the subscription ends (410).
            if envelope.error.is_some() || envelope.disconnect.is_some() {
                return Ok(SubRefreshReply::Refuse);
            }
            let result = envelope.into_result(Hook::SubRefresh)?;
            if result.expired {
                return Ok(SubRefreshReply::Refuse);
            }
            Ok(SubRefreshReply::Extend {
                expires_at: result.expire_at,
            })
        })
    }
}
