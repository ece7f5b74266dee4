//! The sans-IO heart of WAN emulation: datagrams in with a time, due datagrams out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use str0m_netem::{Input, Netem, Output, WithLen};

use super::LinkConditions;
use super::conditions::LinkKey;

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

/// A datagram on a link, with where it goes: a shared link carries many destinations.
#[derive(Clone)]
struct Addressed<T> {
    destination: SocketAddr,
    datagram: T,
}

impl<T: WithLen> WithLen for Addressed<T> {
    fn len(&self) -> usize {
        self.datagram.len()
    }
}

struct EmulatedLink<T> {
    model: Netem<Addressed<T>>,
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
    links: HashMap<LinkKey, EmulatedLink<T>>,
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
        let Some((key, config)) = self.conditions.link_for(destination) else {
            self.unimpaired.push_back((destination, datagram));
            return;
        };
        let link = self.links.entry(key).or_insert_with(|| EmulatedLink {
            model: Netem::new(*config),
            stats: LinkStats::default(),
        });
        link.stats.offered += 1;
        link.model.handle_input(Input::Packet(
            now,
            Addressed {
                destination,
                datagram,
            },
        ));
    }

    /// The next datagram due at `now`, with its destination.
    pub fn poll_release(&mut self, now: Instant) -> Option<(SocketAddr, T)> {
        if let Some(datagram) = self.unimpaired.pop_front() {
            return Some(datagram);
        }
        for link in self.links.values_mut() {
            if link.model.is_empty() || link.model.poll_timeout() > now {
                continue;
            }
            link.model.handle_input(Input::Timeout(now));
            // The model answers a due packet first; a Timeout answer only means "not yet".
            while let Some(output) = link.model.poll_output() {
                if let Output::Packet(addressed) = output {
                    link.stats.released += 1;
                    return Some((addressed.destination, addressed.datagram));
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

    /// Counters of the link towards `destination`, if it is impaired and was used (for a
    /// destination on the shared link, the shared link's counters).
    pub fn stats(&self, destination: SocketAddr) -> Option<LinkStats> {
        let (key, _) = self.conditions.link_for(destination)?;
        self.links.get(&key).map(|link| link.stats)
    }

    /// Counters of every link together.
    pub fn total_stats(&self) -> LinkStats {
        self.links
            .values()
            .fold(LinkStats::default(), |total, link| LinkStats {
                offered: total.offered + link.stats.offered,
                released: total.released + link.stats.released,
            })
    }

    /// Datagrams waiting on their links.
    pub fn queued(&self) -> usize {
        self.links.values().map(|link| link.model.queue_len()).sum()
    }
}
