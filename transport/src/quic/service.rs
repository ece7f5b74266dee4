//! [`Service`]: which protocol a request or object stream is for, named by the sender.
//!
//! One endpoint may serve several protocols on one connection (a storage serves the node
//! protocol and the fan-out's). Guessing a request's protocol from its bytes ("does it decode
//! as one of mine?") misroutes whatever happens to decode as both, so every request and
//! object stream names its service right after its kind byte, and the receiver routes by that
//! number alone ([`Incoming::service`](super::Incoming::service)).

/// The protocol a request or object is for: a number the sending [`Link`](super::Link) puts
/// on the stream ([`Link::for_service`](super::Link::for_service)) and the receiver reads
/// before anything of the application's ([`IncomingRequest::service`](super::IncomingRequest::service)).
///
/// [`Service::DEFAULT`] is what a link sends unless told otherwise: an application speaking
/// one protocol needs nothing else. The protocols of this crate that run over links take
/// numbers from `0xff00` up (the fan-out's is [`fanout::SERVICE`](crate::fanout::SERVICE));
/// an application's own take numbers below.
///
/// ```
/// use replicast_transport::quic::Service;
///
/// const BACKUP: Service = Service::new(7);
/// assert_eq!(BACKUP.id(), 7);
/// assert_ne!(BACKUP, Service::DEFAULT);
/// assert_eq!(BACKUP.to_string(), "service 7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service(u16);

impl Service {
    /// The service of a link that was not told another: the application's own protocol.
    pub const DEFAULT: Self = Self(0);

    /// The service numbered `id`.
    pub const fn new(id: u16) -> Self {
        Self(id)
    }

    /// Its number.
    pub const fn id(self) -> u16 {
        self.0
    }

    /// Its bytes on the wire (big-endian), right after the stream's kind byte.
    pub(crate) const fn to_bytes(self) -> [u8; SERVICE_LEN] {
        self.0.to_be_bytes()
    }

    /// The service whose wire bytes are `bytes`.
    pub(crate) const fn from_bytes(bytes: [u8; SERVICE_LEN]) -> Self {
        Self(u16::from_be_bytes(bytes))
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service {}", self.0)
    }
}

/// Bytes of a service number on the wire.
pub const SERVICE_LEN: usize = 2;
