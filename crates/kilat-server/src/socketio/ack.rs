//! Acks requested by the server (the server API's `send` with `"ack": true`, docs/socketio.md
//! "Server acks"): the Socket.IO side of a `message` push to one connection.
//!
//! A `send` reaches a connection as the native protocol's `message` push
//! (`{"push":{"message":{"data"}}}`), queued as a per-connection frame (like a reply, never a
//! shared publication). The Socket.IO wire turns it into an EVENT; when the server asked for
//! an ack the push also carries `"ack": id`, the EVENT goes out with that ack id, and the
//! client's ACK (or BINARY_ACK) with the same id completes the caller waiting here.
//!
//! Ack ids come from one counter per node, so they never repeat on a connection; an answer is
//! found by (client id, ack id), so a client can only answer what it was asked. Pending acks are
//! bounded per connection and per node before anything is kept, and dropped when the answer,
//! the caller's timeout or the end of the connection comes first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::packet;

/// Most acks one connection may owe at once.
pub(crate) const MAX_PER_CONNECTION: usize = 64;
/// Most acks this node's connections may owe at once.
pub(crate) const MAX_PER_NODE: usize = 10_000;

/// A client's answer: the ack's arguments (a JSON array, placeholders kept) and its
/// attachments as base64 (a BINARY_ACK), or why there will be none.
pub(crate) type Answer = Result<AckArgs, &'static str>;

/// The arguments of a client's ACK.
#[derive(Debug)]
pub(crate) struct AckArgs {
    /// The JSON array of arguments.
    pub(crate) args: Box<RawValue>,
    /// A BINARY_ACK's attachments, base64, for the placeholders in `args`.
    pub(crate) attachments: Vec<String>,
}

/// Why an ack could not be asked for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection already owes [`MAX_PER_CONNECTION`] acks.
    Connection,
    /// The node's connections already owe [`MAX_PER_NODE`] acks.
    Node,
}

/// The acks this node's Socket.IO connections owe, by client id and ack id.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    next: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_client: HashMap<String, HashMap<u64, oneshot::Sender<Answer>>>,
    total: usize,
}

/// An ack asked for: its id, the answer to come, and the entry's removal when dropped.
pub(crate) struct Asked<'a> {
    pub(crate) id: u64,
    pub(crate) answer: oneshot::Receiver<Answer>,
    acks: &'a Acks,
    client: String,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        self.acks.remove(&self.client, self.id);
    }
}

impl Acks {
    /// Reserves an ack id for `client`, within the bounds (checked before anything is kept).
    pub(crate) fn ask(&self, client: &str) -> Result<Asked<'_>, Refused> {
        let mut inner = self.inner.lock();
        if inner.total >= MAX_PER_NODE {
            return Err(Refused::Node);
        }
        if inner
            .by_client
            .get(client)
            .is_some_and(|owed| owed.len() >= MAX_PER_CONNECTION)
        {
            return Err(Refused::Connection);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        inner
            .by_client
            .entry(client.to_owned())
            .or_default()
            .insert(id, tx);
        inner.total += 1;
        Ok(Asked {
            id,
            answer: rx,
            acks: self,
            client: client.to_owned(),
        })
    }

    /// The client's answer to ack `id` (ignored when it was not asked, or no longer waited for).
    pub(crate) fn answer(&self, client: &str, id: u64, answer: Answer) {
        if let Some(waiting) = self.take(client, id) {
            let _ = waiting.send(answer);
        }
    }

    /// The connection of `client` ended: whoever waits for its acks hears so at once.
    pub(crate) fn forget(&self, client: &str) {
        let mut inner = self.inner.lock();
        if let Some(owed) = inner.by_client.remove(client) {
            inner.total -= owed.len();
            drop(inner);
            for (_, waiting) in owed {
                let _ = waiting.send(Err("the connection closed before answering"));
            }
        }
    }

    /// How many acks are owed on this node.
    #[cfg(test)]
    fn owed(&self) -> usize {
        self.inner.lock().total
    }

    fn take(&self, client: &str, id: u64) -> Option<oneshot::Sender<Answer>> {
        let mut inner = self.inner.lock();
        let owed = inner.by_client.get_mut(client)?;
        let waiting = owed.remove(&id)?;
        if owed.is_empty() {
            inner.by_client.remove(client);
        }
        inner.total -= 1;
        Some(waiting)
    }

    fn remove(&self, client: &str, id: u64) {
        drop(self.take(client, id));
    }
}

/// A `message` push (`{"push":{"message":{"data", "ack"?}}}`) as Engine.IO packets
/// (`\x1e`-joined), for a Socket.IO connection with `namespaces` connected; `None` when the
/// line is no message push. An ack asked in a namespace the socket has not connected is
/// answered at once with an error (the client would never answer it).
pub(crate) fn message_packets(
    line: &[u8],
    namespaces: &[String],
    client: Option<&str>,
    acks: &Acks,
) -> Option<String> {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        push: Push<'a>,
    }
    #[derive(Deserialize)]
    struct Push<'a> {
        #[serde(borrow)]
        message: Message<'a>,
    }
    #[derive(Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(default)]
        ack: Option<u64>,
    }
    let frame = serde_json::from_slice::<Frame<'_>>(line).ok()?;
    let message = frame.push.message;
    let event = event_of(message.data);
    if !namespaces.contains(&event.namespace) {
        if let (Some(id), Some(client)) = (message.ack, client) {
            acks.answer(
                client,
                id,
                Err("the socket has not connected that namespace"),
            );
        }
        // Nothing to send: a Socket.IO client drops packets of namespaces it has not joined.
        return Some(String::new());
    }
    Some(event.packets(message.ack))
}

/// A message's data as a Socket.IO event.
struct Event {
    namespace: String,
    /// The packet body: `["name", ...args]`.
    body: String,
    /// Base64 attachments matching placeholders in the body (a BINARY_EVENT), decoded.
    attachments: Option<(Vec<String>, usize)>,
}

impl Event {
    fn packets(&self, ack: Option<u64>) -> String {
        match &self.attachments {
            Some((encoded, count)) => {
                let mut out = packet::binary_message('5', &self.namespace, ack, *count, &self.body);
                for attachment in encoded {
                    out.push('\u{1e}');
                    out.push('b');
                    out.push_str(attachment);
                }
                out
            }
            None => packet::socket_message('2', &self.namespace, ack, &self.body),
        }
    }
}

/// `{"event", "args"?, "namespace"?, "attachments"?}` is that event (in `/` without
/// `namespace`); any other data is the event `message` with the data as its one argument, as
/// publications are mapped.
fn event_of(data: &RawValue) -> Event {
    let Some(event) = packet::EventData::parse(data) else {
        return Event {
            namespace: "/".to_owned(),
            body: format!("[\"message\",{}]", data.get()),
            attachments: None,
        };
    };
    let body = event.body("");
    let attachments = event.attachments.filter(|a| !a.is_empty()).and_then(|a| {
        let count = packet::decode_attachments(&a, &body)?.len();
        Some((a, count))
    });
    Event {
        namespace: event
            .namespace
            .filter(|n| n.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned()),
        body,
        attachments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_bounded_per_connection_and_answered_once() {
        let acks = Acks::default();
        let mut asked = Vec::new();
        for _ in 0..MAX_PER_CONNECTION {
            asked.push(acks.ask("a").expect("within the bound"));
        }
        assert_eq!(acks.ask("a").err(), Some(Refused::Connection));
        assert!(acks.ask("b").is_ok());
        let mut first = asked.remove(0);
        let args = RawValue::from_string("[42]".to_owned()).expect("json");
        acks.answer(
            "a",
            first.id,
            Ok(AckArgs {
                args,
                attachments: vec![],
            }),
        );
        let answer = first.answer.try_recv().expect("answered").expect("ok");
        assert_eq!(answer.args.get(), "[42]");
        // Another client cannot answer "a"'s ack.
        let second = &mut asked[0];
        acks.answer("b", second.id, Err("x"));
        assert!(second.answer.try_recv().is_err());
        drop(first);
        assert_eq!(acks.owed(), MAX_PER_CONNECTION - 1);
        acks.forget("a");
        assert_eq!(acks.owed(), 0);
        assert!(matches!(asked[0].answer.try_recv(), Ok(Err(_))));
        drop(asked);
        assert_eq!(acks.owed(), 0);
    }

    #[test]
    fn message_pushes_become_events_with_their_ack_id() {
        let acks = Acks::default();
        let ns = vec!["/".to_owned(), "/chat".to_owned()];
        let line = br#"{"push":{"message":{"data":{"event":"question","args":[21]},"ack":7}}}"#;
        assert_eq!(
            message_packets(line, &ns, Some("c"), &acks).as_deref(),
            Some("427[\"question\",21]")
        );
        let line = br#"{"push":{"message":{"data":{"text":"hi"}}}}"#;
        assert_eq!(
            message_packets(line, &ns, Some("c"), &acks).as_deref(),
            Some("42[\"message\",{\"text\":\"hi\"}]")
        );
        let line = br#"{"push":{"message":{"data":{"event":"f","namespace":"/chat","args":[{"_placeholder":true,"num":0}],"attachments":["AQID"]},"ack":9}}}"#;
        assert_eq!(
            message_packets(line, &ns, Some("c"), &acks).as_deref(),
            Some("451-/chat,9[\"f\",{\"_placeholder\":true,\"num\":0}]\u{1e}bAQID")
        );
        assert!(
            message_packets(br#"{"push":{"channel":"x","pub":{}}}"#, &ns, None, &acks).is_none()
        );
        // A namespace the socket has not connected: nothing sent, the ack answered with an error.
        let mut asked = acks.ask("c").expect("ask");
        let line = format!(
            r#"{{"push":{{"message":{{"data":{{"event":"q","namespace":"/other"}},"ack":{}}}}}}}"#,
            asked.id
        );
        assert_eq!(
            message_packets(line.as_bytes(), &ns, Some("c"), &acks).as_deref(),
            Some("")
        );
        assert!(matches!(asked.answer.try_recv(), Ok(Err(_))));
    }
}
