//! The publishers' schedule and latency measured against it.
//!
//! A publisher sends publication k (counting from 0) at k / rate seconds after its start. When
//! it falls behind (the server stopped reading, the machine stalled), it sends what is overdue
//! in one burst. Latency measured from the actual send time then hides the stall: the overdue
//! publications look fast because their clock started late ("coordinated omission"). Each
//! payload therefore carries its intended send time too, and subscribers record both.

use hdrhistogram::Histogram;

use crate::stats;

/// How many publications are due `elapsed_s` seconds after the start at `rate` per second
/// (the first is due at once).
pub(super) fn due(elapsed_s: f64, rate: f64) -> u64 {
    (elapsed_s * rate) as u64 + 1
}

/// When publication `index` (from 0) was due, in microseconds since the epoch.
pub(super) fn intended_us(start_us: u64, index: u64, rate: f64) -> u64 {
    start_us + (index as f64 * 1e6 / rate) as u64
}

/// Both latency histograms of a subscriber set, in microseconds.
#[derive(Debug)]
pub(super) struct Latencies {
    /// From the actual send time.
    pub(super) sent: Histogram<u64>,
    /// From the intended send time.
    pub(super) intended: Histogram<u64>,
}

impl Latencies {
    pub(super) fn new() -> Self {
        Latencies {
            sent: stats::histogram(),
            intended: stats::histogram(),
        }
    }

    /// One delivery received at `now_us` of a publication sent at `sent_us` and due at
    /// `intended_us`.
    pub(super) fn record(&mut self, now_us: u64, sent_us: u64, intended_us: u64) {
        self.sent
            .saturating_record(now_us.saturating_sub(sent_us).max(1));
        // A publisher ahead of schedule (rounding) must not make latency negative.
        let from = intended_us.min(sent_us);
        self.intended
            .saturating_record(now_us.saturating_sub(from).max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A publisher at 1000/s for one second whose every tick is 1 ms, except that it stalls for
    /// 200 ms in the middle; every publication is delivered 1 ms after it is sent. Latency from
    /// the send time stays at 1 ms; latency from the schedule shows the stall.
    #[test]
    fn a_stall_shows_against_the_schedule_but_not_against_the_send_time() {
        let rate = 1000.0;
        let start = 1_000_000_000u64;
        let mut l = Latencies::new();
        let mut sent = 0u64;
        let mut t_ms = 0u64;
        while t_ms < 1000 {
            let now = start + t_ms * 1000;
            let due = due(t_ms as f64 / 1000.0, rate);
            while sent < due {
                l.record(now + 1000, now, intended_us(start, sent, rate));
                sent += 1;
            }
            // The stall: the tick after 400 ms comes at 600 ms.
            t_ms += if t_ms == 400 { 200 } else { 1 };
        }
        assert_eq!(sent, 1000);
        assert_eq!(l.sent.len(), 1000);
        // Every send was followed by its delivery 1 ms later.
        assert!(l.sent.max() <= 1001, "{}", l.sent.max());
        assert!(l.sent.value_at_quantile(0.99) <= 1001);
        // 199 publications were due during the stall; the first of them waited about 200 ms.
        assert!(
            (199_000..=202_000).contains(&l.intended.max()),
            "{}",
            l.intended.max()
        );
        // A fifth of the publications were delayed: p99 lands deep inside the stall, p50 not.
        assert!(l.intended.value_at_quantile(0.99) > 150_000);
        assert!(l.intended.value_at_quantile(0.5) <= 1001);
    }

    #[test]
    fn the_schedule_spreads_publications_evenly() {
        assert_eq!(due(0.0, 100.0), 1);
        assert_eq!(due(0.0099, 100.0), 1);
        assert_eq!(due(0.01, 100.0), 2);
        assert_eq!(intended_us(5, 0, 100.0), 5);
        assert_eq!(intended_us(5, 3, 100.0), 30_005);
    }
}
