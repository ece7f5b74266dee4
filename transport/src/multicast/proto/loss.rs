//! Each receiver's loss rate, from its status reports, and the proactive parity it calls for.
//!
//! A receiver reports `missed` (sequence numbers it found missing so far) beside `read_end`;
//! between two reports, the one grown over the other is its loss in that stretch. The sender
//! keeps decayed sums of both, so the estimate follows a path whose loss changes, and sizes
//! each block's proactive parity so that few receivers still need a repair round for the
//! block: a repair round costs a round trip and more, which on a lossy path is most of what
//! an object's delivery waits for (a 1 MiB object at 1% loss has a loss at some receiver of
//! four almost always, and when the repair itself is lost the receiver waits for a NACK
//! retry).

use super::wire;

/// Sequence numbers after which the sums are halved: the estimate's memory.
const MEMORY: f64 = 8192.0;

/// Until a receiver has reported this many sequence numbers seen, the estimate is over this
/// many, with at least one of them lost (a rate of 0.4%): a loss or two early on does not buy
/// a lot of parity, and a new session on a path nothing is known of yet sends its first
/// objects with the parity one loss in 256 calls for. Without that, the first loss of a
/// session on a lossy path always cost a repair round: in `replicast bench`'s default sweep
/// at 1% loss, the one slow commit of eight to one replica, 1.77x of the bound (a 64 KiB
/// object gets two shards to one receiver at 0.4%). On a clean path it costs those shards on
/// the first 256 datagrams only.
const MIN_SEEN: f64 = 256.0;

/// The largest share of a block sent as proactive parity, whatever the loss: beyond it the
/// path is too bad for parity to pay, and repairs on demand take over.
pub(crate) const MAX_SHARE: f64 = 0.25;

/// One receiver's loss, from its reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossEstimate {
    /// The last report's (read_end, missed), to take differences from.
    last: Option<(u64, u64)>,
    /// Decayed sums of sequence numbers seen (read past) and found missing.
    seen: f64,
    missed: f64,
}

impl LossEstimate {
    /// Takes a report: `read_end` and `missed` as the receiver counts them. A report older
    /// than the last one (reordered) is ignored.
    pub(crate) fn report(&mut self, read_end: u64, missed: u64) {
        if let Some((last_read, last_missed)) = self.last {
            if read_end < last_read || missed < last_missed {
                return;
            }
            let seen = (read_end - last_read) as f64;
            let lost = ((missed - last_missed) as f64).min(seen);
            self.seen += seen;
            self.missed += lost;
            while self.seen > MEMORY {
                self.seen /= 2.0;
                self.missed /= 2.0;
            }
        }
        self.last = Some((read_end, missed));
    }

    /// The estimated probability that a datagram does not reach this receiver (one loss in
    /// [`MIN_SEEN`] at least, until that many were seen).
    pub(crate) fn rate(&self) -> f64 {
        let missed = if self.seen < MIN_SEEN {
            self.missed.max(1.0)
        } else {
            self.missed
        };
        (missed / self.seen.max(MIN_SEEN)).clamp(0.0, 1.0)
    }
}

/// Proactive recovery shards for a block of `len` datagrams sent to `members` receivers that
/// lose at most `loss` each: the fewest that leave at most `target` receivers expected to
/// still miss a datagram of the block (more losses than shards), capped at [`MAX_SHARE`] of
/// the block and at `available`.
pub(crate) fn shards_for(len: u16, members: usize, loss: f64, target: f64, available: u16) -> u16 {
    if loss <= 0.0 || members == 0 || len == 0 {
        return 0;
    }
    let cap = ((f64::from(len) * MAX_SHARE).ceil() as u16).min(available);
    (0..=cap)
        .find(|&shards| members as f64 * more_than(len + shards, shards, loss) <= target)
        .unwrap_or(cap)
}

/// How many blocks of an object of `count` datagrams (cut by [`wire::block_of`] into blocks
/// of at most `max_block`) end after datagram index `from`: with `from` where the object's
/// last group RTT of sending begins, the blocks whose repair round would end after the
/// object's last datagram.
pub(crate) fn blocks_ending_after(from: u32, count: u32, max_block: u16) -> u32 {
    let mut blocks = 0;
    let mut end = count;
    // Each step moves `end` to the start of the block before it, at least one lower.
    while end > from {
        let (start, _) = wire::block_of(end - 1, count, max_block);
        blocks += 1;
        end = start;
    }
    blocks
}

/// The probability of more than `k` losses among `n` datagrams each lost with probability `p`
/// (the binomial tail), summed term by term.
fn more_than(n: u16, k: u16, p: f64) -> f64 {
    if p >= 1.0 {
        return 1.0;
    }
    let odds = p / (1.0 - p);
    let mut term = (1.0 - p).powi(i32::from(n));
    let mut at_most = 0.0;
    for j in 0..=k.min(n) {
        at_most += term;
        term *= f64::from(n - j) / f64::from(j + 1) * odds;
    }
    (1.0 - at_most).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_ending_after_counts_the_object_s_last_blocks() {
        // 130 datagrams: blocks 0..44, 44..87, 87..130.
        assert_eq!(blocks_ending_after(129, 130, 64), 1);
        assert_eq!(blocks_ending_after(87, 130, 64), 1);
        assert_eq!(blocks_ending_after(86, 130, 64), 2);
        assert_eq!(blocks_ending_after(0, 130, 64), 3);
        // Nothing ends after the object's end.
        assert_eq!(blocks_ending_after(130, 130, 64), 0);
        // A small object is one block.
        assert_eq!(blocks_ending_after(0, 46, 64), 1);
    }

    #[test]
    fn the_estimate_follows_the_reports_and_ignores_stale_ones() {
        let mut estimate = LossEstimate::default();
        estimate.report(0, 0);
        estimate.report(1000, 0);
        assert_eq!(estimate.rate(), 0.0, "a clean path, once seen long enough");
        let mut estimate = LossEstimate::default();
        estimate.report(0, 0);
        estimate.report(1000, 10);
        assert!((estimate.rate() - 0.01).abs() < 1e-9);
        // Reordered: older than the last.
        estimate.report(900, 9);
        assert!((estimate.rate() - 0.01).abs() < 1e-9);
        // A clean stretch long enough halves the old loss away.
        estimate.report(20_000, 10);
        assert!(estimate.rate() < 0.002, "{}", estimate.rate());
    }

    #[test]
    fn few_seqs_seen_count_as_one_loss_in_min_seen() {
        // Nothing known yet: one loss in MIN_SEEN is assumed.
        let mut estimate = LossEstimate::default();
        assert!((estimate.rate() - 1.0 / MIN_SEEN).abs() < 1e-9);
        estimate.report(0, 0);
        estimate.report(50, 0);
        assert!((estimate.rate() - 1.0 / MIN_SEEN).abs() < 1e-9);
        // A loss early is not more than that...
        estimate.report(100, 1);
        assert!((estimate.rate() - 1.0 / MIN_SEEN).abs() < 1e-9);
        // ...nor two much more.
        estimate.report(150, 2);
        assert!((estimate.rate() - 2.0 / MIN_SEEN).abs() < 1e-9);
        // Past MIN_SEEN the reports alone count.
        estimate.report(512, 2);
        assert!((estimate.rate() - 2.0 / 512.0).abs() < 1e-9);
    }

    #[test]
    fn a_new_session_sends_its_first_small_objects_with_parity() {
        // A 64 KiB object's block (46 datagrams) to one receiver at the assumed rate, for
        // the tail target: two shards, so that one loss (or two) needs no repair round.
        let rate = LossEstimate::default().rate();
        assert_eq!(shards_for(46, 1, rate, 0.002, 23), 2);
    }

    #[test]
    fn shards_grow_with_loss_and_receivers_within_the_cap() {
        // No loss, no parity.
        assert_eq!(shards_for(64, 4, 0.0, 0.05, 32), 0);
        // 1%: four receivers of a 46-datagram block (64 KiB) need two, a 61-datagram one three.
        assert_eq!(shards_for(46, 4, 0.01, 0.05, 23), 2);
        assert_eq!(shards_for(61, 4, 0.01, 0.05, 31), 3);
        // More receivers, more parity.
        assert!(shards_for(61, 1000, 0.01, 0.05, 31) > shards_for(61, 4, 0.01, 0.05, 31));
        // A terrible path is capped at a quarter of the block.
        assert_eq!(shards_for(64, 4, 0.5, 0.05, 32), 16);
        assert_eq!(shards_for(64, 4, 0.5, 0.05, 5), 5);
    }

    #[test]
    fn the_binomial_tail_is_right() {
        // P(X > 0) = 1 - (1-p)^n.
        assert!((more_than(10, 0, 0.1) - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
        // P(X > n) = 0.
        assert!(more_than(5, 5, 0.3) < 1e-12);
        // P(X > 1) for n = 2, p = 0.5: only both lost, 0.25.
        assert!((more_than(2, 1, 0.5) - 0.25).abs() < 1e-12);
    }
}
