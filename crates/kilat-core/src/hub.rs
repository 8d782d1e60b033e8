//! The local subscription index: channel -> this node's subscribers, in sharded maps.
//!
//! A publication reaches the hub once (from the broker's handler), is encoded once into a
//! [`SharedFrame`], and costs one queue push per local subscriber under one shard lock; no
//! global lock is taken on the hot path.
//!
//! Each subscriber is either `Buffering` (its subscribe, or a gap repair, is reading history:
//! live frames are held back) or `Live`. [`Hub::go_live`] flushes the held frames after the
//! reply under the same lock that delivery takes, so nothing can slip in between; duplicates are
//! dropped by offset and a gap or an epoch change is never skipped silently.
//!
//! A channel of a namespace with `conflate_ms` is conflated: the first publication after a quiet
//! spell goes out at once and opens a window; within it only the newest publication waits, and
//! it goes out when the window ends (opening the next). Subscribers of such a channel accept
//! offsets that skip: the skipped publications were dropped on purpose, not lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kilat_protocol::push::{UnsubscribePush, encode_presence_diff, encode_push_kind};
use kilat_protocol::{ClientInfo, SharedFrame, UNSUBSCRIBE_INSUFFICIENT_STATE};

use crate::engine::shard_of;
use crate::outbox::Outbox;
use crate::util::lock;

const SHARDS: usize = 64;

/// A frame held back while a subscriber reads history.
#[derive(Debug)]
struct Held {
    offset: Option<u64>,
    epoch: Box<str>,
    frame: SharedFrame,
}

#[derive(Debug)]
enum Delivery {
    /// Boxed: a subscriber buffers only while it joins or repairs, and every subscriber
    /// carries this field.
    #[allow(clippy::box_collection)] // 8 bytes per live subscriber instead of 24
    Buffering(Box<Vec<Held>>),
    Live,
}

/// One local subscriber of one channel.
#[derive(Debug)]
struct Subscriber {
    outbox: Outbox,
    /// Whether this subscriber wants join/leave pushes.
    join_leave: bool,
    /// Whether offsets are tracked (the channel keeps history).
    recoverable: bool,
    /// The subscription asked for `delta: "fossil"`: its live publications come in the delta
    /// form (see [`DeltaFrames`]).
    delta: bool,
    /// For a delta subscriber: the publication at `last_offset` went to it in the delta form,
    /// so the client holds its text and a delta against it can follow. Cleared by anything
    /// else it receives (a reply, a repair, a conflated frame).
    delta_base: bool,
    /// The stream epoch the subscriber is positioned in; shared with the channel's other
    /// subscribers in the same epoch (see [`Channel::epoch`]).
    epoch: Arc<str>,
    /// Last offset delivered (or positioned at); live frames at or below it are duplicates.
    last_offset: u64,
    delivery: Delivery,
}

/// One channel's local subscribers.
#[derive(Debug, Default)]
struct Channel {
    /// Subscribers by session key.
    subs: HashMap<u64, Subscriber>,
    /// The epoch subscribers were last positioned in, so that subscribers of the same stream
    /// share one copy instead of holding one each.
    epoch: Arc<str>,
    /// Set for channels of a namespace with `conflate_ms`.
    conflation: Option<Box<Conflation>>,
    /// Set for channels of a namespace with join/leave and `presence_diff_ms`.
    diff: Option<Box<DiffWindow>>,
    /// Set while the channel has delta subscribers: the previous publication's payload.
    delta: Option<Box<DeltaChannel>>,
}

/// What a channel with `delta: "fossil"` subscribers keeps: the payload deltas are made from.
/// Only such channels pay for it (one copy of the last payload per channel, not per subscriber).
#[derive(Debug, Default)]
struct DeltaChannel {
    /// Local delta subscribers; the state goes with the last of them.
    subscribers: usize,
    /// The offset and JSON text of the last publication fanned out in the delta form.
    prev: Option<(u64, String)>,
}

/// Builds a publication's push in the delta form: `(text, is_delta)`.
pub(crate) type EncodeDelta<'a> = dyn Fn(&str, bool) -> SharedFrame + 'a;

/// The delta-form frames of one publication, each built at most once, and only when a
/// delta subscriber needs it: the full payload as a string, and a fossil delta against the
/// channel's previous publication when that is smaller (and valid UTF-8, since it travels as a
/// JSON string).
pub(crate) struct DeltaFrames<'a> {
    data: &'a str,
    encode: &'a EncodeDelta<'a>,
    full: Option<SharedFrame>,
    delta: Option<Option<SharedFrame>>,
}

impl<'a> DeltaFrames<'a> {
    /// `encode(text, is_delta)` builds a delta-form push of this publication.
    pub(crate) fn new(data: &'a str, encode: &'a EncodeDelta<'a>) -> Self {
        DeltaFrames {
            data,
            encode,
            full: None,
            delta: None,
        }
    }

    fn full(&mut self) -> SharedFrame {
        self.full
            .get_or_insert_with(|| (self.encode)(self.data, false))
            .clone()
    }

    fn delta(&mut self, prev: &str) -> Option<SharedFrame> {
        self.delta
            .get_or_insert_with(|| {
                let delta = kilat_protocol::delta::encode(prev.as_bytes(), self.data.as_bytes());
                if delta.len() >= self.data.len() {
                    return None;
                }
                let text = std::str::from_utf8(&delta).ok()?;
                Some((self.encode)(text, true))
            })
            .clone()
    }
}

/// The join/leave batching state of one channel (`presence_diff_ms`).
#[derive(Debug)]
struct DiffWindow {
    length: Duration,
    /// The window running now, if any: changes wait in `pending` until it ends.
    open: Option<u64>,
    /// Changes of the running window, oldest first (`true`: join).
    pending: Vec<(ClientInfo, bool)>,
    /// Most subscribers that get the changes listed (0: no limit); above it, counts.
    max: usize,
    /// A change arrived in this window while the channel was above `max`.
    counted: bool,
}

impl DiffWindow {
    fn over(&self, subscribers: usize) -> bool {
        self.max > 0 && subscribers > self.max
    }
}

/// What ending a join/leave window ([`Hub::end_diff_window`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiffEnd {
    /// Nothing waited: the window closed.
    Closed,
    /// The waiting changes went out as one `presence_diff`; the next window runs.
    Sent,
    /// The channel is above `presence_diff_max`: the caller sends the counts
    /// ([`Hub::deliver_presence_count`]); the next window runs.
    Count,
}

/// The batching windows a channel's namespace asks for, given to [`Hub::add`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Windows {
    /// `conflate_ms` (and `conflate_key`): at most one publication (per key) per window.
    pub(crate) conflate: Option<Conflate>,
    /// `presence_diff_ms`: joins and leaves batched into one `presence_diff` per window.
    pub(crate) presence_diff: Option<Duration>,
    /// `presence_diff_max`: above this many local subscribers, counts instead of diffs.
    pub(crate) presence_diff_max: usize,
}

/// The conflation state of one channel.
#[derive(Debug)]
struct Conflation {
    length: Duration,
    /// The window running now, if any: publications wait in `pending` until it ends.
    open: Option<u64>,
    /// The newest publication of the running window.
    pending: Option<Held>,
    /// Set with the namespace's `conflate_key`: windows keep the newest publication per key.
    keyed: Option<Box<Keyed>>,
}

/// Most keys one window of a channel holds; a publication with a new key past it goes out at
/// once (not conflated, never dropped), so hostile keys cannot grow a window without bound.
const MAX_WINDOW_KEYS: usize = 10_000;

/// Per-key conflation of one channel.
#[derive(Debug)]
struct Keyed {
    /// The data field naming each publication's key.
    field: Box<str>,
    /// The newest publication per key of the running window, with its arrival number (the
    /// window's end sends them in arrival order, so offsets still ascend).
    pending: HashMap<Box<str>, (u64, Held)>,
    arrivals: u64,
}

/// How a channel is conflated: the window length and, for per-key conflation, the data field
/// holding the key (a namespace's `conflate_ms` and `conflate_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflate {
    pub(crate) length: Duration,
    pub(crate) key: Option<Box<str>>,
}

impl From<Duration> for Conflate {
    fn from(length: Duration) -> Self {
        Conflate { length, key: None }
    }
}

/// A conflation window that [`Hub::deliver_publication`] opened; the caller ends it after
/// `length` with [`Hub::end_window`], and again after each window that delivered something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) id: u64,
    pub(crate) length: Duration,
}

/// What [`Hub::deliver_publication`] leaves for its caller to do.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Subscribers that saw a gap and now wait for a repair from history.
    pub(crate) repairs: Vec<Repair>,
    /// A conflation window this publication opened.
    pub(crate) window: Option<Window>,
    /// Frames queued to live subscribers by this delivery (for the observer).
    pub(crate) delivered: u64,
}

/// `epoch` as a shared string: the channel's copy when it matches, else a new copy that becomes
/// the channel's.
fn share_epoch(shared: &mut Arc<str>, epoch: &str) -> Arc<str> {
    if **shared != *epoch {
        *shared = epoch.into();
    }
    shared.clone()
}

/// Local subscribers by channel.
type Channels = HashMap<String, Channel>;

/// What a subscriber needs after a delivery found a gap: a history read from `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    pub(crate) channel: String,
    pub(crate) key: u64,
    pub(crate) after: u64,
    pub(crate) epoch: String,
}

/// Outcome of [`Hub::go_live`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoLive {
    /// The subscriber is live.
    Live,
    /// The subscriber lost its position and was removed with an `unsubscribe` push.
    Stale,
    /// The subscriber was gone already (unsubscribed or closed meanwhile).
    Gone,
}

/// The sharded channel -> subscribers index.
#[derive(Debug)]
pub(crate) struct Hub {
    shards: Box<[Mutex<Channels>]>,
    /// Subscriptions held, for stats.
    subscriptions: AtomicUsize,
    /// Channels with at least one local subscriber, for stats.
    channels: AtomicUsize,
    /// Frames queued to subscribers by fan-out, for stats.
    deliveries: AtomicU64,
    /// Source of conflation window ids, so a window's timer never ends a later window.
    windows: AtomicU64,
    /// The metrics observer, read by the delivery handler and sessions (in the hub because
    /// both already share it).
    pub(crate) observer: crate::observe::ObserverSlot,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            subscriptions: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            deliveries: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            observer: Default::default(),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<Channels> {
        &self.shards[shard_of(channel, self.shards.len())]
    }

    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub(crate) fn channel_count(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    pub(crate) fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Names of channels with local subscribers.
    pub(crate) fn channel_names(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Adds a buffering subscriber. `windows` are the channel's conflation and join/leave
    /// batching windows (from its namespace). Returns true when the channel had no local
    /// subscriber (the node must subscribe to it in the broker).
    pub(crate) fn add(
        &self,
        channel: &str,
        key: u64,
        outbox: Outbox,
        join_leave: bool,
        recoverable: bool,
        windows: Windows,
    ) -> bool {
        let mut map = lock(self.shard(channel));
        let first = !map.contains_key(channel);
        let entry = map.entry(channel.to_owned()).or_default();
        if let (None, Some(Conflate { length, key })) = (&entry.conflation, windows.conflate) {
            entry.conflation = Some(Box::new(Conflation {
                length,
                open: None,
                pending: None,
                keyed: key.map(|field| {
                    Box::new(Keyed {
                        field,
                        pending: HashMap::new(),
                        arrivals: 0,
                    })
                }),
            }));
        }
        if let (None, Some(length)) = (&entry.diff, windows.presence_diff) {
            entry.diff = Some(Box::new(DiffWindow {
                length,
                open: None,
                pending: Vec::new(),
                max: windows.presence_diff_max,
                counted: false,
            }));
        }
        let old = entry.subs.insert(
            key,
            Subscriber {
                outbox,
                join_leave,
                recoverable,
                delta: false,
                delta_base: false,
                epoch: entry.epoch.clone(),
                last_offset: 0,
                delivery: Delivery::Buffering(Box::default()),
            },
        );
        if old.is_none() {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        if first {
            self.channels.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Turns `key`'s subscription to `channel` (just added) into a delta subscription: its live
    /// publications come in the delta form, and the channel keeps its last payload from now on.
    pub(crate) fn enable_delta(&self, channel: &str, key: u64) {
        let mut map = lock(self.shard(channel));
        let Some(entry) = map.get_mut(channel) else {
            return;
        };
        let Some(sub) = entry.subs.get_mut(&key) else {
            return;
        };
        if !sub.delta {
            sub.delta = true;
            entry.delta.get_or_insert_with(Box::default).subscribers += 1;
        }
    }

    /// How many local subscribers `channel` has.
    pub(crate) fn subscriber_count(&self, channel: &str) -> usize {
        lock(self.shard(channel))
            .get(channel)
            .map_or(0, |entry| entry.subs.len())
    }

    /// Whether `channel` has local subscribers.
    pub(crate) fn channel_names_contains(&self, channel: &str) -> bool {
        lock(self.shard(channel)).contains_key(channel)
    }

    /// Calls `f` with each channel's name and local subscriber count, one shard lock at a time.
    pub(crate) fn for_each_channel(&self, mut f: impl FnMut(&str, usize)) {
        for shard in self.shards.iter() {
            for (name, entry) in lock(shard).iter() {
                f(name, entry.subs.len());
            }
        }
    }

    /// Whether session `key` is subscribed to `channel` here.
    pub(crate) fn contains(&self, channel: &str, key: u64) -> bool {
        lock(self.shard(channel))
            .get(channel)
            .is_some_and(|entry| entry.subs.contains_key(&key))
    }

    /// Removes a subscriber. Returns true when the channel has no local subscriber left.
    pub(crate) fn remove(&self, channel: &str, key: u64) -> bool {
        let mut map = lock(self.shard(channel));
        self.remove_locked(&mut map, channel, key)
    }

    fn remove_locked(&self, map: &mut Channels, channel: &str, key: u64) -> bool {
        let Some(entry) = map.get_mut(channel) else {
            return false;
        };
        if let Some(sub) = entry.subs.remove(&key) {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if sub.delta
                && let Some(state) = entry.delta.as_deref_mut()
            {
                state.subscribers -= 1;
                if state.subscribers == 0 {
                    entry.delta = None;
                }
            }
        }
        if entry.subs.is_empty() {
            map.remove(channel);
            self.channels.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Pushes `prefix` (a reply, or repaired publications), then the held frames after
    /// `position`, and turns the subscriber live at `position` in `epoch`.
    ///
    /// A held frame from another epoch, or one that leaves a gap after `position`, makes the
    /// subscription stale: it is removed with an `unsubscribe` push asking to resubscribe.
    pub(crate) fn go_live(
        &self,
        channel: &str,
        key: u64,
        prefix: impl IntoIterator<Item = SharedFrame>,
        position: u64,
        epoch: &str,
    ) -> GoLive {
        let mut map = lock(self.shard(channel));
        let Some(entry) = map.get_mut(channel) else {
            return GoLive::Gone;
        };
        let Channel {
            subs,
            epoch: shared,
            conflation,
            ..
        } = entry;
        let skips = conflation.is_some();
        let Some(sub) = subs.get_mut(&key) else {
            return GoLive::Gone;
        };
        for frame in prefix {
            sub.outbox.push(frame);
        }
        sub.epoch = share_epoch(shared, epoch);
        sub.last_offset = position;
        let held = match std::mem::replace(&mut sub.delivery, Delivery::Live) {
            Delivery::Buffering(held) => *held,
            Delivery::Live => Vec::new(),
        };
        let mut stale = false;
        for item in held {
            match item.offset {
                Some(offset) if sub.recoverable => {
                    let gap = offset > sub.last_offset + 1 && !skips;
                    if *item.epoch != *sub.epoch || gap {
                        stale = true;
                        break;
                    }
                    if offset <= sub.last_offset {
                        continue;
                    }
                    sub.last_offset = offset;
                    sub.outbox.push(item.frame);
                }
                _ => sub.outbox.push(item.frame),
            }
        }
        // The reply, repaired publications and held frames are no base for a delta: the first
        // live publication goes out in full.
        sub.delta_base = false;
        if stale {
            sub.outbox.push(stale_frame(channel));
            self.remove_locked(&mut map, channel, key);
            return GoLive::Stale;
        }
        GoLive::Live
    }

    /// Fans a publication out to `channel`'s local subscribers. `encode` runs at most once, and
    /// only when the channel has local subscribers. In a conflated channel with a window
    /// running, the publication only replaces the one waiting for the window's end.
    #[cfg(test)]
    pub(crate) fn deliver_publication(
        &self,
        channel: &str,
        offset: Option<u64>,
        epoch: &str,
        encode: impl FnOnce() -> SharedFrame,
    ) -> Delivered {
        self.deliver(channel, offset, epoch, "", encode)
    }

    /// [`Hub::deliver_publication`] with the publication's raw `data`, read only in a channel
    /// conflated per key (for its key) while a window runs.
    #[cfg(test)]
    pub(crate) fn deliver(
        &self,
        channel: &str,
        offset: Option<u64>,
        epoch: &str,
        data: &str,
        encode: impl FnOnce() -> SharedFrame,
    ) -> Delivered {
        self.deliver_delta(channel, offset, epoch, data, encode, None)
    }

    /// [`Hub::deliver`], with `encode_delta(text, is_delta)` building the publication's push in
    /// the delta form for `delta: "fossil"` subscribers (called only when the channel has some).
    /// Without `encode_delta` (a binary publication: full payloads only) delta subscribers get
    /// the plain frame and the next publication is sent to them in full.
    pub(crate) fn deliver_delta(
        &self,
        channel: &str,
        offset: Option<u64>,
        epoch: &str,
        data: &str,
        encode: impl FnOnce() -> SharedFrame,
        encode_delta: Option<&EncodeDelta<'_>>,
    ) -> Delivered {
        let mut frames = encode_delta.map(|encode_delta| DeltaFrames::new(data, encode_delta));
        let mut map = lock(self.shard(channel));
        let Some(entry) = map.get_mut(channel) else {
            return Delivered::default();
        };
        let mut window = None;
        if let Some(conflation) = entry.conflation.as_deref_mut() {
            if conflation.open.is_some() {
                let held = Held {
                    offset,
                    epoch: epoch.into(),
                    frame: encode(),
                };
                let Some(keyed) = conflation.keyed.as_deref_mut() else {
                    conflation.pending = Some(held);
                    return Delivered::default();
                };
                // Publications without a usable key (refused at publish on this node, but
                // another node may be configured differently) share the key "".
                let key = crate::keys::publication_key(data, &keyed.field).unwrap_or_default();
                if keyed.pending.len() < MAX_WINDOW_KEYS || keyed.pending.contains_key(&key) {
                    keyed.arrivals += 1;
                    keyed.pending.insert(key, (keyed.arrivals, held));
                    return Delivered::default();
                }
                // Too many keys in this window: deliver this one now rather than drop it.
                let (repairs, delivered) = self.fan_out(
                    &mut map,
                    channel,
                    offset,
                    epoch,
                    &held.frame,
                    frames.as_mut(),
                );
                return Delivered {
                    repairs,
                    window: None,
                    delivered,
                };
            }
            let id = self.windows.fetch_add(1, Ordering::Relaxed);
            conflation.open = Some(id);
            window = Some(Window {
                id,
                length: conflation.length,
            });
        }
        let (repairs, delivered) =
            self.fan_out(&mut map, channel, offset, epoch, &encode(), frames.as_mut());
        Delivered {
            repairs,
            window,
            delivered,
        }
    }

    /// Ends conflation window `id` of `channel`: sends the publication that waited for it, if
    /// any, and then keeps the window running for another length (returns true); otherwise
    /// closes it (false), so the next publication goes out at once.
    pub(crate) fn end_window(&self, channel: &str, id: u64) -> bool {
        let mut map = lock(self.shard(channel));
        let Some(conflation) = map
            .get_mut(channel)
            .and_then(|entry| entry.conflation.as_deref_mut())
        else {
            return false;
        };
        if conflation.open != Some(id) {
            return false;
        }
        if let Some(keyed) = conflation.keyed.as_deref_mut() {
            if keyed.pending.is_empty() {
                conflation.open = None;
                return false;
            }
            let mut pending: Vec<(u64, Held)> = keyed.pending.drain().map(|(_, v)| v).collect();
            pending.sort_unstable_by_key(|(arrival, _)| *arrival);
            for (_, held) in pending {
                let (repairs, _) = self.fan_out(
                    &mut map,
                    channel,
                    held.offset,
                    &held.epoch,
                    &held.frame,
                    None,
                );
                debug_assert!(repairs.is_empty());
            }
            return true;
        }
        let Some(held) = conflation.pending.take() else {
            conflation.open = None;
            return false;
        };
        // Conflated subscribers accept skipped offsets, so this never asks for a repair.
        let (repairs, _) = self.fan_out(
            &mut map,
            channel,
            held.offset,
            &held.epoch,
            &held.frame,
            None,
        );
        debug_assert!(repairs.is_empty());
        true
    }

    /// Queues `frame` to every subscriber of `channel`; returns the subscribers that saw a gap
    /// and how many frames were queued.
    fn fan_out(
        &self,
        map: &mut Channels,
        channel: &str,
        offset: Option<u64>,
        epoch: &str,
        frame: &SharedFrame,
        mut frames: Option<&mut DeltaFrames<'_>>,
    ) -> (Vec<Repair>, u64) {
        let Some(entry) = map.get_mut(channel) else {
            return (Vec::new(), 0);
        };
        let skips = entry.conflation.is_some();
        // Without delta subscribers, or without the payload (a conflation window's end), the
        // delta form is not built: delta subscribers get the plain frame and lose their base.
        if entry.delta.is_none() {
            frames = None;
        }
        let prev = entry
            .delta
            .as_deref_mut()
            .and_then(|state| state.prev.take());
        let subs = &mut entry.subs;
        let mut repairs = Vec::new();
        let mut stale = Vec::new();
        let mut delivered = 0u64;
        for (&key, sub) in subs.iter_mut() {
            match &mut sub.delivery {
                Delivery::Buffering(held) => held.push(Held {
                    offset,
                    epoch: epoch.into(),
                    frame: match frames.as_deref_mut() {
                        Some(frames) if sub.delta => frames.full(),
                        _ => frame.clone(),
                    },
                }),
                Delivery::Live => match offset {
                    Some(offset) if sub.recoverable => {
                        if *sub.epoch != *epoch {
                            stale.push(key);
                        } else if offset <= sub.last_offset {
                            // A duplicate (e.g. redelivered after a repair): dropped by offset.
                        } else if offset == sub.last_offset + 1 || skips {
                            let frame = if sub.delta {
                                // A delta only against what this subscriber got last.
                                let base = prev
                                    .as_ref()
                                    .filter(|(prev, _)| sub.delta_base && *prev == sub.last_offset);
                                sub.delta_base = frames.is_some();
                                match (frames.as_deref_mut(), base) {
                                    (Some(frames), Some((_, text))) => {
                                        frames.delta(text).unwrap_or_else(|| frames.full())
                                    }
                                    (Some(frames), None) => frames.full(),
                                    (None, _) => frame.clone(),
                                }
                            } else {
                                frame.clone()
                            };
                            sub.last_offset = offset;
                            sub.outbox.push(frame);
                            delivered += 1;
                        } else {
                            repairs.push(Repair {
                                channel: channel.to_owned(),
                                key,
                                after: sub.last_offset,
                                epoch: sub.epoch.to_string(),
                            });
                            sub.delivery = Delivery::Buffering(Box::new(vec![Held {
                                offset: Some(offset),
                                epoch: epoch.into(),
                                frame: match frames.as_deref_mut() {
                                    Some(frames) if sub.delta => frames.full(),
                                    _ => frame.clone(),
                                },
                            }]));
                        }
                    }
                    _ => {
                        sub.delta_base = false;
                        sub.outbox.push(frame.clone());
                        delivered += 1;
                    }
                },
            }
        }
        if let Some(state) = entry.delta.as_deref_mut() {
            state.prev = match (frames.as_deref(), offset) {
                (Some(frames), Some(offset)) => {
                    // The next publication's delta base, in the previous one's buffer.
                    let mut text = prev.map(|(_, text)| text).unwrap_or_default();
                    text.clear();
                    text.push_str(frames.data);
                    Some((offset, text))
                }
                _ => prev,
            };
        }
        for key in stale {
            if let Some(sub) = map.get(channel).and_then(|entry| entry.subs.get(&key)) {
                sub.outbox.push(stale_frame(channel));
            }
            self.remove_locked(map, channel, key);
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
        (repairs, delivered)
    }

    /// Fans a join or leave out to subscribers that want them. In a channel with a batching
    /// window (`presence_diff_ms`), the first change after a quiet spell goes out at once as a
    /// one-change `presence_diff` and opens a window (returned: the caller ends it with
    /// [`Hub::end_diff_window`]); changes within the window wait for its end. Otherwise a
    /// single `join`/`leave` push built by `encode` (at most once) goes out.
    pub(crate) fn deliver_join_leave(
        &self,
        channel: &str,
        info: &ClientInfo,
        join: bool,
        encode: impl FnOnce() -> SharedFrame,
    ) -> Option<Window> {
        let mut map = lock(self.shard(channel));
        let entry = map.get_mut(channel)?;
        let subscribers = entry.subs.len();
        let Some(diff) = entry.diff.as_deref_mut() else {
            Self::fan_out_join_leave(entry, encode);
            return None;
        };
        let over = diff.over(subscribers);
        if over {
            // Not listed: the window's end sends the counts. Nothing kept per change.
            diff.counted = true;
            diff.pending.clear();
        }
        if diff.open.is_some() {
            if !over {
                diff.pending.push((info.clone(), join));
            }
            return None;
        }
        let id = self.windows.fetch_add(1, Ordering::Relaxed);
        diff.open = Some(id);
        let window = Window {
            id,
            length: diff.length,
        };
        if over {
            return Some(window);
        }
        Self::fan_out_join_leave(entry, || {
            SharedFrame::new(encode_presence_diff(channel, [(info, join)]))
        });
        Some(window)
    }

    /// Ends join/leave window `id` of `channel`: sends the changes that waited for it as one
    /// `presence_diff` and keeps the window running for another length, asks the caller for the
    /// counts when the channel is above `presence_diff_max`, or closes the window when nothing
    /// waited, so the next change goes out at once.
    pub(crate) fn end_diff_window(&self, channel: &str, id: u64) -> DiffEnd {
        let mut map = lock(self.shard(channel));
        let Some(entry) = map.get_mut(channel) else {
            return DiffEnd::Closed;
        };
        let subscribers = entry.subs.len();
        let Some(diff) = entry.diff.as_deref_mut() else {
            return DiffEnd::Closed;
        };
        if diff.open != Some(id) {
            return DiffEnd::Closed;
        }
        if diff.counted || (!diff.pending.is_empty() && diff.over(subscribers)) {
            diff.counted = false;
            diff.pending.clear();
            return DiffEnd::Count;
        }
        if diff.pending.is_empty() {
            diff.open = None;
            return DiffEnd::Closed;
        }
        let pending = std::mem::take(&mut diff.pending);
        Self::fan_out_join_leave(entry, || {
            SharedFrame::new(encode_presence_diff(
                channel,
                pending.iter().map(|(info, join)| (info, *join)),
            ))
        });
        DiffEnd::Sent
    }

    /// Sends a `presence_count` push (built by `encode`, once) to `channel`'s subscribers that
    /// want join/leave.
    pub(crate) fn deliver_presence_count(
        &self,
        channel: &str,
        encode: impl FnOnce() -> SharedFrame,
    ) {
        let mut map = lock(self.shard(channel));
        if let Some(entry) = map.get_mut(channel) {
            Self::fan_out_join_leave(entry, encode);
        }
    }

    /// Queues a join/leave frame (built by `encode` at most once, and only when someone wants
    /// it) to the channel's subscribers that want join/leave.
    fn fan_out_join_leave(entry: &mut Channel, encode: impl FnOnce() -> SharedFrame) {
        let mut encode = Some(encode);
        let mut frame: Option<SharedFrame> = None;
        for sub in entry.subs.values_mut().filter(|s| s.join_leave) {
            if frame.is_none() {
                frame = encode.take().map(|encode| encode());
            }
            let Some(frame) = &frame else { break };
            match &mut sub.delivery {
                // Held so it follows the subscribe reply; no offset, so never a duplicate.
                Delivery::Buffering(held) => held.push(Held {
                    offset: None,
                    epoch: "".into(),
                    frame: frame.clone(),
                }),
                Delivery::Live => sub.outbox.push(frame.clone()),
            }
        }
    }

    /// Removes a subscriber whose position cannot be repaired, with an `unsubscribe` push.
    pub(crate) fn drop_stale(&self, channel: &str, key: u64) {
        let mut map = lock(self.shard(channel));
        if let Some(sub) = map.get(channel).and_then(|entry| entry.subs.get(&key)) {
            sub.outbox.push(stale_frame(channel));
            self.remove_locked(&mut map, channel, key);
        }
    }
}

/// The `unsubscribe` push that asks the client to resubscribe (it will get `recovered: false`).
fn stale_frame(channel: &str) -> SharedFrame {
    unsubscribe_frame(
        channel,
        UNSUBSCRIBE_INSUFFICIENT_STATE,
        "insufficient state",
        true,
    )
}

/// An `unsubscribe` push: the server ended the subscription to `channel`.
pub(crate) fn unsubscribe_frame(
    channel: &str,
    code: u32,
    reason: impl Into<String>,
    resubscribe: bool,
) -> SharedFrame {
    SharedFrame::new(encode_push_kind(
        Some(channel),
        "unsubscribe",
        &UnsubscribePush {
            code,
            reason: reason.into(),
            resubscribe,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> SharedFrame {
        SharedFrame::new(format!("{{\"n\":{n}}}"))
    }

    fn drained(outbox: &Outbox) -> Vec<String> {
        let mut batch = Vec::new();
        outbox.drain(&mut batch, usize::MAX);
        batch
            .iter()
            .map(|f| String::from_utf8_lossy(f.json()).into_owned())
            .collect()
    }

    #[test]
    fn held_frames_follow_the_reply_without_duplicates() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        assert!(hub.add("c", 1, outbox.clone(), false, true, Windows::default()));
        for offset in [3, 4, 5] {
            hub.deliver_publication("c", Some(offset), "e", || frame(offset));
        }
        let state = hub.go_live("c", 1, [SharedFrame::new("reply")], 4, "e");
        assert_eq!(state, GoLive::Live);
        assert_eq!(drained(&outbox), ["reply", "{\"n\":5}"]);
        hub.deliver_publication("c", Some(5), "e", || frame(5));
        hub.deliver_publication("c", Some(6), "e", || frame(6));
        assert_eq!(
            drained(&outbox),
            ["{\"n\":6}"],
            "the duplicate 5 is dropped"
        );
    }

    #[test]
    fn a_held_gap_or_epoch_change_makes_the_subscription_stale() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        hub.add("c", 1, outbox.clone(), false, true, Windows::default());
        hub.deliver_publication("c", Some(7), "e", || frame(7));
        assert_eq!(hub.go_live("c", 1, None, 5, "e"), GoLive::Stale);
        assert!(!hub.contains("c", 1));
        let frames = drained(&outbox);
        assert!(frames[0].contains("\"resubscribe\":true"), "{frames:?}");
        assert_eq!(hub.subscriptions(), 0);
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn a_live_gap_asks_for_a_repair_and_holds_later_frames() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        hub.add("c", 1, outbox.clone(), false, true, Windows::default());
        hub.go_live("c", 1, None, 1, "e");
        let repairs = hub
            .deliver_publication("c", Some(3), "e", || frame(3))
            .repairs;
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].after, 1);
        assert!(
            hub.deliver_publication("c", Some(4), "e", || frame(4))
                .repairs
                .is_empty()
        );
        assert!(
            drained(&outbox).is_empty(),
            "nothing delivered past the gap"
        );
        hub.go_live("c", 1, [frame(2), frame(3)], 3, "e");
        assert_eq!(drained(&outbox), ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"]);
    }

    #[test]
    fn encode_runs_only_with_local_subscribers() {
        let hub = Hub::new();
        hub.deliver_publication("nobody", Some(1), "e", || unreachable!("no subscribers"));
        let info = ClientInfo {
            client: "c".into(),
            user: String::new(),
            info: None,
        };
        hub.deliver_join_leave("nobody", &info, true, || unreachable!("no subscribers"));
    }

    #[test]
    fn a_conflated_channel_sends_the_first_at_once_then_the_newest_per_window() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        let length = Duration::from_millis(100);
        hub.add(
            "t",
            1,
            outbox.clone(),
            false,
            true,
            Windows {
                conflate: Some(length.into()),
                presence_diff: None,
                presence_diff_max: 0,
            },
        );
        hub.go_live("t", 1, None, 0, "e");

        let first = hub.deliver_publication("t", Some(1), "e", || frame(1));
        let window = first.window.expect("the first publication opens a window");
        assert_eq!(window.length, length);
        assert_eq!(
            drained(&outbox),
            ["{\"n\":1}"],
            "the first goes out at once"
        );
        for n in 2..=4 {
            let later = hub.deliver_publication("t", Some(n), "e", || frame(n));
            assert!(later.window.is_none() && later.repairs.is_empty());
        }
        assert!(drained(&outbox).is_empty(), "held until the window ends");

        assert!(hub.end_window("t", window.id), "the newest went out");
        assert_eq!(
            drained(&outbox),
            ["{\"n\":4}"],
            "2 and 3 were conflated away"
        );
        assert!(!hub.end_window("t", window.id), "a quiet window closes");
        let next = hub.deliver_publication("t", Some(5), "e", || frame(5));
        assert!(next.window.is_some_and(|w| w.id != window.id));
        assert_eq!(drained(&outbox), ["{\"n\":5}"]);
        assert!(
            !hub.end_window("t", window.id),
            "an old window's timer cannot end the new window"
        );
    }

    #[test]
    fn a_joining_subscriber_of_a_conflated_channel_accepts_skipped_offsets() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        hub.add(
            "t",
            1,
            outbox.clone(),
            false,
            true,
            Windows {
                conflate: Some(Duration::from_secs(1).into()),
                presence_diff: None,
                presence_diff_max: 0,
            },
        );
        // Held while the subscribe reads its position: offset 9 after position 5 is a skip.
        hub.deliver_publication("t", Some(9), "e", || frame(9));
        assert_eq!(hub.go_live("t", 1, None, 5, "e"), GoLive::Live);
        assert_eq!(drained(&outbox), ["{\"n\":9}"]);
    }

    /// A ticker payload that changes a little with `n`.
    fn tick(n: u64) -> String {
        format!(
            r#"{{"symbol":"ACME","exchange":"XNAS","currency":"USD","status":"trading","open":101.5,"high":109.75,"price":{n}.25,"volume":{}}}"#,
            1_000_000 + n
        )
    }

    /// Delivers publication `n` of channel "d" and returns how many deltas were built.
    fn deliver_tick(hub: &Hub, n: u64) -> usize {
        let data = tick(n);
        let deltas = std::cell::Cell::new(0);
        let encode_delta = |text: &str, delta: bool| {
            deltas.set(deltas.get() + usize::from(delta));
            let tag = if delta { "delta" } else { "full" };
            SharedFrame::new(format!("{tag} {n} {text}"))
        };
        hub.deliver_delta("d", Some(n), "e", &data, || frame(n), Some(&encode_delta));
        deltas.get()
    }

    /// Turns the delta-form frames drained from a delta subscriber back into payloads, the way
    /// a client does: a full one is the new base, a delta applies to the base.
    fn apply_frames(frames: &[String], base: &mut Option<String>) -> Vec<(String, String)> {
        frames
            .iter()
            .map(|frame| {
                let Some((tag, rest)) = frame.split_once(' ') else {
                    // A plain frame: no base for a delta.
                    *base = None;
                    return (frame.clone(), String::new());
                };
                let (_, text) = rest.split_once(' ').expect("numbered");
                let payload = match tag {
                    "full" => text.to_owned(),
                    "delta" => {
                        let source = base.as_deref().expect("a delta only after a base");
                        let out = kilat_protocol::delta::apply(
                            source.as_bytes(),
                            text.as_bytes(),
                            1 << 20,
                        )
                        .expect("the delta applies to the subscriber's base");
                        String::from_utf8(out).expect("utf8")
                    }
                    _ => unreachable!("only full and delta frames are tagged"),
                };
                *base = Some(payload.clone());
                (tag.to_owned(), payload)
            })
            .collect()
    }

    #[test]
    fn delta_subscribers_get_the_same_payloads_from_one_delta_per_publication() {
        let hub = Hub::new();
        let plain = Outbox::new(1 << 20);
        let deltas = [Outbox::new(1 << 20), Outbox::new(1 << 20)];
        hub.add("d", 1, plain.clone(), false, true, Windows::default());
        for (key, outbox) in (2..).zip(&deltas) {
            hub.add("d", key, outbox.clone(), false, true, Windows::default());
            hub.enable_delta("d", key);
        }
        for key in 1..=3 {
            hub.go_live("d", key, None, 0, "e");
        }
        assert_eq!(deliver_tick(&hub, 1), 0, "nothing to make a delta from");
        for n in 2..=5 {
            assert_eq!(deliver_tick(&hub, n), 1, "one delta for both subscribers");
        }
        assert_eq!(
            drained(&plain),
            (1..=5)
                .map(|n| format!("{{\"n\":{n}}}"))
                .collect::<Vec<_>>()
        );
        for outbox in &deltas {
            let mut base = None;
            let got = apply_frames(&drained(outbox), &mut base);
            let tags: Vec<_> = got.iter().map(|(tag, _)| tag.as_str()).collect();
            assert_eq!(tags, ["full", "delta", "delta", "delta", "delta"]);
            let payloads: Vec<_> = got.into_iter().map(|(_, payload)| payload).collect();
            assert_eq!(payloads, (1..=5).map(tick).collect::<Vec<_>>());
        }
    }

    #[test]
    fn after_a_gap_a_delta_subscriber_gets_a_full_payload_first() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        hub.add("d", 1, outbox.clone(), false, true, Windows::default());
        hub.enable_delta("d", 1);
        hub.go_live("d", 1, None, 0, "e");
        deliver_tick(&hub, 1);
        deliver_tick(&hub, 2);
        // 3 never arrives live: 4 opens a gap, repaired from history (plain frames).
        let data = tick(4);
        let delivered = hub.deliver_delta(
            "d",
            Some(4),
            "e",
            &data,
            || frame(4),
            Some(&|text: &str, delta: bool| {
                SharedFrame::new(format!("{} 4 {text}", if delta { "delta" } else { "full" }))
            }),
        );
        assert_eq!(delivered.repairs.len(), 1);
        hub.go_live("d", 1, [frame(3)], 3, "e");
        deliver_tick(&hub, 5);
        let mut base = None;
        let got = apply_frames(&drained(&outbox), &mut base);
        let tags: Vec<_> = got.iter().map(|(tag, _)| tag.as_str()).collect();
        assert_eq!(tags, ["full", "delta", "{\"n\":3}", "full", "full"]);
        assert_eq!(got[4].1, tick(5));
    }

    #[test]
    fn the_delta_flags_fit_in_a_subscribers_padding() {
        // Every subscription of every connection holds one: the two delta flags cost nothing.
        assert!(std::mem::size_of::<Subscriber>() <= 48);
    }

    #[test]
    fn channels_without_delta_subscribers_build_no_delta_and_keep_no_payload() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        hub.add("d", 1, outbox.clone(), false, true, Windows::default());
        hub.go_live("d", 1, None, 0, "e");
        hub.deliver_delta(
            "d",
            Some(1),
            "e",
            "{}",
            || frame(1),
            Some(&|_: &str, _: bool| unreachable!("no delta subscriber")),
        );
        hub.add(
            "d",
            2,
            Outbox::new(1 << 20),
            false,
            true,
            Windows::default(),
        );
        hub.enable_delta("d", 2);
        hub.go_live("d", 2, None, 1, "e");
        deliver_tick(&hub, 2);
        assert!(
            lock(hub.shard("d"))["d"]
                .delta
                .as_ref()
                .is_some_and(|d| d.prev.is_some())
        );
        hub.remove("d", 2);
        assert!(
            lock(hub.shard("d"))["d"].delta.is_none(),
            "the payload goes with the last delta subscriber"
        );
        hub.deliver_delta(
            "d",
            Some(3),
            "e",
            "{}",
            || frame(3),
            Some(&|_: &str, _: bool| unreachable!("no delta subscriber")),
        );
    }

    fn keyed(n: u64, key: &str) -> (String, SharedFrame) {
        let data = format!("{{\"k\":\"{key}\",\"n\":{n}}}");
        (data.clone(), SharedFrame::new(data))
    }

    #[test]
    fn per_key_conflation_sends_the_newest_of_every_key_in_offset_order() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 20);
        let conflate = Conflate {
            length: Duration::from_millis(100),
            key: Some("k".into()),
        };
        hub.add(
            "g",
            1,
            outbox.clone(),
            false,
            true,
            Windows {
                conflate: Some(conflate),
                ..Windows::default()
            },
        );
        hub.go_live("g", 1, None, 0, "e");
        let publish = |n: u64, key: &str| {
            let (data, frame) = keyed(n, key);
            hub.deliver("g", Some(n), "e", &data, || frame)
        };
        let window = publish(1, "a").window.expect("opens a window");
        assert_eq!(drained(&outbox).len(), 1, "the first goes out at once");
        // a, b, a, c, b, a: the newest of each key is a@6, b@5, c@4.
        for (n, key) in [(2, "a"), (3, "b"), (4, "c"), (5, "b"), (6, "a")] {
            assert!(publish(n, key).window.is_none());
        }
        assert!(drained(&outbox).is_empty(), "held until the window ends");
        assert!(hub.end_window("g", window.id));
        assert_eq!(
            drained(&outbox),
            [
                "{\"k\":\"c\",\"n\":4}",
                "{\"k\":\"b\",\"n\":5}",
                "{\"k\":\"a\",\"n\":6}"
            ],
            "one per key, none dropped, offsets ascending"
        );
        assert!(!hub.end_window("g", window.id), "a quiet window closes");
    }

    #[test]
    fn a_window_full_of_keys_delivers_new_keys_at_once() {
        let hub = Hub::new();
        let outbox = Outbox::new(1 << 30);
        let conflate = Conflate {
            length: Duration::from_millis(100),
            key: Some("k".into()),
        };
        hub.add(
            "g",
            1,
            outbox.clone(),
            false,
            false,
            Windows {
                conflate: Some(conflate),
                ..Windows::default()
            },
        );
        hub.go_live("g", 1, None, 0, "");
        let publish = |key: &str| {
            let (data, frame) = keyed(0, key);
            hub.deliver("g", None, "", &data, || frame)
        };
        publish("first");
        drained(&outbox);
        for k in 0..MAX_WINDOW_KEYS {
            publish(&k.to_string());
        }
        assert!(drained(&outbox).is_empty());
        publish("one too many");
        assert_eq!(drained(&outbox), ["{\"k\":\"one too many\",\"n\":0}"]);
    }
}
