//! Object and transaction identifiers.
//!
//! Both are 8-byte integers written big-endian on disk and on the wire, so that byte order and
//! numeric order agree (a B-tree over the raw bytes is sorted by id). A [`Tid`] is a ZODB
//! `TimeStamp`: the upper 32 bits pack the UTC minute it was allocated in
//! (`((((year - 1900) * 12 + month - 1) * 31 + day - 1) * 24 + hour) * 60 + minute`, months of
//! 31 days as ZODB counts them), the lower 32 bits the second within that minute scaled to
//! 2^32 (`second * 2^32 / 60`). `persistent.TimeStamp.TimeStamp(tid.to_bytes())` reads any TID
//! of the cluster, so `DB.open(at=...)`, `pack(t)`, history times and undo logs mean what ZODB
//! users expect.

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
/// TIDs increase monotonically and encode the time they were allocated as a ZODB `TimeStamp`
/// (see the [module documentation](self) and [`TidClock`]). [`Tid::ZERO`] is the serial of an
/// object that has no revision yet (ZODB's `z64`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "[u8; 8]", into = "[u8; 8]")]
pub struct Tid(pub u64);

/// The UTC time a [`Tid`] encodes, field by field as ZODB's `TimeStamp` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeStampParts {
    /// The year (1900 and later).
    pub year: u32,
    /// The month, 1 to 12.
    pub month: u32,
    /// The day of the month, 1 to 31 (ZODB's packing allows 31 days in every month).
    pub day: u32,
    /// The hour, 0 to 23.
    pub hour: u32,
    /// The minute, 0 to 59.
    pub minute: u32,
    /// The second within the minute scaled to 2^32 (`second * 2^32 / 60`).
    pub fraction: u32,
}

/// Nanoseconds in a minute.
const NANOS_PER_MINUTE: u128 = 60_000_000_000;

impl TimeStampParts {
    /// The seconds within the minute, with the precision the TID keeps (about 14 ns).
    pub fn second(&self) -> f64 {
        f64::from(self.fraction) * 60.0 / 4_294_967_296.0
    }

    /// The packed minute: the upper 32 bits of the TID, `None` when it does not fit.
    fn packed_minutes(&self) -> Option<u32> {
        let months = u64::from(self.year.checked_sub(1900)?) * 12 + u64::from(self.month) - 1;
        let days = months * 31 + u64::from(self.day) - 1;
        let minutes = (days * 24 + u64::from(self.hour)) * 60 + u64::from(self.minute);
        u32::try_from(minutes).ok()
    }
}

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

    /// The 8-byte big-endian encoding: ZODB's raw TID.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Decodes the 8-byte big-endian encoding.
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes))
    }

    /// The TID of the time `parts`; [`Tid::MAX`] past the last minute a TID can hold, and
    /// [`Tid::ZERO`] before 1900.
    pub fn from_parts(parts: TimeStampParts) -> Self {
        if parts.year < 1900 {
            return Tid::ZERO;
        }
        match parts.packed_minutes() {
            Some(minutes) => Tid(u64::from(minutes) << 32 | u64::from(parts.fraction)),
            None => Tid::MAX,
        }
    }

    /// The TID of wall-clock time `time` (truncated to the TID's precision, as ZODB's
    /// `TimeStamp` does); [`Tid::ZERO`] before 1900, [`Tid::MAX`] after the last minute a
    /// TID can hold.
    pub fn from_system_time(time: SystemTime) -> Self {
        // Whole minutes since the Unix epoch (negative before it), and the nanoseconds
        // within the minute.
        let (minutes, nanos_in_minute) = match time.duration_since(UNIX_EPOCH) {
            Ok(since) => {
                let nanos = since.as_nanos();
                (
                    i128::try_from(nanos / NANOS_PER_MINUTE).unwrap_or(i128::MAX),
                    nanos % NANOS_PER_MINUTE,
                )
            }
            Err(before) => {
                let nanos = before.duration().as_nanos();
                let whole = i128::try_from(nanos.div_ceil(NANOS_PER_MINUTE)).unwrap_or(i128::MAX);
                (
                    -whole,
                    (NANOS_PER_MINUTE - nanos % NANOS_PER_MINUTE) % NANOS_PER_MINUTE,
                )
            }
        };
        let days = minutes.div_euclid(1440);
        let minute_of_day = minutes.rem_euclid(1440);
        let Ok(days) = i64::try_from(days) else {
            return if minutes < 0 { Tid::ZERO } else { Tid::MAX };
        };
        let (year, month, day) = civil_from_days(days);
        let Ok(year) = u32::try_from(year) else {
            return if year < 0 { Tid::ZERO } else { Tid::MAX };
        };
        // Below 2^32: nanos_in_minute < 60e9.
        let fraction =
            u32::try_from((nanos_in_minute << 32) / NANOS_PER_MINUTE).unwrap_or(u32::MAX);
        Tid::from_parts(TimeStampParts {
            year,
            month,
            day,
            hour: (minute_of_day / 60) as u32,
            minute: (minute_of_day % 60) as u32,
            fraction,
        })
    }

    /// The UTC time this TID encodes, field by field.
    pub const fn parts(self) -> TimeStampParts {
        let minutes = (self.0 >> 32) as u32;
        TimeStampParts {
            year: minutes / (60 * 24 * 31 * 12) + 1900,
            month: minutes / (60 * 24 * 31) % 12 + 1,
            day: minutes / (60 * 24) % 31 + 1,
            hour: minutes / 60 % 24,
            minute: minutes % 60,
            fraction: self.0 as u32,
        }
    }

    /// The wall-clock time this TID encodes: the first nanosecond whose TID it is. A day the
    /// packing allows but the calendar does not (February 30th) counts on into the next month.
    pub fn system_time(self) -> SystemTime {
        let parts = self.parts();
        let days =
            days_from_civil(i64::from(parts.year), parts.month, 1) + i64::from(parts.day) - 1;
        let minutes =
            i128::from(days) * 1440 + i128::from(parts.hour) * 60 + i128::from(parts.minute);
        let nanos = minutes * NANOS_PER_MINUTE as i128
            // Rounded up: the first nanosecond that converts back to this TID.
            + (u128::from(parts.fraction) * NANOS_PER_MINUTE).div_ceil(1 << 32) as i128;
        let magnitude =
            Duration::from_nanos(u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX));
        if nanos >= 0 {
            UNIX_EPOCH + magnitude
        } else {
            UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
        }
    }

    /// The TID right after this one, or `None` at [`Tid::MAX`].
    pub const fn next(self) -> Option<Tid> {
        match self.0.checked_add(1) {
            Some(next) => Some(Tid(next)),
            None => None,
        }
    }

    /// The TID right before this one, or `None` at [`Tid::ZERO`].
    pub const fn previous(self) -> Option<Tid> {
        match self.0.checked_sub(1) {
            Some(previous) => Some(Tid(previous)),
            None => None,
        }
    }

    /// The smallest valid `TimeStamp` after this one (ZODB's `laterThan`): the next value in
    /// the same minute, or the first of the next calendar minute when the minute is full (a
    /// plain `+ 1` could land on a day the calendar does not have). `None` at the end.
    pub fn later(self) -> Option<Tid> {
        if self.0 as u32 != u32::MAX {
            return self.next();
        }
        let minute_start = Tid(self.0 & !u64::from(u32::MAX));
        let next_minute =
            Tid::from_system_time(minute_start.system_time() + Duration::from_secs(60));
        (next_minute > self).then_some(next_minute)
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

/// Shows the TID in hex followed by the UTC time it encodes, to the microsecond, e.g.
/// `tid:0403f552f24cbb52 (2025-10-05T12:34:56.789000Z)` (what ZODB's `TimeStamp` prints as
/// `2025-10-05 12:34:56.789000`).
impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        // Rounded to the nearest microsecond, as `TimeStamp.__str__` prints it (which may show
        // 60.000000 at the very end of a minute).
        let micros = (u64::from(parts.fraction) * 60_000_000 + (1 << 31)) >> 32;
        write!(
            f,
            "tid:{:016x} ({:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z)",
            self.0,
            parts.year,
            parts.month,
            parts.day,
            parts.hour,
            parts.minute,
            micros / 1_000_000,
            micros % 1_000_000,
        )
    }
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`, on signed days (TIDs start in 1900).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
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
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

/// Days since 1970-01-01 of a proleptic Gregorian (year, month, day): Hinnant's
/// `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Allocates strictly increasing TIDs from the wall clock.
///
/// A TID is the current time as a ZODB `TimeStamp`; when the clock has not moved on (or has
/// gone backwards, as NTP may make it) the clock hands out the smallest TID after the previous
/// one instead ([`Tid::later`], ZODB's `laterThan`), so TIDs never repeat nor decrease. The
/// clock is sans-IO: the caller passes the time.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use replicast_node::ids::TidClock;
///
/// let mut clock = TidClock::default();
/// let noon = UNIX_EPOCH + Duration::from_secs(1_700_000_040); // 2023-11-14T22:14:00Z
/// let first = clock.allocate(noon)?;
/// // The wall clock jumps back a minute: the next TID is still greater.
/// let second = clock.allocate(noon - Duration::from_secs(60))?;
/// assert!(second > first);
/// assert_eq!(first.system_time(), noon);
/// assert_eq!(first.to_string(), "tid:03f47f9600000000 (2023-11-14T22:14:00.000000Z)");
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
        let from_clock = Tid::from_system_time(now);
        let after_last = self.last.later().ok_or(TidExhausted { last: self.last })?;
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

    /// Values computed with `persistent.TimeStamp` (persistent 6): `TimeStamp(2025, 10, 5,
    /// 12, 34, 56.789).raw()` and `TimeStamp(2024, 2, 29, 23, 59, 59.999999).raw()`.
    #[test]
    fn tids_are_zodb_timestamps() {
        let parts = TimeStampParts {
            year: 2025,
            month: 10,
            day: 5,
            hour: 12,
            minute: 34,
            fraction: 0xf24c_bb52,
        };
        let tid = Tid::from_parts(parts);
        assert_eq!(tid, Tid(0x0403_f552_f24c_bb52));
        assert_eq!(tid.parts(), parts);
        assert_eq!(
            tid.to_string(),
            "tid:0403f552f24cbb52 (2025-10-05T12:34:56.789000Z)"
        );
        // 1709251199.999999 s after the epoch, as ZODB's newTid computes it.
        let leap = UNIX_EPOCH + Duration::from_micros(1_709_251_199_999_999);
        let tid = Tid::from_system_time(leap);
        assert_eq!(tid, Tid(0x03f6_df7f_ffff_ffb8));
        assert_eq!(
            tid.to_string(),
            "tid:03f6df7fffffffb8 (2024-02-29T23:59:59.999999Z)"
        );
        let back = tid.system_time().duration_since(UNIX_EPOCH).expect("after");
        assert_eq!(
            back.as_micros(),
            1_709_251_199_999_998,
            "truncated, within 14 ns"
        );
        assert_eq!(
            Tid::ZERO.to_string(),
            "tid:0000000000000000 (1900-01-01T00:00:00.000000Z)"
        );
    }

    #[test]
    fn times_before_1970_and_before_1900() {
        let tid = Tid::from_system_time(UNIX_EPOCH - Duration::from_secs(86_400 + 30));
        assert_eq!(
            tid.to_string(),
            format!("tid:{:016x} (1969-12-30T23:59:30.000000Z)", tid.0)
        );
        assert_eq!(
            tid.system_time(),
            UNIX_EPOCH - Duration::from_secs(86_400 + 30)
        );
        let ancient = UNIX_EPOCH - Duration::from_secs(80 * 365 * 86_400);
        assert_eq!(Tid::from_system_time(ancient), Tid::ZERO);
    }

    #[test]
    fn later_carries_a_full_minute_into_the_next_calendar_day() {
        // 2023-04-30T23:59, the last representable instant of its minute: a plain + 1 would
        // make April 31st.
        let april_30 = Tid::from_parts(TimeStampParts {
            year: 2023,
            month: 4,
            day: 30,
            hour: 23,
            minute: 59,
            fraction: u32::MAX,
        });
        let later = april_30.later().expect("not the last");
        let parts = later.parts();
        assert_eq!(
            (
                parts.month,
                parts.day,
                parts.hour,
                parts.minute,
                parts.fraction
            ),
            (5, 1, 0, 0, 0)
        );
        assert_eq!(Tid(7).later(), Some(Tid(8)));
        assert_eq!(Tid::MAX.later(), None);
    }

    #[test]
    fn clock_counts_within_its_resolution() {
        let mut clock = TidClock::default();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
        let first = clock.allocate(now).expect("not exhausted");
        let second = clock.allocate(now).expect("not exhausted");
        assert_eq!(first, Tid::from_system_time(now));
        assert_eq!(second, Tid(first.0 + 1));
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
            start in 0u64..(1 << 42),
            steps in proptest::collection::vec(-100_000i64..100_000, 1..200),
        ) {
            let mut clock = TidClock::default();
            let mut wall = start;
            let mut previous = Tid::ZERO;
            for step in steps {
                wall = wall.saturating_add_signed(step);
                let now = UNIX_EPOCH + Duration::from_millis(wall);
                let tid = clock.allocate(now).expect("not exhausted");
                prop_assert!(tid > previous, "{tid} after {previous}");
                // A TID never lies about the time more than the clock's own jumps explain.
                prop_assert!(tid >= Tid::from_system_time(now));
                previous = tid;
            }
        }

        #[test]
        fn system_time_round_trips_to_the_tid_precision(nanos in 0u64..(1 << 62)) {
            let time = UNIX_EPOCH + Duration::from_nanos(nanos);
            let tid = Tid::from_system_time(time);
            let back = tid.system_time();
            prop_assert!(back <= time);
            prop_assert!(time.duration_since(back).expect("not after") < Duration::from_nanos(15));
            prop_assert_eq!(Tid::from_system_time(back), tid);
            prop_assert_eq!(Tid::from_parts(tid.parts()), tid);
        }

        #[test]
        fn time_order_is_tid_order(a in 0u64..(1 << 62), b in 0u64..(1 << 62)) {
            let ta = Tid::from_system_time(UNIX_EPOCH + Duration::from_nanos(a));
            let tb = Tid::from_system_time(UNIX_EPOCH + Duration::from_nanos(b));
            if a <= b { prop_assert!(ta <= tb) } else { prop_assert!(ta >= tb) }
        }

        #[test]
        fn any_tid_displays_and_converts_without_panicking(raw: u64) {
            let tid = Tid(raw);
            let _ = tid.to_string();
            let _ = tid.system_time();
            let _ = tid.later();
        }

        #[test]
        fn byte_order_matches_numeric_order(a: u64, b: u64) {
            prop_assert_eq!(Tid(a).to_bytes().cmp(&Tid(b).to_bytes()), a.cmp(&b));
            prop_assert_eq!(Oid::from_bytes(Oid(a).to_bytes()), Oid(a));
        }
    }
}
