//! The sending side of a session: splitting, pacing, the window, tails and repairs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::SenderConfig;
use super::crypto::PacketKey;
use super::error::{ConfigError, SendError};
use super::fec::ParityEncoder;
use super::keys::{GroupKey, ReceiverKey};
use super::loss::{self, LossEstimate};
use super::rate::TokenBucket;
use super::replay::ReplayWindow;
use super::stats::SenderStats;
use super::window::TransmitWindow;
use super::wire::{
    self, Body, DataBody, DecodeError, Header, MAX_TAIL_OBJECTS, PacketType, ParityBody, SeqRange,
    StatusBody, TailBody, TailObject,
};
use super::{Destination, SenderEvent, Transmit};

/// Sequence numbers one NACK may make the sender look at; the rest of a larger NACK is ignored
/// (a legitimate receiver never asks for more than its tracked window at once).
const MAX_SEQS_PER_NACK: u64 = 16 * 1024;

/// Shortest NACK coalescing wait: below it, timers cost more than they gather.
const MIN_COALESCING: Duration = Duration::from_micros(100);

/// Repairs sent one after another to one destination at most, before the lowest pending
/// repair's destination is looked at again: about what the driver sends in one system call
/// (GSO batches of full datagrams, 64 KiB at most).
const MAX_REPAIR_RUN: usize = 44;

/// Pending repairs looked through for a run to one destination: bounds the cost of a run
/// when repairs go to many destinations.
const REPAIR_RUN_SCAN: usize = 4 * MAX_REPAIR_RUN;

/// NACKs within one parity block: its length, the seqs asked, and per receiver how many of
/// them it asked for.
type BlockRequests = (u16, Vec<u64>, HashMap<u32, u16>);

/// One member of the group, as the sender sees it.
struct Member {
    key: PacketKey,
    replay: ReplayWindow,
    /// Where its control datagrams come from, so a unicast repair can reach it.
    address: Option<SocketAddr>,
    /// Every sequence number below is received or given up by it.
    acked: u64,
    /// What it reported read (or lost) from the network: datagrams below are no longer in
    /// flight to it. Never below `acked`.
    read: u64,
    /// Given up on: it no longer holds the window back.
    detached: bool,
    /// When its acknowledged position last moved: a member is given up on only after it made
    /// no progress for the delivery timeout, so a slow member still catching up is kept.
    last_progress: Option<Instant>,
    repair_budget: TokenBucket,
    smoothed_rtt: Option<Duration>,
    /// Its loss rate, from its status reports (sizes proactive parity).
    loss: LossEstimate,
}

/// The sender of one session: a sans-IO state machine.
///
/// Objects handed to [`send_object`](Self::send_object) are split into datagrams and kept in
/// the window until every member acknowledged them; [`poll_transmit`](Self::poll_transmit)
/// yields what to send, [`poll_timeout`](Self::poll_timeout) when to call
/// [`handle_timeout`](Self::handle_timeout), [`poll_event`](Self::poll_event) the outcome per
/// object and member.
pub struct Sender {
    config: SenderConfig,
    session_id: u64,
    key: PacketKey,
    next_packet_number: u64,
    start: Instant,
    window: TransmitWindow,
    /// The next sequence number to send for the first time.
    send_cursor: u64,
    members: BTreeMap<u32, Member>,
    /// Repairs ready to go, in sequence order.
    repairs: BTreeMap<u64, Destination>,
    /// The rest of the run of repairs being sent, all to `repair_run_to` (see
    /// [`next_repair`](Self::next_repair)).
    repair_run: VecDeque<u64>,
    repair_run_to: Option<Destination>,
    /// Parity ready to go: (block's first seq, recovery index).
    parity: BTreeSet<(u64, u16)>,
    /// Recovery shards per block, computed when first sent.
    fec: ParityEncoder,
    /// NACKed sequence numbers gathered until `flush_nacks_at`, with who asked.
    requested: BTreeMap<u64, Vec<u32>>,
    flush_nacks_at: Option<Instant>,
    next_tail_at: Instant,
    tail_due: bool,
    /// Data went out since the last tail: when the burst ends, a tail tells receivers at
    /// once where it ended, so the loss of its last datagrams shows without waiting for the
    /// next periodic tail.
    burst_unannounced: bool,
    last_tail_at: Option<Instant>,
    pacer: Option<TokenBucket>,
    group_rtt: Duration,
    /// Whether `group_rtt` comes from a member's measurement (not `initial_rtt`).
    rtt_measured: bool,
    window_was_full: bool,
    /// The lowest `read` of the attached members (`u64::MAX` with none): new data goes
    /// only while the datagrams from it to the send cursor fit `flight_bytes`.
    flight_low: u64,
    /// Since when new data has been held back by the flight limit (for `flight_limited_us`).
    flight_limited_since: Option<Instant>,
    /// Since when an object has been refused for a full window (for `window_full_us`).
    window_full_since: Option<Instant>,
    /// Whether that refusal was for the window's own bound (for `window_held_us`).
    window_full_held: bool,
    events: VecDeque<SenderEvent>,
    stats: SenderStats,
}

impl Sender {
    /// A sender for `session_id` sealing with `key`; nothing is sent until an object is.
    pub fn new(
        config: SenderConfig,
        session_id: u64,
        key: GroupKey,
        now: Instant,
    ) -> Result<Sender, ConfigError> {
        config.validate()?;
        Ok(Sender {
            pacer: config.rate_limit.map(|limit| TokenBucket::new(limit, now)),
            group_rtt: config.initial_rtt.max(config.min_rtt),
            rtt_measured: false,
            key: PacketKey::group(session_id, &key),
            next_packet_number: 0,
            session_id,
            start: now,
            window: TransmitWindow::default(),
            send_cursor: 0,
            members: BTreeMap::new(),
            repairs: BTreeMap::new(),
            repair_run: VecDeque::new(),
            repair_run_to: None,
            parity: BTreeSet::new(),
            fec: ParityEncoder::default(),
            requested: BTreeMap::new(),
            flush_nacks_at: None,
            next_tail_at: now,
            tail_due: false,
            burst_unannounced: false,
            last_tail_at: None,
            window_was_full: false,
            flight_low: u64::MAX,
            flight_limited_since: None,
            window_full_since: None,
            window_full_held: false,
            events: VecDeque::new(),
            stats: SenderStats::default(),
            config,
        })
    }

    /// The session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The group round-trip time: the largest smoothed RTT among members that reported one.
    pub fn group_rtt(&self) -> Duration {
        self.group_rtt
    }

    /// How long NACKs are gathered before they are answered: a quarter of the group RTT (the
    /// spread of the receivers' first NACKs is about as long), at most `nack_coalescing`.
    fn coalescing(&self) -> Duration {
        (self.group_rtt / 4).clamp(
            MIN_COALESCING,
            self.config.nack_coalescing.max(MIN_COALESCING),
        )
    }

    /// How long after a repair further NACKs for the same datagrams count as sent before it
    /// arrived: a round trip.
    fn repair_holdoff(&self) -> Duration {
        self.group_rtt.max(self.coalescing())
    }

    /// Adds a member: objects sent from now on wait for its acknowledgement, and its NACKs
    /// and status reports are accepted. Adding a member again replaces its key.
    pub fn add_receiver(&mut self, key: ReceiverKey) {
        let member = Member {
            key: PacketKey::receiver(self.session_id, &key),
            replay: ReplayWindow::default(),
            address: None,
            acked: self.window.end(),
            read: self.window.end(),
            detached: false,
            last_progress: None,
            repair_budget: TokenBucket::new(self.config.repair_rate_per_receiver, self.start),
            smoothed_rtt: None,
            loss: LossEstimate::default(),
        };
        if let Some(old) = self.members.insert(key.receiver_id, member) {
            // Keep its position, so that replacing a key does not re-gate old objects.
            if let Some(member) = self.members.get_mut(&key.receiver_id) {
                member.acked = old.acked;
                member.read = old.read;
                member.detached = old.detached;
                member.address = old.address;
                member.last_progress = old.last_progress;
                member.loss = old.loss;
            }
        }
        self.update_flight_low();
    }

    /// Removes a member: its outstanding objects are reported abandoned and it no longer
    /// holds the window back.
    pub fn remove_receiver(&mut self, receiver_id: u32) {
        if self.members.remove(&receiver_id).is_some() {
            self.abandon_all_for(receiver_id);
            self.requested
                .values_mut()
                .for_each(|asked| asked.retain(|id| *id != receiver_id));
            self.update_flight_low();
            self.advance_window();
        }
    }

    /// Installs the key of a new epoch: datagrams from now on are sealed with it (receivers
    /// keep the previous epoch to open datagrams still in flight). A key whose epoch is not
    /// newer than the current one is ignored, so that packet numbers never repeat under a
    /// key.
    pub fn install_key(&mut self, key: GroupKey) {
        if key.epoch <= self.key.key_id() {
            return;
        }
        self.key = PacketKey::group(self.session_id, &key);
        self.next_packet_number = 0;
    }

    /// Queues `data` as object `object_id`. Fails with [`SendError::WindowFull`] until
    /// members acknowledge enough (then [`SenderEvent::Writable`] is emitted).
    pub fn send_object(
        &mut self,
        object_id: u64,
        data: Bytes,
        now: Instant,
    ) -> Result<(), SendError> {
        let size = data.len() as u64;
        if size > self.config.max_object_size {
            return Err(SendError::TooLarge {
                size,
                max: self.config.max_object_size,
            });
        }
        if self.window.contains_object(object_id) {
            return Err(SendError::DuplicateObject { object_id });
        }
        if self.next_packet_number == u64::MAX {
            return Err(SendError::KeyExhausted {
                epoch: self.key.key_id(),
            });
        }
        let payload = self.config.fragment_payload();
        let datagrams = size.div_ceil(payload as u64).max(1);
        let held = self.window.datagrams() + datagrams > self.config.window_datagrams
            || self.window.bytes() + size > self.config.window_bytes;
        if held || self.unsent_flight_queued() {
            self.window_was_full = true;
            if self.window_full_since.is_none() {
                self.window_full_since = Some(now);
                self.window_full_held = held;
            }
            return Err(SendError::WindowFull);
        }
        if let Some(since) = self.window_full_since.take() {
            let waited = now.saturating_duration_since(since).as_micros();
            let waited = u64::try_from(waited).unwrap_or(u64::MAX);
            self.stats.window_full_us += waited;
            if self.window_full_held {
                self.stats.window_held_us += waited;
            }
        }
        let mut pending = Vec::new();
        for (&receiver_id, member) in &self.members {
            if member.detached {
                self.events.push_back(SenderEvent::Abandoned {
                    object_id,
                    receiver_id,
                });
                self.stats.abandonments += 1;
            } else {
                pending.push(receiver_id);
            }
        }
        self.window.push_object(object_id, data, payload, pending);
        self.stats.objects_sent += 1;
        if self.stats.tails_sent == 0 {
            // Announce the session (and its parity layout) ahead of its first data.
            self.tail_due = true;
        }
        if self.next_tail_at > now + self.config.tail_interval {
            self.next_tail_at = now + self.config.tail_interval;
        }
        Ok(())
    }

    /// Processes a datagram from a receiver (NACK or status). Anything else, or anything that
    /// does not authenticate, is dropped and counted.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let header = match Header::decode(datagram) {
            Ok((header, _)) => header,
            Err(error) => return self.count_decode_error(&error),
        };
        if !header.packet_type.is_control() {
            self.stats.dropped.unexpected_type += 1;
            return;
        }
        if header.session_id != self.session_id {
            self.stats.dropped.wrong_session += 1;
            return;
        }
        let receiver_id = header.key_id;
        let Some(member) = self.members.get_mut(&receiver_id) else {
            self.stats.dropped.unknown_receiver += 1;
            return;
        };
        let mut buffer = datagram.to_vec();
        let Ok(plain) = member.key.open(&header, &mut buffer) else {
            self.stats.dropped.wrong_key += 1;
            return;
        };
        if !member.replay.is_new(header.packet_number) {
            self.stats.dropped.replayed += 1;
            return;
        }
        let body = match wire::decode_body(header.packet_type, plain) {
            Ok(body) => body,
            Err(error) => return self.count_decode_error(&error),
        };
        member.replay.accept(header.packet_number);
        member.address = Some(from);
        match body {
            Body::Nack(ranges) => self.on_nack(now, receiver_id, &ranges),
            Body::Status(status) => self.on_status(now, receiver_id, status),
            Body::Data(_) | Body::Tail(_) | Body::Parity(_) => {
                self.stats.dropped.unexpected_type += 1
            }
        }
    }

    fn count_decode_error(&mut self, error: &DecodeError) {
        match error {
            DecodeError::Truncated { .. } => self.stats.dropped.truncated += 1,
            _ => self.stats.dropped.malformed += 1,
        }
    }

    fn on_nack(&mut self, now: Instant, receiver_id: u32, ranges: &[SeqRange]) {
        self.stats.nacks_received += 1;
        let holdoff = self.repair_holdoff();
        let mut budget = MAX_SEQS_PER_NACK;
        for range in ranges {
            let wanted = u64::from(range.len).min(budget);
            budget -= wanted;
            let end = range.first.saturating_add(wanted);
            self.stats.nacked_datagrams += wanted;
            // Only what was sent and is still held can be repaired.
            let first = range.first.max(self.window.base());
            let stop = end.min(self.send_cursor);
            let available = stop.saturating_sub(first);
            self.stats.repairs_unavailable += wanted - available;
            for seq in first..stop {
                let Some(fragment) = self.window.fragment(seq) else {
                    self.stats.repairs_unavailable += 1;
                    continue;
                };
                let recently = fragment.last_repair.is_some_and(|(at, to)| {
                    now.saturating_duration_since(at) < holdoff
                        && (to.is_none() || to == Some(receiver_id))
                });
                if recently || self.repairs.get(&seq) == Some(&Destination::Group) {
                    self.stats.repairs_coalesced += 1;
                    continue;
                }
                let asked = self.requested.entry(seq).or_default();
                if asked.contains(&receiver_id) {
                    self.stats.repairs_coalesced += 1;
                } else {
                    asked.push(receiver_id);
                }
            }
            if budget == 0 {
                break;
            }
        }
        if !self.requested.is_empty() && self.flush_nacks_at.is_none() {
            self.flush_nacks_at = Some(now + self.coalescing());
        }
    }

    /// Turns the gathered NACKs into repairs: one per datagram, to the group when several
    /// members asked, to the member when one did.
    fn flush_nacks(&mut self, now: Instant) {
        self.flush_nacks_at = None;
        self.choose_parity(now);
        let requested = std::mem::take(&mut self.requested);
        for (seq, asked) in requested {
            let Some(size) = self.window.fragment(seq).map(|f| f.payload.len()) else {
                self.stats.repairs_unavailable += asked.len() as u64;
                continue;
            };
            let mut granted = Vec::with_capacity(asked.len());
            for receiver_id in asked {
                let Some(member) = self.members.get_mut(&receiver_id) else {
                    continue;
                };
                if member
                    .repair_budget
                    .try_take_all(size + wire::DATA_BODY_HEADER_LEN, now)
                {
                    granted.push((receiver_id, member.address));
                } else {
                    self.stats.repairs_rate_limited += 1;
                }
            }
            let destination = match granted.as_slice() {
                [] => continue,
                [(receiver_id, Some(address))] => {
                    (Destination::Unicast(*address), Some(*receiver_id))
                }
                _ => (Destination::Group, None),
            };
            let merged = match self.repairs.get(&seq) {
                Some(queued) if *queued != destination.0 => (Destination::Group, None),
                _ => destination,
            };
            self.repairs.insert(seq, merged.0);
            if let Some(fragment) = self.window.fragment_mut(seq) {
                fragment.last_repair = Some((now, merged.1));
            }
        }
    }

    /// Answers NACKs with parity where one parity datagram serves several receivers (NORM's
    /// approach): per block whose datagrams several members asked for, as many new recovery
    /// shards as the neediest member lacks, to the group. Parity sent within the holdoff
    /// counts: a NACK that left before it arrived is answered by it. A block only one member
    /// asks about gets plain repairs.
    ///
    /// Only a paced sender does this: parity saves bytes on the wire, never the receivers'
    /// CPU. Decoding a block evaluates a polynomial over all of GF(2^16), about 0.1 ms
    /// whatever the block's length, which is more than a receiver spends reading and
    /// opening the whole 64-datagram block again (about 0.06 ms on loopback). Where the rate
    /// bounds the path that CPU buys bytes; an unpaced sender is bounded by its receivers'
    /// CPU, and there on-demand parity cost three receivers at 5% loss a fifth of all the
    /// run's CPU to replace 2% of the repairs (docs/BENCH.md, issue 18).
    fn choose_parity(&mut self, now: Instant) {
        let Some(fec) = self.config.fec else {
            return;
        };
        if self.config.rate_limit.is_none() {
            return;
        }
        let holdoff = self.repair_holdoff();
        let mut blocks: BTreeMap<u64, BlockRequests> = BTreeMap::new();
        for (&seq, asked) in &self.requested {
            let Some(fragment) = self.window.fragment(seq) else {
                continue;
            };
            let (start, len) = wire::block_of(fragment.index, fragment.count, fec.max_block);
            let first = seq - u64::from(fragment.index - start);
            if first < self.window.base() || first + u64::from(len) > self.send_cursor {
                continue; // Only blocks sent whole and still held have parity.
            }
            let entry = blocks
                .entry(first)
                .or_insert_with(|| (len, Vec::new(), HashMap::new()));
            entry.1.push(seq);
            for receiver_id in asked {
                *entry.2.entry(*receiver_id).or_default() += 1;
            }
        }
        for (first, (len, seqs, askers)) in blocks {
            let block = self.fec.block_mut(first);
            block
                .recent
                .retain(|(at, _)| now.saturating_duration_since(*at) < holdoff);
            let recent: u16 = block.recent.iter().map(|(_, count)| count).sum();
            let need = askers.values().copied().max().unwrap_or(0);
            // Parity costs CPU a retransmission does not (the receivers' decode evaluates a
            // polynomial over the whole field, about 0.1 ms a block whatever its size), so it
            // is used where it saves datagrams: at least half of the distinct ones asked, and
            // two. A block one member asks about gets plain repairs, by unicast.
            let distinct = seqs.len() as u16;
            if recent == 0 && (askers.len() < 2 || distinct < 2 * need + 2) {
                continue;
            }
            let available = wire::recovery_count(len).saturating_sub(block.next_index);
            let new = need.saturating_sub(recent).min(available);
            if need > recent + new {
                continue; // Out of recovery shards: plain repairs.
            }
            let size =
                wire::shard_len(self.config.fragment_payload()) + wire::PARITY_BODY_HEADER_LEN;
            let members = &mut self.members;
            let affordable = askers.iter().all(|(receiver_id, count)| {
                members.get_mut(receiver_id).is_some_and(|member| {
                    member
                        .repair_budget
                        .try_take_all(size * usize::from(*count), now)
                })
            });
            if !affordable {
                continue; // The ordinary repairs apply (and their limits).
            }
            if new == 0 {
                self.stats.repairs_coalesced += seqs.len() as u64;
            }
            for index in block.next_index..block.next_index + new {
                self.parity.insert((first, index));
            }
            block.next_index += new;
            if new > 0 {
                block.recent.push((now, new));
            }
            for seq in seqs {
                self.requested.remove(&seq);
                if let Some(fragment) = self.window.fragment_mut(seq) {
                    fragment.last_repair = Some((now, None));
                }
            }
        }
    }

    /// After the last datagram of a block went out for the first time, queues its proactive
    /// parity.
    fn queue_proactive_parity(&mut self, seq: u64) {
        let Some(fec) = self.config.fec else {
            return;
        };
        let Some(fragment) = self.window.fragment(seq) else {
            return;
        };
        let (start, len) = wire::block_of(fragment.index, fragment.count, fec.max_block);
        if fragment.index + 1 != start + u32::from(len) {
            return;
        }
        // The object's datagrams still to send after this block.
        let after = fragment.count.saturating_sub(fragment.index + 1);
        let target = self.parity_target(after, fragment.count, fec.max_block);
        let shards = fec
            .proactive_shards(len)
            .max(self.adaptive_shards(len, target));
        if shards == 0 {
            return;
        }
        let first = seq + 1 - u64::from(len);
        let block = self.fec.block_mut(first);
        for index in block.next_index..shards {
            self.parity.insert((first, index));
        }
        block.next_index = block.next_index.max(shards);
        block.proactive = block.proactive.max(shards);
    }

    /// The adaptive parity's target for a block followed by `after` more datagrams of its
    /// object of `count` ([`SenderConfig::tail_parity`]): a block whose repair round would
    /// end after the object's last datagram (it ends within one group RTT of sending before
    /// the object's end) delays the object by that round, so the object's blocks there share
    /// the tail target; an earlier block's round overlaps the rest of the object, and it gets
    /// the per-block target. `None`: no adaptive parity (or an unpaced sender: see
    /// [`SenderConfig::adaptive_parity`]).
    fn parity_target(&self, after: u32, count: u32, max_block: u16) -> Option<f64> {
        let per_block = self.config.adaptive_parity?;
        let rate = self.config.rate_limit?;
        let span = self.group_rtt.as_secs_f64() * rate.bytes_per_second as f64
            / self.config.max_datagram_size as f64;
        // Saturates for absurd rates; a span past the object makes every block a tail block.
        let span = span.ceil().min(f64::from(u32::MAX)) as u32;
        if after >= span {
            return Some(per_block);
        }
        let tail_blocks = loss::blocks_ending_after(count.saturating_sub(span), count, max_block);
        Some((self.config.tail_parity / f64::from(tail_blocks.max(1))).min(per_block))
    }

    /// Proactive shards for a block of `len` datagrams by the loss the attached members
    /// report, for `target` ([`parity_target`](Self::parity_target)): sized for the worst of
    /// them, for all.
    fn adaptive_shards(&self, len: u16, target: Option<f64>) -> u16 {
        let Some(target) = target else {
            return 0;
        };
        let attached = self.members.values().filter(|member| !member.detached);
        let (count, worst) = attached.fold((0, 0.0f64), |(count, worst), member| {
            (count + 1, worst.max(member.loss.rate()))
        });
        loss::shards_for(len, count, worst, target, wire::recovery_count(len))
    }

    fn on_status(&mut self, now: Instant, receiver_id: u32, status: StatusBody) {
        self.stats.status_received += 1;
        let end = self.send_cursor;
        let now_us = self.micros_since_start(now);
        let Some(member) = self.members.get_mut(&receiver_id) else {
            return;
        };
        let old_rtt = member.smoothed_rtt;
        member.loss.report(status.read_end, status.missed);
        if status.echo_timestamp_us != 0 {
            let sample_us = now_us
                .saturating_sub(status.echo_timestamp_us)
                .saturating_sub(u64::from(status.echo_delay_us));
            let sample = Duration::from_micros(sample_us);
            member.smoothed_rtt = Some(match member.smoothed_rtt {
                Some(smoothed) => (smoothed * 7 + sample) / 8,
                None => sample,
            });
        }
        let previous = member.acked;
        let cumulative = status.cumulative.min(end);
        let detached = member.detached;
        if cumulative > previous {
            member.acked = cumulative;
            member.last_progress = Some(now);
        }
        let previous_read = member.read;
        member.read = member.read.max(status.read_end.min(end)).max(member.acked);
        let read_moved = member.read > previous_read && previous_read <= self.flight_low;
        for object_id in status.lost {
            if let Some(object) = self.window.object_by_id_mut(object_id)
                && let Some(position) = object.pending.iter().position(|id| *id == receiver_id)
            {
                object.pending.swap_remove(position);
                self.events.push_back(SenderEvent::Abandoned {
                    object_id,
                    receiver_id,
                });
                self.stats.abandonments += 1;
            }
        }
        if cumulative > previous {
            for object in self.window.objects_ending_in(previous, cumulative) {
                if let Some(position) = object.pending.iter().position(|id| *id == receiver_id) {
                    object.pending.swap_remove(position);
                    self.events.push_back(SenderEvent::Delivered {
                        object_id: object.object_id,
                        receiver_id,
                    });
                    self.stats.deliveries += 1;
                }
            }
        }
        let reattached = detached && cumulative >= self.window.base();
        let mut new_rtt = None;
        if let Some(member) = self.members.get_mut(&receiver_id) {
            if reattached {
                member.detached = false;
            }
            new_rtt = member.smoothed_rtt.filter(|_| !member.detached);
        }
        // Each status is O(1) for large groups: the group RTT is recomputed over every member
        // only when this one held the maximum and went down, and the window only moves when
        // this member was at its low edge.
        let floor = self.config.min_rtt;
        match (old_rtt, new_rtt) {
            _ if reattached || !self.rtt_measured => self.update_group_rtt(),
            (_, Some(new)) if new.max(floor) >= self.group_rtt => self.group_rtt = new.max(floor),
            (Some(old), _) if old.max(floor) >= self.group_rtt => self.update_group_rtt(),
            _ => {}
        }
        // As for the window: the flight's low edge moves only when this member held it.
        if read_moved || reattached {
            self.update_flight_low();
        }
        if previous <= self.window.base() || reattached {
            self.advance_window();
        }
    }

    fn update_flight_low(&mut self) {
        self.flight_low = self
            .members
            .values()
            .filter(|member| !member.detached)
            .map(|member| member.read.max(member.acked))
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Whether a new datagram may go: those from the slowest member's read position to the
    /// send cursor take less than `flight_bytes`.
    fn flight_allows(&self) -> bool {
        let in_flight = self.send_cursor.saturating_sub(self.flight_low);
        in_flight.saturating_mul(self.config.max_datagram_size as u64) < self.config.flight_bytes
    }

    fn update_group_rtt(&mut self) {
        let measured = self
            .members
            .values()
            .filter(|member| !member.detached)
            .filter_map(|member| member.smoothed_rtt)
            .max();
        self.rtt_measured = measured.is_some();
        self.group_rtt = measured
            .unwrap_or(self.config.initial_rtt)
            .max(self.config.min_rtt);
    }

    /// Releases what every attached member has acknowledged.
    fn advance_window(&mut self) {
        let low = self
            .members
            .values()
            .filter(|member| !member.detached)
            .map(|member| member.acked)
            .min()
            .unwrap_or(self.send_cursor)
            .min(self.send_cursor);
        if low > self.window.base() {
            let released = self.window.release_below(low);
            for object in released {
                for receiver_id in object.pending {
                    self.events.push_back(SenderEvent::Abandoned {
                        object_id: object.object_id,
                        receiver_id,
                    });
                    self.stats.abandonments += 1;
                }
            }
            self.repairs = self.repairs.split_off(&low);
            self.parity = self.parity.split_off(&(low, 0));
            self.fec.release_below(low);
            self.requested = self.requested.split_off(&low);
        }
        self.announce_writable();
    }

    /// Emits [`SenderEvent::Writable`] once an object was refused and there is room again.
    fn announce_writable(&mut self) {
        let roomy = self.window.datagrams() < self.config.window_datagrams
            && self.window.bytes() < self.config.window_bytes
            && !self.unsent_flight_queued();
        if self.window_was_full && roomy {
            self.window_was_full = false;
            self.events.push_back(SenderEvent::Writable);
        }
    }

    /// Whether a quarter of a flight's worth of datagrams waits in the window unsent: objects
    /// are refused then, so that they wait with the caller (backpressure) rather than in the
    /// window, which is kept for what is in flight and what awaits repair. A quarter keeps
    /// the sender supplied between two status reports without adding much to an object's
    /// wait.
    fn unsent_flight_queued(&self) -> bool {
        let unsent = self.window.end().saturating_sub(self.send_cursor);
        unsent.saturating_mul(self.config.max_datagram_size as u64) >= self.config.flight_bytes / 4
    }

    /// Reports every outstanding object of `receiver_id` abandoned.
    fn abandon_all_for(&mut self, receiver_id: u32) {
        for object in self.window.objects_mut() {
            if let Some(position) = object.pending.iter().position(|id| *id == receiver_id) {
                object.pending.swap_remove(position);
                self.events.push_back(SenderEvent::Abandoned {
                    object_id: object.object_id,
                    receiver_id,
                });
                self.stats.abandonments += 1;
            }
        }
    }

    /// Runs the timers that are due: NACK coalescing, tail announcements, delivery timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flush_nacks_at.is_some_and(|at| at <= now) {
            self.flush_nacks(now);
        }
        if self.next_tail_at <= now {
            self.tail_due = true;
            let busy = self.window.datagrams() > 0 || self.send_cursor < self.window.end();
            let interval = if busy {
                self.config.tail_interval
            } else {
                self.config.idle_tail_interval
            };
            self.next_tail_at = now + interval;
        }
        self.detach_laggards(now);
    }

    /// The members holding the window back, each with the time from which it counts as
    /// stalled: the later of the oldest object's send time and its own last progress.
    fn stalled_members(&self) -> impl Iterator<Item = (u32, Instant)> + '_ {
        let oldest = self
            .window
            .oldest_object()
            .and_then(|object| Some((object.sent_at?, object.end_seq())));
        // Whoever has not acknowledged past the oldest object holds the window back, whether
        // or not it still owes a delivery report for it (it may have reported it lost).
        oldest.into_iter().flat_map(move |(sent_at, end)| {
            self.members
                .iter()
                .filter(move |(_, member)| !member.detached && member.acked < end)
                .map(move |(id, member)| {
                    let since = member.last_progress.map_or(sent_at, |at| at.max(sent_at));
                    (*id, since)
                })
        })
    }

    /// Gives up on members that made no progress past the oldest object for the delivery
    /// timeout.
    fn detach_laggards(&mut self, now: Instant) {
        let timeout = self.config.delivery_timeout;
        let laggards: Vec<u32> = self
            .stalled_members()
            .filter(|(_, since)| now.saturating_duration_since(*since) >= timeout)
            .map(|(id, _)| id)
            .collect();
        if laggards.is_empty() {
            return;
        }
        for receiver_id in laggards {
            if let Some(member) = self.members.get_mut(&receiver_id) {
                member.detached = true;
                self.stats.receivers_detached += 1;
            }
            self.abandon_all_for(receiver_id);
        }
        self.update_group_rtt();
        self.update_flight_low();
        self.advance_window();
    }

    /// The next datagram to send, if any is due and the rate limit allows.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.next_packet_number == u64::MAX {
            return None;
        }
        if self.tail_due {
            self.tail_due = false;
            if let Some(transmit) = self.tail(now) {
                return Some(transmit);
            }
        }
        while let Some((first, index)) = self.parity.pop_first() {
            let Some(fec) = self.config.fec else { break };
            let Some(fragment) = self.window.fragment(first) else {
                continue; // Released meanwhile.
            };
            let (start, len) = wire::block_of(fragment.index, fragment.count, fec.max_block);
            let size = wire::shard_len(fragment.payload.len())
                + wire::PARITY_BODY_HEADER_LEN
                + wire::HEADER_LEN
                + wire::TAG_LEN;
            if let Some(pacer) = &mut self.pacer
                && !pacer.try_take(size, now)
            {
                self.parity.insert((first, index));
                return None;
            }
            let (object_id, object_len, count) =
                (fragment.object_id, fragment.object_len, fragment.count);
            let fragment_size = fragment.payload.len() as u32;
            let payloads: Vec<Bytes> = (first..first + u64::from(len))
                .map_while(|seq| self.window.fragment(seq).map(|f| f.payload.clone()))
                .collect();
            if start != fragment.index || payloads.len() != usize::from(len) {
                continue;
            }
            let proactive = index < self.fec.block_mut(first).proactive;
            let Some(shard) = self.fec.shard(first, index, &payloads) else {
                continue;
            };
            // The first fragment of a block is full unless the block is the object's last
            // fragment alone; then the receiver needs the full size from elsewhere: it is
            // the configured payload.
            let fragment_size = if count > 1 {
                self.config.fragment_payload() as u32
            } else {
                fragment_size
            };
            let body = Body::Parity(ParityBody {
                block_first_seq: first,
                object_id,
                object_len,
                first_index: start,
                fragment_count: count,
                fragment_size,
                block_len: len,
                recovery_index: index,
                shard,
            });
            let shard_bytes = shard.len() as u64;
            let mut sealer = Sealer {
                session_id: self.session_id,
                key: &self.key,
                next_packet_number: &mut self.next_packet_number,
                stats: &mut self.stats,
            };
            let transmit = sealer.seal(PacketType::Parity, &body, Destination::Group)?;
            self.stats.parity_sent += 1;
            if proactive {
                self.stats.parity_proactive += 1;
                self.stats.parity_proactive_bytes += shard_bytes;
            } else {
                self.stats.repair_bytes_sent += shard_bytes;
            }
            return Some(transmit);
        }
        let (seq, destination) = if let Some((seq, destination)) = self.next_repair() {
            (seq, Some(destination))
        } else if self.send_cursor < self.window.end() && self.flight_allows() {
            (self.send_cursor, None)
        } else {
            if self.send_cursor < self.window.end() {
                self.flight_limited_since.get_or_insert(now);
            }
            // The burst is over (or held back by the flight limit): say where it ended, unless
            // a tail went out just now.
            let gap = self.config.tail_interval / 10;
            if self.burst_unannounced
                && self
                    .last_tail_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= gap)
            {
                return self.tail(now);
            }
            return None;
        };
        let size = self.window.fragment(seq).map_or(0, |f| f.payload.len())
            + wire::HEADER_LEN
            + wire::TAG_LEN
            + wire::DATA_BODY_HEADER_LEN;
        if let Some(pacer) = &mut self.pacer
            && !pacer.try_take(size, now)
        {
            return None;
        }
        let packet_type = match destination {
            Some(_) => {
                self.repairs.remove(&seq);
                PacketType::Repair
            }
            None => {
                self.send_cursor += 1;
                self.burst_unannounced = true;
                if let Some(since) = self.flight_limited_since.take() {
                    let held = now.saturating_duration_since(since).as_micros();
                    self.stats.flight_limited_us += u64::try_from(held).unwrap_or(u64::MAX);
                }
                if self.window_was_full {
                    self.announce_writable();
                }
                PacketType::Data
            }
        };
        let window_low = self.window.base();
        let mut sealer = Sealer {
            session_id: self.session_id,
            key: &self.key,
            next_packet_number: &mut self.next_packet_number,
            stats: &mut self.stats,
        };
        let fragment = self.window.fragment(seq)?;
        let payload_len = fragment.payload.len() as u64;
        let last_fragment = fragment.index + 1 == fragment.count;
        let body = Body::Data(DataBody {
            seq,
            window_low,
            object_id: fragment.object_id,
            object_len: fragment.object_len,
            fragment_index: fragment.index,
            fragment_count: fragment.count,
            payload: &fragment.payload,
        });
        let transmit = sealer.seal(
            packet_type,
            &body,
            destination.unwrap_or(Destination::Group),
        )?;
        match destination {
            Some(Destination::Group) => self.stats.repairs_multicast += 1,
            Some(Destination::Unicast(_)) => self.stats.repairs_unicast += 1,
            None => {
                self.stats.data_datagrams_sent += 1;
                self.stats.data_bytes_sent += payload_len;
            }
        }
        if destination.is_some() {
            self.stats.repair_bytes_sent += payload_len;
        } else {
            if last_fragment && let Some(object) = self.window.object_by_seq_mut(seq) {
                object.sent_at = Some(now);
            }
            self.queue_proactive_parity(seq);
        }
        Some(transmit)
    }

    /// The next repair to send: the lowest pending seq's, then the other pending repairs to
    /// the same destination (in seq order, up to [`MAX_REPAIR_RUN`]) before any other's. The
    /// driver sends a run of datagrams to one destination in one system call; repairs in seq
    /// order alternate between the receivers that asked (a unicast repair each) and took a
    /// system call apiece, which at 5% loss to three receivers was the largest cost the loss
    /// added to the sender (docs/BENCH.md, issue 18). A repair chosen but not sent (the
    /// pacer) stays pending.
    fn next_repair(&mut self) -> Option<(u64, Destination)> {
        while let Some(seq) = self.repair_run.pop_front() {
            if let Some(&destination) = self.repairs.get(&seq)
                && Some(destination) == self.repair_run_to
            {
                return Some((seq, destination));
            }
        }
        let (&first, &destination) = self.repairs.first_key_value()?;
        self.repair_run = self
            .repairs
            .iter()
            .skip(1)
            .take(REPAIR_RUN_SCAN)
            .filter(|(_, to)| **to == destination)
            .map(|(seq, _)| *seq)
            .take(MAX_REPAIR_RUN - 1)
            .collect();
        self.repair_run_to = Some(destination);
        Some((first, destination))
    }

    fn tail(&mut self, now: Instant) -> Option<Transmit> {
        let objects = self
            .window
            .recent_objects(self.send_cursor, self.tail_object_capacity())
            .map(|object| TailObject {
                object_id: object.object_id,
                first_seq: object.first_seq,
                fragment_count: object.count,
            })
            .collect();
        let body = Body::Tail(TailBody {
            next_seq: self.send_cursor,
            window_low: self.window.base(),
            timestamp_us: self.micros_since_start(now).max(1),
            // Receivers time their NACK retries by this: a repair comes back after the round
            // trip and the coalescing wait, so announcing the bare RTT would make them NACK
            // again before the first repair could arrive.
            group_rtt_us: u32::try_from((self.group_rtt + self.coalescing()).as_micros())
                .unwrap_or(u32::MAX),
            objects,
        });
        let transmit = self.seal(PacketType::Tail, &body, Destination::Group)?;
        self.stats.tails_sent += 1;
        self.last_tail_at = Some(now);
        self.burst_unannounced = false;
        if let Some(pacer) = &mut self.pacer {
            // Tails are small and keep loss detection alive: they never wait for the pacer,
            // but count against it.
            let _ = pacer.try_take(transmit.payload.len(), now);
        }
        Some(transmit)
    }

    fn seal(
        &mut self,
        packet_type: PacketType,
        body: &Body<'_>,
        destination: Destination,
    ) -> Option<Transmit> {
        let mut sealer = Sealer {
            session_id: self.session_id,
            key: &self.key,
            next_packet_number: &mut self.next_packet_number,
            stats: &mut self.stats,
        };
        sealer.seal(packet_type, body, destination)
    }

    /// Objects a tail can list within the datagram size.
    fn tail_object_capacity(&self) -> usize {
        let fixed = wire::HEADER_LEN + wire::TAG_LEN + wire::TAIL_BODY_HEADER_LEN;
        (self.config.max_datagram_size.saturating_sub(fixed) / wire::TAIL_OBJECT_LEN)
            .min(MAX_TAIL_OBJECTS)
    }

    fn micros_since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadline = self.next_tail_at;
        if let Some(at) = self.flush_nacks_at {
            deadline = deadline.min(at);
        }
        if let Some(since) = self.stalled_members().map(|(_, since)| since).min() {
            deadline = deadline.min(since + self.config.delivery_timeout);
        }
        // New data held back by the flight limit waits for a status report, not a timer.
        let output_waiting = !self.repairs.is_empty()
            || !self.parity.is_empty()
            || (self.send_cursor < self.window.end() && self.flight_allows());
        // The burst's tail is due when nothing else waits (poll_transmit sends it then).
        if self.burst_unannounced
            && !output_waiting
            && let Some(at) = self.last_tail_at
        {
            deadline = deadline.min(at + self.config.tail_interval / 10);
        }
        if output_waiting && let Some(pacer) = &self.pacer {
            deadline = deadline.min(pacer.ready_at());
        }
        Some(deadline)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<SenderEvent> {
        self.events.pop_front()
    }

    /// Counters.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Datagrams and payload bytes held in the window (the retransmit buffer).
    pub fn buffered(&self) -> (u64, u64) {
        (self.window.datagrams(), self.window.bytes())
    }

    /// Members currently given up on.
    pub fn detached_receivers(&self) -> impl Iterator<Item = u32> + '_ {
        self.members
            .iter()
            .filter(|(_, member)| member.detached)
            .map(|(id, _)| *id)
    }
}

/// Seals with the current key, borrowing only what sealing needs (so that the fragment being
/// sent can stay borrowed from the window).
struct Sealer<'a> {
    session_id: u64,
    key: &'a PacketKey,
    next_packet_number: &'a mut u64,
    stats: &'a mut SenderStats,
}

impl Sealer<'_> {
    fn seal(
        &mut self,
        packet_type: PacketType,
        body: &Body<'_>,
        destination: Destination,
    ) -> Option<Transmit> {
        let header = Header {
            packet_type,
            session_id: self.session_id,
            key_id: self.key.key_id(),
            packet_number: *self.next_packet_number,
        };
        *self.next_packet_number += 1;
        let payload = self.key.seal(&header, body)?;
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += payload.len() as u64;
        Some(Transmit {
            destination,
            payload,
        })
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("session_id", &self.session_id)
            .field("epoch", &self.key.key_id())
            .field("window", &(self.window.base()..self.window.end()))
            .field("send_cursor", &self.send_cursor)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}
