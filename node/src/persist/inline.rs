//! [`InlineStorage`]: the storage role with its writes and reads executed on the caller's
//! thread, right after each call: for deterministic simulations, tests and tools.

use std::net::SocketAddr;
use std::time::SystemTime;

use super::apply::{execute_read, execute_writes};
use crate::driver::Role;
use crate::engine::{Engine, EngineError};
use crate::gate::PeerLoad;
use crate::ids::Tid;
use crate::protocol::{Message, ProtocolError, Transmit};
use crate::storage::{Storage, StorageConfig, StorageEvent};

/// The storage role on an engine, executing what the role asks of it inline: after each call,
/// every write the role emitted is executed in one batch (group commit, as the threaded
/// executor does with what queued up), then every read, and the outcomes are fed back, until
/// the role asks nothing more.
///
/// With [`defer_writes`](Self::defer_writes), the calls execute the reads only (they never
/// wait for the writer in the threaded executor either) and the writes wait for
/// [`settle`](Self::settle): a simulation decides when its disk gets to them, and what a crash
/// before that loses.
///
/// ```
/// use std::time::SystemTime;
/// use replicast_node::engine::Engine;
/// use replicast_node::persist::InlineStorage;
/// use replicast_node::storage::StorageConfig;
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path().join("s1.redb"))?;
/// let now = SystemTime::now();
/// let mut storage = InlineStorage::open(now, "s1", "master", engine, StorageConfig::default())?;
/// let hello = storage.poll_transmit().expect("the storage announces itself");
/// assert_eq!(hello.to, "master");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct InlineStorage {
    role: Storage,
    engine: Engine,
    /// Writes wait for [`settle`](Self::settle).
    deferred: bool,
    /// Writes the role emitted and [`settle`](Self::settle) has not executed yet.
    waiting: Vec<crate::storage::Persist>,
}

impl InlineStorage {
    /// Starts the role `name` of `master` on `engine` ([`Storage::open`] on its startup state).
    pub fn open(
        now: SystemTime,
        name: &str,
        master: &str,
        engine: Engine,
        config: StorageConfig,
    ) -> Result<Self, EngineError> {
        Self::open_with_masters(now, name, vec![master.to_owned()], engine, config)
    }

    /// As [`open`](Self::open), in a cluster of several `masters`
    /// ([`Storage::open_with_masters`]).
    pub fn open_with_masters(
        now: SystemTime,
        name: &str,
        masters: Vec<String>,
        engine: Engine,
        config: StorageConfig,
    ) -> Result<Self, EngineError> {
        let state = engine.startup_state()?;
        let role = Storage::open_with_masters(now, name, masters, state, config);
        let mut storage = Self {
            role,
            engine,
            deferred: false,
            waiting: Vec::new(),
        };
        // Opening emits nothing that can be refused: the writes are the role's own.
        let _ = storage.settle(now);
        Ok(storage)
    }

    /// The role.
    pub fn role(&self) -> &Storage {
        &self.role
    }

    /// The role, to call it directly; [`settle`](Self::settle) afterwards executes what the
    /// call asked of the engine.
    pub fn role_mut(&mut self) -> &mut Storage {
        &mut self.role
    }

    /// The engine, e.g. to read it in tests.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Gives the engine back (the role stops).
    pub fn into_engine(self) -> Engine {
        self.engine
    }

    /// From now on, writes wait for [`settle`](Self::settle) (`true`), or are executed after
    /// each call (`false`).
    pub fn defer_writes(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// Whether writes wait for [`settle`](Self::settle).
    pub fn has_waiting_writes(&mut self) -> bool {
        self.collect_writes();
        !self.waiting.is_empty()
    }

    fn collect_writes(&mut self) {
        self.waiting
            .extend(std::iter::from_fn(|| self.role.poll_persist()));
    }

    /// Executes every write and read the role asked for, feeding the outcomes back, until it
    /// asks nothing more.
    pub fn settle(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        self.execute(now, true)
    }

    /// After a call: everything, or the reads only while writes are deferred.
    fn after_call(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        self.execute(now, !self.deferred)
    }

    fn execute(&mut self, now: SystemTime, with_writes: bool) -> Result<(), ProtocolError> {
        let mut outcome = Ok(());
        loop {
            self.collect_writes();
            let writes = if with_writes {
                std::mem::take(&mut self.waiting)
            } else {
                Vec::new()
            };
            let reads: Vec<_> = std::iter::from_fn(|| self.role.poll_fetch()).collect();
            if writes.is_empty() && reads.is_empty() {
                return outcome;
            }
            if !writes.is_empty() {
                let mut results = Vec::with_capacity(writes.len());
                execute_writes(
                    &self.engine,
                    writes,
                    || {},
                    |id, result| results.push((id, result)),
                );
                for (id, result) in results {
                    outcome = outcome.and(self.role.persisted_with(now, id, result));
                }
            }
            for fetch in reads {
                let result = execute_read(&self.engine, &fetch.read);
                outcome = outcome.and(self.role.fetched(now, fetch.id, result));
            }
        }
    }

    /// [`Storage::handle`], then what it asked of the engine (see [`defer_writes`](Self::defer_writes)).
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let handled = self.role.handle(now, from, message);
        handled.and(self.after_call(now))
    }

    /// [`Storage::handle_timeout`], then what it asked of the engine.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let handled = self.role.handle_timeout(now);
        handled.and(self.after_call(now))
    }

    /// [`Storage::peer_lost`], then what it asked of the engine.
    pub fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        let handled = self.role.peer_lost(now, peer);
        handled.and(self.after_call(now))
    }

    /// [`Storage::announce_address`].
    pub fn announce_address(&mut self, address: SocketAddr) {
        self.role.announce_address(address);
    }

    /// [`Storage::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.role.poll_timeout()
    }

    /// [`Storage::poll_transmit`].
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.role.poll_transmit()
    }

    /// [`Storage::poll_event`].
    pub fn poll_event(&mut self) -> Option<StorageEvent> {
        self.role.poll_event()
    }
}

impl Role for InlineStorage {
    type Event = StorageEvent;

    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        self.handle(now, from, message)
    }
    fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        InlineStorage::handle_timeout(self, now)
    }
    fn peer_lost(&mut self, now: SystemTime, peer: &str) -> Result<(), ProtocolError> {
        InlineStorage::peer_lost(self, now, peer)
    }
    fn poll_timeout(&self) -> Option<SystemTime> {
        self.role.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.role.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<StorageEvent> {
        self.role.poll_event()
    }
    fn peer_address(&self, peer: &str) -> Option<SocketAddr> {
        self.role.peer_address(peer)
    }
    fn peer_load(&self, peer: &str, ttid: Option<Tid>) -> PeerLoad {
        self.role.peer_load(peer, ttid)
    }
    fn answer_or_defer(
        &mut self,
        now: SystemTime,
        from: &str,
        request: Message,
        token: u64,
    ) -> Result<Option<Message>, ProtocolError> {
        let answer = self.role.answer_or_defer(now, from, request, token);
        answer.and_then(|answer| self.after_call(now).map(|()| answer))
    }
    fn poll_answer(&mut self) -> Option<(u64, Result<Message, ProtocolError>)> {
        self.role.poll_answer()
    }
}
