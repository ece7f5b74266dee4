//! Emulated links at a driver's sockets, on the [`netem`](crate::netem) model, for tests and
//! benchmarks on real sockets.
//!
//! A driver with an [`ImpairmentConfig`] passes every datagram it reads through the link from
//! its peers to it (delay, jitter, loss, duplication, reordering, rate), and optionally every
//! datagram it sends through its own outbound link (one queue for all destinations, as a
//! NIC has, so a sender's link rate bounds everything it sends). Held datagrams are released
//! by the driver's own loop at their time: the next release is one of its deadlines. A
//! production configuration leaves impairment off.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::netem::{LinkConditions, LinkEmulator, LinkStats, NetemConfig, Probability, RandomLoss};

/// The emulated links of one driver, each seeded through its [`NetemConfig`] so a failing
/// run can be repeated.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use replicast_transport::multicast::driver::ImpairmentConfig;
/// use replicast_transport::netem::{Bitrate, DataSize, NetemConfig};
///
/// // A receiver that loses 1% of what it reads, with a seed.
/// let lossy = ImpairmentConfig::loss(0.01, 7);
/// assert!(lossy.receive.is_some() && lossy.send.is_none());
///
/// // A sender 20 ms (one way) from its receivers, behind a 100 Mbit/s uplink.
/// let wan = ImpairmentConfig::none().with_send(
///     NetemConfig::new()
///         .latency(Duration::from_millis(20))
///         .link(Bitrate::mbps(100), DataSize::bytes(1_000_000))
///         .seed(3),
/// );
/// assert!(wan.send.is_some());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ImpairmentConfig {
    /// The link from each peer to this driver, applied to every datagram the driver reads
    /// (one link per source address).
    pub receive: Option<NetemConfig>,
    /// This driver's own outbound link, applied to every datagram it sends: one link shared
    /// by all destinations, so its rate limit bounds the driver's total output.
    pub send: Option<NetemConfig>,
}

impl ImpairmentConfig {
    /// No impairment in either direction (add some with the `with_` methods).
    pub fn none() -> Self {
        Self::default()
    }

    /// Independent loss with probability `loss` of every datagram read, nothing else.
    pub fn loss(loss: f64, seed: u64) -> Self {
        Self::none().with_receive(
            NetemConfig::new()
                .loss(RandomLoss::new(Probability::new(loss as f32)))
                .seed(seed),
        )
    }

    /// Sets the link that datagrams read cross.
    pub fn with_receive(mut self, config: NetemConfig) -> Self {
        self.receive = Some(config);
        self
    }

    /// Sets the link that datagrams sent cross.
    pub fn with_send(mut self, config: NetemConfig) -> Self {
        self.send = Some(config);
        self
    }
}

/// Counters of an [`Impairment`], both directions together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpairmentStats {
    /// Datagrams handed to the links.
    pub offered: u64,
    /// Datagrams the links released (a duplicate counts twice).
    pub released: u64,
    /// Datagrams still held by the links.
    pub queued: u64,
}

impl ImpairmentStats {
    /// Datagrams the links dropped (loss or a full queue), net of duplicates.
    pub fn dropped(&self) -> u64 {
        self.offered.saturating_sub(self.released + self.queued)
    }
}

/// The emulated links of one driver, driven by its clock.
pub struct Impairment {
    /// Shared bytes (both links): the link model clones each datagram it queues, which for
    /// a `Vec` was a second copy of every datagram.
    receive: Option<LinkEmulator<Bytes>>,
    send: Option<LinkEmulator<Bytes>>,
}

impl std::fmt::Debug for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impairment")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Impairment {
    /// Links as `config` says.
    pub fn new(config: ImpairmentConfig) -> Self {
        Self {
            receive: config
                .receive
                .map(|link| LinkEmulator::new(LinkConditions::new().with_default(link))),
            send: config
                .send
                .map(|link| LinkEmulator::new(LinkConditions::new().with_shared_default(link))),
        }
    }

    /// Whether datagrams sent cross a link (otherwise they go straight to the socket).
    pub fn impairs_sends(&self) -> bool {
        self.send.is_some()
    }

    /// Hands a datagram read from `source` to the receive link. Returns false, having kept
    /// nothing, when there is no receive link: the caller handles the datagram at once.
    pub fn offer_received(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) -> bool {
        let Some(link) = self.receive.as_mut() else {
            return false;
        };
        // The receive link is keyed by where a datagram came from: that is its link.
        link.offer(now, source, Bytes::copy_from_slice(datagram));
        true
    }

    /// The next received datagram due at `now`, with its source; the bytes are the caller's
    /// (a receiver opens them in place).
    pub fn poll_received(&mut self, now: Instant) -> Option<(SocketAddr, BytesMut)> {
        let (source, datagram) = self.receive.as_mut()?.poll_release(now)?;
        // Without a duplicate still queued, the bytes are taken over without a copy.
        Some((source, BytesMut::from(datagram)))
    }

    /// Hands a datagram for `destination` to the send link (call only when
    /// [`impairs_sends`](Self::impairs_sends)).
    pub fn offer_sent(&mut self, now: Instant, destination: SocketAddr, datagram: Vec<u8>) {
        if let Some(link) = self.send.as_mut() {
            link.offer(now, destination, Bytes::from(datagram));
        }
    }

    /// The next datagram to send that is due at `now`, with its destination.
    pub fn poll_sent(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        let (destination, datagram) = self.send.as_mut()?.poll_release(now)?;
        Some((destination, Vec::from(datagram)))
    }

    /// When the earliest held datagram (either direction) becomes due.
    pub fn next_release(&self) -> Option<Instant> {
        [&self.receive, &self.send]
            .into_iter()
            .flatten()
            .filter_map(LinkEmulator::next_release)
            .min()
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairmentStats {
        let mut stats = ImpairmentStats::default();
        for link in [&self.receive, &self.send].into_iter().flatten() {
            let LinkStats { offered, released } = link.total_stats();
            stats.offered += offered;
            stats.released += released;
            stats.queued += link.queued() as u64;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn source() -> SocketAddr {
        "127.0.0.1:9".parse().expect("a literal address")
    }

    #[test]
    fn received_datagrams_wait_for_their_delay_and_keep_their_source() {
        let config = ImpairmentConfig::none()
            .with_receive(NetemConfig::new().latency(Duration::from_millis(5)).seed(1));
        let mut impairment = Impairment::new(config);
        let start = Instant::now();
        assert!(impairment.offer_received(start, source(), b"datagram"));
        assert!(impairment.poll_received(start).is_none());
        let due = impairment.next_release().expect("one datagram held");
        assert_eq!(due, start + Duration::from_millis(5));
        assert_eq!(
            impairment.poll_received(due),
            Some((source(), BytesMut::from(&b"datagram"[..])))
        );
        assert_eq!(
            impairment.stats(),
            ImpairmentStats {
                offered: 1,
                released: 1,
                queued: 0
            }
        );
    }

    #[test]
    fn without_a_link_nothing_is_held() {
        let mut impairment = Impairment::new(ImpairmentConfig::none());
        assert!(!impairment.offer_received(Instant::now(), source(), b"x"));
        assert!(!impairment.impairs_sends());
        assert!(impairment.next_release().is_none());
    }

    #[test]
    fn loss_drops_about_the_configured_share_and_counts_it() {
        let mut impairment = Impairment::new(ImpairmentConfig::loss(0.2, 5));
        let now = Instant::now();
        let mut delivered = 0u64;
        for n in 0..10_000u32 {
            impairment.offer_received(now, source(), &n.to_be_bytes());
            while impairment.poll_received(now).is_some() {
                delivered += 1;
            }
        }
        let stats = impairment.stats();
        assert_eq!(stats.released, delivered);
        assert_eq!(stats.dropped() + delivered, 10_000);
        // 4.5 standard deviations around 2000.
        assert!(
            stats.dropped() > 1820 && stats.dropped() < 2180,
            "{stats:?}"
        );
    }
}
