//! The well-behaved clients: [`slot`] keeps one client connected at a time for the whole run.
//! Each client subscribes to a few channels, acts now and then (unsubscribe and subscribe
//! another channel, presence, presence_stats, history, token refresh), leaves after a random
//! life (half with a close frame, half by dropping the TCP connection) and is replaced. Every
//! publication it receives is checked against the subscription's position: the per-channel
//! sequence number in the data must follow the previous one (or the subscribe reply's offset)
//! exactly, so a loss, a duplicate or a reordering counts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use super::token::{Rng, mint};
use crate::client::{Conn, OP_TEXT, Target};
use crate::proto::{self, Protocol};

/// The run's phase, broadcast to every task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Churn, publishing, abuse, sampling.
    Run,
    /// No more churn or publishing: clients stay connected, catch up, presence is compared.
    Settle,
    /// Clients leave and report.
    End,
}

/// What the clients counted, over every client of every slot.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Tally {
    pub(super) connects: u64,
    pub(super) connect_errors: u64,
    pub(super) token_clients: u64,
    pub(super) leaves_with_close_frame: u64,
    pub(super) leaves_without_close_frame: u64,
    pub(super) subscribes: u64,
    pub(super) unsubscribes: u64,
    pub(super) presence_queries: u64,
    pub(super) presence_stats_queries: u64,
    pub(super) history_reads: u64,
    pub(super) token_refreshes: u64,
    /// Error replies to any of the above (none expected).
    pub(super) command_errors: u64,
    /// History pages whose publications were out of order or whose data did not match their
    /// offset.
    pub(super) bad_history_pages: u64,
    /// Connections the server closed (none expected for a well-behaved client).
    pub(super) unexpected_disconnects: u64,
    pub(super) delivered: u64,
    pub(super) lost: u64,
    pub(super) duplicated: u64,
    /// Publications whose sequence number differed from their stream offset.
    pub(super) offset_mismatches: u64,
    pub(super) first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.first_error.get_or_insert(e);
    }
}

/// What the client tasks share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) target: Target,
    pub(super) prefix: String,
    pub(super) channels: usize,
    pub(super) subs: usize,
    pub(super) life: f64,
    pub(super) action_every: f64,
    pub(super) token_secret: Option<String>,
    pub(super) phase: watch::Receiver<Phase>,
    /// The last sequence number published on each channel, set when publishing has stopped.
    pub(super) finals: OnceLock<Vec<u64>>,
    pub(super) tally: Mutex<Tally>,
    /// Per channel: the client ids subscribed to it as the clients know it (compared with the
    /// server's presence at the end).
    pub(super) members: Mutex<Vec<HashSet<String>>>,
    /// Clients that have received everything published on their channels after publishing
    /// stopped.
    pub(super) caught_up: AtomicUsize,
    /// Clients connected now.
    pub(super) live: AtomicUsize,
}

impl Shared {
    pub(super) fn channel(&self, c: usize) -> String {
        format!("{}{c}", self.prefix)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<HashSet<String>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One subscription's state.
#[derive(Debug)]
enum Sub {
    /// Subscribe sent; publications that arrive before the reply wait here as (seq, offset).
    Pending(Vec<(u64, u64)>),
    /// The next sequence number expected.
    Active(u64),
}

/// What a command in flight was.
#[derive(Debug)]
enum Pending {
    Subscribe(usize),
    Unsubscribe,
    Presence,
    PresenceStats,
    History,
    Refresh,
}

/// One connected client.
struct Client {
    conn: Conn,
    id: String,
    user: Option<String>,
    subs: HashMap<usize, Sub>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    caught_up: bool,
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps client slot `i` populated for the whole run.
pub(super) async fn slot(i: usize, shared: Arc<Shared>) {
    let mut rng = Rng::new(i as u64 + 1 + proto::now_us());
    let mut phase = shared.phase.clone();
    // Spread the first connects over a second.
    tokio::time::sleep(Duration::from_millis(rng.below(1000) as u64)).await;
    let mut generation = 0u64;
    while *phase.borrow() == Phase::Run {
        generation += 1;
        let user = (shared.token_secret.is_some() && i % 2 == 1).then(|| format!("u{i}"));
        let client = match connect(&shared, user, &mut rng).await {
            Ok(c) => c,
            Err(e) => {
                {
                    let mut t = shared.tally();
                    t.connect_errors += 1;
                    t.error(format!("client {i}: {e:#}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let life = Duration::from_secs_f64(rng.exp(shared.life).max(0.5));
        let leave_with_close = generation.is_multiple_of(2);
        shared.live.fetch_add(1, Ordering::SeqCst);
        let lived = live(
            client,
            &shared,
            &mut rng,
            &mut phase,
            life,
            leave_with_close,
        )
        .await;
        shared.live.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = lived {
            let mut t = shared.tally();
            t.unexpected_disconnects += 1;
            t.error(format!("client {i}: {e:#}"));
        }
    }
}

async fn connect(shared: &Shared, user: Option<String>, rng: &mut Rng) -> Result<Client> {
    let mut conn = crate::client::open(&shared.target, TIMEOUT).await?;
    let mut connect = json!({"id": 1, "connect": {"name": "kilat-bench-soak"}});
    if let (Some(user), Some(secret)) = (&user, &shared.token_secret) {
        connect["connect"]["token"] = json!(mint(secret, user, 3600));
    }
    conn.send_text(connect.to_string().as_bytes()).await?;
    let reply = tokio::time::timeout(TIMEOUT, reply_to(&mut conn, 1))
        .await
        .map_err(|_| anyhow::anyhow!("no connect reply within 10 s"))??;
    let Some(id) = reply["connect"]["client"].as_str() else {
        bail!("connect refused: {reply}");
    };
    {
        let mut t = shared.tally();
        t.connects += 1;
        if user.is_some() {
            t.token_clients += 1;
        }
    }
    let mut client = Client {
        conn,
        id: id.to_owned(),
        user,
        subs: HashMap::new(),
        pending: HashMap::new(),
        next_id: 2,
        caught_up: false,
    };
    let mut chosen = HashSet::new();
    while chosen.len() < shared.subs.min(shared.channels) {
        chosen.insert(rng.below(shared.channels));
    }
    for c in chosen {
        client.subscribe(shared, c).await?;
    }
    Ok(client)
}

/// Reads until the reply with `id` (answering pings), before any subscription exists.
async fn reply_to(conn: &mut Conn, id: u64) -> Result<Value> {
    loop {
        let text = conn.read_text().await?;
        if proto::answer_ping(Protocol::Kilat, OP_TEXT, &text).is_some() {
            conn.send_text(b"{}").await?;
        }
        for line in text.split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<Value>(line)
                && v["id"].as_u64() == Some(id)
            {
                return Ok(v);
            }
        }
    }
}

/// The client's life: read, act, leave when its life ends (or report when the run ends).
async fn live(
    mut c: Client,
    shared: &Shared,
    rng: &mut Rng,
    phase: &mut watch::Receiver<Phase>,
    life: Duration,
    leave_with_close: bool,
) -> Result<()> {
    let leave_at = Instant::now() + life;
    let mut act_at = Instant::now() + Duration::from_secs_f64(rng.exp(shared.action_every));
    loop {
        let now_phase = *phase.borrow();
        match now_phase {
            Phase::Run => {}
            Phase::Settle => c.check_caught_up(shared),
            Phase::End => {
                c.finish(shared);
                let _ = c.conn.send_close(1000).await;
                return Ok(());
            }
        }
        let running = now_phase == Phase::Run;
        tokio::select! {
            r = c.conn.next() => {
                let text = match r {
                    Ok((OP_TEXT, payload)) => payload.to_vec(),
                    Ok(_) => continue,
                    Err(e) => {
                        c.forget(shared);
                        return Err(e);
                    }
                };
                c.receive(shared, &text).await.inspect_err(|_| c.forget(shared))?;
            }
            _ = tokio::time::sleep_until(act_at), if running => {
                act_at = Instant::now() + Duration::from_secs_f64(rng.exp(shared.action_every));
                c.act(shared, rng).await.inspect_err(|_| c.forget(shared))?;
            }
            _ = tokio::time::sleep_until(leave_at), if running => {
                c.forget(shared);
                if leave_with_close {
                    let _ = c.conn.send_close(1000).await;
                    shared.tally().leaves_with_close_frame += 1;
                } else {
                    shared.tally().leaves_without_close_frame += 1;
                }
                return Ok(());
            }
            _ = phase.changed() => {}
        }
    }
}

impl Client {
    async fn send(&mut self, cmd: Value) -> Result<()> {
        tokio::time::timeout(TIMEOUT, self.conn.send_text(cmd.to_string().as_bytes()))
            .await
            .map_err(|_| anyhow::anyhow!("the server did not read a command within 10 s"))?
    }

    async fn command(&mut self, pending: Pending, body: Value) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, pending);
        let mut cmd = body;
        cmd["id"] = json!(id);
        self.send(cmd).await
    }

    async fn subscribe(&mut self, shared: &Shared, c: usize) -> Result<()> {
        self.subs.insert(c, Sub::Pending(Vec::new()));
        shared.tally().subscribes += 1;
        let channel = shared.channel(c);
        self.command(
            Pending::Subscribe(c),
            json!({"subscribe": {"channel": channel}}),
        )
        .await
    }

    /// One random action.
    async fn act(&mut self, shared: &Shared, rng: &mut Rng) -> Result<()> {
        let channel = rng.below(shared.channels);
        let name = shared.channel(channel);
        match rng.below(5) {
            0 => {
                // Move one subscription to a channel this client is not on.
                let active: Vec<usize> = self
                    .subs
                    .iter()
                    .filter(|(_, s)| matches!(s, Sub::Active(_)))
                    .map(|(c, _)| *c)
                    .collect();
                if active.is_empty() || self.subs.len() >= shared.channels {
                    return Ok(());
                }
                let from = active[rng.below(active.len())];
                self.subs.remove(&from);
                shared.members()[from].remove(&self.id);
                shared.tally().unsubscribes += 1;
                let from_name = shared.channel(from);
                self.command(
                    Pending::Unsubscribe,
                    json!({"unsubscribe": {"channel": from_name}}),
                )
                .await?;
                let mut to = rng.below(shared.channels);
                while self.subs.contains_key(&to) || to == from {
                    to = (to + 1) % shared.channels;
                }
                self.subscribe(shared, to).await
            }
            1 => {
                shared.tally().presence_queries += 1;
                self.command(Pending::Presence, json!({"presence": {"channel": name}}))
                    .await
            }
            2 => {
                shared.tally().presence_stats_queries += 1;
                self.command(
                    Pending::PresenceStats,
                    json!({"presence_stats": {"channel": name}}),
                )
                .await
            }
            3 => {
                shared.tally().history_reads += 1;
                self.command(
                    Pending::History,
                    json!({"history": {"channel": name, "limit": 10}}),
                )
                .await
            }
            _ => {
                let (Some(user), Some(secret)) = (&self.user, &shared.token_secret) else {
                    return Ok(());
                };
                let token = mint(secret, user, 3600);
                shared.tally().token_refreshes += 1;
                self.command(Pending::Refresh, json!({"refresh": {"token": token}}))
                    .await
            }
        }
    }

    /// Handles one text message (possibly several newline-separated frames).
    async fn receive(&mut self, shared: &Shared, text: &[u8]) -> Result<()> {
        let mut pong = false;
        for line in text.split(|b| *b == b'\n') {
            if line == b"{}" {
                pong = true;
                continue;
            }
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                let mut t = shared.tally();
                t.command_errors += 1;
                t.error(format!(
                    "unparsable frame: {}",
                    String::from_utf8_lossy(line)
                ));
                continue;
            };
            if let Some(id) = v["id"].as_u64() {
                self.reply(shared, id, &v);
            } else if let Some(push) = v.get("push") {
                if let Some(d) = push.get("disconnect") {
                    bail!("disconnected by the server: {d}");
                }
                if let Some(p) = push.get("pub")
                    && let Some(name) = push["channel"].as_str()
                {
                    self.publication(shared, name, p);
                }
            }
        }
        if pong {
            self.send(json!({})).await?;
        }
        if *shared.phase.borrow() == Phase::Settle {
            self.check_caught_up(shared);
        }
        Ok(())
    }

    fn reply(&mut self, shared: &Shared, id: u64, v: &Value) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        if let Some(e) = v.get("error") {
            // An unsubscribe-then-subscribe race cannot fail; every error is unexpected.
            let mut t = shared.tally();
            t.command_errors += 1;
            t.error(format!("{pending:?} refused: {e}"));
            if let Pending::Subscribe(c) = pending {
                self.subs.remove(&c);
            }
            return;
        }
        match pending {
            Pending::Subscribe(c) => {
                let Some(Sub::Pending(early)) = self.subs.remove(&c) else {
                    return;
                };
                let offset = v["subscribe"]["offset"].as_u64().unwrap_or(0);
                self.subs.insert(c, Sub::Active(offset + 1));
                shared.members()[c].insert(self.id.clone());
                for (seq, off) in early {
                    if off > offset {
                        self.check(shared, c, seq, off);
                    }
                }
            }
            Pending::History => {
                let pubs = v["history"]["publications"].as_array();
                let mut prev = 0;
                let ok = pubs.is_some_and(|pubs| {
                    pubs.iter().all(|p| {
                        let off = p["offset"].as_u64().unwrap_or(0);
                        let seq = p["data"]["s"].as_u64().unwrap_or(u64::MAX);
                        let ok = off > prev && seq == off;
                        prev = off;
                        ok
                    })
                });
                if !ok {
                    let mut t = shared.tally();
                    t.bad_history_pages += 1;
                    t.error(format!("bad history page: {v}"));
                }
            }
            Pending::Presence => {
                if !v["presence"]["clients"].is_object() {
                    let mut t = shared.tally();
                    t.command_errors += 1;
                    t.error(format!("bad presence reply: {v}"));
                }
            }
            Pending::Unsubscribe | Pending::PresenceStats | Pending::Refresh => {}
        }
    }

    fn publication(&mut self, shared: &Shared, name: &str, p: &Value) {
        let Some(c) = name
            .strip_prefix(shared.prefix.as_str())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        let seq = p["data"]["s"].as_u64().unwrap_or(0);
        let off = p["offset"].as_u64().unwrap_or(0);
        match self.subs.get_mut(&c) {
            Some(Sub::Pending(early)) => early.push((seq, off)),
            Some(Sub::Active(_)) => self.check(shared, c, seq, off),
            // After an unsubscribe was sent: what was in flight may still come.
            None => {}
        }
    }

    /// Checks one publication on an active subscription against the next expected number.
    fn check(&mut self, shared: &Shared, c: usize, seq: u64, off: u64) {
        let Some(Sub::Active(next)) = self.subs.get_mut(&c) else {
            return;
        };
        let mut t = shared.tally();
        if seq != off {
            t.offset_mismatches += 1;
        }
        if seq < *next {
            t.duplicated += 1;
            return;
        }
        if seq > *next {
            t.lost += seq - *next;
            t.error(format!(
                "channel {c}: expected publication {} and got {seq}",
                *next
            ));
        }
        t.delivered += 1;
        *next = seq + 1;
    }

    /// After publishing stopped: counts this client once it has everything.
    fn check_caught_up(&mut self, shared: &Shared) {
        if self.caught_up {
            return;
        }
        let Some(finals) = shared.finals.get() else {
            return;
        };
        let done = self.subs.iter().all(|(c, s)| match s {
            Sub::Active(next) => *next > finals[*c],
            Sub::Pending(_) => false,
        });
        if done {
            self.caught_up = true;
            shared.caught_up.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// At the end: what never arrived is lost.
    fn finish(&mut self, shared: &Shared) {
        let Some(finals) = shared.finals.get() else {
            return;
        };
        let mut t = shared.tally();
        for (c, s) in &self.subs {
            match s {
                Sub::Active(next) => t.lost += (finals[*c] + 1).saturating_sub(*next),
                Sub::Pending(_) => {
                    t.command_errors += 1;
                    t.error(format!("subscribe to channel {c} never answered"));
                }
            }
        }
    }

    /// The client is gone: it is no longer on any channel.
    fn forget(&mut self, shared: &Shared) {
        let mut m = shared.members();
        for c in self.subs.keys() {
            m[*c].remove(&self.id);
        }
        drop(m);
        self.subs.clear();
    }
}
