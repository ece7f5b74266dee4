//! A fixed-size histogram of delays (a receiver's repair delays): where a sum gives only the
//! mean, this gives the tail (p99, max) that a loss costs, with no allocation, so that it can
//! sit in the `Copy` stats of a [`Receiver`](super::Receiver) and be summed over receivers.

use std::fmt;
use std::time::Duration;

/// Sub-buckets per power of two (`1 << SUB_BITS`): a bucket's upper bound is at most 25%
/// above any delay in it, fine enough to tell one round trip from two.
const SUB_BITS: u32 = 2;
const SUB: usize = 1 << SUB_BITS;
/// Buckets 0 .. SUB hold 0 .. SUB-1 us exactly; each power of two from `SUB` up to
/// `2^MAX_EXPONENT` us has `SUB` buckets, and the last of them holds every longer delay too
/// (from 7 x 2^23 us, 58.7 s: beyond any repair deadline), its bound the largest delay
/// recorded.
const MAX_EXPONENT: u32 = 26;
const BUCKETS: usize = SUB + (MAX_EXPONENT - SUB_BITS) as usize * SUB;

/// Counts of delays in buckets of a quarter of a power of two of microseconds (0-3 us exactly,
/// then 4, 5, 6, 7, 8-9, 10-11, 12-13, 14-15, 16-19 us and so on; the last bucket holds every
/// delay from 58.7 s on), and the largest delay exactly.
///
/// [`quantile`](Self::quantile) answers with the upper bound of the bucket holding the
/// quantile (never more than the largest delay recorded), so it overstates a delay by at most
/// a quarter. [`merge`](Self::merge) adds another histogram's counts, to sum receivers.
/// Recording is an index computation and an increment: no allocation.
///
/// ```
/// use std::time::Duration;
/// use replicast_transport::multicast::proto::DelayHistogram;
///
/// let mut first = DelayHistogram::default();
/// for _ in 0..99 {
///     first.record(Duration::from_micros(1000));
/// }
/// let mut second = DelayHistogram::default();
/// second.record(Duration::from_millis(30));
/// first.merge(&second);
///
/// assert_eq!(first.count(), 100);
/// // 1000 us lies in the bucket 896-1023 us.
/// assert_eq!(first.quantile(0.5), Some(Duration::from_micros(1023)));
/// assert_eq!(first.quantile(0.99), Some(Duration::from_micros(1023)));
/// assert_eq!(first.quantile(1.0), Some(Duration::from_millis(30)));
/// assert_eq!(DelayHistogram::default().quantile(0.5), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DelayHistogram {
    counts: [u64; BUCKETS],
    /// The largest delay recorded, in microseconds.
    max_us: u64,
}

impl Default for DelayHistogram {
    /// No delays.
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            max_us: 0,
        }
    }
}

impl DelayHistogram {
    /// Counts `delay` (in whole microseconds; delays of 58.7 s or more go in the last bucket).
    pub fn record(&mut self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(bucket_of(us)) {
            *count = count.saturating_add(1);
        }
        self.max_us = self.max_us.max(us);
    }

    /// Adds `other`'s delays to these (the histogram of both sets of delays).
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count = count.saturating_add(*more);
        }
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many delays were recorded.
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0, |sum, count| sum.saturating_add(*count))
    }

    /// The largest delay recorded (`None` if none was).
    pub fn max(&self) -> Option<Duration> {
        (self.count() > 0).then(|| Duration::from_micros(self.max_us))
    }

    /// An upper bound of the `q` quantile (`q` in 0..=1, clamped): the upper bound of the
    /// bucket that holds the delay of rank `ceil(q x count)`, or the largest delay if that is
    /// smaller. `None` if no delay was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // A NaN `q` casts to 0 and asks for the smallest delay.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        let bucket = self
            .counts
            .iter()
            .position(|count| {
                seen = seen.saturating_add(*count);
                seen >= rank
            })
            .unwrap_or(BUCKETS - 1);
        Some(Duration::from_micros(upper_bound(bucket).min(self.max_us)))
    }

    /// The non-empty buckets in increasing order: each bucket's upper bound (as
    /// [`quantile`](Self::quantile) gives it: never above the largest delay) and how many
    /// delays it holds. Summing the counts in order gives the cumulative distribution.
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, count)| **count > 0)
            .map(|(bucket, count)| {
                let bound = upper_bound(bucket).min(self.max_us);
                (Duration::from_micros(bound), *count)
            })
    }
}

impl fmt::Debug for DelayHistogram {
    /// The count, p50, p99 and max, then the non-empty buckets as upper bound (us) and count
    /// (the hundred counts themselves would bury the receiver's other stats).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayHistogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .field(
                "buckets_us",
                &self
                    .buckets()
                    .map(|(bound, count)| (bound.as_micros(), count))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The bucket of a delay of `us` microseconds.
fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let exponent = us.ilog2();
    if exponent >= MAX_EXPONENT {
        return BUCKETS - 1;
    }
    let shift = exponent - SUB_BITS;
    let sub = ((us >> shift) as usize) & (SUB - 1);
    SUB + (shift as usize) * SUB + sub
}

/// The largest delay in microseconds that falls in `bucket` (the last bucket has none).
fn upper_bound(bucket: usize) -> u64 {
    if bucket < SUB {
        return bucket as u64;
    }
    if bucket >= BUCKETS - 1 {
        return u64::MAX;
    }
    let shift = ((bucket - SUB) / SUB) as u32;
    let sub = ((bucket - SUB) % SUB) as u64;
    ((SUB as u64 + sub + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(value: u64) -> Duration {
        Duration::from_micros(value)
    }

    #[test]
    fn buckets_tile_the_delays_in_quarter_powers_of_two() {
        let mut previous_bound = None;
        for bucket in 0..BUCKETS - 1 {
            let bound = upper_bound(bucket);
            let lowest = previous_bound.map_or(0, |bound: u64| bound + 1);
            assert_eq!(bucket_of(lowest), bucket, "{lowest} us");
            assert_eq!(bucket_of(bound), bucket, "{bound} us");
            // A bound overstates the bucket's smallest delay by at most a quarter.
            assert!(bound as f64 <= lowest as f64 * 1.25, "{bucket}");
            previous_bound = Some(bound);
        }
        // The last bucket: 7 x 2^23 .. 2^26 - 1 us, and everything longer.
        assert_eq!(previous_bound.map(|bound| bound + 1), Some(7 << 23));
        assert_eq!(bucket_of(7 << 23), BUCKETS - 1);
        assert_eq!(bucket_of((1 << MAX_EXPONENT) - 1), BUCKETS - 1);
        assert_eq!(bucket_of(1 << MAX_EXPONENT), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_known_delays() {
        let mut histogram = DelayHistogram::default();
        // 1 .. 100 ms in 1 ms steps.
        for ms in 1..=100 {
            histogram.record(Duration::from_millis(ms));
        }
        assert_eq!(histogram.count(), 100);
        // Rank 50 is 50 ms = 50,000 us, in the bucket 49,152-57,343 us.
        assert_eq!(histogram.quantile(0.5), Some(us(57_343)));
        // Rank 90 is 90 ms, in 81,920-98,303 us.
        assert_eq!(histogram.quantile(0.9), Some(us(98_303)));
        // Rank 99 is 99 ms, in 98,304-114,687 us: a bound above the largest delay, 100 ms.
        assert_eq!(histogram.quantile(0.99), Some(us(100_000)));
        assert_eq!(histogram.quantile(1.0), Some(us(100_000)));
        assert_eq!(histogram.max(), Some(us(100_000)));
        // Rank 1 is 1 ms, in 896-1023 us; q below 0 (or NaN) is the smallest delay.
        assert_eq!(histogram.quantile(0.0), Some(us(1023)));
        assert_eq!(histogram.quantile(-1.0), Some(us(1023)));
        assert_eq!(histogram.quantile(f64::NAN), Some(us(1023)));
        assert_eq!(histogram.quantile(2.0), Some(us(100_000)));
    }

    #[test]
    fn small_delays_are_exact_and_huge_ones_keep_their_maximum() {
        let mut histogram = DelayHistogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        assert_eq!(histogram.max(), None);
        histogram.record(us(0));
        histogram.record(us(3));
        histogram.record(Duration::from_secs(100_000));
        histogram.record(Duration::MAX);
        assert_eq!(histogram.quantile(0.25), Some(us(0)));
        assert_eq!(histogram.quantile(0.5), Some(us(3)));
        assert_eq!(histogram.quantile(0.75), Some(us(u64::MAX)));
        assert_eq!(histogram.max(), Some(us(u64::MAX)));
    }

    #[test]
    fn merge_sums_counts_and_keeps_the_larger_maximum() {
        let (mut fast, mut slow) = (DelayHistogram::default(), DelayHistogram::default());
        for _ in 0..90 {
            fast.record(us(500));
        }
        for _ in 0..10 {
            slow.record(us(20_000));
        }
        let mut both = fast;
        both.merge(&slow);
        assert_eq!(both.count(), 100);
        // 500 us is in 448-511 us, 20 ms in 16,384-20,479 us (above the max: 20,000).
        assert_eq!(both.quantile(0.9), Some(us(511)));
        assert_eq!(both.quantile(0.91), Some(us(20_000)));
        assert_eq!(both.max(), Some(us(20_000)));
        assert_eq!(
            both.buckets().collect::<Vec<_>>(),
            vec![(us(511), 90), (us(20_000), 10)]
        );
        // Merging is order-free, and merging nothing changes nothing.
        let mut other_way = slow;
        other_way.merge(&fast);
        assert_eq!(other_way, both);
        both.merge(&DelayHistogram::default());
        assert_eq!(other_way, both);
    }
}
