//! [`HubHandler`]: the node's [`BrokerHandler`]. Receives the broker's deliveries and fans
//! them out through the hub, repairs a gap seen live from history, and ends conflation windows
//! on a timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kilat_protocol::push::{
    PresenceCount, encode_delta_publication, encode_publication, encode_push_kind,
};
use kilat_protocol::{ClientInfo, Publication, SharedFrame};
use serde::Serialize;

use crate::coalesce::HistoryFlights;
use crate::engine::{Broker, BrokerHandler, HistoryQuery, PresenceStore};
use crate::hub::{DiffEnd, Hub, Repair, Window};
use crate::tasks::Tasks;

/// Above `presence_diff_max`, how often a channel with joins or leaves sends its counts.
pub(crate) const PRESENCE_COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// Receives the broker's deliveries and fans them out through the hub.
pub(super) struct HubHandler {
    hub: Arc<Hub>,
    /// For gap repairs (weak: the broker owns this handler).
    broker: Weak<dyn Broker>,
    /// Gap repairs of many subscribers from one position share one read.
    history_flights: Arc<HistoryFlights>,
    /// For the counts sent instead of diffs above `presence_diff_max`.
    presence: Arc<dyn PresenceStore>,
    /// The node's tracker, for the repair and window tasks.
    tasks: Tasks,
}

#[derive(Serialize)]
struct JoinLeaveRef<'a> {
    info: &'a ClientInfo,
}

impl BrokerHandler for HubHandler {
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str) {
        let observer = self.hub.observer.get();
        let started = observer.map(|_| std::time::Instant::now());
        let stamp = |json: Vec<u8>| match started {
            // Stamped only when measured, with the clock read the fan-out timing made.
            Some(at) => SharedFrame::stamped(json, at),
            None => SharedFrame::new(json),
        };
        let encode_delta =
            |text: &str, delta| stamp(encode_delta_publication(channel, publication, text, delta));
        let delivered = self.hub.deliver_delta(
            channel,
            publication.offset,
            epoch,
            publication.data.get(),
            || stamp(encode_publication(channel, publication)),
            // Binary publications go out as full payloads only, to delta subscribers too.
            if publication.binary.is_some() {
                None
            } else {
                Some(&encode_delta)
            },
        );
        if let (Some(observer), Some(started)) = (observer, started) {
            observer.fanned_out(channel, delivered.delivered, started.elapsed());
        }
        for repair in delivered.repairs {
            self.spawn_repair(repair);
        }
        if let Some(window) = delivered.window {
            let hub = self.hub.clone();
            self.spawn_window(channel, window, move |channel, id| {
                hub.end_window(channel, id)
            });
        }
    }

    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let kind = if join { "join" } else { "leave" };
        let window = self.hub.deliver_join_leave(channel, info, join, || {
            SharedFrame::new(kilat_protocol::push::encode_push_kind(
                Some(channel),
                kind,
                &JoinLeaveRef { info },
            ))
        });
        if let Some(window) = window {
            self.spawn_diff_window(channel, window);
        }
    }
}

impl HubHandler {
    /// A handler delivering into `hub`, reading gap repairs from `broker`'s history.
    pub(super) fn new(
        hub: Arc<Hub>,
        broker: &Arc<dyn Broker>,
        history_flights: Arc<HistoryFlights>,
        presence: Arc<dyn PresenceStore>,
        tasks: Tasks,
    ) -> Self {
        HubHandler {
            hub,
            broker: Arc::downgrade(broker),
            history_flights,
            presence,
            tasks,
        }
    }

    /// Ends a channel's join/leave window after its length, and each following window, until
    /// one passes with nothing new; above `presence_diff_max` each window sends the channel's
    /// counts from the presence store instead of the changes.
    fn spawn_diff_window(&self, channel: &str, window: Window) {
        let hub = self.hub.clone();
        let presence = self.presence.clone();
        let owned = channel.to_owned();
        let started = self.tasks.spawn(async move {
            let channel = owned;
            let mut wait = window.length;
            loop {
                // The window's length is the batching interval itself, not a wait for an event.
                tokio::time::sleep(wait).await;
                match hub.end_diff_window(&channel, window.id) {
                    DiffEnd::Closed => break,
                    DiffEnd::Sent => wait = window.length,
                    DiffEnd::Count => {
                        // Counts go out at most once per PRESENCE_COUNT_INTERVAL: each one is a
                        // push to every member.
                        wait = PRESENCE_COUNT_INTERVAL.max(window.length);
                        match presence.stats(&channel).await {
                            Ok(stats) => hub.deliver_presence_count(&channel, || {
                                SharedFrame::new(encode_push_kind(
                                    Some(&channel),
                                    "presence_count",
                                    &PresenceCount {
                                        num_clients: stats.num_clients,
                                        num_users: stats.num_users,
                                    },
                                ))
                            }),
                            Err(error) => tracing::warn!(%error, channel, "presence count failed"),
                        }
                    }
                }
            }
        });
        if !started {
            // Nothing could end the window later: flush what can be sent now.
            while self.hub.end_diff_window(channel, window.id) == DiffEnd::Sent {}
        }
    }

    /// Ends a window (conflation or join/leave batching) after its length with `end`, and each
    /// following window, until one passes with nothing to send (`end` returns false).
    fn spawn_window(
        &self,
        channel: &str,
        window: Window,
        end: impl Fn(&str, u64) -> bool + Send + Sync + 'static,
    ) {
        let owned = channel.to_owned();
        let end = Arc::new(end);
        let end_later = end.clone();
        let started = self.tasks.spawn(async move {
            let channel = owned;
            loop {
                // The window's length is the batching interval itself, not a wait for an event.
                tokio::time::sleep(window.length).await;
                if !end_later(&channel, window.id) {
                    break;
                }
            }
        });
        if !started {
            // Nothing could end the window later: flush and close it now.
            while end(channel, window.id) {}
        }
    }

    /// Reads the missing publications from history and delivers them before the held ones; a
    /// subscriber whose gap history cannot fill is asked to resubscribe.
    fn spawn_repair(&self, repair: Repair) {
        let Some(broker) = self.broker.upgrade() else {
            self.hub.drop_stale(&repair.channel, repair.key);
            return;
        };
        let hub = self.hub.clone();
        let flights = self.history_flights.clone();
        let (channel, key) = (repair.channel.clone(), repair.key);
        let started = self.tasks.spawn(async move {
            let query = HistoryQuery {
                since: Some(repair.after),
                limit: None,
                reverse: false,
            };
            match flights.history(&*broker, &repair.channel, query).await {
                Ok(page)
                    if page.position.epoch == repair.epoch
                        && (page.position.offset == repair.after
                            || page.publications.first().and_then(|p| p.offset)
                                == Some(repair.after + 1)) =>
                {
                    let frames = page
                        .publications
                        .iter()
                        .map(|p| SharedFrame::new(encode_publication(&repair.channel, p)))
                        .collect::<Vec<_>>();
                    hub.go_live(
                        &repair.channel,
                        repair.key,
                        frames,
                        page.position.offset,
                        &repair.epoch,
                    );
                }
                _ => hub.drop_stale(&repair.channel, repair.key),
            }
        });
        if !started {
            self.hub.drop_stale(&channel, key);
        }
    }
}
