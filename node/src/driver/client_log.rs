//! The transaction log through a [`ClientHandle`]: an object's history, the iterator over
//! transactions, the undo log and what an undo needs, sizes, pack and garbage collection.
//!
//! A storage holds only its partitions, so questions about the whole log go to one readable
//! replica of every partition, concurrently, and the answers are merged here: transactions by
//! TID (a transaction appears in every partition it touched, each with its own objects).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tokio::task::JoinSet;

use super::client_handle::{ClientError, ClientHandle};
use crate::client::AskTarget;
use crate::engine::ObjectCursor;
use crate::ids::{Oid, Tid};
use crate::protocol::{ObjectRevision, StorageAnswer, StorageAsk, StorageSize};
use crate::transaction::{
    DataRecord, HistoryEntry, TransactionRecords, TransactionSummary, UndoRecord,
};

/// About how many bytes of data one page of the iterator or of a scan asks a storage for.
const PAGE_BYTES: u32 = 1 << 20;

/// How many objects one garbage collection message names.
const COLLECT_BATCH: usize = 50_000;

/// What a pack or a garbage collection did, storage by storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    /// The storages that completed it.
    pub packed: Vec<String>,
    /// The storages that did not answer (down, or failing): they keep their old revisions
    /// until the next pack.
    pub failed: Vec<String>,
    /// Revisions removed, over all storages (each replica counts).
    pub removed: u64,
}

impl ClientHandle {
    /// Up to `size` revisions of `oid`, newest first, each with its transaction's metadata and
    /// data size (ZODB's `history`); empty when the object has none.
    pub async fn history(&self, oid: Oid, size: u32) -> Result<Vec<HistoryEntry>, ClientError> {
        match self
            .ask(StorageAsk::History { oid, size }, AskTarget::Object(oid))
            .await?
        {
            StorageAnswer::History(entries) => Ok(entries),
            _ => Err(ClientError::BadAnswer { what: "History" }),
        }
    }

    /// Up to `count` committed transactions with TIDs below `before`, newest first, leaving
    /// out those at or before the last pack (a page of ZODB's `undoLog` and `undoInfo`: ask
    /// again with the last TID as `before`).
    pub async fn undo_log(
        &self,
        before: Tid,
        count: u32,
    ) -> Result<Vec<TransactionSummary>, ClientError> {
        let answers = self
            .ask_partitions(|partition| StorageAsk::UndoLog {
                partition,
                before,
                count,
            })
            .await?;
        let mut merged: BTreeMap<Tid, TransactionSummary> = BTreeMap::new();
        // A partition that filled its page may hold more transactions older than its oldest:
        // the merge is exact only down to the newest of those oldest.
        let mut cutoff = Tid::ZERO;
        for answer in answers {
            let StorageAnswer::UndoLog(log) = answer else {
                return Err(ClientError::BadAnswer { what: "UndoLog" });
            };
            if log.len() >= count as usize
                && let Some(oldest) = log.last()
            {
                cutoff = cutoff.max(oldest.tid);
            }
            for summary in log {
                merged.entry(summary.tid).or_insert(summary);
            }
        }
        Ok(merged
            .into_values()
            .rev()
            .take_while(|summary| summary.tid >= cutoff)
            .take(count as usize)
            .collect())
    }

    /// What undoing transaction `tid` needs, per object it wrote; `None` when there is no
    /// such transaction (or it was packed away).
    pub async fn undo_info(&self, tid: Tid) -> Result<Option<Vec<UndoRecord>>, ClientError> {
        let answers = self
            .ask_partitions(|partition| StorageAsk::UndoInfo { partition, tid })
            .await?;
        let mut found = false;
        let mut records = BTreeMap::new();
        for answer in answers {
            match answer {
                StorageAnswer::UndoInfo(Some(partial)) => {
                    found = true;
                    records.extend(partial.into_iter().map(|record| (record.oid, record)));
                }
                StorageAnswer::UndoInfo(None) => {}
                _ => return Err(ClientError::BadAnswer { what: "UndoInfo" }),
            }
        }
        Ok(found.then(|| records.into_values().collect()))
    }

    /// How many objects the database holds (ZODB's `__len__`) and the bytes of their data
    /// (`getSize`), summed over the partitions.
    pub async fn size(&self) -> Result<StorageSize, ClientError> {
        let answers = self
            .ask_partitions(|partition| StorageAsk::Size { partition })
            .await?;
        let mut total = StorageSize::default();
        for answer in answers {
            let StorageAnswer::Size(size) = answer else {
                return Err(ClientError::BadAnswer { what: "Size" });
            };
            total.objects += size.objects;
            total.bytes += size.bytes;
        }
        Ok(total)
    }

    /// The committed transactions from `start` to `stop` (both included), in TID order, with
    /// their revisions (ZODB's `iterator`). `stop = None` means the last TID this handle knows
    /// now ([`last_transaction`](Self::last_transaction)): the iteration is a snapshot, which
    /// commits going on meanwhile do not change.
    pub fn iterator(&self, start: Tid, stop: Option<Tid>) -> TransactionIterator {
        let stop = stop.unwrap_or_else(|| self.last_transaction());
        let after = match start.previous() {
            Some(previous) => ObjectCursor {
                tid: previous,
                oid: Oid(u64::MAX),
            },
            None => ObjectCursor::START,
        };
        TransactionIterator {
            client: self.clone(),
            stop,
            after,
            feeds: None,
        }
    }

    /// The revision current at `at` of every object (garbage collection's input), partition
    /// by partition.
    pub fn scan_objects(&self, at: Tid) -> ObjectScan {
        ObjectScan {
            client: self.clone(),
            at,
            partition: 0,
            after: None,
            buffer: VecDeque::new(),
            partitions: None,
        }
    }

    /// Packs every storage at `tid` (ZODB's `pack`, without its garbage collection): the
    /// revisions older than `tid` that are not current at `tid` are removed, in bounded steps
    /// per storage, all storages at once.
    pub async fn pack(&self, tid: Tid) -> Result<PackReport, ClientError> {
        self.on_every_storage(move |client, node| async move {
            let mut removed = 0;
            let mut after = None;
            loop {
                let ask = StorageAsk::Pack { tid, after };
                match client.ask(ask, AskTarget::Node(node.clone())).await? {
                    StorageAnswer::Packed {
                        resume,
                        removed: step,
                    } => {
                        removed += step;
                        match resume {
                            Some(resume) => after = Some(resume),
                            None => return Ok(removed),
                        }
                    }
                    _ => return Err(ClientError::BadAnswer { what: "Pack" }),
                }
            }
        })
        .await
    }

    /// Removes every revision of the objects `oids` on every storage (garbage collection
    /// after a pack at `tid`: the objects unreachable at `tid`), except objects written after
    /// `tid`.
    pub async fn collect(&self, tid: Tid, oids: Vec<Oid>) -> Result<PackReport, ClientError> {
        let oids = std::sync::Arc::new(oids);
        self.on_every_storage(move |client, node| {
            let oids = oids.clone();
            async move {
                let mut removed = 0;
                for batch in oids.chunks(COLLECT_BATCH) {
                    let ask = StorageAsk::Collect {
                        tid,
                        oids: batch.to_vec(),
                    };
                    match client.ask(ask, AskTarget::Node(node.clone())).await? {
                        StorageAnswer::Collected { removed: step } => removed += step,
                        _ => return Err(ClientError::BadAnswer { what: "Collect" }),
                    }
                }
                Ok(removed)
            }
        })
        .await
    }

    /// Runs `work` for every storage of the table at once and reports who did it.
    async fn on_every_storage<F, W>(&self, work: W) -> Result<PackReport, ClientError>
    where
        W: Fn(ClientHandle, String) -> F,
        F: std::future::Future<Output = Result<u64, ClientError>> + Send + 'static,
    {
        let storages = self
            .partition_table()
            .await?
            .map(|table| table.storages().to_vec())
            .unwrap_or_default();
        let mut tasks = JoinSet::new();
        for node in storages {
            let done = work(self.clone(), node.clone());
            tasks.spawn(async move { (node, done.await) });
        }
        let mut report = PackReport::default();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((node, Ok(removed))) => {
                    report.removed += removed;
                    report.packed.push(node);
                }
                Ok((node, Err(error))) => {
                    tracing::warn!(%node, %error, "a storage did not pack");
                    report.failed.push(node);
                }
                Err(error) => tracing::warn!(%error, "a pack task failed"),
            }
        }
        report.packed.sort();
        report.failed.sort();
        Ok(report)
    }

    /// Asks every partition's readable replicas `ask(partition)`, concurrently; the answers
    /// in partition order.
    async fn ask_partitions(
        &self,
        ask: impl Fn(u32) -> StorageAsk,
    ) -> Result<Vec<StorageAnswer>, ClientError> {
        let partitions = self.num_partitions().await?;
        let mut tasks = JoinSet::new();
        for partition in 0..partitions {
            let client = self.clone();
            let question = ask(partition);
            tasks.spawn(async move {
                let answer = client.ask(question, AskTarget::Partition(partition)).await;
                (partition, answer)
            });
        }
        let mut answers = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (partition, answer) = joined.map_err(|_| ClientError::ReadFailed {
                what: "a partition's answer",
                failures: Vec::new(),
            })?;
            answers.insert(partition, answer?);
        }
        Ok(answers.into_values().collect())
    }

    async fn num_partitions(&self) -> Result<u32, ClientError> {
        Ok(self
            .partition_table()
            .await?
            .map_or(0, |table| table.num_partitions()))
    }
}

/// One partition's part of an iteration.
#[derive(Debug)]
struct Feed {
    partition: u32,
    /// The last revision received.
    after: ObjectCursor,
    /// Transactions received and not handed out, in TID order (a transaction cut by a page
    /// comes in two).
    buffer: VecDeque<TransactionRecords>,
    done: bool,
}

impl Feed {
    /// Every transaction of the partition up to this TID is in the buffer or handed out.
    fn covered(&self) -> Tid {
        if self.done {
            Tid::MAX
        } else if self.after.oid == Oid(u64::MAX) {
            self.after.tid
        } else {
            self.after.tid.previous().unwrap_or(Tid::ZERO)
        }
    }
}

/// The transactions of a range in TID order, whole ([`ClientHandle::iterator`]).
#[derive(Debug)]
pub struct TransactionIterator {
    client: ClientHandle,
    stop: Tid,
    after: ObjectCursor,
    feeds: Option<Vec<Feed>>,
}

impl TransactionIterator {
    /// The last TID the iteration covers.
    pub fn stop(&self) -> Tid {
        self.stop
    }

    /// The next transaction with all its revisions, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<TransactionRecords>, ClientError> {
        if self.feeds.is_none() {
            let partitions = self.client.num_partitions().await?;
            self.feeds = Some(
                (0..partitions)
                    .map(|partition| Feed {
                        partition,
                        after: self.after,
                        buffer: VecDeque::new(),
                        done: false,
                    })
                    .collect(),
            );
        }
        loop {
            let feeds = self.feeds.as_deref_mut().unwrap_or_default();
            let candidate = feeds
                .iter()
                .filter_map(|feed| feed.buffer.front().map(|txn| txn.tid))
                .min();
            let wanting: Vec<usize> = feeds
                .iter()
                .enumerate()
                .filter(|(_, feed)| {
                    !feed.done && candidate.is_none_or(|candidate| feed.covered() < candidate)
                })
                .map(|(index, _)| index)
                .collect();
            if wanting.is_empty() {
                let Some(candidate) = candidate else {
                    return Ok(None);
                };
                return Ok(Some(take_transaction(feeds, candidate)));
            }
            self.fetch(&wanting).await?;
        }
    }

    /// Asks the next page of the feeds at `indexes`, concurrently.
    async fn fetch(&mut self, indexes: &[usize]) -> Result<(), ClientError> {
        let Some(feeds) = self.feeds.as_mut() else {
            return Ok(());
        };
        let mut tasks = JoinSet::new();
        for &index in indexes {
            let feed = &feeds[index];
            let client = self.client.clone();
            let ask = StorageAsk::Transactions {
                partition: feed.partition,
                after: feed.after,
                up_to: self.stop,
                max_bytes: PAGE_BYTES,
            };
            let target = AskTarget::Partition(feed.partition);
            tasks.spawn(async move { (index, client.ask(ask, target).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, answer) = joined.map_err(|_| ClientError::ReadFailed {
                what: "a page of transactions",
                failures: Vec::new(),
            })?;
            let StorageAnswer::Transactions {
                transactions,
                resume,
            } = answer?
            else {
                return Err(ClientError::BadAnswer {
                    what: "Transactions",
                });
            };
            let feed = &mut feeds[index];
            feed.buffer.extend(transactions);
            match resume {
                Some(resume) if resume > feed.after => feed.after = resume,
                // Done, or a source that does not move on (which would loop forever).
                _ => feed.done = true,
            }
        }
        Ok(())
    }
}

/// Takes transaction `tid` out of every feed, its revisions merged in OID order.
fn take_transaction(feeds: &mut [Feed], tid: Tid) -> TransactionRecords {
    let mut info = None;
    let mut records: BTreeMap<Oid, DataRecord> = BTreeMap::new();
    for feed in feeds {
        while feed.buffer.front().is_some_and(|txn| txn.tid == tid) {
            if let Some(part) = feed.buffer.pop_front() {
                info.get_or_insert(part.info);
                records.extend(part.records.into_iter().map(|record| (record.oid, record)));
            }
        }
    }
    TransactionRecords {
        tid,
        info: info.unwrap_or_default(),
        records: records.into_values().collect(),
    }
}

/// The revisions current at a TID, object by object ([`ClientHandle::scan_objects`]).
#[derive(Debug)]
pub struct ObjectScan {
    client: ClientHandle,
    at: Tid,
    partition: u32,
    after: Option<Oid>,
    buffer: VecDeque<ObjectRevision>,
    partitions: Option<u32>,
}

impl ObjectScan {
    /// The next object's revision current at the scan's TID, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ObjectRevision>, ClientError> {
        let partitions = match self.partitions {
            Some(partitions) => partitions,
            None => *self.partitions.insert(self.client.num_partitions().await?),
        };
        let mut seen: BTreeSet<(u32, Option<Oid>)> = BTreeSet::new();
        loop {
            if let Some(revision) = self.buffer.pop_front() {
                return Ok(Some(revision));
            }
            if self.partition >= partitions {
                return Ok(None);
            }
            if !seen.insert((self.partition, self.after)) {
                // The same page again: a source that does not move on.
                return Err(ClientError::BadAnswer { what: "ObjectsAt" });
            }
            let ask = StorageAsk::ObjectsAt {
                partition: self.partition,
                at: self.at,
                after: self.after,
                max_bytes: PAGE_BYTES,
            };
            let answer = self
                .client
                .ask(ask, AskTarget::Partition(self.partition))
                .await?;
            let StorageAnswer::Objects { objects, resume } = answer else {
                return Err(ClientError::BadAnswer { what: "ObjectsAt" });
            };
            self.buffer.extend(objects);
            match resume {
                Some(resume) => self.after = Some(resume),
                None => {
                    self.partition += 1;
                    self.after = None;
                }
            }
        }
    }
}
