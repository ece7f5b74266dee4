//! Refusals counted per peer and reason, and the pace of the refusals sent back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::protocol::{Refusal, RefusalCount};

/// The most (peer, reason) pairs counted apart; refusals of further pairs are counted under
/// [`OTHER_PEERS`], so that a node's memory and its reports stay bounded.
const MAX_COUNTED: usize = 256;
/// The peer name under which refusals beyond [`MAX_COUNTED`] pairs are counted.
pub(crate) const OTHER_PEERS: &str = "(other peers)";
/// Refusals sent back to one peer per [`REPLY_WINDOW`]; the rest are only counted, so that a
/// peer that floods forbidden messages gets no flood back (and a peer that does not read
/// fills no queue here).
const REPLIES_PER_WINDOW: u32 = 16;
const REPLY_WINDOW: Duration = Duration::from_secs(1);
/// The most peers whose reply pace is tracked; beyond it tracking starts afresh.
const MAX_PACED: usize = 4096;

/// Counts of refusals by peer and reason, and the reply pace per peer.
#[derive(Default)]
pub(crate) struct Refusals {
    counts: BTreeMap<(String, String), u64>,
    pace: HashMap<String, (Instant, u32)>,
}

impl Refusals {
    /// Counts `refusal` of what `peer` sent; returns whether to send it back.
    pub(crate) fn count(&mut self, now: Instant, peer: &str, refusal: &Refusal) -> bool {
        let label = refusal.reason.label();
        let key = (peer.to_owned(), label);
        let key = if self.counts.contains_key(&key) || self.counts.len() < MAX_COUNTED {
            key
        } else {
            (OTHER_PEERS.to_owned(), key.1)
        };
        *self.counts.entry(key).or_default() += 1;
        if self.pace.len() >= MAX_PACED && !self.pace.contains_key(peer) {
            self.pace.clear();
        }
        let (since, sent) = self.pace.entry(peer.to_owned()).or_insert((now, 0));
        if now.duration_since(*since) >= REPLY_WINDOW {
            (*since, *sent) = (now, 0);
        }
        *sent += 1;
        *sent <= REPLIES_PER_WINDOW
    }

    /// Every count, by peer then reason.
    pub(crate) fn counts(&self) -> Vec<RefusalCount> {
        self.counts
            .iter()
            .map(|((peer, reason), count)| RefusalCount {
                peer: peer.clone(),
                reason: reason.clone(),
                count: *count,
            })
            .collect()
    }

    /// Refusals counted in all.
    pub(crate) fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RefusalReason;

    fn refusal() -> Refusal {
        Refusal {
            kind: "Store".to_owned(),
            reason: RefusalReason::Revoked,
        }
    }

    #[test]
    fn counts_are_kept_per_peer_and_reason_and_bounded() {
        let mut refusals = Refusals::default();
        let now = Instant::now();
        for i in 0..MAX_COUNTED + 10 {
            refusals.count(now, &format!("peer-{i}"), &refusal());
        }
        refusals.count(now, "peer-0", &refusal());
        let counts = refusals.counts();
        assert_eq!(counts.len(), MAX_COUNTED + 1);
        assert_eq!(refusals.total(), MAX_COUNTED as u64 + 11);
        let other = counts
            .iter()
            .find(|c| c.peer == OTHER_PEERS)
            .expect("overflow");
        assert_eq!(other.count, 10);
        assert_eq!(other.reason, "revoked");
        assert_eq!(
            counts.iter().find(|c| c.peer == "peer-0").map(|c| c.count),
            Some(2)
        );
    }

    #[test]
    fn replies_are_paced_per_peer() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        let sent = (0..100)
            .filter(|_| refusals.count(start, "flooder", &refusal()))
            .count();
        assert_eq!(sent, REPLIES_PER_WINDOW as usize);
        assert!(refusals.count(start, "someone-else", &refusal()));
        assert!(refusals.count(start + REPLY_WINDOW, "flooder", &refusal()));
    }
}
