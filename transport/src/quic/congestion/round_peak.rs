//! [`RoundPeak`]: the largest value seen in the current and the last round trip, which the
//! controller keeps of its flight and of the path's queueing delay.

use std::time::{Duration, Instant};

/// The largest value recorded in the current round trip and in the one before.
#[derive(Debug, Clone, Default)]
pub(super) struct RoundPeak<T> {
    current: T,
    last: T,
    /// When the current round trip started (`None`: before the first tick).
    since: Option<Instant>,
}

impl<T: Ord + Copy> RoundPeak<T> {
    /// Starts a new round trip, whose peak begins at `now_value`, when one round trip of `rtt`
    /// passed since the current one started (or none started yet).
    pub(super) fn tick(&mut self, now: Instant, rtt: Duration, now_value: T) {
        match self.since {
            Some(since) if now.saturating_duration_since(since) < rtt => {}
            _ => {
                self.last = self.current;
                self.current = now_value;
                self.since = Some(now);
            }
        }
    }

    pub(super) fn record(&mut self, value: T) {
        self.current = self.current.max(value);
    }

    /// The largest value of the current and the last round trip.
    pub(super) fn get(&self) -> T {
        self.current.max(self.last)
    }
}
