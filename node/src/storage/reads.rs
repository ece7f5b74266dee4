//! The storage's answers to a client's [questions](StorageAsk): past revisions, history, the
//! transaction log, sizes, pack. A question about a partition or an object this storage does
//! not hold readable (up to date in its own table) is answered [`StorageAnswer::Unavailable`]
//! at once, and the client asks another replica; so is one beyond
//! [`StorageConfig::max_pending_reads`](super::StorageConfig::max_pending_reads), or one the
//! engine fails. The others go to the engine like loads: a read ([`Read::Ask`], answered once
//! read), or for a pack step and a garbage collection a write ([`Write::Pack`],
//! [`Write::Collect`], answered once persisted: the answer says the revisions are gone).

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::in_doubt::{HeldRead, Scope};
use super::persist::{AfterRead, AfterWrite, Read, Write};
use super::{Storage, StorageEvent};
use crate::engine::EngineError;
use crate::ids::Tid;
use crate::partition::CellState;
use crate::protocol::{Message, StorageAnswer, StorageAsk};

/// How many objects one pack step looks at: the writer does nothing else meanwhile.
const PACK_STEP_OBJECTS: usize = 1_000;

impl Storage {
    /// Takes `from`'s question `ask` (request `request`): once no transaction voted here whose
    /// outcome the answer could miss is in doubt (see [`in_doubt`](super::in_doubt)), answers
    /// it at once when this storage cannot, else hands it to the engine.
    pub(super) fn ask(
        &mut self,
        now: SystemTime,
        from: &str,
        request: u64,
        ask: StorageAsk,
        open: Option<Tid>,
    ) {
        // What the answer could show of a transaction voted here: one object's revisions, or
        // the transaction log and sizes (pack and collect are writes, in order anyway).
        let blocking = match &ask {
            StorageAsk::LoadBefore { oid, .. }
            | StorageAsk::LoadSerial { oid, .. }
            | StorageAsk::History { oid, .. } => self.in_doubt.blocking(Scope::Object(*oid), open),
            StorageAsk::Transactions { .. }
            | StorageAsk::UndoLog { .. }
            | StorageAsk::UndoInfo { .. }
            | StorageAsk::ObjectsAt { .. }
            | StorageAsk::Size { .. } => self.in_doubt.blocking(Scope::Log, open),
            StorageAsk::Pack { .. } | StorageAsk::Collect { .. } => BTreeSet::new(),
        };
        let read = HeldRead::Ask {
            from: from.to_owned(),
            request,
            ask,
        };
        self.read_once_settled(now, read, blocking);
    }

    /// Answers `from`'s question `ask` at once when this storage cannot, else hands it to the
    /// engine (after whatever it waited for in [`ask`](Self::ask)).
    pub(super) fn read_ask(&mut self, from: &str, request: u64, ask: StorageAsk) {
        let kind = ask.kind();
        let partition = match &ask {
            StorageAsk::LoadBefore { oid, .. }
            | StorageAsk::LoadSerial { oid, .. }
            | StorageAsk::History { oid, .. } => self
                .replicator
                .table()
                .map(|table| table.partition_of(*oid)),
            StorageAsk::Transactions { partition, .. }
            | StorageAsk::UndoLog { partition, .. }
            | StorageAsk::UndoInfo { partition, .. }
            | StorageAsk::ObjectsAt { partition, .. }
            | StorageAsk::Size { partition } => Some(*partition),
            StorageAsk::Pack { tid, after } => {
                let (tid, after) = (*tid, *after);
                self.persistence.write(
                    Write::Pack {
                        tid,
                        after,
                        max_objects: PACK_STEP_OBJECTS,
                    },
                    AfterWrite::Answer {
                        to: from.to_owned(),
                        request,
                        kind,
                    },
                );
                return;
            }
            StorageAsk::Collect { tid, oids } => {
                let (tid, oids) = (*tid, oids.clone());
                self.persistence.write(
                    Write::Collect { tid, oids },
                    AfterWrite::Answer {
                        to: from.to_owned(),
                        request,
                        kind,
                    },
                );
                return;
            }
        };
        let readable = partition.is_some_and(|partition| self.readable_here(partition));
        if !readable || !self.persistence.takes_reads(&self.config) {
            self.send_answer(from, request, StorageAnswer::Unavailable);
            return;
        }
        let num_partitions = self.num_partitions();
        self.persistence.read(
            Read::Ask {
                ask,
                num_partitions,
            },
            AfterRead::Ask {
                to: from.to_owned(),
                request,
                kind,
            },
        );
    }

    /// Answers `to`'s question `request` (of kind `kind`) with what the engine found; a
    /// failure is reported as an event and answered [`StorageAnswer::Unavailable`].
    pub(super) fn answer_ask(
        &mut self,
        to: &str,
        request: u64,
        kind: &'static str,
        answer: Result<StorageAnswer, EngineError>,
    ) {
        let answer = answer.unwrap_or_else(|error| {
            self.events.push_back(StorageEvent::EngineError {
                ttid: Tid::ZERO,
                error: format!("answering {kind}: {error}"),
            });
            StorageAnswer::Unavailable
        });
        self.send_answer(to, request, answer);
    }

    fn send_answer(&mut self, to: &str, request: u64, answer: StorageAnswer) {
        self.out.send(to, Message::Answer { request, answer });
    }

    /// Whether this storage's cell of `partition` is up to date in its latest table.
    pub(super) fn readable_here(&self, partition: u32) -> bool {
        self.replicator.table().is_some_and(|table| {
            table.cells(partition).is_ok_and(|cells| {
                cells
                    .iter()
                    .any(|cell| cell.node == self.name && cell.state == CellState::UpToDate)
            })
        })
    }
}
