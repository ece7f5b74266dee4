//! `[cluster]`: the shape of the partition table the master builds.

use serde::Deserialize;
use toml::Spanned;

use super::check::Checker;
use super::error::ConfigError;
use super::node::{NodeName, check_name};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [cluster] table")]
pub(super) struct RawCluster {
    partitions: Option<Spanned<u64>>,
    replicas: Option<Spanned<u64>>,
    storages: Option<Vec<Spanned<String>>>,
}

/// The `[cluster]` section of the master: `P` partitions (`partition = oid mod P`) and `R`
/// replicas of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterLayout {
    /// Number of partitions, `1..=`[`MAX_PARTITIONS`](Self::MAX_PARTITIONS).
    pub partitions: u32,
    /// Replicas per partition, `1..=`[`MAX_REPLICAS`](Self::MAX_REPLICAS).
    pub replicas: usize,
}

impl ClusterLayout {
    /// The most partitions a table may have: every node holds the whole table, and it travels
    /// in one message.
    pub const MAX_PARTITIONS: u32 = 1 << 16;
    /// The most replicas per partition: every commit writes to all of them, so a larger number
    /// is a typo rather than a plan.
    pub const MAX_REPLICAS: usize = 16;

    /// Checks `[cluster]`; returns the layout and `cluster.storages` (empty when not given).
    pub(super) fn check(
        raw: Spanned<RawCluster>,
        check: &Checker<'_>,
    ) -> Result<(Self, Vec<NodeName>), ConfigError> {
        let section = Some(raw.span());
        let raw = raw.into_inner();
        let mut storages: Vec<NodeName> = Vec::new();
        for name in raw.storages.iter().flatten() {
            let checked = check_name(check, "cluster.storages", name)?;
            if storages.contains(&checked) {
                return Err(check.invalid(
                    "cluster.storages",
                    name,
                    format!("{:?}", name.get_ref()),
                    "each storage once: a storage holds at most one cell of a partition",
                ));
            }
            storages.push(checked);
        }
        let partitions = check.required(
            raw.partitions,
            "cluster.partitions",
            section.clone(),
            "the master builds the partition table with this many partitions",
        )?;
        let replicas = check.required(
            raw.replicas,
            "cluster.replicas",
            section,
            "the master places this many replicas of each partition",
        )?;
        let partitions_value = *partitions.get_ref();
        if !(1..=u64::from(Self::MAX_PARTITIONS)).contains(&partitions_value) {
            return Err(check.invalid(
                "cluster.partitions",
                &partitions,
                partitions_value,
                format!("1 to {}", Self::MAX_PARTITIONS),
            ));
        }
        let replicas_value = *replicas.get_ref();
        if !(1..=Self::MAX_REPLICAS as u64).contains(&replicas_value) {
            return Err(check.invalid(
                "cluster.replicas",
                &replicas,
                replicas_value,
                format!("1 to {}", Self::MAX_REPLICAS),
            ));
        }
        let layout = Self {
            partitions: u32::try_from(partitions_value)
                .expect("partitions were checked to be at most MAX_PARTITIONS"),
            replicas: usize::try_from(replicas_value)
                .expect("replicas were checked to be at most MAX_REPLICAS"),
        };
        Ok((layout, storages))
    }
}
