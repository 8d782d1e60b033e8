use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kilat_core::engine::{Broker, BrokerHandler, NodeInbox};
use kilat_engine_redis::{RedisConfig, RedisEngine};
use kilat_protocol::{ClientInfo, Publication};
use kilat_testkit::RedisServer;

/// A Redis for one test: our own `redis-server` on a free loopback port (killed on drop), or
/// the one at `KILAT_TEST_REDIS_URL`.
#[derive(Debug)]
pub(crate) struct TestRedis {
    /// Our process; `None` for an external Redis.
    server: Option<RedisServer>,
    /// What engines connect to.
    url: String,
}

/// A Redis for `test`, or `None` (after a loud notice) when none is available. Under
/// `CI=true` a missing Redis is a failure.
pub(crate) fn redis(test: &str) -> Option<TestRedis> {
    if let Ok(url) = std::env::var("KILAT_TEST_REDIS_URL") {
        return Some(TestRedis { server: None, url });
    }
    let server = RedisServer::start(test)?;
    Some(TestRedis {
        url: server.url(),
        server: Some(server),
    })
}

/// A 3-master Redis Cluster on loopback, killed (and its directory removed) on drop.
#[derive(Debug)]
pub(crate) struct TestCluster {
    /// The masters.
    nodes: Vec<RedisServer>,
    /// Working directory for the nodes' cluster config files.
    dir: PathBuf,
}

/// A port `p` with `p + 10000` (the cluster bus) free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = kilat_testkit::free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// A fresh 3-master cluster for `test`, or `None` (after a loud notice) without redis-server.
pub(crate) fn cluster(test: &str) -> Option<TestCluster> {
    // Always local processes, even with KILAT_TEST_REDIS_URL set: a cluster is built per test.
    if !kilat_testkit::require("redis-server", "--version", test) {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("kilat-cluster-{}", kilat_core::new_epoch()));
    std::fs::create_dir_all(&dir).expect("cluster dir");
    let mut cluster = TestCluster {
        nodes: Vec::new(),
        dir,
    };
    for _ in 0..3 {
        let port = free_cluster_port();
        let conf = format!("nodes-{port}.conf");
        let dir = cluster.dir.to_string_lossy().into_owned();
        let node = RedisServer::start_on(
            port,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--dir",
                &dir,
            ],
        )
        .expect("cluster node starts");
        cluster.nodes.push(node);
    }
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli runs");
    assert!(status.success(), "redis-cli --cluster create failed");
    // Wait (bounded) until every node sees the whole cluster as healthy.
    for node in &cluster.nodes {
        let port = node.port();
        let mut ok = false;
        for _ in 0..500 {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ok, "cluster node {port} never reached cluster_state:ok");
    }
    Some(cluster)
}

impl TestCluster {
    /// Seed node URLs.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Kill the nodes before removing the directory they write their config files to.
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestRedis {
    /// The URL engines connect to.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Whether this Redis is ours (so it can be killed, restarted and paused).
    pub(crate) fn is_local(&self) -> bool {
        self.server.is_some()
    }

    /// Our server, to control.
    ///
    /// # Panics
    /// For an external Redis (check [`TestRedis::is_local`] first).
    fn ours(&self) -> &RedisServer {
        self.server.as_ref().expect(NOT_OURS)
    }

    /// Kills the server (its in-memory data is lost).
    pub(crate) fn kill(&mut self) {
        self.server.as_mut().expect(NOT_OURS).kill();
    }

    /// Kills the server and starts a fresh one on the same port.
    pub(crate) fn restart(&mut self) {
        self.server
            .as_mut()
            .expect(NOT_OURS)
            .restart()
            .expect("redis-server restarts on the same port");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        self.ours().pause();
    }

    /// Thaws the server (SIGCONT).
    pub(crate) fn resume(&self) {
        self.ours().resume();
    }
}

/// Why controlling an external Redis panics: the tests check [`TestRedis::is_local`] first.
const NOT_OURS: &str = "KILAT_TEST_REDIS_URL is not ours to control";

/// Test settings: short timeouts so failure tests stay quick.
pub(crate) fn config(redis: &TestRedis) -> RedisConfig {
    let mut config = RedisConfig::new(redis.url());
    config.command_timeout = Duration::from_millis(500);
    config.connect_timeout = Duration::from_millis(500);
    config.pubsub_ping_interval = Duration::from_millis(500);
    config.reconnect_max_delay = Duration::from_millis(200);
    config.pubsub_shards = 2;
    config
}

/// A connected engine.
pub(crate) async fn engine(redis: &TestRedis) -> Arc<RedisEngine> {
    Arc::new(
        RedisEngine::connect(config(redis))
            .await
            .expect("engine connects"),
    )
}

/// A fresh channel name.
pub(crate) fn channel(name: &str) -> String {
    format!("it:{name}-{}", kilat_core::new_epoch())
}

/// A publication with `data`.
pub(crate) fn publication(data: &str) -> Publication {
    Publication {
        binary: None,
        data: kilat_protocol::types::raw_json(data).expect("JSON"),
        offset: None,
        info: None,
    }
}

/// A client info.
pub(crate) fn info(client: &str, user: &str) -> ClientInfo {
    ClientInfo {
        client: client.to_owned(),
        user: user.to_owned(),
        info: None,
    }
}

/// What a [`Recorder`] saw: `(channel, offset, epoch, data)`.
pub(crate) type Seen = (String, Option<u64>, String, String);

/// A handler that records publications.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    publications: Mutex<Vec<Seen>>,
    joins: Mutex<Vec<(String, String, bool)>>,
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str) {
        self.publications.lock().expect("lock").push((
            channel.to_owned(),
            publication.offset,
            epoch.to_owned(),
            publication.data.get().to_owned(),
        ));
    }

    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        self.joins
            .lock()
            .expect("lock")
            .push((channel.to_owned(), info.client.clone(), join));
    }
}

impl Recorder {
    /// Publications seen in `channel`.
    pub(crate) fn seen(&self, channel: &str) -> Vec<Seen> {
        self.publications
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.0 == channel)
            .cloned()
            .collect()
    }

    /// Join/leave events seen in `channel`: `(client, join)`.
    pub(crate) fn joins(&self, channel: &str) -> Vec<(String, bool)> {
        self.joins
            .lock()
            .expect("lock")
            .iter()
            .filter(|j| j.0 == channel)
            .map(|j| (j.1.clone(), j.2))
            .collect()
    }

    /// Waits (up to 5 s) until `pred` holds for the publications of `channel`.
    pub(crate) async fn wait_until(
        &self,
        channel: &str,
        pred: impl Fn(&[Seen]) -> bool,
    ) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen(channel);
            if pred(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "timed out; saw {seen:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Checks the node inboxes of two engines on the same Redis (single or cluster): `b`'s inbox
/// receives what `a` sends to it, a send to an id nobody listens on reaches no one, an engine
/// opens one inbox, and inbox messages never reach the hub's handler as publications.
pub(crate) async fn check_node_inboxes(a: &RedisEngine, b: &RedisEngine) {
    let seen = Arc::new(Recorder::default());
    b.set_handler(seen.clone());
    let node = channel("node-b");
    // Through the role trait the server uses.
    let (a, b): (&dyn NodeInbox, &dyn NodeInbox) = (a, b);
    let mut inbox = b.open(&node).await.expect("inbox opens");
    assert_eq!(
        a.send(&node, b"hello").await.expect("send"),
        1,
        "b listens on its inbox"
    );
    let got = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("the message arrives in time")
        .expect("inbox open");
    assert_eq!(got, b"hello");
    assert_eq!(
        a.send(&channel("nobody"), b"lost").await.expect("send"),
        0,
        "no node with that id"
    );
    assert!(
        seen.publications.lock().expect("lock").is_empty(),
        "inbox messages are not publications"
    );
}
