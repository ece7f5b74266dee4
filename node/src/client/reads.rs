//! Reads: loads and [questions](StorageAsk) for storages, each sent to the readable replica
//! with the lowest measured round-trip time and passed on to the next on failure.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::event::{ClientEvent, ReadFailure};
use super::{Client, invalid};
use crate::ids::{Oid, Tid};
use crate::partition::NodeName;
use crate::protocol::{LoadResult, Message, ProtocolError, StorageAnswer, StorageAsk};

/// Which storages may answer a [question](StorageAsk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AskTarget {
    /// The readable replicas of the object's partition, lowest round-trip time first.
    Object(Oid),
    /// The readable replicas of the partition, lowest round-trip time first.
    Partition(u32),
    /// This storage alone (e.g. to pack it).
    Node(NodeName),
}

/// What a read asks.
#[derive(Clone, Debug)]
enum Query {
    /// The latest revision of an object ([`Message::Load`]).
    Load(Oid),
    /// A question ([`Message::Ask`]), with the client's undecided transaction when asked.
    Ask(StorageAsk, Option<Tid>),
}

/// A read waiting for its answer.
#[derive(Debug)]
pub(super) struct PendingRead {
    query: Query,
    node: NodeName,
    others: VecDeque<NodeName>,
    deadline: SystemTime,
    /// The bytes received from `node` when it was asked, or when its deadline was last put
    /// off for progress (see [`Client::set_link_received`]).
    received_at_ask: Option<u64>,
    /// The replicas asked before, and why they did not answer.
    failures: Vec<(NodeName, ReadFailure)>,
}

impl Client {
    /// Loads the last committed revision of `oid` from a readable replica, falling through
    /// to the next on failure (an answer [`LoadResult::Failed`], the storage lost, or no
    /// answer within [`ClientConfig::load_timeout`](super::ClientConfig::load_timeout) while
    /// the replica sends nothing: see [`set_link_received`](Self::set_link_received));
    /// returns the request id of the [`ClientEvent::Loaded`] to come.
    ///
    /// Replicas are tried by their measured round-trip time ([`set_link_rtt`](Self::set_link_rtt)),
    /// lowest first; those not measured come after, in the table's order.
    pub fn load(&mut self, now: SystemTime, oid: Oid) -> Result<u64, ProtocolError> {
        let nodes = self.targets("load", &AskTarget::Object(oid))?;
        self.send_read(now, Query::Load(oid), nodes)
    }

    /// Asks `ask` of the storages `target` names, one at a time until one answers (anything
    /// but [`StorageAnswer::Unavailable`]); returns the request id of the
    /// [`ClientEvent::Answered`] to come.
    pub fn ask(
        &mut self,
        now: SystemTime,
        ask: StorageAsk,
        target: &AskTarget,
    ) -> Result<u64, ProtocolError> {
        let nodes = self.targets("ask", target)?;
        // The storages must not hold the question for this client's own transaction when it
        // is not decided yet (ZODB reads inside a transaction): see `storage/in_doubt.rs`.
        let open = self
            .txn
            .as_ref()
            .filter(|txn| !matches!(txn.phase, super::Phase::Beginning | super::Phase::Finishing))
            .map(|txn| txn.ttid);
        self.send_read(now, Query::Ask(ask, open), nodes)
    }

    /// The storages that may answer, in the order to ask them.
    fn targets(
        &self,
        call: &'static str,
        target: &AskTarget,
    ) -> Result<VecDeque<NodeName>, ProtocolError> {
        let table = self
            .table
            .as_ref()
            .ok_or_else(|| invalid(call, "no partition table yet"))?;
        let partition = match target {
            AskTarget::Node(node) => return Ok(VecDeque::from([node.clone()])),
            AskTarget::Object(oid) => table.partition_of(*oid),
            AskTarget::Partition(partition) => *partition,
        };
        let mut nodes: Vec<NodeName> = table
            .cells(partition)
            .map_err(|_| invalid(call, "no such partition"))?
            .iter()
            .filter(|cell| cell.is_readable())
            .map(|cell| cell.node.clone())
            .collect();
        // Stable: unmeasured replicas keep the table's order.
        nodes.sort_by_key(|node| match self.link_rtts.get(node) {
            Some(rtt) => (false, *rtt),
            None => (true, Duration::ZERO),
        });
        if nodes.is_empty() {
            return Err(invalid(call, "the partition has no readable replica"));
        }
        Ok(VecDeque::from(nodes))
    }

    fn send_read(
        &mut self,
        now: SystemTime,
        query: Query,
        mut nodes: VecDeque<NodeName>,
    ) -> Result<u64, ProtocolError> {
        let node = nodes
            .pop_front()
            .ok_or_else(|| invalid("read", "no replica to ask"))?;
        let request = self.next_request();
        self.out.send(&node, query.message(request));
        let received_at_ask = self.link_received.get(&node).copied();
        self.reads.insert(
            request,
            PendingRead {
                query,
                node,
                others: nodes,
                deadline: now + self.config.load_timeout,
                received_at_ask,
                failures: Vec::new(),
            },
        );
        Ok(request)
    }

    pub(super) fn answer_load(
        &mut self,
        now: SystemTime,
        from: &str,
        request: u64,
        oid: Oid,
        result: LoadResult,
    ) -> Result<(), ProtocolError> {
        let matches = self.reads.get(&request).is_some_and(|read| {
            read.node == from && matches!(read.query, Query::Load(asked) if asked == oid)
        });
        if !matches {
            return Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: "AnswerLoad",
            });
        }
        if result == LoadResult::Failed {
            self.retry_read(now, request, ReadFailure::Unavailable);
        } else if let Some(read) = self.reads.remove(&request) {
            self.events.push_back(ClientEvent::Loaded {
                request,
                oid,
                result,
                from: Some(from.to_owned()),
                failures: read.failures,
            });
        }
        Ok(())
    }

    pub(super) fn answer_ask(
        &mut self,
        now: SystemTime,
        from: &str,
        request: u64,
        answer: StorageAnswer,
    ) -> Result<(), ProtocolError> {
        let matches = self
            .reads
            .get(&request)
            .is_some_and(|read| read.node == from && matches!(read.query, Query::Ask(..)));
        if !matches {
            return Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: "Answer",
            });
        }
        if answer == StorageAnswer::Unavailable {
            self.retry_read(now, request, ReadFailure::Unavailable);
        } else if let Some(read) = self.reads.remove(&request) {
            self.events.push_back(ClientEvent::Answered {
                request,
                answer,
                from: Some(from.to_owned()),
                failures: read.failures,
            });
        }
        Ok(())
    }

    /// The connection to `node` is lost: its reads go to the next replica.
    pub(super) fn reads_peer_lost(&mut self, now: SystemTime, node: &str) {
        let requests: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.node == node)
            .map(|(request, _)| *request)
            .collect();
        for request in requests {
            self.retry_read(now, request, ReadFailure::Lost);
        }
    }

    /// Reads not answered in time go to the next replica, unless their replica sent at
    /// least [`ClientConfig::load_progress_bytes`](super::ClientConfig::load_progress_bytes)
    /// since it was asked (or since the last such check): a large answer is on its way, and
    /// the read waits another [`ClientConfig::load_timeout`](super::ClientConfig::load_timeout).
    pub(super) fn reads_timeout(&mut self, now: SystemTime) {
        let (timeout, progress) = (self.config.load_timeout, self.config.load_progress_bytes);
        let mut expired = Vec::new();
        for (request, read) in self
            .reads
            .iter_mut()
            .filter(|(_, read)| read.deadline <= now)
        {
            let received = self.link_received.get(&read.node).copied();
            let progressed = match (read.received_at_ask, received) {
                (Some(before), Some(now)) => now >= before.saturating_add(progress),
                _ => false,
            };
            if progressed {
                read.deadline = now + timeout;
                read.received_at_ask = received;
            } else {
                expired.push(*request);
            }
        }
        for request in expired {
            self.retry_read(now, request, ReadFailure::Timeout);
        }
    }

    /// The storages reads wait on now: the driver tells their
    /// [`set_link_received`](Self::set_link_received) before it fires the timers.
    pub fn reading_from(&self) -> Vec<NodeName> {
        let mut nodes: Vec<NodeName> = self.reads.values().map(|read| read.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// The bytes received so far on the link to `node`, as the driver measured them
    /// (`None`: not connected). A read whose replica keeps sending is not taken for
    /// failed at its deadline (see [`load`](Self::load)): a large object takes as long as
    /// its transfer, however large, while a silent replica is left after the load timeout.
    pub fn set_link_received(&mut self, node: &str, bytes: Option<u64>) {
        match bytes {
            Some(bytes) => {
                self.link_received.insert(node.to_owned(), bytes);
            }
            None => {
                self.link_received.remove(node);
            }
        }
    }

    /// When the first read times out.
    pub(super) fn reads_deadline(&self) -> Option<SystemTime> {
        self.reads.values().map(|read| read.deadline).min()
    }

    /// The replica asked for `request` failed (`failure`): asks the next, or reports the
    /// read failed when none is left.
    fn retry_read(&mut self, now: SystemTime, request: u64, failure: ReadFailure) {
        let Some(read) = self.reads.get_mut(&request) else {
            return;
        };
        read.failures.push((read.node.clone(), failure));
        match read.others.pop_front() {
            Some(node) => {
                read.received_at_ask = self.link_received.get(&node).copied();
                read.node = node;
                read.deadline = now + self.config.load_timeout;
                self.out.send(&read.node, read.query.message(request));
            }
            None => {
                let Some(read) = self.reads.remove(&request) else {
                    return;
                };
                let failures = read.failures;
                self.events.push_back(match read.query {
                    Query::Load(oid) => ClientEvent::Loaded {
                        request,
                        oid,
                        result: LoadResult::Failed,
                        from: None,
                        failures,
                    },
                    Query::Ask(..) => ClientEvent::Answered {
                        request,
                        answer: StorageAnswer::Unavailable,
                        from: None,
                        failures,
                    },
                });
            }
        }
    }
}

impl Query {
    fn message(&self, request: u64) -> Message {
        match self {
            Query::Load(oid) => Message::Load { request, oid: *oid },
            Query::Ask(ask, open) => Message::Ask {
                request,
                ask: ask.clone(),
                open: *open,
            },
        }
    }
}
