//! What a storage role needs to know of its engine when it starts: the transactions left
//! pending and what replication holds of each partition. The role keeps both up to date from
//! then on, so it never reads the engine itself.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use super::catch_up::ReplicationProgress;
use super::error::database;
use super::records::{PendingTransaction, decode};
use super::tables::{PROGRESS, PROGRESS_NAME};
use super::{Engine, EngineError};

/// The engine's state a storage role starts from ([`Engine::startup_state`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartupState {
    /// Transactions that stored objects and neither finished nor aborted; right after
    /// [`Engine::open`] they all voted.
    pub pending: Vec<PendingTransaction>,
    /// What replication recorded of each partition (partitions it never ran for are absent).
    pub replication: BTreeMap<u32, ReplicationProgress>,
}

impl Engine {
    /// The pending transactions and the replication progress of every partition.
    pub fn startup_state(&self) -> Result<StartupState, EngineError> {
        Ok(StartupState {
            pending: self.pending_transactions()?,
            replication: self.all_replication_progress()?,
        })
    }

    /// What replication recorded, per partition.
    fn all_replication_progress(&self) -> Result<BTreeMap<u32, ReplicationProgress>, EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let table = match txn.open_table(PROGRESS) {
            Ok(table) => table,
            // Created by the first import.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(error) => return Err(database("open replication progress")(error)),
        };
        let mut progress = BTreeMap::new();
        for entry in table
            .iter()
            .map_err(database("scan replication progress"))?
        {
            let (partition, record) = entry.map_err(database("read replication progress"))?;
            progress.insert(partition.value(), decode(PROGRESS_NAME, record.value())?);
        }
        Ok(progress)
    }
}
