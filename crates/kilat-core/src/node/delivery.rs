//! [`HubHandler`]: the node's [`BrokerHandler`]. Receives the broker's deliveries and fans
//! them out through the hub, repairs a gap seen live from history, and ends conflation windows
//! on a timer.

use std::sync::{Arc, Weak};

use kilat_protocol::push::encode_publication;
use kilat_protocol::{ClientInfo, Publication, SharedFrame};
use serde::Serialize;

use crate::engine::{Broker, BrokerHandler, HistoryQuery};
use crate::hub::{Hub, Repair, Window};
use crate::tasks::Tasks;

/// Receives the broker's deliveries and fans them out through the hub.
pub(super) struct HubHandler {
    hub: Arc<Hub>,
    /// For gap repairs (weak: the broker owns this handler).
    broker: Weak<dyn Broker>,
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
        let delivered = self.hub.deliver(
            channel,
            publication.offset,
            epoch,
            publication.data.get(),
            || {
                let json = encode_publication(channel, publication);
                // Stamped only when measured, with the clock read the fan-out timing made.
                match started {
                    Some(at) => SharedFrame::stamped(json, at),
                    None => SharedFrame::new(json),
                }
            },
        );
        if let (Some(observer), Some(started)) = (observer, started) {
            observer.fanned_out(channel, delivered.delivered, started.elapsed());
        }
        for repair in delivered.repairs {
            self.spawn_repair(repair);
        }
        if let Some(window) = delivered.window {
            self.spawn_window(channel, window);
        }
    }

    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let kind = if join { "join" } else { "leave" };
        self.hub.deliver_join_leave(channel, || {
            SharedFrame::new(kilat_protocol::push::encode_push_kind(
                Some(channel),
                kind,
                &JoinLeaveRef { info },
            ))
        });
    }
}

impl HubHandler {
    /// A handler delivering into `hub`, reading gap repairs from `broker`'s history.
    pub(super) fn new(hub: Arc<Hub>, broker: &Arc<dyn Broker>, tasks: Tasks) -> Self {
        HubHandler {
            hub,
            broker: Arc::downgrade(broker),
            tasks,
        }
    }

    /// Ends a conflated channel's window after its length, and each following window, until
    /// one passes with nothing to send.
    fn spawn_window(&self, channel: &str, window: Window) {
        let hub = self.hub.clone();
        let owned = channel.to_owned();
        let started = self.tasks.spawn(async move {
            let channel = owned;
            loop {
                // The window's length is the conflation interval itself, not a wait for an event.
                tokio::time::sleep(window.length).await;
                if !hub.end_window(&channel, window.id) {
                    break;
                }
            }
        });
        if !started {
            // Nothing could end the window later: close it now (no conflation without a runtime).
            self.hub.end_window(channel, window.id);
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
        let (channel, key) = (repair.channel.clone(), repair.key);
        let started = self.tasks.spawn(async move {
            let query = HistoryQuery {
                since: Some(repair.after),
                limit: None,
                reverse: false,
            };
            match broker.history(&repair.channel, query).await {
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
