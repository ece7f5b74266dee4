//! The partition table: balance, cell states, storages joining and leaving.

use std::collections::BTreeMap;

use proptest::prelude::*;
use replicast_node::ids::Oid;
use replicast_node::partition::{CellState, PartitionError, PartitionTable};

fn names(count: usize) -> Vec<String> {
    (0..count).map(|index| format!("s{index}")).collect()
}

/// Cells per node.
fn loads(table: &PartitionTable) -> BTreeMap<String, usize> {
    let mut loads: BTreeMap<String, usize> = table
        .storages()
        .iter()
        .map(|name| (name.clone(), 0))
        .collect();
    for cell in table.partitions().flatten() {
        *loads.entry(cell.node.clone()).or_default() += 1;
    }
    loads
}

fn spread(table: &PartitionTable) -> usize {
    let loads = loads(table);
    loads.values().max().copied().unwrap_or(0) - loads.values().min().copied().unwrap_or(0)
}

/// Every partition has `R` cells on distinct nodes.
fn assert_replicated(table: &PartitionTable) {
    for (partition, cells) in table.partitions().enumerate() {
        assert_eq!(
            cells.len(),
            table.replicas(),
            "partition {partition}: {cells:?}"
        );
        for (index, cell) in cells.iter().enumerate() {
            assert!(
                !cells[..index].iter().any(|other| other.node == cell.node),
                "{cells:?}"
            );
        }
    }
}

/// Brings every feeding cell up to date, as replication finishing would.
fn catch_up(table: &mut PartitionTable) {
    for partition in 0..table.num_partitions() {
        let feeding: Vec<String> = table
            .cells(partition)
            .expect("partition")
            .iter()
            .filter(|cell| cell.state == CellState::Feeding)
            .map(|cell| cell.node.clone())
            .collect();
        for node in feeding {
            table
                .mark_up_to_date(partition, &node)
                .expect("feeding cell");
        }
    }
}

proptest! {
    #[test]
    fn initial_table_is_balanced_and_replicated(
        partitions in 1u32..64, replicas in 1usize..4, extra in 0usize..6,
    ) {
        let table = PartitionTable::new(partitions, replicas, &names(replicas + extra)).expect("valid");
        assert_replicated(&table);
        prop_assert!(spread(&table) <= 1, "{:?}", loads(&table));
        prop_assert!(table.is_operational());
        prop_assert!(table.partitions().flatten().all(|cell| cell.state == CellState::UpToDate));
    }

    #[test]
    fn a_joining_storage_takes_its_share_once_caught_up(
        partitions in 1u32..64, replicas in 1usize..4, extra in 0usize..5,
    ) {
        let mut table =
            PartitionTable::new(partitions, replicas, &names(replicas + extra)).expect("valid");
        let version = table.version();
        let mut grown = table.add_storage("new").expect("new name");
        prop_assert!(grown.version() > version);
        prop_assert!(grown.is_operational(), "old cells keep serving while the new ones feed");
        prop_assert!(grown.partitions().flatten().filter(|cell| cell.node == "new")
            .all(|cell| cell.state == CellState::Feeding));
        catch_up(&mut grown);
        assert_replicated(&grown);
        prop_assert!(spread(&grown) <= 1, "{:?}", loads(&grown));
        // The old table is untouched: the master publishes the new one when it decides to.
        table.mark_out_of_date("s0").expect("known");
    }

    #[test]
    fn a_leaving_storage_is_replaced_in_every_partition(
        partitions in 1u32..64, replicas in 1usize..4, extra in 1usize..5, leaving in 0usize..8,
    ) {
        let storages = names(replicas + extra);
        let leaving = storages[leaving % storages.len()].clone();
        let table = PartitionTable::new(partitions, replicas, &storages).expect("valid");
        let shrunk = table.remove_storage(&leaving).expect("enough storages remain");
        prop_assert!(shrunk.version() > table.version());
        prop_assert!(!shrunk.storages().contains(&leaving));
        prop_assert!(shrunk.partitions().flatten().all(|cell| cell.node != leaving));
        for (before, after) in table.partitions().zip(shrunk.partitions()) {
            // Once moves complete: R copies again, the leaving node's replaced by a fresh one.
            let staying = after.iter().filter(|cell| {
                !after.iter().any(|other| other.replaces.as_deref() == Some(cell.node.as_str()))
            });
            prop_assert_eq!(staying.count(), replicas, "{:?}", after);
            let replaced = before.iter().any(|cell| cell.node == leaving);
            let refilled = after
                .iter()
                .filter(|cell| cell.state == CellState::Feeding && cell.replaces.is_none())
                .count();
            prop_assert_eq!(refilled, usize::from(replaced));
        }
        // Serving goes on wherever the leaving node was not the only copy.
        let kept_a_copy = table.partitions().all(|cells| cells.iter().any(|cell| cell.node != leaving));
        prop_assert_eq!(shrunk.is_operational(), kept_a_copy);
        let mut shrunk = shrunk;
        catch_up(&mut shrunk);
        assert_replicated(&shrunk);
        prop_assert!(shrunk.is_operational());
        prop_assert!(spread(&shrunk) <= 1, "{:?}", loads(&shrunk));
    }
}

#[test]
fn failed_node_stops_serving_and_comes_back_through_feeding() {
    let mut table = PartitionTable::new(6, 2, &names(3)).expect("valid");
    let oid = Oid(6 * 100 + 1);
    assert_eq!(table.partition_of(oid), 1);
    let holders: Vec<String> = table
        .readable_cells(oid)
        .map(|cell| cell.node.clone())
        .collect();
    assert_eq!(holders.len(), 2);

    let version = table.version();
    assert_eq!(
        table.mark_out_of_date(&holders[0]),
        Ok(4),
        "s? holds 4 of 12 cells"
    );
    assert_eq!(table.version(), version + 1);
    assert_eq!(
        table.mark_out_of_date(&holders[0]),
        Ok(0),
        "no change, no new version"
    );
    assert_eq!(table.version(), version + 1);
    assert_eq!(
        table
            .readable_cells(oid)
            .map(|cell| cell.node.as_str())
            .collect::<Vec<_>>(),
        [&holders[1]]
    );
    assert_eq!(
        table.writable_cells(oid).count(),
        1,
        "an out-of-date cell takes no writes"
    );
    assert!(table.is_operational());

    table.mark_out_of_date(&holders[1]).expect("known");
    assert!(
        !table.is_operational(),
        "partition 1 has no readable cell left"
    );

    assert_eq!(table.start_feeding(&holders[0]), Ok(4));
    assert_eq!(table.writable_cells(oid).count(), 1, "feeding takes writes");
    assert_eq!(
        table.readable_cells(oid).count(),
        0,
        "feeding is not readable"
    );
    table.mark_up_to_date(1, &holders[0]).expect("feeding");
    assert!(
        table
            .readable_cells(oid)
            .any(|cell| cell.node == holders[0])
    );
    assert_eq!(
        table.mark_up_to_date(1, &holders[0]),
        Err(PartitionError::NoSuchCell {
            partition: 1,
            node: holders[0].clone(),
            expected: CellState::Feeding
        })
    );
}

#[test]
fn invalid_tables_and_changes_are_refused() {
    assert_eq!(
        PartitionTable::new(0, 1, &names(1)),
        Err(PartitionError::NoPartitions)
    );
    assert_eq!(
        PartitionTable::new(4, 0, &names(1)),
        Err(PartitionError::NoReplicas)
    );
    assert_eq!(
        PartitionTable::new(4, 3, &names(2)),
        Err(PartitionError::NotEnoughStorages {
            replicas: 3,
            storages: 2
        })
    );
    assert_eq!(
        PartitionTable::new(4, 1, &["a".into(), "b".into(), "a".into()]),
        Err(PartitionError::DuplicateStorage("a".into()))
    );
    let mut table = PartitionTable::new(4, 2, &names(2)).expect("valid");
    assert_eq!(
        table.add_storage("s1"),
        Err(PartitionError::DuplicateStorage("s1".into()))
    );
    assert_eq!(
        table.mark_out_of_date("nobody"),
        Err(PartitionError::UnknownStorage("nobody".into()))
    );
    assert_eq!(
        table.remove_storage("s0"),
        Err(PartitionError::NotEnoughStorages {
            replicas: 2,
            storages: 1
        })
    );
    assert_eq!(
        table.cells(4).map(<[_]>::len),
        Err(PartitionError::UnknownPartition {
            partition: 4,
            partitions: 4
        })
    );
}

#[test]
fn the_table_travels_intact() {
    let table = PartitionTable::new(12, 2, &names(3))
        .expect("valid")
        .remove_storage("s1")
        .expect("ok");
    let bytes = postcard::to_stdvec(&table).expect("encode");
    let decoded: PartitionTable = postcard::from_bytes(&bytes).expect("decode");
    assert_eq!(decoded, table);
    assert_eq!(
        decoded.partition_set_of("s0").contains(Oid(0)),
        table.partitions_of("s0").any(|p| p == 0)
    );
}

#[test]
fn a_decoded_table_is_checked() {
    let table = PartitionTable::new(4, 2, &names(3)).expect("valid");
    let untouched = postcard::to_stdvec(&fields_of(&table)).expect("encode");
    assert_eq!(
        postcard::from_bytes::<PartitionTable>(&untouched),
        Ok(table.clone())
    );
    let mut forged = fields_of(&table);
    // Rename a storage in the list only: its cells now name an unknown node.
    forged.storages[0] = "intruder".into();
    let bytes = postcard::to_stdvec(&forged).expect("encode");
    assert!(postcard::from_bytes::<PartitionTable>(&bytes).is_err());
    let mut forged = fields_of(&table);
    forged.partitions.clear();
    let bytes = postcard::to_stdvec(&forged).expect("encode");
    assert!(postcard::from_bytes::<PartitionTable>(&bytes).is_err());
    let mut forged = fields_of(&table);
    forged.partitions[1][1] = forged.partitions[1][0].clone();
    let bytes = postcard::to_stdvec(&forged).expect("encode");
    assert!(postcard::from_bytes::<PartitionTable>(&bytes).is_err());
    assert!(
        postcard::from_bytes::<PartitionTable>(&[0xff; 3]).is_err(),
        "garbage"
    );
}

/// The fields of a table, in its wire order, to forge encodings with.
#[derive(serde::Serialize, serde::Deserialize)]
struct Fields {
    version: u64,
    replicas: usize,
    storages: Vec<String>,
    partitions: Vec<Vec<replicast_node::partition::Cell>>,
}

fn fields_of(table: &PartitionTable) -> Fields {
    let bytes = postcard::to_stdvec(table).expect("encode");
    postcard::from_bytes(&bytes).expect("same layout")
}
