//! Counters of everything the protocol core does and drops.

use super::DelayHistogram;

/// Datagrams a [`Sender`](super::Sender) dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderDrops {
    /// Too short for a header and tag, or a body shorter than its fields.
    pub truncated: u64,
    /// Unknown version or type, or fields that contradict each other.
    pub malformed: u64,
    /// Addressed to another session.
    pub wrong_session: u64,
    /// From a receiver id that is not a member.
    pub unknown_receiver: u64,
    /// Authentication failed (wrong key or altered bytes).
    pub wrong_key: u64,
    /// A packet number already seen, or too old to tell.
    pub replayed: u64,
    /// A type a sender does not accept (data sent to the sender).
    pub unexpected_type: u64,
}

/// What a [`Sender`](super::Sender) has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Datagrams handed out by `poll_transmit`, of every type.
    pub datagrams_sent: u64,
    /// Bytes of those datagrams.
    pub bytes_sent: u64,
    /// Original data datagrams.
    pub data_datagrams_sent: u64,
    /// Payload bytes of original data datagrams.
    pub data_bytes_sent: u64,
    /// Repairs sent to the group.
    pub repairs_multicast: u64,
    /// Repairs sent to one receiver.
    pub repairs_unicast: u64,
    /// Payload bytes of repairs and shard bytes of parity sent on demand.
    pub repair_bytes_sent: u64,
    /// Tail announcements.
    pub tails_sent: u64,
    /// Parity datagrams, proactive and on demand (on demand: sent instead of several
    /// repairs).
    pub parity_sent: u64,
    /// Of which proactive (sent with the data, before any NACK).
    pub parity_proactive: u64,
    /// Shard bytes of the proactive parity (the cost of FEC when nothing is lost).
    pub parity_proactive_bytes: u64,
    /// Authenticated NACK datagrams.
    pub nacks_received: u64,
    /// Sequence numbers those NACKs asked for.
    pub nacked_datagrams: u64,
    /// Requests answered by a repair already sent within the coalescing window.
    pub repairs_coalesced: u64,
    /// Requests refused by the per-receiver repair rate limit.
    pub repairs_rate_limited: u64,
    /// Requests for datagrams no longer (or never) in the retransmit buffer.
    pub repairs_unavailable: u64,
    /// Authenticated status reports.
    pub status_received: u64,
    /// Objects accepted by `send_object`.
    pub objects_sent: u64,
    /// Delivered events (per object and receiver).
    pub deliveries: u64,
    /// Abandoned events (per object and receiver).
    pub abandonments: u64,
    /// Times a receiver was given up on for falling behind.
    pub receivers_detached: u64,
    /// Microseconds objects waited for room in the window: from a
    /// [`WindowFull`](super::SendError::WindowFull) refusal to the next accepted object.
    pub window_full_us: u64,
    /// Of `window_full_us`, the waits that began with the window itself full (its datagrams
    /// or bytes, which await acknowledgement: behind a loss, until its repair arrives) rather
    /// than with a quarter flight of unsent data queued.
    pub window_held_us: u64,
    /// Microseconds new data waited for the flight limit (datagrams sent and not yet read by
    /// the slowest receiver), from the first datagram held back to the next one sent.
    pub flight_limited_us: u64,
    /// Dropped datagrams by reason.
    pub dropped: SenderDrops,
}

/// Datagrams a [`Receiver`](super::Receiver) dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverDrops {
    /// Too short for a header and tag, or a body shorter than its fields.
    pub truncated: u64,
    /// Unknown version or type, or fields that contradict each other.
    pub malformed: u64,
    /// From a session this receiver has no key for.
    pub unknown_session: u64,
    /// Authentication failed (wrong key or altered bytes).
    pub wrong_key: u64,
    /// A packet number already seen, or too old to tell.
    pub replayed: u64,
    /// Sealed under an epoch that has been retired.
    pub retired_epoch: u64,
    /// Under an epoch newer than any key installed.
    pub unknown_epoch: u64,
    /// A fragment that did not fit the reassembly memory bound.
    pub over_memory: u64,
    /// Further ahead of the contiguous position than is tracked.
    pub beyond_window: u64,
    /// A type a receiver does not accept (control sent to a receiver).
    pub unexpected_type: u64,
}

/// What a [`Receiver`](super::Receiver) has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Authenticated datagrams of any type.
    pub datagrams_accepted: u64,
    /// Fragments stored (new data).
    pub fragments_received: u64,
    /// Fragments that arrived by repair and were new.
    pub repairs_received: u64,
    /// Fragments already held or already resolved.
    pub duplicates: u64,
    /// Tail announcements.
    pub tails_received: u64,
    /// Parity datagrams.
    pub parity_received: u64,
    /// Fragments rebuilt from parity.
    pub parity_recovered: u64,
    /// Objects delivered whole.
    pub objects_delivered: u64,
    /// Bytes of those objects.
    pub bytes_delivered: u64,
    /// Objects reported lost.
    pub objects_lost: u64,
    /// Missing datagrams given up on without knowing their object.
    pub unidentified_losses: u64,
    /// NACK datagrams sent.
    pub nacks_sent: u64,
    /// Sequence numbers those NACKs asked for (retries included).
    pub nacked_datagrams: u64,
    /// Missing datagrams repaired before this receiver NACKed them (another receiver's NACK
    /// caused the repair).
    pub nacks_suppressed: u64,
    /// Status reports sent.
    pub status_sent: u64,
    /// Missing datagrams that arrived later (by repair, parity or late delivery).
    pub gaps_filled: u64,
    /// Microseconds from detecting those gaps to filling them, summed (divide by
    /// `gaps_filled` for the mean repair delay).
    pub gap_fill_us: u64,
    /// The distribution of those delays (from detecting each gap to filling it): its
    /// quantiles show the tail a loss costs, which the mean hides.
    pub repair_delays: DelayHistogram,
    /// Of `gaps_filled`, those that arrived after their `max_nack_retries` NACKs and the
    /// wait after the last of them, during the late retries: a receiver that gave a gap up
    /// when those retries ran out (as it did before the late retries) would have lost
    /// their objects.
    pub gaps_filled_late: u64,
    /// Dropped datagrams by reason.
    pub dropped: ReceiverDrops,
}
