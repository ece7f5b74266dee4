//! Answering an operator's inspection ([`InspectAsk`]) from the engine: digests and listings
//! of a partition's revisions, each on a read transaction of its own.

use crate::engine::{Engine, EngineError};
use crate::protocol::{InspectAnswer, InspectAsk};

/// The most revisions one [`InspectAsk::Records`] answer lists, whatever the asker wants: the
/// answer is one message.
pub const MAX_LISTED_RECORDS: u32 = 4_096;

/// About the most bytes of data one [`InspectAsk::Transactions`] page carries, whatever the
/// asker wants (a single larger revision still comes whole).
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// The answer to `ask` from `engine`, in a table of `num_partitions` partitions.
///
/// ```
/// use replicast_node::engine::Engine;
/// use replicast_node::ids::Tid;
/// use replicast_node::persist::answer_inspect;
/// use replicast_node::protocol::{InspectAnswer, InspectAsk, OidRange};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path().join("store.redb"))?;
/// let ask = InspectAsk::Records {
///     partition: 0, range: OidRange::ALL, up_to: Tid(10), after: None, max: 10,
/// };
/// assert_eq!(
///     answer_inspect(&engine, &ask, 1)?,
///     InspectAnswer::Records { records: Vec::new(), resume: None }
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn answer_inspect(
    engine: &Engine,
    ask: &InspectAsk,
    num_partitions: u32,
) -> Result<InspectAnswer, EngineError> {
    Ok(match *ask {
        InspectAsk::Digest {
            partition,
            range,
            up_to,
        } => InspectAnswer::Digest(engine.range_digest(partition, num_partitions, range, up_to)?),
        InspectAsk::Records {
            partition,
            range,
            up_to,
            after,
            max,
        } => {
            let max = max.min(MAX_LISTED_RECORDS) as usize;
            let (records, resume) =
                engine.range_records(partition, num_partitions, range, up_to, after, max)?;
            InspectAnswer::Records { records, resume }
        }
        InspectAsk::Transactions {
            partition,
            after,
            up_to,
            max_bytes,
        } => {
            let page = engine.transaction_records(
                partition,
                num_partitions,
                after,
                up_to,
                (max_bytes as usize).min(MAX_PAGE_BYTES),
            )?;
            InspectAnswer::Transactions {
                transactions: page.transactions,
                resume: page.resume,
            }
        }
    })
}
