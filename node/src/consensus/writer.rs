//! [`LogWriter`]: a master's log writes on a thread of their own, each batch in one fsync.
//!
//! A master that writes its log on its event loop stops serving for every fsync, and pays
//! one per `Ready`: one per finish, since each decision is proposed as it comes. With the
//! writes handed to this thread, the event loop goes on taking finishes while a batch is on
//! its way to the disk; the decisions proposed meanwhile form the next batch, written in one
//! transaction (group commit, as the storages' writer does). [`Group`](super::Group) stages
//! each write in memory first (raft reads its log from there) and holds back whatever depends
//! on it (votes, append answers, its own commits) until this thread reports it durable.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use redb::Database;
use tokio::sync::mpsc;

use super::error::LogError;
use super::log::{LogWrite, write_durably};
use crate::persist::BatchHook;

/// Writes staged but not yet taken by the thread: when they are this many, staging another
/// waits for the disk (the event loop then feels it, as it did before the thread).
const QUEUED_WRITES: usize = 1024;

/// The thread that makes a master's staged log writes durable, in order.
///
/// Dropping it stops the thread after the batch it is writing (what was queued after it is
/// lost as in a crash: nothing that depends on it went out) and joins it: the log file is
/// closed when this returns, so a master may open it again in the same process.
#[derive(Debug)]
pub struct LogWriter {
    writes: Option<SyncSender<(u64, LogWrite)>>,
    written: mpsc::Receiver<Result<u64, LogError>>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the thread over `db`; `before_batch` runs on it before each batch (a test's
    /// slow or stopped disk; `None` in production).
    pub(crate) fn start(
        db: Arc<Database>,
        before_batch: Option<BatchHook>,
    ) -> std::io::Result<Self> {
        let (writes, queue) = sync_channel(QUEUED_WRITES);
        let (done, written) = mpsc::channel(QUEUED_WRITES);
        let thread = std::thread::Builder::new()
            .name("master-log".into())
            .spawn(move || write_in_batches(&db, &queue, &done, before_batch.as_deref()))?;
        Ok(Self {
            writes: Some(writes),
            written,
            thread: Some(thread),
        })
    }

    /// Queues `write`, staged for the `Ready` numbered `number` (or after it).
    pub(crate) fn send(&mut self, number: u64, write: LogWrite) -> Result<(), LogError> {
        // A full queue (the disk far behind) waits for room here.
        self.writes
            .as_ref()
            .ok_or_else(stopped)?
            .send((number, write))
            .map_err(|_| stopped())
    }

    /// The number of the last `Ready` whose writes are durable, once a batch more is, or
    /// the error that stopped the thread.
    pub(crate) async fn written(&mut self) -> Result<u64, LogError> {
        self.written.recv().await.unwrap_or_else(|| Err(stopped()))
    }

    /// [`written`](Self::written), if a batch completed since it was last asked.
    pub(crate) fn try_written(&mut self) -> Option<Result<u64, LogError>> {
        self.written.try_recv().ok()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.writes = None;
        // A thread waiting to report (the reports not taken fill their channel) gives up.
        self.written.close();
        if let Some(thread) = self.thread.take() {
            // The thread only writes and reports: it ends once the queue is drained.
            let _ = thread.join();
        }
    }
}

fn stopped() -> LogError {
    LogError::Database {
        what: "write behind",
        message: "the log's writer thread stopped".into(),
    }
}

/// The thread: takes every write queued, runs them in one durable transaction, reports the
/// last one's number; stops at the first failure (the master stops with it) or once the
/// queue is closed and drained.
fn write_in_batches(
    db: &Database,
    queue: &Receiver<(u64, LogWrite)>,
    done: &mpsc::Sender<Result<u64, LogError>>,
    before_batch: Option<&(dyn Fn() + Send + Sync)>,
) {
    while let Ok(first) = queue.recv() {
        let mut last = first.0;
        let mut batch = vec![first.1];
        while let Ok((number, write)) = queue.try_recv() {
            last = last.max(number);
            batch.push(write);
        }
        if let Some(hook) = before_batch {
            hook();
        }
        let result = write_durably(db, &batch).map(|()| last);
        let failed = result.is_err();
        if done.blocking_send(result).is_err() || failed {
            return;
        }
    }
}
