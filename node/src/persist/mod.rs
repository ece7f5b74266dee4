//! The storage's persistence executor: where the sans-IO [storage role](crate::storage) meets
//! its [engine](crate::engine).
//!
//! The role emits writes ([`Persist`](crate::storage::Persist)) and reads
//! ([`Fetch`](crate::storage::Fetch)); this module executes them and feeds the outcomes back:
//!
//! - [`ThreadedStorage`] (what the driver runs): one writer thread executes the writes in the
//!   order emitted, putting everything that queued up while the previous redb transaction
//!   committed into the next one — group commit: the votes of concurrent transactions share
//!   one fsync, and stagings and finishes ride along without one of their own; a commit made
//!   without fsync is made durable within [`PersistConfig::sync_delay`] at most. A few reader
//!   threads serve loads and replication batches on redb read transactions, which never wait
//!   for the writer. Both queues are bounded; so is the one outcomes come back on.
//! - [`InlineStorage`]: the same execution on the caller's thread after each call, for
//!   deterministic simulations and tools.
//!
//! [`execute_writes`] and [`execute_read`] are the one translation of the role's requests into
//! engine calls, shared by both ([`answer_ask`] for a client's questions, [`answer_inspect`] for
//! an operator's).

mod apply;
mod ask;
mod config;
mod executor;
mod inline;
mod inspect;
mod stats;
mod threaded;

pub use apply::{execute_read, execute_writes};
pub use ask::answer_ask;
pub use config::{BatchHook, PersistConfig};
pub use inline::InlineStorage;
pub use inspect::{MAX_LISTED_RECORDS, answer_inspect};
pub use stats::PersistStats;
pub use threaded::{PersistError, ThreadedStorage};
