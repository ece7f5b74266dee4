//! The receiving side: per sender session, gap detection, NACKs, status and reassembly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::buffers::BufferPool;
use super::config::ReceiverConfig;
use super::crypto::PacketKey;
use super::fec::{ParityDecoder, RecoveryBlock};
use super::keys::{GroupKey, ReceiverKey};
use super::nack::{self, Filled, Jitter, NackScheduler};
use super::reassembly::{Fragment, Reassembly, Refused, Stored};
use super::replay::ReplayWindow;
use super::stats::ReceiverStats;
use super::wire::{
    self, Body, DataBody, DecodeError, Header, MAX_STATUS_LOST, PacketType, ParityBody, StatusBody,
    TailBody,
};
use super::{Destination, ReceiverEvent, Transmit};

/// Epoch keys a session keeps at once: the current one and the one draining.
const LIVE_EPOCHS: usize = 2;

struct EpochKey {
    epoch: u32,
    key: PacketKey,
    replay: ReplayWindow,
}

/// An object given up on, reported in status until the sender releases it.
#[derive(Debug, Clone, Copy)]
struct LostObject {
    object_id: u64,
    first_seq: u64,
    end_seq: u64,
}

/// What a receiver knows of one sender session.
struct Session {
    epochs: Vec<EpochKey>,
    /// Epochs below are retired.
    retired_below: u32,
    /// The id this receiver has in the session (its NACKs and reports carry it), and the key
    /// they are sealed with: each sender numbers its members itself.
    receiver_id: u32,
    control_key: PacketKey,
    sender_address: Option<SocketAddr>,
    /// When the sender was last heard from: an object in reassembly whose sender has been
    /// silent for the repair deadline is lost, even if the receiver never learned (from a tail)
    /// that its missing fragments were sent.
    last_heard: Option<Instant>,
    started: bool,
    /// Every seq below is received or given up.
    cumulative: u64,
    /// One past the highest seq known to exist.
    horizon: u64,
    /// Seqs found missing so far (reported in status: the sender sizes proactive parity by
    /// this receiver's loss rate).
    missed: u64,
    /// The sender no longer keeps seqs below.
    window_low: u64,
    reassembly: Reassembly,
    nacks: NackScheduler,
    group_rtt: Duration,
    /// The last tail's timestamp and when it arrived.
    echo: Option<(u64, Instant)>,
    lost: Vec<LostObject>,
    /// Recovery shards of blocks with missing datagrams, by the block's first seq.
    recovery: BTreeMap<u64, RecoveryBlock>,
    status_dirty: bool,
    /// No status report before (`None`: one may go now).
    next_status_at: Option<Instant>,
    nack_due: bool,
}

/// The receiver of one member: a sans-IO state machine for any number of sender sessions.
///
/// Feed it datagrams with [`handle_datagram`](Self::handle_datagram), call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout), send
/// what [`poll_transmit`](Self::poll_transmit) yields (NACKs and status reports, by unicast to
/// the sender), and take whole objects or loss reports from [`poll_event`](Self::poll_event).
pub struct Receiver {
    config: ReceiverConfig,
    key: ReceiverKey,
    sessions: HashMap<u64, Session>,
    next_packet_number: u64,
    /// Bytes held in reassembly (each object's buffer, recovery shards), over all sessions.
    held: usize,
    jitter: Jitter,
    decoder: ParityDecoder,
    /// Buffers of delivered objects that the application dropped, for the next objects.
    buffers: BufferPool,
    /// Where datagrams handed by reference are copied to be opened, kept to spare an
    /// allocation per datagram.
    scratch: Vec<u8>,
    events: VecDeque<ReceiverEvent>,
    stats: ReceiverStats,
}

impl Receiver {
    /// A receiver with no sessions yet.
    pub fn new(config: ReceiverConfig, key: ReceiverKey, now: Instant) -> Receiver {
        let _ = now;
        Receiver {
            jitter: Jitter::new(config.random_seed ^ (u64::from(key.receiver_id) << 32)),
            config,
            key,
            sessions: HashMap::new(),
            next_packet_number: 0,
            held: 0,
            decoder: ParityDecoder::default(),
            buffers: BufferPool::default(),
            scratch: Vec::new(),
            events: VecDeque::new(),
            stats: ReceiverStats::default(),
        }
    }

    /// The receiver's id (the one it was made with, which sessions added by
    /// [`add_session`](Self::add_session) answer as).
    pub fn receiver_id(&self) -> u32 {
        self.key.receiver_id
    }

    /// Accepts datagrams of `session_id` under `key`'s epoch, answering as the receiver this
    /// receiver was made with. For a session already known, a newer epoch becomes current and
    /// the previous one keeps working while it drains; older epochs are retired and their
    /// datagrams dropped.
    pub fn add_session(&mut self, session_id: u64, key: GroupKey) {
        let member = self.key.clone();
        self.add_session_as(session_id, key, &member);
    }

    /// [`add_session`](Self::add_session), answering as the member `member` names in that
    /// session (its NACKs and status reports carry its id and are sealed with its key): one
    /// receiver can serve the sessions of several senders that each number their members
    /// themselves. A session already known keeps the member it was added as, and only takes
    /// the new epoch; [`remove_session`](Self::remove_session) first to answer as another.
    ///
    /// ```
    /// use std::time::Instant;
    /// use bytes::Bytes;
    /// use replicast_transport::multicast::proto::*;
    ///
    /// let now = Instant::now();
    /// // Two senders on one group, each of which knows this member by an id and key of its own.
    /// let mut receiver = Receiver::new(
    ///     ReceiverConfig::default(),
    ///     ReceiverKey { receiver_id: 0, secret: [0; 32] },
    ///     now,
    /// );
    /// let from = "127.0.0.1:5000".parse()?;
    /// for (session_id, receiver_id) in [(41, 3), (42, 7)] {
    ///     let group_key = GroupKey { epoch: 1, secret: [session_id as u8; 32] };
    ///     let member = ReceiverKey { receiver_id, secret: [receiver_id as u8; 32] };
    ///     let mut sender = Sender::new(SenderConfig::default(), session_id, group_key.clone(), now)?;
    ///     sender.add_receiver(member.clone());
    ///     receiver.add_session_as(session_id, group_key, &member);
    ///     sender.send_object(1, Bytes::from_static(b"hello"), now)?;
    ///     while let Some(transmit) = sender.poll_transmit(now) {
    ///         receiver.handle_datagram(now, from, &transmit.payload);
    ///     }
    ///     match receiver.poll_event() {
    ///         Some(ReceiverEvent::Object { session_id: got, object_id: 1, .. }) => {
    ///             assert_eq!(got, session_id)
    ///         }
    ///         other => panic!("unexpected {other:?}"),
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_session_as(&mut self, session_id: u64, key: GroupKey, member: &ReceiverKey) {
        let epoch_key = EpochKey {
            epoch: key.epoch,
            key: PacketKey::group(session_id, &key),
            replay: ReplayWindow::default(),
        };
        if let Some(session) = self.sessions.get_mut(&session_id) {
            if key.epoch < session.retired_below
                || session.epochs.iter().any(|known| known.epoch == key.epoch)
            {
                return;
            }
            session.epochs.push(epoch_key);
            session.epochs.sort_by_key(|known| known.epoch);
            while session.epochs.len() > LIVE_EPOCHS {
                let retired = session.epochs.remove(0);
                session.retired_below = retired.epoch + 1;
            }
            return;
        }
        self.sessions.insert(
            session_id,
            Session {
                epochs: vec![epoch_key],
                retired_below: 0,
                receiver_id: member.receiver_id,
                control_key: PacketKey::receiver(session_id, member),
                sender_address: None,
                last_heard: None,
                started: false,
                cumulative: 0,
                horizon: 0,
                missed: 0,
                window_low: 0,
                reassembly: Reassembly::default(),
                nacks: NackScheduler::new(),
                group_rtt: self.config.initial_rtt,
                echo: None,
                lost: Vec::new(),
                recovery: BTreeMap::new(),
                status_dirty: false,
                next_status_at: None,
                nack_due: false,
            },
        );
    }

    /// Forgets a session and the objects in reassembly for it.
    pub fn remove_session(&mut self, session_id: u64) {
        if let Some(mut session) = self.sessions.remove(&session_id) {
            for (_, object) in session.reassembly.drain_below(u64::MAX) {
                self.held = self.held.saturating_sub(object.held());
            }
            let shard_bytes: usize = session.recovery.values().map(RecoveryBlock::held).sum();
            self.held = self.held.saturating_sub(shard_bytes);
        }
    }

    /// Processes a datagram from the group (or a unicast repair). Anything that does not
    /// authenticate, repeats, or belongs to no known session is dropped and counted.
    ///
    /// The datagram is copied to be opened; a caller that owns its receive buffer saves that
    /// copy with [`handle_datagram_in_place`](Self::handle_datagram_in_place).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut buffer = std::mem::take(&mut self.scratch);
        buffer.clear();
        buffer.extend_from_slice(datagram);
        self.handle_datagram_in_place(now, from, &mut buffer);
        self.scratch = buffer;
    }

    /// [`handle_datagram`](Self::handle_datagram), opening the datagram where it lies: its
    /// sealed body is overwritten with the plaintext (whatever the outcome, the bytes are
    /// the caller's to discard). A data fragment is then copied once, to its place in its
    /// object.
    ///
    /// ```
    /// use std::time::Instant;
    /// use bytes::Bytes;
    /// use replicast_transport::multicast::proto::*;
    ///
    /// let now = Instant::now();
    /// let group_key = GroupKey { epoch: 1, secret: [7; 32] };
    /// let receiver_key = ReceiverKey { receiver_id: 1, secret: [9; 32] };
    /// let mut sender = Sender::new(SenderConfig::default(), 42, group_key.clone(), now)?;
    /// sender.add_receiver(receiver_key.clone());
    /// let mut receiver = Receiver::new(ReceiverConfig::default(), receiver_key, now);
    /// receiver.add_session(42, group_key);
    ///
    /// sender.send_object(1, Bytes::from_static(b"hello"), now)?;
    /// let from = "127.0.0.1:5000".parse()?;
    /// while let Some(mut transmit) = sender.poll_transmit(now) {
    ///     receiver.handle_datagram_in_place(now, from, &mut transmit.payload);
    /// }
    /// assert!(matches!(receiver.poll_event(), Some(ReceiverEvent::Object { object_id: 1, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) {
        let header = match Header::decode(datagram) {
            Ok((header, _)) => header,
            Err(error) => return self.count_decode_error(&error),
        };
        if header.packet_type.is_control() {
            self.stats.dropped.unexpected_type += 1;
            return;
        }
        let Some(session) = self.sessions.get_mut(&header.session_id) else {
            self.stats.dropped.unknown_session += 1;
            return;
        };
        if header.key_id < session.retired_below {
            self.stats.dropped.retired_epoch += 1;
            return;
        }
        let Some(epoch) = session
            .epochs
            .iter_mut()
            .find(|known| known.epoch == header.key_id)
        else {
            if session
                .epochs
                .first()
                .is_some_and(|oldest| header.key_id < oldest.epoch)
            {
                self.stats.dropped.retired_epoch += 1;
            } else {
                self.stats.dropped.unknown_epoch += 1;
            }
            return;
        };
        let Ok(plain) = epoch.key.open(&header, datagram) else {
            self.stats.dropped.wrong_key += 1;
            return;
        };
        if !epoch.replay.is_new(header.packet_number) {
            self.stats.dropped.replayed += 1;
            return;
        }
        let body = match wire::decode_body(header.packet_type, plain) {
            Ok(body) => body,
            Err(error) => {
                self.count_decode_error(&error);
                return;
            }
        };
        epoch.replay.accept(header.packet_number);
        session.sender_address = Some(from);
        session.last_heard = Some(now);
        self.stats.datagrams_accepted += 1;
        match body {
            Body::Data(data) => self.on_data(
                now,
                header.session_id,
                header.packet_type == PacketType::Repair,
                data,
            ),
            Body::Tail(tail) => self.on_tail(now, header.session_id, tail),
            Body::Parity(parity) => self.on_parity(now, header.session_id, parity),
            Body::Nack(_) | Body::Status(_) => self.stats.dropped.unexpected_type += 1,
        }
    }

    fn count_decode_error(&mut self, error: &DecodeError) {
        match error {
            DecodeError::Truncated { .. } => self.stats.dropped.truncated += 1,
            _ => self.stats.dropped.malformed += 1,
        }
    }

    fn on_data(&mut self, now: Instant, session_id: u64, repair: bool, data: DataBody<'_>) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.start_at(data.window_low);
        let seq = data.seq;
        let first_seq = seq - u64::from(data.fragment_index);
        let end_seq = first_seq.saturating_add(u64::from(data.fragment_count));
        if seq < session.cumulative || (seq < session.horizon && !session.nacks.contains(seq)) {
            self.stats.duplicates += 1;
            return;
        }
        if end_seq
            > session
                .cumulative
                .saturating_add(self.config.max_tracked_datagrams)
        {
            self.stats.dropped.beyond_window += 1;
            return;
        }
        if data.object_len
            > u64::from(data.fragment_count).saturating_mul(wire::MAX_FRAGMENT_PAYLOAD as u64)
        {
            self.stats.dropped.malformed += 1;
            return;
        }
        // Datagrams leave in sequence order, so every seq below this one was sent; the rest of
        // the object may not have been sent yet (the sender paces), and the tail announcement
        // says when it was. Counting the whole object as sent would NACK what is still queued.
        let was_missing = seq < session.horizon;
        // The seqs this datagram skipped are missing. The datagram in hand never enters the
        // NACK schedule unless it cannot be stored: entering and leaving it for every datagram
        // that arrives in order cost a map insert and removal, a jitter draw and a timer.
        session.missed += session.extend_horizon(seq, now, &self.config, &mut self.jitter);
        let fresh = !was_missing;
        if fresh {
            session.horizon = seq.saturating_add(1);
            // The sender bounds what is in flight by this position: tell it.
            session.status_dirty = true;
        }
        let mut rebuild = None;
        let fragment = Fragment {
            first_seq,
            object_id: data.object_id,
            object_len: data.object_len,
            index: data.fragment_index,
            count: data.fragment_count,
            payload: data.payload,
        };
        match session.reassembly.store(
            fragment,
            &mut self.held,
            self.config.max_reassembly_bytes,
            &self.buffers,
        ) {
            Err(refused) => {
                match refused {
                    Refused::Inconsistent => self.stats.dropped.malformed += 1,
                    Refused::OverMemory => self.stats.dropped.over_memory += 1,
                }
                if fresh {
                    // Still missing: ask again later rather than count it received.
                    let backoff = nack::backoff(&self.config, session.group_rtt, &mut self.jitter);
                    session.nacks.insert(seq, now, backoff);
                }
                return;
            }
            Ok(stored) => {
                // A datagram past the horizon was never missing, nor NACKed by this receiver.
                let (filled, detected_at) = if fresh {
                    (Filled::BeforeNack, None)
                } else {
                    session.nacks.remove_detected(seq, now)
                };
                if filled == Filled::BeforeNack && repair {
                    self.stats.nacks_suppressed += 1;
                }
                if was_missing && let Some(detected_at) = detected_at {
                    let delay = now.saturating_duration_since(detected_at);
                    self.stats.gaps_filled += 1;
                    self.stats.gap_fill_us += u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
                    self.stats.repair_delays.record(delay);
                    if filled == Filled::AfterFastRetries {
                        self.stats.gaps_filled_late += 1;
                    }
                }
                self.stats.fragments_received += 1;
                if repair {
                    self.stats.repairs_received += 1;
                }
                match stored {
                    Stored::Partial => {
                        // A block waiting for this datagram may now be rebuilt.
                        rebuild = session
                            .recovery
                            .range(..=seq)
                            .next_back()
                            .filter(|(first, block)| seq < **first + u64::from(block.len))
                            .map(|(first, _)| *first);
                    }
                    Stored::Complete { object_id, data } => {
                        let blocks: Vec<u64> = session
                            .recovery
                            .range(first_seq..end_seq)
                            .map(|(first, _)| *first)
                            .collect();
                        for first in blocks {
                            if let Some(block) = session.recovery.remove(&first) {
                                self.held = self.held.saturating_sub(block.held());
                            }
                        }
                        self.stats.objects_delivered += 1;
                        self.stats.bytes_delivered += data.len() as u64;
                        self.events.push_back(ReceiverEvent::Object {
                            session_id,
                            object_id,
                            data,
                        });
                    }
                    Stored::Corrupt { object_id } => {
                        session.lose(object_id, first_seq, end_seq);
                        self.stats.objects_lost += 1;
                        self.events.push_back(ReceiverEvent::Lost {
                            session_id,
                            object_id,
                        });
                    }
                }
            }
        }
        // On the session in hand: looking it up again for each step cost more than the steps
        // (SipHash, per datagram); the window low moves seldom.
        if data.window_low > session.window_low {
            self.apply_window_low(session_id, data.window_low);
        } else {
            self.held = self.held.saturating_sub(session.settle());
        }
        if let Some(first) = rebuild {
            self.rebuild(now, session_id, first);
        }
    }

    fn on_tail(&mut self, now: Instant, session_id: u64, tail: TailBody) {
        self.stats.tails_received += 1;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        session.start_at(tail.window_low);
        session.echo = Some((tail.timestamp_us, now));
        session.status_dirty = true;
        session.group_rtt = Duration::from_micros(u64::from(tail.group_rtt_us))
            .clamp(Duration::from_micros(100), Duration::from_secs(10));
        let limit = session
            .cumulative
            .saturating_add(self.config.max_tracked_datagrams);
        for object in &tail.objects {
            let end = object
                .first_seq
                .saturating_add(u64::from(object.fragment_count));
            if object.first_seq < session.cumulative
                || end > limit
                || end > tail.next_seq
                || session.reassembly.containing(object.first_seq).is_some()
                || session
                    .lost
                    .iter()
                    .any(|lost| lost.first_seq == object.first_seq)
            {
                continue;
            }
            // Only objects whose sequence numbers are all still missing can be new to us.
            if object.first_seq < session.horizon
                && !(object.first_seq..end.min(session.horizon))
                    .all(|seq| session.nacks.contains(seq))
            {
                continue;
            }
            session
                .reassembly
                .announce(object.first_seq, object.object_id, object.fragment_count);
        }
        session.missed += session.extend_horizon(
            tail.next_seq.min(limit),
            now,
            &self.config,
            &mut self.jitter,
        );
        self.apply_window_low(session_id, tail.window_low);
        self.settle(session_id);
    }

    /// Keeps a recovery shard of a block with missing datagrams, and rebuilds them once the
    /// block's received datagrams and recovery shards add up to its length.
    fn on_parity(&mut self, now: Instant, session_id: u64, parity: ParityBody<'_>) {
        self.stats.parity_received += 1;
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if !session.started {
            return; // No position yet to place the block against.
        }
        let first = parity.block_first_seq;
        let end = parity.covered().end;
        if end <= session.cumulative {
            self.stats.duplicates += 1;
            return;
        }
        if end
            > session
                .cumulative
                .saturating_add(self.config.max_tracked_datagrams)
        {
            self.stats.dropped.beyond_window += 1;
            return;
        }
        // A block's parity leaves after the block's datagrams: all of them were sent.
        session.missed += session.extend_horizon(end, now, &self.config, &mut self.jitter);
        let object_first = first - u64::from(parity.first_index);
        match session.reassembly.containing(first) {
            Some((known_first, object)) => {
                if known_first != object_first
                    || object.object_id != parity.object_id
                    || object.count != parity.fragment_count
                    || object
                        .object_len
                        .is_some_and(|len| len != parity.object_len)
                {
                    self.stats.dropped.malformed += 1;
                    return;
                }
            }
            None => {
                let missing = parity.covered().any(|seq| session.nacks.contains(seq));
                let lost = session
                    .lost
                    .iter()
                    .any(|lost| lost.first_seq == object_first);
                if !missing || lost || object_first < session.cumulative {
                    self.stats.duplicates += 1;
                    return;
                }
                session
                    .reassembly
                    .announce(object_first, parity.object_id, parity.fragment_count);
            }
        }
        if !parity.covered().any(|seq| session.nacks.contains(seq)) {
            self.stats.duplicates += 1;
            return;
        }
        let block = session
            .recovery
            .entry(first)
            .or_insert_with(|| RecoveryBlock {
                object_id: parity.object_id,
                object_len: parity.object_len,
                first_index: parity.first_index,
                fragment_count: parity.fragment_count,
                fragment_size: parity.fragment_size,
                len: parity.block_len,
                shard_len: parity.shard.len(),
                shards: Vec::new(),
            });
        if !block.same_layout(&parity) {
            self.stats.dropped.malformed += 1;
            return;
        }
        if block
            .shards
            .iter()
            .any(|(index, _)| *index == parity.recovery_index)
        {
            self.stats.duplicates += 1;
            return;
        }
        if self.held + parity.shard.len() > self.config.max_reassembly_bytes {
            self.stats.dropped.over_memory += 1;
            return;
        }
        self.held += parity.shard.len();
        block
            .shards
            .push((parity.recovery_index, parity.shard.to_vec()));
        self.rebuild(now, session_id, first);
    }

    /// Rebuilds the missing datagrams of the block at `first` if its received datagrams and
    /// recovery shards suffice, and hands them on as repairs.
    fn rebuild(&mut self, now: Instant, session_id: u64, first: u64) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        let Some(block) = session.recovery.get(&first) else {
            return;
        };
        let object_first = first - u64::from(block.first_index);
        let Some((known_first, object)) = session.reassembly.containing(first) else {
            return;
        };
        if known_first != object_first {
            return;
        }
        let originals: Vec<(usize, &[u8])> = (0..block.len)
            .filter_map(|offset| {
                let payload = object.fragment(block.first_index + u32::from(offset))?;
                Some((usize::from(offset), payload))
            })
            .collect();
        let complete = originals.len() == usize::from(block.len);
        if !complete && originals.len() + block.shards.len() < usize::from(block.len) {
            return;
        }
        let rebuilt = if complete {
            Some(Vec::new())
        } else {
            self.decoder.decode(block, originals.into_iter())
        };
        let Some(block) = session.recovery.remove(&first) else {
            return;
        };
        self.held = self.held.saturating_sub(block.held());
        let window_low = session.window_low;
        let Some(rebuilt) = rebuilt else {
            self.stats.dropped.malformed += 1;
            return;
        };
        for (offset, shard) in rebuilt {
            let fragment_index = block.first_index + offset as u32;
            let len = wire::fragment_len(
                block.object_len,
                block.fragment_count,
                block.fragment_size,
                fragment_index,
            );
            let Some(payload) = len.and_then(|len| shard.get(..len)) else {
                self.stats.dropped.malformed += 1;
                continue;
            };
            self.stats.parity_recovered += 1;
            self.on_data(
                now,
                session_id,
                true,
                DataBody {
                    seq: first + offset as u64,
                    window_low,
                    object_id: block.object_id,
                    object_len: block.object_len,
                    fragment_index,
                    fragment_count: block.fragment_count,
                    payload,
                },
            );
        }
    }

    /// Gives up on what the sender no longer keeps.
    fn apply_window_low(&mut self, session_id: u64, window_low: u64) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        if window_low <= session.window_low {
            return;
        }
        session.window_low = window_low;
        session.lost.retain(|lost| lost.end_seq > window_low);
        let gone = session.nacks.below(window_low);
        self.give_up(session_id, &gone);
    }

    /// Gives up on missing `seqs`: their objects are lost.
    fn give_up(&mut self, session_id: u64, seqs: &[u64]) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        for &seq in seqs {
            if !session.nacks.contains(seq) {
                continue; // Resolved with an earlier object of this list.
            }
            match session
                .reassembly
                .containing(seq)
                .map(|(first, object)| (first, object.object_id, object.count))
            {
                Some((first_seq, object_id, count)) => {
                    if let Some(object) = session.reassembly.remove(first_seq) {
                        self.held = self.held.saturating_sub(object.held());
                        self.buffers.give_back(object.into_buffer());
                    }
                    let end_seq = first_seq + u64::from(count);
                    session.lose(object_id, first_seq, end_seq);
                    self.stats.objects_lost += 1;
                    self.events.push_back(ReceiverEvent::Lost {
                        session_id,
                        object_id,
                    });
                }
                None => {
                    session.nacks.remove(seq);
                    self.stats.unidentified_losses += 1;
                }
            }
        }
        self.settle(session_id);
    }

    /// Gives up on every object in reassembly of a sender that went silent.
    fn sender_went_silent(&mut self, session_id: u64) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            return;
        };
        for (first_seq, object) in session.reassembly.drain_below(u64::MAX) {
            self.held = self.held.saturating_sub(object.held());
            let end_seq = first_seq.saturating_add(u64::from(object.count));
            session.horizon = session.horizon.max(end_seq);
            session.lose(object.object_id, first_seq, end_seq);
            self.stats.objects_lost += 1;
            self.events.push_back(ReceiverEvent::Lost {
                session_id,
                object_id: object.object_id,
            });
        }
        self.settle(session_id);
    }

    /// Advances the contiguous position after datagrams arrived or were given up.
    fn settle(&mut self, session_id: u64) {
        if let Some(session) = self.sessions.get_mut(&session_id) {
            self.held = self.held.saturating_sub(session.settle());
        }
    }

    /// Runs the timers that are due: NACKs and give-ups.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for session_id in ids {
            let Some(session) = self.sessions.get_mut(&session_id) else {
                continue;
            };
            let expired = session.nacks.take_expired(now, &self.config);
            if !expired.is_empty() {
                // `give_up` looks the seqs up as missing: put them back for it to resolve.
                for &seq in &expired {
                    session.nacks.insert(seq, now, Duration::ZERO);
                }
                self.give_up(session_id, &expired);
            }
            if self
                .sessions
                .get(&session_id)
                .and_then(|session| session.silence_deadline(&self.config))
                .is_some_and(|at| at <= now)
            {
                self.sender_went_silent(session_id);
            }
            if let Some(session) = self.sessions.get_mut(&session_id)
                && session.nacks.next_deadline().is_some_and(|at| at <= now)
            {
                session.nack_due = true;
            }
        }
    }

    /// The next NACK or status report, unicast to the sender it concerns.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let mut ids: Vec<u64> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        for session_id in ids {
            let Some(session) = self.sessions.get_mut(&session_id) else {
                continue;
            };
            let Some(address) = session.sender_address else {
                continue;
            };
            if session.nack_due {
                let held_back = session.covered_by_recovery();
                let ranges = session.nacks.take_due(
                    now,
                    &self.config,
                    session.group_rtt,
                    &mut self.jitter,
                    |seq| held_back.contains(&seq),
                );
                if ranges.is_empty() {
                    session.nack_due = false;
                } else {
                    let asked: u64 = ranges.iter().map(|range| u64::from(range.len)).sum();
                    let body = Body::Nack(ranges);
                    if let Some(transmit) = self.seal(session_id, PacketType::Nack, &body, address)
                    {
                        self.stats.nacks_sent += 1;
                        self.stats.nacked_datagrams += asked;
                        return Some(transmit);
                    }
                }
            }
            let Some(session) = self.sessions.get(&session_id) else {
                continue;
            };
            if session.started
                && session.status_dirty
                && session.next_status_at.is_none_or(|at| at <= now)
            {
                let body = Body::Status(session.status(now));
                if let Some(transmit) = self.seal(session_id, PacketType::Status, &body, address)
                    && let Some(session) = self.sessions.get_mut(&session_id)
                {
                    session.status_dirty = false;
                    session.next_status_at = Some(now + self.config.status_interval);
                    self.stats.status_sent += 1;
                    return Some(transmit);
                }
            }
        }
        None
    }

    fn seal(
        &mut self,
        session_id: u64,
        packet_type: PacketType,
        body: &Body<'_>,
        address: SocketAddr,
    ) -> Option<Transmit> {
        let session = self.sessions.get(&session_id)?;
        let header = Header {
            packet_type,
            session_id,
            key_id: session.receiver_id,
            packet_number: self.next_packet_number,
        };
        self.next_packet_number = self.next_packet_number.checked_add(1)?;
        let payload = session.control_key.seal(&header, body)?;
        Some(Transmit {
            destination: Destination::Unicast(address),
            payload,
        })
    }

    /// When [`handle_timeout`](Self::handle_timeout) (or, for a status report that is
    /// waiting, [`poll_transmit`](Self::poll_transmit)) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            // Without a sender address nothing can be sent, so its deadlines would only make
            // the driver spin.
            .filter(|session| session.sender_address.is_some())
            .flat_map(|session| {
                let status = (session.started && session.status_dirty)
                    .then_some(session.next_status_at)
                    .flatten();
                [
                    session.nacks.next_deadline(),
                    status,
                    session.silence_deadline(&self.config),
                ]
            })
            .flatten()
            .min()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ReceiverEvent> {
        self.events.pop_front()
    }

    /// When a datagram of session `session_id` last passed authentication here (`None`: none
    /// yet, or no such session): a sender still heard from is sending, however slowly its
    /// objects complete.
    pub fn last_heard(&self, session_id: u64) -> Option<Instant> {
        self.sessions.get(&session_id)?.last_heard
    }

    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Bytes held in reassembly: each object's buffer (its whole length, from its first
    /// fragment) and the recovery shards kept.
    pub fn reassembly_bytes(&self) -> usize {
        self.held
    }

    /// Missing datagrams tracked over all sessions.
    pub fn missing_datagrams(&self) -> usize {
        self.sessions
            .values()
            .map(|session| session.nacks.len())
            .sum()
    }
}

impl Session {
    /// Missing seqs that recovery shards in hand will rebuild once the rest of their block's
    /// deficit arrives: of each block with `r` recovery shards, the last `r` missing. A NACK
    /// asks only for the others, so the sender sends no more parity than is lacking.
    fn covered_by_recovery(&self) -> Vec<u64> {
        let mut covered = Vec::new();
        for (first, block) in &self.recovery {
            let missing: Vec<u64> = (*first..first + u64::from(block.len))
                .filter(|seq| self.nacks.contains(*seq))
                .collect();
            let held = block.shards.len().min(missing.len());
            covered.extend_from_slice(&missing[missing.len() - held..]);
        }
        covered
    }

    /// When this session's objects in reassembly are lost if the sender stays silent.
    fn silence_deadline(&self, config: &ReceiverConfig) -> Option<Instant> {
        if self.reassembly.is_empty() {
            return None;
        }
        self.last_heard.map(|at| at + config.repair_deadline)
    }

    /// [`Receiver::settle`] on this session; returns the bytes of recovery shards released.
    fn settle(&mut self) -> usize {
        let cumulative = self.nacks.first().unwrap_or(self.horizon);
        if cumulative > self.cumulative {
            self.cumulative = cumulative;
            self.status_dirty = true;
        }
        // Recovery shards are needed only for blocks that may still miss a datagram.
        let mut released = 0;
        while let Some(entry) = self.recovery.first_entry() {
            if *entry.key() + u64::from(entry.get().len) > self.cumulative {
                break;
            }
            released += entry.remove().held();
        }
        released
    }

    /// Takes the sender's window low as the starting point on first contact, so that a
    /// receiver joining late does not ask for what was sent before it.
    fn start_at(&mut self, window_low: u64) {
        if !self.started {
            self.started = true;
            self.cumulative = window_low;
            self.horizon = window_low;
            self.window_low = window_low;
        }
    }

    /// Everything up to `end` exists: what has not arrived is missing. Returns how many
    /// seqs it found missing.
    fn extend_horizon(
        &mut self,
        end: u64,
        now: Instant,
        config: &ReceiverConfig,
        jitter: &mut Jitter,
    ) -> u64 {
        if self.horizon < end {
            // The sender bounds what is in flight by this position: tell it.
            self.status_dirty = true;
        }
        let found = end.saturating_sub(self.horizon);
        while self.horizon < end {
            let backoff = nack::backoff(config, self.group_rtt, jitter);
            self.nacks.insert(self.horizon, now, backoff);
            self.horizon += 1;
        }
        found
    }

    /// Records an object given up on and resolves its missing datagrams.
    fn lose(&mut self, object_id: u64, first_seq: u64, end_seq: u64) {
        for seq in first_seq..end_seq {
            self.nacks.remove(seq);
        }
        self.lost.push(LostObject {
            object_id,
            first_seq,
            end_seq,
        });
        self.status_dirty = true;
    }

    fn status(&self, now: Instant) -> StatusBody {
        let mut lost = self.lost.clone();
        lost.sort_by_key(|lost| lost.first_seq);
        // Never claim past a lost object that does not fit in this report: the sender must
        // learn of the loss before it counts the object delivered.
        let cumulative = match lost.get(MAX_STATUS_LOST) {
            Some(first_unreported) => self.cumulative.min(first_unreported.first_seq),
            None => self.cumulative,
        };
        let (echo_timestamp_us, echo_delay_us) = match self.echo {
            Some((timestamp, at)) => (
                timestamp,
                u32::try_from(now.saturating_duration_since(at).as_micros()).unwrap_or(u32::MAX),
            ),
            None => (0, 0),
        };
        StatusBody {
            cumulative,
            read_end: self.horizon.max(cumulative),
            missed: self.missed,
            echo_timestamp_us,
            echo_delay_us,
            lost: lost
                .iter()
                .take(MAX_STATUS_LOST)
                .map(|lost| lost.object_id)
                .collect(),
        }
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("receiver_id", &self.key.receiver_id)
            .field("sessions", &self.sessions.len())
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}
