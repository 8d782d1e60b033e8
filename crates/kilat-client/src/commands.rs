//! Commands with acknowledgement, the device side (docs/use-cases.md, "Commands with
//! acknowledgement"; the JS SDK's `src/commands.js` has the sender and the same receiver).
//!
//! A device subscribes to its channel (`device:<id>`) with [`SubscribeOptions::recoverable`],
//! so commands sent while it was offline are recovered when it reconnects. Each publication
//! goes through [`CommandReceiver::accept`], which returns a [`Command`] the first time its id
//! is seen (never for acks, other data or a repeat), and the device answers with
//! [`acknowledge`]: `Delivered` on receipt, then `Done` or `Failed`.
//!
//! Wire format: a command is `{"cmd": {"id", "name", "args", "sent"}}`, an ack
//! `{"ack": {"id", "status": "delivered" | "done" | "failed", "result"?, "error"?}}`.
//!
//! [`SubscribeOptions::recoverable`]: crate::SubscribeOptions::recoverable

use std::collections::{HashSet, VecDeque};

use kilat_protocol::RawJson;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Client, Result};

/// Ids remembered to refuse repeats.
const REMEMBERED: usize = 1000;

/// A command for a device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Command {
    /// Unique per command (the sender chooses it).
    pub id: String,
    /// What to do, e.g. `relay`.
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Value,
    /// When it was sent (ms since 1970), if the sender said.
    #[serde(default)]
    pub sent: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    cmd: Option<Command>,
}

/// The state an acknowledgement reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// The device received the command (sent before running it).
    Delivered,
    /// The device ran it, with this result.
    Done(Value),
    /// The device could not run it, with this message.
    Failed(String),
}

/// Picks a device's commands out of its channel's publications, once per id.
#[derive(Debug, Default)]
pub struct CommandReceiver {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl CommandReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The command in `data` if it is one and its id was not seen before (among the last
    /// 1000); `None` for acks, other publications and repeats (a sender's retry).
    pub fn accept(&mut self, data: &RawJson) -> Option<Command> {
        let command = serde_json::from_str::<Envelope>(data.get()).ok()?.cmd?;
        if command.id.is_empty() || !self.seen.insert(command.id.clone()) {
            return None;
        }
        self.order.push_back(command.id.clone());
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        Some(command)
    }
}

/// Publishes the acknowledgement `ack` of command `id` in `channel` (the device's channel).
///
/// # Errors
/// The publish's errors (not connected, permission, ...).
pub async fn acknowledge(client: &Client, channel: &str, id: &str, ack: &Ack) -> Result<()> {
    let body = match ack {
        Ack::Delivered => serde_json::json!({"id": id, "status": "delivered"}),
        Ack::Done(result) => serde_json::json!({"id": id, "status": "done", "result": result}),
        Ack::Failed(error) => serde_json::json!({"id": id, "status": "failed", "error": error}),
    };
    client
        .publish(channel, &serde_json::json!({ "ack": body }))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kilat_protocol::types::raw_json;

    #[test]
    fn commands_are_accepted_once_and_acks_never() {
        let mut receiver = CommandReceiver::new();
        let command = raw_json(r#"{"cmd":{"id":"c1","name":"relay","args":{"on":true},"sent":5}}"#)
            .expect("json");
        let accepted = receiver.accept(&command).expect("a command");
        assert_eq!(accepted.name, "relay");
        assert_eq!(accepted.args, serde_json::json!({"on": true}));
        assert_eq!(receiver.accept(&command), None, "a repeat is refused");
        for other in [
            r#"{"ack":{"id":"c1","status":"done"}}"#,
            r#"{"cmd":{"id":"","name":"x"}}"#,
            r#"{"cmd":{"name":"no id"}}"#,
            r#"[1]"#,
            r#"{"temp":21.5}"#,
        ] {
            assert_eq!(
                receiver.accept(&raw_json(other).expect("json")),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn old_ids_are_forgotten_past_the_bound() {
        let mut receiver = CommandReceiver::new();
        let command =
            |i: usize| raw_json(&format!(r#"{{"cmd":{{"id":"c{i}","name":"n"}}}}"#)).expect("json");
        for i in 0..=REMEMBERED {
            assert!(receiver.accept(&command(i)).is_some());
        }
        assert_eq!(receiver.seen.len(), REMEMBERED);
        assert!(receiver.accept(&command(REMEMBERED)).is_none());
    }
}
