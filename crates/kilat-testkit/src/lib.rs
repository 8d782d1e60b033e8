//! Test support shared by kilat's crates (a dev-dependency only; never published).
//!
//! Tests that need a real `redis-server` (the Redis engine's suite, the server's multi-node
//! tests, the CLI's failover tests) start their own through [`RedisServer`]: a fresh process
//! on a free loopback port, in memory only, killed on drop. Tests that need another program
//! (haproxy) ask [`require`] first.
//!
//! # Items
//! - [`require`]: is a program installed? If not: skip loudly, or fail under `CI=true`.
//! - [`RedisServer`]: start ([`RedisServer::start`], [`RedisServer::start_on`]), kill,
//!   restart on the same port, pause and resume a `redis-server`.
//! - [`free_port`], [`answers_ping`], [`warn_loudly`]: the pieces those are built from.
//!
//! # Decisions
//! - **Skip loudly, fail in CI.** A developer without `redis-server` can still run the rest of
//!   the tests, but the skip must be seen: the notice goes to the process's real stderr,
//!   because libtest captures `eprintln!` of passing tests. Under `CI=true` a missing program
//!   is a panic, so that CI never passes by skipping.
//! - **Std only, blocking.** No tokio, no Redis client: the kit builds in a moment, serves
//!   sync and async tests alike, and speaks just enough RESP to send one PING. Its waits are
//!   short and bounded, so calling it from an async test blocks a worker only briefly.
//! - **Bounded waits.** Every wait has a deadline; a `redis-server` that never answers is an
//!   error, not a hung test.
//! - **Free ports are picked, then bound by the child.** Another process may take the port in
//!   between, so [`RedisServer::start`] retries on a new port a few times.

#![warn(missing_docs)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`RedisServer::start_on`] waits for a new `redis-server` to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports [`RedisServer::start`] tries before it gives up.
const START_ATTEMPTS: usize = 5;

/// Prints `msg`, framed so that it stands out, to the process's real stderr.
///
/// libtest captures `eprintln!` of a passing test and shows nothing of it, so a skipped test
/// would go unnoticed; this writes past the capture.
pub fn warn_loudly(msg: &str) {
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
}

/// Whether `CI=true` is set: then a missing program fails the test instead of skipping it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `program` can run, checked by running `program version_flag` (for example
/// `redis-server --version`, `haproxy -v`) with its output discarded.
///
/// When it cannot, prints a loud notice naming `test` as skipped (see [`warn_loudly`]) and
/// returns `false`; the caller then returns early.
///
/// # Panics
/// When the program is missing and `CI=true` is set.
pub fn require(program: &str, version_flag: &str, test: &str) -> bool {
    let found = runs(program, version_flag);
    if !found {
        let msg =
            format!("{program} is not on PATH: SKIPPING {test} (install the `{program}` package)");
        assert!(!in_ci(), "{msg}; CI=true requires it");
        warn_loudly(&msg);
    }
    found
}

/// Whether `program version_flag` can be started (its exit status does not matter).
fn runs(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A loopback port that was free a moment ago (the OS picked it for a listener that is
/// closed again before this returns).
///
/// Another process may take it before the caller binds it; callers that can, retry.
///
/// # Panics
/// When no loopback listener can be bound at all.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether a Redis on loopback `port` answers `PING` with `+PONG` (within 200 ms).
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// A `redis-server` of our own on a loopback port, in memory only (`--save ''
/// --appendonly no`), killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// The process; `None` after [`RedisServer::kill`] until a [`RedisServer::restart`].
    child: Option<Child>,
    /// Where it listens; kept across restarts so that clients find the new process.
    port: u16,
    /// Extra arguments it was started with, passed again on restart.
    extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts a `redis-server` on a free loopback port for `test`, or returns `None` after a
    /// loud notice when `redis-server` is not installed (see [`require`]).
    ///
    /// # Panics
    /// When `redis-server` is missing under `CI=true`, or when it is installed but does not
    /// start on any of a few free ports.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !require("redis-server", "--version", test) {
            return None;
        }
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match RedisServer::start_on(free_port(), &[]) {
                Ok(server) => return Some(server),
                // Most likely another process took the port in between; try another.
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Starts a `redis-server` on loopback `port` with `extra_args` appended to the defaults
    /// (for example the `--cluster-enabled yes ...` of a cluster node), and waits (up to 10 s)
    /// until it answers PING.
    ///
    /// Unlike [`RedisServer::start`] this does not check that `redis-server` is installed:
    /// call [`require`] first.
    ///
    /// # Errors
    /// When the process cannot be spawned, exits early (the port is taken, an argument is
    /// wrong) or does not answer in time; the process is then gone.
    pub fn start_on(port: u16, extra_args: &[&str]) -> Result<RedisServer, String> {
        let mut server = RedisServer {
            child: None,
            port,
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Spawns the process on `self.port` and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if answers_ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL) and waits for it; its in-memory data is lost. Does nothing
    /// when it is already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process (if it still runs) and starts a fresh, empty one on the same port
    /// with the same arguments.
    ///
    /// # Errors
    /// As for [`RedisServer::start_on`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// Freezes the process (SIGSTOP): its connections stay open and nothing is answered.
    ///
    /// # Panics
    /// When it was killed, or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a process frozen by [`RedisServer::pause`] (SIGCONT).
    ///
    /// # Panics
    /// When it was killed, or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Sends `signal` (as `kill` spells it, e.g. `-STOP`) with the `kill` program: std has
    /// no API for signals other than SIGKILL.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server was killed").id();
        let sent = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill {signal} {pid} (redis-server)");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_does_not_run() {
        assert!(!runs("kilat-testkit-no-such-program", "--version"));
    }

    #[test]
    fn nothing_answers_ping_on_a_closed_port() {
        assert!(!answers_ping(free_port()));
    }

    #[test]
    fn redis_server_starts_restarts_and_is_killed() {
        let Some(mut redis) = RedisServer::start("redis_server_starts_restarts_and_is_killed")
        else {
            return;
        };
        let port = redis.port();
        assert!(answers_ping(port));
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
        redis.restart().expect("restarts on the same port");
        assert!(answers_ping(port));
        redis.kill();
        assert!(!answers_ping(port));
    }
}
