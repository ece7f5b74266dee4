//! [`ThreadedStorage`]: the storage role as the driver runs it, with its writes and reads
//! executed on threads of their own.

use std::future::Future;
use std::net::SocketAddr;
use std::time::SystemTime;

use super::config::PersistConfig;
use super::executor::{Done, Executor};
use super::stats::PersistStats;
use crate::driver::Role;
use crate::engine::{Engine, EngineError};
use crate::gate::PeerLoad;
use crate::ids::Tid;
use crate::partition::NodeName;
use crate::protocol::{Message, ProtocolError, Transmit};
use crate::storage::{Fetch, Persist, Storage, StorageConfig, StorageEvent};

/// Why a [`ThreadedStorage`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The engine's startup state could not be read.
    #[error("cannot read the engine's startup state")]
    Engine(#[from] EngineError),
    /// A thread of the executor could not be started.
    #[error("cannot start the storage executor's threads")]
    Spawn(#[from] std::io::Error),
}

/// The storage role with its persistence executor: a writer thread running the role's writes
/// in order, with group commit, and reader threads serving its reads on read transactions, so
/// that neither an fsync nor a long read ever blocks the driver's event loop, and a load never
/// waits behind a write.
///
/// It is a [`Role`]: [`spawn_storage`](crate::driver::spawn_storage) runs it. The writes go to
/// the writer through a bounded queue; what does not fit waits in the role, which then stops
/// taking stores ([`Role::takes_stores`]), and the driver stops handing it stores.
///
/// ```
/// use std::time::SystemTime;
/// use replicast_node::engine::Engine;
/// use replicast_node::persist::{PersistConfig, ThreadedStorage};
/// use replicast_node::storage::StorageConfig;
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path().join("s1.redb"))?;
/// let storage = ThreadedStorage::start(
///     SystemTime::now(),
///     "s1",
///     "master",
///     engine,
///     StorageConfig::default(),
///     PersistConfig::default(),
/// )?;
/// assert_eq!(storage.role().name(), "s1");
/// let engine = storage.stop(); // waits for the threads; the engine stays open while held
/// assert_eq!(engine.pending_transactions()?.len(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ThreadedStorage {
    role: Storage,
    executor: Executor,
    /// A write the full queue gave back, first to go when there is room.
    stalled_write: Option<Persist>,
    /// A read the full queue gave back.
    stalled_read: Option<Fetch>,
    peak_write_bytes: usize,
    peak_writes: usize,
}

impl ThreadedStorage {
    /// Starts the role `name` of `master` on `engine` ([`Storage::open`] on its startup state)
    /// and the executor's threads.
    pub fn start(
        now: SystemTime,
        name: &str,
        master: &str,
        engine: Engine,
        storage: StorageConfig,
        persist: PersistConfig,
    ) -> Result<Self, PersistError> {
        Self::start_with_masters(now, name, vec![master.to_owned()], engine, storage, persist)
    }

    /// As [`start`](Self::start), in a cluster of several `masters`
    /// ([`Storage::open_with_masters`]).
    pub fn start_with_masters(
        now: SystemTime,
        name: &str,
        masters: Vec<NodeName>,
        engine: Engine,
        storage: StorageConfig,
        persist: PersistConfig,
    ) -> Result<Self, PersistError> {
        let state = engine.startup_state()?;
        let role = Storage::open_with_masters(now, name, masters, state, storage);
        let executor = Executor::start(engine, &persist)?;
        let mut threaded = Self {
            role,
            executor,
            stalled_write: None,
            stalled_read: None,
            peak_write_bytes: 0,
            peak_writes: 0,
        };
        threaded.pump();
        Ok(threaded)
    }

    /// The role.
    pub fn role(&self) -> &Storage {
        &self.role
    }

    /// The role, to call it directly (what the call asks of the engine goes out with the next
    /// call of the driver).
    pub fn role_mut(&mut self) -> &mut Storage {
        &mut self.role
    }

    /// The engine, for reads (e.g. in tests).
    pub fn engine(&self) -> &Engine {
        self.executor.engine()
    }

    /// A handle on the engine that outlives this storage, for its counters (a benchmark's
    /// fsyncs) or reads; the database closes once every handle is dropped.
    pub fn shared_engine(&self) -> std::sync::Arc<Engine> {
        self.executor.engine().clone()
    }

    /// The executor's counters.
    pub fn stats(&self) -> PersistStats {
        let counters = &self.executor.counters;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        PersistStats {
            syncs: self.engine().syncs(),
            batches: counters.batches.load(relaxed),
            writes: counters.writes.load(relaxed),
            largest_batch: counters.largest_batch.load(relaxed),
            reads: counters.reads.load(relaxed),
            backlog: self.role.backlog(),
            peak_write_bytes: self.peak_write_bytes,
            peak_writes: self.peak_writes,
        }
    }

    /// Stops the executor (the writes queued are executed and made durable) and gives the
    /// engine back; dropping it closes the database.
    pub fn stop(mut self) -> std::sync::Arc<Engine> {
        self.executor.shutdown();
        self.executor.engine().clone()
    }

    /// Hands the executor what the role asked for, as far as its queues have room.
    fn pump(&mut self) {
        let backlog = self.role.backlog();
        self.peak_write_bytes = self.peak_write_bytes.max(backlog.write_bytes);
        self.peak_writes = self.peak_writes.max(backlog.writes);
        while let Some(persist) = self
            .stalled_write
            .take()
            .or_else(|| self.role.poll_persist())
        {
            self.stalled_write = self.executor.offer_write(persist);
            if self.stalled_write.is_some() {
                break;
            }
        }
        while let Some(fetch) = self.stalled_read.take().or_else(|| self.role.poll_fetch()) {
            self.stalled_read = self.executor.offer_read(fetch);
            if self.stalled_read.is_some() {
                break;
            }
        }
    }

    /// Feeds an outcome back to the role.
    fn take(&mut self, now: SystemTime, done: Done) {
        let result = match done {
            Done::Written { id, result } => self.role.persisted_with(now, id, result),
            Done::Read { id, result } => self.role.fetched(now, id, result),
        };
        if let Err(error) = result {
            tracing::debug!(%error, "the storage role refused an outcome of its executor");
        }
    }

    /// Waits for the next outcome of the executor and takes it in, with those already there.
    async fn next_outcome(&mut self) {
        let Some(done) = self.executor.done.recv().await else {
            // The threads are gone: nothing will come.
            return std::future::pending().await;
        };
        let now = SystemTime::now();
        self.take(now, done);
        while let Ok(done) = self.executor.done.try_recv() {
            self.take(now, done);
        }
        self.pump();
    }
}

impl Role for ThreadedStorage {
    type Event = StorageEvent;

    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let result = self.role.handle(now, from, message);
        self.pump();
        result
    }
    fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let result = self.role.handle_timeout(now);
        self.pump();
        result
    }
    fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        let result = self.role.peer_lost(now, peer);
        self.pump();
        result
    }
    fn poll_timeout(&self) -> Option<SystemTime> {
        self.role.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        // A call through the driver's handle may have asked for writes.
        self.pump();
        self.role.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<StorageEvent> {
        self.role.poll_event()
    }
    fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.role.peer_address(peer)
    }
    fn report_target(&self) -> Option<String> {
        Some(self.role.master_name().to_owned())
    }
    fn peer_load(&self, peer: &str, ttid: Option<Tid>) -> PeerLoad {
        self.role.peer_load(peer, ttid)
    }
    fn background(&mut self) -> impl Future<Output = ()> + Send + '_ {
        self.next_outcome()
    }
    fn takes_stores(&self) -> bool {
        self.role.takes_stores() && self.stalled_write.is_none()
    }
    fn answer_or_defer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        let answer = self.role.answer_or_defer(now, from, request, token);
        self.pump();
        answer
    }
    fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        self.role.poll_answer()
    }
}
