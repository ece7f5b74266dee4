//! Token bucket pacing.

use std::time::{Duration, Instant};

use super::config::RateLimit;

/// A token bucket in bytes: `rate` per second refills it up to `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Tokens in millionths of a byte, so that refills of a few microseconds are not lost.
    tokens_micro: i128,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            rate: limit.bytes_per_second.max(1),
            burst: limit.burst.max(1),
            tokens_micro: i128::from(limit.burst.max(1)) * 1_000_000,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        let added = (elapsed.as_micros() as i128).saturating_mul(i128::from(self.rate));
        let cap = i128::from(self.burst) * 1_000_000;
        self.tokens_micro = (self.tokens_micro + added).min(cap);
    }

    /// Takes `bytes` if the bucket holds at least one byte's worth (a datagram larger than the
    /// remaining tokens may leave and drives the bucket into debt, as a pacer must let a
    /// datagram larger than the burst leave at all).
    pub(crate) fn try_take(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        if self.tokens_micro < 1_000_000 {
            return false;
        }
        self.tokens_micro -= bytes as i128 * 1_000_000;
        true
    }

    /// Takes `bytes` only if they are all there.
    pub(crate) fn try_take_all(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        let needed = bytes as i128 * 1_000_000;
        if self.tokens_micro < needed {
            return false;
        }
        self.tokens_micro -= needed;
        true
    }

    /// When [`try_take`](Self::try_take) will next succeed.
    pub(crate) fn ready_at(&self) -> Instant {
        if self.tokens_micro >= 1_000_000 {
            return self.refilled_at;
        }
        let missing = 1_000_000 - self.tokens_micro;
        let rate = i128::from(self.rate);
        let micros = (missing + rate - 1) / rate;
        self.refilled_at + Duration::from_micros(micros.clamp(0, i128::from(u32::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_rate_after_the_burst() {
        let start = Instant::now();
        let limit = RateLimit {
            bytes_per_second: 1_000_000,
            burst: 10_000,
        };
        let mut bucket = TokenBucket::new(limit, start);
        let mut sent = 0u64;
        let mut now = start;
        // One simulated second in steps of 100 us, 1000-byte datagrams.
        for _ in 0..10_000 {
            while bucket.try_take(1000, now) {
                sent += 1000;
            }
            now += Duration::from_micros(100);
        }
        // The burst, then the rate (within one datagram of debt).
        assert!(sent <= 10_000 + 1_000_000 + 1000, "{sent}");
        assert!(sent >= 1_000_000, "{sent}");
        assert!(bucket.ready_at() > now - Duration::from_micros(100));
    }

    #[test]
    fn take_all_refuses_what_is_not_there() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                bytes_per_second: 1000,
                burst: 1500,
            },
            start,
        );
        assert!(bucket.try_take_all(1500, start));
        assert!(!bucket.try_take_all(1, start));
        assert!(bucket.try_take_all(1000, start + Duration::from_secs(1)));
    }
}
