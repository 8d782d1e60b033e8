//! Limits: rate limits as token buckets (commands per connection and publications per
//! channel), and the sizes of a `presence` page.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` per second; an action takes one
//! token or is refused. Time is passed in, so the buckets are pure and tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::util::lock;

/// Members in a `presence` page when the request names no `limit`: a channel this small comes
/// whole, as before pages.
pub const PRESENCE_PAGE_DEFAULT: usize = 1000;
/// Most members in a `presence` page (a request's `limit` above it is clamped).
pub const PRESENCE_PAGE_MAX: usize = 5000;
/// Most bytes of member entries in a `presence` page beyond its first entry (also at most a
/// quarter of the client queue).
pub const PRESENCE_PAGE_BYTES: usize = 256 * 1024;

/// One token bucket.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens added per second; 0 disables the limit.
    rate: f64,
    /// Most tokens held at once (the allowed burst).
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again (nothing to remember about it).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Publication rate limits per channel, for the whole node.
#[derive(Debug)]
pub(crate) struct ChannelRates {
    rate: f64,
    burst: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets remembered before full ones are forgotten.
const CHANNEL_BUCKETS_SWEEP: usize = 10_000;

impl ChannelRates {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        ChannelRates {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more publication to `channel` is allowed now.
    pub(crate) fn try_publish(&self, channel: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= CHANNEL_BUCKETS_SWEEP && !buckets.contains_key(channel) {
            // Full buckets carry no state: dropping them bounds the map by busy channels.
            buckets.retain(|_, b| !b.is_full(now));
        }
        buckets
            .entry(channel.to_owned())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst, now))
            .try_take(now)
    }
}

/// Open connections per user, for `max_connections_per_user`.
#[derive(Debug, Default)]
pub(crate) struct UserConnections {
    counts: Mutex<HashMap<String, usize>>,
}

impl UserConnections {
    /// Counts one more connection for `user` unless it already has `max` (0 = no limit).
    pub(crate) fn try_add(&self, user: &str, max: usize) -> bool {
        if user.is_empty() {
            return true;
        }
        let mut counts = lock(&self.counts);
        let count = counts.entry(user.to_owned()).or_insert(0);
        if max > 0 && *count >= max {
            if *count == 0 {
                counts.remove(user);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Forgets one connection of `user`.
    pub(crate) fn remove(&self, user: &str) {
        if user.is_empty() {
            return;
        }
        let mut counts = lock(&self.counts);
        if let Some(count) = counts.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, start);
        assert!((0..5).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
        let mut unlimited = TokenBucket::new(0.0, 1, start);
        assert!((0..1000).all(|_| unlimited.try_take(start)));
    }

    #[test]
    fn channel_rates_are_per_channel() {
        let now = Instant::now();
        let rates = ChannelRates::new(1.0, 2);
        assert!(rates.try_publish("a", now) && rates.try_publish("a", now));
        assert!(!rates.try_publish("a", now));
        assert!(rates.try_publish("b", now));
    }

    #[test]
    fn user_connections_are_capped_and_released() {
        let users = UserConnections::default();
        assert!(users.try_add("alice", 2) && users.try_add("alice", 2));
        assert!(!users.try_add("alice", 2));
        users.remove("alice");
        assert!(users.try_add("alice", 2));
        assert!(
            (0..10).all(|_| users.try_add("", 1)),
            "anonymous users are not counted"
        );
    }
}
