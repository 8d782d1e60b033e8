//! Coalesced history reads: identical concurrent reads of one channel (same `since`, `limit`
//! and direction) reach the engine once and share the page.
//!
//! After a node dies its clients reconnect elsewhere within seconds and each resubscribes with
//! recovery, mostly from the same few positions; without this every one of them is a history
//! read in the engine, per channel. Here a read that arrives while an identical one is in the
//! engine waits for it to finish and then joins the next read, which serves every caller that
//! arrived meanwhile: a burst of N identical reads costs about one engine call per engine
//! round trip instead of N.
//!
//! Why not join the read already in the engine: it may have read the stream before the caller
//! joined the hub's channel (a recovering subscriber buffers live publications from the moment
//! it is added, then reads). A publication accepted between that read and the caller's join
//! would be in neither, and the caller would see a gap. A read that *starts* after the caller
//! arrived sees everything the caller could have missed, so each caller only joins a read that
//! has not started yet (the start is decided under the same lock as the join). The same rule
//! keeps a client's own publications visible to its next `history` call.
//!
//! Not the hot path: one mutex per read, taken twice, and a `HashMap` keyed by the query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OnceCell, watch};

use crate::engine::{Broker, EngineError, HistoryPage, HistoryQuery};
use crate::util::lock;

type Key = (Box<str>, Option<u64>, Option<usize>, bool);

/// One engine read and everyone waiting for it.
#[derive(Debug)]
struct Flight {
    /// The shared outcome; an error is shared as its text.
    result: OnceCell<Result<HistoryPage, Arc<str>>>,
    /// The read that must finish before this one starts (`None`: start at once).
    after: Option<Arc<Flight>>,
    /// Turns true when this flight's read has finished or was abandoned.
    done: watch::Sender<bool>,
}

impl Flight {
    fn new(after: Option<Arc<Flight>>) -> Arc<Flight> {
        Arc::new(Flight {
            result: OnceCell::new(),
            after,
            done: watch::Sender::new(false),
        })
    }

    async fn finished(&self) {
        let mut rx = self.done.subscribe();
        // The sender lives as long as `self`; an error cannot happen while we borrow it.
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// Per query key: the read in the engine and the one waiting to start after it.
#[derive(Debug, Default)]
struct Slot {
    running: Option<Arc<Flight>>,
    pending: Option<Arc<Flight>>,
}

/// Single-flight for [`Broker::history`], keyed by channel and query (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct HistoryFlights {
    slots: Mutex<HashMap<Key, Slot>>,
    /// Reads sent to the engine.
    engine_reads: AtomicU64,
    /// Reads served by joining another caller's read.
    shared: AtomicU64,
}

/// Marks a flight finished (its read returned, or every caller gave up) and clears its slot.
struct Finish<'a> {
    flights: &'a HistoryFlights,
    key: &'a Key,
    flight: &'a Arc<Flight>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut slots = lock(&self.flights.slots);
        if let Some(slot) = slots.get_mut(self.key) {
            if slot
                .running
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(f, self.flight))
            {
                slot.running = None;
            }
            if slot.running.is_none() && slot.pending.is_none() {
                slots.remove(self.key);
            }
        }
        drop(slots);
        self.flight.done.send_replace(true);
    }
}

impl HistoryFlights {
    /// Reads `channel`'s history through `broker`, sharing the engine call with identical
    /// reads that start after this call began (see the module docs).
    pub(crate) async fn history(
        &self,
        broker: &dyn Broker,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let key: Key = (channel.into(), query.since, query.limit, query.reverse);
        let flight = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key.clone()).or_default();
            if let Some(pending) = &slot.pending {
                self.shared.fetch_add(1, Ordering::Relaxed);
                pending.clone()
            } else if let Some(running) = &slot.running {
                let pending = Flight::new(Some(running.clone()));
                slot.pending = Some(pending.clone());
                pending
            } else {
                let flight = Flight::new(None);
                slot.running = Some(flight.clone());
                flight
            }
        };
        let outcome = flight
            .result
            .get_or_init(|| self.run(broker, channel, query, &key, &flight))
            .await;
        match outcome {
            Ok(page) => Ok(page.clone()),
            Err(message) => Err(EngineError::Unavailable(message.to_string().into())),
        }
    }

    /// The leader's part (any waiter takes it over if the leader is cancelled): wait for the
    /// read before, start (from now on nobody joins), read, finish.
    async fn run(
        &self,
        broker: &dyn Broker,
        channel: &str,
        query: HistoryQuery,
        key: &Key,
        flight: &Arc<Flight>,
    ) -> Result<HistoryPage, Arc<str>> {
        if let Some(before) = &flight.after {
            before.finished().await;
        }
        {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key.clone()).or_default();
            if slot
                .pending
                .as_ref()
                .is_some_and(|f| Arc::ptr_eq(f, flight))
            {
                slot.pending = None;
            }
            slot.running = Some(flight.clone());
        }
        // From here on the flight is running: finished when the read returns or is dropped.
        let finish = Finish {
            flights: self,
            key,
            flight,
        };
        self.engine_reads.fetch_add(1, Ordering::Relaxed);
        let result = broker
            .history(channel, query)
            .await
            .map_err(|error| Arc::from(error.to_string()));
        drop(finish);
        result
    }

    /// History reads sent to the engine through this single-flight.
    pub(crate) fn engine_reads(&self) -> u64 {
        self.engine_reads.load(Ordering::Relaxed)
    }

    /// History reads answered by another caller's engine read.
    pub(crate) fn shared_reads(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PublishOptions;
    use crate::engine::memory::MemoryBroker;
    use kilat_protocol::Publication;
    use kilat_protocol::types::raw_json;
    use std::time::Duration;

    fn publication(i: u64) -> Publication {
        Publication {
            binary: None,
            data: raw_json(&i.to_string()).expect("json"),
            offset: None,
            info: None,
        }
    }

    #[tokio::test]
    async fn sequential_reads_each_reach_the_engine_and_see_new_publications() {
        let broker = MemoryBroker::default();
        let options = PublishOptions {
            history_size: 10,
            history_ttl: Duration::from_secs(60),
        };
        let flights = HistoryFlights::default();
        broker
            .publish("c", publication(1), options)
            .await
            .expect("publish");
        let query = HistoryQuery::default();
        let first = flights.history(&broker, "c", query).await.expect("read");
        broker
            .publish("c", publication(2), options)
            .await
            .expect("publish");
        let second = flights.history(&broker, "c", query).await.expect("read");
        assert_eq!(first.publications.len(), 1);
        assert_eq!(
            second.publications.len(),
            2,
            "a finished read is not reused"
        );
        assert_eq!(flights.engine_reads(), 2);
        assert_eq!(flights.shared_reads(), 0);
        assert!(lock(&flights.slots).is_empty(), "slots are cleared");
    }
}
