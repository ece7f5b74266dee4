//! The bandwidth bound of `replicast backup --rate BYTES/s`: a pacer the fetches of a run share.
//!
//! Sans-IO: the fetch tells the pacer how many bytes a page brought and when, and the pacer
//! says how long to wait before asking for the next page; the fetch sleeps. It keeps a virtual
//! clock of when the bytes received so far are "paid for" at the rate: every page moves it by
//! `bytes / rate`, from now when it is behind (an idle pacer gains no credit, so a standing
//! backup that waited for commits does not then burst). Over any stretch of pages the bytes
//! received are at most `rate` per second plus one page, and pages are at most a second's worth
//! ([`page_bytes`](Pacer::page_bytes)).
//!
//! A rate of 1 MB/s and a page of 500 kB at once: the next page waits half a second.

use std::time::{Duration, Instant};

/// The smallest page asked for under a low rate (a page holds at least one transaction anyway).
const MIN_PAGE_BYTES: u64 = 4096;

/// A bandwidth bound; see the [module documentation](self).
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second (at least 1).
    rate: u64,
    /// When the bytes received so far are paid for at the rate.
    paid_until: Option<Instant>,
}

impl Pacer {
    /// A pacer of `rate` bytes per second (0 counts as 1).
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            paid_until: None,
        }
    }

    /// The rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// How many bytes to ask for in one page: about a second's worth, at most `largest`.
    pub fn page_bytes(&self, largest: u32) -> u32 {
        u32::try_from(self.rate.max(MIN_PAGE_BYTES)).map_or(largest, |rate| rate.min(largest))
    }

    /// `bytes` arrived at `now`: how long to wait before the next request.
    pub fn delay(&mut self, now: Instant, bytes: u64) -> Duration {
        let from = self.paid_until.filter(|paid| *paid > now).unwrap_or(now);
        let cost = Duration::from_nanos(
            u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(self.rate))
                .unwrap_or(u64::MAX),
        );
        let paid = from.checked_add(cost).unwrap_or(from);
        self.paid_until = Some(paid);
        paid.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_in_a_row_wait_for_their_bytes_at_the_rate() {
        let mut pacer = Pacer::new(1000);
        let start = Instant::now();
        assert_eq!(pacer.delay(start, 500), Duration::from_millis(500));
        // The next page arrives 100 ms later: it is paid for after the first one.
        let next = start + Duration::from_millis(100);
        assert_eq!(pacer.delay(next, 1000), Duration::from_millis(1400));
        // Ten seconds of bytes over any run of pages take at least ten seconds in all.
        let mut pacer = Pacer::new(1000);
        let mut now = start;
        for _ in 0..10 {
            now += pacer.delay(now, 1000);
        }
        assert_eq!(now - start, Duration::from_secs(10));
    }

    #[test]
    fn an_idle_pacer_gains_no_credit_and_pages_are_a_second_of_bytes() {
        let mut pacer = Pacer::new(1000);
        let start = Instant::now();
        assert_eq!(pacer.delay(start, 1000), Duration::from_secs(1));
        // An hour of waiting for commits: the next page waits its own second, no less.
        let later = start + Duration::from_secs(3600);
        assert_eq!(pacer.delay(later, 1000), Duration::from_secs(1));
        assert_eq!(pacer.page_bytes(1 << 20), 4096);
        assert_eq!(Pacer::new(300_000).page_bytes(1 << 20), 300_000);
        assert_eq!(Pacer::new(u64::MAX).page_bytes(1 << 20), 1 << 20);
        assert_eq!(Pacer::new(0).delay(start, 1), Duration::from_secs(1));
    }
}
