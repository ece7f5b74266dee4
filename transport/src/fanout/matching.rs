//! The replica's side of digest matching, as a plain state machine: multicast objects and
//! digest announcements arrive in either order and are paired here; delivery to the
//! application happens once per (writer, object) whichever path brought it. A bundle (several
//! objects in one multicast object, [`Bundle`]) is matched as one object and delivered as its
//! parts.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use bytes::Bytes;

use super::wire::{Bundle, DIGEST_LEN, Expectation, UnicastPart, Verdict, digest};

/// A multicast object is known by its session and its id on the group.
pub type MulticastKey = (u64, u64);

/// Bounds of a [`Matcher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatcherLimits {
    /// Bytes of multicast objects kept while no announcement claims them; the oldest go first,
    /// and an announcement that comes for one of them later is answered [`Verdict::Lost`].
    pub buffered_bytes: usize,
    /// Objects remembered as delivered (so a second copy is not delivered again) and
    /// multicast objects remembered as lost.
    pub remembered: usize,
}

impl Default for MatcherLimits {
    fn default() -> Self {
        Self {
            buffered_bytes: 64 << 20,
            remembered: 1 << 16,
        }
    }
}

/// Counters of a [`Matcher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatcherStats {
    /// Multicast objects whose bytes matched their announced digest.
    pub verified: u64,
    /// Multicast objects whose bytes did not match (forged or corrupt), discarded.
    pub mismatched: u64,
    /// Announced objects the multicast receiver gave up on.
    pub lost: u64,
    /// Multicast objects dropped unclaimed to stay within the buffer bound.
    pub evicted: u64,
    /// Copies of objects already delivered (not delivered again).
    pub duplicates: u64,
}

/// A set remembering the last `capacity` values inserted.
#[derive(Debug)]
struct Recent<T> {
    set: HashSet<T>,
    order: VecDeque<T>,
    capacity: usize,
}

impl<T: Hash + Eq + Clone> Recent<T> {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Inserts `value`; false if it was already there.
    fn insert(&mut self, value: T) -> bool {
        if !self.set.insert(value.clone()) {
            return false;
        }
        self.order.push_back(value);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, value: &T) -> bool {
        self.set.contains(value)
    }
}

struct Waiter<T> {
    token: T,
    writer: String,
    expectation: Expectation,
    /// A bundle's objects (`expectation.object_id` is then unused); `None` for one object.
    parts: Option<Vec<UnicastPart>>,
}

/// An object to hand to the application, the first time it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The writer's node name.
    pub writer: String,
    /// The application's id of the object.
    pub object_id: u64,
    /// Its bytes.
    pub data: Bytes,
    /// BLAKE3 of its bytes, where the replica computed it for the application (an object
    /// delivered unannounced, [`DeliveredObject::digest`](super::DeliveredObject::digest)).
    pub digest: Option<[u8; DIGEST_LEN]>,
}

/// What became of an announcement or an arrival: verdicts to answer (by the caller's token)
/// and the objects to deliver (one for an object's first arrival, the parts not delivered yet
/// for a bundle's).
#[derive(Debug)]
pub struct Resolved<T> {
    /// Announcements now settled.
    pub verdicts: Vec<(T, Verdict)>,
    /// Objects to deliver, arriving for the first time.
    pub deliveries: Vec<Delivery>,
}

impl<T> Default for Resolved<T> {
    fn default() -> Self {
        Self {
            verdicts: Vec::new(),
            deliveries: Vec::new(),
        }
    }
}

/// Pairs multicast objects with the digests announced over QUIC, and delivers each object
/// once. `T` is the caller's token for a waiting announcement (for example a request id).
///
/// ```
/// use bytes::Bytes;
/// use replicast_transport::fanout::matching::{Matcher, MatcherLimits};
/// use replicast_transport::fanout::wire::{Expectation, Verdict, digest};
///
/// let mut matcher: Matcher<u32> = Matcher::new(MatcherLimits::default());
/// let bytes = Bytes::from_static(b"object");
/// let expectation = Expectation {
///     session_id: 1, multicast_id: 5, object_id: 77, len: 6, digest: digest(&bytes),
/// };
/// // The announcement comes first and waits ...
/// assert!(matcher.expect(0, "writer", expectation).verdicts.is_empty());
/// // ... until the bytes arrive and match.
/// let resolved = matcher.multicast_arrived((1, 5), bytes);
/// assert_eq!(resolved.verdicts, vec![(0, Verdict::Verified)]);
/// assert_eq!(resolved.deliveries[0].object_id, 77);
/// ```
pub struct Matcher<T> {
    limits: MatcherLimits,
    buffered: HashMap<MulticastKey, Bytes>,
    buffer_order: VecDeque<MulticastKey>,
    buffered_bytes: usize,
    waiting: HashMap<MulticastKey, Vec<Waiter<T>>>,
    lost: Recent<MulticastKey>,
    delivered: Recent<(String, u64)>,
    stats: MatcherStats,
}

impl<T> std::fmt::Debug for Matcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("buffered", &self.buffered.len())
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: PartialEq> Matcher<T> {
    /// An empty matcher.
    pub fn new(limits: MatcherLimits) -> Self {
        Self {
            limits,
            buffered: HashMap::new(),
            buffer_order: VecDeque::new(),
            buffered_bytes: 0,
            waiting: HashMap::new(),
            lost: Recent::new(limits.remembered),
            delivered: Recent::new(limits.remembered),
            stats: MatcherStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> MatcherStats {
        self.stats
    }

    /// Whether the unclaimed objects fill half of [`MatcherLimits::buffered_bytes`] or more:
    /// the multicast receiver then stops reading its group for a while, so that the
    /// announcements on their way claim what came before more comes and the oldest is
    /// dropped (their writers wait meanwhile, held by their flight limit).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use replicast_transport::fanout::matching::{Matcher, MatcherLimits};
    ///
    /// let mut matcher: Matcher<u32> = Matcher::new(MatcherLimits { buffered_bytes: 8, remembered: 16 });
    /// matcher.multicast_arrived((1, 1), Bytes::from_static(b"abc"));
    /// assert!(!matcher.wants_claims());
    /// matcher.multicast_arrived((1, 2), Bytes::from_static(b"d"));
    /// assert!(matcher.wants_claims());
    /// ```
    pub fn wants_claims(&self) -> bool {
        self.buffered_bytes >= self.limits.buffered_bytes.div_ceil(2)
    }

    /// Drops the oldest unclaimed objects until [`wants_claims`](Self::wants_claims) no longer
    /// holds, each remembered as lost: for a receiver that waited for claims in vain (objects
    /// whose writer died before announcing them would otherwise hold half the room for good).
    pub fn shed(&mut self) {
        while self.wants_claims() && self.pop_oldest() {}
    }

    /// Takes the oldest key off the order queue and drops its object, remembered as lost, if
    /// it is still unclaimed (a claimed one left its key behind); false when the queue is empty.
    fn pop_oldest(&mut self) -> bool {
        let Some(oldest) = self.buffer_order.pop_front() else {
            return false;
        };
        if let Some(old) = self.buffered.remove(&oldest) {
            self.buffered_bytes -= old.len();
            self.stats.evicted += 1;
            self.lost.insert(oldest);
        }
        true
    }

    /// An announcement from `writer`: settled at once if the bytes (or their loss) are
    /// known, otherwise it waits under `token` until [`multicast_arrived`](Self::multicast_arrived),
    /// [`multicast_lost`](Self::multicast_lost) or [`cancel`](Self::cancel).
    pub fn expect(&mut self, token: T, writer: &str, expectation: Expectation) -> Resolved<T> {
        self.claim(token, writer, expectation, None)
    }

    /// The announcement of a bundle from `writer`, as [`expect`](Self::expect): once its bytes
    /// arrive and match, each of its parts is delivered (those not delivered already). The
    /// caller checked it ([`Bundle::check`]); parts beyond the bytes are not delivered.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use replicast_transport::fanout::matching::{Matcher, MatcherLimits};
    /// use replicast_transport::fanout::wire::{Bundle, UnicastPart, Verdict, digest};
    ///
    /// let mut matcher: Matcher<u32> = Matcher::new(MatcherLimits::default());
    /// let bytes = Bytes::from_static(b"onetwo");
    /// let parts = vec![UnicastPart { object_id: 1, len: 3 }, UnicastPart { object_id: 2, len: 3 }];
    /// let bundle = Bundle { session_id: 1, multicast_id: 5, len: 6, digest: digest(&bytes), parts };
    /// assert!(matcher.expect_bundle(0, "writer", bundle).verdicts.is_empty());
    /// let resolved = matcher.multicast_arrived((1, 5), bytes);
    /// assert_eq!(resolved.verdicts, vec![(0, Verdict::Verified)]);
    /// let objects: Vec<_> = resolved.deliveries.iter().map(|d| (d.object_id, &d.data[..])).collect();
    /// assert_eq!(objects, [(1, &b"one"[..]), (2, &b"two"[..])]);
    /// ```
    pub fn expect_bundle(&mut self, token: T, writer: &str, bundle: Bundle) -> Resolved<T> {
        let expectation = Expectation {
            session_id: bundle.session_id,
            multicast_id: bundle.multicast_id,
            object_id: 0,
            len: bundle.len,
            digest: bundle.digest,
        };
        self.claim(token, writer, expectation, Some(bundle.parts))
    }

    fn claim(
        &mut self,
        token: T,
        writer: &str,
        expectation: Expectation,
        parts: Option<Vec<UnicastPart>>,
    ) -> Resolved<T> {
        let key = (expectation.session_id, expectation.multicast_id);
        let mut resolved = Resolved::default();
        if let Some(bytes) = self.take_buffered(key) {
            let verdict = self.check(writer, &expectation, parts.as_deref(), bytes, &mut resolved);
            resolved.verdicts.push((token, verdict));
        } else if self.lost.contains(&key) {
            self.stats.lost += 1;
            resolved.verdicts.push((token, Verdict::Lost));
        } else {
            self.waiting.entry(key).or_default().push(Waiter {
                token,
                writer: writer.to_owned(),
                expectation,
                parts,
            });
        }
        resolved
    }

    /// A multicast object arrived whole: settle the announcements waiting for it, or keep it
    /// until one comes.
    pub fn multicast_arrived(&mut self, key: MulticastKey, bytes: Bytes) -> Resolved<T> {
        let mut resolved = Resolved::default();
        match self.waiting.remove(&key) {
            Some(waiters) => {
                for waiter in waiters {
                    let verdict = self.check(
                        &waiter.writer,
                        &waiter.expectation,
                        waiter.parts.as_deref(),
                        bytes.clone(),
                        &mut resolved,
                    );
                    resolved.verdicts.push((waiter.token, verdict));
                }
            }
            None => self.buffer(key, bytes),
        }
        resolved
    }

    /// The multicast receiver gave up on an object.
    pub fn multicast_lost(&mut self, key: MulticastKey) -> Resolved<T> {
        let mut resolved = Resolved::default();
        match self.waiting.remove(&key) {
            Some(waiters) => {
                for waiter in waiters {
                    self.stats.lost += 1;
                    resolved.verdicts.push((waiter.token, Verdict::Lost));
                }
            }
            None => {
                self.lost.insert(key);
            }
        }
        resolved
    }

    /// Withdraws a waiting announcement (its answer timed out); true if it was waiting.
    pub fn cancel(&mut self, key: MulticastKey, token: &T) -> bool {
        let Some(waiters) = self.waiting.get_mut(&key) else {
            return false;
        };
        let before = waiters.len();
        waiters.retain(|waiter| waiter.token != *token);
        let removed = waiters.len() < before;
        if waiters.is_empty() {
            self.waiting.remove(&key);
        }
        removed
    }

    /// An object that arrived by unicast (its integrity checked by the QUIC link): the
    /// delivery, if it is the first copy.
    pub fn unicast_arrived(
        &mut self,
        writer: &str,
        object_id: u64,
        data: Bytes,
    ) -> Option<Delivery> {
        self.deliver(writer, object_id, data)
    }

    fn check(
        &mut self,
        writer: &str,
        expectation: &Expectation,
        parts: Option<&[UnicastPart]>,
        bytes: Bytes,
        resolved: &mut Resolved<T>,
    ) -> Verdict {
        if bytes.len() as u64 != expectation.len || digest(&bytes) != expectation.digest {
            self.stats.mismatched += 1;
            return Verdict::Mismatch;
        }
        self.stats.verified += 1;
        let Some(parts) = parts else {
            resolved
                .deliveries
                .extend(self.deliver(writer, expectation.object_id, bytes));
            return Verdict::Verified;
        };
        // Checked by the caller to add up to the bytes; saturating all the same, so that an
        // unchecked bundle cannot slice beyond them.
        let mut offset = 0usize;
        for part in parts {
            let len = usize::try_from(part.len).unwrap_or(usize::MAX);
            let end = offset.saturating_add(len).min(bytes.len());
            let data = bytes.slice(offset..end);
            offset = end;
            resolved
                .deliveries
                .extend(self.deliver(writer, part.object_id, data));
        }
        Verdict::Verified
    }

    fn deliver(&mut self, writer: &str, object_id: u64, data: Bytes) -> Option<Delivery> {
        if self.delivered.insert((writer.to_owned(), object_id)) {
            Some(Delivery {
                writer: writer.to_owned(),
                object_id,
                data,
                digest: None,
            })
        } else {
            self.stats.duplicates += 1;
            None
        }
    }

    /// Keeps `bytes` until an announcement claims them. What does not fit (the oldest first)
    /// is dropped and remembered as lost: the announcement that comes for it later is answered
    /// [`Verdict::Lost`] at once, and its writer sends the object again or fails the replica,
    /// instead of waiting for bytes that already came.
    fn buffer(&mut self, key: MulticastKey, bytes: Bytes) {
        if bytes.len() > self.limits.buffered_bytes {
            self.stats.evicted += 1;
            self.lost.insert(key);
            return;
        }
        self.buffered_bytes += bytes.len();
        if let Some(old) = self.buffered.insert(key, bytes) {
            // A second copy under the same key replaces the first; only its size counts.
            self.buffered_bytes -= old.len();
        } else {
            self.buffer_order.push_back(key);
        }
        while (self.buffered_bytes > self.limits.buffered_bytes
            || self.buffer_order.len() > self.limits.remembered)
            && self.pop_oldest()
        {}
    }

    fn take_buffered(&mut self, key: MulticastKey) -> Option<Bytes> {
        let bytes = self.buffered.remove(&key)?;
        self.buffered_bytes -= bytes.len();
        // The order queue keeps the key; eviction skips keys no longer buffered.
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectation(multicast_id: u64, object_id: u64, bytes: &[u8]) -> Expectation {
        Expectation {
            session_id: 1,
            multicast_id,
            object_id,
            len: bytes.len() as u64,
            digest: digest(bytes),
        }
    }

    #[test]
    fn bytes_first_then_announcement() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        assert!(
            matcher
                .multicast_arrived((1, 3), Bytes::from_static(b"abc"))
                .verdicts
                .is_empty()
        );
        let resolved = matcher.expect(9, "w", expectation(3, 30, b"abc"));
        assert_eq!(resolved.verdicts, vec![(9, Verdict::Verified)]);
        let data: Vec<Bytes> = resolved.deliveries.into_iter().map(|d| d.data).collect();
        assert_eq!(data, [Bytes::from_static(b"abc")]);
    }

    #[test]
    fn forged_bytes_are_refused_and_not_delivered() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        matcher.multicast_arrived((1, 3), Bytes::from_static(b"evil"));
        let resolved = matcher.expect(1, "w", expectation(3, 30, b"good"));
        assert_eq!(resolved.verdicts, vec![(1, Verdict::Mismatch)]);
        assert!(resolved.deliveries.is_empty());
        assert_eq!(matcher.stats().mismatched, 1);
        // The right bytes by unicast are then delivered.
        assert!(
            matcher
                .unicast_arrived("w", 30, Bytes::from_static(b"good"))
                .is_some()
        );
    }

    #[test]
    fn an_object_is_delivered_once_whichever_path_brings_it() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        assert!(
            matcher
                .unicast_arrived("w", 30, Bytes::from_static(b"x"))
                .is_some()
        );
        matcher.expect(1, "w", expectation(3, 30, b"x"));
        let resolved = matcher.multicast_arrived((1, 3), Bytes::from_static(b"x"));
        assert_eq!(resolved.verdicts, vec![(1, Verdict::Verified)]);
        assert!(resolved.deliveries.is_empty());
        assert!(
            matcher
                .unicast_arrived("w", 30, Bytes::from_static(b"x"))
                .is_none()
        );
        assert_eq!(matcher.stats().duplicates, 2);
        // Another writer's object 30 is another object.
        assert!(
            matcher
                .unicast_arrived("v", 30, Bytes::from_static(b"x"))
                .is_some()
        );
    }

    #[test]
    fn loss_settles_waiting_and_later_announcements() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        matcher.expect(1, "w", expectation(3, 30, b"x"));
        assert_eq!(
            matcher.multicast_lost((1, 3)).verdicts,
            vec![(1, Verdict::Lost)]
        );
        matcher.multicast_lost((1, 4));
        let resolved = matcher.expect(2, "w", expectation(4, 40, b"y"));
        assert_eq!(resolved.verdicts, vec![(2, Verdict::Lost)]);
    }

    #[test]
    fn cancelled_announcements_are_not_answered() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        matcher.expect(1, "w", expectation(3, 30, b"x"));
        assert!(matcher.cancel((1, 3), &1));
        assert!(!matcher.cancel((1, 3), &1));
        let resolved = matcher.multicast_arrived((1, 3), Bytes::from_static(b"x"));
        assert!(resolved.verdicts.is_empty());
    }

    fn bundle(multicast_id: u64, parts: &[(u64, &[u8])]) -> Bundle {
        let bytes: Vec<u8> = parts
            .iter()
            .flat_map(|(_, data)| data.iter().copied())
            .collect();
        Bundle {
            session_id: 1,
            multicast_id,
            len: bytes.len() as u64,
            digest: digest(&bytes),
            parts: parts
                .iter()
                .map(|(object_id, data)| UnicastPart {
                    object_id: *object_id,
                    len: data.len() as u64,
                })
                .collect(),
        }
    }

    #[test]
    fn a_bundle_is_delivered_as_its_parts_once_each() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        // Object 2 came by unicast first (a fallback of an earlier try): not delivered again.
        assert!(
            matcher
                .unicast_arrived("w", 2, Bytes::from_static(b"bb"))
                .is_some()
        );
        let parts: [(u64, &[u8]); 3] = [(1, b"a"), (2, b"bb"), (3, b"")];
        // The bytes first, then the announcement.
        matcher.multicast_arrived((1, 7), Bytes::from_static(b"abb"));
        let resolved = matcher.expect_bundle(4, "w", bundle(7, &parts));
        assert_eq!(resolved.verdicts, vec![(4, Verdict::Verified)]);
        let delivered: Vec<(u64, Bytes)> = resolved
            .deliveries
            .into_iter()
            .map(|d| (d.object_id, d.data))
            .collect();
        assert_eq!(
            delivered,
            [(1, Bytes::from_static(b"a")), (3, Bytes::new())]
        );
        assert_eq!(matcher.stats().duplicates, 1);
        assert_eq!(matcher.stats().verified, 1);
    }

    #[test]
    fn a_forged_bundle_delivers_nothing() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        let parts: [(u64, &[u8]); 2] = [(1, b"one"), (2, b"two")];
        assert!(
            matcher
                .expect_bundle(1, "w", bundle(8, &parts))
                .verdicts
                .is_empty()
        );
        let resolved = matcher.multicast_arrived((1, 8), Bytes::from_static(b"onetwO"));
        assert_eq!(resolved.verdicts, vec![(1, Verdict::Mismatch)]);
        assert!(resolved.deliveries.is_empty());
        // The genuine objects by unicast are then delivered.
        assert!(
            matcher
                .unicast_arrived("w", 1, Bytes::from_static(b"one"))
                .is_some()
        );
        // A lost bundle is lost for every announcement of it.
        matcher.multicast_lost((1, 9));
        let resolved = matcher.expect_bundle(2, "w", bundle(9, &parts));
        assert_eq!(resolved.verdicts, vec![(2, Verdict::Lost)]);
    }

    /// An unchecked bundle whose parts claim more bytes than arrived cannot slice beyond
    /// them: the parts are cut at the end of the bytes.
    #[test]
    fn unchecked_parts_are_cut_at_the_bytes() {
        let mut matcher = Matcher::new(MatcherLimits::default());
        let mut lying = bundle(3, &[(1, b"xy")]);
        lying.parts.push(UnicastPart {
            object_id: 2,
            len: u64::MAX,
        });
        matcher.expect_bundle(1, "w", lying);
        let resolved = matcher.multicast_arrived((1, 3), Bytes::from_static(b"xy"));
        let lens: Vec<(u64, usize)> = resolved
            .deliveries
            .iter()
            .map(|d| (d.object_id, d.data.len()))
            .collect();
        assert_eq!(lens, [(1, 2), (2, 0)]);
    }

    #[test]
    fn unclaimed_bytes_are_bounded() {
        let mut matcher = Matcher::new(MatcherLimits {
            buffered_bytes: 10,
            remembered: 100,
        });
        for id in 0..5 {
            matcher.multicast_arrived((1, id), Bytes::from(vec![0; 4]));
        }
        assert_eq!(matcher.stats().evicted, 3);
        // The oldest are gone, and known to be: announcing one is answered lost at once (it
        // used to wait for bytes that had come and gone, until its timeout, and a writer's
        // session that was still heard on the group kept it waiting for good).
        let resolved = matcher.expect(1, "w", expectation(0, 1, &[0; 4]));
        assert_eq!(resolved.verdicts, vec![(1, Verdict::Lost)]);
        let resolved = matcher.expect(2, "w", expectation(4, 2, &[0; 4]));
        assert_eq!(resolved.verdicts, vec![(2, Verdict::Verified)]);
        // Shedding drops the oldest until under half the room, as lost.
        matcher.multicast_arrived((1, 5), Bytes::from(vec![0; 4]));
        matcher.multicast_arrived((1, 6), Bytes::from(vec![0; 4]));
        assert!(matcher.wants_claims());
        matcher.shed();
        assert!(!matcher.wants_claims());
        let resolved = matcher.expect(4, "w", expectation(5, 5, &[0; 4]));
        assert_eq!(resolved.verdicts, vec![(4, Verdict::Lost)]);
        let resolved = matcher.expect(5, "w", expectation(6, 6, &[0; 4]));
        assert_eq!(resolved.verdicts, vec![(5, Verdict::Verified)]);
        // One too large to keep at all is lost the same way.
        matcher.multicast_arrived((1, 9), Bytes::from(vec![0; 11]));
        let resolved = matcher.expect(3, "w", expectation(9, 3, &[0; 11]));
        assert_eq!(resolved.verdicts, vec![(3, Verdict::Lost)]);
    }
}
