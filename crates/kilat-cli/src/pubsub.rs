//! `kilat pub` and `kilat sub`: publish to and follow channels from the command line, through
//! `kilat-client` (so `sub` reconnects and recovers missed publications like any SDK).
//!
//! Output is made for pipes: stdout gets one JSON object per line and nothing else; status
//! (connects, reconnects, recovery) goes to stderr through the log. A closed stdout (`| head`)
//! ends `sub` successfully.

use std::io::Write;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use kilat_client::{
    CODE_CLOSED, Client, ClientConfig, ClientInfo, Error, Event, Publication, RawJson,
    SubscribeOptions,
};
use serde::Serialize;

const DEFAULT_URL: &str = "ws://127.0.0.1:8000/connection/websocket";

/// Where the server is and who we are.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// WebSocket endpoint of the server.
    #[arg(long, short = 'u', env = "KILAT_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,
    /// Connection token (a JWT signed with the server's token key). Not needed against
    /// `kilat serve --dev`.
    #[arg(
        long,
        short = 't',
        env = "KILAT_TOKEN",
        value_name = "JWT",
        hide_env_values = true
    )]
    token: Option<String>,
}

impl ConnectionArgs {
    fn config(&self, reconnect: bool) -> ClientConfig {
        ClientConfig {
            token: self.token.clone(),
            name: "kilat-cli".to_owned(),
            reconnect,
            ..ClientConfig::new(self.url.clone())
        }
    }
}

/// Follow channels: print every publication as one JSON line.
#[derive(Debug, Args)]
#[command(after_help = SUB_EXAMPLES)]
pub(crate) struct SubArgs {
    /// Channels to subscribe to (`[namespace:]name`).
    #[arg(required = true, value_name = "CHANNEL")]
    channels: Vec<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Also print join and leave events (`{"event":"join","channel",...,"info":{...}}`).
    #[arg(long)]
    join_leave: bool,
    /// Exit on the first connection loss instead of reconnecting and recovering.
    #[arg(long)]
    no_reconnect: bool,
}

const SUB_EXAMPLES: &str = "\
Output, one JSON object per line on stdout:
  {\"channel\":\"chat:lobby\",\"offset\":42,\"data\":{\"text\":\"hi\"},\"info\":{\"client\":\"...\",\"user\":\"\"}}
offset is null in channels without history; info is present for client publications.

After a lost connection, sub reconnects (backoff with jitter) and recovers what it missed from
the channel's history, so the output has no gap and no duplicate. When recovery is impossible
(server restart, history window passed) it says so on stderr and carries on.

Examples:
  kilat sub chat:lobby
  kilat sub chat:lobby news --join-leave
  kilat sub chat:lobby | jq -c .data
  KILAT_URL=ws://10.0.0.5:8000/connection/websocket KILAT_TOKEN=$ALICE_JWT kilat sub 'dm:#alice,bob'";

/// Publish JSON (or bytes) to a channel and print the offset it got.
#[derive(Debug, Args)]
#[command(after_help = PUB_EXAMPLES)]
pub(crate) struct PubArgs {
    /// The channel (`[namespace:]name`).
    #[arg(value_name = "CHANNEL")]
    channel: String,
    /// The payload as JSON text, or `-` to read JSON values from stdin, one per line, and
    /// publish each in order. Not with --file or --binary.
    #[arg(
        value_name = "JSON",
        required_unless_present_any = ["file", "binary"],
        conflicts_with_all = ["file", "binary"]
    )]
    data: Option<String>,
    /// Publish the bytes of this file, as they are, as one binary publication (subscribers get
    /// bytes: a Uint8Array in the JS SDK, `b64data` in JSON).
    #[arg(long, short = 'f', value_name = "PATH", conflicts_with = "binary")]
    file: Option<std::path::PathBuf>,
    /// Read stdin to its end and publish the bytes as one binary publication.
    #[arg(long)]
    binary: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

/// Most bytes `pub --file`/`--binary` reads: far above any sensible max_message_size (64 KiB by
/// default), low enough that a wrong path (a disk image) fails at once instead of eating memory.
const MAX_BINARY_BYTES: u64 = 16 * 1024 * 1024;

const PUB_EXAMPLES: &str = "\
Prints one line per publication: {\"channel\":\"chat:lobby\",\"offset\":43}

The payload must be JSON: a string needs its quotes (kilat pub chat:lobby '\"hello\"').
Bytes (an image, a media chunk, a protobuf message) go as a binary publication with --file or
--binary: no JSON, no base64 to do yourself; JSON subscribers get them as base64 (b64data),
MessagePack subscribers and the SDKs as raw bytes. The namespace's max_message_size (64 KiB by
default) counts the bytes.
Client publish must be allowed in the channel's namespace (allow_publish; always in --dev).
In a namespace that lets only subscribers publish (allow_publish = \"subscribers\"), pub
subscribes to the channel first and stays subscribed until it is done (others may see it join).
Where clients may not publish at all, publish through the server API: POST /api/publish
(docs/api.md; bytes as {\"channel\":...,\"b64data\":\"...\"}).

Examples:
  kilat pub chat:lobby '{\"text\":\"hi\"}'
  kilat pub counters 42
  seq 1 100 | kilat pub numbers -
  tail -f events.ndjson | kilat pub events -
  kilat pub photos:inbox --file cat.jpg
  head -c 1000 /dev/urandom | kilat pub noise --binary";

/// Runs `kilat sub` until Ctrl-C, a closed stdout, or a connection loss it must not retry.
///
/// # Errors
/// When the server is unreachable or refuses the connection or a subscription, and when the
/// connection is lost for good (`--no-reconnect`, or a 3500-3999 disconnect).
pub(crate) async fn sub(args: SubArgs) -> Result<()> {
    let config = args.connection.config(!args.no_reconnect);
    let (client, mut events) = Client::connect(config)
        .await
        .map_err(|e| explain(&format!("connecting to {}", args.connection.url), &e))?;
    let options = SubscribeOptions {
        join_leave: args.join_leave.then_some(true),
        ..SubscribeOptions::recoverable()
    };
    for channel in &args.channels {
        client
            .subscribe(channel.as_str(), options.clone())
            .await
            .map_err(|e| explain(&format!("subscribing to {channel:?}"), &e))?;
    }
    tracing::info!(url = %args.connection.url, channels = ?args.channels, "subscribed; printing publications to stdout");

    // `Stdout`, not a held `StdoutLock`: the lock is not `Send` and must not live across awaits.
    let mut out = std::io::stdout();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        // Wakes: Ctrl-C, or the next client event (publication, join/leave, reconnect, ...).
        let event = tokio::select! {
            _ = &mut ctrl_c => {
                close(&client, &mut events).await;
                return Ok(());
            }
            event = events.next() => event,
        };
        let Some(event) = event else {
            return Ok(());
        };
        let printed = match event {
            Event::Publication {
                channel,
                publication,
            } => print_line(&mut out, &PublicationLine::new(&channel, &publication)),
            Event::Join { channel, info } if args.join_leave => {
                print_line(&mut out, &PresenceLine::new("join", &channel, &info))
            }
            Event::Leave { channel, info } if args.join_leave => {
                print_line(&mut out, &PresenceLine::new("leave", &channel, &info))
            }
            Event::Message { data } => print_line(&mut out, &MessageLine::new(&data)),
            Event::Disconnected {
                code,
                reason,
                reconnect: false,
            } => return final_disconnect(code, &reason),
            other => {
                report(other);
                Ok(())
            }
        };
        match printed {
            Ok(()) => {}
            // `kilat sub ... | head`: the reader is done, so are we.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                close(&client, &mut events).await;
                return Ok(());
            }
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
}

/// The end of `sub`: success after our own close, an error (exit 1) when the server or the
/// network ended it.
fn final_disconnect(code: u16, reason: &str) -> Result<()> {
    if code == CODE_CLOSED {
        return Ok(());
    }
    let rule = if (3500..4000).contains(&code) {
        " (the server forbids reconnecting)"
    } else {
        " (--no-reconnect)"
    };
    Err(anyhow!("connection lost for good: {code} {reason}{rule}"))
}

/// Status events go to stderr, through the log.
fn report(event: Event) {
    match event {
        Event::Connected {
            client,
            reconnected: true,
        } => tracing::info!(%client, "reconnected"),
        Event::Disconnected {
            code,
            reason,
            reconnect: true,
        } => tracing::warn!(code, %reason, "connection lost; reconnecting"),
        Event::Reconnecting { attempt, delay } => {
            tracing::info!(attempt, delay_ms = delay.as_millis(), "reconnecting");
        }
        Event::Subscribed {
            channel,
            recovered,
            resubscribed: true,
            recovering,
            ..
        } => {
            if recovered || !recovering {
                tracing::info!(%channel, recovered, "resubscribed");
            } else {
                tracing::warn!(
                    %channel,
                    "resubscribed but could not recover missed publications (server restarted or history window passed): the output may have a gap here"
                );
            }
        }
        Event::Unsubscribed {
            channel,
            code,
            reason,
        } => tracing::warn!(%channel, code, %reason, "unsubscribed by the server"),
        Event::SubscribeFailed { channel, error } => {
            tracing::error!(%channel, %error, "resubscribe refused; no longer following this channel");
        }
        Event::RefreshRequested { channel, .. } => tracing::warn!(
            channel = channel.as_deref().unwrap_or(""),
            "the server asks for a fresh token; kilat sub cannot refresh, the server will disconnect when it expires"
        ),
        _ => {}
    }
}

/// Runs `kilat pub`: publishes the payload (or every line of stdin) and prints each offset.
///
/// # Errors
/// When the payload is not JSON, the server is unreachable, or a publish is refused.
pub(crate) async fn publish(args: PubArgs) -> Result<()> {
    // One-shot payloads are read and checked before connecting: a typo should not need a server.
    let payload = match (&args.data, &args.file) {
        (Some(text), _) if text == "-" => Payload::JsonLines,
        (Some(text), _) => Payload::Json(parse_json(text).map_err(|e| {
            anyhow!("the payload is not JSON: {e}\nhint: a string needs its quotes: '\"{text}\"'; for bytes use --file PATH or --binary")
        })?),
        (None, Some(path)) => Payload::Bytes(read_file(path)?),
        (None, None) => Payload::Bytes(read_stdin_bytes()?),
    };
    let (client, mut events) = Client::connect(args.connection.config(false))
        .await
        .map_err(|e| explain(&format!("connecting to {}", args.connection.url), &e))?;
    let mut out = std::io::stdout();
    let mut publisher = Publisher {
        client: &client,
        channel: &args.channel,
        subscribed: false,
    };
    let result = match payload {
        Payload::Json(data) => publisher.publish(Data::Json(data), &mut out).await,
        Payload::Bytes(bytes) => publisher.publish(Data::Bytes(bytes), &mut out).await,
        Payload::JsonLines => publish_stdin(&mut publisher, &mut out).await,
    };
    close(&client, &mut events).await;
    result
}

/// What `pub` publishes.
enum Payload {
    Json(RawJson),
    JsonLines,
    Bytes(Vec<u8>),
}

/// One publication's data.
#[derive(Clone)]
enum Data {
    Json(RawJson),
    Bytes(Vec<u8>),
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow!(
            "cannot read {}: {e}\nhint: --file takes the path of the file whose bytes to publish",
            path.display()
        )
    })?;
    read_bounded(file, &path.display().to_string())
}

fn read_stdin_bytes() -> Result<Vec<u8>> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        tracing::warn!(
            "--binary reads stdin to its end: type the bytes, then Ctrl-D (or pipe a file in)"
        );
    }
    read_bounded(std::io::stdin(), "stdin")
}

/// Reads everything from `source`, at most [`MAX_BINARY_BYTES`].
fn read_bounded(source: impl std::io::Read, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    source
        .take(MAX_BINARY_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_BINARY_BYTES {
        return Err(anyhow!(
            "{what} holds more than {} MiB: one publication cannot carry it\nhint: kilat pub \
             publishes everything as one publication, and a namespace accepts max_message_size \
             bytes (64 KiB by default); split the data into pieces",
            MAX_BINARY_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// Closes the connection and waits briefly for the close frame to go out, so the server logs a
/// clean close rather than a dropped socket.
async fn close(client: &Client, events: &mut kilat_client::Events) {
    client.close();
    let drained = async { while events.next().await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drained).await;
}

async fn publish_stdin(publisher: &mut Publisher<'_>, out: &mut impl Write) -> Result<()> {
    // The workspace's tokio has no `io-std`; a reader thread feeds lines through a small
    // bounded channel, which also keeps a fast producer from racing ahead of the server.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    let mut number = 0u64;
    while let Some(line) = rx.recv().await {
        number += 1;
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let data =
            parse_json(&line).map_err(|e| anyhow!("stdin line {number} is not JSON: {e}"))?;
        publisher.publish(Data::Json(data), out).await?;
    }
    Ok(())
}

/// Publishes to one channel, as a subscriber when the namespace asks for one.
struct Publisher<'a> {
    client: &'a Client,
    channel: &'a str,
    /// Whether `pub` subscribed to publish as a subscriber (`allow_publish = "subscribers"`).
    subscribed: bool,
}

impl Publisher<'_> {
    async fn send(&self, data: &Data) -> kilat_client::Result<kilat_client::PublishResult> {
        match data {
            Data::Json(json) => self.client.publish_raw(self.channel, json.clone()).await,
            Data::Bytes(bytes) => self.client.publish_bytes(self.channel, bytes).await,
        }
    }

    async fn publish(&mut self, data: Data, out: &mut impl Write) -> Result<()> {
        let channel = self.channel;
        let what = match &data {
            Data::Json(_) => format!("publishing to {channel:?}"),
            Data::Bytes(b) => format!("publishing {} bytes to {channel:?}", b.len()),
        };
        let result = match self.send(&data).await {
            // Refused: the namespace may let only subscribers publish. The server does not say
            // which rule refused, so subscribe (without join/leave pushes) and try once more.
            Err(Error::Server(refusal)) if refusal.code == 403 && !self.subscribed => {
                let options = SubscribeOptions {
                    join_leave: Some(false),
                    ..SubscribeOptions::default()
                };
                if let Err(error) = self.client.subscribe(channel, options).await {
                    tracing::debug!(%error, "subscribing to publish as a subscriber failed");
                    return Err(anyhow!(
                        "{what} failed: {}\nhint: this connection may not publish there. If the \
                         namespace lets subscribers publish (allow_publish = \"subscribers\"), \
                         pub subscribes first, but it may not subscribe either: pass a token for \
                         a user who may (--token). Otherwise publish with the server API: curl \
                         -H \"Authorization: apikey $KEY\" -d '{{\"channel\":\"{channel}\",\
                         \"data\":...}}' http://HOST:8000/api/publish (docs/api.md)",
                        Error::Server(refusal)
                    ));
                }
                self.subscribed = true;
                tracing::debug!(%channel, "publishing as a subscriber of the channel");
                self.send(&data).await
            }
            other => other,
        };
        let result = result.map_err(|e| match (&data, &e) {
            // The server closes a connection whose message is over its WebSocket limit, so
            // the only sign of a too large binary publish is the lost connection.
            (Data::Bytes(bytes), Error::ConnectionLost) => anyhow!(
                "{what} failed: {e}\nhint: the server may have refused a message this large: \
                 kilat pub sends bytes as base64 in JSON ({} bytes here), and a server accepts \
                 WebSocket messages up to [websocket] max_message_size (64 KiB by default, about \
                 48 KiB of bytes); send smaller pieces, or raise the limit and the namespace's \
                 max_message_size",
                bytes.len().div_ceil(3) * 4
            ),
            _ => explain(&what, &e),
        })?;
        print_line(
            out,
            &PublishLine {
                channel,
                offset: result.offset,
            },
        )
        .context("writing to stdout")
    }
}

fn parse_json(text: &str) -> serde_json::Result<RawJson> {
    serde_json::value::RawValue::from_string(text.trim().to_owned())
}

/// Turns a client error into a readable one, with a hint for the usual causes.
fn explain(what: &str, error: &Error) -> anyhow::Error {
    let code = match error {
        Error::Server(e) => Some(e.code),
        Error::Disconnected(d) => Some(u32::from(d.code)),
        _ => None,
    };
    let hint = match (code, error) {
        (Some(401 | 3501), _) => Some(
            "the server wants a valid connection token: pass --token or set KILAT_TOKEN, or run the server with --dev",
        ),
        (Some(410 | 3005), _) => Some(
            "the token has expired: mint a new one (kilat token --user USER --ttl 1h, with the server's --token-secret) or get a fresh one from your backend, and pass it with --token or KILAT_TOKEN",
        ),
        (Some(403), _) if what.starts_with("publishing") => Some(
            "this user may not publish in the namespace (allow_publish): pass a token for a user who may (--token), or publish with the server API (POST /api/publish, docs/api.md)",
        ),
        (Some(403), _) => Some(
            "this connection may not subscribe there: pass a token for a user (--token), or configure allow_subscribe for the namespace",
        ),
        (Some(404), _) => Some(
            "the channel's namespace is not configured on the server (every namespace exists only with --dev)",
        ),
        (Some(400), _) => {
            Some("check the channel name: 1..255 bytes of A-Z a-z 0-9 and _@.,=;/:#-")
        }
        (Some(413), _) => Some("the payload is larger than the namespace's max_message_size"),
        (_, Error::Transport(e)) if is_unavailable(e.as_ref()) => Some(
            "the server answered 503: it is draining (a deploy?) or full, or the load balancer in front has no node up; try again in a moment, or check /ready on the nodes",
        ),
        (_, Error::Transport(_) | Error::Timeout) => Some(
            "is a kilat server listening there? Start one with `kilat serve --dev`, or set --url / KILAT_URL",
        ),
        (_, Error::InvalidUrl { .. }) => {
            Some("the URL looks like ws://127.0.0.1:8000/connection/websocket")
        }
        _ => None,
    };
    match hint {
        Some(hint) => anyhow!("{what} failed: {error}\nhint: {hint}"),
        None => anyhow!("{what} failed: {error}"),
    }
}

/// Whether the WebSocket upgrade was answered 503 (draining, full, or no node behind a load
/// balancer): the server is there, so "is a server listening?" would be the wrong hint.
fn is_unavailable(error: &tokio_tungstenite::tungstenite::Error) -> bool {
    matches!(error, tokio_tungstenite::tungstenite::Error::Http(response) if response.status() == 503)
}

fn print_line(out: &mut impl Write, line: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    // Flush per line: a pipe reader (jq, grep) should see each publication at once.
    out.flush()
}

#[derive(Serialize)]
struct PublicationLine<'a> {
    channel: &'a str,
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::value::RawValue>,
    /// A binary publication's bytes, as base64 (the protocol's JSON form).
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a ClientInfo>,
}

impl<'a> PublicationLine<'a> {
    fn new(channel: &'a str, publication: &'a Publication) -> Self {
        PublicationLine {
            channel,
            offset: publication.offset,
            data: publication.binary.is_none().then_some(&*publication.data),
            b64data: publication.b64data(),
            info: publication.info.as_ref(),
        }
    }
}

#[derive(Serialize)]
struct PresenceLine<'a> {
    event: &'static str,
    channel: &'a str,
    info: &'a ClientInfo,
}

impl<'a> PresenceLine<'a> {
    fn new(event: &'static str, channel: &'a str, info: &'a ClientInfo) -> Self {
        PresenceLine {
            event,
            channel,
            info,
        }
    }
}

#[derive(Serialize)]
struct MessageLine<'a> {
    event: &'static str,
    data: &'a serde_json::value::RawValue,
}

impl<'a> MessageLine<'a> {
    fn new(data: &'a serde_json::value::RawValue) -> Self {
        MessageLine {
            event: "message",
            data,
        }
    }
}

#[derive(Serialize)]
struct PublishLine<'a> {
    channel: &'a str,
    offset: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_lines_keep_data_raw_and_skip_missing_info() {
        let publication = Publication {
            binary: None,
            data: parse_json(r#"{"a": 1}"#).expect("json"),
            offset: Some(3),
            info: None,
        };
        let mut out = Vec::new();
        print_line(&mut out, &PublicationLine::new("c", &publication)).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"channel\":\"c\",\"offset\":3,\"data\":{\"a\": 1}}\n"
        );
        let mut binary = Publication::bytes(vec![0, 1, 255].into());
        binary.offset = Some(4);
        let mut out = Vec::new();
        print_line(&mut out, &PublicationLine::new("c", &binary)).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "{\"channel\":\"c\",\"offset\":4,\"b64data\":\"AAH/\"}\n"
        );
    }

    #[test]
    fn publish_errors_carry_a_hint() {
        let denied = Error::Server(kilat_client::ClientError {
            code: 403,
            message: "permission denied".into(),
            temporary: false,
        });
        let text = explain("publishing to \"x\"", &denied).to_string();
        assert!(text.contains("allow_publish"), "{text}");
    }
}
