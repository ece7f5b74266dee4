//! The executor's threads: one writer that runs the role's writes in order, as many per redb
//! transaction as queued up while the previous one committed (group commit), and a few
//! readers that serve reads on redb read transactions, which never wait for the writer.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

use super::apply::{execute_read, execute_writes};
use super::config::PersistConfig;
use super::stats::Counters;
use crate::engine::Engine;
use crate::storage::{Fetch, Persist, ReadResult, WriteResult};

/// An outcome for the role.
#[derive(Debug)]
pub(super) enum Done {
    /// A write was executed.
    Written { id: u64, result: WriteResult },
    /// A read was executed.
    Read { id: u64, result: ReadResult },
}

/// The writer and reader threads, with the queues that feed them (bounded) and the one their
/// outcomes come back on (bounded too: a thread that finds it full waits for the driver).
pub(super) struct Executor {
    engine: Arc<Engine>,
    writes: Option<SyncSender<Persist>>,
    reads: Option<SyncSender<Fetch>>,
    pub(super) done: mpsc::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    pub(super) counters: Arc<Counters>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Starts the writer and `config.readers` readers on `engine`.
    pub(super) fn start(engine: Engine, config: &PersistConfig) -> std::io::Result<Self> {
        let engine = Arc::new(engine);
        let counters = Arc::new(Counters::default());
        let (writes, write_inbox) = sync_channel(config.write_queue.max(1));
        let (reads, read_inbox) = sync_channel(config.read_queue.max(1));
        let (done_tx, done) =
            mpsc::channel(config.write_queue.max(1) + config.read_queue.max(1) + config.max_batch);
        let mut executor = Self {
            engine: engine.clone(),
            writes: Some(writes),
            reads: Some(reads),
            done,
            threads: Vec::new(),
            counters: counters.clone(),
        };
        let writer = Writer {
            engine: engine.clone(),
            inbox: write_inbox,
            done: done_tx.clone(),
            config: config.clone(),
            counters: counters.clone(),
        };
        executor.threads.push(
            std::thread::Builder::new()
                .name("storage-writer".to_owned())
                .spawn(move || writer.run())?,
        );
        let read_inbox = Arc::new(Mutex::new(read_inbox));
        for index in 0..config.readers.max(1) {
            let reader = Reader {
                engine: engine.clone(),
                inbox: read_inbox.clone(),
                done: done_tx.clone(),
                counters: counters.clone(),
            };
            executor.threads.push(
                std::thread::Builder::new()
                    .name(format!("storage-reader-{index}"))
                    .spawn(move || reader.run())?,
            );
        }
        Ok(executor)
    }

    /// The engine the threads run on.
    pub(super) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Queues a write for the writer; gives it back when the queue is full (or the writer is
    /// gone, which is logged: the role then waits for the outcome forever).
    pub(super) fn offer_write(&self, persist: Persist) -> Option<Persist> {
        offer(self.writes.as_ref(), persist, "writer")
    }

    /// Queues a read for the readers; gives it back when the queue is full (or they are gone).
    pub(super) fn offer_read(&self, fetch: Fetch) -> Option<Fetch> {
        offer(self.reads.as_ref(), fetch, "readers")
    }

    /// Stops taking work, lets the writer execute what is queued and make it durable, and
    /// waits for every thread.
    pub(super) fn shutdown(&mut self) {
        // Nobody reads the outcomes any more: the threads must not wait for room for them.
        self.done.close();
        self.writes = None;
        self.reads = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a storage executor thread panicked");
            }
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Queues `work` on `queue`; gives it back if it does not fit.
fn offer<T>(queue: Option<&SyncSender<T>>, work: T, threads: &str) -> Option<T> {
    let Some(queue) = queue else {
        return Some(work);
    };
    match queue.try_send(work) {
        Ok(()) => None,
        Err(TrySendError::Full(work)) => Some(work),
        Err(TrySendError::Disconnected(work)) => {
            tracing::error!(threads, "the storage executor's threads are gone");
            Some(work)
        }
    }
}

/// The writer thread's state.
struct Writer {
    engine: Arc<Engine>,
    inbox: Receiver<Persist>,
    done: mpsc::Sender<Done>,
    config: PersistConfig,
    counters: Arc<Counters>,
}

impl Writer {
    fn run(self) {
        // When a commit without fsync (a finish) was made and not covered by a durable one.
        let mut unsynced_since: Option<Instant> = None;
        let mut reporting = true;
        loop {
            let first = match unsynced_since {
                None => match self.inbox.recv() {
                    Ok(persist) => persist,
                    Err(_) => break,
                },
                Some(since) => {
                    let wait =
                        (since + self.config.sync_delay).saturating_duration_since(Instant::now());
                    match self.inbox.recv_timeout(wait) {
                        Ok(persist) => persist,
                        Err(RecvTimeoutError::Timeout) => {
                            // Nothing came that would fsync anyway: fsync for the finishes.
                            if let Err(error) = self.engine.sync() {
                                tracing::error!(%error, "storage engine cannot sync");
                            }
                            unsynced_since = None;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            // What queued up while the last batch committed goes in this one.
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch.max(1) {
                match self.inbox.try_recv() {
                    Ok(persist) => batch.push(persist),
                    Err(_) => break,
                }
            }
            let writes = batch.len();
            let hook = self.config.before_batch.as_deref();
            let batches = execute_writes(
                &self.engine,
                batch,
                || {
                    if let Some(hook) = hook {
                        hook();
                    }
                },
                |id, result| {
                    if reporting
                        && self
                            .done
                            .blocking_send(Done::Written { id, result })
                            .is_err()
                    {
                        // The role is gone: finish the queue without reporting.
                        reporting = false;
                    }
                },
            );
            self.counters.batch(writes, batches);
            if !self.engine.has_unsynced() {
                unsynced_since = None;
            } else if unsynced_since.is_none() {
                unsynced_since = Some(Instant::now());
            }
        }
        if let Err(error) = self.engine.sync() {
            tracing::error!(%error, "storage engine cannot sync at shutdown");
        }
    }
}

/// A reader thread's state; the readers share one queue.
struct Reader {
    engine: Arc<Engine>,
    inbox: Arc<Mutex<Receiver<Fetch>>>,
    done: mpsc::Sender<Done>,
    counters: Arc<Counters>,
}

impl Reader {
    fn run(self) {
        loop {
            // One reader waits in `recv` at a time; it lets the others at the queue as soon as
            // it has a read.
            let fetch = self
                .inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            let Ok(fetch) = fetch else {
                return;
            };
            let result = execute_read(&self.engine, &fetch.read);
            self.counters.read();
            // A role that is gone wants no answer; the reader ends with its queue.
            let _ = self.done.blocking_send(Done::Read {
                id: fetch.id,
                result,
            });
        }
    }
}
