//! Crash points of a [`LocalCluster`]'s nodes (see `replicast_node::crash_point`): every node
//! the cluster starts looks for armed ones in the cluster's `crash-points/` directory; a test
//! arms one, waits for the node that stops there, and SIGKILLs it.
//!
//! Only a `replicast` binary built with the node crate's `crash-points` feature has them: the
//! root package's tests get one (its dev-dependency turns the feature on). Against another
//! binary, [`LocalCluster::wait_crash_point`] fails on its bound, naming the point.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use replicast_node::crash_point::LINE_PREFIX;

use super::{LocalCluster, WAIT};
use crate::TestkitError;

/// How long one look at a node's output waits, in the round over every node.
const LOOK: Duration = Duration::from_millis(50);

/// The directory of armed crash points of the cluster in `root`.
pub(super) fn directory(root: &Path) -> PathBuf {
    root.join("crash-points")
}

impl LocalCluster {
    /// Arms crash point `name` (one of `replicast_node::crash_point`'s constants): the first
    /// node to reach it stops there (see [`wait_crash_point`](Self::wait_crash_point)).
    ///
    /// # Panics
    /// When the file that arms it cannot be written.
    pub fn arm_crash_point(&self, name: &str) {
        let directory = directory(self.root());
        std::fs::create_dir_all(&directory)
            .and_then(|()| std::fs::write(directory.join(name), b""))
            .unwrap_or_else(|error| panic!("arm crash point {name}: {error}"));
    }

    /// Waits (bounded by [`WAIT`]) until a node (master or storage) says it stopped at crash
    /// point `name`; returns the node's name. The node stays stopped: kill it. What the nodes
    /// print meanwhile is read and dropped.
    ///
    /// # Panics
    /// When no node stops there in time, or a node exits meanwhile.
    pub fn wait_crash_point(&mut self, name: &str) -> String {
        let line = format!("{LINE_PREFIX} {name}");
        let deadline = Instant::now() + WAIT;
        loop {
            let nodes = std::iter::once(&self.master_node)
                .chain(self.other_masters.values())
                .chain(self.storages.values());
            for node in nodes {
                match node.next_line(&line, LOOK, |printed| (printed == line).then_some(())) {
                    Ok(()) => return node.name.clone(),
                    Err(TestkitError::Timeout { .. }) => {}
                    Err(error) => panic!("waiting for crash point {name}: {error}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "no node stopped at crash point {name} within {WAIT:?} (a replicast binary \
                 built without the node crate's crash-points feature has none)"
            );
        }
    }
}
