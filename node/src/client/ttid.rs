//! The temporary TIDs a client makes itself, so that beginning a transaction costs no round
//! trip to the master.
//!
//! A temporary TID (`ttid`) names a transaction until the master gives it its commit TID at
//! finish, and is its age for the storages' wound-wait (an older transaction, a smaller ttid,
//! takes the locks of a younger one). Three properties matter, and each part of the ttid gives
//! one:
//! - *Unique across clients*: the low 16 bits are the client's number, which the primary
//!   hands out to the clients it knows, one each ([`Message::TtidSpace`]); the number
//!   [`MASTER_NUMBER`] is the primary's own (the ttids of restores, which it still makes).
//! - *Unique and increasing within a client*: each ttid is at least one step (`1 << 16`
//!   in TID units, about 0.9 ms) after the previous one.
//! - *An age that compares across clients*: the high bits are the time (a ZODB `TimeStamp`,
//!   as commit TIDs are), read from the client's clock corrected by the difference to the
//!   primary's clock that came with the number. A client whose clock is minutes ahead or
//!   behind makes ttids close to the primary's present all the same (the error is about the
//!   one-way delay of the welcome), so it neither always wins every lock nor always loses
//!   them (starvation). The client also moves past every TID the primary tells it (commits,
//!   the last commit): a client behind stays no older than what it saw commit.
//!
//! The master's own clock never looks at the ttids (a client's clock cannot push commit TIDs
//! into the future); the primary refuses a `Begin` whose number is not the client's, or whose
//! ttid is open or decided already.
//!
//! [`Message::TtidSpace`]: crate::protocol::Message::TtidSpace
//!
//! ```
//! use replicast_node::client::TtidClock;
//! use replicast_node::ids::Tid;
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
//! let mut clock = TtidClock::default();
//! assert!(clock.make(now).is_none(), "no number before the primary's welcome");
//! // The primary's clock is a minute ahead of this client's.
//! clock.set_space(now, 3, Tid::from_system_time(now + Duration::from_secs(60)));
//! let first = clock.make(now).expect("a ttid");
//! let second = clock.make(now).expect("a ttid");
//! assert_eq!(first.0 & 0xffff, 3);
//! assert!(second > first);
//! assert!(first >= Tid::from_system_time(now + Duration::from_secs(60)));
//! ```

use std::time::{Duration, SystemTime};

use crate::ids::Tid;

/// The low bits of a ttid that hold its maker's number.
const NUMBER_BITS: u64 = 0xffff;

/// The number in the low bits of the ttids the primary makes itself (restores, which begin at
/// a chosen commit TID through it); never handed to a client.
pub const MASTER_NUMBER: u16 = u16::MAX;

/// Makes a client's temporary TIDs; see the documentation of `client/ttid.rs`.
#[derive(Clone, Debug, Default)]
pub struct TtidClock {
    /// The number the primary gave, with the offset of its clock from this client's (in
    /// nanoseconds, positive when the primary's is ahead); `None` until a primary's welcome,
    /// and again while a new primary is being announced to.
    space: Option<(u16, i128)>,
    /// The last ttid made or TID seen from the primary: the next ttid comes after it.
    last: Tid,
}

impl TtidClock {
    /// The primary numbered this client `number`, and its clock read `clock` when this
    /// client's read `now`.
    pub fn set_space(&mut self, now: SystemTime, number: u16, clock: Tid) {
        let offset = match clock.system_time().duration_since(now) {
            Ok(ahead) => nanos(ahead),
            Err(behind) => -nanos(behind.duration()),
        };
        self.space = Some((number, offset));
    }

    /// Forgets the number: it was the old primary's to give (a new primary numbers its
    /// clients anew). The ttids made from now on still come after every earlier one.
    pub fn clear_space(&mut self) {
        self.space = None;
    }

    /// The client's number, once a primary gave one.
    pub fn number(&self) -> Option<u16> {
        self.space.map(|(number, _)| number)
    }

    /// The next ttids come after `tid` (a TID the primary told: a commit, the last commit).
    pub fn observe(&mut self, tid: Tid) {
        self.last = self.last.max(tid);
    }

    /// A new ttid at this client's time `now`; `None` without a number yet, or once TIDs are
    /// exhausted.
    pub fn make(&mut self, now: SystemTime) -> Option<Tid> {
        let (number, offset) = self.space?;
        let number = u64::from(number);
        let corrected = shift(now, offset).map_or(Tid::ZERO, Tid::from_system_time);
        let from_clock = Tid((corrected.0 & !NUMBER_BITS) | number);
        // The first TID of the step after the last one's (`later` goes to the next minute
        // when this one is full), with this client's number.
        let after_last = Tid(self.last.0 | NUMBER_BITS)
            .later()
            .map(|next| Tid(next.0 | number))?;
        let ttid = from_clock.max(after_last);
        self.last = ttid;
        Some(ttid)
    }
}

fn nanos(duration: Duration) -> i128 {
    i128::try_from(duration.as_nanos()).unwrap_or(i128::MAX)
}

/// `time` moved by `offset` nanoseconds; `None` out of `SystemTime`'s range.
fn shift(time: SystemTime, offset: i128) -> Option<SystemTime> {
    let magnitude = Duration::from_nanos(u64::try_from(offset.unsigned_abs()).ok()?);
    if offset >= 0 {
        time.checked_add(magnitude)
    } else {
        time.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    fn number_of(ttid: Tid) -> u64 {
        ttid.0 & NUMBER_BITS
    }

    #[test]
    fn ttids_increase_even_when_the_clock_stands_still_or_goes_back() {
        let mut clock = TtidClock::default();
        clock.set_space(at(0), 5, Tid::from_system_time(at(0)));
        let mut previous = Tid::ZERO;
        for now in [at(10), at(10), at(10), at(9), at(0), at(11)] {
            let ttid = clock.make(now).expect("a ttid");
            assert!(ttid > previous, "{ttid} after {previous}");
            assert_eq!(number_of(ttid), 5);
            previous = ttid;
        }
        // Each ttid is a whole step after the one before it.
        let (a, b) = (clock.make(at(0)).expect("a"), clock.make(at(0)).expect("b"));
        assert_eq!(b.0 - a.0, 1 << 16);
    }

    #[test]
    fn two_clients_at_the_same_instant_make_different_ttids() {
        let primary = Tid::from_system_time(at(0));
        let (mut one, mut two) = (TtidClock::default(), TtidClock::default());
        one.set_space(at(0), 1, primary);
        two.set_space(at(0), 2, primary);
        for second in 0..100 {
            let (a, b) = (one.make(at(second)), two.make(at(second)));
            assert_ne!(a, b);
            // The same instant: the same step, only the numbers differ.
            assert_eq!(
                a.map(|tid| tid.0 >> 16),
                b.map(|tid| tid.0 >> 16),
                "same step"
            );
        }
    }

    #[test]
    fn the_offset_to_the_primarys_clock_is_applied() {
        let mut clock = TtidClock::default();
        // The primary reads 30 s more than this client.
        clock.set_space(at(100), 9, Tid::from_system_time(at(130)));
        let ttid = clock.make(at(200)).expect("a ttid");
        let expected = Tid::from_system_time(at(230));
        assert_eq!(ttid.0 >> 16, expected.0 >> 16);
    }

    #[test]
    fn a_clock_minutes_ahead_or_behind_is_corrected() {
        let primary_now = at(600);
        let primary = Tid::from_system_time(primary_now);
        let (mut ahead, mut behind) = (TtidClock::default(), TtidClock::default());
        // Five minutes ahead, five minutes behind, welcomed at the same instant.
        ahead.set_space(at(900), 1, primary);
        behind.set_space(at(300), 2, primary);
        let later = Duration::from_secs(7);
        let (a, b) = (
            ahead.make(at(900) + later).expect("a ttid"),
            behind.make(at(300) + later).expect("a ttid"),
        );
        let expected = Tid::from_system_time(primary_now + later);
        for ttid in [a, b] {
            // Within the step (about 0.9 ms) that the number's bits take from the time.
            let error = match ttid.system_time().duration_since(expected.system_time()) {
                Ok(after) => after,
                Err(before) => before.duration(),
            };
            assert!(error < Duration::from_millis(1), "{ttid} near {expected}");
        }
    }

    #[test]
    fn tids_seen_from_the_primary_move_the_clock_past_them() {
        let mut clock = TtidClock::default();
        clock.set_space(at(0), 4, Tid::from_system_time(at(0)));
        let committed = Tid::from_system_time(at(3600));
        clock.observe(committed);
        let ttid = clock.make(at(1)).expect("a ttid");
        assert!(ttid > committed);
        assert_eq!(number_of(ttid), 4);
    }

    #[test]
    fn no_number_no_ttid_and_a_new_number_keeps_the_order() {
        let mut clock = TtidClock::default();
        assert_eq!(clock.make(at(0)), None);
        clock.set_space(at(0), 7, Tid::from_system_time(at(0)));
        let before = clock.make(at(0)).expect("a ttid");
        clock.clear_space();
        assert_eq!(clock.make(at(0)), None);
        assert_eq!(clock.number(), None);
        // A new primary, whose clock is an hour behind, numbers the client 2.
        clock.set_space(
            at(0),
            2,
            Tid::from_system_time(at(0) - Duration::from_secs(3600)),
        );
        let after = clock.make(at(0)).expect("a ttid");
        assert!(after > before);
        assert_eq!(number_of(after), 2);
    }

    #[test]
    fn a_full_minute_rolls_over_to_the_next_one() {
        let mut clock = TtidClock::default();
        let minute = Tid::from_system_time(at(0)).0 & !u64::from(u32::MAX);
        clock.set_space(at(0), 1, Tid::from_system_time(at(0)));
        clock.observe(Tid(minute | u64::from(u32::MAX)));
        let ttid = clock.make(at(0)).expect("a ttid");
        assert!(ttid.0 > minute | u64::from(u32::MAX));
        assert_eq!(
            ttid.0 & u64::from(u32::MAX),
            1,
            "the next minute's first step"
        );
    }
}
