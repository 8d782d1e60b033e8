//! Helpers shared by the test binaries that spawn the real `kilat` executable.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const KILAT: &str = env!("CARGO_BIN_EXE_kilat");

/// A child process killed when the test ends, however it ends.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub(crate) fn spawn(args: &[&str]) -> Guard {
    Guard(
        Command::new(KILAT)
            .args(args)
            .env("KILAT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning kilat"),
    )
}

/// Waits (bounded) until `GET path` answers 200, or only until the port accepts when `path` is None.
pub(crate) fn wait_ready(port: u16, path: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let Some(path) = path else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"HTTP/1.1 200")
                {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server on port {port} not ready within 15 s");
}
