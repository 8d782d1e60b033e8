//! `kilat demo feed NAME`: the demos' simulated feeds, published through the server HTTP API
//! (`POST /api/publish`) as an application's backend would. `kilat serve --dev` runs the same
//! feeds in-process against itself.
//!
//! The ticker feed: 500 symbols in `ticker:all` (data `{"sym", "p", "t"}`), each ticking about
//! once a second, and every few seconds a burst in which 5 symbols tick 100 times a second
//! for 3 seconds. Prices are a random walk; the order book is `ticker:book` for `SYM000`.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;

pub(crate) mod monitor;

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(subcommand)]
    command: DemoCommand,
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Run a demo's simulated feed against a kilat server through its HTTP API.
    ///
    /// Example: kilat demo feed ticker --url http://127.0.0.1:8000 --api-key "$KEY"
    Feed(FeedArgs),
    /// Run bots in a game room (/demo/game): each is its own connection that moves at 20
    /// states a second and shoots now and then.
    ///
    /// Example: kilat demo bots --room arena -n 50 --url ws://127.0.0.1:8000/connection/websocket
    Bots(BotsArgs),
    /// Run a simulated device (/demo/iot): publishes temperature, humidity and battery to
    /// iot:readings 4 times a second, and runs the commands sent to device:<id> (relay,
    /// target) with acknowledgement. Its position is kept in --state, so commands sent while
    /// it was down run once when it comes back.
    ///
    /// Example: kilat demo device --id boiler --url ws://127.0.0.1:8000/connection/websocket
    Device(DeviceArgs),
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// The device id (channel device:<id>).
    #[arg(long)]
    id: String,
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// A connection token, when the server requires one.
    #[arg(long)]
    token: Option<String>,
    /// Where the device keeps its stream position across restarts (default: a file in the
    /// temporary directory named after the id).
    #[arg(long)]
    state: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct BotsArgs {
    /// The room (channel game:<room>).
    #[arg(long, default_value = "arena")]
    room: String,
    /// How many bots (each one WebSocket connection).
    #[arg(short = 'n', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    n: u32,
    /// The server's WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8000/connection/websocket")]
    url: String,
    /// A connection token, when the server requires one.
    #[arg(long)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct FeedArgs {
    /// Which feed: `ticker` (500 symbols with bursts, in ticker:all and ticker:book), or
    /// `monitor` (this kilat's /metrics as figures in monitor:<node> every second, and the
    /// alert rules of alerts:ops evaluated against them; /demo/monitor).
    name: String,
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The server API key (api.key); not needed against `kilat serve --dev`.
    #[arg(long, env = "KILAT_API_KEY")]
    api_key: Option<String>,
    /// The monitor feed's node name: figures go to monitor:<node>.
    #[arg(long, default_value = "node")]
    node: String,
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    match args.command {
        DemoCommand::Bots(bots) => run_bots(bots).await,
        DemoCommand::Device(device) => run_device(device).await,
        DemoCommand::Feed(feed) => {
            if feed.name != "ticker" && feed.name != "monitor" {
                bail!(
                    "unknown feed `{}` (hint: the feeds are: ticker, monitor)",
                    feed.name
                );
            }
            if !monitor::valid_node(&feed.node) {
                bail!(
                    "--node must be 1-40 letters, digits, - or _ (it names the channel monitor:<node>)"
                );
            }
            let addr = feed
                .url
                .strip_prefix("http://")
                .context("--url must start with http:// (e.g. http://127.0.0.1:8000)")?
                .trim_end_matches('/')
                .to_owned();
            if feed.name == "monitor" {
                tracing::info!(
                    "monitor feed: figures from http://{addr}/metrics to monitor:{} while watched, alert rules of {} evaluated every second",
                    feed.node,
                    monitor::ALERTS
                );
                return monitor::monitor(addr, feed.api_key, feed.node).await;
            }
            ticker(addr, feed.api_key).await
        }
    }
}

/// A keep-alive HTTP/1.1 connection to the server API.
struct Api {
    addr: String,
    key: Option<String>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl Api {
    async fn connect(&mut self) -> Result<&mut http1::SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("connecting to {} (is kilat running?)", self.addr))?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("set above"))
    }

    /// `GET path` (the body as text), e.g. `/metrics`.
    async fn get(&mut self, path: &str) -> Result<String> {
        let request = hyper::Request::get(path)
            .header("host", self.addr.clone())
            .body(Full::new(Bytes::new()))?;
        let sender = self.connect().await?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "GET {path} answered {status} (hint: /metrics is off with server.metrics = false)"
            );
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn publish(&mut self, channel: &str, data: serde_json::Value) -> Result<()> {
        self.call("publish", json!({"channel": channel, "data": data}))
            .await
            .map(|_| ())
    }

    /// Whether `channel` has subscribers on the server (API `channels`).
    async fn watched(&mut self, channel: &str) -> Result<bool> {
        let reply = self.call("channels", json!({"pattern": channel})).await?;
        let list = reply
            .pointer("/result/channels")
            .or_else(|| reply.get("channels"))
            .and_then(|c| c.as_array())
            .is_some_and(|c| !c.is_empty());
        Ok(list)
    }

    async fn call(&mut self, method: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let body = body.to_string();
        let mut request = hyper::Request::post(format!("/api/{method}"))
            .header("host", self.addr.clone())
            .header("content-type", "application/json");
        if let Some(key) = &self.key {
            request = request.header("authorization", format!("apikey {key}"));
        }
        let request = request.body(Full::new(Bytes::from(body)))?;
        let sender = self.connect().await?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "POST /api/{method} answered {status}: {} (hint: a wrong --api-key gives 401)",
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }
}

/// A tiny xorshift generator: the feed needs cheap noise, not cryptography.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) const SYMBOLS: usize = 500;

/// Runs the ticker feed until the process ends; returns only on an error that is not a
/// dropped connection (those are retried after a second).
pub(crate) async fn ticker(addr: String, key: Option<String>) -> Result<()> {
    let mut api = Api {
        addr,
        key,
        sender: None,
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut noise = Noise(seed);
    let mut prices: Vec<f64> = (0..SYMBOLS).map(|i| 20.0 + (i % 97) as f64 * 3.7).collect();
    let mut burst: Vec<usize> = Vec::new();
    let mut burst_ticks = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks = 0u64;
    let mut active = false;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks % 100 == 1 {
            // Publish only while someone watches (checked each second), so an idle dev server
            // (or a test server) costs one API call a second; on activation every symbol's
            // price goes out once, so the latest-value cache holds all 500.
            let watched = match api.watched("ticker:*").await {
                Ok(watched) => watched,
                Err(error) => {
                    tracing::debug!(%error, "ticker feed: channels call failed");
                    api.sender = None;
                    false
                }
            };
            if watched && !active {
                for (i, price) in prices.iter().enumerate() {
                    api.publish("ticker:all", json!({"sym": format!("SYM{i:03}"), "p": (price * 100.0).round() / 100.0, "t": 0}))
                        .await?;
                }
            }
            active = watched;
        }
        if !active {
            continue;
        }
        // Each 10 ms: 5 random symbols (about once a second each), plus the burst symbols.
        if burst_ticks == 0 && noise.unit() < 0.004 {
            burst = (0..5).map(|_| noise.next() as usize % SYMBOLS).collect();
            burst_ticks = 300;
        }
        let mut moved: Vec<usize> = (0..5).map(|_| noise.next() as usize % SYMBOLS).collect();
        if burst_ticks > 0 {
            burst_ticks -= 1;
            moved.extend(&burst);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for i in moved {
            let step = (noise.unit() - 0.5) * prices[i] * 0.004;
            prices[i] = (prices[i] + step).max(0.01);
            let data = json!({
                "sym": format!("SYM{i:03}"),
                "p": (prices[i] * 100.0).round() / 100.0,
                "t": now,
            });
            if let Err(error) = api.publish("ticker:all", data).await {
                if error.downcast_ref::<hyper::Error>().is_some()
                    || error.downcast_ref::<std::io::Error>().is_some()
                {
                    tracing::warn!(%error, "ticker feed: publish failed; retrying in 1 s");
                    api.sender = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                return Err(error);
            }
        }
        if noise.unit() < 0.1 {
            // The order book of SYM000: 8 levels each side around its price.
            let mid = prices[0];
            let level = |k: usize, side: f64, noise: &mut Noise| {
                json!([
                    ((mid + side * (k as f64 + 1.0) * 0.05) * 100.0).round() / 100.0,
                    1 + noise.next() % 500
                ])
            };
            let bids: Vec<_> = (0..8).map(|k| level(k, -1.0, &mut noise)).collect();
            let asks: Vec<_> = (0..8).map(|k| level(k, 1.0, &mut noise)).collect();
            api.publish(
                "ticker:book",
                json!({"sym": "SYM000", "bids": bids, "asks": asks, "t": now}),
            )
            .await
            .ok();
        }
    }
}

/// One bot: wanders towards random targets at 220 units/s, publishing its state every 50 ms.
async fn bot(index: u32, args: std::sync::Arc<BotsArgs>) -> Result<()> {
    let mut config = kilat_client::ClientConfig::new(args.url.clone());
    config.token = args.token.clone();
    config.name = "kilat-demo-bot".into();
    let (client, _events) = kilat_client::Client::connect(config)
        .await
        .with_context(|| format!("bot {index}: connecting to {}", args.url))?;
    let channel = format!("game:{}", args.room);
    client
        .subscribe(&channel, kilat_client::SubscribeOptions::default())
        .await
        .with_context(|| format!("bot {index}: subscribing to {channel}"))?;
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15 ^ (u64::from(index) + 1).wrapping_mul(0x2545_f491));
    let (mut x, mut y) = (noise.unit() * 800.0, noise.unit() * 600.0);
    let (mut tx, mut ty) = (x, y);
    let (mut shot, mut aim, mut score) = (0u64, 0.0f64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (dx, dy) = (tx - x, ty - y);
        let d = dx.hypot(dy);
        if d < 5.0 {
            tx = 20.0 + noise.unit() * 760.0;
            ty = 20.0 + noise.unit() * 560.0;
        } else {
            let step = (220.0 * 0.05f64).min(d);
            aim = dy.atan2(dx);
            x += dx / d * step;
            y += dy / d * step;
        }
        if noise.unit() < 0.02 {
            shot += 1;
            if noise.unit() < 0.3 {
                score += 1;
            }
        }
        let state = json!({
            "player": format!("bot{index}"), "name": format!("bot {index}"),
            "x": x.round(), "y": y.round(), "score": score, "shot": shot,
            "aim": (aim * 100.0).round() / 100.0,
        });
        if let Err(error) = client.publish(&channel, &state).await {
            tracing::debug!(%error, index, "bot publish failed (reconnecting)");
        }
    }
}

async fn run_bots(args: BotsArgs) -> Result<()> {
    let args = std::sync::Arc::new(args);
    tracing::info!(
        room = %args.room,
        n = args.n,
        "starting {} bots in game:{} at 20 states a second each",
        args.n,
        args.room
    );
    let mut set = tokio::task::JoinSet::new();
    for index in 0..args.n {
        set.spawn(bot(index, args.clone()));
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

/// The simulated device: readings out, commands in (kilat_client::commands), position saved.
async fn run_device(args: DeviceArgs) -> Result<()> {
    use kilat_client::commands::{Ack, CommandReceiver, acknowledge};
    use kilat_client::{Event, StreamPosition, SubscribeOptions};

    if args.id.is_empty()
        || !args
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("--id must be letters, digits, - or _ (it names the channel device:<id>)");
    }
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kilat-device-{}.json", args.id)));
    let since: Option<StreamPosition> = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut config = kilat_client::ClientConfig::new(args.url.clone());
    config.token = args.token.clone();
    config.name = "kilat-demo-device".into();
    let (client, mut events) = kilat_client::Client::connect(config)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let channel = format!("device:{}", args.id);
    client
        .subscribe(
            &channel,
            SubscribeOptions {
                recover: true,
                since: since.clone(),
                ..SubscribeOptions::default()
            },
        )
        .await
        .with_context(|| format!("subscribing to {channel}"))?;
    // Presence of online:<id> says the device is up (consoles only query it).
    client
        .subscribe(format!("online:{}", args.id), SubscribeOptions::default())
        .await
        .context("subscribing to its online channel")?;
    tracing::info!(device = %args.id, state = %state.display(), resumed = since.is_some(), "device online: readings to iot:readings, commands on {channel}");

    let mut noise = Noise(0x2545_f491_4f6c_dd1d ^ (args.id.len() as u64 * 7919));
    let (mut relay, mut target, mut temp, mut humidity, mut battery) =
        (false, 21.0f64, 19.0f64, 45.0f64, 100.0f64);
    let mut receiver = CommandReceiver::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Heating follows the relay towards the target; noise on top.
                let goal = if relay { target + 2.0 } else { 16.0 };
                temp += (goal - temp) * 0.02 + (noise.unit() - 0.5) * 0.1;
                humidity = (humidity + (noise.unit() - 0.5) * 0.5).clamp(20.0, 80.0);
                battery = (battery - 0.002).max(0.0);
                let reading = json!({
                    "device": args.id, "temp": (temp * 10.0).round() / 10.0,
                    "humidity": humidity.round(), "battery": (battery * 10.0).round() / 10.0,
                    "relay": relay, "target": target,
                });
                if let Err(error) = client.publish("iot:readings", &reading).await {
                    tracing::debug!(%error, "reading not published (reconnecting)");
                }
            }
            event = events.next() => {
                let Some(event) = event else { bail!("the client closed") };
                let Event::Publication { channel: c, publication } = event else { continue };
                if c != channel { continue; }
                let Some(command) = receiver.accept(&publication.data) else { continue };
                acknowledge(&client, &channel, &command.id, &Ack::Delivered).await.ok();
                let outcome = match command.name.as_str() {
                    "relay" => match command.args.get("on").and_then(serde_json::Value::as_bool) {
                        Some(on) => { relay = on; Ok(json!({"relay": relay})) }
                        None => Err("relay needs {\"on\": true|false}".to_owned()),
                    },
                    "target" => match command.args.get("celsius").and_then(serde_json::Value::as_f64) {
                        Some(c) if (5.0..=30.0).contains(&c) => { target = c; Ok(json!({"target": target})) }
                        Some(c) => Err(format!("target {c} is out of range 5..30")),
                        None => Err("target needs {\"celsius\": number}".to_owned()),
                    },
                    other => Err(format!("unknown command `{other}` (relay, target)")),
                };
                // One line per execution: what ran, so a run twice would show.
                println!("executed {} {} {}", command.id, command.name, command.args);
                let ack = match outcome { Ok(result) => Ack::Done(result), Err(error) => Ack::Failed(error) };
                acknowledge(&client, &channel, &command.id, &ack).await.ok();
                if let Ok(Some(position)) = client.position(&channel).await {
                    let tmp = state.with_extension("tmp");
                    if std::fs::write(&tmp, serde_json::to_vec(&position)?).is_ok() {
                        std::fs::rename(&tmp, &state).ok();
                    }
                }
            }
        }
    }
}
