//! Subscription bookkeeping: what to resubscribe to, from which position, and de-duplication.
//!
//! This is the client half of "recovery without gaps" (ARCHITECTURE.md). Per channel it keeps
//! the last stream position delivered to the application. While a (re)subscribe is in flight,
//! publications for that channel are buffered; when the reply arrives the client emits
//! `Subscribed`, then the recovered publications, then the buffered ones, skipping every
//! publication whose offset is not above the last one delivered. Duplicates are dropped by
//! offset, never by content. An epoch change resets the position: offsets of an older stream
//! say nothing about the new one.
//!
//! Pure logic, no I/O: the connection task feeds it replies and pushes and sends what it
//! returns.

use std::collections::{BTreeMap, HashMap};

use kilat_protocol::command::{SubRecovery, SubscribeRequest};
use kilat_protocol::reply::SubscribeResult;
use kilat_protocol::{Publication, StreamPosition};

use crate::config::SubscribeOptions;
use crate::event::Event;

/// Every subscription of one client, across reconnects.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    channels: HashMap<String, ChannelState>,
}

#[derive(Debug)]
struct ChannelState {
    /// Options to resubscribe with after a reconnect; `None` for server-side subscriptions,
    /// which the server restores itself (their positions go in `connect.subs`).
    options: Option<SubscribeOptions>,
    /// The last position delivered to the application: the recovery point on reconnect and the
    /// floor for de-duplication. `None` while the channel is not positioned.
    position: Option<StreamPosition>,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// A subscribe is in flight; live publications wait here for its reply.
    Subscribing {
        buffer: Vec<Publication>,
        resubscribe: bool,
        recovering: bool,
    },
    /// Publications are delivered as they come.
    Active,
}

impl Tracker {
    /// Starts a client subscription. `None` when the channel is already tracked.
    pub(crate) fn begin(
        &mut self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Option<SubscribeRequest> {
        if self.channels.contains_key(channel) {
            return None;
        }
        let position = options.since.clone();
        let mut state = ChannelState {
            options: Some(options),
            position,
            phase: Phase::Active,
        };
        let request = state.subscribe_request(channel, false);
        self.channels.insert(channel.to_owned(), state);
        Some(request)
    }

    /// Subscribe requests for every client subscription after a reconnect, recovering from
    /// the last delivered position where there is one.
    pub(crate) fn resubscribe_all(&mut self) -> Vec<SubscribeRequest> {
        let mut requests: Vec<SubscribeRequest> = self
            .channels
            .iter_mut()
            .filter(|(_, s)| s.options.is_some())
            .map(|(channel, state)| state.subscribe_request(channel, true))
            .collect();
        requests.sort_by(|a, b| a.channel.cmp(&b.channel));
        requests
    }

    /// A resubscribe request for one client subscription (after an `unsubscribe` push that
    /// asks for it). `None` for unknown or server-side channels.
    pub(crate) fn resubscribe_one(&mut self, channel: &str) -> Option<SubscribeRequest> {
        let state = self.channels.get_mut(channel)?;
        state.options.as_ref()?;
        Some(state.subscribe_request(channel, true))
    }

    /// `connect.subs` for a reconnect: the positions of server-side subscriptions.
    pub(crate) fn connect_subs(&mut self) -> BTreeMap<String, SubRecovery> {
        let mut subs = BTreeMap::new();
        for (channel, state) in &mut self.channels {
            if state.options.is_some() {
                continue;
            }
            let recovering = state.position.is_some();
            state.phase = Phase::Subscribing {
                buffer: Vec::new(),
                resubscribe: true,
                recovering,
            };
            subs.insert(
                channel.clone(),
                SubRecovery {
                    recover: recovering,
                    offset: state.position.as_ref().map(|p| p.offset),
                    epoch: state.position.as_ref().map(|p| p.epoch.clone()),
                },
            );
        }
        subs
    }

    /// After a reconnect's `connect` reply: server-side subscriptions the server did not
    /// restore are forgotten.
    pub(crate) fn retain_server_side(&mut self, restored: &BTreeMap<String, SubscribeResult>) {
        self.channels
            .retain(|channel, s| s.options.is_some() || restored.contains_key(channel));
    }

    /// A subscribe result arrived (reply, `subscribe` push or `connect.subs` entry): returns
    /// `Subscribed`, the recovered publications and the buffered live ones, de-duplicated.
    pub(crate) fn on_subscribed(
        &mut self,
        channel: &str,
        result: &SubscribeResult,
        server_side: bool,
    ) -> Vec<Event> {
        let state = self
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelState {
                options: None,
                position: None,
                phase: Phase::Active,
            });
        let (buffer, resubscribe, recovering) =
            match std::mem::replace(&mut state.phase, Phase::Active) {
                Phase::Subscribing {
                    buffer,
                    resubscribe,
                    recovering,
                } => (buffer, resubscribe, recovering),
                Phase::Active => (Vec::new(), false, false),
            };
        // Offsets of an older epoch say nothing about this stream: start over.
        if state.position.as_ref().map(|p| p.epoch.as_str()) != Some(result.epoch.as_str()) {
            state.position = None;
        }
        let mut events = vec![Event::Subscribed {
            channel: channel.to_owned(),
            recovered: result.recovered,
            recovering,
            resubscribed: resubscribe,
            recoverable: result.recoverable,
            offset: result.offset,
            epoch: result.epoch.clone(),
            server_side,
        }];
        for publication in result.publications.iter().cloned().chain(buffer) {
            if let Some(event) = state.deliver(channel, publication) {
                events.push(event);
            }
        }
        if result.positioned || result.recoverable {
            let delivered = state.position.as_ref().map_or(0, |p| p.offset);
            state.position = Some(StreamPosition {
                offset: delivered.max(result.offset),
                epoch: result.epoch.clone(),
            });
        }
        events
    }

    /// A live publication: delivered at once, buffered while a subscribe is in flight, or
    /// dropped (a duplicate, or a channel no longer subscribed).
    pub(crate) fn on_publication(
        &mut self,
        channel: &str,
        publication: Publication,
    ) -> Option<Event> {
        let state = self.channels.get_mut(channel)?;
        match &mut state.phase {
            Phase::Subscribing { buffer, .. } => {
                buffer.push(publication);
                None
            }
            Phase::Active => state.deliver(channel, publication),
        }
    }

    /// Forgets a channel (unsubscribed, or its subscribe failed). True when it was tracked.
    pub(crate) fn remove(&mut self, channel: &str) -> bool {
        self.channels.remove(channel).is_some()
    }

    /// Whether `channel` is tracked (subscribed or subscribing).
    pub(crate) fn contains(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// The last position delivered for `channel`.
    pub(crate) fn position(&self, channel: &str) -> Option<StreamPosition> {
        self.channels.get(channel)?.position.clone()
    }
}

impl ChannelState {
    /// Builds the subscribe request from the options and the last delivered position, and
    /// starts buffering live publications until its reply.
    fn subscribe_request(&mut self, channel: &str, resubscribe: bool) -> SubscribeRequest {
        let options = self.options.clone().unwrap_or_default();
        let recovering = self.position.is_some();
        self.phase = Phase::Subscribing {
            buffer: Vec::new(),
            resubscribe,
            recovering,
        };
        SubscribeRequest {
            channel: channel.to_owned(),
            token: options.token,
            recover: recovering || options.recover,
            offset: self.position.as_ref().map(|p| p.offset),
            epoch: self.position.as_ref().map(|p| p.epoch.clone()),
            join_leave: options.join_leave,
            data: options.data,
            delta: options.delta.then(|| "fossil".to_owned()),
        }
    }

    /// Delivers `publication` unless its offset is at or below the last delivered one.
    fn deliver(&mut self, channel: &str, publication: Publication) -> Option<Event> {
        if let (Some(offset), Some(position)) = (publication.offset, self.position.as_mut()) {
            if offset <= position.offset {
                return None;
            }
            // The server repairs live gaps itself, so a skip is conflation (`conflate_ms`)
            // leaving publications out on purpose, not a loss.
            if offset > position.offset + 1 {
                tracing::debug!(
                    channel,
                    expected = position.offset + 1,
                    got = offset,
                    "offsets skipped (a conflated channel)"
                );
            }
            position.offset = offset;
        }
        Some(Event::Publication {
            channel: channel.to_owned(),
            publication,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication {
            binary: None,
            data: kilat_protocol::types::raw_json(&offset.to_string()).expect("json"),
            offset: Some(offset),
            info: None,
        }
    }

    fn result(offset: u64, epoch: &str, recovered: bool, pubs: &[u64]) -> SubscribeResult {
        SubscribeResult {
            recoverable: true,
            epoch: epoch.to_owned(),
            offset,
            recovered,
            publications: pubs.iter().copied().map(publication).collect(),
            positioned: true,
            ..SubscribeResult::default()
        }
    }

    /// The offsets of the publication events, and the `recovered` flag of `Subscribed`.
    fn summary(events: &[Event]) -> (Option<bool>, Vec<u64>) {
        let mut recovered = None;
        let mut offsets = Vec::new();
        for e in events {
            match e {
                Event::Subscribed { recovered: r, .. } => recovered = Some(*r),
                Event::Publication { publication, .. } => {
                    offsets.push(publication.offset.unwrap_or(0));
                }
                _ => {}
            }
        }
        (recovered, offsets)
    }

    #[test]
    fn live_duplicates_and_old_offsets_are_dropped() {
        let mut t = Tracker::default();
        t.begin("a", SubscribeOptions::recoverable()).expect("new");
        t.on_subscribed("a", &result(3, "e", false, &[]), false);
        let delivered: Vec<u64> = [4, 4, 5, 3, 6]
            .into_iter()
            .filter_map(|o| t.on_publication("a", publication(o)))
            .map(|e| summary(&[e]).1[0])
            .collect();
        assert_eq!(delivered, [4, 5, 6]);
        assert_eq!(t.position("a").map(|p| p.offset), Some(6));
    }

    #[test]
    fn resubscribe_recovers_from_the_last_delivered_position() {
        let mut t = Tracker::default();
        t.begin("a", SubscribeOptions::default()).expect("new");
        t.on_subscribed("a", &result(0, "e1", false, &[]), false);
        t.on_publication("a", publication(1));
        t.on_publication("a", publication(2));
        let requests = t.resubscribe_all();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert!(r.recover);
        assert_eq!((r.offset, r.epoch.as_deref()), (Some(2), Some("e1")));
    }

    #[test]
    fn recovered_come_first_then_buffered_without_duplicates() {
        let mut t = Tracker::default();
        t.begin("a", SubscribeOptions::recoverable()).expect("new");
        t.on_subscribed("a", &result(2, "e", false, &[]), false);
        t.resubscribe_all();
        // Live publications overlapping the recovery arrive before the reply.
        assert!(t.on_publication("a", publication(5)).is_none());
        assert!(t.on_publication("a", publication(6)).is_none());
        let events = t.on_subscribed("a", &result(5, "e", true, &[3, 4, 5]), false);
        assert_eq!(summary(&events), (Some(true), vec![3, 4, 5, 6]));
        assert!(matches!(
            events[0],
            Event::Subscribed {
                resubscribed: true,
                recovering: true,
                ..
            }
        ));
        let next = t.on_publication("a", publication(7)).expect("live");
        assert_eq!(summary(&[next]).1, [7]);
    }

    #[test]
    fn epoch_change_resets_the_position_and_reports_not_recovered() {
        let mut t = Tracker::default();
        t.begin("a", SubscribeOptions::recoverable()).expect("new");
        t.on_subscribed("a", &result(10, "old", false, &[]), false);
        t.resubscribe_all();
        // A new stream starts again at offset 1: nothing may be dropped as a "duplicate".
        let events = t.on_subscribed("a", &result(0, "new", false, &[]), false);
        assert_eq!(summary(&events), (Some(false), vec![]));
        let live = t.on_publication("a", publication(1)).expect("delivered");
        assert_eq!(summary(&[live]).1, [1]);
        assert_eq!(
            t.position("a"),
            Some(StreamPosition {
                offset: 1,
                epoch: "new".into()
            })
        );
    }

    #[test]
    fn unsubscribed_channels_drop_publications_and_cannot_double_subscribe() {
        let mut t = Tracker::default();
        assert!(t.begin("a", SubscribeOptions::default()).is_some());
        assert!(t.begin("a", SubscribeOptions::default()).is_none());
        assert!(t.remove("a"));
        assert!(t.on_publication("a", publication(1)).is_none());
        assert!(!t.contains("a"));
    }

    #[test]
    fn server_side_positions_go_into_connect_subs() {
        let mut t = Tracker::default();
        t.on_subscribed("srv", &result(7, "e", false, &[]), true);
        t.begin("mine", SubscribeOptions::default()).expect("new");
        let subs = t.connect_subs();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs["srv"].offset, Some(7));
        assert!(t.resubscribe_all().iter().all(|r| r.channel == "mine"));
        t.retain_server_side(&BTreeMap::new());
        assert!(!t.contains("srv"));
        assert!(t.contains("mine"));
    }

    #[test]
    fn subscribe_since_a_position_dedups_against_it() {
        let mut t = Tracker::default();
        let options = SubscribeOptions {
            since: Some(StreamPosition {
                offset: 4,
                epoch: "e".into(),
            }),
            ..SubscribeOptions::default()
        };
        let request = t.begin("a", options).expect("new");
        assert!(request.recover);
        assert_eq!(request.offset, Some(4));
        let events = t.on_subscribed("a", &result(6, "e", true, &[4, 5, 6]), false);
        assert_eq!(summary(&events), (Some(true), vec![5, 6]));
    }
}
