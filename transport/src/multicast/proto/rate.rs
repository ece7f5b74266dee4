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
