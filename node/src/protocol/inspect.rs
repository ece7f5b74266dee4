//! What an operator's tools ask one storage about the data it holds
//! ([`Message::AskInspect`]), and its answers ([`Message::AnswerInspect`]): digests of ranges of
//! a partition's revisions and listings of them, for `replicast check`; pages of its
//! transactions with their data, for `replicast backup`.
//!
//! Only certificates granting `admin` may ask (the [authorization table](super::rule)); the
//! questions come on request streams, which the storage answers apart from its peers'
//! messages, once its engine has read what they need. A storage answers only for a partition
//! whose cell is readable (up to date) in its own table; any other question is answered
//! [`InspectAnswer::Unavailable`].
//!
//! A digest covers the revisions `(oid, tid)` of a partition with `oid` in an [`OidRange`] and
//! `tid` up to a bound, each as its oid, its TID and the digest of its content *as read now*
//! (not the digest stored beside it): two replicas that hold the same revisions with the same
//! content give the same digest, and a record whose bytes changed on disk gives another.
//!
//! [`Message::AskInspect`]: super::Message::AskInspect
//! [`Message::AnswerInspect`]: super::Message::AnswerInspect

use serde::{Deserialize, Serialize};

use crate::engine::ObjectCursor;
use crate::ids::{Oid, Tid};
use crate::object::Digest;
use crate::transaction::TransactionRecords;

/// The objects `first ..= last`, in OID order (both included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OidRange {
    /// The first object of the range.
    pub first: Oid,
    /// The last object of the range.
    pub last: Oid,
}

impl OidRange {
    /// Every object.
    pub const ALL: OidRange = OidRange {
        first: Oid(0),
        last: Oid(u64::MAX),
    };

    /// Whether `oid` is in the range.
    pub fn contains(&self, oid: Oid) -> bool {
        self.first <= oid && oid <= self.last
    }

    /// The two halves of the range, or `None` when it holds one object.
    ///
    /// ```
    /// use replicast_node::ids::Oid;
    /// use replicast_node::protocol::OidRange;
    ///
    /// let (low, high) = OidRange { first: Oid(0), last: Oid(9) }.split().expect("ten objects");
    /// assert_eq!((low.first, low.last, high.first, high.last), (Oid(0), Oid(4), Oid(5), Oid(9)));
    /// assert!(OidRange { first: Oid(3), last: Oid(3) }.split().is_none());
    /// ```
    pub fn split(&self) -> Option<(OidRange, OidRange)> {
        if self.first >= self.last {
            return None;
        }
        let middle = self.first.0 + (self.last.0 - self.first.0) / 2;
        Some((
            OidRange {
                first: self.first,
                last: Oid(middle),
            },
            OidRange {
                first: Oid(middle + 1),
                last: self.last,
            },
        ))
    }
}

/// A question for one storage from an operator's tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InspectAsk {
    /// The digest of `partition`'s revisions with oids in `range` and TIDs up to `up_to`.
    Digest {
        /// The partition.
        partition: u32,
        /// The objects.
        range: OidRange,
        /// The last TID counted.
        up_to: Tid,
    },
    /// The revisions of `partition` with oids in `range` and TIDs up to `up_to`, in
    /// `(oid, tid)` order after `after`, at most `max` of them (at least one).
    Records {
        /// The partition.
        partition: u32,
        /// The objects.
        range: OidRange,
        /// The last TID listed.
        up_to: Tid,
        /// The last revision the asker has; `None` to start.
        after: Option<(Oid, Tid)>,
        /// The most revisions wanted.
        max: u32,
    },
    /// The transactions touching `partition` with their revisions of its objects (content
    /// included), in (TID, OID) order after `after`, with TIDs up to `up_to`, about
    /// `max_bytes` of them (at least one revision): a page of `replicast backup`.
    Transactions {
        /// The partition.
        partition: u32,
        /// The last revision the asker has.
        after: ObjectCursor,
        /// The last TID wanted.
        up_to: Tid,
        /// About how many bytes of data the page may carry.
        max_bytes: u32,
    },
}

impl InspectAsk {
    /// The partition asked about.
    pub fn partition(&self) -> u32 {
        match self {
            InspectAsk::Digest { partition, .. }
            | InspectAsk::Records { partition, .. }
            | InspectAsk::Transactions { partition, .. } => *partition,
        }
    }

    /// The variant's name, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            InspectAsk::Digest { .. } => "Digest",
            InspectAsk::Records { .. } => "Records",
            InspectAsk::Transactions { .. } => "Transactions",
        }
    }
}

/// The digest of a range of revisions ([`InspectAsk::Digest`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// How many revisions the range holds.
    pub records: u64,
    /// The digest over each one's `(oid, tid, digest of its content)`, in `(oid, tid)` order.
    pub digest: Digest,
}

/// One revision as [`InspectAsk::Records`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordDigest {
    /// The object.
    pub oid: Oid,
    /// The revision.
    pub tid: Tid,
    /// The digest of its content as read now.
    pub digest: Digest,
    /// Whether that digest is the one stored with the revision when it was written: `false`
    /// means the content changed on disk since.
    pub intact: bool,
}

/// A storage's answer to an [`InspectAsk`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InspectAnswer {
    /// To [`InspectAsk::Digest`].
    Digest(RangeDigest),
    /// To [`InspectAsk::Records`].
    Records {
        /// Revisions in `(oid, tid)` order.
        records: Vec<RecordDigest>,
        /// The revision to ask again after; `None` when the range is done.
        resume: Option<(Oid, Tid)>,
    },
    /// To [`InspectAsk::Transactions`].
    Transactions {
        /// Transactions in TID order, each with its revisions after the cursor, in OID order.
        transactions: Vec<TransactionRecords>,
        /// The cursor to ask again after; `None` when nothing is left up to the bound.
        resume: Option<ObjectCursor>,
    },
    /// This storage cannot answer: it does not hold the partition readable, it is too busy,
    /// or its engine failed (the storage logs why).
    Unavailable,
}
