use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kilat_core::engine::BrokerHandler;
use kilat_engine_redis::{RedisConfig, RedisEngine};
use kilat_protocol::{ClientInfo, Publication};

/// Prints `msg` to the real stderr: libtest captures `eprintln!` of passing tests, and a
/// skipped test must be noticed.
pub(crate) fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
}

/// A Redis for one test: our own `redis-server` on a free loopback port (killed on drop), or
/// the one at `KILAT_TEST_REDIS_URL`.
#[derive(Debug)]
pub(crate) struct TestRedis {
    /// Our process; `None` for an external Redis or after `kill`.
    child: Option<Child>,
    /// Port of our process (0 for an external Redis).
    port: u16,
    /// What engines connect to.
    url: String,
}

fn redis_server_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

/// A Redis for `test`, or `None` (after a loud notice) when none is available. Under
/// `CI=true` a missing Redis is a failure.
pub(crate) fn redis(test: &str) -> Option<TestRedis> {
    if let Ok(url) = std::env::var("KILAT_TEST_REDIS_URL") {
        return Some(TestRedis {
            child: None,
            port: 0,
            url,
        });
    }
    if redis_server_binary().is_none() {
        let msg = format!(
            "redis-server is not on PATH: SKIPPING {test} (install the `redis-server` package or set KILAT_TEST_REDIS_URL)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true requires it");
        }
        loud(&msg);
        return None;
    }
    for _ in 0..5 {
        let port = free_port();
        let mut redis = TestRedis {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        if redis.start().is_ok() {
            return Some(redis);
        }
    }
    panic!("redis-server did not start");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether a Redis answers PING on `port`.
fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// Starts `redis-server` on `port` (loopback, in memory only, plus `extra` arguments) and
/// waits (bounded) until it answers PING.
fn spawn_redis(port: u16, extra: &[&str]) -> Result<Child, String> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    for _ in 0..400 {
        if answers_ping(port) {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited: {status}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("redis-server did not answer PING".to_owned())
}

/// A 3-master Redis Cluster on loopback, killed (and its directory removed) on drop.
#[derive(Debug)]
pub(crate) struct TestCluster {
    /// The masters.
    children: Vec<Child>,
    /// Their ports.
    ports: Vec<u16>,
    /// Working directory for the nodes' cluster config files.
    dir: PathBuf,
}

/// A port `p` with `p + 10000` (the cluster bus) free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// A fresh 3-master cluster for `test`, or `None` (after a loud notice) without redis-server.
pub(crate) fn cluster(test: &str) -> Option<TestCluster> {
    // Always local processes, even with KILAT_TEST_REDIS_URL set: a cluster is built per test.
    if redis_server_binary().is_none() {
        let msg = format!(
            "redis-server is not on PATH: SKIPPING {test} (install the `redis-server` package)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true requires it");
        }
        loud(&msg);
        return None;
    }
    let dir = std::env::temp_dir().join(format!("kilat-cluster-{}", kilat_core::new_epoch()));
    std::fs::create_dir_all(&dir).expect("cluster dir");
    let mut cluster = TestCluster {
        children: Vec::new(),
        ports: Vec::new(),
        dir,
    };
    for _ in 0..3 {
        let port = free_cluster_port();
        let conf = format!("nodes-{port}.conf");
        let dir = cluster.dir.to_string_lossy().into_owned();
        let child = spawn_redis(
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
        cluster.children.push(child);
        cluster.ports.push(port);
    }
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
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
    for port in &cluster.ports {
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
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
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
        self.port != 0
    }

    /// Starts `redis-server` on `self.port`, in memory only; waits until it answers PING.
    fn start(&mut self) -> Result<(), String> {
        self.child = Some(spawn_redis(self.port, &[])?);
        Ok(())
    }

    /// Kills the server (its in-memory data is lost).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a fresh one on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.start()
            .expect("redis-server restarts on the same port");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("our redis-server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws the server (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

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
