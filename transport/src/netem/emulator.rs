//! The sans-IO heart of WAN emulation: datagrams in with a time, due datagrams out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m_netem::{Input, Netem, Output, WithLen};

use super::LinkConditions;

/// Counters of one emulated link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub offered: u64,
    /// Datagrams the link released (duplicates count twice).
    pub released: u64,
}

impl LinkStats {
    /// Datagrams the link dropped (loss or tail drop) net of duplicates, once nothing is queued.
    pub fn net_dropped(&self) -> i64 {
        self.offered as i64 - self.released as i64
    }
}

struct EmulatedLink<T> {
    model: Netem<T>,
    stats: LinkStats,
}

/// A table of emulated links, one per destination, driven by the caller's clock.
///
/// Feed datagrams with [`offer`](Self::offer); collect those that are due with
/// [`poll_release`](Self::poll_release); sleep until [`next_release`](Self::next_release).
/// Datagrams towards a destination without conditions are released at once, untouched.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use replicast_transport::netem::{LinkConditions, LinkEmulator, NetemConfig};
///
/// let to: std::net::SocketAddr = "127.0.0.1:9000".parse().unwrap();
/// let conditions =
///     LinkConditions::new().with_link(to, NetemConfig::new().latency(Duration::from_millis(10)));
/// let mut links = LinkEmulator::new(conditions);
/// let start = Instant::now();
/// links.offer(start, to, vec![1u8, 2, 3]);
/// assert!(links.poll_release(start).is_none());
/// let due = links.next_release().unwrap();
/// assert_eq!(due, start + Duration::from_millis(10));
/// assert_eq!(links.poll_release(due), Some((to, vec![1u8, 2, 3])));
/// ```
pub struct LinkEmulator<T> {
    conditions: LinkConditions,
    links: HashMap<SocketAddr, EmulatedLink<T>>,
    unimpaired: VecDeque<(SocketAddr, T)>,
}

impl<T: Clone + WithLen> LinkEmulator<T> {
    /// An emulator applying `conditions`.
    pub fn new(conditions: LinkConditions) -> Self {
        Self {
            conditions,
            links: HashMap::new(),
            unimpaired: VecDeque::new(),
        }
    }

    /// Hands one datagram for `destination` to its link at time `now`.
    pub fn offer(&mut self, now: Instant, destination: SocketAddr, datagram: T) {
        let link = match self.links.get_mut(&destination) {
            Some(link) => link,
            None => match self.conditions.config_for(destination) {
                Some(config) => self.links.entry(destination).or_insert(EmulatedLink {
                    model: Netem::new(config),
                    stats: LinkStats::default(),
                }),
                None => {
                    self.unimpaired.push_back((destination, datagram));
                    return;
                }
            },
        };
        link.stats.offered += 1;
        link.model.handle_input(Input::Packet(now, datagram));
    }

    /// The next datagram due at `now`, with its destination.
    pub fn poll_release(&mut self, now: Instant) -> Option<(SocketAddr, T)> {
        if let Some(datagram) = self.unimpaired.pop_front() {
            return Some(datagram);
        }
        for (destination, link) in &mut self.links {
            if link.model.is_empty() || link.model.poll_timeout() > now {
                continue;
            }
            link.model.handle_input(Input::Timeout(now));
            // The model answers a due packet first; a Timeout answer only means "not yet".
            while let Some(output) = link.model.poll_output() {
                if let Output::Packet(datagram) = output {
                    link.stats.released += 1;
                    return Some((*destination, datagram));
                }
            }
        }
        None
    }

    /// When the earliest queued datagram becomes due, if any is queued.
    pub fn next_release(&self) -> Option<Instant> {
        self.links
            .values()
            .filter(|link| !link.model.is_empty())
            .map(|link| link.model.poll_timeout())
            .min()
    }

    /// Counters of the link towards `destination`, if it is impaired and was used.
    pub fn stats(&self, destination: SocketAddr) -> Option<LinkStats> {
        self.links.get(&destination).map(|link| link.stats)
    }
}
