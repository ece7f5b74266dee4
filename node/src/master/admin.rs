//! Operator requests: the answers to `replicast status` and `replicast admin`
//! ([`Master::answer`], and the same questions on a channel, with who the primary is and the
//! nodes' reports: the conversation open to anyone with a cluster certificate), and the
//! changes of the storage set: a storage added to the table, a storage taken out.
//!
//! Both build the new table with the [`PartitionTable`](crate::partition::PartitionTable)'s own
//! [`add_storage`](crate::partition::PartitionTable::add_storage) /
//! [`remove_storage`](crate::partition::PartitionTable::remove_storage) (which bump its
//! version) and push it to every client and running storage. The feeding cells they create get
//! their data by replication; each becomes readable, and drops the cell it replaces, when its
//! storage reports it caught up.

use std::net::SocketAddr;
use std::time::SystemTime;

use super::{Master, unexpected};
use crate::partition::{Cell, CellState, NodeName, PartitionError};
use crate::protocol::{ChangeOutcome, ChangeRefusal, Message, ProtocolError, StorageChange};

impl Master {
    /// A message anyone with a cluster certificate may send: who the primary is, the cluster's
    /// status, a change of the storage set; and the reports of the cluster's nodes.
    pub(super) fn anyone_message(
        &mut self,
        now: SystemTime,
        from: &str,
        is_storage: bool,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::NodeReport(report) if is_storage || self.clients.contains(from) => {
                self.record_report(from, report);
            }
            Message::AskPrimary => {
                // Through the outbox: it goes out as an order of this primary's term.
                let (primary, address) = self.consensus.primary_is();
                self.out.send(
                    from,
                    Message::PrimaryIs {
                        primary,
                        address,
                        term: self.consensus.term(),
                    },
                );
            }
            // From anyone with a cluster certificate; the asker does not become a client.
            Message::AskStatus { request } => {
                let status = Box::new(self.cluster_status());
                self.out
                    .send(from, Message::AnswerStatus { request, status });
            }
            Message::AskChangeStorage { request, change } => {
                let outcome = self.change_storage(now, change)?;
                self.out
                    .send(from, Message::AnswerChangeStorage { request, outcome });
            }
            other => return Err(unexpected(from, &other)),
        }
        Ok(())
    }

    /// Answers an operator's request from `from`, which came on a request stream (the
    /// driver's [`Role::answer`](crate::driver::Role::answer)):
    /// [`Message::AskStatus`] with [`Message::AnswerStatus`], [`Message::AskChangeStorage`]
    /// with [`Message::AnswerChangeStorage`], a standing backup's [`Message::ReportBackup`]
    /// (kept in memory, see the `backups` module) with [`Message::AnswerStatus`]. Anything
    /// else is refused with
    /// [`ProtocolError::Unexpected`] and changes nothing.
    ///
    /// `from` may be any name with a cluster certificate, also that of a running node: the
    /// asker does not become a client, and nothing about the node of that name changes.
    ///
    /// ```
    /// use replicast_node::master::{Master, MasterConfig};
    /// use replicast_node::partition::PartitionTable;
    /// use replicast_node::protocol::Message;
    /// use std::time::SystemTime;
    ///
    /// let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()])?;
    /// let mut master = Master::new(table, MasterConfig::default())?;
    /// let now = SystemTime::now();
    /// let answer = master.answer(now, "s1", Message::AskStatus { request: 7 })?;
    /// assert!(matches!(answer, Message::AnswerStatus { request: 7, .. }));
    /// assert!(master.answer(now, "s1", Message::AskLastTransaction { request: 1 }).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn answer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
    ) -> Result<Message, ProtocolError> {
        self.roster.backups.saw(now);
        let answer = self.answer_request(now, from, request);
        let settled = self.settle(now);
        let answer = answer?;
        settled?;
        Ok(answer)
    }

    /// Answers an operator's request as [`answer`](Self::answer) does, except that the
    /// answer to a storage change that was made is deferred (`Ok(None)`) until the change is
    /// committed in the masters' log: it then comes from [`poll_answer`](Self::poll_answer)
    /// with `token`, or, when this master is deposed first, a [`ProtocolError::Deposed`]
    /// comes instead. A primary never tells an operator "done" for a change the next primary
    /// may not know. (A lone master commits within the call: its answer is ready at once.)
    ///
    /// ```
    /// use replicast_node::master::{Master, MasterConfig};
    /// use replicast_node::partition::PartitionTable;
    /// use replicast_node::protocol::{ChangeOutcome, Message, StorageChange};
    /// use std::time::SystemTime;
    ///
    /// let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()])?;
    /// let mut master = Master::new(table, MasterConfig::default())?;
    /// let now = SystemTime::now();
    /// master.handle(now, "s3", Message::StorageReady)?;
    /// let change = Message::AskChangeStorage { request: 1, change: StorageChange::Add("s3".into()) };
    /// assert!(master.answer_or_defer(now, "admin", change, 7)?.is_none());
    /// let (token, answer) = master.poll_answer().expect("a lone master commits at once");
    /// assert_eq!(token, 7);
    /// assert!(matches!(
    ///     answer?,
    ///     Message::AnswerChangeStorage { outcome: ChangeOutcome::Done { .. }, .. }
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn answer_or_defer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        let answer = self.answer(now, from, request)?;
        if !matches!(
            answer,
            Message::AnswerChangeStorage {
                outcome: ChangeOutcome::Done { .. },
                ..
            }
        ) {
            return Ok(Some(answer));
        }
        if !self.is_primary() {
            return Err(ProtocolError::Deposed {
                kind: answer.kind(),
            });
        }
        // settle() proposed the change: the answer waits for that proposal.
        self.consensus.hold_answer(token, answer);
        Ok(None)
    }

    /// The next deferred answer of [`answer_or_defer`](Self::answer_or_defer) that may go out:
    /// its token and the answer, or the refusal.
    pub fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        self.consensus.poll_answer()
    }

    fn answer_request(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
    ) -> Result<Message, ProtocolError> {
        if !self.is_primary() {
            // Another master serves: the asker follows the redirect. Without a primary, a
            // status is this master's own view (which says so: not operational).
            let (primary, address) = self.consensus.primary_is();
            let term = self.consensus.term();
            return match request {
                Message::AskStatus { request } if primary.is_none() => Ok(Message::AnswerStatus {
                    request,
                    status: Box::new(self.cluster_status()),
                }),
                // Without a primary the follower still learns this master's view; the report
                // waits for its next interval, at the primary.
                Message::ReportBackup { request, .. } if primary.is_none() => {
                    Ok(Message::AnswerStatus {
                        request,
                        status: Box::new(self.cluster_status()),
                    })
                }
                Message::AskStatus { .. }
                | Message::AskChangeStorage { .. }
                | Message::ReportBackup { .. } => Ok(Message::PrimaryIs {
                    primary,
                    address,
                    term,
                }),
                other => Err(ProtocolError::Unexpected {
                    from: from.to_owned(),
                    kind: other.kind(),
                }),
            };
        }
        let answer = match request {
            Message::AskStatus { request } => Message::AnswerStatus {
                request,
                status: Box::new(self.cluster_status()),
            },
            Message::AskChangeStorage { request, change } => Message::AnswerChangeStorage {
                request,
                outcome: self.change_storage(now, change)?,
            },
            Message::ReportBackup { request, report } => {
                self.roster.backups.record(now, from, report);
                Message::AnswerStatus {
                    request,
                    status: Box::new(self.cluster_status()),
                }
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    from: from.to_owned(),
                    kind: other.kind(),
                });
            }
        };
        // As after any message: new feeding cells start replicating.
        self.sync_replication();
        Ok(answer)
    }

    /// Applies an operator's change of the storage set; the table is unchanged when refused.
    ///
    /// ```
    /// use replicast_node::master::{Master, MasterConfig};
    /// use replicast_node::partition::PartitionTable;
    /// use replicast_node::protocol::{ChangeOutcome, Message, StorageChange};
    /// use std::time::SystemTime;
    ///
    /// let table = PartitionTable::new(4, 2, &["s1".into(), "s2".into()])?;
    /// let mut master = Master::new(table, MasterConfig::default())?;
    /// let now = SystemTime::now();
    /// master.handle(now, "s3", Message::StorageReady)?; // not in the table: it waits
    /// let outcome = master.change_storage(now, StorageChange::Add("s3".into()))?;
    /// assert!(matches!(outcome, ChangeOutcome::Done { .. }));
    /// assert!(master.table().storages().contains(&"s3".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn change_storage(
        &mut self,
        now: SystemTime,
        change: StorageChange,
    ) -> Result<ChangeOutcome, ProtocolError> {
        let outcome = match change {
            StorageChange::Add(node) => self.add_storage(node),
            StorageChange::Remove(node) => self.remove_storage(now, node)?,
            StorageChange::Refeed { storage, partition } => self.refeed(storage, partition),
        };
        Ok(match outcome {
            Ok(version) => ChangeOutcome::Done { version },
            Err(refusal) => ChangeOutcome::Refused(refusal),
        })
    }

    fn add_storage(&mut self, node: NodeName) -> Result<u64, ChangeRefusal> {
        if self.state.table.storages().contains(&node) {
            return Err(ChangeRefusal::AlreadyInTable(node));
        }
        let Some(address) = self.roster.waiting.get(&node).copied() else {
            return Err(ChangeRefusal::NotConnected(node));
        };
        let table = self
            .state
            .table
            .add_storage(&node)
            .map_err(|error| match error {
                PartitionError::DuplicateStorage(node) => ChangeRefusal::AlreadyInTable(node),
                // add_storage refuses nothing else; say what was asked rather than panic.
                _ => ChangeRefusal::AlreadyInTable(node.clone()),
            })?;
        self.roster.waiting.remove(&node);
        self.state.table = table;
        // It announced itself while it held no cells: it runs from now on, as if its
        // StorageReady came now.
        self.running.insert(node.clone());
        if let Some(address) = address {
            self.learn_storage_address(&node, address);
        }
        self.push_table(None);
        Ok(self.state.table.version())
    }

    fn remove_storage(
        &mut self,
        now: SystemTime,
        node: NodeName,
    ) -> Result<Result<u64, ChangeRefusal>, ProtocolError> {
        if !self.state.table.storages().contains(&node) {
            return Ok(Err(ChangeRefusal::UnknownStorage(node)));
        }
        let table = match self.state.table.remove_storage(&node) {
            Ok(table) => table,
            Err(PartitionError::NotEnoughStorages { replicas, storages }) => {
                return Ok(Err(ChangeRefusal::NotEnoughStorages { replicas, storages }));
            }
            Err(_) => return Ok(Err(ChangeRefusal::UnknownStorage(node))),
        };
        // Where the node holds a readable cell, another readable cell must be on a running
        // storage: the new cells feed from it, and a copy on a storage that is down may never
        // come back. (The other cells keep their state, so other partitions are unaffected.)
        let running = &self.running;
        let serves = |cell: &Cell| cell.is_readable() && running.contains(&cell.node);
        let unserved = self.state.table.partitions_of(&node).find(|partition| {
            let held_readable = self
                .state
                .table
                .cells(*partition)
                .is_ok_and(|cells| cells.iter().any(|c| c.node == node && c.is_readable()));
            held_readable
                && !table
                    .cells(*partition)
                    .is_ok_and(|cells| cells.iter().any(serves))
        });
        if let Some(partition) = unserved {
            return Ok(Err(ChangeRefusal::LastReadableCopy {
                storage: node,
                partition,
            }));
        }
        self.state.table = table;
        let was_running = self.running.remove(&node);
        let address = self.state.storage_addresses.remove(&node);
        if was_running {
            // Still connected: it may be added again later, like a storage that never held cells.
            self.roster.waiting.insert(node.clone(), address);
        }
        // A finish waiting for its acknowledgement goes on without it.
        if let Some(finishing) = self.finishing.as_mut() {
            finishing.waiting.remove(&node);
        }
        self.push_table(was_running.then_some(node.as_str()));
        self.complete_finish_if_done(now)?;
        Ok(Ok(self.state.table.version()))
    }

    /// Marks `node`'s cell of `partition` out of date so that replication copies it again,
    /// whole, from another readable cell, which must be on a running storage.
    fn refeed(&mut self, node: NodeName, partition: u32) -> Result<u64, ChangeRefusal> {
        let no_cell = || ChangeRefusal::NoReadableCell {
            storage: node.clone(),
            partition,
        };
        let cells = self.state.table.cells(partition).map_err(|_| no_cell())?;
        if !cells
            .iter()
            .any(|cell| cell.node == node && cell.state == CellState::UpToDate)
        {
            return Err(no_cell());
        }
        let running = &self.running;
        if !cells
            .iter()
            .any(|cell| cell.node != node && cell.is_readable() && running.contains(&cell.node))
        {
            return Err(ChangeRefusal::LastReadableCopy {
                storage: node,
                partition,
            });
        }
        self.state
            .table
            .mark_cell_out_of_date(partition, &node)
            .map_err(|_| no_cell())?;
        // Nothing of the cell counts as whole: the storage copies the partition again.
        self.state.complete_to.remove(&(partition, node.clone()));
        self.push_table(None);
        Ok(self.state.table.version())
    }

    /// Records where storage `node` accepts connections, tells the clients and the other
    /// storages (which replicate from each other), and gives `node` the others' addresses.
    fn learn_storage_address(&mut self, node: &str, address: SocketAddr) {
        self.send_address_book(node);
        self.state
            .storage_addresses
            .insert(node.to_owned(), address);
        for peer in self.clients.iter().chain(&self.running) {
            if peer != node {
                self.out.send(
                    peer,
                    Message::StorageAddresses(vec![(node.to_owned(), address)]),
                );
            }
        }
    }

    /// Sends the current table to every client and running storage, and to `also` (a storage
    /// just taken out, which learns that it holds no cells any more).
    fn push_table(&mut self, also: Option<&str>) {
        self.broadcast_table();
        if let Some(node) = also.filter(|node| !self.running.contains(*node)) {
            self.out
                .send(node, Message::PartitionTable(self.state.table.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::master::Master;
    use crate::master::test_support::{drain, running_master};
    use crate::partition::CellState;
    use crate::protocol::{
        ChangeOutcome, ChangeRefusal, Message, NodeRole, NodeState, StorageChange, Transmit,
    };

    /// Asks for `change` as `replicast admin` does (a request); returns the outcome and
    /// everything sent meanwhile.
    fn ask(master: &mut Master, change: StorageChange) -> (ChangeOutcome, Vec<Transmit>) {
        let answer = master
            .answer(
                SystemTime::now(),
                "operator",
                Message::AskChangeStorage { request: 3, change },
            )
            .expect("anyone with a certificate may ask");
        let Message::AnswerChangeStorage { request, outcome } = answer else {
            panic!("AnswerChangeStorage expected, got {answer:?}");
        };
        assert_eq!(request, 3);
        let sent = drain(master);
        assert!(
            sent.iter().all(|transmit| transmit.to != "operator"),
            "the answer is the request's, not a message: {sent:?}"
        );
        (outcome, sent)
    }

    fn tables_sent_to(sent: &[Transmit]) -> Vec<&str> {
        let mut peers: Vec<&str> = sent
            .iter()
            .filter(|t| matches!(t.message, Message::PartitionTable(_)))
            .map(|t| t.to.as_str())
            .collect();
        peers.sort();
        peers
    }

    #[test]
    fn a_waiting_storage_is_added_with_feeding_cells_and_everyone_learns_the_table() {
        let mut master = running_master(SystemTime::now(), 12, &["s1", "s2", "s3"]);
        let now = SystemTime::now();
        let version = master.table().version();
        master
            .handle(now, "s4", Message::StorageReady)
            .expect("ready");
        master
            .handle(
                now,
                "s4",
                Message::StorageAddress {
                    address: "127.0.0.1:7004".parse().expect("an address"),
                },
            )
            .expect("address");
        assert!(
            drain(&mut master).is_empty(),
            "a waiting storage gets no table"
        );
        let waiting = master.cluster_status();
        let s4 = waiting
            .nodes
            .iter()
            .find(|n| n.name == "s4")
            .expect("s4 shown");
        assert_eq!((s4.role, s4.state), (NodeRole::Storage, NodeState::Waiting));

        let (outcome, sent) = ask(&mut master, StorageChange::Add("s4".into()));
        assert_eq!(
            outcome,
            ChangeOutcome::Done {
                version: master.table().version()
            }
        );
        assert!(master.table().version() > version);
        let feeding: Vec<_> = master
            .table()
            .partitions()
            .flatten()
            .filter(|cell| cell.node == "s4")
            .collect();
        assert_eq!(feeding.len(), 6, "24 cells over 4 storages");
        assert!(
            feeding
                .iter()
                .all(|cell| cell.state == CellState::Feeding && cell.replaces.is_some())
        );
        assert!(master.table().is_operational());
        assert_eq!(tables_sent_to(&sent), ["c1", "s1", "s2", "s3", "s4"]);
        assert!(
            sent.iter().any(|t| t.to == "c1"
                && matches!(&t.message, Message::StorageAddresses(book) if book[0].0 == "s4")),
            "the client learns where s4 is"
        );
        assert_eq!(
            master.storage_addresses().get("s4"),
            Some(&"127.0.0.1:7004".parse().expect("an address"))
        );
        assert!(master.running_storages().any(|s| s == "s4"));
        assert_eq!(master.waiting_storages().count(), 0);
    }

    #[test]
    fn adding_is_refused_for_a_member_or_a_storage_that_never_connected() {
        let mut master = running_master(SystemTime::now(), 12, &["s1", "s2", "s3"]);
        let table = master.table().clone();
        let (outcome, sent) = ask(&mut master, StorageChange::Add("s1".into()));
        assert_eq!(
            outcome,
            ChangeOutcome::Refused(ChangeRefusal::AlreadyInTable("s1".into()))
        );
        assert!(sent.is_empty());
        let (outcome, sent) = ask(&mut master, StorageChange::Add("s9".into()));
        assert_eq!(
            outcome,
            ChangeOutcome::Refused(ChangeRefusal::NotConnected("s9".into()))
        );
        assert!(sent.is_empty());
        assert_eq!(master.table(), &table, "nothing changed");
    }

    #[test]
    fn a_removed_storage_leaves_r_copies_feeding_elsewhere_and_waits() {
        let mut master = running_master(SystemTime::now(), 12, &["s1", "s2", "s3", "s4"]);
        let (outcome, sent) = ask(&mut master, StorageChange::Remove("s2".into()));
        assert!(matches!(outcome, ChangeOutcome::Done { .. }));
        let table = master.table();
        assert!(!table.storages().contains(&"s2".to_string()));
        assert!(table.partitions().flatten().all(|cell| cell.node != "s2"));
        // R copies once replication is done: the cells that no feeding cell replaces.
        assert!(table.partitions().all(|cells| {
            let kept = cells.iter().filter(|cell| {
                !cells
                    .iter()
                    .any(|other| other.replaces.as_deref() == Some(cell.node.as_str()))
            });
            kept.count() == 2
        }));
        assert!(table.is_operational());
        assert_eq!(
            tables_sent_to(&sent),
            ["c1", "s1", "s2", "s3", "s4"],
            "s2 learns it holds nothing"
        );
        assert!(!master.running_storages().any(|s| s == "s2"));
        assert_eq!(master.waiting_storages().collect::<Vec<_>>(), ["s2"]);
        // Its messages as a storage are no longer accepted.
        assert!(
            master
                .handle(
                    SystemTime::now(),
                    "s2",
                    Message::AskOutcome {
                        ttid: crate::ids::Tid(1)
                    }
                )
                .is_err()
        );
    }

    #[test]
    fn a_refed_cell_goes_out_of_date_and_feeds_again_from_nothing() {
        let mut master = running_master(SystemTime::now(), 12, &["s1", "s2", "s3"]);
        let partition = master
            .table()
            .partitions_of("s1")
            .next()
            .expect("s1 holds cells");
        let refeed = |storage: &str, partition| StorageChange::Refeed {
            storage: storage.into(),
            partition,
        };
        let (outcome, sent) = ask(&mut master, refeed("s1", partition));
        assert_eq!(
            outcome,
            ChangeOutcome::Done {
                version: master.table().version()
            }
        );
        let state = |master: &Master| {
            master
                .table()
                .cells(partition)
                .expect("a partition")
                .iter()
                .find(|cell| cell.node == "s1")
                .map(|cell| cell.state)
        };
        assert_eq!(state(&master), Some(CellState::OutOfDate));
        assert_eq!(tables_sent_to(&sent), ["c1", "s1", "s2", "s3"]);
        // The storage asks to catch up, as after a failed commit: the cell feeds, and the
        // master tells it to copy the partition from the start (it holds nothing whole).
        master
            .handle(SystemTime::now(), "s1", Message::AskCatchUp)
            .expect("catch up");
        assert_eq!(state(&master), Some(CellState::Feeding));
        let replicate = drain(&mut master)
            .into_iter()
            .find_map(|transmit| match transmit.message {
                Message::Replicate { partitions, .. } if transmit.to == "s1" => Some(partitions),
                _ => None,
            })
            .expect("s1 is told to replicate");
        assert!(
            replicate.contains(&(partition, crate::ids::Tid::ZERO)),
            "{replicate:?}"
        );

        // Refused: a cell that is not up to date, a storage without a cell there, and the last
        // readable copy.
        let (outcome, _) = ask(&mut master, refeed("s1", partition));
        assert_eq!(
            outcome,
            ChangeOutcome::Refused(ChangeRefusal::NoReadableCell {
                storage: "s1".into(),
                partition
            })
        );
        let other = master
            .table()
            .cells(partition)
            .expect("a partition")
            .iter()
            .find(|cell| cell.node != "s1")
            .map(|cell| cell.node.clone())
            .expect("a second cell");
        let (outcome, _) = ask(&mut master, refeed(&other, partition));
        assert_eq!(
            outcome,
            ChangeOutcome::Refused(ChangeRefusal::LastReadableCopy {
                storage: other,
                partition
            })
        );
        let (outcome, _) = ask(&mut master, refeed("s9", partition));
        assert!(matches!(
            outcome,
            ChangeOutcome::Refused(ChangeRefusal::NoReadableCell { .. })
        ));
    }

    #[test]
    fn removing_is_refused_for_a_stranger_too_few_storages_or_the_last_readable_copy() {
        let mut master = running_master(SystemTime::now(), 12, &["s1", "s2", "s3"]);
        assert_eq!(
            ask(&mut master, StorageChange::Remove("s9".into())).0,
            ChangeOutcome::Refused(ChangeRefusal::UnknownStorage("s9".into()))
        );

        // s3 fails: its cells go out of date; s1 and s2 now hold the only readable copies of
        // the partitions they share with s3.
        master.peer_lost(SystemTime::now(), "s3").expect("lost");
        drain(&mut master);
        let table = master.table().clone();
        let (outcome, _) = ask(&mut master, StorageChange::Remove("s1".into()));
        let ChangeOutcome::Refused(ChangeRefusal::LastReadableCopy { storage, partition }) =
            outcome
        else {
            panic!("refusal expected, got {outcome:?}");
        };
        assert_eq!(storage, "s1");
        let cells = table.cells(partition).expect("a partition");
        assert!(cells.iter().any(|c| c.node == "s1" && c.is_readable()));
        assert!(!cells.iter().any(|c| c.node != "s1" && c.is_readable()));
        assert_eq!(master.table(), &table, "nothing changed");

        // s2 fails too: the table keeps its cells readable where they are the last copies,
        // but removing s1 would leave those partitions to a storage that is down.
        master.peer_lost(SystemTime::now(), "s2").expect("lost");
        drain(&mut master);
        let shared = master
            .table()
            .partitions()
            .position(|cells| {
                cells.iter().any(|c| c.node == "s1") && cells.iter().any(|c| c.node == "s2")
            })
            .expect("s1 and s2 share a partition");
        assert!(
            master
                .table()
                .cells(shared as u32)
                .expect("a partition")
                .iter()
                .all(|cell| cell.is_readable()),
            "both cells of the shared partition readable in the table"
        );
        let (outcome, _) = ask(&mut master, StorageChange::Remove("s1".into()));
        assert!(
            matches!(
                outcome,
                ChangeOutcome::Refused(ChangeRefusal::LastReadableCopy { .. })
            ),
            "{outcome:?}"
        );

        let mut small = running_master(SystemTime::now(), 12, &["s1", "s2"]);
        assert_eq!(
            ask(&mut small, StorageChange::Remove("s1".into())).0,
            ChangeOutcome::Refused(ChangeRefusal::NotEnoughStorages {
                replicas: 2,
                storages: 1
            })
        );
    }
}
