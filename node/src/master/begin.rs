//! How a transaction begins at the primary: the clients it numbers at their welcome, so that
//! each makes the temporary TIDs of its transactions itself and tells them one way (`Begin`),
//! and the restores, which begin at a chosen commit TID and are answered.
//!
//! A `Begin` is refused (a typed error; the transaction stays unknown here, so its finish is
//! answered aborted) when the ttid does not carry the client's number, is open already, or was
//! decided: a storage that asked about a ttid it held stores of and was told aborted (the
//! stores overtook the `Begin`) must never see it commit. The primary's TID clock never looks
//! at a client's ttid: a client clock ahead cannot push commit TIDs into the future.
//!
//! A `Begin` made with an older partition table than the primary's is taken: its client may
//! store without cells that started feeding since (before clients made their ttids, the answer
//! to a begin came after the new table, on the same link, so only transactions open at the
//! change could). Replication rounds still waiting for open transactions wait for it too, and
//! its finish sends every writable cell it did not write, and whose round does not wait for
//! it, to catch up past it (see [`Master::missed_cells`]).

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::Master;
use super::open::Open;
use crate::client::MASTER_NUMBER;
use crate::ids::Tid;
use crate::protocol::{Message, ProtocolError};

impl Master {
    /// Counts `client` as a client and sends it what it needs to work: where the storages
    /// are, where its history starts, its number and this primary's clock for the temporary
    /// TIDs it makes, then the table (a client is ready once it has the table, and by then it
    /// must know the rest). Refused when every number is taken.
    pub(super) fn welcome_client(
        &mut self,
        now: SystemTime,
        client: &str,
    ) -> Result<(), ProtocolError> {
        let number = self.client_number(client)?;
        self.clients.insert(client.to_owned());
        self.send_address_book(client);
        self.out.send(
            client,
            Message::LastTransaction {
                tid: self.last_announced(),
            },
        );
        // What this primary's clock reads, never behind a TID it handed out.
        let clock = Tid::from_system_time(now).max(self.clock.last());
        self.out.send(client, Message::TtidSpace { number, clock });
        self.out
            .send(client, Message::PartitionTable(self.state.table.clone()));
        Ok(())
    }

    /// The number of `client`: the one it has while known, else the lowest free one
    /// ([`MASTER_NUMBER`] is this primary's own).
    fn client_number(&mut self, client: &str) -> Result<u16, ProtocolError> {
        if let Some(number) = self.client_numbers.get(client) {
            return Ok(*number);
        }
        let taken: BTreeSet<u16> = self.client_numbers.values().copied().collect();
        let number = (0..MASTER_NUMBER)
            .find(|number| !taken.contains(number))
            .ok_or(ProtocolError::TooManyClients {
                from: client.to_owned(),
                max: usize::from(MASTER_NUMBER),
            })?;
        self.client_numbers.insert(client.to_owned(), number);
        Ok(number)
    }

    /// Opens transaction `ttid`, which client `from` made itself with table version
    /// `table_version`: refused unless it carries the client's number and was neither begun
    /// nor decided before (a storage that asked about it was told it aborted: it must stay
    /// so). Not answered.
    pub(super) fn begin_own(
        &mut self,
        from: &str,
        ttid: Tid,
        table_version: u64,
    ) -> Result<(), ProtocolError> {
        let refused = |reason| ProtocolError::BeginRefused {
            from: from.to_owned(),
            ttid,
            reason,
        };
        let number = self.client_numbers.get(from).copied();
        if number.is_none_or(|number| ttid.0 & 0xffff != u64::from(number)) {
            return Err(refused("its low 16 bits are not the client's number"));
        }
        if self.open.contains_key(&ttid) {
            return Err(refused("it is open already"));
        }
        if self.outcome(ttid).is_some() {
            return Err(refused("it was decided already"));
        }
        if table_version < self.state.table.version() {
            // Its stores may miss cells that started feeding since: the rounds still waiting
            // copy it, the others learn it at its finish.
            self.replication.wait_also_for(ttid);
        }
        self.open.insert(
            ttid,
            Open {
                client: from.to_owned(),
                finish_queued: false,
                tid: None,
                table_version,
            },
        );
        Ok(())
    }

    /// Opens a transaction for client `from` that commits at `tid`, with a temporary TID from
    /// this primary's clock (its number, [`MASTER_NUMBER`], in the low bits, so that no
    /// client's ttid is the same).
    pub(super) fn begin_at(
        &mut self,
        now: SystemTime,
        from: &str,
        tid: Tid,
    ) -> Result<(), ProtocolError> {
        let allocated = self.clock.allocate(now)?;
        let ttid = Tid(allocated.0 | u64::from(MASTER_NUMBER));
        // The next ttid of this clock is in a later step, whatever its low bits.
        self.clock.observe(ttid);
        self.open.insert(
            ttid,
            Open {
                client: from.to_owned(),
                finish_queued: false,
                tid: Some(tid),
                // Answered after the current table, on the same link.
                table_version: self.state.table.version(),
            },
        );
        self.out.send(from, Message::AnswerBegin { ttid });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::ids::{Oid, Tid};
    use crate::master::MasterEvent;
    use crate::master::test_support::{begin, drain, events, finish, replicate_to, running_master};
    use crate::partition::CellState;
    use crate::protocol::{Message, ProtocolError, TransactionOutcome};

    /// The number the master gave `client` in its welcome.
    fn welcome(master: &mut crate::master::Master, now: SystemTime, client: &str) -> u16 {
        master
            .handle(now, client, Message::ClientHello)
            .expect("hello");
        drain(master)
            .into_iter()
            .find_map(|transmit| match transmit.message {
                Message::TtidSpace { number, .. } if transmit.to == client => Some(number),
                _ => None,
            })
            .expect("a number")
    }

    /// `from` tells the master it began `ttid` with table `table_version`.
    fn send_begin(
        master: &mut crate::master::Master,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        table_version: u64,
    ) -> Result<(), ProtocolError> {
        master.handle(
            now,
            from,
            Message::Begin {
                ttid,
                table_version,
            },
        )
    }

    fn ttid_of(now: SystemTime, number: u16) -> Tid {
        Tid((Tid::from_system_time(now).0 & !0xffff) | u64::from(number))
    }

    #[test]
    fn clients_get_distinct_numbers_the_same_again_while_known_and_a_freed_one_back() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let c1 = welcome(&mut master, now, "c1");
        let c2 = welcome(&mut master, now, "c2");
        assert_ne!(c1, c2);
        assert_eq!(
            welcome(&mut master, now, "c1"),
            c1,
            "known: the same number"
        );
        master.peer_lost(now, "c1").expect("lost");
        // c1's number is free: the next client gets it, c1 another one.
        assert_eq!(welcome(&mut master, now, "c3"), c1);
        let again = welcome(&mut master, now, "c1");
        assert!(again != c1 && again != c2, "{again}");
    }

    #[test]
    fn the_welcome_carries_the_primarys_clock_not_behind_its_last_tid() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let ahead = Tid::from_system_time(now + std::time::Duration::from_secs(600));
        master.clock.observe(ahead);
        master
            .handle(now, "c2", Message::ClientHello)
            .expect("hello");
        let kinds: Vec<Message> = drain(&mut master)
            .into_iter()
            .map(|transmit| transmit.message)
            .collect();
        let space = kinds.iter().position(
            |message| matches!(message, Message::TtidSpace { clock, .. } if *clock == ahead),
        );
        let table = kinds
            .iter()
            .position(|message| matches!(message, Message::PartitionTable(_)));
        assert!(space.is_some() && space < table, "{kinds:?}");
    }

    #[test]
    fn a_begin_with_another_clients_number_is_refused() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let c2 = welcome(&mut master, now, "c2");
        let ttid = ttid_of(now, c2);
        let refused = send_begin(&mut master, now, "c1", ttid, 1);
        assert!(
            matches!(refused, Err(ProtocolError::BeginRefused { ref from, .. }) if from == "c1"),
            "{refused:?}"
        );
        assert_eq!(master.peer_load("c1", Some(ttid)).open_transactions, 0);
        // Its finish is answered aborted: the transaction is unknown here.
        master
            .handle(
                now,
                "c1",
                Message::AskFinish {
                    ttid,
                    oids: vec![Oid(1)],
                    voters: vec!["s1".into(), "s2".into()],
                    failed: Vec::new(),
                },
            )
            .expect("finish asked");
        assert!(drain(&mut master).iter().any(|transmit| transmit.message
            == Message::AnswerFinish {
                ttid,
                outcome: TransactionOutcome::Aborted
            }));
        // The owner of the number begins its own ttids, not that one: it is aborted for good.
        assert!(send_begin(&mut master, now, "c2", ttid, 1).is_err());
        let next = Tid(ttid.0 + (1 << 16));
        send_begin(&mut master, now, "c2", next, 1).expect("c2's own ttid");
        assert!(master.peer_load("c2", Some(next)).knows_transaction);
    }

    #[test]
    fn a_ttid_open_or_told_aborted_is_not_begun_again() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let open = begin(&mut master, now);
        assert!(matches!(
            send_begin(&mut master, now, "c1", open, 1),
            Err(ProtocolError::BeginRefused { .. })
        ));
        // A storage holds stores of a ttid whose Begin has not arrived, waits, and asks: the
        // master never heard of it, so it is aborted...
        let late = Tid(open.0 + (1 << 16));
        master
            .handle(now, "s1", Message::AskOutcome { ttid: late })
            .expect("asked");
        assert!(drain(&mut master).iter().any(|transmit| transmit.message
            == Message::Outcome {
                ttid: late,
                outcome: TransactionOutcome::Aborted
            }));
        // ... for good: the late Begin does not open it.
        assert!(matches!(
            send_begin(&mut master, now, "c1", late, 1),
            Err(ProtocolError::BeginRefused { .. })
        ));
        assert_eq!(master.outcome(late), Some(TransactionOutcome::Aborted));
        assert_eq!(master.peer_load("c1", None).open_transactions, 1);
    }

    /// An oid of a partition `node` holds a cell of.
    fn oid_on(master: &crate::master::Master, node: &str) -> Oid {
        let partition = master.table().partitions_of(node).next().expect("a cell");
        (0u64..)
            .map(Oid)
            .find(|oid| master.table().partition_of(*oid) == partition)
            .expect("an oid")
    }

    #[test]
    fn a_begin_made_with_an_older_table_holds_back_the_replication_rounds_still_waiting() {
        let now = SystemTime::now();
        let mut master = running_master(now, 12, &["s1", "s2", "s3"]);
        let number = welcome(&mut master, now, "c1");
        master.peer_lost(now, "s3").expect("lost");
        let stale = master.table().version();
        drain(&mut master);
        // A transaction is open when s3 comes back: its round waits for it.
        let open = begin(&mut master, now);
        master
            .handle(now, "s3", Message::StorageReady)
            .expect("ready");
        assert_eq!(
            replicate_to(&drain(&mut master), "s3").map(|(up_to, _)| up_to),
            None
        );
        // c1 made this ttid before the table with s3 feeding reached it: its stores skip s3.
        let ttid = Tid(ttid_of(now, number).0.max(open.0) + (1 << 16));
        send_begin(&mut master, now, "c1", ttid, stale)
            .expect("a begin with an older table is taken");
        master
            .handle(now, "c1", Message::AbortTransaction { ttid: open })
            .expect("abort");
        assert_eq!(
            replicate_to(&drain(&mut master), "s3").map(|(up_to, _)| up_to),
            None,
            "the round waits for the late begin too"
        );
        let oid = oid_on(&master, "s3");
        let tid = finish(&mut master, now, ttid, vec![oid], &["s1", "s2"]).0;
        assert_eq!(
            master.outcome(ttid),
            Some(TransactionOutcome::Committed(tid))
        );
        assert!(
            master
                .table()
                .partitions()
                .flatten()
                .filter(|cell| cell.node == "s3")
                .all(|cell| cell.state == CellState::Feeding),
            "the round copies it: s3 is not sent back"
        );
        assert_eq!(
            replicate_to(&drain(&mut master), "s3").map(|(up_to, _)| up_to),
            Some(tid)
        );
    }

    #[test]
    fn a_begin_made_with_an_older_table_sends_cells_whose_round_has_its_bound_to_catch_up_again() {
        let now = SystemTime::now();
        let mut master = running_master(now, 12, &["s1", "s2", "s3"]);
        let number = welcome(&mut master, now, "c1");
        master.peer_lost(now, "s3").expect("lost");
        let stale = master.table().version();
        // Nothing open: s3's round takes its bound at once, before c1's begin arrives.
        master
            .handle(now, "s3", Message::StorageReady)
            .expect("ready");
        let bound = replicate_to(&drain(&mut master), "s3")
            .map(|(up_to, _)| up_to)
            .expect("Replicate at once");
        let ttid = ttid_of(now, number);
        send_begin(&mut master, now, "c1", ttid, stale)
            .expect("a begin with an older table is taken");
        let oid = oid_on(&master, "s3");
        let tid = finish(&mut master, now, ttid, vec![oid], &["s1", "s2"]).0;
        assert!(tid > bound);
        assert_eq!(
            master.outcome(ttid),
            Some(TransactionOutcome::Committed(tid))
        );
        // Without its stores, and its round's bound before the commit, s3 would miss the
        // commit for good: it is out of date, and catches up past it once it asks.
        assert!(events(&mut master).contains(&MasterEvent::StorageOutOfDate { node: "s3".into() }));
        master
            .handle(now, "s3", Message::AskCatchUp)
            .expect("catch up");
        assert_eq!(
            replicate_to(&drain(&mut master), "s3").map(|(up_to, _)| up_to),
            Some(tid)
        );

        // A begin with the current table sends nothing back.
        let current = master.table().version();
        let next = Tid(ttid.0 + (1 << 16));
        send_begin(&mut master, now, "c1", next, current).expect("begun");
        let oid = oid_on(&master, "s3");
        finish(&mut master, now, next, vec![oid], &["s1", "s2", "s3"]);
        assert!(
            !events(&mut master).contains(&MasterEvent::StorageOutOfDate { node: "s3".into() })
        );
    }

    #[test]
    fn client_ttids_do_not_move_the_primarys_clock() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let number = welcome(&mut master, now, "c1");
        let before = master.clock.last();
        // A client whose clock is an hour ahead (uncorrected).
        let ahead = ttid_of(now + std::time::Duration::from_secs(3600), number);
        send_begin(&mut master, now, "c1", ahead, 1).expect("begin");
        assert_eq!(master.clock.last(), before);
        // A restore's ttid comes from the primary's clock, with the primary's own number.
        master
            .handle(now, "c1", Message::AskBeginAt { tid: Tid::MAX })
            .expect("begin at");
        let restore = drain(&mut master)
            .into_iter()
            .find_map(|transmit| match transmit.message {
                Message::AnswerBegin { ttid } => Some(ttid),
                _ => None,
            })
            .expect("answered");
        assert_eq!(restore.0 & 0xffff, u64::from(crate::client::MASTER_NUMBER));
        assert!(restore < ahead);
    }
}
