//! Sans-IO multicast protocol core.
//!
//! [`Sender`] and [`Receiver`] are state machines with no sockets and no clock of their own,
//! in the manner of quinn-proto: feed them `(now, datagram)` and timer expiries, and drain
//! the datagrams they want sent ([`Transmit`]), their next deadline and their events. Tests
//! drive them on a virtual clock; the tokio driver in [`driver`](super::driver) drives them on
//! real sockets.
//!
//! - [`wire`]: the datagram format (documented there).
//! - A [`Sender`] splits objects into datagrams, paces them, keeps them in a bounded window
//!   until every member acknowledged them, announces its tail, and answers NACKs with repairs
//!   (coalesced, multicast when several receivers ask, unicast when one does, rate-limited per
//!   receiver). It reports per object and receiver [`SenderEvent::Delivered`] or
//!   [`SenderEvent::Abandoned`].
//! - A [`Receiver`] reassembles objects of any number of sender sessions, NACKs gaps after a
//!   randomized backoff scaled by the group RTT, reports its position, delivers only whole
//!   objects and reports [`ReceiverEvent::Lost`] when repair did not come in time. Its
//!   [`ReceiverStats`] keep the delay of every repair (from detecting a gap to filling it) in
//!   a [`DelayHistogram`].
//!
//! Every datagram is sealed (AES-256-GCM): group datagrams under the session's
//! [`GroupKey`] of the current epoch, receiver control datagrams under the receiver's own
//! [`ReceiverKey`].
//!
//! - Optional Reed-Solomon parity ([`FecConfig`], reed-solomon-simd) per block of an object:
//!   proactive (sent with the data: a configured share, and as much as the loss the
//!   receivers report calls for, [`SenderConfig::adaptive_parity`]) and on demand (one
//!   recovery shard to the group repairs a different loss at each receiver that lost one
//!   datagram of the block); all but the configured proactive share from a paced sender
//!   only, since decoding costs the receivers more CPU than reading the block again.
//!
//! Notes for the driver (additions to the agreed contract, nothing renamed): control
//! datagrams (NACKs, status) go by unicast to the address that the sender's datagrams came
//! from; `stats()` returns a reference (the stats are `Copy`); [`Sender::buffered`],
//! [`Receiver::reassembly_bytes`] and [`Receiver::missing_datagrams`] expose the memory in
//! use; [`crypto::PacketKey`] seals datagrams for tools and tests.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use replicast_transport::multicast::proto::*;
//!
//! let now = Instant::now();
//! let group_key = GroupKey { epoch: 1, secret: [7; 32] };
//! let receiver_key = ReceiverKey { receiver_id: 1, secret: [9; 32] };
//! let mut sender = Sender::new(SenderConfig::default(), 42, group_key.clone(), now)?;
//! sender.add_receiver(receiver_key.clone());
//! let mut receiver = Receiver::new(ReceiverConfig::default(), receiver_key, now);
//! receiver.add_session(42, group_key);
//!
//! sender.send_object(1, Bytes::from_static(b"hello"), now)?;
//! let from = "127.0.0.1:5000".parse()?;
//! while let Some(transmit) = sender.poll_transmit(now) {
//!     receiver.handle_datagram(now, from, &transmit.payload);
//! }
//! match receiver.poll_event() {
//!     Some(ReceiverEvent::Object { object_id: 1, data, .. }) => assert_eq!(&data[..], b"hello"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffers;
mod config;
pub mod crypto;
mod delay_histogram;
mod error;
mod fec;
mod keys;
mod loss;
mod nack;
mod rate;
mod reassembly;
mod receiver;
mod replay;
mod sender;
mod stats;
mod window;
pub mod wire;

use std::net::SocketAddr;

pub use config::{FecConfig, RateLimit, ReceiverConfig, SenderConfig};
pub use delay_histogram::DelayHistogram;
pub use error::{ConfigError, SendError};
pub use keys::{GroupKey, ReceiverKey};
pub use receiver::Receiver;
pub use sender::Sender;
pub use stats::{ReceiverDrops, ReceiverStats, SenderDrops, SenderStats};

/// A datagram the core wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: Destination,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Where a [`Transmit`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The session's multicast group.
    Group,
    /// One address (a repair for one receiver, or a receiver's report to a sender).
    Unicast(SocketAddr),
}

/// What a [`Sender`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// The receiver acknowledged the whole object.
    Delivered {
        /// The object.
        object_id: u64,
        /// The receiver.
        receiver_id: u32,
    },
    /// The receiver reported the object lost, or the sender gave up on the receiver.
    Abandoned {
        /// The object.
        object_id: u64,
        /// The receiver.
        receiver_id: u32,
    },
    /// The window has room again after [`SendError::WindowFull`] (it is emitted as the
    /// window advances, or as queued data leaves).
    Writable,
}

/// What a [`Receiver`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverEvent {
    /// A whole object, byte-exact.
    Object {
        /// The sender session.
        session_id: u64,
        /// The object's id.
        object_id: u64,
        /// Its bytes.
        data: bytes::Bytes,
    },
    /// The object could not be repaired in time; fetch it another way.
    Lost {
        /// The sender session.
        session_id: u64,
        /// The object's id.
        object_id: u64,
    },
}
