//! Replication as the master runs it: which feeding cell catches up to which TID, and when it
//! becomes up to date.
//!
//! NEO's scheme. When cells of a storage go [feeding](crate::partition::CellState::Feeding)
//! (the storage came back after failing, or the table gave it new cells), new transactions
//! write to them; but transactions already open may not, since their clients chose replicas
//! from an older table. A client's [`Begin`](Message::Begin) names the version of the table it
//! had, and one made with an older table than the primary's while cells feed is refused (see
//! `master::begin`), so only the transactions open at that moment can miss the cells. The
//! master waits for those to end, then sends the storage a
//! [`Replicate`](Message::Replicate) with the last committed TID as the bound: every commit
//! after it reached the storage live, everything up to it the storage copies from an
//! up-to-date cell. When the storage reports a partition
//! [replicated](Message::Replicated) to that bound, its cell becomes up to date and the new
//! table goes to everyone.
//!
//! The bound names the round. A cell that goes out of date again gets a later bound when it
//! feeds again (the commit it missed is after the old bound), so a report of an older round
//! changes nothing. With each `Replicate` the master also says up to which TID it knows the
//! storage holds the partition whole (the last commit before its cell went out of date), so
//! that a storage back after a short failure copies what it missed, not the whole history.

use std::collections::{BTreeMap, BTreeSet};

use super::{Master, MasterEvent};
use crate::ids::Tid;
use crate::partition::{CellState, NodeName, PartitionTable};
use crate::protocol::{Message, ProtocolError};

/// The primary's volatile replication bookkeeping (the rounds' bounds and what out-of-date
/// cells hold whole are in the [replicated state](super::state::ReplicatedState)); see the
/// [module documentation](self).
#[derive(Debug, Default)]
pub(super) struct Replication {
    /// Storages with feeding cells not yet told to replicate.
    waiting: BTreeMap<NodeName, Wait>,
    /// Storages whose connection was lost: one that speaks again (without a new
    /// `StorageReady`) runs again.
    pub(super) lost: BTreeSet<NodeName>,
    /// The table version from which each writable cell has been writable without a break, as
    /// this primary saw it (0: since before it became primary). A transaction begun with an
    /// older table may have stored without the cell.
    writable_since: BTreeMap<(u32, NodeName), u64>,
    /// The table version `writable_since` follows: it changes with the table only, so the
    /// cells are looked at again only when the version moved.
    followed_version: Option<u64>,
}

/// A storage's feeding cells waiting for the transactions that may not write to them.
#[derive(Debug, Default)]
struct Wait {
    /// The partitions of the cells.
    cells: BTreeSet<u32>,
    /// The transactions open when one of the cells started feeding, not ended yet.
    open: BTreeSet<Tid>,
}

impl Replication {
    /// Makes every round still waiting for open transactions wait for `ttid` too: a
    /// transaction begun with an older table than the one that started those rounds.
    pub(super) fn wait_also_for(&mut self, ttid: Tid) {
        for wait in self.waiting.values_mut() {
            wait.open.insert(ttid);
        }
    }

    /// Starts the writable cells' history when this master becomes primary: every cell
    /// writable in `table` counts as writable from the start.
    pub(super) fn writable_from_start(&mut self, table: &PartitionTable) {
        self.writable_since = writable_cells(table).map(|cell| (cell, 0)).collect();
        self.followed_version = Some(table.version());
    }

    /// Follows `table`: a cell that became writable is so from its version on; one that is
    /// not writable is forgotten.
    fn follow_writable(&mut self, table: &PartitionTable) {
        if self.followed_version == Some(table.version()) {
            return;
        }
        self.followed_version = Some(table.version());
        let writable: BTreeSet<(u32, NodeName)> = writable_cells(table).collect();
        self.writable_since
            .retain(|cell, _| writable.contains(cell));
        for cell in writable {
            self.writable_since.entry(cell).or_insert(table.version());
        }
    }

    /// Whether `node`'s cell in `partition` became writable after table `version` (or is not
    /// known to have been writable then).
    pub(super) fn writable_after(&self, partition: u32, node: &str, version: u64) -> bool {
        self.writable_since
            .get(&(partition, node.to_owned()))
            .is_none_or(|since| *since > version)
    }

    /// Whether the round of `node`'s feeding cell in `partition` will copy transaction `ttid`:
    /// it waits for it to end before taking its bound.
    pub(super) fn covers(&self, partition: u32, node: &str, ttid: Tid) -> bool {
        self.waiting
            .get(node)
            .is_some_and(|wait| wait.cells.contains(&partition) && wait.open.contains(&ttid))
    }
}

/// The writable cells of `table`, as (partition, node).
fn writable_cells(table: &PartitionTable) -> impl Iterator<Item = (u32, NodeName)> + '_ {
    (0u32..)
        .zip(table.partitions())
        .flat_map(|(partition, cells)| {
            cells
                .iter()
                .filter(|cell| cell.is_writable())
                .map(move |cell| (partition, cell.node.clone()))
        })
}

impl Master {
    /// Storage `node` (re)started, or speaks again after the master counted it as lost: it
    /// gets the other storages' addresses and the table; its process may know nothing of an
    /// earlier round, so its feeding cells start a new one, and its out-of-date cells start
    /// feeding.
    pub(super) fn storage_back(&mut self, node: &str) -> Result<(), ProtocolError> {
        self.replication.lost.remove(node);
        self.send_address_book(node);
        self.replication.waiting.remove(node);
        self.state.bounds.retain(|(_, cell), _| cell != node);
        if self.state.table.start_feeding(node)? > 0 {
            self.broadcast_table();
        } else {
            self.out
                .send(node, Message::PartitionTable(self.state.table.clone()));
        }
        Ok(())
    }

    /// A running storage whose cells went out of date while it stayed up asks to catch up:
    /// they feed again. (From one the master no longer counts as running, the question
    /// crossed its loss and is ignored.)
    pub(super) fn catch_up_asked(&mut self, node: &str) -> Result<(), ProtocolError> {
        if self.running.contains(node) && self.state.table.start_feeding(node)? > 0 {
            self.broadcast_table();
        }
        Ok(())
    }

    /// Before `node`'s cells go out of date: remembers, for each of them that is up to date,
    /// that it holds everything up to the last completed commit.
    pub(super) fn note_out_of_date(&mut self, node: &str) {
        let last = self.state.last_committed;
        for (partition, cells) in (0u32..).zip(self.state.table.partitions()) {
            if cells
                .iter()
                .any(|cell| cell.node == node && cell.state == CellState::UpToDate)
            {
                self.state
                    .complete_to
                    .insert((partition, node.to_owned()), last);
            }
        }
    }

    /// Brings the bookkeeping in line with the table: forgets the rounds of cells that are no
    /// longer feeding, starts waiting for the open transactions of cells that just started,
    /// and sends [`Message::Replicate`] to each storage whose wait is over.
    ///
    /// Runs after every message, loss and timeout, so that any change of the table (also an
    /// operator's) is followed.
    pub(super) fn sync_replication(&mut self) {
        self.replication.follow_writable(&self.state.table);
        let feeding: BTreeSet<(u32, NodeName)> = (0u32..)
            .zip(self.state.table.partitions())
            .flat_map(|(partition, cells)| {
                cells
                    .iter()
                    .filter(|cell| cell.state == CellState::Feeding)
                    .map(move |cell| (partition, cell.node.clone()))
            })
            .collect();
        self.state.bounds.retain(|cell, _| feeding.contains(cell));
        // What a cell held whole matters until it is up to date again, or gone.
        let table = &self.state.table;
        self.state.complete_to.retain(|(partition, node), _| {
            table.cells(*partition).is_ok_and(|cells| {
                cells
                    .iter()
                    .any(|cell| cell.node == *node && cell.state != CellState::UpToDate)
            })
        });
        let unbounded: BTreeSet<(u32, NodeName)> = feeding
            .iter()
            .filter(|cell| !self.state.bounds.contains_key(*cell))
            .filter(|(_, node)| self.running.contains(node))
            .cloned()
            .collect();
        self.replication
            .waiting
            .retain(|node, _| unbounded.iter().any(|(_, cell)| cell == node));
        for (partition, node) in &unbounded {
            let wait = self.replication.waiting.entry(node.clone()).or_default();
            if wait.cells.insert(*partition) {
                // Transactions begun from now on write here (a begin with an older table
                // is refused); those open now may not.
                wait.open.extend(self.open.keys().copied());
            }
        }
        let mut ready = Vec::new();
        for (node, wait) in &mut self.replication.waiting {
            wait.open.retain(|ttid| self.open.contains_key(ttid));
            if wait.open.is_empty() {
                ready.push(node.clone());
            }
        }
        let up_to = self.state.last_committed;
        for node in ready {
            self.replication.waiting.remove(&node);
            let partitions: Vec<(u32, Tid)> = unbounded
                .iter()
                .filter(|(_, cell)| *cell == node)
                .map(|(partition, _)| {
                    let key = (*partition, node.clone());
                    self.state.bounds.insert(key.clone(), up_to);
                    let whole = self
                        .state
                        .complete_to
                        .get(&key)
                        .copied()
                        .unwrap_or(Tid::ZERO);
                    (*partition, whole)
                })
                .collect();
            self.events.push_back(MasterEvent::ReplicationStarted {
                node: node.clone(),
                up_to,
                partitions: partitions.len(),
            });
            // The sources' addresses first: a storage added by an operator has none yet.
            self.send_address_book(&node);
            self.out
                .send(&node, Message::Replicate { up_to, partitions });
        }
    }

    /// `from` reports `partition` replicated up to `up_to`: its cell becomes up to date if
    /// that is the bound of its current round.
    pub(super) fn replicated(
        &mut self,
        from: &str,
        partition: u32,
        up_to: Tid,
    ) -> Result<(), ProtocolError> {
        let key = (partition, from.to_owned());
        if self.state.bounds.get(&key) != Some(&up_to) {
            // An earlier round's report, crossed by the cell going out of date: the storage
            // gets (or got) a new Replicate.
            return Ok(());
        }
        self.state.table.mark_up_to_date(partition, from)?;
        self.state.bounds.remove(&key);
        self.state.complete_to.remove(&key);
        self.events.push_back(MasterEvent::CellUpToDate {
            partition,
            node: from.to_owned(),
        });
        let caught_up = self
            .state
            .table
            .partitions()
            .flatten()
            .all(|cell| cell.node != from || cell.state == CellState::UpToDate);
        if caught_up {
            self.events.push_back(MasterEvent::StorageUpToDate {
                node: from.to_owned(),
            });
        }
        self.broadcast_table();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::ids::Tid;
    use crate::master::test_support::{begin, drain, events, replicate_to, running_master};
    use crate::master::{Master, MasterConfig, MasterEvent};
    use crate::partition::{CellState, PartitionTable};
    use crate::protocol::{Message, Transmit};

    /// A master with s1..s3 running and client c1; s3 was lost and is out of date.
    fn master_with_s3_out_of_date(now: SystemTime) -> Master {
        let mut master = running_master(now, 12, &["s1", "s2", "s3"]);
        master.peer_lost(now, "s3").expect("lost");
        drain(&mut master);
        events(&mut master);
        master
    }

    fn cells_of<'a>(master: &'a Master, node: &'a str) -> impl Iterator<Item = CellState> + 'a {
        master
            .table()
            .partitions()
            .flatten()
            .filter(move |cell| cell.node == node)
            .map(|cell| cell.state)
    }

    #[test]
    fn a_returning_storage_feeds_and_is_told_to_replicate_once_open_transactions_end() {
        let now = SystemTime::now();
        let mut master = master_with_s3_out_of_date(now);
        assert!(cells_of(&master, "s3").all(|state| state == CellState::OutOfDate));
        // A transaction is open when s3 comes back: its client chose replicas without s3.
        let ttid = begin(&mut master, now);

        master
            .handle(now, "s3", Message::StorageReady)
            .expect("ready");
        let sent = drain(&mut master);
        assert!(cells_of(&master, "s3").all(|state| state == CellState::Feeding));
        let tables: Vec<&str> = sent
            .iter()
            .filter(|transmit| matches!(transmit.message, Message::PartitionTable(_)))
            .map(|transmit| transmit.to.as_str())
            .collect();
        assert!(tables.contains(&"c1"), "the client learns s3 is writable");
        assert_eq!(replicate_to(&sent, "s3"), None, "{ttid} is still open");

        // The open transaction ends (here: aborted by its client); now s3 replicates.
        master
            .handle(now, "c1", Message::AbortTransaction { ttid })
            .expect("abort");
        let sent = drain(&mut master);
        let (up_to, partitions) = replicate_to(&sent, "s3").expect("Replicate sent");
        assert_eq!(up_to, Tid::ZERO, "nothing committed yet");
        let mut expected: Vec<u32> = master.table().partitions_of("s3").collect();
        expected.sort_unstable();
        let mut asked: Vec<u32> = partitions.iter().map(|(partition, _)| *partition).collect();
        asked.sort_unstable();
        assert_eq!(asked, expected);
        assert!(events(&mut master).iter().any(
            |event| matches!(event, MasterEvent::ReplicationStarted { node, .. } if node == "s3")
        ));

        // A report for another bound is from an older round: nothing changes.
        let stale = master.table().clone();
        master
            .handle(
                now,
                "s3",
                Message::Replicated {
                    partition: asked[0],
                    up_to: Tid(12_345),
                },
            )
            .expect("a stale report is no error");
        assert_eq!(master.table(), &stale);

        // Each partition reported at the bound becomes readable; the last one completes s3.
        for (index, partition) in asked.iter().enumerate() {
            master
                .handle(
                    now,
                    "s3",
                    Message::Replicated {
                        partition: *partition,
                        up_to,
                    },
                )
                .expect("replicated");
            let cells = master.table().cells(*partition).expect("a partition");
            assert!(cells.iter().all(|cell| cell.state == CellState::UpToDate));
            let sent = drain(&mut master);
            assert!(
                sent.iter().any(|transmit| transmit.to == "c1"
                    && matches!(transmit.message, Message::PartitionTable(_))),
                "the new table goes to the client"
            );
            let caught_up =
                events(&mut master).contains(&MasterEvent::StorageUpToDate { node: "s3".into() });
            assert_eq!(caught_up, index + 1 == asked.len());
        }
        assert!(cells_of(&master, "s3").all(|state| state == CellState::UpToDate));
    }

    #[test]
    fn a_running_storage_reported_failed_feeds_again_once_it_asks() {
        let now = SystemTime::now();
        let mut master = running_master(now, 12, &["s1", "s2", "s3"]);
        let ttid = begin(&mut master, now);
        // The client's transaction saw s3 fail; s1 voted for an object of a partition that s1
        // shares with s3.
        let oid = crate::ids::Oid(0);
        master
            .handle(
                now,
                "c1",
                Message::AskFinish {
                    ttid,
                    oids: vec![oid],
                    voters: vec!["s1".into()],
                    failed: vec!["s3".into()],
                },
            )
            .expect("finish");
        let sent = drain(&mut master);
        assert!(events(&mut master).contains(&MasterEvent::StorageOutOfDate { node: "s3".into() }));
        // s3 may be gone: it stays out of the writes until it shows it is there.
        assert!(cells_of(&master, "s3").all(|state| state == CellState::OutOfDate));
        assert!(
            sent.iter().any(|transmit| transmit.to == "s3"
                && matches!(transmit.message, Message::PartitionTable(_))),
            "s3 learns its cells are out of date"
        );
        // It is: it asks to catch up, its cells feed, and once the finish completes (the one
        // transaction open when they started) it is told to replicate up to that commit.
        master
            .handle(now, "s3", Message::AskCatchUp)
            .expect("catch up");
        assert!(cells_of(&master, "s3").all(|state| state == CellState::Feeding));
        assert_eq!(replicate_to(&drain(&mut master), "s3"), None);
        let tid = sent
            .iter()
            .find_map(|transmit| match transmit.message {
                Message::Finish { tid, .. } if transmit.to == "s1" => Some(tid),
                _ => None,
            })
            .expect("s1 finishes");
        master
            .handle(now, "s1", Message::Finished { ttid, tid })
            .expect("finished");
        let (up_to, partitions) = replicate_to(&drain(&mut master), "s3").expect("Replicate");
        assert_eq!(up_to, tid);
        assert!(
            partitions.iter().all(|(_, whole)| *whole == Tid::ZERO),
            "s3 held everything committed before it went out of date: nothing"
        );
    }

    #[test]
    fn a_storage_counted_as_lost_that_speaks_runs_again_and_feeds() {
        let now = SystemTime::now();
        let mut master = master_with_s3_out_of_date(now);
        assert!(!master.running_storages().any(|node| node == "s3"));
        // Its link was only lost, or the loss reported late: it still asks about a transaction.
        master
            .handle(now, "s3", Message::AskOutcome { ttid: Tid(77) })
            .expect("an answer");
        assert!(master.running_storages().any(|node| node == "s3"));
        assert!(cells_of(&master, "s3").all(|state| state == CellState::Feeding));
        let sent = drain(&mut master);
        assert!(sent.iter().any(|transmit| transmit.to == "s3"
            && matches!(&transmit.message, Message::PartitionTable(table)
                if table.partitions().flatten().any(|cell| cell.node == "s3" && cell.state == CellState::Feeding))));
        let (up_to, _) = replicate_to(&sent, "s3").expect("nothing open: Replicate at once");
        assert_eq!(up_to, Tid::ZERO);

        // A storage that never announced itself is not made running by a message.
        let storages = ["s1", "s2", "s3"].map(String::from);
        let table = PartitionTable::new(12, 2, &storages).expect("a valid table");
        let mut fresh = Master::new(table, MasterConfig::default()).expect("a lone master");
        fresh
            .handle(now, "s2", Message::AskOutcome { ttid: Tid(77) })
            .expect("an answer");
        assert_eq!(fresh.running_storages().count(), 0);
    }

    /// An object of a partition whose cells are exactly `nodes`.
    fn oid_on(master: &Master, nodes: [&str; 2]) -> crate::ids::Oid {
        (0..64)
            .map(crate::ids::Oid)
            .find(|oid| {
                let mut cells: Vec<&str> = master
                    .table()
                    .cells(master.table().partition_of(*oid))
                    .expect("a partition")
                    .iter()
                    .map(|cell| cell.node.as_str())
                    .collect();
                cells.sort_unstable();
                cells == nodes
            })
            .expect("every pair of storages shares a partition")
    }

    /// The table `c1` last got before the answer to its finish, and that answer's TID.
    fn table_before_answer(sent: &[Transmit]) -> (Option<PartitionTable>, Tid) {
        let mut table = None;
        for transmit in sent.iter().filter(|transmit| transmit.to == "c1") {
            match &transmit.message {
                Message::PartitionTable(new) => table = Some(new.clone()),
                Message::AnswerFinish {
                    outcome: crate::protocol::TransactionOutcome::Committed(tid),
                    ..
                } => return (table, *tid),
                _ => {}
            }
        }
        panic!("no commit answered to c1: {sent:?}");
    }

    /// P7: a storage that failed during a transaction must not stay readable in a partition
    /// the transaction wrote, also when another of its cells is the last readable copy of its
    /// partition (then that one cell stays readable, and only it).
    #[test]
    fn a_failed_storage_is_not_readable_where_the_commit_wrote_though_it_holds_a_last_copy() {
        let now = SystemTime::now();
        let mut master = master_with_s3_out_of_date(now);
        let oid = oid_on(&master, ["s1", "s2"]);
        let written = master.table().partition_of(oid);
        let ttid = begin(&mut master, now);
        master
            .handle(
                now,
                "c1",
                Message::AskFinish {
                    ttid,
                    oids: vec![oid],
                    voters: vec!["s1".into()],
                    failed: vec!["s2".into()],
                },
            )
            .expect("finish");
        let mut sent = drain(&mut master);
        let tid = sent
            .iter()
            .find_map(|transmit| match transmit.message {
                Message::Finish { tid, .. } if transmit.to == "s1" => Some(tid),
                _ => None,
            })
            .expect("s1 finishes");
        master
            .handle(now, "s1", Message::Finished { ttid, tid })
            .expect("finished");
        sent.extend(drain(&mut master));
        let (table, committed) = table_before_answer(&sent);
        assert_eq!(committed, tid);
        let table = table.expect("c1 learned a new table before the commit");
        let readable: Vec<&str> = table
            .cells(written)
            .expect("a partition")
            .iter()
            .filter(|cell| cell.is_readable())
            .map(|cell| cell.node.as_str())
            .collect();
        assert_eq!(
            readable,
            ["s1"],
            "only the voter serves the written partition"
        );
        assert!(table.is_operational(), "s2's last copies stay readable");
        assert!(
            table
                .partitions()
                .flatten()
                .any(|cell| cell.node == "s2" && cell.is_readable())
        );
    }

    /// P7, the finish's side: a voter silent past the finish timeout goes out of date where
    /// another voter has the commit; where it is the last readable copy, the finish waits for
    /// it instead of announcing a commit no readable replica shows.
    #[test]
    fn a_silent_voter_holding_the_last_copy_of_a_written_partition_is_waited_for() {
        let now = SystemTime::now();
        let mut master = master_with_s3_out_of_date(now);
        let both = oid_on(&master, ["s1", "s2"]);
        let alone = oid_on(&master, ["s2", "s3"]);
        let ttid = begin(&mut master, now);
        master
            .handle(
                now,
                "c1",
                Message::AskFinish {
                    ttid,
                    oids: vec![both, alone],
                    voters: vec!["s1".into(), "s2".into()],
                    failed: vec![],
                },
            )
            .expect("finish");
        let mut sent = drain(&mut master);
        let tid = sent
            .iter()
            .find_map(|transmit| match transmit.message {
                Message::Finish { tid, .. } if transmit.to == "s1" => Some(tid),
                _ => None,
            })
            .expect("s1 finishes");
        master
            .handle(now, "s1", Message::Finished { ttid, tid })
            .expect("finished");
        let later = now + MasterConfig::default().finish_timeout;
        master.handle_timeout(later).expect("timeout");
        sent.extend(drain(&mut master));
        // The client heard of the commit at its decision; the finish is complete (the last
        // transaction moves, the transaction leaves the open ones) only once every readable
        // copy of what it wrote applied it.
        assert!(
            master.last_transaction() < tid,
            "s2 alone holds {alone}'s partition readable: the commit waits for it"
        );
        let table = master.table();
        let cell = |oid, node: &str| {
            table
                .cells(table.partition_of(oid))
                .expect("a partition")
                .iter()
                .find(|cell| cell.node == node)
                .map(|cell| cell.state)
        };
        assert_eq!(cell(both, "s2"), Some(CellState::OutOfDate));
        assert_eq!(cell(alone, "s2"), Some(CellState::UpToDate));
        master
            .handle(later, "s2", Message::Finished { ttid, tid })
            .expect("finished late");
        sent.extend(drain(&mut master));
        let (_, committed) = table_before_answer(&sent);
        assert_eq!(committed, tid);
        assert_eq!(master.last_transaction(), tid);
    }
}
