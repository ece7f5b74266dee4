//! The datagram format: a clear header, then an AEAD-sealed body.
//!
//! Every datagram, data and control alike:
//!
//! ```text
//! offset size  field (integers big-endian)
//!  0      1    version (4)
//!  1      1    packet type (below)
//!  2      8    session id of the sender session
//! 10      4    key id: the group key epoch (sender -> group) or the receiver id
//!              (receiver -> sender, sealed with that receiver's own key)
//! 14      8    packet number: never repeats under one key; a retransmission gets a new one
//! 22      ..   body, AES-256-GCM sealed, the 22 header bytes as associated data
//! end-16 16    authentication tag
//! ```
//!
//! The nonce is the key id followed by the packet number (12 bytes). The AEAD key is never a
//! secret as handed over: it is HKDF-SHA256 of the secret with the salt
//! `replicast multicast v1` and the info `"group" | "receiver"`, session id, key id (see
//! `crypto`). Bodies by type:
//!
//! ```text
//! 1 Data / 2 Repair (sender -> group, or -> one receiver for a unicast repair)
//!     seq u64, window_low u64, object_id u64, object_len u64,
//!     fragment_index u32, fragment_count u32, payload (the rest)
//! 3 Tail announcement (sender -> group)
//!     next_seq u64      every seq below it has been sent
//!     window_low u64    seqs below it are no longer kept by the sender
//!     timestamp_us u64  sender clock, echoed in Status for the RTT
//!     group_rtt_us u32  the group RTT plus the sender's NACK coalescing wait: how long a
//!                       repair takes to come back, which receivers scale NACK timers by
//!     count u16, then count x (object_id u64, first_seq u64, fragment_count u32):
//!                       the most recent objects, so a receiver learns of an object whose
//!                       datagrams were all lost
//! 4 Parity (sender -> group): one Reed-Solomon recovery shard of a block
//!     block_first_seq u64  the block's first seq; its seqs are block_first_seq + 0..block_len
//!     object_id u64, object_len u64, first_index u32 (fragment index of block_first_seq),
//!     fragment_count u32, fragment_size u32 (payload bytes of every fragment of the object
//!     but its last): enough to rebuild any of the block's data bodies
//!     block_len u16     source datagrams in the block (1..=1024)
//!     recovery_index u16  which recovery shard (below max(4, ceil(block_len / 2)), the
//!                       count the code is computed for): indexes 0.. are sent
//!                       proactively, the following ones on demand, each index once
//!     shard (the rest): recovery shard of the block's payloads, each zero-padded to the
//!                       shard's length (even: the block's largest payload rounded up)
//! 5 Nack (receiver -> sender, unicast)
//!     count u16, then count x (first_seq u64, length u32): missing sequence ranges
//! 6 Status (receiver -> sender, unicast)
//!     cumulative u64    every seq below it is received or given up
//!     read_end u64      one past the highest seq received or announced by a tail: what
//!                       the sender sent below it has left the network (read or lost)
//!     missed u64        seqs found missing so far (whether repaired, rebuilt or given up
//!                       later): with read_end, the receiver's loss rate, which the sender
//!                       sizes proactive parity by
//!     echo_timestamp_us u64, echo_delay_us u32 (0, 0 before any tail)
//!     count u16, then count x object_id u64: objects given up as lost
//! ```
//!
//! Blocks never span objects: an object of `n` fragments is cut into `ceil(n / max_block)`
//! blocks of near-equal length (see [`block_of`]), so a small object is one block and the
//! parity of a block always describes one object. Receivers take the layout from each parity
//! datagram; nothing else announces it.
//!
//! Decoding is total: any byte string yields a packet or a [`DecodeError`], never a panic.

use std::fmt;

/// Protocol version carried in every datagram.
pub const VERSION: u8 = 4;
/// Bytes of the clear header.
pub const HEADER_LEN: usize = 22;
/// Bytes of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes of a data body before its payload.
pub const DATA_BODY_HEADER_LEN: usize = 40;
/// Bytes of a parity body before its shard (as many as a data body's, so a parity datagram
/// of a full block is exactly as large as a full data datagram).
pub const PARITY_BODY_HEADER_LEN: usize = 40;
/// Source datagrams in one parity block at most.
pub const MAX_BLOCK_LEN: u16 = 1024;
/// Recovery shards of a block of `block_len` datagrams: half its length, at least 4. Sender
/// and receivers use the same count, as the erasure code's shards depend on it; repairs
/// beyond it are plain retransmissions.
pub fn recovery_count(block_len: u16) -> u16 {
    block_len.div_ceil(2).max(4)
}
/// Largest fragment payload any datagram can carry.
pub const MAX_FRAGMENT_PAYLOAD: usize = 65_507 - HEADER_LEN - TAG_LEN - DATA_BODY_HEADER_LEN;
/// Smallest body any datagram size must accommodate (a tail with no objects).
pub const MIN_CONTROL_BODY: usize = DATA_BODY_HEADER_LEN + 1;
/// Bytes of a tail body before its objects.
pub const TAIL_BODY_HEADER_LEN: usize = 30;
/// Bytes of one object in a tail body.
pub const TAIL_OBJECT_LEN: usize = 20;
/// Objects listed in one tail announcement at most.
pub const MAX_TAIL_OBJECTS: usize = 64;
/// Ranges in one NACK at most.
pub const MAX_NACK_RANGES: usize = 64;
/// Lost object ids in one status report at most.
pub const MAX_STATUS_LOST: usize = 64;

/// The type byte of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Original transmission of an object fragment.
    Data = 1,
    /// Retransmission of an object fragment.
    Repair = 2,
    /// Tail announcement.
    Tail = 3,
    /// Parity over a block of data datagrams.
    Parity = 4,
    /// Negative acknowledgement.
    Nack = 5,
    /// Receiver status.
    Status = 6,
}

impl PacketType {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Data,
            2 => Self::Repair,
            3 => Self::Tail,
            4 => Self::Parity,
            5 => Self::Nack,
            6 => Self::Status,
            _ => return None,
        })
    }

    /// Whether receivers send this type (and seal it with their own key).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Nack | Self::Status)
    }
}

/// The clear, authenticated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub packet_type: PacketType,
    /// Sender session.
    pub session_id: u64,
    /// Group key epoch, or receiver id for control packets.
    pub key_id: u32,
    /// Packet number under that key.
    pub packet_number: u64,
}

impl Header {
    /// Appends the header's 22 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.packet_type as u8);
        out.extend_from_slice(&self.session_id.to_be_bytes());
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out.extend_from_slice(&self.packet_number.to_be_bytes());
    }

    /// Reads the header of `datagram`; the rest is the sealed body.
    pub fn decode(datagram: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(DecodeError::Truncated {
                what: "datagram",
                needed: HEADER_LEN + TAG_LEN,
                got: datagram.len(),
            });
        }
        let mut reader = Reader::new(datagram);
        let version = reader.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let type_byte = reader.u8("packet type")?;
        let packet_type = PacketType::from_byte(type_byte).ok_or(DecodeError::Type(type_byte))?;
        let header = Header {
            packet_type,
            session_id: reader.u64("session id")?,
            key_id: reader.u32("key id")?,
            packet_number: reader.u64("packet number")?,
        };
        Ok((header, reader.rest()))
    }
}

/// A fragment of an object (Data or Repair body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataBody<'a> {
    /// Sequence number in the session.
    pub seq: u64,
    /// The sender's window low at sending.
    pub window_low: u64,
    /// The object's id.
    pub object_id: u64,
    /// The object's whole length in bytes.
    pub object_len: u64,
    /// This fragment's index in the object.
    pub fragment_index: u32,
    /// Fragments of the object.
    pub fragment_count: u32,
    /// The fragment's bytes.
    pub payload: &'a [u8],
}

/// One object listed in a tail announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailObject {
    /// The object's id.
    pub object_id: u64,
    /// Sequence number of its first fragment.
    pub first_seq: u64,
    /// Its number of fragments.
    pub fragment_count: u32,
}

/// A tail announcement body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailBody {
    /// Every sequence number below has been sent.
    pub next_seq: u64,
    /// Sequence numbers below are no longer kept by the sender.
    pub window_low: u64,
    /// Sender clock in microseconds, echoed for the RTT.
    pub timestamp_us: u64,
    /// The group RTT in microseconds.
    pub group_rtt_us: u32,
    /// Most recent objects.
    pub objects: Vec<TailObject>,
}

/// A parity body: one Reed-Solomon recovery shard of a block of one object's datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityBody<'a> {
    /// First sequence number of the block.
    pub block_first_seq: u64,
    /// The object the block belongs to.
    pub object_id: u64,
    /// The object's whole length in bytes.
    pub object_len: u64,
    /// Fragment index of the block's first datagram.
    pub first_index: u32,
    /// Fragments of the object.
    pub fragment_count: u32,
    /// Payload bytes of each of the object's fragments but the last.
    pub fragment_size: u32,
    /// Source datagrams in the block.
    pub block_len: u16,
    /// Which recovery shard this is.
    pub recovery_index: u16,
    /// The recovery shard.
    pub shard: &'a [u8],
}

impl ParityBody<'_> {
    /// The sequence numbers this parity covers.
    pub fn covered(&self) -> std::ops::Range<u64> {
        self.block_first_seq..self.block_first_seq + u64::from(self.block_len)
    }

    /// Payload bytes of the object's fragment `index` (see [`fragment_len`]).
    pub fn payload_len(&self, index: u32) -> Option<usize> {
        fragment_len(
            self.object_len,
            self.fragment_count,
            self.fragment_size,
            index,
        )
    }
}

/// Payload bytes of fragment `index` of an object of `object_len` bytes in `count` fragments
/// of `size` bytes but the last, or `None` when these contradict each other.
pub fn fragment_len(object_len: u64, count: u32, size: u32, index: u32) -> Option<usize> {
    let size = u64::from(size);
    let before_last = u64::from(count.checked_sub(1)?).checked_mul(size)?;
    let last = object_len.checked_sub(before_last)?;
    if last > size && count > 1 {
        return None;
    }
    let len = if index + 1 == count {
        last
    } else if index < count {
        size
    } else {
        return None;
    };
    usize::try_from(len).ok()
}

/// The block holding fragment `index` of an object of `count` fragments, with blocks of at
/// most `max_block` datagrams: the object is cut into `ceil(count / max_block)` blocks whose
/// lengths differ by one at most, so the block size follows the object's size. Returns the
/// fragment index of the block's start and the block's length.
///
/// ```
/// use replicast_transport::multicast::proto::wire::block_of;
/// // 130 fragments, blocks of at most 64: three blocks of 44, 43 and 43.
/// assert_eq!(block_of(0, 130, 64), (0, 44));
/// assert_eq!(block_of(44, 130, 64), (44, 43));
/// assert_eq!(block_of(129, 130, 64), (87, 43));
/// // A small object is one block.
/// assert_eq!(block_of(2, 5, 64), (0, 5));
/// ```
pub fn block_of(index: u32, count: u32, max_block: u16) -> (u32, u16) {
    let max_block = u32::from(max_block.max(1));
    let count = count.max(1);
    let index = index.min(count - 1);
    let blocks = count.div_ceil(max_block);
    let base = count / blocks;
    let extra = count % blocks;
    // The first `extra` blocks have one datagram more.
    let long_end = extra * (base + 1);
    let (start, len) = if index < long_end {
        (index / (base + 1) * (base + 1), base + 1)
    } else {
        (long_end + (index - long_end) / base * base, base)
    };
    (start, u16::try_from(len).unwrap_or(u16::MAX))
}

/// Shard bytes of a block whose largest payload is `largest`: even, as the erasure code
/// needs, and never zero.
pub fn shard_len(largest: usize) -> usize {
    largest.max(1).next_multiple_of(2)
}

/// A range of missing sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    /// First missing sequence number.
    pub first: u64,
    /// How many follow it, itself included.
    pub len: u32,
}

/// A receiver's status report body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusBody {
    /// Every sequence number below is received or given up.
    pub cumulative: u64,
    /// One past the highest sequence number received or announced by a tail: what the
    /// sender sent below it is no longer in flight (it was read, or lost), whatever
    /// repairs it still waits for. The sender bounds its datagrams in flight by it.
    pub read_end: u64,
    /// Sequence numbers this receiver found missing so far (repaired, rebuilt from parity or
    /// given up later alike): over `read_end`, its loss rate.
    pub missed: u64,
    /// The last tail's timestamp (0 before any).
    pub echo_timestamp_us: u64,
    /// Microseconds between receiving that tail and sending this.
    pub echo_delay_us: u32,
    /// Objects given up as lost and not yet released by the sender.
    pub lost: Vec<u64>,
}

/// A decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// Data or repair.
    Data(DataBody<'a>),
    /// Tail announcement.
    Tail(TailBody),
    /// Parity.
    Parity(ParityBody<'a>),
    /// Negative acknowledgement.
    Nack(Vec<SeqRange>),
    /// Status report.
    Status(StatusBody),
}

impl Body<'_> {
    /// Appends the plaintext encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Body::Data(data) => {
                out.extend_from_slice(&data.seq.to_be_bytes());
                out.extend_from_slice(&data.window_low.to_be_bytes());
                out.extend_from_slice(&data.object_id.to_be_bytes());
                out.extend_from_slice(&data.object_len.to_be_bytes());
                out.extend_from_slice(&data.fragment_index.to_be_bytes());
                out.extend_from_slice(&data.fragment_count.to_be_bytes());
                out.extend_from_slice(data.payload);
            }
            Body::Tail(tail) => {
                out.extend_from_slice(&tail.next_seq.to_be_bytes());
                out.extend_from_slice(&tail.window_low.to_be_bytes());
                out.extend_from_slice(&tail.timestamp_us.to_be_bytes());
                out.extend_from_slice(&tail.group_rtt_us.to_be_bytes());
                let objects = &tail.objects[..tail.objects.len().min(MAX_TAIL_OBJECTS)];
                out.extend_from_slice(&(objects.len() as u16).to_be_bytes());
                for object in objects {
                    out.extend_from_slice(&object.object_id.to_be_bytes());
                    out.extend_from_slice(&object.first_seq.to_be_bytes());
                    out.extend_from_slice(&object.fragment_count.to_be_bytes());
                }
            }
            Body::Parity(parity) => {
                out.extend_from_slice(&parity.block_first_seq.to_be_bytes());
                out.extend_from_slice(&parity.object_id.to_be_bytes());
                out.extend_from_slice(&parity.object_len.to_be_bytes());
                out.extend_from_slice(&parity.first_index.to_be_bytes());
                out.extend_from_slice(&parity.fragment_count.to_be_bytes());
                out.extend_from_slice(&parity.fragment_size.to_be_bytes());
                out.extend_from_slice(&parity.block_len.to_be_bytes());
                out.extend_from_slice(&parity.recovery_index.to_be_bytes());
                out.extend_from_slice(parity.shard);
            }
            Body::Nack(ranges) => {
                let ranges = &ranges[..ranges.len().min(MAX_NACK_RANGES)];
                out.extend_from_slice(&(ranges.len() as u16).to_be_bytes());
                for range in ranges {
                    out.extend_from_slice(&range.first.to_be_bytes());
                    out.extend_from_slice(&range.len.to_be_bytes());
                }
            }
            Body::Status(status) => {
                out.extend_from_slice(&status.cumulative.to_be_bytes());
                out.extend_from_slice(&status.read_end.to_be_bytes());
                out.extend_from_slice(&status.missed.to_be_bytes());
                out.extend_from_slice(&status.echo_timestamp_us.to_be_bytes());
                out.extend_from_slice(&status.echo_delay_us.to_be_bytes());
                let lost = &status.lost[..status.lost.len().min(MAX_STATUS_LOST)];
                out.extend_from_slice(&(lost.len() as u16).to_be_bytes());
                for object_id in lost {
                    out.extend_from_slice(&object_id.to_be_bytes());
                }
            }
        }
    }
}

/// Decodes the plaintext `body` of a packet of `packet_type`.
pub fn decode_body(packet_type: PacketType, body: &[u8]) -> Result<Body<'_>, DecodeError> {
    let mut reader = Reader::new(body);
    let decoded = match packet_type {
        PacketType::Data | PacketType::Repair => {
            let data = DataBody {
                seq: reader.u64("seq")?,
                window_low: reader.u64("window low")?,
                object_id: reader.u64("object id")?,
                object_len: reader.u64("object length")?,
                fragment_index: reader.u32("fragment index")?,
                fragment_count: reader.u32("fragment count")?,
                payload: reader.rest(),
            };
            if data.fragment_count == 0 || data.fragment_index >= data.fragment_count {
                return Err(DecodeError::Invalid(
                    "fragment index outside fragment count",
                ));
            }
            if data.fragment_index as u64 > data.seq {
                return Err(DecodeError::Invalid(
                    "fragment index exceeds sequence number",
                ));
            }
            return Ok(Body::Data(data));
        }
        PacketType::Tail => {
            let next_seq = reader.u64("next seq")?;
            let window_low = reader.u64("window low")?;
            let timestamp_us = reader.u64("timestamp")?;
            let group_rtt_us = reader.u32("group rtt")?;
            let count = reader.u16("object count")? as usize;
            if count > MAX_TAIL_OBJECTS {
                return Err(DecodeError::Invalid("too many tail objects"));
            }
            let mut objects = Vec::with_capacity(count);
            for _ in 0..count {
                let object = TailObject {
                    object_id: reader.u64("tail object id")?,
                    first_seq: reader.u64("tail first seq")?,
                    fragment_count: reader.u32("tail fragment count")?,
                };
                if object.fragment_count == 0 {
                    return Err(DecodeError::Invalid("tail object without fragments"));
                }
                objects.push(object);
            }
            Body::Tail(TailBody {
                next_seq,
                window_low,
                timestamp_us,
                group_rtt_us,
                objects,
            })
        }
        PacketType::Parity => {
            let parity = ParityBody {
                block_first_seq: reader.u64("block first seq")?,
                object_id: reader.u64("object id")?,
                object_len: reader.u64("object length")?,
                first_index: reader.u32("first index")?,
                fragment_count: reader.u32("fragment count")?,
                fragment_size: reader.u32("fragment size")?,
                block_len: reader.u16("block length")?,
                recovery_index: reader.u16("recovery index")?,
                shard: reader.rest(),
            };
            let block_end = u64::from(parity.first_index) + u64::from(parity.block_len);
            if parity.block_len == 0
                || parity.block_len > MAX_BLOCK_LEN
                || block_end > u64::from(parity.fragment_count)
                || u64::from(parity.first_index) > parity.block_first_seq
                || parity
                    .block_first_seq
                    .checked_add(u64::from(parity.block_len))
                    .is_none()
            {
                return Err(DecodeError::Invalid("parity block outside its object"));
            }
            if parity.recovery_index >= recovery_count(parity.block_len) {
                return Err(DecodeError::Invalid("recovery index out of range"));
            }
            // The block's first fragment is its largest: the shard is that, rounded up.
            match parity.payload_len(parity.first_index) {
                None => {
                    return Err(DecodeError::Invalid(
                        "object length contradicts its fragments",
                    ));
                }
                Some(largest) if parity.shard.len() != shard_len(largest) => {
                    return Err(DecodeError::Invalid("parity shard of the wrong length"));
                }
                Some(_) => {}
            }
            return Ok(Body::Parity(parity));
        }
        PacketType::Nack => {
            let count = reader.u16("range count")? as usize;
            if count > MAX_NACK_RANGES {
                return Err(DecodeError::Invalid("too many NACK ranges"));
            }
            let mut ranges = Vec::with_capacity(count);
            for _ in 0..count {
                ranges.push(SeqRange {
                    first: reader.u64("range start")?,
                    len: reader.u32("range length")?,
                });
            }
            Body::Nack(ranges)
        }
        PacketType::Status => {
            let cumulative = reader.u64("cumulative")?;
            let read_end = reader.u64("read end")?;
            let missed = reader.u64("missed")?;
            let echo_timestamp_us = reader.u64("echo timestamp")?;
            let echo_delay_us = reader.u32("echo delay")?;
            let count = reader.u16("lost count")? as usize;
            if count > MAX_STATUS_LOST {
                return Err(DecodeError::Invalid("too many lost objects"));
            }
            let mut lost = Vec::with_capacity(count);
            for _ in 0..count {
                lost.push(reader.u64("lost object id")?);
            }
            Body::Status(StatusBody {
                cumulative,
                read_end,
                missed,
                echo_timestamp_us,
                echo_delay_us,
                lost,
            })
        }
    };
    if !reader.rest().is_empty() {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok(decoded)
}

/// Why a datagram or body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than its fields need.
    #[error("truncated {what}: needed {needed} bytes, got {got}")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes it needed.
        needed: usize,
        /// Bytes that were left.
        got: usize,
    },
    /// An unknown protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// An unknown packet type.
    #[error("unknown packet type {0}")]
    Type(u8),
    /// Fields that contradict each other.
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

/// Bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(DecodeError::Truncated {
                what,
                needed: N,
                got: self.bytes.len(),
            });
        };
        self.bytes = rest;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.take(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.take(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.take(what).map(u64::from_be_bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
