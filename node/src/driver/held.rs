//! Messages of a peer's channel that wait, in the channel's order: for the role to take
//! stores again, or for the bytes of a store the multicast group carries.
//!
//! Everything a writer says to a storage travels its channel, in order: its stores too.
//! A store by unicast comes whole; a store the group carries comes as its place in the
//! order ([`Message::GroupStore`], with the store's digest), its bytes by the group
//! ([`Held::arrive`]: taken only if they match the digest, since any member of the group
//! could send bytes under the writer's session), or, if the group missed it, as the writer's
//! word on what became of it ([`Message::GroupMissed`]: the bytes, or nothing). The driver
//! holds a peer's first message that cannot go yet, and every message after it:
//! - a store while the role takes none (its disk is behind, [`Role::takes_stores`]);
//! - a group's store until its bytes came or the writer said the group missed them, at
//!   most the driver's group wait ([`Held::expire`]), after which it is dropped like a
//!   missed one (its transaction's vote then finds it missing).
//!
//! So no message of a peer overtakes a store, whichever way the store's bytes travel. What
//! is held keeps its body, which keeps its share of the channel's window at the transport
//! ([`LinkConfig::channel_window`]): once a peer's held messages fill the window the
//! transport reads no more of its channel, and QUIC's flow control slows that writer alone.
//! Other peers' messages, loads and status go on.
//!
//! [`Role::takes_stores`]: super::Role::takes_stores
//! [`LinkConfig::channel_window`]: replicast_transport::quic::LinkConfig::channel_window

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use replicast_transport::fanout::wire::DIGEST_LEN;
use replicast_transport::quic::PeerCertificate;

use super::fanout::{RefusedObject, store_of};
use crate::protocol::Message;

/// At most this many bytes of a writer's group objects wait for their place in its channel:
/// the writer names each store on its channel as it hands it to the group, so more means a
/// writer that sends the group what it never names.
pub(crate) const MAX_UNNAMED_BYTES: usize = 256 << 20;

/// One held message, with the certificate of its channel and the body it came in (kept for
/// the window's sake: a decoded store slices it, other messages would let it go).
pub(crate) struct Waiting {
    pub(crate) certificate: Option<PeerCertificate>,
    entry: Entry,
    /// When it was held: a group's store waits at most the group wait.
    since: Instant,
    _body: Bytes,
}

/// What a held place in a channel holds.
// Most places hold a message (every store the group carries passes here): boxing it would
// cost each an allocation to save the rare others some bytes.
#[allow(clippy::large_enum_variant)]
enum Entry {
    /// A message, a store's bytes included.
    Message(Message),
    /// A store the group carries, whose bytes have not come: fan-out object `object`, whose
    /// encoded store has BLAKE3 digest `digest`.
    Group {
        object: u64,
        digest: [u8; DIGEST_LEN],
    },
    /// A store that will not come: it goes as nothing, in its turn.
    Dropped(Dropped),
}

/// Why a store a channel named does not reach the role.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Dropped {
    /// The writer said the group missed it, and sent no bytes instead.
    #[error("the group missed it and its writer sent it no other way")]
    Missed,
    /// The bytes its writer sent instead are not a store.
    #[error("the bytes sent instead are refused: {0}")]
    Refused(#[from] RefusedObject),
    /// Neither its bytes nor word of them came within the group wait.
    #[error("neither its bytes nor its writer's word came in {0:?}")]
    TimedOut(Duration),
    /// The group brought bytes under its object id that do not match the digest its writer
    /// named (another member of the group sent them).
    #[error("the group's bytes do not match the digest its writer named")]
    Forged,
}

/// What a held place gives when its turn comes.
#[allow(clippy::large_enum_variant)] // As `Entry`: most are messages.
pub(crate) enum Release {
    /// A message for the role, from the peer's channel.
    Message {
        certificate: Option<PeerCertificate>,
        message: Message,
    },
    /// A store that will not come (logged and counted by the driver).
    Dropped(Dropped),
}

/// Why a writer's word on a group's store was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unexpected {
    /// It names no store of the group waiting on its channel.
    #[error("object {0} names no store of the group waiting on the channel")]
    NotWaiting(u64),
    /// Its group objects no store names fill more than [`MAX_UNNAMED_BYTES`].
    #[error("more than {MAX_UNNAMED_BYTES} bytes of group objects no store names")]
    Unnamed,
}

/// A group object that came, decoded: its store, the size and digest of its bytes.
pub(crate) struct Arrival {
    /// The store the bytes decode to.
    pub(crate) store: Message,
    /// The bytes' length (what they count against [`MAX_UNNAMED_BYTES`]).
    pub(crate) size: usize,
    /// BLAKE3 of the bytes, for the digest their place names.
    pub(crate) digest: [u8; DIGEST_LEN],
}

/// The stores of one writer's group objects that came before their place in its channel, by
/// object id, with when they came.
#[derive(Default)]
struct Arrived {
    objects: BTreeMap<u64, (Arrival, Instant)>,
    bytes: usize,
}

impl Arrived {
    /// Takes `object`, the first place of its writer's channel that waits for the group,
    /// and lets go of the objects below it.
    fn take(&mut self, object: u64) -> Option<Arrival> {
        let (arrival, _) = self.objects.remove(&object)?;
        self.bytes -= arrival.size;
        // Ids rise in a writer's channel order, and no place before this one waits: an
        // object below it was named, and taken or given up, before. It is a late copy.
        let later = self.objects.split_off(&object);
        let stale = std::mem::replace(&mut self.objects, later);
        self.bytes -= stale
            .values()
            .map(|(arrival, _)| arrival.size)
            .sum::<usize>();
        Some(arrival)
    }
}

/// What a group's place holds once its bytes came: the store if they match the digest the
/// writer named, else nothing.
fn filled(arrival: Arrival, digest: &[u8; DIGEST_LEN]) -> Entry {
    if arrival.digest == *digest {
        Entry::Message(arrival.store)
    } else {
        Entry::Dropped(Dropped::Forged)
    }
}

/// Every peer's held messages, each peer's in its channel's order, and the group objects
/// that came before their place.
#[derive(Default)]
pub(crate) struct Held {
    queues: HashMap<String, VecDeque<Waiting>>,
    arrived: HashMap<String, Arrived>,
    /// Peers whose first held place may go now: it is new, its bytes or its writer's word
    /// came, or the role started taking stores again. Only these are looked at
    /// ([`next_ready`](Self::next_ready)), so a turn of the driver in which nothing changed
    /// costs nothing however many peers wait.
    changed: HashSet<String>,
    /// Whether the role took stores at the last look.
    took_stores: bool,
}

impl Held {
    /// Whether `message`, from `peer`, must wait: a store the group carries, a store while
    /// the role takes none, or any message behind one of the same peer.
    pub(crate) fn must_wait(&self, peer: &str, message: &Message, takes_stores: bool) -> bool {
        self.queues.contains_key(peer)
            || matches!(message, Message::GroupStore { .. })
            || (!takes_stores && is_store(message))
    }

    /// Holds `message` from `peer` behind the others it holds.
    pub(crate) fn hold(
        &mut self,
        peer: &str,
        certificate: Option<PeerCertificate>,
        message: Message,
        body: Bytes,
    ) {
        let entry = match message {
            Message::GroupStore { object, digest } => Entry::Group { object, digest },
            message => Entry::Message(message),
        };
        let queue = match self.queues.get_mut(peer) {
            Some(queue) => queue,
            // A new first place: the only case in which the peer's name is copied.
            None => {
                self.changed.insert(peer.to_owned());
                self.queues.entry(peer.to_owned()).or_default()
            }
        };
        queue.push_back(Waiting {
            certificate,
            entry,
            since: Instant::now(),
            _body: body,
        });
    }

    /// `peer`'s group object `object` came, as `arrival`.
    pub(crate) fn arrive(
        &mut self,
        peer: &str,
        object: u64,
        arrival: Arrival,
    ) -> Result<(), Unexpected> {
        let arrived = match self.arrived.get_mut(peer) {
            Some(arrived) => arrived,
            None => self.arrived.entry(peer.to_owned()).or_default(),
        };
        arrived.bytes += arrival.size;
        if let Some((old, _)) = arrived.objects.insert(object, (arrival, Instant::now())) {
            arrived.bytes -= old.size;
        }
        if arrived.bytes > MAX_UNNAMED_BYTES {
            self.arrived.remove(peer);
            return Err(Unexpected::Unnamed);
        }
        if self.queues.contains_key(peer) && !self.changed.contains(peer) {
            self.changed.insert(peer.to_owned());
        }
        Ok(())
    }

    /// `peer` says the group missed its object `object`: `store` is the encoded store sent
    /// instead, or empty.
    pub(crate) fn missed(
        &mut self,
        peer: &str,
        object: u64,
        store: Bytes,
    ) -> Result<(), Unexpected> {
        let place = self
            .queues
            .get_mut(peer)
            .and_then(|queue| {
                queue.iter_mut().find(
                    |waiting| matches!(waiting.entry, Entry::Group { object: o, .. } if o == object),
                )
            })
            .ok_or(Unexpected::NotWaiting(object))?;
        place.entry = if store.is_empty() {
            Entry::Dropped(Dropped::Missed)
        } else {
            resolved(&store)
        };
        self.changed.insert(peer.to_owned());
        // A copy that came anyway is not needed (the ones below it may be: their places
        // wait ahead of this one).
        if let Some(arrived) = self.arrived.get_mut(peer)
            && let Some((arrival, _)) = arrived.objects.remove(&object)
        {
            arrived.bytes -= arrival.size;
        }
        Ok(())
    }

    /// Whether nothing is held and no group object waits for its place.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.arrived.is_empty()
    }

    /// The first held place of some peer that may go now, with the peer (see
    /// [`next`](Self::next)); `takes_stores` is whether the role takes stores now.
    pub(crate) fn next_ready(&mut self, takes_stores: bool) -> Option<(String, Release)> {
        if takes_stores && !self.took_stores {
            self.changed.extend(self.queues.keys().cloned());
        }
        self.took_stores = takes_stores;
        while let Some(peer) = self.changed.iter().next().cloned() {
            match self.next(&peer, takes_stores) {
                // The peer stays: its next place may go too.
                Some(release) => return Some((peer, release)),
                None => {
                    self.changed.remove(&peer);
                }
            }
        }
        None
    }

    /// `peer`'s first held place, if it may go now: a message but a store, a store while the
    /// role takes stores (a group's one once its bytes came), or a store that will not come.
    fn next(&mut self, peer: &str, takes_stores: bool) -> Option<Release> {
        let queue = self.queues.get_mut(peer)?;
        let first = queue.front_mut()?;
        if let Entry::Group { object, digest } = first.entry
            && let Some(arrival) = self.arrived.get_mut(peer).and_then(|a| a.take(object))
        {
            first.entry = filled(arrival, &digest);
        }
        let goes = match &first.entry {
            Entry::Message(message) => takes_stores || !is_store(message),
            Entry::Group { .. } => false,
            Entry::Dropped(_) => true,
        };
        let release = if goes {
            queue.pop_front().map(release_of)
        } else {
            None
        };
        if queue.is_empty() {
            self.queues.remove(peer);
        }
        if self.arrived.get(peer).is_some_and(|a| a.objects.is_empty()) {
            self.arrived.remove(peer);
        }
        release
    }

    /// Gives up, after `wait`, the group's stores whose bytes and word have not come (each
    /// then goes as dropped, in its turn) and the group objects no store named.
    pub(crate) fn expire(&mut self, now: Instant, wait: Duration) {
        for (peer, queue) in &mut self.queues {
            for waiting in queue.iter_mut() {
                if matches!(waiting.entry, Entry::Group { .. })
                    && now.saturating_duration_since(waiting.since) >= wait
                {
                    waiting.entry = Entry::Dropped(Dropped::TimedOut(wait));
                    self.changed.insert(peer.clone());
                }
            }
        }
        self.arrived.retain(|_, arrived| {
            arrived.objects.retain(|_, (arrival, since)| {
                let keep = now.saturating_duration_since(*since) < wait;
                if !keep {
                    arrived.bytes -= arrival.size;
                }
                keep
            });
            !arrived.objects.is_empty()
        });
    }

    /// Every place held of `peer`, in order: a group's store whose bytes came as the store,
    /// one whose bytes did not as dropped.
    pub(crate) fn take_all(&mut self, peer: &str) -> Vec<Release> {
        let queue = self.queues.remove(peer).unwrap_or_default();
        let mut arrived = self.arrived.remove(peer).unwrap_or_default();
        self.changed.remove(peer);
        queue
            .into_iter()
            .map(|mut waiting| {
                if let Entry::Group { object, digest } = waiting.entry {
                    waiting.entry = match arrived.take(object) {
                        Some(arrival) => filled(arrival, &digest),
                        None => Entry::Dropped(Dropped::Missed),
                    };
                }
                release_of(waiting)
            })
            .collect()
    }
}

/// The entry for a store sent instead of a group's, encoded as `data`.
fn resolved(data: &Bytes) -> Entry {
    match store_of(data) {
        Ok(store) => Entry::Message(store),
        Err(refused) => Entry::Dropped(refused.into()),
    }
}

fn release_of(waiting: Waiting) -> Release {
    match waiting.entry {
        Entry::Message(message) => Release::Message {
            certificate: waiting.certificate,
            message,
        },
        Entry::Dropped(dropped) => Release::Dropped(dropped),
        // Resolved before: a group's store goes only as its store or dropped.
        Entry::Group { .. } => Release::Dropped(Dropped::Missed),
    }
}

fn is_store(message: &Message) -> bool {
    matches!(message, Message::Store { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Oid, Tid};
    use crate::object::ObjectData;
    use crate::protocol::{StoreKind, encode};

    fn store(oid: u64) -> Message {
        Message::Store {
            ttid: Tid(1),
            generation: 0,
            oid: Oid(oid),
            serial: Tid::ZERO,
            data: ObjectData::from(vec![1; 16]),
            kind: StoreKind::default(),
        }
    }

    fn abort() -> Message {
        Message::AbortTransaction { ttid: Tid(1) }
    }

    /// The place of fan-out object `object`, carrying `store(object)`.
    fn group(object: u64) -> Message {
        let digest = replicast_transport::fanout::wire::digest(&encode(&store(object)));
        Message::GroupStore { object, digest }
    }

    /// The group's bytes of `store(oid)`, arrived.
    fn arrival(oid: u64) -> Arrival {
        let bytes = encode(&store(oid));
        Arrival {
            store: store(oid),
            size: bytes.len(),
            digest: replicast_transport::fanout::wire::digest(&bytes),
        }
    }

    /// The kinds of what `peer`'s next releases are, until one is not ready.
    fn drain(held: &mut Held, peer: &str, takes_stores: bool) -> Vec<String> {
        let mut kinds = Vec::new();
        while let Some(release) = held.next(peer, takes_stores) {
            kinds.push(match release {
                Release::Message { message, .. } => match message {
                    Message::Store { oid, .. } => format!("Store {}", oid.0),
                    other => other.kind().to_owned(),
                },
                Release::Dropped(dropped) => format!("dropped: {dropped}"),
            });
        }
        kinds
    }

    #[test]
    fn a_store_waits_while_the_role_takes_none_and_what_follows_waits_behind_it() {
        let mut held = Held::default();
        assert!(!held.must_wait("c", &store(1), true));
        assert!(!held.must_wait("c", &abort(), false), "not a store");
        assert!(held.must_wait("c", &store(1), false));
        held.hold("c", None, store(1), Bytes::new());
        assert!(held.must_wait("c", &abort(), true), "behind the held store");
        assert!(!held.must_wait("d", &abort(), true), "another peer goes on");
        held.hold("c", None, abort(), Bytes::new());

        assert!(
            drain(&mut held, "c", false).is_empty(),
            "the store still waits"
        );
        assert_eq!(drain(&mut held, "c", true), ["Store 1", "AbortTransaction"]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_groups_store_goes_in_its_place_once_its_bytes_came() {
        let mut held = Held::default();
        assert!(
            held.must_wait("c", &group(7), true),
            "its bytes may not be here"
        );
        held.hold("c", None, group(7), Bytes::new());
        held.hold("c", None, abort(), Bytes::new());
        assert!(drain(&mut held, "c", true).is_empty(), "no bytes yet");
        // Another writer's object of the same id is not this one.
        held.arrive("d", 7, arrival(9)).unwrap();
        assert!(drain(&mut held, "c", true).is_empty());
        held.arrive("c", 7, arrival(7)).unwrap();
        assert!(
            drain(&mut held, "c", false).is_empty(),
            "a store, while the role takes none"
        );
        assert_eq!(drain(&mut held, "c", true), ["Store 7", "AbortTransaction"]);
        assert!(!held.is_empty(), "d's object waits for its place");
    }

    #[test]
    fn bytes_that_came_first_wait_for_their_place_and_late_copies_go() {
        let mut held = Held::default();
        held.arrive("c", 3, arrival(3)).unwrap();
        held.arrive("c", 4, arrival(4)).unwrap();
        held.arrive("c", 5, arrival(5)).unwrap();
        held.hold("c", None, group(4), Bytes::new());
        assert_eq!(drain(&mut held, "c", true), ["Store 4"]);
        // 3 was named before 4 and is a late copy; 5 waits for its place.
        held.hold("c", None, group(3), Bytes::new());
        assert!(drain(&mut held, "c", true).is_empty());
        held.expire(
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(30),
        );
        assert_eq!(
            drain(&mut held, "c", true),
            ["dropped: neither its bytes nor its writer's word came in 30s"]
        );
        assert!(held.is_empty(), "the unnamed object expired too");
    }

    #[test]
    fn bytes_that_do_not_match_their_places_digest_are_not_taken() {
        let mut held = Held::default();
        // Another member of the group sent bytes under c's object 5: a store, not c's.
        held.arrive("c", 5, arrival(6)).unwrap();
        held.hold("c", None, group(5), Bytes::new());
        held.hold("c", None, abort(), Bytes::new());
        assert_eq!(
            drain(&mut held, "c", true),
            [
                "dropped: the group's bytes do not match the digest its writer named",
                "AbortTransaction"
            ]
        );
        // Likewise when the place was there first, and when the peer is given up.
        held.hold("c", None, group(8), Bytes::new());
        held.arrive("c", 8, arrival(9)).unwrap();
        assert_eq!(
            drain(&mut held, "c", true),
            ["dropped: the group's bytes do not match the digest its writer named"]
        );
        held.hold("c", None, group(10), Bytes::new());
        held.arrive("c", 10, arrival(11)).unwrap();
        let all = held.take_all("c");
        assert!(matches!(all[..], [Release::Dropped(Dropped::Forged)]));
        assert!(held.is_empty());
    }

    #[test]
    fn the_writers_word_resolves_a_groups_store_out_of_turn() {
        let mut held = Held::default();
        held.hold("c", None, group(1), Bytes::new());
        held.hold("c", None, group(2), Bytes::new());
        held.hold("c", None, abort(), Bytes::new());
        assert!(matches!(
            held.missed("c", 9, Bytes::new()),
            Err(Unexpected::NotWaiting(9))
        ));
        held.missed("c", 2, Bytes::new()).unwrap();
        assert!(drain(&mut held, "c", true).is_empty(), "1 still waits");
        held.missed("c", 1, Bytes::from(encode(&store(1)))).unwrap();
        assert_eq!(
            drain(&mut held, "c", true),
            [
                "Store 1",
                "dropped: the group missed it and its writer sent it no other way",
                "AbortTransaction"
            ]
        );
        // Bytes sent instead that are not a store are refused, in their turn.
        held.hold("c", None, group(3), Bytes::new());
        held.missed("c", 3, Bytes::from(encode(&abort()))).unwrap();
        let kinds = drain(&mut held, "c", true);
        assert_eq!(kinds.len(), 1);
        assert!(
            kinds[0].starts_with("dropped: the bytes sent instead are refused"),
            "{kinds:?}"
        );
    }

    #[test]
    fn only_the_peers_whose_first_place_changed_are_looked_at() {
        let mut held = Held::default();
        held.hold("c", None, group(1), Bytes::new());
        held.hold("d", None, store(2), Bytes::new());
        held.hold("d", None, abort(), Bytes::new());
        assert!(held.next_ready(false).is_none(), "a place and a store wait");
        assert!(
            held.changed.is_empty(),
            "nothing to look at until something changes"
        );
        held.arrive("c", 1, arrival(1)).unwrap();
        assert!(held.changed.contains("c") && !held.changed.contains("d"));
        assert!(
            held.next_ready(false).is_none(),
            "c's store waits for the role too"
        );
        let mut ready: Vec<String> = std::iter::from_fn(|| held.next_ready(true))
            .map(|(peer, _)| peer)
            .collect();
        ready.sort();
        assert_eq!(
            ready,
            ["c", "d", "d"],
            "the role takes stores again: all go"
        );
        assert!(held.is_empty());
    }

    #[test]
    fn take_all_gives_a_peers_places_in_order() {
        let mut held = Held::default();
        held.hold("c", None, store(1), Bytes::new());
        held.hold("c", None, group(2), Bytes::new());
        held.hold("c", None, group(3), Bytes::new());
        held.hold("c", None, abort(), Bytes::new());
        held.arrive("c", 2, arrival(2)).unwrap();
        let all: Vec<String> = held
            .take_all("c")
            .into_iter()
            .map(|release| match release {
                Release::Message { message, .. } => message.kind().to_owned(),
                Release::Dropped(_) => "dropped".to_owned(),
            })
            .collect();
        assert_eq!(all, ["Store", "Store", "dropped", "AbortTransaction"]);
        assert!(held.is_empty());
    }

    #[test]
    fn a_writer_cannot_fill_the_storage_with_objects_it_never_names() {
        let mut held = Held::default();
        let big = MAX_UNNAMED_BYTES / 4 + 1;
        let sized = |oid| Arrival {
            size: big,
            ..arrival(oid)
        };
        for object in 0..3 {
            held.arrive("c", object, sized(object)).unwrap();
        }
        assert!(matches!(
            held.arrive("c", 3, sized(3)),
            Err(Unexpected::Unnamed)
        ));
        assert!(held.is_empty(), "what it sent is let go");
    }
}
