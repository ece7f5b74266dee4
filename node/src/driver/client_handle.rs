//! [`ClientHandle`]: the client role as an `async` API for applications, shared by threads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use replicast_transport::fanout::Fanout;
use replicast_transport::quic::Endpoint;
use tokio::sync::oneshot;

use super::client_calls;
use super::client_dispatch::{self, Current, InvalidationListener, ReadOutcome, Shared};
use super::fanout::{FanoutDeliveries, FanoutEnd, FanoutView, FanoutWriter};
use super::run::{DriverConfig, DriverError, DriverHandle, DriverStats, spawn_with};
use crate::client::{AbortReason, AskTarget, Client, Conflict, ReadFailure};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::partition::PartitionTable;
use crate::protocol::{
    LoadBefore, LoadResult, ProtocolError, StorageAnswer, StorageAsk, StoreKind,
};
use crate::transaction::TransactionInfo;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transaction was aborted everywhere; begin a new one (a conflict is worth a retry).
    #[error("transaction aborted: {0:?}")]
    Aborted(AbortReason),
    /// The vote did not go out: stores met conflicts that were not resolved. The transaction
    /// is still open: store the objects again on top of each conflict's `current` serial, or
    /// abort.
    #[error("unresolved conflicts: {0:?}")]
    Conflicts(Vec<Conflict>),
    /// [`begin_at`](ClientHandle::begin_at) named a TID that is not after the last committed
    /// one; no transaction began.
    #[error("cannot commit at {tid}: the last committed transaction is {last}")]
    TidRefused {
        /// The TID asked for.
        tid: Tid,
        /// The last committed TID.
        last: Tid,
    },
    /// An object's data is larger than the client's limit
    /// ([`ClientConfig::max_object_size`](crate::client::ClientConfig::max_object_size));
    /// nothing was sent.
    #[error("{oid}: {size} bytes of data exceed the limit of {max}")]
    TooLarge {
        /// The object.
        oid: Oid,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The role refused the call (e.g. a store outside a transaction).
    #[error(transparent)]
    Protocol(ProtocolError),
    /// No replica of the object answered the load.
    #[error("no replica of object {oid:?} answered the load: {failures:?}")]
    LoadFailed {
        /// The object.
        oid: Oid,
        /// Each replica asked, and why it did not answer.
        failures: Vec<(String, ReadFailure)>,
    },
    /// No storage that may answer did (all down, or failing).
    #[error("no storage answered {what}: {failures:?}")]
    ReadFailed {
        /// The question.
        what: &'static str,
        /// Each storage asked, and why it did not answer (empty when the failure was not a
        /// storage's, e.g. a task of the handle that ended).
        failures: Vec<(String, ReadFailure)>,
    },
    /// A storage answered something that does not fit the question (a bug, or a peer of
    /// another version).
    #[error("a storage answered {what} with something else")]
    BadAnswer {
        /// The question.
        what: &'static str,
    },
    /// The awaited answer did not come in time.
    #[error("{what} got no answer within {after:?}")]
    Timeout {
        /// The call.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The driver stopped.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl From<ProtocolError> for ClientError {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::TooLarge { oid, size, max } => ClientError::TooLarge { oid, size, max },
            other => ClientError::Protocol(other),
        }
    }
}

/// A client of the store, for applications: each call returns once the cluster answered.
///
/// The handle is cheap to clone and may be used from any number of tasks or threads at once:
/// every call gets its own answer. One transaction at a time: [`begin`](Self::begin) waits
/// until the transaction in progress ended (bounded by [`set_commit_wait`](Self::set_commit_wait)),
/// as a ZODB storage's `tpc_begin` does; reads go on meanwhile. The transaction calls act on
/// the transaction in progress, so only its owner makes them. Stores are pipelined (they
/// return at once); a conflict is reported by [`wait_stores`](Self::wait_stores) and
/// [`vote`](Self::vote) without ending the transaction, other aborts by the next call of the
/// transaction.
///
/// ```no_run
/// # async fn demo(client: &replicast_node::driver::ClientHandle) -> Result<(), replicast_node::driver::ClientError> {
/// use replicast_node::object::ObjectData;
/// use replicast_node::transaction::TransactionInfo;
///
/// let oid = client.new_oids(1).await?[0];
/// client.begin().await?;
/// let serial = client.load(oid).await?.map_or(replicast_node::ids::Tid::ZERO, |(tid, _)| tid);
/// client.store(oid, serial, ObjectData::from(b"hello".to_vec())).await?;
/// client.vote(TransactionInfo::default()).await?;
/// let tid = client.finish().await?;
/// assert!(client.last_transaction() >= tid);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientHandle {
    inner: Arc<Inner>,
}

struct Inner {
    driver: DriverHandle<Client>,
    shared: Arc<Shared>,
    timeout: Duration,
    commit_wait: Mutex<Duration>,
    slot: Arc<tokio::sync::Mutex<()>>,
    fanout: Option<FanoutView>,
    /// The client's [`ClientConfig::max_object_size`](crate::client::ClientConfig), checked
    /// before a pipelined store leaves the caller.
    max_object_size: usize,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("driver", &self.inner.driver)
            .field("last_transaction", &self.last_transaction())
            .finish_non_exhaustive()
    }
}

/// How long `begin` waits for the transaction in progress by default.
const DEFAULT_COMMIT_WAIT: Duration = Duration::from_secs(60);

impl ClientHandle {
    /// Runs `client` on `endpoint`, announces it to the master and waits for the partition
    /// table. Every later wait is bounded by `timeout`.
    ///
    /// Stores travel inline, as messages over each storage's QUIC link;
    /// [`connect_with_fanout`](Self::connect_with_fanout) sends them through the fan-out.
    pub async fn connect(
        client: Client,
        endpoint: Endpoint,
        config: DriverConfig,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        Self::start(client, endpoint, config, timeout, FanoutEnd::None, None).await
    }

    /// Like [`connect`](Self::connect), but stores go through `writer`, with its strategy
    /// ([`Fanout::strategy`]): one multicast send for all replicas of an object, or one
    /// QUIC object per replica, or each as the replica's reachability says. `writer` must
    /// run on `endpoint` (one QUIC connection per peer is shared). Every storage of the
    /// address book (the master's, and `config.directory`'s) is added to the writer before
    /// this returns; storages learned later are added on their first store, and a storage
    /// that failed a delivery is added again after a second (a restarted storage has
    /// forgotten its membership).
    ///
    /// ```no_run
    /// # async fn demo(endpoint: replicast_transport::quic::Endpoint) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use replicast_node::client::{Client, ClientConfig};
    /// use replicast_node::driver::{ClientHandle, DriverConfig};
    /// use replicast_transport::fanout::{Fanout, FanoutConfig, Strategy};
    /// use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
    ///
    /// let group = MulticastSocketConfig::new("239.255.10.1:47000".parse()?);
    /// let writer = Fanout::bind(
    ///     endpoint.clone(),
    ///     FanoutConfig { strategy: Strategy::Multicast, ..FanoutConfig::new(MulticastSenderConfig::new(group, rand::random())) },
    /// )?;
    /// let directory = [("master".to_owned(), "127.0.0.1:7000".parse()?)].into();
    /// let client = ClientHandle::connect_with_fanout(
    ///     Client::new("client-1", "master", ClientConfig::default()),
    ///     endpoint,
    ///     DriverConfig { directory, ..DriverConfig::default() },
    ///     Duration::from_secs(10),
    ///     writer,
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_fanout(
        client: Client,
        endpoint: Endpoint,
        config: DriverConfig,
        timeout: Duration,
        writer: Fanout,
    ) -> Result<Self, ClientError> {
        let writer = FanoutWriter::start(writer);
        let view = writer.view();
        let directory = config.directory.clone();
        let handle = Self::start(
            client,
            endpoint,
            config,
            timeout,
            FanoutEnd::Writer(writer),
            Some(view.clone()),
        )
        .await?;
        let (master_book, storages) = handle
            .inner
            .driver
            .call(|client, _| {
                // Only storages that take writes now: one the master knows to be down would
                // hold the connect back for the whole join wait. Others join on their first
                // store.
                let mut writable: Vec<String> = client
                    .table()
                    .map(|table| {
                        table
                            .partitions()
                            .flatten()
                            .filter(|cell| cell.is_writable())
                            .map(|cell| cell.node.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                writable.sort();
                writable.dedup();
                (client.storage_addresses().clone(), writable)
            })
            .await?;
        let book: Vec<(String, SocketAddr)> = storages
            .into_iter()
            .filter_map(|name| {
                let addr = directory
                    .get(&name)
                    .or_else(|| master_book.get(&name))
                    .copied()?;
                Some((name, addr))
            })
            .collect();
        tokio::time::timeout(timeout, view.join(book))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "adding the storages to the fan-out",
                after: timeout,
            })?;
        Ok(handle)
    }

    async fn start(
        client: Client,
        endpoint: Endpoint,
        config: DriverConfig,
        timeout: Duration,
        fanout_end: FanoutEnd,
        fanout: Option<FanoutView>,
    ) -> Result<Self, ClientError> {
        let mut config = config;
        // The master hears what this client measures of its links.
        config
            .report_to
            .get_or_insert_with(|| client.master().to_owned());
        let max_object_size = client.config().max_object_size;
        let (driver, events) = spawn_with(client, endpoint, config, fanout_end);
        let shared = Shared::new();
        client_dispatch::start(shared.clone(), events);
        let handle = Self {
            inner: Arc::new(Inner {
                driver,
                shared,
                timeout,
                commit_wait: Mutex::new(DEFAULT_COMMIT_WAIT),
                slot: Arc::new(tokio::sync::Mutex::new(())),
                fanout,
                max_object_size,
            }),
        };
        let (ready, connected) = oneshot::channel();
        let shared = handle.inner.shared.clone();
        handle
            .inner
            .driver
            .call(move |client, _| {
                shared.waiters().ready = Some(ready);
                client.connect();
            })
            .await?;
        handle.wait("connect", connected).await?;
        // The master told its last commit before the table.
        let last = handle
            .inner
            .driver
            .call(|client, _| client.last_transaction())
            .await?
            .unwrap_or(Tid::ZERO);
        handle.inner.shared.last.send_replace(last);
        Ok(handle)
    }

    /// How long [`begin`](Self::begin) waits for the transaction in progress to end before
    /// [`ClientError::Timeout`] (60 s by default).
    pub fn set_commit_wait(&self, wait: Duration) {
        *self
            .inner
            .commit_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = wait;
    }

    /// The fan-out writer stores go through ([`connect_with_fanout`](Self::connect_with_fanout)),
    /// for its counters ([`Fanout::multicast_stats`], [`Fanout::reachability`]); `None` when
    /// stores travel inline.
    pub fn fanout(&self) -> Option<&Fanout> {
        self.inner.fanout.as_ref().map(FanoutView::writer)
    }

    /// How the fan-out delivered stores so far, per storage (empty when stores travel
    /// inline).
    pub fn fanout_deliveries(&self) -> BTreeMap<String, FanoutDeliveries> {
        self.inner
            .fanout
            .as_ref()
            .map(FanoutView::deliveries)
            .unwrap_or_default()
    }

    /// Begins a transaction, once the one in progress ended; returns its temporary TID.
    pub async fn begin(&self) -> Result<Tid, ClientError> {
        self.begin_at(None).await
    }

    /// Begins a transaction like [`begin`](Self::begin); with `Some(tid)` it commits at
    /// exactly `tid` (ZODB's `tpc_begin(txn, tid)`, for restores and
    /// `copyTransactionsFrom`). A `tid` not after the last committed TID is refused
    /// ([`ClientError::TidRefused`]); if another commit gets in before this one finishes,
    /// the finish fails with
    /// [`TransactionOutcome::TidNotAfterLast`](crate::protocol::TransactionOutcome::TidNotAfterLast).
    pub async fn begin_at(&self, tid: Option<Tid>) -> Result<Tid, ClientError> {
        let wait = *self
            .inner
            .commit_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let slot = tokio::time::timeout(wait, self.inner.slot.clone().lock_owned())
            .await
            .map_err(|_| ClientError::Timeout {
                what: "begin (waiting for the transaction in progress)",
                after: wait,
            })?;
        let (reply, begun) = oneshot::channel();
        let shared = self.inner.shared.clone();
        let result = self
            .inner
            .driver
            .call(move |client, now| {
                // A failure of an earlier transaction's pipelined store is its business.
                shared.take_pipelined();
                // This call holds the commit slot, so a transaction the role still has belongs
                // to no call: an earlier one gave up on it (its begin timed out while the
                // request stayed with the master, which may answer late; a store or vote
                // timed out). Left there, it would refuse every begin from now on.
                let mut given_up = None;
                if client.in_transaction() {
                    match client.pending_begin() {
                        // Still beginning, as asked now: this call takes its answer over.
                        Some(at) if at == tid => {
                            let mut current = Current::new(slot);
                            current.begun = Some(reply);
                            shared.waiters().current = Some(current);
                            return Ok(());
                        }
                        // Beginning at another TID: refused below.
                        Some(_) => {}
                        None => {
                            given_up = client.current_transaction();
                            // Refused once its finish was asked for: then so is the begin.
                            let _ = client.abort();
                        }
                    }
                }
                let result = client.begin_at(now, tid);
                if result.is_ok() {
                    let mut current = Current::new(slot);
                    current.begun = Some(reply);
                    current.given_up = given_up;
                    shared.waiters().current = Some(current);
                }
                result
            })
            .await?;
        result?;
        let outcome = self.wait("begin", begun).await;
        if outcome.is_err() {
            self.release_current();
        }
        outcome?
    }

    /// Stores `data` as the new revision of `oid`, read at `serial` ([`Tid::ZERO`] for a new
    /// object), on every writable replica. Does not wait for the storages. Storing an object
    /// again replaces the earlier data (after a conflict: on top of its `current` serial).
    pub async fn store(&self, oid: Oid, serial: Tid, data: ObjectData) -> Result<(), ClientError> {
        self.store_kind(oid, serial, data, StoreKind::Checked).await
    }

    /// Like [`store`](Self::store), without waiting for the driver to take the store: it
    /// takes effect in order with every later call of this handle, so a caller storing many
    /// objects (ZODB's `store`, once per object of a commit) pays one hand-over each, not a
    /// round trip to the driver. An object larger than
    /// [`ClientConfig::max_object_size`](crate::client::ClientConfig) is refused at once; a
    /// failure the client reports when it takes the store (e.g. the object has no writable
    /// replica left) comes back from the next [`wait_stores`](Self::wait_stores) or
    /// [`vote`](Self::vote).
    pub fn store_pipelined(
        &self,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), ClientError> {
        self.store_pipelined_batch(vec![(oid, serial, data)])
    }

    /// Stores each `(oid, serial, data)` of `stores`, in order, as
    /// [`store_pipelined`](Self::store_pipelined) stores one, with one hand-over to the driver
    /// for all of them: a caller that has many stores at hand (the ZODB binding gathers a
    /// commit's stores in batches) saves the driver a wake-up and a turn of its loop per
    /// object. If one object is larger than
    /// [`ClientConfig::max_object_size`](crate::client::ClientConfig), none is sent.
    ///
    /// ```no_run
    /// # async fn example(handle: replicast_node::driver::ClientHandle) -> Result<(), replicast_node::driver::ClientError> {
    /// use replicast_node::ids::{Oid, Tid};
    /// use replicast_node::object::ObjectData;
    ///
    /// handle.begin().await?;
    /// let stores = (1..=3)
    ///     .map(|n| (Oid(n), Tid::ZERO, ObjectData::from(bytes::Bytes::from_static(b"new"))))
    ///     .collect();
    /// handle.store_pipelined_batch(stores)?;
    /// let conflicts = handle.wait_stores().await?;
    /// assert!(conflicts.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn store_pipelined_batch(
        &self,
        stores: Vec<(Oid, Tid, ObjectData)>,
    ) -> Result<(), ClientError> {
        if stores.is_empty() {
            return Ok(());
        }
        self.check_aborted()?;
        let max = self.inner.max_object_size;
        if let Some((oid, _, data)) = stores
            .iter()
            .find(|(_, _, data)| data.as_bytes().len() > max)
        {
            let size = data.as_bytes().len();
            return Err(ClientError::TooLarge {
                oid: *oid,
                size,
                max,
            });
        }
        let shared = self.inner.shared.clone();
        self.inner.driver.cast(move |client, now| {
            for (oid, serial, data) in stores {
                if let Err(error) = client.store_kind(now, oid, serial, data, StoreKind::Checked) {
                    shared
                        .pipelined
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get_or_insert(error);
                }
            }
        })?;
        Ok(())
    }

    /// Stores `data` as the new revision of `oid` without checking any serial (ZODB's
    /// `restore`; [`ObjectData::Deleted`] for a revision that undid the object's creation).
    pub async fn restore(&self, oid: Oid, data: ObjectData) -> Result<(), ClientError> {
        self.store_kind(oid, Tid::ZERO, data, StoreKind::Unchecked)
            .await
    }

    /// An undo's store: the new revision of `oid`, on top of `serial`, is the content of its
    /// revision `restore` (by reference, no data sent), or a deletion when `restore` is
    /// `None` (undoing the object's creation).
    pub async fn store_undo(
        &self,
        oid: Oid,
        serial: Tid,
        restore: Option<Tid>,
    ) -> Result<(), ClientError> {
        match restore {
            Some(restore) => {
                let empty = ObjectData::from(bytes::Bytes::new());
                self.store_kind(oid, serial, empty, StoreKind::Undo(restore))
                    .await
            }
            None => {
                self.store_kind(oid, serial, ObjectData::Deleted, StoreKind::Checked)
                    .await
            }
        }
    }

    /// Checks that `serial` is the last committed revision of `oid` and keeps the object
    /// locked until the transaction ends (ZODB's `checkCurrentSerialInTransaction`); a stale
    /// serial comes back from [`wait_stores`](Self::wait_stores) or [`vote`](Self::vote) as a
    /// conflict of kind [`ConflictKind::ReadCurrent`](crate::client::ConflictKind::ReadCurrent).
    pub async fn check_current_serial(&self, oid: Oid, serial: Tid) -> Result<(), ClientError> {
        let empty = ObjectData::from(bytes::Bytes::new());
        self.store_kind(oid, serial, empty, StoreKind::CheckCurrent)
            .await
    }

    async fn store_kind(
        &self,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
        kind: StoreKind,
    ) -> Result<(), ClientError> {
        self.check_aborted()?;
        let shared = self.inner.shared.clone();
        self.inner
            .driver
            .call(move |client, now| {
                client_calls::store(client, &shared, now, oid, serial, data, kind)
            })
            .await?
    }

    /// Waits until every store and check sent so far is answered; returns the conflicts not
    /// resolved (empty: everything is stored). The transaction stays open.
    pub async fn wait_stores(&self) -> Result<Vec<Conflict>, ClientError> {
        self.check_aborted()?;
        let (reply, answered) = oneshot::channel();
        let shared = self.inner.shared.clone();
        let now = self
            .inner
            .driver
            .call(move |client, _| client_calls::stores(client, &shared, reply))
            .await??;
        match now {
            Some(conflicts) => Ok(conflicts),
            None => self.wait("stores", answered).await?,
        }
    }

    /// Votes (ZODB's `tpc_vote`): returns once every touched object is durable on a replica
    /// that voted yes, with the objects whose conflicts were resolved (stored again after a
    /// conflict). The votes go out at once, behind the stores still unanswered (a storage
    /// votes once it holds them). With unresolved conflicts (known now, or answered by the
    /// storages) it returns [`ClientError::Conflicts`] once every answer is in; the
    /// transaction stays open.
    pub async fn vote(&self, info: TransactionInfo) -> Result<Vec<Oid>, ClientError> {
        self.check_aborted()?;
        let (reply, voted) = oneshot::channel();
        let shared = self.inner.shared.clone();
        self.inner
            .driver
            .call(move |client, now| client_calls::vote(client, &shared, now, info, reply))
            .await??;
        self.wait("vote", voted).await??;
        Ok(self
            .inner
            .driver
            .call(|client, _| client.resolved())
            .await?)
    }

    /// Commits the voted transaction; returns its TID once every invalidation of an earlier
    /// TID was delivered ([`last_transaction`](Self::last_transaction) is then at least this
    /// TID).
    pub async fn finish(&self) -> Result<Tid, ClientError> {
        self.check_aborted()?;
        let (reply, finished) = oneshot::channel();
        let shared = self.inner.shared.clone();
        self.inner
            .driver
            .call(move |client, _| client_calls::finish(client, &shared, reply))
            .await??;
        self.wait("finish", finished).await?
    }

    /// Aborts the transaction in progress everywhere (ZODB's `tpc_abort`). Harmless when
    /// the cluster already aborted it or none is in progress.
    pub async fn abort(&self) -> Result<(), ClientError> {
        let shared = self.inner.shared.clone();
        let result = self
            .inner
            .driver
            .call(move |client, _| {
                shared.take_pipelined();
                let result = client.abort();
                if client.current_transaction().is_none() {
                    shared.waiters().current = None;
                }
                result
            })
            .await?;
        match result {
            // Nothing in progress (never begun, or aborted by the cluster meanwhile).
            Err(ProtocolError::InvalidCall { .. }) | Ok(()) => {
                self.release_current();
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Aborts the transaction in progress if it is `ttid` (what [`begin`](Self::begin)
    /// returned); does nothing otherwise, so that a late abort never hits a later
    /// transaction.
    pub async fn abort_transaction(&self, ttid: Tid) -> Result<(), ClientError> {
        let current = self
            .inner
            .shared
            .waiters()
            .current
            .as_ref()
            .and_then(|current| current.ttid);
        if current == Some(ttid) {
            self.abort().await
        } else {
            Ok(())
        }
    }

    /// The last committed revision of `oid` (its TID and data), `None` if it has none.
    ///
    /// The readable replica with the lowest measured round-trip time is asked first; on
    /// failure (a failed answer, the storage lost, no answer within the load timeout while
    /// it sends nothing) the next one is. A large object takes as long as its transfer: the
    /// load timeout counts only time in which the replica sends nothing.
    pub async fn load(&self, oid: Oid) -> Result<Option<(Tid, ObjectData)>, ClientError> {
        Ok(self.load_with_replica(oid).await?.0)
    }

    /// As [`load`](Self::load), with the name of the storage that answered.
    pub async fn load_with_replica(
        &self,
        oid: Oid,
    ) -> Result<(Option<(Tid, ObjectData)>, String), ClientError> {
        let outcome = self
            .read("load", move |client, now| client.load(now, oid))
            .await?;
        match outcome {
            ReadOutcome::Load(LoadResult::Found { tid, data }, Some(from), _) => {
                Ok((Some((tid, data)), from))
            }
            ReadOutcome::Load(LoadResult::Missing, Some(from), _) => Ok((None, from)),
            ReadOutcome::Load(_, _, failures) => Err(ClientError::LoadFailed { oid, failures }),
            ReadOutcome::Ask(..) => Err(ClientError::BadAnswer { what: "load" }),
        }
    }

    /// The revision of `oid` current just before `before`, with the TID that replaced it
    /// (ZODB's `loadBefore`).
    pub async fn load_before(&self, oid: Oid, before: Tid) -> Result<LoadBefore, ClientError> {
        let ask = StorageAsk::LoadBefore { oid, before };
        match self.ask(ask, AskTarget::Object(oid)).await? {
            StorageAnswer::Load(found) => Ok(found),
            _ => Err(ClientError::BadAnswer { what: "LoadBefore" }),
        }
    }

    /// The content of revision `serial` of `oid` (ZODB's `loadSerial`): `None` when it has no
    /// such revision.
    pub async fn load_serial(
        &self,
        oid: Oid,
        serial: Tid,
    ) -> Result<Option<ObjectData>, ClientError> {
        let ask = StorageAsk::LoadSerial { oid, serial };
        match self.ask(ask, AskTarget::Object(oid)).await? {
            StorageAnswer::Load(LoadBefore::Found { data, .. }) => Ok(Some(data)),
            StorageAnswer::Load(_) => Ok(None),
            _ => Err(ClientError::BadAnswer { what: "LoadSerial" }),
        }
    }

    /// Asks `ask` of the storages `target` names (the readable replicas by round-trip time,
    /// the next on failure); [`ClientError::ReadFailed`] when none answers.
    pub async fn ask(
        &self,
        ask: StorageAsk,
        target: AskTarget,
    ) -> Result<StorageAnswer, ClientError> {
        let what = ask.kind();
        let outcome = self
            .read(what, move |client, now| client.ask(now, ask, &target))
            .await?;
        match outcome {
            ReadOutcome::Ask(StorageAnswer::Unavailable, failures) => {
                Err(ClientError::ReadFailed { what, failures })
            }
            ReadOutcome::Ask(answer, _) => Ok(answer),
            ReadOutcome::Load(..) => Err(ClientError::BadAnswer { what }),
        }
    }

    /// Sends one read through `send` (which returns its request id) and waits for its
    /// outcome; the links' round-trip times are refreshed first, so the nearest replica is
    /// asked first.
    async fn read(
        &self,
        what: &'static str,
        send: impl FnOnce(&mut Client, std::time::SystemTime) -> Result<u64, ProtocolError>
        + Send
        + 'static,
    ) -> Result<ReadOutcome, ClientError> {
        let endpoint = self.inner.driver.endpoint().clone();
        let shared = self.inner.shared.clone();
        let (reply, answered) = oneshot::channel();
        self.inner
            .driver
            .call(move |client, now| {
                let storages: Vec<String> = client
                    .table()
                    .map(|table| table.storages().to_vec())
                    .unwrap_or_default();
                for node in storages {
                    let link = endpoint.known_link(&node);
                    client.set_link_rtt(&node, link.as_ref().and_then(|link| link.rtt()));
                    // Where the read goes, what arrives from now on counts as its progress.
                    let received = link
                        .and_then(|link| link.connection_stats())
                        .map(|stats| stats.udp_rx.bytes);
                    client.set_link_received(&node, received);
                }
                let request = send(client, now)?;
                shared.waiters().reads.insert(request, reply);
                Ok::<_, ProtocolError>(())
            })
            .await??;
        self.wait(what, answered).await
    }

    /// New object ids from the master (possibly fewer than `count`); never [`Oid`] 0, which
    /// is ZODB's root object.
    pub async fn new_oids(&self, count: u32) -> Result<Vec<Oid>, ClientError> {
        let shared = self.inner.shared.clone();
        let (reply, answered) = oneshot::channel();
        self.inner
            .driver
            .call(move |client, _| {
                shared.waiters().new_oids.push_back(reply);
                client.new_oids(count);
            })
            .await?;
        let (first, count) = self.wait("new_oids", answered).await?;
        Ok((0..u64::from(count))
            .filter_map(|i| first.0.checked_add(i))
            .filter(|oid| *oid != 0)
            .map(Oid)
            .collect())
    }

    /// The last TID the application knows of: the master's last commit when the handle
    /// connected, then every TID whose invalidations were delivered to the
    /// [listener](Self::set_invalidation_listener), and this handle's own commits. It never
    /// passes a TID whose invalidations were not delivered (ZODB's `lastTransaction()`).
    pub fn last_transaction(&self) -> Tid {
        *self.inner.shared.last.borrow()
    }

    /// Asks the master for its last commit and waits until
    /// [`last_transaction`](Self::last_transaction) reached it (its invalidations delivered);
    /// returns it (ZODB's `sync()`).
    pub async fn sync(&self) -> Result<Tid, ClientError> {
        let shared = self.inner.shared.clone();
        let (reply, answered) = oneshot::channel();
        self.inner
            .driver
            .call(move |client, _| {
                let request = client.ask_last_transaction();
                shared.waiters().last_transaction.insert(request, reply);
            })
            .await?;
        let tid = self.wait("sync", answered).await?;
        let mut last = self.inner.shared.last.subscribe();
        tokio::time::timeout(self.inner.timeout, last.wait_for(|last| *last >= tid))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "sync (delivering invalidations)",
                after: self.inner.timeout,
            })?
            .map_err(|_| ClientError::Driver(DriverError::Stopped))?;
        Ok(tid)
    }

    /// Sets (or, with `None`, removes) the function that gets every invalidation, in TID
    /// order, on a thread of the handle's own; [`last_transaction`](Self::last_transaction)
    /// moves past a TID only once the listener returned for it. Without a listener,
    /// invalidations count as delivered when they arrive.
    ///
    /// It waits while the listener runs: a caller holding something the listener needs (a
    /// Python binding's GIL) must release it first, or both wait for good.
    pub fn set_invalidation_listener(&self, listener: Option<InvalidationListener>) {
        *self
            .inner
            .shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = listener;
    }

    /// The partition table the client holds now.
    pub async fn partition_table(&self) -> Result<Option<PartitionTable>, ClientError> {
        Ok(self
            .inner
            .driver
            .call(|client, _| client.table().cloned())
            .await?)
    }

    /// How many invalidations from other clients' commits arrived so far.
    pub fn invalidations(&self) -> u64 {
        self.inner
            .shared
            .invalidations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a storage failed during one of this client's transactions.
    pub fn storage_failures(&self) -> u64 {
        self.inner
            .shared
            .storage_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The driver's error counts.
    pub fn stats(&self) -> DriverStats {
        self.inner.driver.stats()
    }

    /// Stops the driver and closes the endpoint; every call in progress and later fails with
    /// [`DriverError::Stopped`].
    pub async fn close(&self) -> Result<(), ClientError> {
        self.inner.driver.endpoint().close();
        let mut stopped = self.inner.shared.stopped.subscribe();
        tokio::time::timeout(self.inner.timeout, stopped.wait_for(|stopped| *stopped))
            .await
            .map_err(|_| ClientError::Timeout {
                what: "close",
                after: self.inner.timeout,
            })?
            .map_err(|_| ClientError::Driver(DriverError::Stopped))?;
        Ok(())
    }

    /// Reports an abort of the transaction in progress that no call reported yet, and frees
    /// the slot.
    fn check_aborted(&self) -> Result<(), ClientError> {
        let mut waiters = self.inner.shared.waiters();
        let reason = waiters
            .current
            .as_mut()
            .and_then(|current| current.aborted.take());
        match reason {
            Some(reason) => {
                waiters.current = None;
                Err(ClientError::Aborted(reason))
            }
            None => Ok(()),
        }
    }

    /// Ends the handle's record of the transaction in progress (freeing the slot).
    fn release_current(&self) {
        self.inner.shared.waiters().current = None;
    }

    /// Waits for `answer`, bounded by the timeout.
    async fn wait<T>(
        &self,
        what: &'static str,
        answer: oneshot::Receiver<T>,
    ) -> Result<T, ClientError> {
        let after = self.inner.timeout;
        tokio::time::timeout(after, answer)
            .await
            .map_err(|_| ClientError::Timeout { what, after })?
            .map_err(|_| ClientError::Driver(DriverError::Stopped))
    }
}
