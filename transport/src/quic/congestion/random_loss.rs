//! Telling a random loss from a congestion loss, so that CUBIC shrinks its window only for
//! the second.
//!
//! CUBIC takes every lost packet for congestion and multiplies its window by 0.7. On a path
//! that loses packets at random (a lossy radio hop, an overloaded middlebox, the bench's
//! emulated 1%), the window then stays far below the link: at 1% loss and 20 ms a 1 MiB store
//! to one storage took 10.8x its bound (docs/BENCH.md, "Unicast under random loss").
//!
//! A loss counts as congestion here when any of three signals says so:
//!
//! - **a queue**: the smoothed round trip rose above the path's minimum by more than
//!   [`queue_threshold`] (a quarter of it) at some point in the last two round trips. A
//!   queue that overflows has filled first, and a full queue shows as delay; a loss with no
//!   queue behind it did not come from a full buffer on the path (TCP Veno's reasoning, with
//!   the same effect on CUBIC as Veno's on Reno).
//! - **a burst**: at least [`BURST_BYTES`] (three packets) declared lost at once. A buffer
//!   that overflows drops the packets that arrive while it is full, one after the other; a
//!   random loss of 1% takes two packets of one acknowledgement's range about once in ten
//!   thousand. It also catches a queue that filled faster than the smoothed round trip
//!   follows (eight connections' bursts into one link at once, on the bench).
//! - **a loss rate above [`MAX_RANDOM_PERCENT`]**: a path whose buffers are too shallow to
//!   show a queue still loses more than that when it is congested, so above it every loss
//!   counts again (BBR v2 bounds its flight on the same 2% rule).
//!
//! Otherwise the loss is repaired as any loss (QUIC sends the packet again) but the window
//! stays. Persistent congestion (RFC 9002 7.6) always counts.

use std::time::{Duration, Instant};

use super::round_peak::RoundPeak;

/// Above this rate of lost bytes every loss counts as congestion, whatever the delay says.
pub(super) const MAX_RANDOM_PERCENT: u64 = 2;

/// A loss of this many bytes or more at once is a burst, which random loss hardly makes: three
/// packets of QUIC's smallest size (1,200 bytes).
pub(super) const BURST_BYTES: u64 = 3 * 1_200;

/// Bytes counted as delivered before the first one sent, so that a loss among a
/// connection's first packets does not read as a high rate (a 1 MiB store's first loss at 1%
/// comes after about 100 packets). About 200 full packets.
const PRIOR_BYTES: u64 = 240_000;

/// Once this many bytes were counted, both counts are halved: the rate is that of about the
/// last 2,000 to 4,000 packets, not of the connection's whole life.
const SPAN_BYTES: u64 = 4_800_000;

/// The queueing delay above which a loss is congestion: a quarter of the path's minimum round
/// trip, and at least 2 ms (scheduling noise on a busy host moves a round trip by about 1 ms).
///
/// Below a quarter: CUBIC with a window above the path's bandwidth-delay product keeps a
/// standing queue of a few milliseconds (2.5-2.8 ms, for 1 MiB stores at 20 ms on the bench's
/// emulated link) whose losses are the path's random ones, while a buffer that overflows is
/// full, and a buffer of less than a quarter of the round trip has too little room to show a
/// queue at all: the rate rule below catches congestion there.
pub(super) fn queue_threshold(min_rtt: Duration) -> Duration {
    (min_rtt / 4).max(Duration::from_millis(2))
}

/// What a connection saw of queueing delay and loss, to judge its next loss by.
#[derive(Debug, Clone, Default)]
pub(super) struct RandomLoss {
    /// The peak queueing delay (smoothed round trip over the minimum) of the current and the
    /// last round trip.
    queue: RoundPeak<Duration>,
    /// The path's minimum round trip, as of the last acknowledgement (`None` before the
    /// first: quinn declares no loss before one).
    min_rtt: Option<Duration>,
    /// Bytes sent, and lost without a queue, both halved now and then (see [`SPAN_BYTES`]).
    sent: u64,
    lost: u64,
}

impl RandomLoss {
    /// Counts bytes sent.
    pub(super) fn sent(&mut self, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
        if self.sent > SPAN_BYTES {
            self.sent /= 2;
            self.lost /= 2;
        }
    }

    /// Takes an acknowledgement's round-trip estimate.
    pub(super) fn acknowledged(&mut self, now: Instant, smoothed: Duration, min: Duration) {
        let delay = smoothed.saturating_sub(min);
        self.queue.tick(now, smoothed, delay);
        self.queue.record(delay);
        self.min_rtt = Some(min);
    }

    /// Says whether a loss of `bytes` is random (`true`: keep the window) or congestion.
    ///
    /// Only losses without a queue behind them count toward the rate: a queue explains its
    /// losses already, and a slow start that overflows a buffer (a burst of lost packets)
    /// must not make the random losses after it look like a congested path.
    pub(super) fn lost(&mut self, bytes: u64) -> bool {
        let quiet = self
            .min_rtt
            .is_none_or(|min_rtt| self.queue.get() <= queue_threshold(min_rtt));
        if quiet {
            self.lost = self.lost.saturating_add(bytes);
        }
        let rare = self.lost.saturating_mul(100)
            <= MAX_RANDOM_PERCENT.saturating_mul(self.sent.saturating_add(PRIOR_BYTES));
        let random = quiet && rare && bytes < BURST_BYTES;
        tracing::trace!(
            bytes,
            queue_us = self.queue.get().as_micros() as u64,
            lost = self.lost,
            sent = self.sent,
            random,
            "loss"
        );
        random
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A connection that sent `packets` packets of 1,200 bytes on a 20 ms path without a queue.
    fn quiet_path(packets: u64) -> (RandomLoss, Instant) {
        let mut losses = RandomLoss::default();
        let start = Instant::now();
        for _ in 0..packets {
            losses.sent(1_200);
        }
        losses.acknowledged(start, 20 * MS + MS / 2, 20 * MS);
        (losses, start)
    }

    #[test]
    fn a_loss_without_a_queue_at_a_low_rate_is_random() {
        let (mut losses, _) = quiet_path(1_000);
        for _ in 0..10 {
            assert!(losses.lost(1_200), "1% of 1,000 packets");
        }
    }

    #[test]
    fn a_loss_behind_a_queue_is_congestion() {
        let (mut losses, start) = quiet_path(1_000);
        // The smoothed round trip rose by 10 ms over a 20 ms minimum: a queue.
        losses.acknowledged(start + 5 * MS, 30 * MS, 20 * MS);
        assert!(!losses.lost(1_200));
    }

    #[test]
    fn losses_behind_a_queue_do_not_raise_the_rate() {
        let (mut losses, start) = quiet_path(1_000);
        // A slow start overflows a buffer: 100 packets lost behind a 10 ms queue.
        losses.acknowledged(start + 5 * MS, 30 * MS, 20 * MS);
        assert!(!losses.lost(120_000));
        // The queue drained; the next loss is as random as before the overflow.
        losses.acknowledged(start + 30 * MS, 20 * MS, 20 * MS);
        losses.acknowledged(start + 55 * MS, 20 * MS, 20 * MS);
        assert!(losses.lost(1_200));
    }

    #[test]
    fn a_queue_is_remembered_for_two_round_trips() {
        let (mut losses, start) = quiet_path(1_000);
        losses.acknowledged(start + 5 * MS, 30 * MS, 20 * MS);
        // One round trip later the queue drained, but it is the last round trip's peak.
        losses.acknowledged(start + 26 * MS, 20 * MS, 20 * MS);
        assert!(!losses.lost(1_200));
        // Two round trips later it is forgotten.
        losses.acknowledged(start + 47 * MS, 20 * MS, 20 * MS);
        assert!(losses.lost(1_200));
    }

    #[test]
    fn above_two_percent_every_loss_is_congestion() {
        let (mut losses, _) = quiet_path(1_000);
        let random = (0..40).take_while(|_| losses.lost(1_200)).count();
        // 1,000 packets plus the prior of 200: the 25th lost packet is above 2%.
        assert_eq!(random, 24);
    }

    #[test]
    fn three_packets_lost_at_once_are_congestion_even_without_a_queue() {
        let (mut losses, _) = quiet_path(1_000);
        assert!(losses.lost(2 * 1_452), "two packets: random");
        assert!(!losses.lost(3 * 1_200), "three: a buffer overflowed");
        assert!(losses.lost(1_452), "the next single loss is random again");
    }

    #[test]
    fn the_first_loss_of_a_young_connection_is_not_a_high_rate() {
        let (mut losses, _) = quiet_path(20);
        assert!(losses.lost(1_200), "1 of 220 counted packets");
    }

    #[test]
    fn the_rate_forgets_old_traffic() {
        let (mut losses, _) = quiet_path(1_000);
        for _ in 0..20 {
            assert!(losses.lost(1_200));
        }
        // Another 10,000 clean packets: the 20 old losses weigh a few percent of what they did.
        for _ in 0..10_000 {
            losses.sent(1_200);
        }
        assert!(losses.lost * 100 < losses.sent * MAX_RANDOM_PERCENT / 4);
    }

    #[test]
    fn the_threshold_is_a_quarter_of_the_round_trip_and_at_least_two_ms() {
        assert_eq!(queue_threshold(80 * MS), 20 * MS);
        assert_eq!(queue_threshold(MS / 10), 2 * MS);
    }
}
