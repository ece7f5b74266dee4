//! The transaction calls of a [`ClientHandle`](super::ClientHandle) as they run inside the
//! driver, on the client role and the handle's waiters at the same instant.
//!
//! A refusal of the role is read against the handle's transaction there: the role may have
//! ended the transaction on its own (a lost storage, a wound after the votes, a conflict, a
//! refused finish) while its [`Aborted`](crate::client::ClientEvent::Aborted) event is still on
//! its way to the dispatcher, which runs beside the driver. The caller then gets that abort
//! ([`ClientError::Aborted`]), never the refusal it caused ("no transaction is storing").

use super::client_dispatch::{Reply, Shared};
use super::client_handle::ClientError;
use crate::client::{Client, Conflict};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::protocol::{ProtocolError, StoreKind};
use crate::transaction::TransactionInfo;

/// What a refusal of the role means to the handle's transaction: its abort when the
/// transaction ended, whether the dispatcher routed the abort already or not (the transaction
/// is then over for the handle, and its slot free); the refusal otherwise.
pub(super) fn refusal(client: &Client, shared: &Shared, error: ProtocolError) -> ClientError {
    let mut waiters = shared.waiters();
    let reason = waiters.current.as_mut().and_then(|current| {
        current.aborted.take().or_else(|| {
            // Not routed yet: the role knows why it ended the transaction.
            let ttid = current.ttid?;
            if client.current_transaction() == Some(ttid) {
                return None;
            }
            client.abort_reason(ttid).cloned()
        })
    });
    match reason {
        Some(reason) => {
            waiters.current = None;
            ClientError::Aborted(reason)
        }
        None => error.into(),
    }
}

/// A store ([`ClientHandle::store`](super::ClientHandle::store) and its kinds).
pub(super) fn store(
    client: &mut Client,
    shared: &Shared,
    now: std::time::SystemTime,
    oid: Oid,
    serial: Tid,
    data: ObjectData,
    kind: StoreKind,
) -> Result<(), ClientError> {
    client
        .store_kind(now, oid, serial, data, kind)
        .map_err(|error| refusal(client, shared, error))
}

/// The stores' outcome now: the unresolved conflicts once every store is answered, or `None`
/// with `reply` registered for the answers.
pub(super) fn stores(
    client: &Client,
    shared: &Shared,
    reply: Reply<Vec<Conflict>>,
) -> Result<Option<Vec<Conflict>>, ClientError> {
    if let Some(error) = shared.take_pipelined() {
        return Err(refusal(client, shared, error));
    }
    if let Some(conflicts) = client.stores_answered() {
        return Ok(Some(conflicts));
    }
    if client.current_transaction().is_some()
        && let Some(current) = shared.waiters().current.as_mut()
    {
        current.stores.push(reply);
        return Ok(None);
    }
    Err(refusal(
        client,
        shared,
        ProtocolError::InvalidCall {
            call: "wait_stores",
            reason: "no transaction is storing",
        },
    ))
}

/// Sends the votes, with `reply` registered for the outcome.
pub(super) fn vote(
    client: &mut Client,
    shared: &Shared,
    now: std::time::SystemTime,
    info: TransactionInfo,
    reply: Reply<()>,
) -> Result<(), ClientError> {
    if let Some(error) = shared.take_pipelined() {
        return Err(refusal(client, shared, error));
    }
    client
        .vote(now, info)
        .map_err(|error| refusal(client, shared, error))?;
    if let Some(current) = shared.waiters().current.as_mut() {
        current.vote = Some(reply);
    }
    Ok(())
}

/// Asks the master to commit, with `reply` registered for the outcome.
pub(super) fn finish(
    client: &mut Client,
    shared: &Shared,
    reply: Reply<Tid>,
) -> Result<(), ClientError> {
    client
        .finish()
        .map_err(|error| refusal(client, shared, error))?;
    if let Some(current) = shared.waiters().current.as_mut() {
        current.finish = Some(reply);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use tokio::sync::oneshot;

    use super::*;
    use crate::client::{AbortReason, ClientConfig, Output};
    use crate::driver::client_dispatch::Current;
    use crate::partition::PartitionTable;
    use crate::protocol::{Message, Order, StoreResult, VoteResult};

    /// The first ttid of client number 7 whose primary's clock reads [`Tid::ZERO`]: the
    /// first step after zero, with the number.
    const TTID: Tid = Tid((1 << 16) | 7);

    fn order(message: Message) -> Message {
        Message::FromPrimary {
            term: 1,
            message: Order(Box::new(message)),
        }
    }

    /// A client role storing transaction [`TTID`] (replicas 2 of 3 storages), and the
    /// handle's record of it as the dispatcher left it after routing `Begun`.
    fn storing() -> (Client, Arc<Shared>) {
        let now = SystemTime::UNIX_EPOCH;
        let mut client = Client::new("c1", "master", ClientConfig::default());
        client.connect();
        let storages = ["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
        let table = PartitionTable::new(3, 2, &storages).expect("table");
        client
            .handle(
                now,
                "master",
                order(Message::TtidSpace {
                    number: 7,
                    clock: Tid::ZERO,
                }),
            )
            .expect("numbered");
        client
            .handle(now, "master", order(Message::PartitionTable(table)))
            .expect("table");
        client.begin(now).expect("begin");
        assert_eq!(client.current_transaction(), Some(TTID));
        let shared = Shared::new();
        let slot = Arc::new(tokio::sync::Mutex::new(()))
            .try_lock_owned()
            .expect("a new slot is free");
        let mut current = Current::new(slot);
        current.ttid = Some(TTID);
        shared.waiters().current = Some(current);
        (client, shared)
    }

    /// Stores `oid` and returns the replicas it went to.
    fn store_one(client: &mut Client, oid: Oid) -> Vec<String> {
        let data = ObjectData::from(b"x".to_vec());
        client
            .store(SystemTime::UNIX_EPOCH, oid, Tid::ZERO, data)
            .expect("store");
        std::iter::from_fn(|| client.poll_output())
            .find_map(|output| match output {
                Output::Store(store) => Some(store.replicas),
                Output::Message(_) => None,
            })
            .expect("a fan-out")
    }

    /// Every replica of the object is lost: the role aborts on its own. Its `Aborted`
    /// event stays in the role's queue, as when the dispatcher has not routed it yet.
    fn lose_every_replica(client: &mut Client, replicas: &[String]) {
        for node in replicas {
            client.peer_lost(SystemTime::UNIX_EPOCH, node);
        }
        assert_eq!(client.current_transaction(), None);
    }

    fn assert_aborted<T: std::fmt::Debug>(
        outcome: Result<T, ClientError>,
        shared: &Shared,
        expected: &AbortReason,
    ) {
        match outcome {
            Err(ClientError::Aborted(reason)) => assert_eq!(&reason, expected),
            other => panic!("expected the abort {expected:?}, got {other:?}"),
        }
        assert!(
            shared.waiters().current.is_none(),
            "the transaction is over for the handle: its slot is free"
        );
    }

    #[test]
    fn waiting_for_stores_the_role_aborted_on_lost_storages_reports_the_abort() {
        let (mut client, shared) = storing();
        let replicas = store_one(&mut client, Oid(1));
        lose_every_replica(&mut client, &replicas);
        let (reply, _answered) = oneshot::channel();
        let outcome = stores(&client, &shared, reply);
        assert_aborted(outcome, &shared, &AbortReason::NoReplica { oid: Oid(1) });
    }

    #[test]
    fn a_store_or_vote_after_the_role_aborted_reports_the_abort() {
        let now = SystemTime::UNIX_EPOCH;
        let expected = AbortReason::NoReplica { oid: Oid(1) };
        let (mut client, shared) = storing();
        let replicas = store_one(&mut client, Oid(1));
        lose_every_replica(&mut client, &replicas);
        let data = ObjectData::from(b"y".to_vec());
        let outcome = store(
            &mut client,
            &shared,
            now,
            Oid(2),
            Tid::ZERO,
            data,
            StoreKind::Checked,
        );
        assert_aborted(outcome, &shared, &expected);

        let (mut client, shared) = storing();
        let replicas = store_one(&mut client, Oid(1));
        lose_every_replica(&mut client, &replicas);
        let (reply, _voted) = oneshot::channel();
        let outcome = vote(&mut client, &shared, now, TransactionInfo::default(), reply);
        assert_aborted(outcome, &shared, &expected);
    }

    #[test]
    fn a_finish_after_a_storage_gave_up_the_voted_transaction_reports_the_abort() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, shared) = storing();
        let replicas = store_one(&mut client, Oid(1));
        for node in &replicas {
            let answer = Message::AnswerStore {
                ttid: TTID,
                generation: 0,
                answers: vec![(Oid(1), StoreResult::Stored)],
            };
            client.handle(now, node, answer).expect("stored");
        }
        let (reply, _voted) = oneshot::channel();
        vote(&mut client, &shared, now, TransactionInfo::default(), reply).expect("vote");
        for node in &replicas {
            let answer = Message::AnswerVote {
                ttid: TTID,
                result: VoteResult::Yes,
            };
            client.handle(now, node, answer).expect("voted");
        }
        client
            .handle(now, &replicas[0], Message::Aborted { ttid: TTID })
            .expect("the storage gave up");
        let (reply, _finished) = oneshot::channel();
        let outcome = finish(&mut client, &shared, reply);
        let expected = AbortReason::StorageGaveUp {
            node: replicas[0].clone(),
        };
        assert_aborted(outcome, &shared, &expected);
    }
}
