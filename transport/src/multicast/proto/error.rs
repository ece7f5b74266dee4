//! Errors the protocol core returns to its caller.
//!
//! Datagrams from the network never produce errors here: they are dropped and counted in
//! [`SenderStats`](super::SenderStats) / [`ReceiverStats`](super::ReceiverStats). These are
//! the caller's mistakes (configuration, objects that cannot be sent).

/// A [`SenderConfig`](super::SenderConfig) or [`ReceiverConfig`](super::ReceiverConfig) is
/// inconsistent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The datagram size leaves no room for payload, or exceeds what UDP can carry.
    #[error("max_datagram_size {size} is outside {min}..={max}")]
    DatagramSize {
        /// The configured size.
        size: usize,
        /// The smallest accepted size.
        min: usize,
        /// The largest accepted size.
        max: usize,
    },
    /// An object of the maximum size would not fit in the transmit window, so it could never
    /// be sent.
    #[error("max_object_size {max_object_size} exceeds the window of {window_bytes} bytes")]
    ObjectLargerThanWindow {
        /// The configured maximum object size.
        max_object_size: u64,
        /// The configured window in bytes.
        window_bytes: u64,
    },
    /// An object of the maximum size needs more datagrams than the window holds.
    #[error("max_object_size needs {needed} datagrams but the window holds {window_datagrams}")]
    WindowTooSmall {
        /// Datagrams an object of the maximum size needs.
        needed: u64,
        /// The configured window in datagrams.
        window_datagrams: u64,
    },
    /// The flight limit is smaller than one datagram, so nothing could ever be sent.
    #[error("flight_bytes {flight_bytes} is smaller than one datagram of {max_datagram_size}")]
    FlightTooSmall {
        /// The configured flight limit.
        flight_bytes: u64,
        /// The configured datagram size.
        max_datagram_size: usize,
    },
    /// A rate (bytes per second or burst) is zero.
    #[error("{name} must be positive")]
    ZeroRate {
        /// The setting's name.
        name: &'static str,
    },
    /// The adaptive parity's target is not a positive finite number.
    #[error("adaptive_parity {target} must be a positive finite number")]
    AdaptiveParity {
        /// The configured target.
        target: f64,
    },
    /// The tail parity's target is not a positive finite number.
    #[error("tail_parity {target} must be a positive finite number")]
    TailParity {
        /// The configured target.
        target: f64,
    },
    /// A parity block is empty or larger than 1024 datagrams, or the proactive ratio is
    /// outside 0..=1.
    #[error(
        "FEC blocks of up to {max_block} datagrams with {proactive} proactive parity are not supported"
    )]
    Fec {
        /// The configured block size.
        max_block: u16,
        /// The configured proactive ratio.
        proactive: f64,
    },
}

/// An object was not accepted by [`Sender::send_object`](super::Sender::send_object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The transmit window is full, or holds a flight's worth of data not yet sent; try
    /// again after [`SenderEvent::Writable`](super::SenderEvent::Writable).
    #[error("the transmit window is full")]
    WindowFull,
    /// The object is larger than the configured maximum.
    #[error("object of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The object's size.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// An object with this id is still in flight.
    #[error("object {object_id} is already in flight")]
    DuplicateObject {
        /// The id given.
        object_id: u64,
    },
    /// The sender's packet numbers under the current key are exhausted; install a new key.
    #[error("packet numbers of key epoch {epoch} are exhausted; install a new key")]
    KeyExhausted {
        /// The exhausted epoch.
        epoch: u32,
    },
}
