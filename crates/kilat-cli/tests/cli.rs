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
