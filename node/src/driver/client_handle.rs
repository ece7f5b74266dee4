//! [`ClientHandle`]: the client role as an `async` API for applications.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use replicast_transport::fanout::Fanout;
use replicast_transport::quic::Endpoint;
use tokio::sync::mpsc;

use super::fanout::{FanoutDeliveries, FanoutView, FanoutWriter};
use super::run::{DriverConfig, DriverError, DriverHandle, DriverStats, Side, spawn_with};
use crate::client::{AbortReason, Client, ClientEvent};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::partition::PartitionTable;
use crate::protocol::{LoadResult, ProtocolError};
use crate::transaction::TransactionInfo;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transaction was aborted everywhere; begin a new one (a conflict is worth a retry).
    #[error("transaction aborted: {0:?}")]
    Aborted(AbortReason),
    /// The role refused the call (e.g. a store outside a transaction).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No replica of the object answered the load.
    #[error("no replica of object {oid:?} answered the load")]
    LoadFailed {
        /// The object.
        oid: Oid,
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

/// A client of the store, for applications: each call returns once the cluster answered.
///
/// One transaction at a time. Stores are pipelined (they return at once); a conflict or
/// another abort they cause is reported by the next call of the transaction.
///
/// ```no_run
/// # async fn demo(client: &mut replicast_node::driver::ClientHandle) -> Result<(), replicast_node::driver::ClientError> {
/// use replicast_node::object::ObjectData;
/// use replicast_node::transaction::TransactionInfo;
///
/// let oid = client.new_oids(1).await?[0];
/// client.begin().await?;
/// let serial = client.load(oid).await?.map_or(replicast_node::ids::Tid::ZERO, |(tid, _)| tid);
/// client.store(oid, serial, ObjectData::from(b"hello".to_vec())).await?;
/// client.vote(TransactionInfo::default()).await?;
/// let tid = client.finish().await?;
/// # let _ = tid; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ClientHandle {
    driver: DriverHandle<Client>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    timeout: Duration,
    current: Option<Tid>,
    aborted: Option<AbortReason>,
    invalidations: u64,
    storage_failures: u64,
    fanout: Option<FanoutView>,
}

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
        Self::start(client, endpoint, config, timeout, Side::Plain, None).await
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
            Side::Writer(writer),
            Some(view.clone()),
        )
        .await?;
        let master_book = handle
            .driver
            .call(|client, _| client.storage_addresses().clone())
            .await?;
        // Only storages that take writes now: one the master knows to be down would hold
        // the connect back for the whole join wait. Others join on their first store.
        let storages = handle
            .driver
            .call(|client, _| {
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
                writable
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
        side: Side,
        fanout: Option<FanoutView>,
    ) -> Result<Self, ClientError> {
        let mut config = config;
        // The master hears what this client measures of its links.
        config
            .report_to
            .get_or_insert_with(|| client.master().to_owned());
        let (driver, events) = spawn_with(client, endpoint, config, side);
        let mut handle = Self {
            driver,
            events,
            timeout,
            current: None,
            aborted: None,
            invalidations: 0,
            storage_failures: 0,
            fanout,
        };
        handle.driver.call(|client, _| client.connect()).await?;
        handle
            .wait("connect", false, |event| {
                matches!(event, ClientEvent::Ready).then_some(())
            })
            .await?;
        Ok(handle)
    }

    /// The fan-out writer stores go through ([`connect_with_fanout`](Self::connect_with_fanout)),
    /// for its counters ([`Fanout::multicast_stats`], [`Fanout::reachability`]); `None` when
    /// stores travel inline.
    pub fn fanout(&self) -> Option<&Fanout> {
        self.fanout.as_ref().map(FanoutView::writer)
    }

    /// How the fan-out delivered stores so far, per storage (empty when stores travel
    /// inline).
    pub fn fanout_deliveries(&self) -> BTreeMap<String, FanoutDeliveries> {
        self.fanout
            .as_ref()
            .map(FanoutView::deliveries)
            .unwrap_or_default()
    }

    /// Begins a transaction; returns its temporary TID.
    pub async fn begin(&mut self) -> Result<Tid, ClientError> {
        self.aborted = None;
        self.driver.call(|client, _| client.begin()).await??;
        let ttid = self
            .wait("begin", false, |event| match event {
                ClientEvent::Begun { ttid } => Some(*ttid),
                _ => None,
            })
            .await?;
        self.current = Some(ttid);
        Ok(ttid)
    }

    /// Stores `data` as the new revision of `oid`, read at `serial` ([`Tid::ZERO`] for a new
    /// object), on every writable replica. Does not wait for the storages.
    pub async fn store(
        &mut self,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), ClientError> {
        self.check_aborted()?;
        let result = self
            .driver
            .call(move |client, now| client.store(now, oid, serial, data))
            .await?;
        self.after_call(result)
    }

    /// Votes: returns once every touched object is durable on a replica that voted yes.
    pub async fn vote(&mut self, info: TransactionInfo) -> Result<(), ClientError> {
        self.check_aborted()?;
        let result = self
            .driver
            .call(move |client, now| client.vote(now, info))
            .await?;
        self.after_call(result)?;
        let ttid = self.current;
        self.wait("vote", true, |event| match event {
            ClientEvent::Voted { ttid: voted } if Some(*voted) == ttid => Some(()),
            _ => None,
        })
        .await
    }

    /// Commits the voted transaction; returns its TID.
    pub async fn finish(&mut self) -> Result<Tid, ClientError> {
        self.check_aborted()?;
        let result = self.driver.call(|client, _| client.finish()).await?;
        self.after_call(result)?;
        let ttid = self.current;
        let tid = self
            .wait("finish", true, |event| match event {
                ClientEvent::Committed { ttid: done, tid } if Some(*done) == ttid => Some(*tid),
                _ => None,
            })
            .await?;
        self.current = None;
        Ok(tid)
    }

    /// Aborts the transaction in progress everywhere. Aborting one the cluster already
    /// aborted is not an error.
    pub async fn abort(&mut self) -> Result<(), ClientError> {
        self.drain();
        let already = self.aborted.take().is_some();
        let result = self.driver.call(|client, _| client.abort()).await?;
        self.current = None;
        match result {
            Err(_) if already => Ok(()),
            other => Ok(other?),
        }
    }

    /// The last committed revision of `oid` (its TID and data), `None` if it has none.
    ///
    /// The readable replica with the lowest measured round-trip time is asked first; on
    /// failure (a failed answer, the storage lost, no answer within the load timeout) the
    /// next one is.
    pub async fn load(&mut self, oid: Oid) -> Result<Option<(Tid, ObjectData)>, ClientError> {
        Ok(self.load_with_replica(oid).await?.0)
    }

    /// As [`load`](Self::load), with the name of the storage that answered.
    pub async fn load_with_replica(
        &mut self,
        oid: Oid,
    ) -> Result<(Option<(Tid, ObjectData)>, String), ClientError> {
        let endpoint = self.driver.endpoint().clone();
        let request = self
            .driver
            .call(move |client, now| {
                // The replica with the lowest measured RTT is asked first.
                let readable: Vec<String> = client
                    .table()
                    .map(|table| table.readable_cells(oid).map(|c| c.node.clone()).collect())
                    .unwrap_or_default();
                for node in readable {
                    let rtt = endpoint.known_link(&node).and_then(|link| link.rtt());
                    client.set_link_rtt(&node, rtt);
                }
                client.load(now, oid)
            })
            .await??;
        let (result, from) = self
            .wait("load", false, |event| match event {
                ClientEvent::Loaded {
                    request: answered,
                    result,
                    from,
                    ..
                } if *answered == request => Some((result.clone(), from.clone())),
                _ => None,
            })
            .await?;
        match (result, from) {
            (LoadResult::Found { tid, data }, Some(from)) => Ok((Some((tid, data)), from)),
            (LoadResult::Missing, Some(from)) => Ok((None, from)),
            _ => Err(ClientError::LoadFailed { oid }),
        }
    }

    /// New object ids from the master (possibly fewer than `count`).
    pub async fn new_oids(&mut self, count: u32) -> Result<Vec<Oid>, ClientError> {
        self.driver
            .call(move |client, _| client.new_oids(count))
            .await?;
        let (first, count) = self
            .wait("new_oids", false, |event| match event {
                ClientEvent::NewOids { first, count } => Some((*first, *count)),
                _ => None,
            })
            .await?;
        Ok((0..u64::from(count)).map(|i| Oid(first.0 + i)).collect())
    }

    /// The partition table the client holds now.
    pub async fn partition_table(&self) -> Result<Option<PartitionTable>, ClientError> {
        Ok(self
            .driver
            .call(|client, _| client.table().cloned())
            .await?)
    }

    /// How many invalidations from other clients' commits arrived so far.
    pub fn invalidations(&self) -> u64 {
        self.invalidations
    }

    /// How many times a storage failed during one of this client's transactions.
    pub fn storage_failures(&self) -> u64 {
        self.storage_failures
    }

    /// The driver's error counts.
    pub fn stats(&self) -> DriverStats {
        self.driver.stats()
    }

    /// Stops the driver and closes the endpoint.
    pub async fn close(self) -> Result<(), ClientError> {
        self.driver.stop().await?;
        Ok(())
    }

    fn check_aborted(&mut self) -> Result<(), ClientError> {
        self.drain();
        match self.aborted.take() {
            Some(reason) => {
                self.current = None;
                Err(ClientError::Aborted(reason))
            }
            None => Ok(()),
        }
    }

    /// A refused call may be the consequence of an abort that arrived meanwhile: report that.
    fn after_call(&mut self, result: Result<(), ProtocolError>) -> Result<(), ClientError> {
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                self.check_aborted()?;
                Err(error.into())
            }
        }
    }

    /// Takes the events already queued, keeping what matters for later calls.
    fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.note(event);
        }
    }

    /// Notes side events; gives back the ones a call may be waiting for.
    fn note(&mut self, event: ClientEvent) -> Option<ClientEvent> {
        match event {
            ClientEvent::Aborted { ttid, reason } if Some(ttid) == self.current => {
                self.aborted = Some(reason);
                None
            }
            ClientEvent::Aborted { .. } => None,
            ClientEvent::Invalidated { .. } => {
                self.invalidations += 1;
                None
            }
            ClientEvent::StorageFailed { .. } => {
                self.storage_failures += 1;
                None
            }
            other => Some(other),
        }
    }

    /// Waits for the event `wanted` picks, bounded by the timeout; with `abortable`, an abort
    /// of the current transaction ends the wait.
    async fn wait<T>(
        &mut self,
        what: &'static str,
        abortable: bool,
        mut wanted: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> Result<T, ClientError> {
        let after = self.timeout;
        let waiting = async {
            loop {
                if abortable && let Some(reason) = self.aborted.take() {
                    self.current = None;
                    return Err(ClientError::Aborted(reason));
                }
                let event = self
                    .events
                    .recv()
                    .await
                    .ok_or(ClientError::Driver(DriverError::Stopped))?;
                if let Some(found) = self.note(event).as_ref().and_then(&mut wanted) {
                    return Ok(found);
                }
            }
        };
        tokio::time::timeout(after, waiting)
            .await
            .map_err(|_| ClientError::Timeout { what, after })?
    }
}
