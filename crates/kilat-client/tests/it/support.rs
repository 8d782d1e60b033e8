use std::net::SocketAddr;
use std::time::Duration;

use kilat_client::{Client, ClientConfig, Event, Events, Publication};
use kilat_server::Config;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Upper bound for any single wait; a hang fails the test instead of blocking CI.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A kilat server on a loopback port.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), kilat_server::ServerError>>>,
}

impl TestServer {
    /// A dev-mode server on a free port.
    pub(crate) async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A dev-mode server on a free port with `adjust` applied to the configuration.
    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::serve(listener, adjust)
    }

    /// A dev-mode server on `addr` (the address of a server stopped a moment ago).
    pub(crate) async fn start_on(addr: SocketAddr) -> TestServer {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("rebinding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        TestServer::serve(listener, |_| {})
    }

    fn serve(listener: TcpListener, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.node.dev = true;
        config.server.shutdown_timeout = Duration::from_secs(2);
        adjust(&mut config);
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kilat_server::run(listener, config, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self) -> String {
        ws_url(self.addr)
    }

    /// Graceful shutdown (every client gets 3000), waiting until the server has stopped.
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task)
                .await
                .expect("server stops");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/connection/websocket")
}

/// A TCP proxy in front of a server: `cut` drops every proxied connection and refuses new ones
/// (the client sees a transport failure, the server just a closed socket); `restore` lets
/// connections through again. The server, its history and its epochs stay untouched.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (up, up_rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !*up_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut up_rx = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up_rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    pub(crate) fn url(&self) -> String {
        ws_url(self.addr)
    }

    pub(crate) fn cut(&self) {
        self.up.send_replace(false);
    }

    pub(crate) fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A config with fast reconnects, so tests do not wait on the default backoff.
pub(crate) fn fast(url: String) -> ClientConfig {
    ClientConfig {
        min_reconnect_delay: Duration::from_millis(20),
        max_reconnect_delay: Duration::from_millis(200),
        ..ClientConfig::new(url)
    }
}

pub(crate) async fn connect(url: String) -> (Client, Events) {
    Client::connect(fast(url)).await.expect("connect")
}

/// The next event matching `pred`, skipping others; panics after [`WAIT`].
pub(crate) async fn next_matching(
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if pred(&event) {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("event stream ended while waiting for {what}"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// The next `n` publications of `channel`, failing on anything that is not another event kind.
pub(crate) async fn publications(events: &mut Events, channel: &str, n: usize) -> Vec<Publication> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = next_matching(events, "a publication", |e| {
            matches!(e, Event::Publication { .. })
        })
        .await;
        if let Event::Publication {
            channel: c,
            publication,
        } = event
        {
            assert_eq!(c, channel, "publication in an unexpected channel");
            out.push(publication);
        }
    }
    out
}

pub(crate) fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications
        .iter()
        .map(|p| p.offset.expect("dev channels keep history, so offsets"))
        .collect()
}

/// Asserts nothing (but pings and the like) arrives for a short while.
pub(crate) async fn assert_no_publication(events: &mut Events) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            match events.next().await {
                Some(Event::Publication {
                    channel,
                    publication,
                }) => {
                    return format!("{channel}: {} ({:?})", publication.data, publication.offset);
                }
                Some(_) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    if let Ok(unexpected) = quiet {
        panic!("unexpected publication {unexpected}");
    }
}

/// Waits for `Connected` and returns the client id.
pub(crate) async fn connected(events: &mut Events) -> String {
    match next_matching(events, "Connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await
    {
        Event::Connected { client, .. } => client,
        _ => unreachable!(),
    }
}
