//! [`Network`]: messages between named nodes on a virtual clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Queue, SplitMix64};

/// A message on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight<N, P> {
    /// The sender.
    pub from: N,
    /// The addressee.
    pub to: N,
    /// What it carries.
    pub payload: P,
}

/// What became of a message handed to [`Network::send`] or [`Network::send_lossy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// In flight, arriving at this virtual time.
    Queued(Duration),
    /// Lost on the way (counted in [`Network::lost`]).
    Lost,
    /// Dropped: the sender or the addressee is down or cut off.
    Down,
}

/// Messages between nodes named `N` carrying `P`, on a virtual clock the caller keeps (every
/// call takes `now`, the virtual time since the start).
///
/// Each message is delayed by a seeded random delay of 1 to [`max_delay_ms`](Self::max_delay_ms)
/// ms, so that messages of different links overtake each other, but one link (`from`, `to`)
/// delivers in the order it was given, as a QUIC stream does. [`send_lossy`](Self::send_lossy)
/// loses [`loss_percent`](Self::loss_percent) of its messages (for those the protocol asks
/// again); [`send`](Self::send) loses none. Nothing is sent to or from a node that is down.
#[derive(Debug)]
pub struct Network<N, P> {
    /// The largest delay of a message, in milliseconds (at least 1).
    pub max_delay_ms: u64,
    /// Percent of [`send_lossy`](Self::send_lossy)'s messages lost.
    pub loss_percent: u64,
    rng: SplitMix64,
    queue: Queue<Duration, InFlight<N, P>>,
    /// Arrival of the last message of each link: later ones never arrive before it.
    link_last: BTreeMap<(N, N), Duration>,
    down: BTreeSet<N>,
    lost: usize,
}

impl<N: Ord + Clone, P> Network<N, P> {
    /// A network whose choices come from `seed`, with delays of 1 to `max_delay_ms` ms and no
    /// loss.
    pub fn new(seed: u64, max_delay_ms: u64) -> Self {
        Self {
            max_delay_ms,
            loss_percent: 0,
            rng: SplitMix64::new(seed),
            queue: Queue::new(),
            link_last: BTreeMap::new(),
            down: BTreeSet::new(),
            lost: 0,
        }
    }

    /// Sends `payload` from `from` to `to` at `now`; never lost, but dropped when either node
    /// is down.
    pub fn send(&mut self, now: Duration, from: &N, to: &N, payload: P) -> Sent {
        if self.is_down(from) || self.is_down(to) {
            return Sent::Down;
        }
        self.queue_message(now, from, to, payload)
    }

    /// As [`send`](Self::send), but lost with probability
    /// [`loss_percent`](Self::loss_percent) (one draw per message sent to nodes that are up).
    pub fn send_lossy(&mut self, now: Duration, from: &N, to: &N, payload: P) -> Sent {
        if self.is_down(from) || self.is_down(to) {
            return Sent::Down;
        }
        if self.rng.below(100) < self.loss_percent {
            self.lost += 1;
            return Sent::Lost;
        }
        self.queue_message(now, from, to, payload)
    }

    fn queue_message(&mut self, now: Duration, from: &N, to: &N, payload: P) -> Sent {
        let delay = Duration::from_millis(1 + self.rng.below(self.max_delay_ms.max(1)));
        let link = (from.clone(), to.clone());
        let last = self.link_last.get(&link).copied().unwrap_or_default();
        // One link is one ordered stream: never deliver before what was sent on it earlier.
        let at = (now + delay).max(last);
        self.link_last.insert(link, at);
        self.queue.push(
            at,
            InFlight {
                from: from.clone(),
                to: to.clone(),
                payload,
            },
        );
        Sent::Queued(at)
    }

    /// When the next message arrives.
    pub fn next_arrival(&self) -> Option<Duration> {
        self.queue.next_at()
    }

    /// The next message if it arrived by `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<InFlight<N, P>> {
        self.queue.pop_due(now).map(|(_, message)| message)
    }

    /// Whether no message is in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Cuts `node` off: nothing more is sent to or from it; what is in flight still arrives
    /// (a client that vanished after sending). Returns whether it was up.
    pub fn cut_off(&mut self, node: &N) -> bool {
        self.down.insert(node.clone())
    }

    /// Crashes `node`: cut off, and what is in flight to or from it is lost with it.
    pub fn crash(&mut self, node: &N) {
        self.cut_off(node);
        self.queue
            .retain(|message| message.from != *node && message.to != *node);
    }

    /// Brings `node` back (after a crash or a cut): it sends and receives again, on new links
    /// (ordered from now on, nothing owed to the old ones).
    pub fn restart(&mut self, node: &N) {
        self.down.remove(node);
        self.link_last
            .retain(|(from, to), _| from != node && to != node);
    }

    /// Whether `node` is down or cut off.
    pub fn is_down(&self, node: &N) -> bool {
        self.down.contains(node)
    }

    /// Messages [`send_lossy`](Self::send_lossy) lost so far.
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// The network's generator, for other seeded choices of the simulation.
    pub fn rng(&mut self) -> &mut SplitMix64 {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(network: &mut Network<&'static str, u32>) -> Vec<(&'static str, u32)> {
        let mut now = Duration::ZERO;
        let mut delivered = Vec::new();
        while let Some(at) = network.next_arrival() {
            now = now.max(at);
            while let Some(message) = network.pop_due(now) {
                delivered.push((message.to, message.payload));
            }
        }
        delivered
    }

    #[test]
    fn each_link_keeps_its_order_and_links_interleave() {
        let mut network = Network::new(3, 20);
        for n in 0..50 {
            network.send(Duration::ZERO, &"a", &"b", n);
            network.send(Duration::ZERO, &"a", &"c", 100 + n);
        }
        let delivered = drain(&mut network);
        let to = |node| {
            delivered
                .iter()
                .filter(|(to, _)| *to == node)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
        };
        assert_eq!(to("b"), (0..50).collect::<Vec<_>>());
        assert_eq!(to("c"), (100..150).collect::<Vec<_>>());
        assert_ne!(
            delivered.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
            [["b", "c"]; 50].concat(),
            "with random delays the links interleave"
        );
    }

    #[test]
    fn crashed_nodes_lose_their_traffic_and_cut_off_ones_keep_what_is_in_flight() {
        let mut network = Network::new(1, 5);
        network.send(Duration::ZERO, &"a", &"b", 1);
        network.send(Duration::ZERO, &"a", &"c", 2);
        network.crash(&"b");
        assert!(network.cut_off(&"c"));
        assert!(!network.cut_off(&"c"), "already cut off");
        assert_eq!(network.send(Duration::ZERO, &"a", &"b", 3), Sent::Down);
        assert_eq!(network.send(Duration::ZERO, &"c", &"a", 4), Sent::Down);
        assert_eq!(drain(&mut network), [("c", 2)]);
        network.restart(&"b");
        assert!(matches!(
            network.send(Duration::ZERO, &"a", &"b", 5),
            Sent::Queued(_)
        ));
    }

    #[test]
    fn lossy_sends_lose_their_share_and_reliable_ones_none() {
        let mut network = Network::new(9, 5);
        network.loss_percent = 50;
        let lost = (0..1000)
            .filter(|n| network.send_lossy(Duration::ZERO, &"a", &"b", *n) == Sent::Lost)
            .count();
        assert_eq!(lost, network.lost());
        assert!((400..600).contains(&lost), "{lost} of 1000 lost at 50%");
        assert!((0..100).all(|n| network.send(Duration::ZERO, &"a", &"b", n) != Sent::Lost));
    }
}
