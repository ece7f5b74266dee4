//! Object and transaction identifiers.
//!
//! Both are 8-byte integers written big-endian on disk and on the wire, so that byte order and
//! numeric order agree (a B-tree over the raw bytes is sorted by id). A [`Tid`] also encodes the
//! time it was allocated, in the manner of NEO and ZODB: the upper 48 bits hold milliseconds since
//! the Unix epoch and the lower 16 bits a counter for TIDs allocated within the same millisecond.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Identifies an object: 8 bytes, allocated by the master.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "[u8; 8]", into = "[u8; 8]")]
pub struct Oid(pub u64);

/// Identifies a committed transaction, and with it the revision of every object it wrote.
///
/// TIDs increase monotonically and encode the time they were allocated (see [`TidClock`]).
/// [`Tid::ZERO`] is the serial of an object that has no revision yet.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "[u8; 8]", into = "[u8; 8]")]
pub struct Tid(pub u64);

/// Bits of a [`Tid`] below the millisecond timestamp: a counter within one millisecond.
const COUNTER_BITS: u32 = 16;

impl Oid {
    /// The 8-byte big-endian encoding.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Decodes the 8-byte big-endian encoding.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }
}

impl Tid {
    /// The serial of an object that has never been committed, and the TID before every other.
    pub const ZERO: Tid = Tid(0);

    /// The greatest TID; `load_before(oid, Tid::MAX)` reads the latest revision.
    pub const MAX: Tid = Tid(u64::MAX);

    /// The 8-byte big-endian encoding.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Decodes the 8-byte big-endian encoding.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    /// The smallest TID allocated at `unix_millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(unix_millis: u64) -> Self {
        Self(unix_millis << COUNTER_BITS)
    }

    /// Milliseconds since the Unix epoch at which this TID was allocated.
    pub const fn unix_millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    /// The wall-clock time at which this TID was allocated, to the millisecond.
    pub fn system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.unix_millis())
    }

    /// The TID right after this one, or `None` at [`Tid::MAX`].
    pub const fn next(self) -> Option<Tid> {
        match self.0.checked_add(1) {
            Some(next) => Some(Tid(next)),
            None => None,
        }
    }
}

impl From<[u8; 8]> for Oid {
    fn from(bytes: [u8; 8]) -> Self {
        Self::from_bytes(bytes)
    }
}

impl From<Oid> for [u8; 8] {
    fn from(oid: Oid) -> Self {
        oid.to_bytes()
    }
}

impl From<[u8; 8]> for Tid {
    fn from(bytes: [u8; 8]) -> Self {
        Self::from_bytes(bytes)
    }
}

impl From<Tid> for [u8; 8] {
    fn from(tid: Tid) -> Self {
        tid.to_bytes()
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oid:{:016x}", self.0)
    }
}

/// Shows the TID in hex followed by the UTC time it encodes, e.g.
/// `tid:0199b45e34950001 (2025-10-05T12:34:56.789Z)`.
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.unix_millis();
        let (seconds, millis) = (millis / 1000, millis % 1000);
        let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "tid:{:016x} ({year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z)",
            self.0,
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        )
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, restricted to dates on or after the epoch, which is all a
/// [`Tid`] can encode.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Allocates strictly increasing TIDs from the wall clock.
///
/// A TID is the current millisecond shifted into the upper bits; when the clock has not moved on
/// (or has gone backwards, as NTP may make it) the clock hands out the previous TID plus one
/// instead, so TIDs never repeat nor decrease. The clock is sans-IO: the caller passes the time.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use replicast_node::ids::TidClock;
///
/// let mut clock = TidClock::default();
/// let noon = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let first = clock.allocate(noon)?;
/// // The wall clock jumps back a minute: the next TID is still greater.
/// let second = clock.allocate(noon - Duration::from_secs(60))?;
/// assert!(second > first);
/// assert_eq!(first.system_time(), noon);
/// # Ok::<(), replicast_node::ids::TidExhausted>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct TidClock {
    last: Tid,
}

/// Every TID up to [`Tid::MAX`] has been allocated; no greater one exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TIDs are exhausted: the last one allocated is {last}")]
pub struct TidExhausted {
    /// The last TID allocated.
    pub last: Tid,
}

impl TidClock {
    /// A clock whose TIDs will all be greater than `last` (e.g. the last TID found on disk).
    pub const fn starting_after(last: Tid) -> Self {
        Self { last }
    }

    /// The last TID allocated or observed.
    pub const fn last(&self) -> Tid {
        self.last
    }

    /// Allocates the next TID for a transaction committed at wall-clock time `now`.
    pub fn allocate(&mut self, now: SystemTime) -> Result<Tid, TidExhausted> {
        // A clock before the epoch counts as the epoch: the counter then carries monotonicity.
        let millis = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        let from_clock = Tid::from_unix_millis(millis.min(u64::MAX >> COUNTER_BITS));
        let after_last = self.last.next().ok_or(TidExhausted { last: self.last })?;
        self.last = from_clock.max(after_last);
        Ok(self.last)
    }

    /// Makes every later TID greater than `tid`, e.g. one committed by another master.
    pub fn observe(&mut self, tid: Tid) {
        self.last = self.last.max(tid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_big_endian_on_the_wire() {
        let tid = Tid(0x0102_0304_0506_0708);
        assert_eq!(tid.to_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        let encoded = postcard::to_stdvec(&Oid(0x0102_0304_0506_0708)).expect("encodes");
        assert_eq!(encoded, [1, 2, 3, 4, 5, 6, 7, 8]);
        let decoded: Tid = postcard::from_bytes(&encoded).expect("decodes");
        assert_eq!(decoded, tid);
    }

    #[test]
    fn tid_display_matches_its_documentation() {
        let tid = Tid(Tid::from_unix_millis(1_759_667_696_789).0 | 1);
        assert_eq!(
            tid.to_string(),
            "tid:0199b45e34950001 (2025-10-05T12:34:56.789Z)"
        );
    }

    #[test]
    fn tid_displays_its_utc_time() {
        // 2024-02-29T23:59:59.999Z, a leap day, is 1709251199999 ms after the epoch.
        let tid = Tid(Tid::from_unix_millis(1_709_251_199_999).0 + 5);
        assert_eq!(
            tid.to_string(),
            format!("tid:{:016x} (2024-02-29T23:59:59.999Z)", tid.0)
        );
        assert_eq!(
            Tid::ZERO.to_string(),
            "tid:0000000000000000 (1970-01-01T00:00:00.000Z)"
        );
    }

    #[test]
    fn clock_counts_within_a_millisecond() {
        let mut clock = TidClock::default();
        let now = UNIX_EPOCH + Duration::from_millis(1_000);
        let first = clock.allocate(now).expect("not exhausted");
        let second = clock.allocate(now).expect("not exhausted");
        assert_eq!(first, Tid::from_unix_millis(1_000));
        assert_eq!(second, Tid(first.0 + 1));
        assert_eq!(second.unix_millis(), 1_000);
    }

    #[test]
    fn clock_reports_exhaustion_instead_of_wrapping() {
        let mut clock = TidClock::starting_after(Tid::MAX);
        assert_eq!(
            clock.allocate(SystemTime::now()),
            Err(TidExhausted { last: Tid::MAX })
        );
    }

    proptest! {
        #[test]
        fn clock_is_monotonic_when_the_wall_clock_jumps(
            start in 0u64..(1 << 44),
            steps in proptest::collection::vec(-100_000i64..100_000, 1..200),
        ) {
            let mut clock = TidClock::default();
            let mut wall = start;
            let mut previous = Tid::ZERO;
            for step in steps {
                wall = wall.saturating_add_signed(step);
                let tid = clock.allocate(UNIX_EPOCH + Duration::from_millis(wall)).expect("not exhausted");
                prop_assert!(tid > previous, "{tid} after {previous}");
                // A TID never lies about the time more than the clock's own jumps explain.
                prop_assert!(tid.unix_millis() >= wall);
                previous = tid;
            }
        }

        #[test]
        fn byte_order_matches_numeric_order(a: u64, b: u64) {
            prop_assert_eq!(Tid(a).to_bytes().cmp(&Tid(b).to_bytes()), a.cmp(&b));
            prop_assert_eq!(Oid::from_bytes(Oid(a).to_bytes()), Oid(a));
        }
    }
}
