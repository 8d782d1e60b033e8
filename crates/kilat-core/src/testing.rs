//! The engine conformance suite (feature `testing`): every [`Broker`] and [`PresenceStore`]
//! implementation runs the same checks.
//!
//! ```ignore
//! #[tokio::test]
//! async fn memory_broker_conforms() {
//!     kilat_core::testing::broker_conformance(|| Arc::new(MemoryBroker::default())).await;
//! }
//! ```
//!
//! Each check uses fresh channel names, so engines backed by a shared store (Redis) can run it
//! without cleaning up. Failures panic with the name of the broken rule.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kilat_protocol::{ClientInfo, Publication, types::raw_json};

use crate::engine::{
    Broker, BrokerHandler, HistoryQuery, JoinLeave, Latest, PresenceStore, PublishOptions,
};
use crate::util::{lock, new_epoch};

/// What the recording handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Publication {
        channel: String,
        offset: Option<u64>,
        epoch: String,
        data: String,
        binary: Option<Vec<u8>>,
    },
    JoinLeave {
        channel: String,
        client: String,
        join: bool,
    },
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Event>>);

impl BrokerHandler for Recorder {
    fn on_publication(&self, channel: &str, publication: &Publication, epoch: &str) {
        lock(&self.0).push(Event::Publication {
            channel: channel.to_owned(),
            offset: publication.offset,
            epoch: epoch.to_owned(),
            data: publication.data.get().to_owned(),
            binary: publication.binary.as_deref().map(<[u8]>::to_vec),
        });
    }

    fn on_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        lock(&self.0).push(Event::JoinLeave {
            channel: channel.to_owned(),
            client: info.client.clone(),
            join,
        });
    }
}

impl Recorder {
    /// Waits (up to 5 s) until `n` events concern `channel`, then returns them.
    async fn wait_for(&self, channel: &str, n: usize) -> Vec<Event> {
        for _ in 0..500 {
            let events: Vec<Event> = lock(&self.0)
                .iter()
                .filter(|e| match e {
                    Event::Publication { channel: c, .. } | Event::JoinLeave { channel: c, .. } => {
                        c == channel
                    }
                })
                .cloned()
                .collect();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("handler did not receive {n} events for {channel}");
    }
}

fn channel(name: &str) -> String {
    format!("conformance:{name}-{}", new_epoch())
}

fn publication(data: &str) -> Publication {
    Publication {
        binary: None,
        data: raw_json(data).expect("test data is JSON"),
        offset: None,
        info: None,
    }
}

fn info(client: &str, user: &str) -> ClientInfo {
    ClientInfo {
        client: client.to_owned(),
        user: user.to_owned(),
        info: None,
    }
}

const HISTORY: PublishOptions = PublishOptions {
    history_size: 3,
    history_ttl: Duration::from_secs(300),
};

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().filter_map(|p| p.offset).collect()
}

/// Runs every broker check, each against a fresh broker from `factory`.
///
/// # Panics
/// When the broker breaks a rule of the [`Broker`] contract (the message names the rule), or an
/// operation fails.
pub async fn broker_conformance<F>(factory: F)
where
    F: Fn() -> Arc<dyn Broker>,
{
    offsets_increase_by_one_and_delivery_follows_them(factory()).await;
    publish_without_history_has_no_offset(factory()).await;
    history_is_trimmed_and_queried(factory()).await;
    epoch_is_stable_until_history_is_removed(factory()).await;
    join_and_leave_reach_the_handler(factory()).await;
    latest_values_are_kept_per_key_with_their_stream(factory()).await;
    binary_publications_keep_their_bytes(factory()).await;
}

/// Every byte value, a NUL, a newline, invalid UTF-8, and text that looks like JSON: what a
/// store keeping text or splitting on separators would corrupt.
fn binary_payload() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255).rev().collect();
    bytes.extend_from_slice(b"\n{\"data\":1}\n\0p1:e:");
    bytes
}

async fn binary_publications_keep_their_bytes(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    broker.set_handler(recorder.clone());
    let ch = channel("binary");
    broker.subscribe(&ch).await.expect("subscribe");
    let bytes = binary_payload();
    let mut binary = Publication::bytes(bytes.clone().into());
    binary.info = Some(info("c1", "u1"));
    broker
        .publish(&ch, binary.clone(), HISTORY)
        .await
        .expect("publish binary");
    broker
        .publish(&ch, publication("{\"json\":true}"), HISTORY)
        .await
        .expect("publish json");
    broker
        .publish_latest(
            &ch,
            Publication::bytes(bytes[..3].to_vec().into()),
            HISTORY,
            "k",
            3,
        )
        .await
        .expect("publish_latest binary");
    let events = recorder.wait_for(&ch, 3).await;
    let delivered: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Publication { binary, .. } => binary.clone(),
            Event::JoinLeave { .. } => panic!("unexpected join/leave"),
        })
        .collect();
    assert_eq!(
        delivered,
        [Some(bytes.clone()), None, Some(bytes[..3].to_vec())],
        "binary publications are delivered with their exact bytes, JSON ones without bytes"
    );
    let page = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history");
    let kept: Vec<_> = page
        .publications
        .iter()
        .map(|p| (p.offset, p.binary.as_deref().map(<[u8]>::to_vec)))
        .collect();
    assert_eq!(
        kept,
        [
            (Some(1), Some(bytes.clone())),
            (Some(2), None),
            (Some(3), Some(bytes[..3].to_vec()))
        ],
        "history keeps binary publications as their bytes"
    );
    assert_eq!(
        page.publications[0].info.as_ref().map(|i| i.user.as_str()),
        Some("u1"),
        "a binary publication keeps its publisher"
    );
    assert_eq!(page.publications[1].data.get(), "{\"json\":true}");
    let latest = broker.latest(&ch).await.expect("latest");
    assert_eq!(
        latest.publications[0].binary.as_deref(),
        Some(&bytes[..3]),
        "a binary latest value keeps its bytes"
    );
    let unstored = channel("binary-unstored");
    broker.subscribe(&unstored).await.expect("subscribe");
    let no_history = PublishOptions {
        history_size: 0,
        history_ttl: Duration::ZERO,
    };
    broker
        .publish(
            &unstored,
            Publication::bytes(bytes.clone().into()),
            no_history,
        )
        .await
        .expect("publish without history");
    let events = recorder.wait_for(&unstored, 1).await;
    assert!(
        matches!(&events[0], Event::Publication { offset: None, binary: Some(b), .. } if *b == bytes),
        "a binary publication without history is delivered with its bytes: {events:?}"
    );
    broker.unsubscribe(&ch).await.expect("unsubscribe");
    broker.unsubscribe(&unstored).await.expect("unsubscribe");
}

async fn latest_values_are_kept_per_key_with_their_stream(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    broker.set_handler(recorder.clone());
    let ch = channel("latest");
    broker.subscribe(&ch).await.expect("subscribe");
    let empty = broker.latest(&ch).await.expect("latest");
    assert!(empty.publications.is_empty(), "a new channel has no values");
    assert_eq!(empty.position.offset, 0);
    for (key, data) in [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4"), ("b", "5")] {
        let (position, kept) = broker
            .publish_latest(&ch, publication(data), HISTORY, key, 3)
            .await
            .expect("publish_latest");
        assert!(position.is_some(), "publish_latest publishes with history");
        assert_eq!(kept, Latest::Kept);
    }
    let events = recorder.wait_for(&ch, 5).await;
    assert_eq!(events.len(), 5, "publish_latest delivers like publish");
    let page = broker.latest(&ch).await.expect("latest");
    let values: Vec<(Option<u64>, &str)> = page
        .publications
        .iter()
        .map(|p| (p.offset, p.data.get()))
        .collect();
    assert_eq!(
        values,
        [(Some(3), "3"), (Some(4), "4"), (Some(5), "5")],
        "the newest publication of each key, ascending by offset"
    );
    assert_eq!(
        page.position.offset, 5,
        "the position is read with the values"
    );
    assert_eq!(page.position.epoch, empty.position.epoch);
    let (_, kept) = broker
        .publish_latest(&ch, publication("6"), HISTORY, "d", 3)
        .await
        .expect("publish_latest");
    assert_eq!(
        kept,
        Latest::Full,
        "a fourth key past max_keys = 3 is not kept"
    );
    assert_eq!(
        broker.latest(&ch).await.expect("latest").publications.len(),
        3
    );
    broker.remove_history(&ch).await.expect("remove");
    let gone = broker.latest(&ch).await.expect("latest");
    assert!(
        gone.publications.is_empty(),
        "removing the stream removes its latest values"
    );
    assert_ne!(gone.position.epoch, empty.position.epoch);
    broker.unsubscribe(&ch).await.expect("unsubscribe");
}

async fn offsets_increase_by_one_and_delivery_follows_them(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    broker.set_handler(recorder.clone());
    let ch = channel("offsets");
    broker.subscribe(&ch).await.expect("subscribe");
    let mut epoch = None;
    for (i, data) in ["1", "2", "3", "4"].into_iter().enumerate() {
        let position = broker
            .publish(&ch, publication(data), HISTORY)
            .await
            .expect("publish")
            .expect("a channel with history returns a position");
        assert_eq!(
            position.offset,
            i as u64 + 1,
            "offsets start at 1 and increase by 1"
        );
        let e = epoch.get_or_insert_with(|| position.epoch.clone());
        assert_eq!(
            *e, position.epoch,
            "the epoch does not change between publishes"
        );
    }
    let events = recorder.wait_for(&ch, 4).await;
    let delivered: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Publication {
                offset,
                epoch: ep,
                data,
                ..
            } => {
                assert_eq!(
                    Some(ep),
                    epoch.as_ref(),
                    "delivery carries the stream epoch"
                );
                (*offset, data.clone())
            }
            Event::JoinLeave { .. } => panic!("unexpected join/leave"),
        })
        .collect();
    assert_eq!(
        delivered,
        [
            (Some(1), "1"),
            (Some(2), "2"),
            (Some(3), "3"),
            (Some(4), "4")
        ]
        .map(|(o, d)| (o, d.to_owned())),
        "delivery is in offset order with offsets set"
    );
    broker.unsubscribe(&ch).await.expect("unsubscribe");
}

async fn publish_without_history_has_no_offset(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    broker.set_handler(recorder.clone());
    let ch = channel("nohistory");
    broker.subscribe(&ch).await.expect("subscribe");
    let options = PublishOptions {
        history_size: 0,
        history_ttl: Duration::ZERO,
    };
    let position = broker
        .publish(&ch, publication("{\"a\":1}"), options)
        .await
        .expect("publish");
    assert_eq!(position, None, "no history, no position");
    let events = recorder.wait_for(&ch, 1).await;
    assert!(
        matches!(&events[0], Event::Publication { offset: None, data, .. } if data == "{\"a\":1}"),
        "delivered without offset, data byte-identical: {events:?}"
    );
}

async fn history_is_trimmed_and_queried(broker: Arc<dyn Broker>) {
    let ch = channel("history");
    for i in 1..=5 {
        broker
            .publish(&ch, publication(&i.to_string()), HISTORY)
            .await
            .expect("publish");
    }
    let q = |since, limit, reverse| HistoryQuery {
        since,
        limit,
        reverse,
    };
    let all = broker
        .history(&ch, q(None, None, false))
        .await
        .expect("history");
    assert_eq!(
        offsets(&all.publications),
        [3, 4, 5],
        "trimmed to history_size, ascending"
    );
    assert_eq!(all.position.offset, 5, "position is the top");
    let cases: [(HistoryQuery, &[u64]); 10] = [
        (q(None, Some(2), false), &[4, 5]),
        (q(None, Some(2), true), &[5, 4]),
        (q(None, Some(0), false), &[]),
        (q(Some(3), None, false), &[4, 5]),
        (q(Some(3), Some(1), false), &[4]),
        (q(Some(5), None, false), &[]),
        (q(Some(5), None, true), &[4, 3]),
        (q(Some(5), Some(1), true), &[4]),
        // Positions outside what is kept: older than the trimmed start, newer than the top.
        (q(Some(1), None, false), &[3, 4, 5]),
        (q(Some(9), None, true), &[5, 4, 3]),
    ];
    for (query, expected) in cases {
        let page = broker.history(&ch, query).await.expect("history");
        assert_eq!(offsets(&page.publications), expected, "history {query:?}");
        assert_eq!(page.position.offset, 5, "position with {query:?}");
    }
    assert_eq!(
        all.publications[0].data.get(),
        "3",
        "data is kept byte-identical"
    );
}

async fn epoch_is_stable_until_history_is_removed(broker: Arc<dyn Broker>) {
    let ch = channel("epoch");
    let empty = broker
        .history(&ch, HistoryQuery::default())
        .await
        .expect("history of a new channel");
    assert_eq!(empty.position.offset, 0, "a new stream starts at offset 0");
    let first = broker
        .publish(&ch, publication("1"), HISTORY)
        .await
        .expect("publish")
        .expect("position");
    assert_eq!(
        first.epoch, empty.position.epoch,
        "the epoch read before the first publish is the stream's epoch"
    );
    broker.remove_history(&ch).await.expect("remove history");
    let again = broker
        .publish(&ch, publication("2"), HISTORY)
        .await
        .expect("publish")
        .expect("position");
    assert_ne!(again.epoch, first.epoch, "a lost stream gets a new epoch");
    assert_eq!(again.offset, 1, "offsets restart in a new epoch");
}

async fn join_and_leave_reach_the_handler(broker: Arc<dyn Broker>) {
    let recorder = Arc::new(Recorder::default());
    broker.set_handler(recorder.clone());
    let ch = channel("joinleave");
    broker.subscribe(&ch).await.expect("subscribe");
    broker
        .publish_join_leave(&ch, info("c1", "u1"), JoinLeave::Join)
        .await
        .expect("join");
    broker
        .publish_join_leave(&ch, info("c1", "u1"), JoinLeave::Leave)
        .await
        .expect("leave");
    let events = recorder.wait_for(&ch, 2).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::JoinLeave { client, join, .. } => (client.as_str(), *join),
            Event::Publication { .. } => panic!("unexpected publication"),
        })
        .collect();
    assert_eq!(
        kinds,
        [("c1", true), ("c1", false)],
        "join then leave, in order"
    );
}

/// Runs every presence store check against `store`.
///
/// # Panics
/// When the store breaks a rule of the [`PresenceStore`] contract, or an operation fails.
pub async fn presence_conformance(store: Arc<dyn PresenceStore>) {
    let ch = channel("presence");
    let ttl = Duration::from_secs(60);
    assert!(
        store.list(&ch).await.expect("list").is_empty(),
        "empty at first"
    );
    store.add(&ch, info("c1", "alice"), ttl).await.expect("add");
    store.add(&ch, info("c2", "alice"), ttl).await.expect("add");
    store.add(&ch, info("c3", "bob"), ttl).await.expect("add");
    store
        .add(&ch, info("c3", "bob"), ttl)
        .await
        .expect("refresh is an add of the same client");
    let stats = store.stats(&ch).await.expect("stats");
    assert_eq!(
        (stats.num_clients, stats.num_users),
        (3, 2),
        "clients and distinct users"
    );
    assert_eq!(
        members(store.as_ref(), &ch).await,
        [("c1", "alice"), ("c2", "alice"), ("c3", "bob")]
            .map(|(c, u)| (c.to_owned(), u.to_owned()))
    );
    store.remove(&ch, "c1").await.expect("remove");
    store.remove(&ch, "c1").await.expect("remove is idempotent");
    let stats = store.stats(&ch).await.expect("stats");
    assert_eq!((stats.num_clients, stats.num_users), (2, 2), "after remove");
    store.remove(&ch, "c2").await.expect("remove");
    let stats = store.stats(&ch).await.expect("stats");
    assert_eq!(
        (stats.num_clients, stats.num_users),
        (1, 1),
        "a user's last entry gone"
    );
    // An entry that expires leaves the counts too (its user with it).
    store
        .add(&ch, info("c4", "carol"), Duration::from_millis(1))
        .await
        .expect("add");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = store.stats(&ch).await.expect("stats");
        if (stats.num_clients, stats.num_users) == (1, 1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired entry is still counted: {stats:?}"
        );
        // Polls the store's own clock (Redis TIME for Redis), bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store.add(&ch, info("c5", "bob"), ttl).await.expect("add");
    let stats = store.stats(&ch).await.expect("stats");
    assert_eq!(
        (stats.num_clients, stats.num_users),
        (2, 1),
        "counted again"
    );
    presence_paging(&*store).await;
    presence_touch(&*store).await;
}

/// `channel`'s (client, user) pairs, sorted.
async fn members(store: &dyn PresenceStore, channel: &str) -> Vec<(String, String)> {
    let mut members: Vec<_> = store
        .list(channel)
        .await
        .expect("list")
        .into_iter()
        .map(|i| (i.client, i.user))
        .collect();
    members.sort();
    members
}

/// [`PresenceStore::touch`]: refreshes the entries held as given and reports the others by
/// index, creating and changing nothing.
async fn presence_touch(store: &dyn PresenceStore) {
    let ch = channel("touch");
    let long = Duration::from_secs(60);
    store
        .add(&ch, info("t1", "alice"), Duration::from_millis(600))
        .await
        .expect("add");
    store.add(&ch, info("t2", "bob"), long).await.expect("add");
    let absent = store
        .touch(
            &ch,
            &[
                info("t0", "nobody"),
                info("t1", "alice"),
                info("t2", "robert"),
                info("t3", "carol"),
            ],
            long,
        )
        .await
        .expect("touch");
    assert_eq!(
        absent,
        [0, 2, 3],
        "not held, held with another user, not held: reported by index"
    );
    let stats = store.stats(&ch).await.expect("stats");
    assert_eq!(
        (stats.num_clients, stats.num_users),
        (2, 2),
        "a touch creates and changes nothing"
    );
    // The touched entry outlives the TTL it was added with (the store's own clock).
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        members(store, &ch).await,
        [("t1", "alice"), ("t2", "bob")].map(|(c, u)| (c.to_owned(), u.to_owned())),
        "t1 refreshed by the touch, t2 unchanged"
    );
    let none = store
        .touch(&channel("touch-none"), &[info("x1", "x")], long)
        .await
        .expect("touch");
    assert_eq!(none, [0], "a channel without entries");
}

/// Pages through a channel of 300 members, 7 at a time, while 150 others join between pages
/// and 50 of the joiners leave again: every original member comes exactly once, nothing
/// comes that was never there, and the last page says so with an empty cursor. Then a byte
/// budget smaller than one entry still makes progress, one small batch at a time. Client ids
/// are as long as the server's UUIDs (a Redis hash of short entries is scanned whole).
async fn presence_paging(store: &dyn PresenceStore) {
    const PAD: &str = "-0000-4000-8000-000000000000";
    let ch = channel("paging");
    let ttl = Duration::from_secs(60);
    let empty = store.page(&ch, "", 10, 1 << 20).await.expect("page");
    assert!(
        empty.entries.is_empty() && empty.cursor.is_empty(),
        "an empty channel is one empty last page"
    );
    for i in 0..300 {
        let user = format!("user-{:06}", i % 40);
        store
            .add(&ch, info(&format!("m{i:07}{PAD}"), &user), ttl)
            .await
            .expect("add");
    }
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut cursor = String::new();
    let mut joined = 0;
    let mut pages = 0;
    loop {
        let page = store.page(&ch, &cursor, 7, 1 << 20).await.expect("page");
        pages += 1;
        assert!(pages < 1000, "paging does not end");
        for entry in page.entries {
            *seen.entry(entry.client).or_default() += 1;
        }
        // Concurrent joins (new ids sort before, among and after the others), and leaves of
        // some of those joiners.
        for _ in 0..3 {
            if joined < 150 {
                let id = format!("j{joined:07}{PAD}");
                store
                    .add(&ch, info(&id, "late-joiner"), ttl)
                    .await
                    .expect("add");
                if joined % 3 == 0 {
                    store.remove(&ch, &id).await.expect("remove");
                }
                joined += 1;
            }
        }
        if page.cursor.is_empty() {
            break;
        }
        cursor = page.cursor;
    }
    for i in 0..300 {
        let id = format!("m{i:07}{PAD}");
        assert_eq!(
            seen.get(&id).copied(),
            Some(1),
            "{id}, present throughout, on exactly one page"
        );
    }
    assert!(
        seen.keys()
            .all(|id| id.starts_with('m') || id.starts_with('j')),
        "only members that were there"
    );
    assert!(
        pages > 300 / 7 / 2,
        "pages of a few entries, not one reply: {pages}"
    );

    // A budget below one entry's size: each page still holds at least one entry.
    let mut cursor = String::new();
    let mut total = 0;
    let mut pages = 0;
    loop {
        let page = store.page(&ch, &cursor, 1000, 1).await.expect("page");
        assert!(!page.entries.is_empty(), "every page makes progress");
        pages += 1;
        total += page.entries.len();
        if page.cursor.is_empty() {
            break;
        }
        cursor = page.cursor;
    }
    let stats = store.stats(&ch).await.expect("stats");
    assert!(
        total >= stats.num_clients as usize && pages > 1,
        "a tight byte budget pages through all {} in small pages ({pages} pages, {total} entries)",
        stats.num_clients
    );
}
