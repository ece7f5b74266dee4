//! [`CommitGaps`]: how long a workload went without a commit, from the times its commits'
//! TIDs encode (a TID is the time its commit was decided, see
//! [`Tid::system_time`](replicast_node::ids::Tid::system_time)), to the millisecond.
//!
//! Availability after a failure shows here: a client that waits out a timeout on a dead
//! storage leaves a gap as long as the timeout between two of its commits.

use std::time::Duration;

use replicast_node::ids::Tid;

/// The gaps between consecutive commits, sorted, to the millisecond.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use replicast_node::ids::Tid;
/// use replicast_testkit::workload::gaps::CommitGaps;
///
/// let at = |ms: u64| Tid::from_system_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms));
/// let gaps = CommitGaps::of([at(0), at(10), at(20), at(1_520)]);
/// assert_eq!(gaps.longest(), Duration::from_millis(1_500));
/// assert_eq!(gaps.quantile(0.5), Duration::from_millis(10));
/// assert_eq!(gaps.over(Duration::from_secs(1)), 1);
/// assert_eq!(gaps.summary(), "longest gap 1500 ms (p50 10 ms, p99 1500 ms, 1 over 1 s)");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitGaps {
    sorted: Vec<Duration>,
}

impl CommitGaps {
    /// The gaps between the TIDs of `commits`, in any order (they are sorted by TID first).
    pub fn of(commits: impl IntoIterator<Item = Tid>) -> Self {
        let mut tids: Vec<Tid> = commits.into_iter().collect();
        tids.sort_unstable();
        let mut sorted: Vec<Duration> = tids
            .windows(2)
            .map(|pair| {
                let gap = pair[1]
                    .system_time()
                    .duration_since(pair[0].system_time())
                    .unwrap_or(Duration::ZERO);
                // To the nearest millisecond: a TID keeps time to a few nanoseconds.
                let millis = (gap.as_nanos() + 500_000) / 1_000_000;
                Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
            })
            .collect();
        sorted.sort_unstable();
        Self { sorted }
    }

    /// How many gaps there are (one fewer than commits).
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there is no gap (fewer than two commits).
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The longest gap; zero without gaps.
    pub fn longest(&self) -> Duration {
        self.sorted.last().copied().unwrap_or(Duration::ZERO)
    }

    /// The gap below which a fraction `q` (0 to 1) of the gaps lie (nearest rank); zero
    /// without gaps.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (q.clamp(0.0, 1.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }

    /// The gaps, longest first.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use replicast_node::ids::Tid;
    /// # use replicast_testkit::workload::gaps::CommitGaps;
    /// # let at = |ms: u64| Tid::from_system_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + ms));
    /// let gaps = CommitGaps::of([at(0), at(10), at(2_010), at(3_010)]);
    /// let longest: Vec<u128> = gaps.longest_first().take(2).map(|gap| gap.as_millis()).collect();
    /// assert_eq!(longest, [2_000, 1_000]);
    /// ```
    pub fn longest_first(&self) -> impl Iterator<Item = Duration> + '_ {
        self.sorted.iter().rev().copied()
    }

    /// How many gaps are longer than `limit`.
    pub fn over(&self, limit: Duration) -> usize {
        self.sorted.iter().filter(|gap| **gap > limit).count()
    }

    /// One line: the longest gap, the median and the 99th percentile, and the gaps over a
    /// second.
    pub fn summary(&self) -> String {
        format!(
            "longest gap {} ms (p50 {} ms, p99 {} ms, {} over 1 s)",
            self.longest().as_millis(),
            self.quantile(0.5).as_millis(),
            self.quantile(0.99).as_millis(),
            self.over(Duration::from_secs(1))
        )
    }
}
