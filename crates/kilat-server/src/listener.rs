//! The accept loop: plain TCP or TLS (rustls), HTTP/1.1 and HTTP/2 with upgrades, a deadline for
//! the request head so half-open handshakes cannot pin sockets, and graceful shutdown.
//!
//! axum's own `serve` has no TLS and no header-read timeout, so the listener is written on
//! hyper-util directly; the router is the same axum `Router`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring::sign::any_supported_type;
use tokio_rustls::rustls::pki_types::pem::{Error as PemError, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::transport::front::{self, Head};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file could not be read or is not PEM.
    #[error("{path}: {source}")]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What was wrong with it.
        source: PemError,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no PEM certificate found")]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file could not be read or holds no private key.
    #[error("{path}: {source} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)")]
    PrivateKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong with it.
        source: PemError,
    },
    /// The key does not fit any supported signature scheme.
    #[error("unsupported private key in {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        source: tokio_rustls::rustls::Error,
    },
}

/// The certificate in use, swapped atomically when the files are reloaded (SIGHUP), so renewed
/// certificates take effect without dropping a single connection.
#[derive(Debug)]
pub(crate) struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads the certificate chain and key.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Reads the files again; on failure the old certificate stays in use.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write() = Arc::new(key);
        Ok(())
    }

    /// A rustls acceptor that always serves the current certificate.
    pub(crate) fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |source| TlsError::Certificate {
        path: cert_path.to_owned(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(cert_error)?
        .collect::<Result<_, _>>()
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::PrivateKey {
        path: key_path.to_owned(),
        source,
    })?;
    let signing = any_supported_type(&key).map_err(|source| TlsError::Key {
        path: key_path.to_owned(),
        source,
    })?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Accepts connections until `stop` resolves, then lets in-flight HTTP requests finish for at
/// most `grace`. Upgraded connections (WebSocket) and event streams are not HTTP anymore; the
/// server drains those.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    head_timeout: Duration,
    stop: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The request head is capped at the same 16 KiB on every path (the socket path's own
    // limit): hyper's read buffer otherwise grows to fit a head of several hundred KiB and
    // stays that large for as long as a streamed response runs on the connection (issue 20).
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(front::MAX_HEAD);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(front::MAX_HEAD as u32);
    // No protocol sniffing (hyper-util's auto builder reads before any timeout applies): plain
    // TCP is HTTP/1.1 (browsers speak HTTP/2 only over TLS), TLS picks by ALPN.
    let shared = Arc::new(Shared {
        http1,
        http2,
        app: crate::router::router(state.clone()),
        state,
        head_timeout,
    });
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    // Every accepted socket holds a permit until it closes, whatever it turns out to be (a
    // WebSocket, a stream, an API call, a body that never finishes): past the limit a new socket
    // is closed at once, before the process runs out of descriptors (issue 20).
    let socket_limit = socket_limit(shared.state.max_connections);
    let sockets = Arc::new(tokio::sync::Semaphore::new(socket_limit));
    tokio::pin!(stop);
    let mut accept_errors = AcceptErrors::default();
    let mut over_limit = AcceptErrors::default();
    loop {
        // Wakes on: a new TCP connection, or the shutdown signal.
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    accept_errors.report(&error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = sockets.clone().try_acquire_owned() else {
            over_limit.report_over_limit(socket_limit);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stopping = stopping.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => serve_http1(tcp, &shared, &stopping, peer).await,
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(head_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let service = TowerToHyperService::new(with_peer(&shared.app, peer));
                        graceful(
                            shared.http2.serve_connection(TokioIo::new(stream), service),
                            &stopping,
                        )
                        .await
                    } else {
                        serve_http1(stream, &shared, &stopping, peer).await
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the grace period");
    }
}

/// Descriptors kept for what is not a client socket: listeners, epoll, Redis, log files.
const RESERVED_FILES: usize = 64;

/// The most sockets held at once: the connection limit, headroom for plain HTTP requests (API
/// calls, emulation POSTs, pages), and never more than the open-files limit allows.
fn socket_limit(max_connections: usize) -> usize {
    let headroom = (max_connections / 8).clamp(64, 4096);
    let wanted = max_connections.saturating_add(headroom);
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match files.and_then(|soft| usize::try_from(soft).ok()) {
        Some(soft) => wanted.min(soft.saturating_sub(RESERVED_FILES).max(1)),
        None => wanted,
    }
}

/// What every connection of a listener needs.
struct Shared {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    app: Router,
    state: AppState,
    head_timeout: Duration,
}

/// Serves an HTTP/1 connection: its first request head is read by [`front`], which takes an
/// event stream onto the socket; anything else is served by hyper from the first byte.
/// The app with the socket's peer address put on every request (`transport::peer::Peer`), for
/// the limits per client address.
fn with_peer(
    app: &axum::Router,
    peer: std::net::SocketAddr,
) -> impl tower::Service<
    http::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    use tower::ServiceExt;
    app.clone()
        .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(crate::transport::peer::Peer(peer));
            request
        })
}

async fn serve_http1<IO>(
    mut io: IO,
    shared: &Shared,
    stopping: &CancellationToken,
    peer: std::net::SocketAddr,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let head = match tokio::time::timeout(shared.head_timeout, front::read_head(&mut io)).await {
        Ok(Ok(head)) => head,
        // Closed, failed or silent before a request: nothing to answer.
        Ok(Err(_)) | Err(_) => return Ok(()),
    };
    match head {
        Head::Stream(mut request) => {
            request.peer = Some(peer);
            crate::transport::emulation::serve_stream(&shared.state, request, io).await;
            Ok(())
        }
        Head::Other(read) => {
            let io = front::Prefixed::new(read, io);
            let service = TowerToHyperService::new(with_peer(&shared.app, peer));
            let conn = shared
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            graceful(conn, stopping).await
        }
    }
}

/// A hyper connection that can be asked to finish its in-flight requests and stop.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn begin_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves `conn` to its end; when `stopping` fires, lets it finish what it is doing and stop.
async fn graceful(conn: impl Graceful, stopping: &CancellationToken) -> Result<(), hyper::Error> {
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        () = stopping.cancelled() => conn.as_mut().begin_shutdown(),
    }
    conn.await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> Vec<u8> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).expect("write key");
        cert.cert.der().to_vec()
    }

    #[test]
    fn reload_swaps_the_certificate_and_keeps_the_old_one_on_error() {
        let dir = std::env::temp_dir().join(format!("kilat-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let first = write_cert(&dir, "first.test");
        let cert = ReloadableCert::load(&dir.join("cert.pem"), &dir.join("key.pem")).expect("load");
        let served = |c: &ReloadableCert| c.current.read().cert[0].to_vec();
        assert_eq!(served(&cert), first);

        let second = write_cert(&dir, "second.test");
        cert.reload().expect("reload");
        assert_eq!(served(&cert), second);

        std::fs::write(dir.join("key.pem"), "not a key").expect("break the key");
        assert!(cert.reload().is_err());
        assert_eq!(
            served(&cert),
            second,
            "a failed reload keeps serving the old certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Logs failed accepts at most once per [`AcceptErrors::EVERY`], with how many happened since
/// the last line: at the open-files limit every new client fails, and a line per failure would
/// flood the log while saying nothing new.
#[derive(Default)]
struct AcceptErrors {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    const EVERY: Duration = Duration::from_secs(10);

    /// A socket closed at once because every socket permit is taken.
    fn report_over_limit(&mut self, limit: usize) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            suppressed = self.suppressed,
            limit,
            "socket limit reached: new connections are closed at once until some end              (server.max_connections plus headroom for HTTP requests, capped by the open-files              limit)"
        );
        self.last = Some(std::time::Instant::now());
        self.suppressed = 0;
    }

    fn report(&mut self, error: &std::io::Error) {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        let hint = if error.raw_os_error() == Some(24) || error.raw_os_error() == Some(23) {
            "out of file descriptors: raise the open-files limit (ulimit -n, LimitNOFILE= in \
             systemd) or lower server.max_connections below it"
        } else {
            "new connections are refused until this clears"
        };
        tracing::warn!(%error, suppressed = self.suppressed, hint, "accept failed");
        self.last = Some(std::time::Instant::now());
        self.suppressed = 0;
    }
}
