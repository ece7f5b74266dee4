//! What the master's unit tests share: a master whose storages run and whose client is
//! connected, a transaction begun on it, and what it sent or reported.

use std::time::SystemTime;

use super::{Master, MasterConfig, MasterEvent};
use crate::client::TtidClock;
use crate::ids::{Oid, Tid};
use crate::partition::PartitionTable;
use crate::protocol::{Message, Transmit};

/// Everything the master has to send, taken; orders are unwrapped (every message to a
/// storage or a client is an order of the primary's term: that is checked here once).
pub(super) fn drain(master: &mut Master) -> Vec<Transmit> {
    let term = master.term();
    std::iter::from_fn(|| master.poll_transmit())
        .map(|transmit| match transmit.message {
            Message::FromPrimary {
                term: order_term,
                message,
            } => {
                assert_eq!(order_term, term, "orders carry the primary's term");
                Transmit {
                    to: transmit.to,
                    message: *message.0,
                }
            }
            other => Transmit {
                to: transmit.to,
                message: other,
            },
        })
        .collect()
}

/// Every event the master has to report, taken.
pub(super) fn events(master: &mut Master) -> Vec<MasterEvent> {
    std::iter::from_fn(|| master.poll_event()).collect()
}

/// A master of `partitions` partitions (R = 2) on `storages`, each of them running, and client
/// `c1` connected; what that sent is taken.
pub(super) fn running_master(now: SystemTime, partitions: u32, storages: &[&str]) -> Master {
    let names: Vec<String> = storages.iter().map(|name| (*name).to_owned()).collect();
    let table = PartitionTable::new(partitions, 2, &names).expect("a valid table");
    let mut master = Master::new(table, MasterConfig::default()).expect("a lone master");
    for storage in storages {
        master
            .handle(now, storage, Message::StorageReady)
            .expect("ready");
    }
    master
        .handle(now, "c1", Message::ClientHello)
        .expect("hello");
    drain(&mut master);
    master
}

/// Begins a transaction for `c1` with a ttid the client makes as a [`TtidClock`] does: its
/// number, after every TID the master holds or handed out (as the master's own clock made
/// them before clients made their own, so the tests' ages keep their order); its TTID.
pub(super) fn begin(master: &mut Master, now: SystemTime) -> Tid {
    let number = *master.client_numbers.get("c1").expect("c1 is numbered");
    let mut ttids = TtidClock::default();
    ttids.set_space(now, number, Tid::from_system_time(now));
    ttids.observe(master.clock.last());
    for ttid in master.open.keys().chain(master.outcomes.keys()) {
        ttids.observe(*ttid);
    }
    let ttid = ttids.make(now).expect("a ttid");
    master
        .handle(
            now,
            "c1",
            Message::Begin {
                ttid,
                table_version: master.table().version(),
            },
        )
        .expect("begin");
    assert!(
        drain(master).is_empty(),
        "a begin is not answered, nor does it send anything"
    );
    ttid
}

/// Begins a transaction for `c1` that commits at exactly `tid` (a restore); its TTID.
pub(super) fn begin_at(master: &mut Master, now: SystemTime, tid: Tid) -> Tid {
    master
        .handle(now, "c1", Message::AskBeginAt { tid })
        .expect("begin");
    drain(master)
        .into_iter()
        .find_map(|transmit| match transmit.message {
            Message::AnswerBegin { ttid } => Some(ttid),
            _ => None,
        })
        .expect("begun")
}

/// Asks the finish of `c1`'s `ttid`, which wrote `oids`, with `voters`, and has each voter
/// acknowledge it: the commit TID the voters were told, and what the master sent when asked.
pub(super) fn finish(
    master: &mut Master,
    now: SystemTime,
    ttid: Tid,
    oids: Vec<Oid>,
    voters: &[&str],
) -> (Tid, Vec<Transmit>) {
    master
        .handle(
            now,
            "c1",
            Message::AskFinish {
                ttid,
                oids,
                voters: voters.iter().map(|voter| (*voter).to_owned()).collect(),
                failed: Vec::new(),
            },
        )
        .expect("finish asked");
    let sent = drain(master);
    let tid = sent
        .iter()
        .find_map(|transmit| match transmit.message {
            Message::Finish { tid, .. } => Some(tid),
            _ => None,
        })
        .expect("finished on the voters");
    for voter in voters {
        master
            .handle(now, voter, Message::Finished { ttid, tid })
            .expect("finished");
    }
    (tid, sent)
}

/// The bound and partitions of the `Replicate` in `sent` to `node`, if any.
pub(super) fn replicate_to(sent: &[Transmit], node: &str) -> Option<(Tid, Vec<(u32, Tid)>)> {
    sent.iter().find_map(|transmit| match &transmit.message {
        Message::Replicate { up_to, partitions } if transmit.to == node => {
            Some((*up_to, partitions.clone()))
        }
        _ => None,
    })
}
