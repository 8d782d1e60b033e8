//! The CLI's own commands as a user runs them: `pub` against namespace rules, `token --help`,
//! `config` output, and the hints of its errors (issue 22, item 7).

#[allow(
    dead_code,
    reason = "each test binary uses only some of the shared helpers"
)]
mod common;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Guard, KILAT, free_port, spawn, wait_ready};

/// Starts `kilat serve` with `config` (TOML text) and `args`; returns the guard and the
/// WebSocket URL.
fn serve(name: &str, config: &str, args: &[&str]) -> (Guard, String, std::path::PathBuf) {
    let port = free_port();
    let path = std::env::temp_dir().join(format!("kilat-cli-{name}-{port}.toml"));
    std::fs::write(&path, config).expect("write config");
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec![
        "serve",
        "--listen",
        &listen,
        "--config",
        path.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let guard = spawn(&all);
    wait_ready(port, Some("/ready"));
    (
        guard,
        format!("ws://127.0.0.1:{port}/connection/websocket"),
        path,
    )
}

fn kilat(args: &[&str]) -> Output {
    Command::new(KILAT)
        .args(args)
        .env("KILAT_LOG", "warn")
        .env_remove("KILAT_URL")
        .env_remove("KILAT_TOKEN")
        .env_remove("KILAT_CONFIG")
        .output()
        .expect("run kilat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SUBSCRIBERS_PUBLISH: &str = "\
[node]
allow_anonymous = true
[node.namespaces.chat]
history_size = 10
allow_subscribe = \"public\"
allow_publish = \"subscribers\"
";

#[test]
fn pub_publishes_where_only_subscribers_may_regression_22() {
    let (_server, url, path) = serve("subscribers", SUBSCRIBERS_PUBLISH, &[]);
    let output = kilat(&["pub", "--url", &url, "chat:room", r#"{"n":1}"#]);
    let _ = std::fs::remove_file(path);
    assert!(
        output.status.success(),
        "kilat pub in an allow_publish = \"subscribers\" namespace: {}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "{\"channel\":\"chat:room\",\"offset\":1}\n"
    );
}

#[test]
fn pub_where_clients_may_not_publish_points_at_the_server_api() {
    let config =
        "[node]\nallow_anonymous = true\n[node.namespaces.news]\nallow_subscribe = \"public\"\n";
    let (_server, url, path) = serve("nopublish", config, &[]);
    let output = kilat(&["pub", "--url", &url, "news:today", r#"{"n":1}"#]);
    let _ = std::fs::remove_file(path);
    assert!(!output.status.success(), "publish must be refused");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(
        stderr.contains("/api/publish"),
        "hint at the server API: {stderr}"
    );
    assert!(
        !stderr.contains("the namespace does not allow client publish"),
        "the old, wrong hint: {stderr}"
    );
}

#[test]
fn token_help_shows_only_the_flags_token_uses_regression_22() {
    let output = kilat(&["token", "--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    for flag in ["--user", "--ttl", "--channel", "--token-secret", "--config"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for server_flag in [
        "--listen",
        "--redis-url",
        "--dev",
        "--tls-cert",
        "--api-key",
        "--proxy-connect-url",
        "--max-connections",
    ] {
        assert!(
            !help.contains(server_flag),
            "{server_flag} is the server's, not token's:\n{help}"
        );
    }
}

#[test]
fn token_still_reads_the_secret_from_the_config_file() {
    let path = std::env::temp_dir().join(format!("kilat-cli-token-{}.toml", free_port()));
    std::fs::write(
        &path,
        "[token]\nsecret = \"from-the-file-0123456789abcdef\"\n",
    )
    .expect("write");
    let output = kilat(&[
        "token",
        "--user",
        "alice",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_file(path);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim().split('.').count(), 3, "a JWT");
}

#[test]
fn config_redacts_every_secret_regression_22() {
    let output = kilat(&[
        "config",
        "--api-key",
        "api-key-visible-1",
        "--token-secret",
        "token-secret-visible-2",
        "--redis-url",
        "redis://:redis-pass-visible-3@127.0.0.1:6379",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    for secret in [
        "api-key-visible-1",
        "token-secret-visible-2",
        "redis-pass-visible-3",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(printed.matches("<redacted>").count(), 3, "{printed}");
}

/// The `exp` claim of a JWT.
fn expiry(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&json).expect("claims");
    claims["exp"].as_u64().expect("exp")
}

#[test]
fn an_expired_token_says_to_mint_a_new_one_regression_22() {
    const SECRET: &str = "expiry-test-secret-0123456789abcdef";
    let config = "[node.namespaces.chat]\nallow_subscribe = \"authenticated\"\n";
    let (_server, url, path) = serve("expired", config, &["--token-secret", SECRET]);
    let minted = kilat(&[
        "token",
        "--token-secret",
        SECRET,
        "--user",
        "alice",
        "--ttl",
        "1s",
    ]);
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let token = text(&minted.stdout).trim().to_owned();
    // Wait for the token's own expiry time to pass (a clock event, nothing else to wait for).
    let exp = expiry(&token);
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        <= exp
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = kilat(&["pub", "--url", &url, "--token", &token, "chat:room", "1"]);
    let _ = std::fs::remove_file(path);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("expired"), "{stderr}");
    assert!(
        stderr.contains("kilat token"),
        "the hint says how to get a new token: {stderr}"
    );
}

/// A node that answers the upgrade with 503 (here: draining) is there; the hint says so
/// instead of asking whether a server is listening.
#[test]
fn a_draining_server_gets_a_503_hint_not_is_anything_listening() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Guard(
        Command::new(KILAT)
            .args(["serve", "--listen", &listen])
            .env("KILAT_NODE_ALLOW_ANONYMOUS", "true")
            .env("KILAT_SERVER_DRAIN_GRACE", "30")
            .env("KILAT_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kilat"),
    );
    wait_ready(port, Some("/ready"));
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Until the signal is handled the refusal is 403 (no client publish); then the drain's
    // first phase answers new connections 503 while the port stays open.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = kilat(&[
            "pub",
            "--url",
            &format!("ws://{listen}/connection/websocket"),
            "x",
            "1",
        ]);
        let stderr = text(&out.stderr);
        if stderr.contains("503") {
            assert!(stderr.contains("draining"), "{stderr}");
            assert!(!stderr.contains("is a kilat server listening"), "{stderr}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never 503: {stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kilat sub CHANNEL` on a dev server, waiting (on its log, bounded) until it is subscribed.
fn follow(
    url: &str,
    channel: &str,
) -> (
    Guard,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut child = Command::new(KILAT)
        .args(["sub", "--url", url, channel])
        .env("KILAT_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KILAT_URL")
        .env_remove("KILAT_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kilat sub");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let guard = Guard(child);
    // the log line comes once the subscribe reply is in; a reader thread bounds the wait
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if line.contains("subscribed; printing publications") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("kilat sub to subscribe within 15 s");
    (guard, std::io::BufReader::new(stdout).lines())
}

#[test]
fn pub_publishes_a_file_and_stdin_as_bytes() {
    use std::io::Write as _;
    let (_server, url, path) = serve("binary", "", &["--dev"]);
    let _ = std::fs::remove_file(path);
    let (_sub, mut lines) = follow(&url, "media:cam");

    // every byte value, not UTF-8, not JSON
    let bytes: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let file = std::env::temp_dir().join(format!("kilat-cli-bytes-{}.bin", free_port()));
    std::fs::write(&file, &bytes).expect("write bytes");
    let output = kilat(&[
        "publish",
        "--url",
        &url,
        "media:cam",
        "--file",
        file.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "pub --file: {}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "{\"channel\":\"media:cam\",\"offset\":1}\n"
    );

    let mut child = Command::new(KILAT)
        .args(["pub", "--url", &url, "media:cam", "--binary"])
        .env("KILAT_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kilat pub --binary");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&[0xff, 0x00, b'\n', 0x80])
        .expect("write stdin");
    let output = child.wait_with_output().expect("pub --binary");
    assert!(
        output.status.success(),
        "pub --binary: {}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "{\"channel\":\"media:cam\",\"offset\":2}\n"
    );

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut next = || -> serde_json::Value {
        let line = lines
            .next()
            .expect("a publication line")
            .expect("read line");
        serde_json::from_str(&line).expect("JSON line")
    };
    let first = next();
    assert_eq!(first["offset"], 1);
    assert!(
        first.get("data").is_none(),
        "a binary publication has no JSON data: {first}"
    );
    assert_eq!(
        b64.decode(first["b64data"].as_str().expect("b64data"))
            .expect("base64"),
        bytes
    );
    let second = next();
    assert_eq!(second["offset"], 2);
    assert_eq!(
        b64.decode(second["b64data"].as_str().expect("b64data"))
            .expect("base64"),
        [0xff, 0x00, b'\n', 0x80]
    );
}

#[test]
fn pub_with_bytes_explains_its_mistakes() {
    // a missing file: said before connecting (no server needed), with what --file wants
    let output = kilat(&[
        "pub",
        "--url",
        "ws://127.0.0.1:9/x",
        "c",
        "--file",
        "/nonexistent/cat.jpg",
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/cat.jpg"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: --file takes the path"), "{stderr}");

    // JSON and bytes at once: refused by the argument parser, naming both
    let output = kilat(&["pub", "c", "{}", "--binary"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("--binary") && stderr.contains("JSON"),
        "{stderr}"
    );

    // neither: the parser says what is missing
    let output = kilat(&["pub", "c"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("<JSON>"),
        "{}",
        text(&output.stderr)
    );

    // text that is not JSON points at the byte options
    let output = kilat(&["pub", "c", "not json"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("--file PATH or --binary"),
        "{}",
        text(&output.stderr)
    );

    // too large for the server's WebSocket message limit (64 KiB, here 100,000 bytes as
    // base64): the server drops the connection, and the error says why that may be
    let (_server, url, path) = serve("toolarge", "", &["--dev"]);
    let _ = std::fs::remove_file(path);
    let file = std::env::temp_dir().join(format!("kilat-cli-big-{}.bin", free_port()));
    std::fs::write(&file, vec![7u8; 100_000]).expect("write bytes");
    let output = kilat(&[
        "pub",
        "--url",
        &url,
        "media:big",
        "--file",
        file.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_file(&file);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("publishing 100000 bytes"), "{stderr}");
    assert!(
        stderr.contains("max_message_size (64 KiB by default"),
        "{stderr}"
    );

    // --help teaches bytes
    let output = kilat(&["pub", "--help"]);
    let help = text(&output.stdout);
    assert!(
        help.contains("--file <PATH>") && help.contains("--binary") && help.contains("b64data"),
        "{help}"
    );
}
