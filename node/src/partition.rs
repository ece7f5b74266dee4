//! The partition table: which storage nodes hold which objects.
//!
//! Objects are spread over `P` partitions (`partition = oid mod P`); each partition is replicated
//! on `R` storage nodes, its *cells*. Every node of the cluster holds the whole table, and the
//! master bumps its [`version`](PartitionTable::version) on every change so that nodes can tell a
//! stale table from a current one.
//!
//! A cell moves through three states:
//! - [`CellState::UpToDate`]: holds every committed transaction of its partition; readable and
//!   written to.
//! - [`CellState::OutOfDate`]: missed writes (its node failed or left); neither read nor written
//!   until its node comes back and starts catching up.
//! - [`CellState::Feeding`]: catching up by replication while receiving new writes; written to but
//!   not readable until [`PartitionTable::mark_up_to_date`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::Oid;

/// The name of a storage node, as in its certificate.
pub type NodeName = String;

/// What a cell may be used for; see the [module documentation](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CellState {
    /// Holds every committed transaction of its partition: readable and writable.
    UpToDate,
    /// Has missed writes: neither readable nor written to.
    OutOfDate,
    /// Catching up by replication: written to, not yet readable.
    Feeding,
}

/// One replica of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The storage node holding the replica.
    pub node: NodeName,
    /// Whether the replica may be read or written.
    pub state: CellState,
    /// For a feeding cell that moves the partition off another node: that node, whose cell is
    /// dropped when this one is [up to date](PartitionTable::mark_up_to_date).
    pub replaces: Option<NodeName>,
}

impl Cell {
    /// Whether loads may be served by this cell.
    pub fn is_readable(&self) -> bool {
        self.state == CellState::UpToDate
    }

    /// Whether new transactions are stored on this cell.
    pub fn is_writable(&self) -> bool {
        self.state != CellState::OutOfDate
    }
}

/// A change the table refuses, with what made it impossible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// A table needs at least one partition.
    #[error("a partition table needs at least one partition")]
    NoPartitions,
    /// A table needs at least one replica per partition.
    #[error("a partition table needs at least one replica per partition")]
    NoReplicas,
    /// Fewer storage nodes than replicas per partition.
    #[error(
        "{replicas} replicas per partition need as many storage nodes, only {storages} available"
    )]
    NotEnoughStorages {
        /// Replicas per partition asked for.
        replicas: usize,
        /// Storage nodes available.
        storages: usize,
    },
    /// The same storage node was named twice.
    #[error("storage node {0:?} is already in the partition table")]
    DuplicateStorage(NodeName),
    /// The storage node named is not in the table.
    #[error("storage node {0:?} is not in the partition table")]
    UnknownStorage(NodeName),
    /// The partition number is not below the number of partitions.
    #[error("partition {partition} does not exist, the table has {partitions}")]
    UnknownPartition {
        /// The partition asked for.
        partition: u32,
        /// Number of partitions in the table.
        partitions: u32,
    },
    /// The node has no cell in the partition, or its cell is not in the state the change needs.
    #[error("node {node:?} has no {expected:?} cell in partition {partition}")]
    NoSuchCell {
        /// The partition asked for.
        partition: u32,
        /// The node asked for.
        node: NodeName,
        /// The state the cell had to be in.
        expected: CellState,
    },
}

/// The partition table; see the [module documentation](self).
///
/// ```
/// use replicast_node::ids::Oid;
/// use replicast_node::partition::PartitionTable;
///
/// let nodes = ["s1", "s2", "s3"].map(String::from);
/// let mut table = PartitionTable::new(12, 2, &nodes)?;
/// assert_eq!(table.partition_of(Oid(14)), 2);
/// assert_eq!(table.readable_cells(Oid(14)).count(), 2);
///
/// // s1 fails during a write: its cells stop serving, the others still cover every partition.
/// table.mark_out_of_date("s1")?;
/// assert!(table.is_operational());
///
/// // s1 is gone for good: every partition gets its second replica back, feeding from the other.
/// let table = table.remove_storage("s1")?;
/// assert!(table.partitions().all(|cells| cells.len() == 2));
/// # Ok::<(), replicast_node::partition::PartitionError>(())
/// ```
///
/// A table decoded from the network is checked as it is decoded: partitions and replicas
/// present, every cell on a known storage, no storage twice in a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedTable")]
pub struct PartitionTable {
    version: u64,
    replicas: usize,
    storages: Vec<NodeName>,
    partitions: Vec<Vec<Cell>>,
}

/// A partition table as decoded, before [`PartitionTable`]'s invariants are checked.
#[derive(Deserialize)]
struct UncheckedTable {
    version: u64,
    replicas: usize,
    storages: Vec<NodeName>,
    partitions: Vec<Vec<Cell>>,
}

impl TryFrom<UncheckedTable> for PartitionTable {
    type Error = PartitionError;

    fn try_from(table: UncheckedTable) -> Result<Self, PartitionError> {
        if table.partitions.is_empty() || u32::try_from(table.partitions.len()).is_err() {
            return Err(PartitionError::NoPartitions);
        }
        if table.replicas == 0 {
            return Err(PartitionError::NoReplicas);
        }
        for (index, name) in table.storages.iter().enumerate() {
            if table.storages[..index].contains(name) {
                return Err(PartitionError::DuplicateStorage(name.clone()));
            }
        }
        for cells in &table.partitions {
            for (index, cell) in cells.iter().enumerate() {
                if !table.storages.contains(&cell.node) {
                    return Err(PartitionError::UnknownStorage(cell.node.clone()));
                }
                if cells[..index].iter().any(|other| other.node == cell.node) {
                    return Err(PartitionError::DuplicateStorage(cell.node.clone()));
                }
            }
        }
        let UncheckedTable {
            version,
            replicas,
            storages,
            partitions,
        } = table;
        Ok(Self {
            version,
            replicas,
            storages,
            partitions,
        })
    }
}

impl PartitionTable {
    /// Builds the initial table of `partitions` partitions with `replicas` up-to-date cells
    /// each, spread over `storages` so that every node holds as many cells as any other, plus or
    /// minus one.
    pub fn new(
        partitions: u32,
        replicas: usize,
        storages: &[NodeName],
    ) -> Result<Self, PartitionError> {
        if partitions == 0 {
            return Err(PartitionError::NoPartitions);
        }
        if replicas == 0 {
            return Err(PartitionError::NoReplicas);
        }
        if storages.len() < replicas {
            return Err(PartitionError::NotEnoughStorages {
                replicas,
                storages: storages.len(),
            });
        }
        for (index, name) in storages.iter().enumerate() {
            if storages[..index].contains(name) {
                return Err(PartitionError::DuplicateStorage(name.clone()));
            }
        }
        // Dealing cells round-robin gives every node the same count (plus or minus one), and
        // the `replicas` consecutive nodes of one partition are distinct since replicas <= nodes.
        let partitions = (0..partitions as usize)
            .map(|partition| {
                (0..replicas)
                    .map(|replica| Cell {
                        node: storages[(partition * replicas + replica) % storages.len()].clone(),
                        state: CellState::UpToDate,
                        replaces: None,
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            version: 1,
            replicas,
            storages: storages.to_vec(),
            partitions,
        })
    }

    /// Bumped on every change; a node holding an older version must fetch the table again.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of partitions, `P`.
    pub fn num_partitions(&self) -> u32 {
        // `new` takes the count as a u32 and nothing adds partitions afterwards.
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }

    /// Replicas per partition the table aims for, `R`.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The storage nodes of the cluster, in the order they joined.
    pub fn storages(&self) -> &[NodeName] {
        &self.storages
    }

    /// The partition holding `oid`.
    pub fn partition_of(&self, oid: Oid) -> u32 {
        partition_of(oid, self.num_partitions())
    }

    /// The cells of every partition, in partition order.
    pub fn partitions(&self) -> impl Iterator<Item = &[Cell]> {
        self.partitions.iter().map(Vec::as_slice)
    }

    /// The cells of one partition.
    pub fn cells(&self, partition: u32) -> Result<&[Cell], PartitionError> {
        self.partitions
            .get(partition as usize)
            .map(Vec::as_slice)
            .ok_or(PartitionError::UnknownPartition {
                partition,
                partitions: self.num_partitions(),
            })
    }

    /// The cells that may serve a load of `oid`.
    pub fn readable_cells(&self, oid: Oid) -> impl Iterator<Item = &Cell> {
        self.partition_cells(oid)
            .iter()
            .filter(|cell| cell.is_readable())
    }

    /// The cells a store of `oid` must reach.
    pub fn writable_cells(&self, oid: Oid) -> impl Iterator<Item = &Cell> {
        self.partition_cells(oid)
            .iter()
            .filter(|cell| cell.is_writable())
    }

    /// The partitions `node` holds a cell of, in any state.
    pub fn partitions_of(&self, node: &str) -> impl Iterator<Item = u32> {
        self.partitions
            .iter()
            .zip(0u32..)
            .filter_map(move |(cells, partition)| {
                cells
                    .iter()
                    .any(|cell| cell.node == node)
                    .then_some(partition)
            })
    }

    /// The partitions `node` holds a cell of, as a set to filter objects with (replication).
    pub fn partition_set_of(&self, node: &str) -> PartitionSet {
        PartitionSet::new(self.num_partitions(), self.partitions_of(node))
    }

    /// Whether every partition has a readable cell: the cluster can serve every object.
    pub fn is_operational(&self) -> bool {
        self.partitions
            .iter()
            .all(|cells| cells.iter().any(Cell::is_readable))
    }

    /// Marks every cell of `node` out of date (its node failed during a write); returns how many
    /// cells changed. The version is bumped when any did.
    pub fn mark_out_of_date(&mut self, node: &str) -> Result<usize, PartitionError> {
        self.require_storage(node)?;
        let changed = self.set_states(
            node,
            |state| state != CellState::OutOfDate,
            CellState::OutOfDate,
        );
        Ok(changed)
    }

    /// Marks out of date the cells of `node` in `partitions` (a commit it missed wrote there),
    /// except a cell that is the last readable one of its partition; returns how many cells
    /// changed. The version is bumped when any did.
    ///
    /// For when [`mark_out_of_date`](Self::mark_out_of_date) would leave the table not
    /// [operational](Self::is_operational) because another cell of `node` is a last copy:
    /// the cells that missed the write must not stay readable all the same, or a reader at
    /// the commit's TID sees the object's previous revision there.
    ///
    /// ```
    /// use replicast_node::partition::PartitionTable;
    ///
    /// let mut table = PartitionTable::new(3, 2, &["s1".into(), "s2".into(), "s3".into()])?;
    /// table.mark_out_of_date("s1")?;
    /// // s2 holds the last readable copy of the partition it shares with s1; a commit it
    /// // missed wrote every partition: its other cells go, that one stays.
    /// let changed = table.mark_cells_out_of_date("s2", [0, 1, 2])?;
    /// assert!(changed > 0);
    /// assert!(table.is_operational());
    /// # Ok::<(), replicast_node::partition::PartitionError>(())
    /// ```
    pub fn mark_cells_out_of_date(
        &mut self,
        node: &str,
        partitions: impl IntoIterator<Item = u32>,
    ) -> Result<usize, PartitionError> {
        self.require_storage(node)?;
        let mut changed = 0;
        for partition in partitions {
            let Some(cells) = self.partitions.get_mut(partition as usize) else {
                continue;
            };
            let others_readable = cells
                .iter()
                .any(|cell| cell.node != node && cell.is_readable());
            for cell in cells.iter_mut() {
                let last_copy = cell.is_readable() && !others_readable;
                if cell.node == node && cell.state != CellState::OutOfDate && !last_copy {
                    cell.state = CellState::OutOfDate;
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            self.version += 1;
        }
        Ok(changed)
    }

    /// Marks the up-to-date cell of `node` in `partition` out of date (an operator found its
    /// copy bad, so that replication feeds it again); the version is bumped.
    pub fn mark_cell_out_of_date(
        &mut self,
        partition: u32,
        node: &str,
    ) -> Result<(), PartitionError> {
        let partitions = self.num_partitions();
        let cell = self
            .partitions
            .get_mut(partition as usize)
            .ok_or(PartitionError::UnknownPartition {
                partition,
                partitions,
            })?
            .iter_mut()
            .find(|cell| cell.node == node && cell.state == CellState::UpToDate)
            .ok_or_else(|| PartitionError::NoSuchCell {
                partition,
                node: node.to_owned(),
                expected: CellState::UpToDate,
            })?;
        cell.state = CellState::OutOfDate;
        self.version += 1;
        Ok(())
    }

    /// Sets every out-of-date cell of `node` feeding (its node is back and starts catching up);
    /// returns how many cells changed.
    pub fn start_feeding(&mut self, node: &str) -> Result<usize, PartitionError> {
        self.require_storage(node)?;
        let changed = self.set_states(
            node,
            |state| state == CellState::OutOfDate,
            CellState::Feeding,
        );
        Ok(changed)
    }

    /// Declares the feeding cell of `node` in `partition` caught up: it becomes readable, and
    /// the cell it [replaces](Cell::replaces), if any, is dropped.
    pub fn mark_up_to_date(&mut self, partition: u32, node: &str) -> Result<(), PartitionError> {
        let partitions = self.num_partitions();
        let cells = self.partitions.get_mut(partition as usize).ok_or(
            PartitionError::UnknownPartition {
                partition,
                partitions,
            },
        )?;
        let cell = cells
            .iter_mut()
            .find(|cell| cell.node == node && cell.state == CellState::Feeding)
            .ok_or_else(|| PartitionError::NoSuchCell {
                partition,
                node: node.to_owned(),
                expected: CellState::Feeding,
            })?;
        cell.state = CellState::UpToDate;
        if let Some(replaced) = cell.replaces.take() {
            cells.retain(|cell| cell.node != replaced);
        }
        self.version += 1;
        Ok(())
    }

    /// The table after `node` joins: it takes cells from the most loaded nodes until every
    /// node holds as many cells as any other, plus or minus one. Each taken cell is added as
    /// [`CellState::Feeding`] next to the cell it [replaces](Cell::replaces), which keeps
    /// serving until the new one is [up to date](Self::mark_up_to_date).
    pub fn add_storage(&self, node: &str) -> Result<Self, PartitionError> {
        if self.storages.iter().any(|name| name == node) {
            return Err(PartitionError::DuplicateStorage(node.to_owned()));
        }
        let mut table = self.clone();
        table.storages.push(node.to_owned());
        table.rebalance();
        table.version += 1;
        Ok(table)
    }

    /// The table after `node` leaves for good: its cells are removed, every partition it held
    /// gets a feeding cell on another node so that `R` copies exist again (NEO's "tweak"), and
    /// cells move until the load is balanced again. The new cells become readable once caught
    /// up ([`mark_up_to_date`](Self::mark_up_to_date)).
    ///
    /// A partition whose only readable cell was on `node` is left unreadable until then;
    /// [`is_operational`](Self::is_operational) tells.
    pub fn remove_storage(&self, node: &str) -> Result<Self, PartitionError> {
        self.require_storage(node)?;
        let mut table = self.clone();
        table.storages.retain(|name| name != node);
        if table.storages.len() < table.replicas {
            return Err(PartitionError::NotEnoughStorages {
                replicas: table.replicas,
                storages: table.storages.len(),
            });
        }
        for partition in 0..table.partitions.len() {
            table.partitions[partition].retain(|cell| cell.node != node);
            while future_cells(&table.partitions[partition]).count() < table.replicas {
                let loads = table.future_loads();
                let cells = &table.partitions[partition];
                let target = table
                    .storages
                    .iter()
                    .filter(|name| !cells.iter().any(|cell| &cell.node == *name))
                    .min_by_key(|name| loads.get(name.as_str()).copied().unwrap_or(0))
                    .cloned();
                // There is always one: fewer than R cells on distinct nodes, at least R nodes.
                let Some(target) = target else { break };
                table.partitions[partition].push(Cell {
                    node: target,
                    state: CellState::Feeding,
                    replaces: None,
                });
            }
        }
        table.rebalance();
        table.version += 1;
        Ok(table)
    }

    /// Moves cells from the most to the least loaded nodes (counting the cells they will hold
    /// once every feeding cell is up to date) until loads differ by at most one.
    fn rebalance(&mut self) {
        // Each move lowers the sum of squared loads, so this ends; the bound is a safety net.
        for _ in 0..=self.partitions.len().saturating_mul(self.replicas) {
            let Some((partition, donor, receiver)) = self.find_move() else {
                return;
            };
            self.partitions[partition].push(Cell {
                node: receiver,
                state: CellState::Feeding,
                replaces: Some(donor),
            });
        }
    }

    /// A partition, a node to take an up-to-date cell of it from, and a node to give it to,
    /// whose loads differ by two or more.
    fn find_move(&self) -> Option<(usize, NodeName, NodeName)> {
        let loads = self.future_loads();
        let mut by_load: Vec<(&str, usize)> =
            loads.iter().map(|(node, load)| (*node, *load)).collect();
        by_load.sort_by_key(|&(node, load)| (load, node));
        for &(donor, donor_load) in by_load.iter().rev() {
            for &(receiver, receiver_load) in &by_load {
                if donor_load < receiver_load + 2 {
                    break;
                }
                let movable = self.partitions.iter().position(|cells| {
                    let replaced = |node: &str| {
                        cells
                            .iter()
                            .any(|cell| cell.replaces.as_deref() == Some(node))
                    };
                    cells.iter().any(|cell| {
                        cell.node == donor && cell.state == CellState::UpToDate && !replaced(donor)
                    }) && !cells.iter().any(|cell| cell.node == receiver)
                });
                if let Some(partition) = movable {
                    return Some((partition, donor.to_owned(), receiver.to_owned()));
                }
            }
        }
        None
    }

    fn partition_cells(&self, oid: Oid) -> &[Cell] {
        // partition_of is below the number of partitions, which is never zero.
        self.partitions
            .get(self.partition_of(oid) as usize)
            .map_or(&[], Vec::as_slice)
    }

    fn require_storage(&self, node: &str) -> Result<(), PartitionError> {
        if self.storages.iter().any(|name| name == node) {
            Ok(())
        } else {
            Err(PartitionError::UnknownStorage(node.to_owned()))
        }
    }

    fn set_states(
        &mut self,
        node: &str,
        applies: impl Fn(CellState) -> bool,
        state: CellState,
    ) -> usize {
        let mut changed = 0;
        for cell in self.partitions.iter_mut().flatten() {
            if cell.node == node && applies(cell.state) {
                cell.state = state;
                changed += 1;
            }
        }
        if changed > 0 {
            self.version += 1;
        }
        changed
    }

    /// Cells per node once every feeding cell is up to date (replaced cells dropped).
    fn future_loads(&self) -> BTreeMap<&str, usize> {
        let mut loads: BTreeMap<&str, usize> = self
            .storages
            .iter()
            .map(|name| (name.as_str(), 0))
            .collect();
        for cells in &self.partitions {
            for cell in future_cells(cells) {
                *loads.entry(cell.node.as_str()).or_default() += 1;
            }
        }
        loads
    }
}

/// The cells of a partition that remain once its feeding cells are up to date.
fn future_cells(cells: &[Cell]) -> impl Iterator<Item = &Cell> {
    cells.iter().filter(|cell| {
        !cells
            .iter()
            .any(|other| other.replaces.as_deref() == Some(cell.node.as_str()))
    })
}

/// The partition holding `oid` in a table of `partitions` partitions (`oid mod P`).
///
/// `partitions` of zero is treated as one, so the function never divides by zero.
pub fn partition_of(oid: Oid, partitions: u32) -> u32 {
    // The remainder is below `partitions`, itself a u32.
    u32::try_from(oid.0 % u64::from(partitions.max(1))).unwrap_or(0)
}

/// A set of partitions of a table of `P` partitions: which objects a replica holds or asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSet {
    num_partitions: u32,
    partitions: BTreeSet<u32>,
}

impl PartitionSet {
    /// The given partitions of a table of `num_partitions` partitions.
    pub fn new(num_partitions: u32, partitions: impl IntoIterator<Item = u32>) -> Self {
        Self {
            num_partitions,
            partitions: partitions.into_iter().collect(),
        }
    }

    /// Every partition of a table of `num_partitions` partitions.
    pub fn all(num_partitions: u32) -> Self {
        Self::new(num_partitions, 0..num_partitions)
    }

    /// Whether the partition of `oid` is in the set.
    pub fn contains(&self, oid: Oid) -> bool {
        self.partitions
            .contains(&partition_of(oid, self.num_partitions))
    }
}
