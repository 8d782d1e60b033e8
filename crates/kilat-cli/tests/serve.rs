//! `kilat serve` as a process: start-up behaviour that only shows outside the library.

#[allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]
mod common;

use std::process::{Command, Stdio};

use common::{Guard, KILAT, free_port, wait_ready};

/// `(soft, hard)` "Max open files" of a running process.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft").to_owned();
    let hard = fields.next().expect("hard").to_owned();
    (soft, hard)
}

/// Every connection is a file descriptor: the server lifts its soft open-files limit to the
/// hard one itself, and says at start-up when `max_connections` still cannot fit.
#[test]
fn serve_raises_the_open_files_limit_and_warns_when_max_connections_cannot_fit() {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("kilat-serve-limits-{port}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    // A soft limit well below the hard one, as many distributions ship, and more connections
    // allowed than even the hard limit can hold.
    let script = format!(
        "ulimit -Sn 256 && exec {KILAT} serve --dev --listen 127.0.0.1:{port} \
         --max-connections 100000000"
    );
    let guard = Guard(
        Command::new("sh")
            .args(["-c", &script])
            .env("KILAT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning kilat under sh"),
    );
    wait_ready(port, Some("/health"));
    let (soft, hard) = open_files_limits(guard.0.id());
    assert_eq!(soft, hard, "the soft open-files limit was not raised");
    assert_ne!(soft, "256");
    drop(guard);
    let logged = std::fs::read_to_string(&log).expect("reading the log");
    let _ = std::fs::remove_file(&log);
    assert!(
        logged.contains("open-files limit") && logged.contains("max_connections"),
        "no start-up warning about the open-files limit in: {logged}"
    );
}

/// Starts `kilat serve` with `args` and `env` under a 20,000 open-files limit (hard and soft,
/// as on a typical server), waits until it is ready, stops it, and returns what it logged at
/// warn and above.
fn startup_log(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("kilat-serve-{name}-{port}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let listen = format!("127.0.0.1:{port}");
    let guard = Guard(
        Command::new("sh")
            .args(["-c", "ulimit -n 20000 2>/dev/null; exec \"$0\" \"$@\""])
            .arg(KILAT)
            .args(["serve", "--listen", &listen])
            .args(args)
            .env("KILAT_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning kilat"),
    );
    wait_ready(port, Some("/health"));
    drop(guard);
    let logged = std::fs::read_to_string(&log).expect("reading the log");
    let _ = std::fs::remove_file(&log);
    logged
}

/// Issue 22, item 8: with a connect hook clients can connect; `KILAT_URL` and `KILAT_TOKEN`
/// belong to `kilat sub` / `kilat pub`; the default connection limit fits the open-files
/// limit. None of them is worth a warning.
#[test]
fn a_locked_down_node_with_a_connect_hook_starts_without_false_warnings() {
    let logged = startup_log(
        "hook",
        &["--proxy-connect-url", "http://127.0.0.1:9/kilat/connect"],
        &[
            ("KILAT_URL", "ws://127.0.0.1:8000/connection/websocket"),
            ("KILAT_TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.x"),
        ],
    );
    assert!(
        !logged.contains("WARN"),
        "a correct production start-up warns about nothing: {logged}"
    );
}

/// The warning a locked-down node without any way in still gets, and a typo'd variable.
#[test]
fn a_node_nobody_can_connect_to_says_so_once() {
    let logged = startup_log("locked", &[], &[("KILAT_SERVR_LISTEN", "x")]);
    assert_eq!(
        logged.matches("no client can connect").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("--proxy-connect-url"), "{logged}");
    assert!(
        logged.contains("KILAT_SERVR_LISTEN"),
        "a KILAT_ variable naming no section is still reported: {logged}"
    );
}

/// Issue 22, item 3: a configuration that would silently disable history does not start, and
/// the error names the key.
#[test]
fn a_contradictory_configuration_is_refused_naming_the_key() {
    let path = std::env::temp_dir().join(format!("kilat-contradiction-{}.toml", free_port()));
    std::fs::write(
        &path,
        "[node.namespaces.chat]\nhistory_size = 100\nhistory_ttl = 0\nallow_history = true\n",
    )
    .expect("write config");
    let output = Command::new(KILAT)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("KILAT_LOG", "warn")
        .output()
        .expect("run kilat");
    let _ = std::fs::remove_file(&path);
    assert!(!output.status.success(), "refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("node.namespaces.chat.history_ttl = 0") && stderr.contains("hint"),
        "{stderr}"
    );
}

/// `--dev` turns the admin console on with a one-time password printed at start-up (not as a
/// log line); that password logs in, another does not.
#[test]
fn dev_mode_prints_a_one_time_admin_password_that_logs_in() {
    use std::io::{BufRead, BufReader, Read, Write};
    let port = free_port();
    let mut child = Command::new(KILAT)
        .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("KILAT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning kilat");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Guard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, password)) = line.split_once("one-time password: ") {
                let _ = tx.send(password.trim().to_owned());
            }
        }
    });
    let password = rx
        .recv_timeout(std::time::Duration::from_secs(15))
        .expect("a one-time password on stderr");
    assert!(password.len() >= 16, "a long password: {password}");
    wait_ready(port, Some("/health"));
    let login = |password: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let body = format!(r#"{{"password":"{password}"}}"#);
        write!(
            stream,
            "POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    assert!(login("wrong").starts_with("HTTP/1.1 401"));
    let answer = login(&password);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("kilat_admin="), "{answer}");
    drop(guard);
}
