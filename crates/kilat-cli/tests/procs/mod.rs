//! Real processes for the failure and deployment tests: `kilat serve` nodes on a shared
//! `redis-server`, the shipped load-balancer configurations (`deploy/haproxy.cfg`,
//! `deploy/nginx.conf`) started on free ports, and plain HTTP requests to all of them.
//!
//! Each test binary uses a part of this module, so items unused by one of them carry
//! `#[allow(dead_code)]`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kilat_testkit::free_port;

/// Upper bound for every wait; a hang fails the test instead of blocking CI.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A child process killed (SIGKILL) on drop.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends a real SIGTERM (through `kill(1)`, so the test needs no FFI).
    #[allow(dead_code)] // used by the deployment tests only
    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }
}

/// One plain HTTP request; returns the status code (0 when the connection fails).
pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    http_full(addr, method, path, body).0
}

/// One plain HTTP request; returns the status code (0 when the connection fails) and the body.
pub(crate) fn http_full(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `ready` until it holds or `WAIT` passes.
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} not ready in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `kilat serve --dev --engine redis` on a free port; waits until `/ready` answers 200.
pub(crate) fn start_node(redis_url: &str) -> (Proc, SocketAddr) {
    start_node_logged(redis_url, None, &[])
}

/// [`start_node`] with `KILAT_*` variables, and its log (at info) written to `log` when given.
pub(crate) fn start_node_logged(
    redis_url: &str,
    log: Option<&Path>,
    env: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    (start_node_at(addr, redis_url, log, env), addr)
}

/// Starts a node on `addr` (a restart of a node keeps its address, as in a rolling deploy).
pub(crate) fn start_node_at(
    addr: SocketAddr,
    redis_url: &str,
    log: Option<&Path>,
    env: &[(&str, &str)],
) -> Proc {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("node log file")),
        None => Stdio::null(),
    };
    let child = Command::new(env!("CARGO_BIN_EXE_kilat"))
        .args([
            "serve",
            "--dev",
            "--engine",
            "redis",
            "--redis-url",
            redis_url,
            "--listen",
            &addr.to_string(),
        ])
        .env("KILAT_LOG", if log.is_some() { "info" } else { "warn" })
        // --dev skips the drain grace (no balancer locally); these nodes are behind one.
        .env("KILAT_SERVER_DRAIN_GRACE", "5")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start kilat");
    wait_until("kilat node", || http(addr, "GET", "/ready", "") == 200);
    Proc(child)
}

/// A temporary directory removed on drop.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    #[allow(dead_code)] // used by the deployment tests only
    pub(crate) fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kilat-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's `deploy/<file>`.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn shipped(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

/// The text of a shipped load-balancer configuration with its documented addresses replaced:
/// the client port 8000 by `lb`, the node ports 8001 and 8002 by `nodes`. Everything else
/// (timeouts, checks, retries, limits) is used as shipped. Panics when the file does not list
/// exactly those addresses, so the test follows the documentation.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn shipped_on_ports(file: &str, lb: SocketAddr, nodes: &[SocketAddr; 2]) -> String {
    let text = std::fs::read_to_string(shipped(file)).expect("read the shipped config");
    let is_setting = |line: &&str| !line.trim_start().starts_with('#');
    for documented in ["127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002"] {
        let uses = text
            .lines()
            .filter(is_setting)
            .filter(|line| line.contains(documented))
            .count();
        assert_eq!(
            uses, 1,
            "{file} should use {documented} once, as docs/deployment.md does"
        );
    }
    let mut out = String::new();
    for line in text.lines() {
        if is_setting(&line) {
            out.push_str(
                &line
                    .replace("127.0.0.1:8000", &lb.to_string())
                    .replace("127.0.0.1:8001", &nodes[0].to_string())
                    .replace("127.0.0.1:8002", &nodes[1].to_string()),
            );
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Runs `program` under a 20,000 open-files limit (soft and hard, as on a typical server), so
/// a configuration that needs more fails here as it would there.
#[allow(dead_code)] // used by the deployment tests only
fn limited(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 20000 2>/dev/null; exec \"$0\" \"$@\"")
        .arg(program)
        .args(args);
    command
}

/// Starts haproxy with the shipped `deploy/haproxy.cfg` in front of `nodes`; waits until it
/// answers `/health` through them.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn start_shipped_haproxy(nodes: &[SocketAddr; 2], dir: &Path) -> (Proc, SocketAddr) {
    let (proc, lb, _stats) = start_shipped_haproxy_with_stats(nodes, dir);
    (proc, lb)
}

/// [`start_shipped_haproxy`] plus a stats page (an addition of the test, outside the shipped
/// proxies), so a test can wait for haproxy's own view of a node instead of guessing its
/// check timing. Returns the stats address too.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn start_shipped_haproxy_with_stats(
    nodes: &[SocketAddr; 2],
    dir: &Path,
) -> (Proc, SocketAddr, SocketAddr) {
    let lb: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let stats: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let path = dir.join("haproxy.cfg");
    let config = format!(
        "{}\nlisten test_stats\n    bind {stats}\n    stats enable\n    stats uri /stats\n",
        shipped_on_ports("haproxy.cfg", lb, nodes)
    );
    std::fs::write(&path, config).expect("write config");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
    let child = limited(
        "haproxy",
        &["-db", "-f", path.to_str().expect("utf-8 path")],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("start haproxy");
    let mut proc = Proc(child);
    wait_until("haproxy", || {
        if let Ok(Some(status)) = proc.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
            panic!("haproxy exited ({status}) with the shipped config: {log}");
        }
        http(lb, "GET", "/health", "") == 200
    });
    (proc, lb, stats)
}

/// Whether haproxy (its stats page at `stats`) has the server `name` of `kilat_nodes` up.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn haproxy_server_up(stats: SocketAddr, name: &str) -> bool {
    let (status, csv) = http_full(stats, "GET", "/stats;csv", "");
    status == 200
        && csv.lines().any(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            fields.len() > 17
                && fields[0] == "kilat_nodes"
                && fields[1] == name
                && fields[17] == "UP"
        })
}

/// Starts nginx with the shipped `deploy/nginx.conf` in front of `nodes` (pid, logs and
/// temporary files under `dir`, in the foreground); waits until it answers `/health`.
#[allow(dead_code)] // used by the deployment tests only
pub(crate) fn start_shipped_nginx(nodes: &[SocketAddr; 2], dir: &Path) -> (Proc, SocketAddr) {
    let lb: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let path = dir.join("nginx.conf");
    // Where this machine keeps nginx's scratch files is not the config's business: the
    // temporary paths go under `dir`, so the test also runs without root.
    let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|kind| format!("    {kind}_temp_path {}/{kind};\n", dir.display()))
        .collect();
    let text = shipped_on_ports("nginx.conf", lb, nodes).replacen(
        "http {\n",
        &format!("http {{\n{temp}    access_log off;\n"),
        1,
    );
    std::fs::write(&path, text).expect("write config");
    let log = std::fs::File::create(dir.join("nginx.log")).expect("nginx log");
    // One process in the foreground, so killing the child stops nginx entirely.
    let globals = format!(
        "pid {}/nginx.pid; daemon off; master_process off;",
        dir.display()
    );
    let child = limited(
        "nginx",
        &[
            "-c",
            path.to_str().expect("utf-8 path"),
            "-p",
            dir.to_str().expect("utf-8 path"),
            "-e",
            "stderr",
            "-g",
            &globals,
        ],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("start nginx");
    let mut proc = Proc(child);
    wait_until("nginx", || {
        if let Ok(Some(status)) = proc.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("nginx.log")).unwrap_or_default();
            panic!("nginx exited ({status}) with the shipped config: {log}");
        }
        http(lb, "GET", "/health", "") == 200
    });
    (proc, lb)
}
