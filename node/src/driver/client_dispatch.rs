//! How a shared [`ClientHandle`](super::ClientHandle) gets each call its own answer.
//!
//! The client role reports everything as events on one queue. A dispatcher task takes them in
//! order and routes each to the call waiting for it: reads and `sync` by request id, new ids
//! first come first served (the master answers in order), the transaction's steps to the one
//! transaction in progress. Calls register their waiter inside the driver call that sends the
//! request, so the answer can never be routed before its waiter exists.
//!
//! Invalidations and the handle's own commits go, in the order they arrived, to a delivery
//! thread of their own (the listener may block, e.g. on Python's GIL, which a tokio worker
//! must not): it calls the listener, then moves `last_transaction` on, then (for a commit)
//! answers `finish`. So `last_transaction` never passes a TID whose invalidations the
//! application has not had, and `finish` returns after every earlier invalidation was
//! delivered. A handle without a listener has nothing that may block: the dispatcher then
//! delivers itself, in the same order, as long as nothing it handed the thread earlier is
//! still there.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use tokio::sync::{OwnedMutexGuard, mpsc, oneshot, watch};

use super::client_handle::ClientError;
use crate::client::{AbortReason, ClientEvent, Conflict, ReadFailure};
use crate::ids::{Oid, Tid};
use crate::partition::NodeName;
use crate::protocol::{LoadResult, StorageAnswer};

/// What another client committed, or that the application may have missed commits, handed to
/// the [`InvalidationListener`] in TID order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Another client committed `oids` at `tid` (ZODB: `db.invalidate(tid, oids)`).
    Objects {
        /// The commit TID.
        tid: Tid,
        /// The objects it wrote.
        oids: Vec<Oid>,
    },
    /// Invalidations may have been missed (the link to the master was lost): every cached
    /// object may be stale (ZODB: `db.invalidateCache()`).
    Everything {
        /// The last TID the client knows of.
        tid: Tid,
    },
}

/// Called with every [`Invalidation`], in TID order, one at a time, on a thread of the
/// handle's own (it may block). It must not wait for `finish` of the same handle.
pub type InvalidationListener = Box<dyn FnMut(&Invalidation) + Send>;

/// What a read waits for.
pub(super) enum ReadOutcome {
    /// A load's result, who gave it, and the replicas that failed before.
    Load(LoadResult, Option<NodeName>, Vec<(NodeName, ReadFailure)>),
    /// A question's answer, and the replicas that failed before.
    Ask(StorageAnswer, Vec<(NodeName, ReadFailure)>),
}

pub(super) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// The transaction in progress of the handle: it holds the commit slot.
pub(super) struct Current {
    /// Its temporary TID, once begun.
    pub(super) ttid: Option<Tid>,
    /// The handle's commit slot, released with this value.
    pub(super) _slot: OwnedMutexGuard<()>,
    /// The cluster aborted it and no call reported it yet.
    pub(super) aborted: Option<AbortReason>,
    /// A transaction given up just before this one began, whose `Begun` may still be on its
    /// way to [`route`]: not this transaction's.
    pub(super) given_up: Option<Tid>,
    pub(super) begun: Option<Reply<Tid>>,
    pub(super) stores: Vec<Reply<Vec<Conflict>>>,
    pub(super) vote: Option<Reply<()>>,
    pub(super) finish: Option<Reply<Tid>>,
}

impl Current {
    pub(super) fn new(slot: OwnedMutexGuard<()>) -> Self {
        Self {
            ttid: None,
            _slot: slot,
            aborted: None,
            given_up: None,
            begun: None,
            stores: Vec::new(),
            vote: None,
            finish: None,
        }
    }

    /// Whether a call waits on the transaction (and will report its abort).
    fn has_waiter(&self) -> bool {
        self.begun.is_some()
            || !self.stores.is_empty()
            || self.vote.is_some()
            || self.finish.is_some()
    }

    /// Fails every waiter with `error()`.
    fn fail_waiters(&mut self, error: impl Fn() -> ClientError) {
        if let Some(reply) = self.begun.take() {
            let _ = reply.send(Err(error()));
        }
        for reply in self.stores.drain(..) {
            let _ = reply.send(Err(error()));
        }
        if let Some(reply) = self.vote.take() {
            let _ = reply.send(Err(error()));
        }
        if let Some(reply) = self.finish.take() {
            let _ = reply.send(Err(error()));
        }
    }
}

/// Who waits for what; locked briefly, never across an await.
#[derive(Default)]
pub(super) struct Waiters {
    pub(super) ready: Option<oneshot::Sender<()>>,
    pub(super) current: Option<Current>,
    pub(super) reads: HashMap<u64, oneshot::Sender<ReadOutcome>>,
    pub(super) new_oids: VecDeque<oneshot::Sender<(Oid, u32)>>,
    pub(super) last_transaction: HashMap<u64, oneshot::Sender<Tid>>,
}

/// Shared between the handle, the dispatcher and the delivery thread.
pub(super) struct Shared {
    pub(super) waiters: Mutex<Waiters>,
    pub(super) listener: Mutex<Option<InvalidationListener>>,
    /// The last TID the application was told of (`last_transaction`).
    pub(super) last: watch::Sender<Tid>,
    pub(super) invalidations: AtomicU64,
    /// Batches handed to the delivery thread and not yet delivered.
    at_thread: AtomicUsize,
    pub(super) storage_failures: AtomicU64,
    /// Whether the dispatcher ended (the driver stopped).
    pub(super) stopped: watch::Sender<bool>,
    /// The first failure of a pipelined store of the transaction in progress, reported by
    /// the next call that waits for the stores.
    pub(super) pipelined: Mutex<Option<crate::protocol::ProtocolError>>,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            waiters: Mutex::new(Waiters::default()),
            listener: Mutex::new(None),
            last: watch::Sender::new(Tid::ZERO),
            invalidations: AtomicU64::new(0),
            at_thread: AtomicUsize::new(0),
            storage_failures: AtomicU64::new(0),
            stopped: watch::Sender::new(false),
            pipelined: Mutex::new(None),
        })
    }

    /// The failure of a pipelined store, taken (once).
    pub(super) fn take_pipelined(&self) -> Option<crate::protocol::ProtocolError> {
        self.pipelined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The waiters, whatever a panicking holder left (every update is a whole insert or
    /// take, so the map stays consistent).
    pub(super) fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves `last_transaction` on to `tid` (never back).
    fn advance(&self, tid: Tid) {
        self.last.send_if_modified(|last| {
            let later = tid > *last;
            if later {
                *last = tid;
            }
            later
        });
    }
}

/// What the delivery thread does, in order.
enum Delivery {
    Invalidate(Invalidation),
    Committed { tid: Tid, reply: Option<Reply<Tid>> },
}

/// The most events the dispatcher routes in one turn; their deliveries go to the delivery
/// thread together.
const EVENTS_PER_TURN: usize = 256;

/// Starts the dispatcher task and the delivery thread for a client's `events`.
pub(super) fn start(shared: Arc<Shared>, events: mpsc::UnboundedReceiver<ClientEvent>) {
    let (deliveries, queue) = std::sync::mpsc::channel();
    let delivering = shared.clone();
    // The thread ends when the dispatcher drops its sender; a failed spawn leaves
    // invalidations undelivered, which the dispatcher notices when its sends fail.
    let spawned = std::thread::Builder::new()
        .name("replicast-invalidations".into())
        .spawn(move || deliver(&delivering, &queue));
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the invalidation thread");
    }
    tokio::spawn(dispatch(shared, events, deliveries));
}

/// Routes the client's events as they come. The deliveries of the events that came together
/// are handed on in one piece ([`hand_on`]): under load every commit invalidates at every
/// other client, and one wake of the delivery thread per invalidation was most of what
/// invalidations cost at 32 clients (a quarter of the commits per second, measured by leaving
/// them out).
async fn dispatch(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<ClientEvent>,
    deliveries: std::sync::mpsc::Sender<Vec<Delivery>>,
) {
    let mut came = Vec::with_capacity(EVENTS_PER_TURN);
    while events.recv_many(&mut came, EVENTS_PER_TURN).await > 0 {
        let mut batch = Vec::new();
        for event in came.drain(..) {
            route(&shared, event, &mut batch);
        }
        if !batch.is_empty() {
            hand_on(&shared, batch, &deliveries);
        }
    }
    // The driver stopped: every waiter hears it (a dropped sender).
    let mut waiters = shared.waiters();
    if let Some(current) = waiters.current.as_mut() {
        current.fail_waiters(|| ClientError::Driver(super::DriverError::Stopped));
    }
    *waiters = Waiters::default();
    drop(waiters);
    shared.stopped.send_replace(true);
}

/// Answers the waiters `event` is for, and adds what the delivery thread must do for it to
/// `deliveries`.
fn route(shared: &Shared, event: ClientEvent, deliveries: &mut Vec<Delivery>) {
    let mut waiters = shared.waiters();
    match event {
        ClientEvent::Ready => {
            if let Some(ready) = waiters.ready.take() {
                let _ = ready.send(());
            }
        }
        ClientEvent::Begun { ttid } => {
            if let Some(current) = waiters
                .current
                .as_mut()
                .filter(|current| current.given_up != Some(ttid))
            {
                current.ttid = Some(ttid);
                if let Some(reply) = current.begun.take() {
                    let _ = reply.send(Ok(ttid));
                }
            }
        }
        ClientEvent::BeginRefused { tid, last } => {
            if let Some(mut current) = waiters.current.take() {
                current.fail_waiters(|| ClientError::TidRefused { tid, last });
            }
        }
        ClientEvent::StoresAnswered { ttid, conflicts } => {
            if let Some(current) = current_of(&mut waiters, ttid) {
                for reply in current.stores.drain(..) {
                    let _ = reply.send(Ok(conflicts.clone()));
                }
            }
        }
        ClientEvent::VoteHeld { ttid, conflicts } => {
            if let Some(reply) = current_of(&mut waiters, ttid).and_then(|c| c.vote.take()) {
                let _ = reply.send(Err(ClientError::Conflicts(conflicts)));
            }
        }
        ClientEvent::Voted { ttid } => {
            if let Some(reply) = current_of(&mut waiters, ttid).and_then(|c| c.vote.take()) {
                let _ = reply.send(Ok(()));
            }
        }
        ClientEvent::Committed { ttid, tid } => {
            // The transaction is over: the slot goes with it; `finish` answers once every
            // earlier invalidation is delivered.
            let reply = match waiters.current.take_if(|c| c.ttid == Some(ttid)) {
                Some(mut current) => current.finish.take(),
                None => None,
            };
            deliveries.push(Delivery::Committed { tid, reply });
        }
        ClientEvent::Aborted { ttid, reason } => {
            let reported = match current_of(&mut waiters, ttid) {
                Some(current) if current.has_waiter() => {
                    current.fail_waiters(|| ClientError::Aborted(reason.clone()));
                    true
                }
                Some(current) => {
                    // Nobody waits: the owner's next call of the transaction reports it.
                    current.aborted = Some(reason);
                    false
                }
                None => false,
            };
            if reported {
                // The transaction is over for its owner: the slot is free.
                waiters.current = None;
            }
        }
        ClientEvent::StorageFailed { .. } => {
            shared.storage_failures.fetch_add(1, Ordering::Relaxed);
        }
        ClientEvent::Loaded {
            request,
            result,
            from,
            failures,
            ..
        } => {
            if let Some(reply) = waiters.reads.remove(&request) {
                let _ = reply.send(ReadOutcome::Load(result, from, failures));
            }
        }
        ClientEvent::Answered {
            request,
            answer,
            failures,
            ..
        } => {
            if let Some(reply) = waiters.reads.remove(&request) {
                let _ = reply.send(ReadOutcome::Ask(answer, failures));
            }
        }
        ClientEvent::LastTransaction { request, tid } => {
            if let Some(reply) = waiters.last_transaction.remove(&request) {
                let _ = reply.send(tid);
            }
        }
        ClientEvent::NewOids { first, count } => {
            if let Some(reply) = waiters.new_oids.pop_front() {
                let _ = reply.send((first, count));
            }
        }
        ClientEvent::Resynced { last } => {
            deliveries.push(Delivery::Invalidate(Invalidation::Everything { tid: last }));
        }
        ClientEvent::Invalidated { tid, oids } => {
            shared.invalidations.fetch_add(1, Ordering::Relaxed);
            deliveries.push(Delivery::Invalidate(Invalidation::Objects { tid, oids }));
        }
    }
}

/// The transaction in progress if it is `ttid`.
fn current_of(waiters: &mut Waiters, ttid: Tid) -> Option<&mut Current> {
    waiters
        .current
        .as_mut()
        .filter(|current| current.ttid == Some(ttid))
}

/// Delivers `batch` here if the handle has no listener and the delivery thread holds nothing
/// handed to it earlier, else hands it to the thread. Waking that thread is a futex call and a
/// switch of threads per batch: at 32 clients, where every commit invalidates at 31 of them,
/// the wakes cost 15-20% of the commits per second (docs/BENCH.md).
fn hand_on(
    shared: &Shared,
    batch: Vec<Delivery>,
    deliveries: &std::sync::mpsc::Sender<Vec<Delivery>>,
) {
    {
        // `try_lock`: the dispatcher runs on a tokio worker and must not wait for a listener
        // that runs (it holds the lock meanwhile): a busy lock sends the batch to the thread.
        let listener = match shared.listener.try_lock() {
            Ok(listener) => Some(listener),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(listener) = &listener
            && listener.is_none()
            && shared.at_thread.load(Ordering::Acquire) == 0
        {
            // The lock is held meanwhile, so no listener comes in the middle of the batch,
            // and settling neither blocks nor calls out.
            for delivery in batch {
                settle(shared, delivery);
            }
            return;
        }
        // The lock goes here: the fallback below calls the listener, which takes it.
    }
    shared.at_thread.fetch_add(1, Ordering::AcqRel);
    if let Err(unsent) = deliveries.send(batch) {
        shared.at_thread.fetch_sub(1, Ordering::AcqRel);
        // No delivery thread (it could not start): deliver here, in order.
        for delivery in unsent.0 {
            deliver_now(shared, delivery);
        }
    }
}

/// The delivery thread: listener, then `last_transaction`, then `finish`, in order.
fn deliver(shared: &Shared, queue: &std::sync::mpsc::Receiver<Vec<Delivery>>) {
    while let Ok(batch) = queue.recv() {
        for delivery in batch {
            deliver_now(shared, delivery);
        }
        shared.at_thread.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Calls the listener with an invalidation, if there is one, then [`settle`]s the delivery.
fn deliver_now(shared: &Shared, delivery: Delivery) {
    if let Delivery::Invalidate(invalidation) = &delivery
        && let Some(listener) = shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
    {
        listener(invalidation);
    }
    settle(shared, delivery);
}

/// What a delivery does once the application had it: moves `last_transaction` on, and answers
/// `finish` for a commit of the handle's own.
fn settle(shared: &Shared, delivery: Delivery) {
    match delivery {
        Delivery::Invalidate(invalidation) => {
            let tid = match invalidation {
                Invalidation::Objects { tid, .. } | Invalidation::Everything { tid } => tid,
            };
            shared.advance(tid);
        }
        Delivery::Committed { tid, reply } => {
            shared.advance(tid);
            if let Some(reply) = reply {
                let _ = reply.send(Ok(tid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidation(tid: u64) -> Delivery {
        Delivery::Invalidate(Invalidation::Objects {
            tid: Tid(tid),
            oids: vec![Oid(tid)],
        })
    }

    fn last(shared: &Shared) -> Tid {
        *shared.last.borrow()
    }

    #[test]
    fn without_a_listener_the_dispatcher_delivers_itself_in_order() {
        let shared = Shared::new();
        let (deliveries, queue) = std::sync::mpsc::channel();
        let (reply, answer) = oneshot::channel();
        let batch = vec![
            invalidation(5),
            Delivery::Committed {
                tid: Tid(6),
                reply: Some(reply),
            },
        ];
        hand_on(&shared, batch, &deliveries);
        assert_eq!(last(&shared), Tid(6), "delivered at once");
        assert!(
            matches!(answer.blocking_recv(), Ok(Ok(Tid(6)))),
            "finish answered"
        );
        assert!(queue.try_recv().is_err(), "nothing went to the thread");
    }

    #[test]
    fn a_batch_never_passes_one_the_delivery_thread_still_holds() {
        let shared = Shared::new();
        let (deliveries, queue) = std::sync::mpsc::channel();
        // A listener takes the first batch to the thread (which does not run here).
        let listener: InvalidationListener = Box::new(|_| {});
        *shared.listener.lock().expect("unpoisoned") = Some(listener);
        hand_on(&shared, vec![invalidation(5)], &deliveries);
        // The listener goes before the thread delivered: the next batch must queue behind.
        *shared.listener.lock().expect("unpoisoned") = None;
        hand_on(&shared, vec![invalidation(6)], &deliveries);
        assert_eq!(
            last(&shared),
            Tid::ZERO,
            "nothing delivered ahead of the thread"
        );
        let tids: Vec<Tid> = queue
            .try_iter()
            .flatten()
            .map(|delivery| match delivery {
                Delivery::Invalidate(Invalidation::Objects { tid, .. }) => tid,
                _ => Tid::ZERO,
            })
            .collect();
        assert_eq!(tids, vec![Tid(5), Tid(6)], "both at the thread, in order");
    }

    #[test]
    fn without_a_delivery_thread_the_listener_is_called_here() {
        let shared = Shared::new();
        let (deliveries, queue) = std::sync::mpsc::channel();
        drop(queue); // the thread could not start
        let called = Arc::new(AtomicU64::new(0));
        let counted = called.clone();
        let listener: InvalidationListener = Box::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        *shared.listener.lock().expect("unpoisoned") = Some(listener);
        hand_on(&shared, vec![invalidation(5), invalidation(6)], &deliveries);
        assert_eq!(called.load(Ordering::Relaxed), 2, "the listener had both");
        assert_eq!(last(&shared), Tid(6));
        assert_eq!(shared.at_thread.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_listener_that_runs_sends_the_batch_to_the_thread_without_waiting_for_it() {
        let shared = Shared::new();
        let (deliveries, queue) = std::sync::mpsc::channel();
        // The thread holds the listener's lock while the listener runs (here: the test).
        let running = shared.listener.lock().expect("unpoisoned");
        hand_on(&shared, vec![invalidation(5)], &deliveries);
        drop(running);
        assert_eq!(last(&shared), Tid::ZERO);
        assert_eq!(queue.try_iter().count(), 1, "handed to the thread");
    }
}
