//! Who may send what: the one table of the roles allowed to send each kind of message, and the
//! typed refusal a peer gets back when its certificate does not allow what it sent.
//!
//! A peer's roles are those its certificate grants ([`replicast_certs::roles_of`]); the driver
//! applies [`rule`] to every message and request before the role's handler sees it, and
//! [`FANOUT_WRITERS`] to every session and object a fan-out writer opens at a storage. The
//! table is a `match` without a catch-all arm, so a new kind of message does not compile until
//! it has its row.
//!
//! ```
//! use replicast_certs::{Role, Roles};
//! use replicast_node::protocol::{Message, StorageChange, authorize, rule};
//!
//! let change = Message::AskChangeStorage { request: 1, change: StorageChange::Add("s4".into()) };
//! assert!(rule(&change).senders.contains(Role::Admin));
//! let refused = authorize(Role::Client.into(), &change).unwrap_err();
//! assert_eq!(
//!     refused.to_string(),
//!     "AskChangeStorage needs the role master or admin; the sender's certificate grants client"
//! );
//! assert!(authorize(Role::Client.into(), &Message::Begin { ttid: replicast_node::ids::Tid(7), table_version: 1 }).is_ok());
//! ```

use std::fmt;

use replicast_certs::{Role, Roles};
use serde::{Deserialize, Serialize};

use super::message::Message;

/// The roles that may send one kind of message, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The roles allowed to send it; a sender needs one of them.
    pub senders: Roles,
    /// Why these roles and no others, for operators and reviewers.
    pub why: &'static str,
}

const fn roles(list: &[Role]) -> Roles {
    let mut bits = 0u8;
    let mut i = 0;
    while i < list.len() {
        bits |= 1 << (list[i] as u8);
        i += 1;
    }
    Roles::from_bits(bits)
}

const MASTER: Roles = roles(&[Role::Master]);
const STORAGE: Roles = roles(&[Role::Storage]);
const CLIENT: Roles = roles(&[Role::Client]);
const CLIENT_OR_MASTER: Roles = roles(&[Role::Client, Role::Master]);
const ANY_NODE: Roles = roles(&[Role::Master, Role::Storage, Role::Client]);
const ADMIN: Roles = roles(&[Role::Admin]);
const OPERATOR: Roles = roles(&[Role::Master, Role::Admin]);
const ANYONE: Roles = roles(&[Role::Master, Role::Storage, Role::Client, Role::Admin]);

/// The rule of a fan-out writer: only clients open fan-out sessions at a storage (join,
/// rekey, leave, announce, unicast objects), since everything a session carries is a store.
pub const FANOUT_WRITERS: Rule = Rule {
    senders: CLIENT,
    why: "fan-out sessions carry stores, and only clients store",
};

/// The rule of a fan-out replica, applied by the writer before it adds one: a client hands
/// the session's keys and its stores only to a peer whose certificate grants `storage` (the
/// replicas it adds are the writable cells' storages of the master's table; the certificate
/// proves the peer at that name is one).
pub const FANOUT_REPLICAS: Rule = Rule {
    senders: STORAGE,
    why: "a fan-out session's stores go to storages only",
};

const fn rule_of(senders: Roles, why: &'static str) -> Rule {
    Rule { senders, why }
}

/// The roles allowed to send `message`.
pub fn rule(message: &Message) -> Rule {
    match message {
        Message::ClientHello => rule_of(CLIENT, "a client announces itself to the master"),
        Message::StorageReady => rule_of(STORAGE, "a storage tells the master it serves"),
        Message::PartitionTable(_) => rule_of(MASTER, "the master owns the partition table"),
        Message::TtidSpace { .. } => rule_of(MASTER, "the master numbers its clients"),
        Message::Begin { .. } => rule_of(CLIENT, "clients begin transactions"),
        Message::AskBeginAt { .. } => rule_of(CLIENT, "clients begin transactions"),
        Message::AnswerBegin { .. } => rule_of(MASTER, "the master hands out transaction ids"),
        Message::BeginRefused { .. } => rule_of(MASTER, "the master hands out transaction ids"),
        Message::LastTransaction { .. } | Message::AnswerLastTransaction { .. } => {
            rule_of(MASTER, "the master knows the last commit")
        }
        Message::AskLastTransaction { .. } => rule_of(CLIENT, "clients ask for the last commit"),
        Message::AskNewOids { .. } => rule_of(CLIENT, "clients create objects"),
        Message::AnswerNewOids { .. } => rule_of(MASTER, "the master hands out object ids"),
        Message::Store { .. } | Message::GroupStore { .. } | Message::GroupMissed { .. } => {
            rule_of(CLIENT, "clients store")
        }
        Message::AnswerStore { .. } => rule_of(STORAGE, "storages answer stores"),
        Message::Ask { .. } => rule_of(
            CLIENT,
            "clients ask storages about history, the transaction log, sizes and pack",
        ),
        Message::Answer { .. } => rule_of(STORAGE, "storages answer clients' questions"),
        Message::Restart { .. } => rule_of(STORAGE, "storages wound younger transactions"),
        Message::Vote { .. } => rule_of(CLIENT, "clients ask storages to vote"),
        Message::AnswerVote { .. } => rule_of(STORAGE, "storages vote"),
        Message::AskFinish { .. } => rule_of(CLIENT, "clients finish their transactions"),
        Message::AnswerFinish { .. } => rule_of(MASTER, "the master commits"),
        Message::Invalidate { .. } => rule_of(MASTER, "the master announces commits"),
        Message::AbortTransaction { .. } => rule_of(
            CLIENT_OR_MASTER,
            "a client aborts its transaction; the master aborts what it refused",
        ),
        Message::Aborted { .. } => rule_of(STORAGE, "storages give up idle transactions"),
        Message::OlderWaits { .. } => rule_of(STORAGE, "storages hold the locks"),
        Message::Waits { .. } => rule_of(STORAGE, "storages hold the locks"),
        Message::Finish { .. } => rule_of(MASTER, "the master tells voters the commit TID"),
        Message::Finished { .. } => rule_of(STORAGE, "storages acknowledge commits"),
        Message::AskOutcome { .. } => rule_of(STORAGE, "a voted storage asks what became of it"),
        Message::Outcome { .. } => rule_of(MASTER, "the master knows every outcome"),
        Message::Load { .. } => rule_of(CLIENT, "clients load objects"),
        Message::AnswerLoad { .. } => rule_of(STORAGE, "storages serve loads"),
        Message::StorageAddress { .. } => rule_of(STORAGE, "a storage announces its address"),
        Message::StorageAddresses(_) => rule_of(MASTER, "the master hands out the address book"),
        Message::NodeReport(_) => rule_of(ANY_NODE, "nodes report their links"),
        Message::Replicate { .. } => rule_of(MASTER, "the master orders replication"),
        Message::AskCatchUp => rule_of(STORAGE, "a storage asks to catch up"),
        Message::Replicated { .. } => rule_of(STORAGE, "a storage reports a replicated cell"),
        Message::AskTransactions { .. }
        | Message::AnswerTransactions { .. }
        | Message::AskObjects { .. }
        | Message::AnswerObjects { .. }
        | Message::AskObjectPart { .. }
        | Message::AnswerObjectPart(_)
        | Message::ReplicationUnavailable { .. } => {
            rule_of(STORAGE, "replication runs between storages")
        }
        Message::AskStatus { .. } => rule_of(ANYONE, "every certificate holder may look"),
        Message::AnswerStatus { .. } => rule_of(MASTER, "the master answers status"),
        Message::AskChangeStorage { .. } => rule_of(
            OPERATOR,
            "only operators (and masters among themselves) change the storage set",
        ),
        Message::AnswerChangeStorage { .. } => rule_of(MASTER, "the master changes the table"),
        Message::AskInspect { .. } => rule_of(
            ADMIN,
            "only operators inspect a storage's data (check, backup): it reads whole partitions",
        ),
        Message::AnswerInspect { .. } => rule_of(STORAGE, "storages answer inspections"),
        Message::Refused(_) => rule_of(ANYONE, "any node refuses what it does not allow"),
        Message::Consensus(_) => rule_of(MASTER, "only masters vote and replicate the raft log"),
        Message::FromPrimary { .. } => rule_of(
            MASTER,
            "the primary's orders (the order inside is checked as well)",
        ),
        Message::PrimaryIs { .. } => rule_of(MASTER, "a master names the primary"),
        Message::AskPrimary => rule_of(ANYONE, "anyone may ask who the primary is"),
        Message::ReportBackup { .. } => rule_of(
            ADMIN,
            "standing backups are operators' tools (they read whole partitions); a client must \
             not show the operator a backup that is not there",
        ),
    }
}

/// Checks that a sender whose certificate grants `granted` may send `message`; of a
/// [`Message::FromPrimary`], the order inside too (a master's certificate does not make any
/// message an order: the order must be one a master may send). The wrapper is checked first,
/// so a non-master sending an order is refused for sending `FromPrimary`, whatever is inside.
pub fn authorize(granted: Roles, message: &Message) -> Result<(), Refusal> {
    let rule = rule(message);
    if !granted.intersects(rule.senders) {
        return Err(Refusal {
            kind: message.kind().to_owned(),
            reason: RefusalReason::Role {
                allowed: rule.senders.bits(),
                granted: granted.bits(),
            },
        });
    }
    if let Message::FromPrimary { message: order, .. } = message {
        authorize(granted, &order.0)?;
    }
    Ok(())
}

/// A message, request or fan-out session refused before any handler saw it: what the peer
/// gets back ([`Message::Refused`] for messages and requests, the error text of the fan-out's
/// answer for its sessions) and what `replicast status` counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Refusal {
    /// What was refused: the message's [`kind`](Message::kind), or `fan-out` for a fan-out
    /// session or object.
    pub kind: String,
    /// Why.
    pub reason: RefusalReason,
}

/// Why a [`Refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The sender's certificate grants none of the roles allowed to send this kind.
    Role {
        /// The roles allowed ([`Roles::bits`]).
        allowed: u8,
        /// The roles the sender's certificate grants ([`Roles::bits`]).
        granted: u8,
    },
    /// The sender's certificate names roles this node cannot read (a newer version's, or
    /// malformed), so it grants nothing here.
    UnreadableRoles,
    /// The sender's certificate is on the cluster's revocation list.
    Revoked,
    /// The sender reached one of its per-peer limits.
    Limit {
        /// Which.
        limit: PeerLimit,
        /// The most the configuration allows.
        max: u64,
    },
}

/// The per-peer limits a node enforces (`[limits]` of its configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PeerLimit {
    /// Transactions begun at the master and not yet finished or aborted.
    OpenTransactions,
    /// Stores held by a storage for transactions it has not seen finished or aborted.
    PendingStores,
    /// Bytes of stores a storage holds in memory while they wait for a lock.
    PendingStoreBytes,
}

impl PeerLimit {
    /// The limit's key in `[limits]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenTransactions => "open_transactions",
            Self::PendingStores => "pending_stores",
            Self::PendingStoreBytes => "pending_store_bytes",
        }
    }
}

impl RefusalReason {
    /// A short label, the same for every refusal of one cause: what counters are kept by.
    pub fn label(&self) -> String {
        match self {
            Self::Role { allowed, .. } => format!("role (needs {})", Roles::from_bits(*allowed)),
            Self::UnreadableRoles => "unreadable roles".to_owned(),
            Self::Revoked => "revoked".to_owned(),
            Self::Limit { limit, .. } => format!("limit {}", limit.as_str()),
        }
    }
}

impl Refusal {
    /// The roles that may send what was refused, when the role was the reason.
    pub fn roles_needed(&self) -> Option<Roles> {
        match self.reason {
            RefusalReason::Role { allowed, .. } => Some(Roles::from_bits(allowed)),
            _ => None,
        }
    }
}

/// `a`, `a or b`, `a, b or c`.
fn alternatives(roles: Roles) -> String {
    let names: Vec<&str> = roles.iter().map(Role::as_str).collect();
    match names.split_last() {
        None => "none".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            RefusalReason::Role { allowed, granted } => write!(
                f,
                "{} needs the role {}; the sender's certificate grants {}",
                self.kind,
                alternatives(Roles::from_bits(allowed)),
                Roles::from_bits(granted)
            ),
            RefusalReason::UnreadableRoles => write!(
                f,
                "{} refused: the sender's certificate names roles this node cannot read",
                self.kind
            ),
            RefusalReason::Revoked => write!(
                f,
                "{} refused: the sender's certificate is revoked",
                self.kind
            ),
            RefusalReason::Limit { limit, max } => write!(
                f,
                "{} refused: the sender reached its limit of {max} {}",
                self.kind,
                limit.as_str().replace('_', " ")
            ),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Oid, Tid};
    use crate::protocol::StorageChange;

    fn allowed(role: Role, message: &Message) -> bool {
        authorize(role.into(), message).is_ok()
    }

    #[test]
    fn clients_run_transactions_and_nothing_of_a_storage_or_master() {
        let ttid = Tid(7);
        for message in [
            Message::ClientHello,
            Message::Begin {
                ttid,
                table_version: 1,
            },
            Message::AskNewOids { count: 1 },
            Message::Vote {
                ttid,
                generation: 0,
                oids: Vec::new(),
                info: Default::default(),
            },
            Message::AskFinish {
                ttid,
                oids: Vec::new(),
                voters: Vec::new(),
                failed: Vec::new(),
            },
            Message::AbortTransaction { ttid },
            Message::Load {
                request: 1,
                oid: Oid(1),
            },
            Message::AskStatus { request: 1 },
        ] {
            assert!(allowed(Role::Client, &message), "{}", message.kind());
            assert!(!allowed(Role::Admin, &message) || message.kind() == "AskStatus");
        }
        for message in [
            Message::StorageReady,
            Message::AnswerBegin { ttid },
            Message::TtidSpace {
                number: 1,
                clock: ttid,
            },
            Message::Finish { ttid, tid: ttid },
            Message::Replicate {
                up_to: ttid,
                partitions: Vec::new(),
            },
            Message::AskCatchUp,
            Message::ReplicationUnavailable { partition: 0 },
            Message::AskChangeStorage {
                request: 1,
                change: StorageChange::Remove("s1".into()),
            },
        ] {
            assert!(!allowed(Role::Client, &message), "{}", message.kind());
        }
    }

    #[test]
    fn only_operators_and_masters_change_the_cluster() {
        let change = Message::AskChangeStorage {
            request: 1,
            change: StorageChange::Add("s4".into()),
        };
        assert!(allowed(Role::Admin, &change));
        assert!(allowed(Role::Master, &change));
        assert!(!allowed(Role::Storage, &change));
        assert!(!allowed(Role::Client, &change));
        // An admin asks status, changes the storage set and inspects storages, nothing else.
        assert!(allowed(Role::Admin, &Message::AskStatus { request: 1 }));
        assert!(!allowed(
            Role::Admin,
            &Message::Begin {
                ttid: Tid(7),
                table_version: 1
            }
        ));
        assert!(!allowed(Role::Admin, &Message::StorageReady));
    }

    #[test]
    fn only_admins_inspect_a_storages_data() {
        use crate::protocol::{InspectAsk, OidRange};
        let inspect = Message::AskInspect {
            request: 1,
            ask: InspectAsk::Digest {
                partition: 0,
                range: OidRange::ALL,
                up_to: Tid(9),
            },
        };
        assert!(allowed(Role::Admin, &inspect));
        for role in [Role::Client, Role::Storage, Role::Master] {
            let refusal = authorize(role.into(), &inspect).expect_err("admins only");
            assert_eq!(refusal.roles_needed(), Some(Role::Admin.into()), "{role}");
        }
        assert_eq!(
            authorize(Role::Client.into(), &inspect)
                .expect_err("refused")
                .to_string(),
            "AskInspect needs the role admin; the sender's certificate grants client"
        );
    }

    #[test]
    fn only_admins_report_a_standing_backup() {
        use crate::protocol::{BackupReport, BackupState};
        let report = Message::ReportBackup {
            request: 1,
            report: BackupReport {
                directory: "/backups/nightly".into(),
                backup_tid: 9,
                state: BackupState::Following,
                interval_millis: 1000,
                rate: None,
                rounds: 1,
                last_round_bytes: 0,
                error: None,
            },
        };
        assert!(allowed(Role::Admin, &report));
        for role in [Role::Client, Role::Storage, Role::Master] {
            assert!(!allowed(role, &report), "{role}");
        }
        assert_eq!(
            authorize(Role::Client.into(), &report)
                .expect_err("refused")
                .to_string(),
            "ReportBackup needs the role admin; the sender's certificate grants client"
        );
    }

    #[test]
    fn only_masters_speak_raft_and_give_orders() {
        use crate::protocol::Order;
        let order = |message: Message| Message::FromPrimary {
            term: 3,
            message: Order(Box::new(message)),
        };
        let primary_is = Message::PrimaryIs {
            primary: None,
            address: None,
            term: 3,
        };
        for role in [Role::Storage, Role::Client, Role::Admin] {
            assert!(!allowed(role, &order(Message::AskCatchUp)), "{role}");
            assert!(!allowed(role, &primary_is), "{role}");
            assert!(allowed(role, &Message::AskPrimary), "{role}");
        }
        assert!(allowed(Role::Master, &primary_is));
        let table = order(Message::Finish {
            ttid: Tid(1),
            tid: Tid(2),
        });
        assert!(allowed(Role::Master, &table));
        // An order a master may not send (a storage's message) is refused, by its own kind.
        let forged = authorize(Role::Master.into(), &order(Message::AskCatchUp))
            .expect_err("a storage's message is no order");
        assert_eq!(forged.kind, "AskCatchUp");
        assert_eq!(forged.roles_needed(), Some(Role::Storage.into()));
        // A client wrapping a master's order is refused for the wrapper, not for the order.
        let wrapped = authorize(Role::Client.into(), &table).expect_err("clients give no orders");
        assert_eq!(wrapped.kind, "FromPrimary");
        assert_eq!(wrapped.roles_needed(), Some(Role::Master.into()));
    }

    #[test]
    fn refusals_name_what_was_needed() {
        let refusal = authorize(Roles::NONE, &Message::StorageReady).expect_err("refused");
        assert_eq!(refusal.roles_needed(), Some(Role::Storage.into()));
        assert_eq!(
            refusal.to_string(),
            "StorageReady needs the role storage; the sender's certificate grants none"
        );
        assert_eq!(refusal.reason.label(), "role (needs storage)");
        let all = alternatives(ANYONE);
        assert_eq!(all, "master, storage, client or admin");
    }
}
