//! [`PrimaryTracker`]: which master is the primary and of which term, as a storage or a client
//! knows it, shared by both roles.
//!
//! Every node lists the masters in its configuration. The primary's orders arrive as
//! [`Message::FromPrimary`](crate::protocol::Message::FromPrimary) with the primary's raft term;
//! the tracker takes the order of the latest term and refuses (counting it) one of an older
//! term, from a deposed primary, or one of the same term from another master than the one
//! seen in that term (raft has one leader per term: the other is lying). When the primary is
//! lost or unknown, the node asks the masters ([`Message::AskPrimary`]) and follows their
//! redirects ([`Message::PrimaryIs`]).
//!
//! ```
//! use replicast_node::primary::PrimaryTracker;
//!
//! let mut masters = PrimaryTracker::new(vec!["m1".into(), "m2".into(), "m3".into()]);
//! assert_eq!(masters.target(), "m1"); // nobody known yet: ask the first
//! // m2 is the primary of term 3, and it was not asked: the node announces itself to it.
//! assert!(matches!(masters.order("m2", 3, "Finish", "m1"), Ok(true)));
//! assert!(masters.order("m1", 2, "Finish", "m1").is_err()); // a deposed primary's order
//! assert!(masters.order("m3", 3, "Finish", "m1").is_err()); // another primary of term 3: no
//! assert_eq!(masters.refused_orders(), 2);
//! assert_eq!(masters.target(), "m2");
//! ```
//!
//! [`Message::AskPrimary`]: crate::protocol::Message::AskPrimary
//! [`Message::PrimaryIs`]: crate::protocol::Message::PrimaryIs

use crate::partition::NodeName;
use crate::protocol::ProtocolError;

/// Which master is the primary; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct PrimaryTracker {
    masters: Vec<NodeName>,
    /// The primary believed in, if any.
    primary: Option<NodeName>,
    /// The latest term seen in an order or a redirect.
    term: u64,
    /// The master that sent orders in `term`.
    term_primary: Option<NodeName>,
    /// Which master to ask next while no primary is known.
    probe: usize,
    /// Orders refused: of an older term, or from another master than its term's primary.
    refused: u64,
    /// Masters that redirected this node (they dropped what it sent them): one that sends
    /// orders later must hear of the node anew.
    redirected_by: Vec<NodeName>,
}

impl PrimaryTracker {
    /// A tracker over `masters` (at least one; an empty list is treated as one master named
    /// `master`).
    pub fn new(masters: Vec<NodeName>) -> Self {
        let masters = if masters.is_empty() {
            vec!["master".to_owned()]
        } else {
            masters
        };
        Self {
            masters,
            primary: None,
            term: 0,
            term_primary: None,
            probe: 0,
            refused: 0,
            redirected_by: Vec::new(),
        }
    }

    /// The masters, as configured.
    pub fn masters(&self) -> &[NodeName] {
        &self.masters
    }

    /// Whether `name` is one of the masters.
    pub fn is_master(&self, name: &str) -> bool {
        self.masters.iter().any(|master| master == name)
    }

    /// Where requests for the primary go: the primary if known, else the master to ask next.
    pub fn target(&self) -> &str {
        match &self.primary {
            Some(primary) => primary,
            None => &self.masters[self.probe % self.masters.len()],
        }
    }

    /// The primary, if known.
    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    /// The latest term seen.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// How many orders were refused.
    pub fn refused_orders(&self) -> u64 {
        self.refused
    }

    /// An order (`kind`) from master `from` of term `term`, on a node whose requests went to
    /// master `asked`: `Ok(true)` when `from` is a
    /// primary this node must announce itself to anew (requests went to another master, or
    /// it is the primary of a later term, which forgot what it held in memory), `Ok(false)`
    /// from the master already talked to, an error (counted) when it must be refused.
    pub fn order(
        &mut self,
        from: &str,
        term: u64,
        kind: &'static str,
        asked: &str,
    ) -> Result<bool, ProtocolError> {
        if term < self.term {
            self.refused += 1;
            return Err(ProtocolError::StaleTerm {
                from: from.to_owned(),
                kind,
                term,
                current: self.term,
            });
        }
        if term == self.term
            && let Some(primary) = self
                .term_primary
                .as_ref()
                .filter(|primary| *primary != from)
        {
            self.refused += 1;
            return Err(ProtocolError::NotThePrimary {
                from: from.to_owned(),
                term,
                primary: primary.clone(),
            });
        }
        // News when the requests went elsewhere, or when a primary of a later term took over
        // (even the same master: it forgot its volatile state). Not at the first contact
        // with the master asked: it has the requests.
        let redirected = self.redirected_by.iter().any(|master| master == from);
        self.redirected_by.retain(|master| master != from);
        let new = from != asked || redirected || (self.term != 0 && term > self.term);
        self.term = term;
        self.term_primary = Some(from.to_owned());
        self.primary = Some(from.to_owned());
        Ok(new)
    }

    /// Master `from` says the primary of term `term` is `primary` (none known): returns the
    /// primary to turn to when that is news. A redirect of an older term is ignored.
    pub fn redirect(&mut self, from: &str, primary: Option<&str>, term: u64) -> Option<NodeName> {
        if !self.redirected_by.iter().any(|master| master == from) {
            self.redirected_by.push(from.to_owned());
        }
        if term < self.term {
            return None;
        }
        match primary.filter(|primary| self.is_master(primary)) {
            Some(primary) => {
                let news = term > self.term || self.primary.as_deref() != Some(primary);
                if term > self.term || self.term_primary.is_none() {
                    self.term_primary = Some(primary.to_owned());
                }
                self.term = term;
                if !news {
                    return None;
                }
                self.primary = Some(primary.to_owned());
                // The node announces itself to `primary` now: what `primary` dropped before
                // (it answered that it did not know the primary, during the election it then
                // won) no longer makes its orders news. Announced twice, a storage is taken
                // for one that restarted unnoticed, and its cells go out of date.
                self.redirected_by.retain(|master| master != primary);
                Some(primary.to_owned())
            }
            None => {
                // `from` does not know: if we took it for the primary, we no longer do.
                if self.primary.as_deref() == Some(from) {
                    self.lost(from);
                }
                None
            }
        }
    }

    /// `master` is lost (its link dropped, or it stays silent): if it was the primary, none is
    /// known any more and the next master will be asked.
    pub fn lost(&mut self, master: &str) {
        if self.primary.as_deref() == Some(master) {
            self.primary = None;
            if let Some(index) = self.masters.iter().position(|m| m == master) {
                self.probe = index + 1;
            }
        }
    }

    /// Moves on to the next master to ask, while no primary is known.
    pub fn next_probe(&mut self) {
        if self.primary.is_none() {
            self.probe = self.probe.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> PrimaryTracker {
        PrimaryTracker::new(vec!["m1".into(), "m2".into(), "m3".into()])
    }

    #[test]
    fn redirects_move_to_the_primary_and_ignore_older_terms() {
        let mut masters = tracker();
        assert_eq!(masters.redirect("m1", Some("m2"), 4), Some("m2".into()));
        assert_eq!(masters.redirect("m3", Some("m2"), 4), None, "no news");
        assert_eq!(masters.redirect("m3", Some("m1"), 3), None, "an older term");
        assert_eq!(masters.target(), "m2");
        // Its order of the same term is taken without news; another's is refused.
        assert!(matches!(masters.order("m2", 4, "Finish", "m2"), Ok(false)));
        assert!(matches!(
            masters.order("m1", 4, "Finish", "m1"),
            Err(ProtocolError::NotThePrimary { .. })
        ));
        // A stranger's redirect to a non-master is ignored.
        assert_eq!(masters.redirect("m1", Some("evil"), 9), None);
        assert_eq!(masters.target(), "m2");
    }

    #[test]
    fn a_primary_followed_on_a_redirect_is_not_news_again_at_its_first_order() {
        let mut masters = tracker();
        // During the election m3 does not know the primary; then it wins, and m1 says so.
        assert_eq!(masters.redirect("m3", None, 1), None);
        assert_eq!(masters.redirect("m1", Some("m3"), 2), Some("m3".into()));
        // The node announced itself to m3 on that redirect: m3's first order is no news.
        assert!(matches!(masters.order("m3", 2, "Table", "m3"), Ok(false)));
        // But if m3 then drops what it was sent (it says it does not lead yet, or names
        // itself), its next order is news again: the node must announce itself anew.
        assert_eq!(masters.redirect("m3", Some("m3"), 2), None);
        assert!(matches!(masters.order("m3", 2, "Table", "m3"), Ok(true)));
    }

    #[test]
    fn a_lost_primary_makes_the_next_master_the_one_asked() {
        let mut masters = tracker();
        assert!(
            matches!(masters.order("m1", 1, "Finish", "m1"), Ok(false)),
            "the master asked"
        );
        assert!(
            matches!(masters.order("m1", 2, "Finish", "m1"), Ok(true)),
            "a later term"
        );
        masters.order("m2", 3, "Finish", "m1").expect("an order");
        masters.lost("m2");
        assert_eq!(masters.primary(), None);
        assert_eq!(masters.target(), "m3");
        masters.next_probe();
        assert_eq!(masters.target(), "m1");
        // A master that does not know is not taken for the primary either.
        masters.order("m1", 4, "Finish", "m1").expect("an order");
        assert_eq!(masters.redirect("m1", None, 4), None);
        assert_eq!(masters.primary(), None);
    }
}
