//! Endpoint and link settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Congestion;

/// Everything an [`Endpoint`](super::Endpoint) needs to bind: where to listen and which TLS
/// configurations to present and to verify peers with.
///
/// The transport does not create certificates. It takes rustls configurations built elsewhere
/// (for replicast, by `replicast-certs`): the server configuration must require a client
/// certificate signed by the cluster CA, and the client configuration must carry this node's
/// certificate, so that both sides of every connection are authenticated.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Local address of the UDP socket, used both to accept and to dial.
    pub listen: SocketAddr,
    /// TLS 1.3 server configuration (mutual TLS: it must verify client certificates).
    pub server_tls: Arc<rustls::ServerConfig>,
    /// TLS 1.3 client configuration presenting this node's certificate.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Settings of every connection and stream of this endpoint.
    pub link: LinkConfig,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("listen", &self.listen)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// Settings of the connections of an endpoint and of the streams they carry.
///
/// The defaults suit a LAN or loopback and links up to about 1 Gbit/s × 100 ms: QUIC's own
/// defaults are sized for 100 Mbit/s × 100 ms, so the windows here are larger. For a
/// bandwidth-delay product beyond that, raise [`stream_receive_window`], [`receive_window`] and
/// [`send_window`] to at least the product.
///
/// ```
/// use std::time::Duration;
/// use replicast_transport::quic::LinkConfig;
///
/// // A 10 Gbit/s link with 40 ms of round trip: 50 MB in flight; a peer taken for gone
/// // after 3 s of silence, probed every 500 ms.
/// let wan = LinkConfig {
///     stream_receive_window: 64 << 20,
///     receive_window: 128 << 20,
///     send_window: 128 << 20,
///     keep_alive: Some(Duration::from_millis(500)),
///     idle_timeout: Some(Duration::from_secs(3)),
///     ..LinkConfig::default()
/// };
/// assert!(wan.validate().is_ok());
/// ```
///
/// [`stream_receive_window`]: LinkConfig::stream_receive_window
/// [`receive_window`]: LinkConfig::receive_window
/// [`send_window`]: LinkConfig::send_window
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Interval of keep-alive packets; must be well below `idle_timeout` to keep quiet links
    /// open (each one is acknowledged, so a live peer is heard from at least this often).
    pub keep_alive: Option<Duration>,
    /// A connection with nothing received for this long is closed: how soon a peer that died
    /// or froze is noticed. QUIC raises it to three probe timeouts (about three round trips
    /// plus their variation) where that is longer, so the default suits loopback, a LAN and a
    /// WAN. `None` disables the timeout.
    pub idle_timeout: Option<Duration>,
    /// Bound on establishing a connection (QUIC and TLS handshake).
    pub connect_timeout: Duration,
    /// Bound on one request, from opening its stream to decoding the answer. `None`: no bound
    /// beyond the connection's own idle timeout.
    pub request_timeout: Option<Duration>,
    /// Bytes a peer may send on one stream ahead of what has been read.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on all streams of a connection ahead of what has been read.
    pub receive_window: u32,
    /// Bytes this side keeps unacknowledged in flight per connection.
    pub send_window: u64,
    /// Streams of each direction a peer may have open at once; further requests wait.
    pub max_concurrent_streams: u32,
    /// Largest frame accepted (requests, answers, messages, object chunks), checked against the
    /// length prefix before any allocation.
    pub max_frame_len: u32,
    /// Size of the chunks an object is cut into on the sending side.
    pub chunk_size: u32,
    /// Chunks at least this large are zstd-compressed, and sent compressed when that shrinks
    /// them. After chunks that do not shrink, the next ones sent to the same peer are sent raw
    /// without trying (1, 2, 4, ... up to 16 chunks), so incompressible payloads cost little.
    /// `None` never compresses.
    pub compression_threshold: Option<u32>,
    /// zstd level for object chunks (1 is fast and is usually the right choice on a LAN).
    pub compression_level: i32,
    /// Largest object accepted; a larger announced size is refused before any allocation.
    pub max_object_size: u64,
    /// Upper bound of path MTU discovery (UDP payload bytes). QUIC starts at 1200 and probes
    /// upward; loopback and jumbo-frame networks allow much more than the Ethernet default.
    pub mtu_upper_bound: u16,
    /// Whether to use UDP segmentation offload (GSO) where the platform offers it.
    pub segmentation_offload: bool,
    /// Size asked for the UDP socket's send and receive buffers (the kernel caps it, on Linux
    /// at `net.core.rmem_max` / `wmem_max`). Small default buffers drop bursts at high rates.
    /// Applies to sockets [`Endpoint::bind`](super::Endpoint::bind) creates.
    pub socket_buffer_size: usize,
    /// Capacity of the queue of incoming work of the endpoint (messages, requests, objects,
    /// channel ends of every peer); when it is full, peers' streams wait, and QUIC's flow
    /// control then holds their senders back.
    pub incoming_queue: usize,
    /// Largest message on a [`Channel`](super::Channel), checked against the length prefix
    /// before anything is read; a message's buffer grows as its bytes arrive.
    pub max_message_len: u32,
    /// Messages a channel holds queued before they are written; [`Channel::send`] waits
    /// beyond it.
    ///
    /// [`Channel::send`]: super::Channel::send
    pub channel_queue: usize,
    /// Bytes of messages a channel holds queued before they are written (a larger message
    /// goes alone); [`Channel::send`] waits beyond it.
    ///
    /// [`Channel::send`]: super::Channel::send
    pub channel_queue_bytes: usize,
    /// Bytes of a peer's channel messages this endpoint holds before it reads that channel
    /// on (a larger message is held alone; each counts at least 256 bytes): a message counts
    /// until its last byte (or the last slice of it, [`Bytes`](bytes::Bytes) cut from its
    /// body) is dropped. So a
    /// receiver that keeps a sender's messages, because it cannot take them yet, stops
    /// reading that sender's channel alone, and QUIC's flow control holds that sender back;
    /// the endpoint's other channels, requests and objects go on.
    pub channel_window: usize,
    /// Whether other processes may use this endpoint's certificate name at the same time
    /// (clients: one configuration for many worker processes). Peers then know this endpoint
    /// as `NAME#SESSION`. When false (masters, storages), a peer connected to a live process
    /// of the same name refuses this one with [`LinkError::NameInUse`](super::LinkError::NameInUse).
    pub shared_name: bool,
    /// After writes on a connection pause for this long, an empty datagram follows them (a
    /// *tail probe*), so that the loss of the last packet is found by the peer's
    /// acknowledgement of the probe about one round trip after it was sent, instead of by
    /// QUIC's probe timeout and a round trip more (70-75 ms at 20 ms RTT with quinn). Costs
    /// one small packet per pause and the peer's acknowledgement; a steady flow of writes
    /// sends none. The pause only has to let the last write's packet leave first. `None`
    /// sends no probes.
    pub tail_probe: Option<Duration>,
    /// Whether a tail probe carries copies of the last channel messages, requests and small
    /// objects written before it (the last 4, each of up to 1,400 bytes that fits one
    /// datagram on the path): a receiver takes one whose packet was lost from its copy, once
    /// (a message in its channel's order), instead of waiting about 1.3 round trips for QUIC
    /// to send it again. Costs the copies' bytes once per pause in the writes, nothing under
    /// a steady flow. Needs [`tail_probe`](Self::tail_probe).
    pub message_copies: bool,
    /// The congestion controller of every connection ([`Congestion`]; by default CUBIC that
    /// keeps its window through losses that do not look like congestion, where quinn's CUBIC
    /// shrinks it at each loss).
    pub congestion: Congestion,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            keep_alive: Some(Duration::from_millis(250)),
            idle_timeout: Some(Duration::from_secs(1)),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(60)),
            stream_receive_window: 16 << 20,
            receive_window: 64 << 20,
            send_window: 64 << 20,
            max_concurrent_streams: 1024,
            max_frame_len: 4 << 20,
            chunk_size: 1 << 20,
            compression_threshold: Some(4 << 10),
            compression_level: 1,
            max_object_size: 1 << 30,
            mtu_upper_bound: 1452,
            segmentation_offload: true,
            socket_buffer_size: 4 << 20,
            incoming_queue: 1024,
            max_message_len: 1 << 30,
            channel_queue: 4096,
            channel_queue_bytes: 64 << 20,
            channel_window: 16 << 20,
            shared_name: false,
            // Long enough for the last write's packet to leave before the probe (the
            // connection's driver runs within microseconds of a write), short against any
            // WAN round trip: the loss is then declared 9/8 of a round trip after the send
            // (docs/BENCH.md, commit latency at 1% loss).
            tail_probe: Some(Duration::from_millis(1)),
            message_copies: true,
            congestion: Congestion::default(),
        }
    }
}

/// A [`LinkConfig`] whose values contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid link configuration: {0}")]
pub struct ConfigError(pub(crate) String);

impl LinkConfig {
    /// Bytes of framing around an object chunk (length prefix, tag, uncompressed length).
    pub(crate) const CHUNK_OVERHEAD: u32 = 9;

    /// Checks that the settings are consistent with each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.chunk_size == 0 {
            return Err(ConfigError("chunk_size must not be 0".into()));
        }
        if self.chunk_size.saturating_add(Self::CHUNK_OVERHEAD) > self.max_frame_len {
            return Err(ConfigError(format!(
                "chunk_size {} plus {} bytes of framing exceeds max_frame_len {}",
                self.chunk_size,
                Self::CHUNK_OVERHEAD,
                self.max_frame_len
            )));
        }
        if let (Some(keep_alive), Some(idle)) = (self.keep_alive, self.idle_timeout)
            && keep_alive >= idle
        {
            return Err(ConfigError(format!(
                "keep_alive {keep_alive:?} must be below idle_timeout {idle:?}"
            )));
        }
        if self.mtu_upper_bound < 1200 {
            return Err(ConfigError(format!(
                "mtu_upper_bound {} is below QUIC's minimum of 1200",
                self.mtu_upper_bound
            )));
        }
        if self.incoming_queue == 0 {
            return Err(ConfigError("incoming_queue must not be 0".into()));
        }
        if self.tail_probe == Some(Duration::ZERO) {
            return Err(ConfigError(
                "tail_probe must be above 0 (None sends no probes)".into(),
            ));
        }
        if self.channel_window == 0 {
            return Err(ConfigError("channel_window must not be 0".into()));
        }
        if self.channel_queue == 0 || self.channel_queue_bytes == 0 {
            return Err(ConfigError(
                "channel_queue and channel_queue_bytes must not be 0".into(),
            ));
        }
        Ok(())
    }

    /// quinn's endpoint settings: the largest UDP payload this endpoint accepts must allow
    /// what MTU discovery may probe for.
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut config = quinn::EndpointConfig::default();
        // Within quinn's bounds whenever `validate` passed (1200..=65527 after the max).
        let _ = config.max_udp_payload_size(self.mtu_upper_bound.clamp(1472, 65_527));
        config
    }

    pub(crate) fn transport_config(&self) -> Result<quinn::TransportConfig, ConfigError> {
        self.validate()?;
        let mut transport = quinn::TransportConfig::default();
        let idle = match self.idle_timeout {
            Some(idle) => Some(
                quinn::IdleTimeout::try_from(idle)
                    .map_err(|_| ConfigError(format!("idle_timeout {idle:?} is too large")))?,
            ),
            None => None,
        };
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound);
        transport
            .keep_alive_interval(self.keep_alive)
            .max_idle_timeout(idle)
            .stream_receive_window(self.stream_receive_window.into())
            .receive_window(self.receive_window.into())
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(self.max_concurrent_streams.into())
            .max_concurrent_uni_streams(self.max_concurrent_streams.into())
            .mtu_discovery_config(Some(mtu))
            .enable_segmentation_offload(self.segmentation_offload)
            .congestion_controller_factory(self.congestion.factory());
        Ok(transport)
    }
}
