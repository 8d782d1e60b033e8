//! Server-to-client replies: `{"id", "<method>": {result}}` or `{"id", "error": {...}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codes::ClientError;
use crate::types::{Publication, RawJson};

/// `connect` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectResult {
    /// The connection id chosen by the server (a UUID).
    pub client: String,
    /// Server version.
    pub version: String,
    /// Ping interval in seconds: the server sends `{}` this often.
    pub ping: u32,
    /// Whether the connection expires (token with `exp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<bool>,
    /// Seconds until the connection expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Subscriptions made while connecting (`connect.subs` and server-side ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subs: Option<BTreeMap<String, SubscribeResult>>,
    /// Session id for emulated transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Node id for emulated transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `subscribe` result (also the body of a `subscribe` push and of each `connect.subs` entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Whether the channel keeps history, so the client can recover later.
    pub recoverable: bool,
    /// The channel stream's epoch (`""` when not recoverable).
    pub epoch: String,
    /// The stream position: the last offset delivered in this result (the top of the stream
    /// when nothing was recovered).
    pub offset: u64,
    /// True when every publication after the client's position was recovered.
    pub recovered: bool,
    /// Recovered publications, ascending by offset.
    pub publications: Vec<Publication>,
    /// Whether the subscription is positioned (offset/epoch are meaningful to recover from).
    pub positioned: bool,
    /// True when `publications` are the latest publication of each key (a namespace with
    /// `latest`), not recovered ones: the state to start from (kilat addition).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    /// True when the subscription asked for `delta: "fossil"` and got it: its live `pub` pushes
    /// carry `data` as a JSON string (the payload's text, or a delta with `"delta": true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    /// `true` when the subscription token expires (kilat addition, as in the connect result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<bool>,
    /// Seconds until the subscription token expires; refresh it with `sub_refresh` before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// `unsubscribe` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmptyResult {}

/// `publish` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishResult {
    /// The publication's offset when the channel keeps history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// One entry of a `presence` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// The user id.
    pub user: String,
    /// Connection info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<RawJson>,
}

/// `presence` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceResult {
    /// Present connections by client id (one page of them).
    pub clients: BTreeMap<String, PresenceEntry>,
    /// Where the next page starts (pass it back as the request's `cursor`); absent on the last
    /// page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// `presence_stats` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PresenceStatsResult {
    /// Connections present.
    pub num_clients: u32,
    /// Distinct users among them.
    pub num_users: u32,
}

/// `history` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryResult {
    /// The publications (ascending, or descending with `reverse`).
    pub publications: Vec<Publication>,
    /// The stream's current top offset.
    pub offset: u64,
    /// The stream's epoch.
    pub epoch: String,
    /// True when the page was cut short to keep the reply under the connection's queue size
    /// (`client_queue_max_bytes`): more publications match. Ask again with `since` at the last
    /// publication returned (forward paging); a cut `reverse` page holds the newest ones.
    #[serde(default, skip_serializing_if = "crate::types::is_false")]
    pub more: bool,
}

impl HistoryResult {
    /// Keeps the leading publications whose estimated encoded size fits `budget` bytes (at least
    /// one), and sets [`HistoryResult::more`] when any were cut.
    pub fn cut_to(&mut self, budget: usize) {
        let mut used = 0usize;
        let keep = self
            .publications
            .iter()
            .position(|p| {
                used = used.saturating_add(p.encoded_len_estimate());
                used > budget
            })
            .map_or(self.publications.len(), |at| at.max(1));
        if keep < self.publications.len() {
            self.publications.truncate(keep);
            self.more = true;
        }
    }
}

/// `rpc` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RpcResult {
    /// The handler's answer, kept raw.
    pub data: RawJson,
}

/// `refresh` and `sub_refresh` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshResult {
    /// Whether the connection (or subscription) expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<bool>,
    /// Seconds until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// A successful reply's result, tagged by method.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// `connect`
    Connect(ConnectResult),
    /// `subscribe`
    Subscribe(SubscribeResult),
    /// `unsubscribe`
    Unsubscribe(EmptyResult),
    /// `publish`
    Publish(PublishResult),
    /// `presence`
    Presence(PresenceResult),
    /// `presence_stats`
    PresenceStats(PresenceStatsResult),
    /// `history`
    History(HistoryResult),
    /// `rpc`
    Rpc(RpcResult),
    /// `refresh`
    Refresh(RefreshResult),
    /// `sub_refresh`
    SubRefresh(RefreshResult),
}

impl Reply {
    /// Serialises `{"id": id, "<method>": result}`.
    pub fn encode(&self, id: u32) -> Vec<u8> {
        with_id(id, &serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Serialises an error reply `{"id": id, "error": {...}}`.
pub fn encode_error(id: u32, error: &ClientError) -> Vec<u8> {
    let mut out = format!("{{\"id\":{id},\"error\":").into_bytes();
    out.extend_from_slice(&serde_json::to_vec(error).unwrap_or_default());
    out.push(b'}');
    out
}

/// Turns a one-key object `{"k":v}` into `{"id":id,"k":v}` without re-parsing it.
pub(crate) fn with_id(id: u32, tagged: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tagged.len() + 16);
    out.extend_from_slice(format!("{{\"id\":{id}").as_bytes());
    match tagged {
        [b'{', b'}'] | [] => out.push(b'}'),
        [b'{', rest @ ..] => {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        // Externally tagged enums always serialise as an object; keep the frame valid anyway.
        _ => out.push(b'}'),
    }
    out
}
