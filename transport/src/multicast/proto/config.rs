//! Settings of the [`Sender`](super::Sender) and [`Receiver`](super::Receiver).

use std::time::Duration;

use super::error::ConfigError;
use super::wire;

/// A token bucket's rate: `bytes_per_second` sustained, `burst` bytes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate in bytes per second.
    pub bytes_per_second: u64,
    /// Bytes that may leave at once after an idle period.
    pub burst: u64,
}

impl RateLimit {
    /// The pace of a sender on a link of `bits_per_second`: that rate, with a burst of one
    /// GSO batch (64 KiB), so that pacing never splits a batch the driver sends in one call.
    ///
    /// ```
    /// use replicast_transport::multicast::proto::RateLimit;
    ///
    /// let limit = RateLimit::link(100_000_000);
    /// assert_eq!(limit.bytes_per_second, 12_500_000);
    /// assert_eq!(limit.burst, 64 * 1024);
    /// ```
    pub fn link(bits_per_second: u64) -> Self {
        Self {
            bytes_per_second: bits_per_second / 8,
            burst: 64 * 1024,
        }
    }
}

/// Reed-Solomon parity (reed-solomon-simd): each object is cut into blocks of at most
/// `max_block` datagrams (near-equal lengths, so the block follows the object's size: a small
/// object is one block), and any `k` of a `k`-datagram block's data and recovery shards
/// rebuild it.
///
/// - Proactive: `proactive` recovery shards per datagram of a block (rounded to the nearest
///   whole shard per block) are sent right after the block, before any loss is known, so a
///   receiver that lost up to that many of the block rebuilds them with no round trip.
///   [`SenderConfig::adaptive_parity`] adds shards as the receivers' reported loss calls for.
/// - On demand (NORM's approach): when several receivers NACK datagrams of one block, the
///   sender multicasts as many *new* recovery shards as the neediest of them lacks; each
///   shard repairs a different loss at each receiver. A loss only one receiver asks for is
///   repaired by a plain unicast repair. Only a paced sender ([`SenderConfig::rate_limit`])
///   does this: a receiver's decode of a block (about 0.1 ms, whatever its length) costs
///   more CPU than reading the whole block again, so parity saves bytes, never CPU, and an
///   unpaced sender is bounded by its receivers' CPU; it repairs by retransmission.
///
/// # Example
///
/// ```
/// use replicast_transport::multicast::proto::{FecConfig, SenderConfig};
///
/// let config = SenderConfig {
///     fec: Some(FecConfig { max_block: 64, proactive: 0.03 }),
///     ..SenderConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FecConfig {
    /// Source datagrams per block at most (1..=1024).
    pub max_block: u16,
    /// Proactive recovery shards per source datagram (0.0..=1.0): 0.03 sends 2 with a block
    /// of 64. Zero: none beyond what [`SenderConfig::adaptive_parity`] sizes.
    pub proactive: f64,
}

impl Default for FecConfig {
    /// Blocks of up to 64 datagrams, no fixed proactive share.
    fn default() -> Self {
        Self {
            max_block: 64,
            proactive: 0.0,
        }
    }
}

impl FecConfig {
    /// Proactive recovery shards for a block of `block_len` datagrams.
    pub fn proactive_shards(&self, block_len: u16) -> u16 {
        let shards = (f64::from(block_len) * self.proactive.clamp(0.0, 1.0)).round();
        (shards as u16).min(wire::recovery_count(block_len))
    }
}

/// How a [`Sender`](super::Sender) splits, paces, buffers and repairs.
#[derive(Debug, Clone, PartialEq)]
pub struct SenderConfig {
    /// Largest UDP payload the sender emits, header and authentication tag included.
    /// 1472 suits a 1500-byte MTU over IPv4 (1452 for IPv6).
    pub max_datagram_size: usize,
    /// Largest object [`Sender::send_object`](super::Sender::send_object) accepts.
    pub max_object_size: u64,
    /// Datagrams the transmit window (and so the retransmit buffer) holds at most.
    pub window_datagrams: u64,
    /// Payload bytes the transmit window (and so the retransmit buffer) holds at most.
    pub window_bytes: u64,
    /// Bytes of datagrams in flight at most: sent and not yet read (or lost) by the slowest
    /// attached receiver, as its status reports tell (`read_end`). This bounds what queues
    /// in receivers' socket buffers; the window, larger, also holds what receivers read
    /// but cannot acknowledge while a loss before it awaits repair, so that a loss does not
    /// stop new data for its repair's round trip. Objects are also refused while a quarter of
    /// a flight's worth of data waits in the window unsent (they wait with the caller).
    pub flight_bytes: u64,
    /// Pacing of everything the sender emits; `None` sends as fast as the caller drains.
    pub rate_limit: Option<RateLimit>,
    /// Longest wait gathering NACKs before one repair (or parity) answers them all; the wait
    /// is a quarter of the group RTT within 100 us and this.
    pub nack_coalescing: Duration,
    /// Interval of tail announcements while data is unacknowledged.
    pub tail_interval: Duration,
    /// Interval of tail announcements when everything is acknowledged (keeps the RTT fresh).
    pub idle_tail_interval: Duration,
    /// Repair bytes one receiver's NACKs may cause, so that a flood of NACKs cannot turn the
    /// sender into an amplifier.
    pub repair_rate_per_receiver: RateLimit,
    /// A receiver that holds back the oldest object and has made no progress for this long
    /// (counted from that object's send time or its last acknowledgement, whichever is later)
    /// is given up on: its outstanding objects are reported
    /// [`Abandoned`](super::SenderEvent::Abandoned) and it no longer holds the window back.
    pub delivery_timeout: Duration,
    /// Round-trip time assumed before any receiver has reported one.
    pub initial_rtt: Duration,
    /// Lower bound of the group round-trip time announced to receivers.
    pub min_rtt: Duration,
    /// Reed-Solomon parity (proactive and on demand); `None` repairs by retransmission only.
    /// On by default, on demand, and proactive as `adaptive_parity` sizes it: it costs
    /// nothing while no receiver loses. Both the parity on demand and `adaptive_parity` come
    /// from a paced sender only (`rate_limit`); unpaced, only the fixed `proactive` share is
    /// sent and losses are repaired by retransmission ([`FecConfig`] says why).
    pub fec: Option<FecConfig>,
    /// Proactive parity that follows the loss receivers report (their status carries the
    /// datagrams they found missing): each block gets the fewest recovery shards that leave
    /// at most this many receivers expected to lack a datagram of it after the parity (more
    /// losses than shards), so that on a lossy path most objects arrive whole without a
    /// repair round trip. The fixed share `fec.proactive` is the floor; at most a quarter of
    /// a block is sent this way. `None` (or no `fec`): the fixed share only.
    ///
    /// Only a paced sender (`rate_limit` set) sends it: its path is bounded by the rate, and
    /// a few percent of parity cost less than the round trips they save. An unpaced sender
    /// is bounded by its receivers' CPU, which the parity's coding takes from the data
    /// (measured on loopback, three receivers, 256 KiB objects: 0.37-0.40x of the loss-free
    /// goodput at 1% loss with it, 0.88-0.97x without).
    pub adaptive_parity: Option<f64>,
    /// Of [`adaptive_parity`](Self::adaptive_parity): receivers expected to wait for a repair
    /// round at an object's end, at most, per object. A block that ends within one group
    /// RTT's worth of sending before its object's end is repaired only after the object's
    /// last datagram, so a receiver short of it gets the object a round trip (and the
    /// NACK's wait) late; an earlier block's round overlaps the rest of the object and costs
    /// bytes, not time. The object's blocks there share this target (each gets this over
    /// their count, never more than `adaptive_parity`). Since a commit waits for its object,
    /// the target is what a commit's p99 sees: at 0.01, one object in a hundred was expected
    /// to wait for a round, exactly the p99 of a hundred commits; 0.002 (the default) leaves
    /// one in five hundred. At 1% loss a 64 KiB object (one block of 46 datagrams) then gets
    /// 4 shards to four or eight receivers, where the per-block 0.05 gives 2 and 3; measured
    /// at 20 ms and 100 Mbit/s, the p99 of 64 KiB commits fell from 1.28-1.71x of the bound to
    /// 1.17-1.52x for 1.4-1.8% more bytes on the writer's link (docs/BENCH.md).
    pub tail_parity: f64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            max_datagram_size: 1472,
            max_object_size: 16 << 20,
            window_datagrams: 32 * 1024,
            window_bytes: 32 << 20,
            flight_bytes: 32 << 20,
            rate_limit: None,
            nack_coalescing: Duration::from_millis(2),
            tail_interval: Duration::from_millis(10),
            idle_tail_interval: Duration::from_millis(500),
            repair_rate_per_receiver: RateLimit {
                bytes_per_second: 64 << 20,
                burst: 4 << 20,
            },
            delivery_timeout: Duration::from_secs(10),
            initial_rtt: Duration::from_millis(10),
            min_rtt: Duration::from_micros(500),
            fec: Some(FecConfig::default()),
            adaptive_parity: Some(0.05),
            tail_parity: 0.002,
        }
    }
}

impl SenderConfig {
    /// Payload bytes one data datagram carries: even, so that a parity datagram (whose
    /// shard is the payload rounded up to even, behind a header as long as a data body's)
    /// fits the same size.
    pub fn fragment_payload(&self) -> usize {
        self.max_datagram_size
            .saturating_sub(wire::HEADER_LEN + wire::TAG_LEN + wire::DATA_BODY_HEADER_LEN)
            & !1
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = wire::HEADER_LEN + wire::TAG_LEN + wire::MIN_CONTROL_BODY + 1;
        let max = 65_507;
        if !(min..=max).contains(&self.max_datagram_size) {
            return Err(ConfigError::DatagramSize {
                size: self.max_datagram_size,
                min,
                max,
            });
        }
        if self.flight_bytes < self.max_datagram_size as u64 {
            return Err(ConfigError::FlightTooSmall {
                flight_bytes: self.flight_bytes,
                max_datagram_size: self.max_datagram_size,
            });
        }
        if self.max_object_size > self.window_bytes {
            return Err(ConfigError::ObjectLargerThanWindow {
                max_object_size: self.max_object_size,
                window_bytes: self.window_bytes,
            });
        }
        let needed = self
            .max_object_size
            .div_ceil(self.fragment_payload() as u64)
            .max(1);
        if needed > self.window_datagrams {
            return Err(ConfigError::WindowTooSmall {
                needed,
                window_datagrams: self.window_datagrams,
            });
        }
        for (name, rate) in [
            ("rate_limit", self.rate_limit),
            (
                "repair_rate_per_receiver",
                Some(self.repair_rate_per_receiver),
            ),
        ] {
            if let Some(rate) = rate
                && (rate.bytes_per_second == 0 || rate.burst == 0)
            {
                return Err(ConfigError::ZeroRate { name });
            }
        }
        if let Some(target) = self.adaptive_parity
            && !(target.is_finite() && target > 0.0)
        {
            return Err(ConfigError::AdaptiveParity { target });
        }
        if !(self.tail_parity.is_finite() && self.tail_parity > 0.0) {
            return Err(ConfigError::TailParity {
                target: self.tail_parity,
            });
        }
        if let Some(fec) = self.fec
            && (fec.max_block == 0
                || fec.max_block > wire::MAX_BLOCK_LEN
                || !(0.0..=1.0).contains(&fec.proactive))
        {
            return Err(ConfigError::Fec {
                max_block: fec.max_block,
                proactive: fec.proactive,
            });
        }
        Ok(())
    }
}

/// How a [`Receiver`](super::Receiver) asks for repairs, gives up, and bounds its memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverConfig {
    /// Shortest wait between detecting a gap and NACKing it.
    pub nack_backoff_min: Duration,
    /// Longest wait between detecting a gap and NACKing it (the random backoff, scaled by the
    /// group RTT, is capped here).
    pub nack_backoff_max: Duration,
    /// Backoff is uniform in `[min, min + factor * group RTT]` (RFC 5401 scales it the same
    /// way). Receivers do not hear each other's NACKs, so the spread does not suppress
    /// duplicates here; it lets the sender gather the NACKs of several receivers (it waits a
    /// quarter of the group RTT) into one repair or parity, and a quarter keeps a loss's cost
    /// near one round trip.
    pub nack_backoff_rtt_factor: f64,
    /// NACKs per missing datagram at the announced RTT's pace. Running out of them does not
    /// give the datagram up: a repair they asked for may still be on its way (behind a deep
    /// socket queue, later than the announced RTT says); eight more NACKs spread over
    /// `repair_deadline` follow, and the deadline gives it up.
    pub max_nack_retries: u32,
    /// A datagram not repaired this long after its loss was detected makes its object
    /// [`Lost`](super::ReceiverEvent::Lost).
    pub repair_deadline: Duration,
    /// Bytes of incomplete objects held at most, each counted whole from its first fragment
    /// (its buffer is reserved then), with the recovery shards kept; fragments beyond are
    /// dropped (and NACKed again later).
    pub max_reassembly_bytes: usize,
    /// Sequence numbers ahead of the contiguous position that are tracked at most; datagrams
    /// further ahead are dropped.
    pub max_tracked_datagrams: u64,
    /// Interval of status reports (contiguous position, lost objects, RTT echo) to a sender
    /// while there is news; ten times this when idle.
    pub status_interval: Duration,
    /// Round-trip time assumed until the sender announces one.
    pub initial_rtt: Duration,
    /// Seed of the backoff randomness (mixed with the receiver id).
    pub random_seed: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            nack_backoff_min: Duration::from_micros(200),
            nack_backoff_max: Duration::from_millis(200),
            nack_backoff_rtt_factor: 0.25,
            max_nack_retries: 30,
            repair_deadline: Duration::from_secs(5),
            max_reassembly_bytes: 64 << 20,
            max_tracked_datagrams: 64 * 1024,
            status_interval: Duration::from_millis(1),
            initial_rtt: Duration::from_millis(10),
            random_seed: 0x5eed,
        }
    }
}
