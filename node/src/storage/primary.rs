//! How a storage follows the masters' primary: orders checked against the term, redirects
//! followed, and the storage announced anew to each new primary.
//!
//! A new primary knows the storages' durable state from the log but not their links: the
//! storage announces itself ([`Message::StorageReady`], its address) and asks again about
//! every voted transaction it holds, exactly as after a restart; the primary resends the
//! finishes it is owed first.

use std::time::SystemTime;

use super::Storage;
use crate::protocol::{Message, Order, ProtocolError};

impl Storage {
    /// Orders from the masters, refused (and counted) when of an older term, or from a master
    /// that is not its term's primary; redirects.
    pub(super) fn handle_master_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::FromPrimary {
                term,
                message: Order(order),
            } => {
                let asked = self.master.clone();
                if self.masters.order(from, term, order.kind(), &asked)? {
                    self.follow_primary(from);
                }
                self.handle_master(now, *order)
            }
            Message::PrimaryIs { primary, term, .. } => {
                match self.masters.redirect(from, primary.as_deref(), term) {
                    Some(primary) => self.follow_primary(&primary),
                    None if self.masters.primary().is_none() => {
                        // No primary yet (an election goes on): ask again shortly.
                        self.masters.next_probe();
                        self.reannounce_at.get_or_insert(now + super::PRIMARY_RETRY);
                    }
                    None => {}
                }
                Ok(())
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// `primary` is the primary now: it hears of this storage as after a restart.
    fn follow_primary(&mut self, primary: &str) {
        self.master = primary.to_owned();
        self.reannounce_at = None;
        self.out.send(primary, Message::StorageReady);
        if let Some(address) = self.address {
            self.out.send(primary, Message::StorageAddress { address });
        }
        let voted: Vec<_> = self
            .transactions
            .iter()
            .filter(|(_, txn)| txn.voted)
            .map(|(ttid, _)| *ttid)
            .chain(self.recovering.keys().copied())
            .collect();
        for ttid in voted {
            self.out.send(primary, Message::AskOutcome { ttid });
        }
    }

    /// The link to master `master` is lost: if it was the primary, every master is asked
    /// who is now (a new primary also tells this storage by itself).
    pub(super) fn master_lost(&mut self, now: SystemTime, master: &str) {
        let _ = now;
        // Requests went to `master`, which is lost: ask the others.
        let asked = self.masters.primary().is_none() && self.master == master;
        if (self.masters.primary() != Some(master) && !asked) || self.masters.masters().len() < 2 {
            return;
        }
        self.masters.lost(master);
        if asked {
            self.masters.next_probe();
        }
        let masters: Vec<String> = self.masters.masters().to_vec();
        for other in masters.iter().filter(|other| *other != master) {
            self.out.send(other, Message::AskPrimary);
        }
    }

    /// Orders refused since the start: of an older term (a deposed primary's), or from a
    /// master that is not its term's primary.
    pub fn refused_orders(&self) -> u64 {
        self.masters.refused_orders()
    }

    /// The master this storage takes for the primary, if it knows one.
    pub fn primary(&self) -> Option<&str> {
        self.masters.primary()
    }

    /// The master this storage reports to now: the primary, or the master it asks next.
    pub fn master_name(&self) -> &str {
        &self.master
    }

    /// Where master `name` is, for the driver: none known here (the configuration's
    /// directory has the masters).
    pub fn masters(&self) -> &[String] {
        self.masters.masters()
    }
}
