//! Standalone echo server for conformance runs without the CLI:
//! `cargo run --release -p kilat-transport --example echo -- 127.0.0.1:9001 [max_message_size] [--no-deflate]`

use anyhow::Context as _;
use kilat_transport::ws::{WsConfig, echo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map_or("127.0.0.1:9001", String::as_str);
    let max_message_size = match args.get(1).filter(|a| !a.starts_with("--")) {
        Some(n) => n.parse().context("max_message_size must be a number")?,
        None => 16 << 20,
    };
    let deflate = !args.iter().any(|a| a == "--no-deflate");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("echo listening on {}", listener.local_addr()?);
    let config = WsConfig {
        max_message_size,
        deflate,
        ..WsConfig::default()
    };
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    echo::serve(listener, config, ctrl_c).await?;
    Ok(())
}
