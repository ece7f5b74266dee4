//! Reed-Solomon parity of blocks (reed-solomon-simd): the sender's recovery shards per block,
//! computed when first needed, and a receiver's recovery shards of a block until it can be
//! rebuilt.
//!
//! A block is `k` consecutive datagrams of one object (see [`wire::block_of`]); its shards are
//! their payloads, each zero-padded to the block's shard length. Any `k` of the block's
//! original and recovery shards rebuild the missing originals, so one recovery shard repairs a
//! different loss at every receiver that lost one datagram of the block.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::wire;

/// What the sender knows of one block's parity.
#[derive(Debug)]
pub(crate) struct BlockParity {
    /// The block's recovery shards, all [`wire::recovery_count`] of them once one was needed
    /// (the code's shards depend on the count, so it is fixed per block length).
    shards: Vec<Bytes>,
    /// The next recovery index never sent: every index is sent once, so a repair shard is new
    /// to every receiver.
    pub(crate) next_index: u16,
    /// Indexes below were sent proactively (with the data), the rest on demand.
    pub(crate) proactive: u16,
    /// Parity sent on demand recently: (when, how many). A NACK that left before it arrived
    /// asks for no more than that.
    pub(crate) recent: Vec<(Instant, u16)>,
}

/// The sender's parity per block, released with the window.
#[derive(Default)]
pub(crate) struct ParityEncoder {
    encoder: Option<ReedSolomonEncoder>,
    blocks: BTreeMap<u64, BlockParity>,
}

impl ParityEncoder {
    /// The block starting at `first_seq`.
    pub(crate) fn block_mut(&mut self, first_seq: u64) -> &mut BlockParity {
        self.blocks.entry(first_seq).or_insert(BlockParity {
            shards: Vec::new(),
            next_index: 0,
            proactive: 0,
            recent: Vec::new(),
        })
    }

    /// Recovery shard `index` of the block at `first_seq` whose datagrams carry `payloads`,
    /// computed (with all the block's others) if it was not yet. `None` when the index is
    /// beyond the block's recovery count.
    pub(crate) fn shard(
        &mut self,
        first_seq: u64,
        index: u16,
        payloads: &[Bytes],
    ) -> Option<&[u8]> {
        let block = self.blocks.entry(first_seq).or_insert(BlockParity {
            shards: Vec::new(),
            next_index: 0,
            proactive: 0,
            recent: Vec::new(),
        });
        if block.shards.is_empty() {
            let count = wire::recovery_count(u16::try_from(payloads.len()).ok()?);
            block.shards = encode(&mut self.encoder, payloads, count)?;
        }
        block.shards.get(usize::from(index)).map(|shard| &shard[..])
    }

    /// Forgets blocks that start below `seq` (released from the window).
    pub(crate) fn release_below(&mut self, seq: u64) {
        self.blocks = self.blocks.split_off(&seq);
    }
}

/// Computes `count` recovery shards of `payloads` (each zero-padded to the block's shard
/// length), reusing the encoder's working space.
fn encode(
    encoder: &mut Option<ReedSolomonEncoder>,
    payloads: &[Bytes],
    count: u16,
) -> Option<Vec<Bytes>> {
    let shard_len = wire::shard_len(payloads.first()?.len());
    let (originals, recovery) = (payloads.len(), usize::from(count));
    if !ReedSolomonEncoder::supports(originals, recovery) {
        return None;
    }
    let encoder = match encoder {
        Some(encoder) => {
            encoder.reset(originals, recovery, shard_len).ok()?;
            encoder
        }
        None => encoder.insert(ReedSolomonEncoder::new(originals, recovery, shard_len).ok()?),
    };
    let mut padded = Vec::new();
    for payload in payloads {
        if payload.len() == shard_len {
            encoder.add_original_shard(payload).ok()?;
        } else {
            padded.clear();
            padded.extend_from_slice(payload);
            padded.resize(shard_len, 0);
            encoder.add_original_shard(&padded).ok()?;
        }
    }
    let result = encoder.encode().ok()?;
    Some(result.recovery_iter().map(Bytes::copy_from_slice).collect())
}

/// A block's layout as a parity datagram describes it, and the recovery shards a receiver
/// holds for it.
#[derive(Debug)]
pub(crate) struct RecoveryBlock {
    pub(crate) object_id: u64,
    pub(crate) object_len: u64,
    pub(crate) first_index: u32,
    pub(crate) fragment_count: u32,
    pub(crate) fragment_size: u32,
    pub(crate) len: u16,
    pub(crate) shard_len: usize,
    /// (recovery index, shard), indexes distinct.
    pub(crate) shards: Vec<(u16, Vec<u8>)>,
}

impl RecoveryBlock {
    /// Bytes of shards held.
    pub(crate) fn held(&self) -> usize {
        self.shards.len() * self.shard_len
    }

    /// Whether `other` describes the same block the same way.
    pub(crate) fn same_layout(&self, other: &wire::ParityBody<'_>) -> bool {
        self.object_id == other.object_id
            && self.object_len == other.object_len
            && self.first_index == other.first_index
            && self.fragment_count == other.fragment_count
            && self.fragment_size == other.fragment_size
            && self.len == other.block_len
            && self.shard_len == other.shard.len()
    }
}

/// A receiver's decoder, its working space kept between blocks.
#[derive(Default)]
pub(crate) struct ParityDecoder {
    decoder: Option<ReedSolomonDecoder>,
}

impl ParityDecoder {
    /// Rebuilds the block's missing originals from `originals` (block offset, payload) and the
    /// block's recovery shards; returns (block offset, shard) of each rebuilt one. `None` when
    /// the shards do not suffice or do not fit together.
    pub(crate) fn decode<'a>(
        &mut self,
        block: &RecoveryBlock,
        originals: impl Iterator<Item = (usize, &'a [u8])>,
    ) -> Option<Vec<(usize, Vec<u8>)>> {
        let original_count = usize::from(block.len);
        let recovery_count = usize::from(wire::recovery_count(block.len));
        if !ReedSolomonDecoder::supports(original_count, recovery_count) {
            return None;
        }
        let decoder = match &mut self.decoder {
            Some(decoder) => {
                decoder
                    .reset(original_count, recovery_count, block.shard_len)
                    .ok()?;
                decoder
            }
            None => self.decoder.insert(
                ReedSolomonDecoder::new(original_count, recovery_count, block.shard_len).ok()?,
            ),
        };
        let mut padded = Vec::new();
        for (offset, payload) in originals {
            if payload.len() > block.shard_len {
                return None;
            }
            if payload.len() == block.shard_len {
                decoder.add_original_shard(offset, payload).ok()?;
            } else {
                padded.clear();
                padded.extend_from_slice(payload);
                padded.resize(block.shard_len, 0);
                decoder.add_original_shard(offset, &padded).ok()?;
            }
        }
        for (index, shard) in &block.shards {
            decoder
                .add_recovery_shard(usize::from(*index), shard)
                .ok()?;
        }
        let result = decoder.decode().ok()?;
        Some(
            result
                .restored_original_iter()
                .map(|(offset, shard)| (offset, shard.to_vec()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(count: usize, last: usize) -> Vec<Bytes> {
        (0..count)
            .map(|i| {
                let len = if i + 1 == count { last } else { 100 };
                Bytes::from(
                    (0..len)
                        .map(|b| (b * 7 + i * 13) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect()
    }

    #[test]
    fn any_k_shards_rebuild_the_missing_payloads() {
        let sent = payloads(10, 37);
        let mut encoder = ParityEncoder::default();
        let mut block = RecoveryBlock {
            object_id: 1,
            object_len: 937,
            first_index: 0,
            fragment_count: 10,
            fragment_size: 100,
            len: 10,
            shard_len: 100,
            shards: Vec::new(),
        };
        // Three losses, repaired by recovery shards 0, 3 and 4 (of 5: half the block).
        for index in [0u16, 3, 4] {
            let shard = encoder.shard(50, index, &sent).expect("supported").to_vec();
            block.shards.push((index, shard));
        }
        let lost = [2usize, 7, 9];
        let originals = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| !lost.contains(i))
            .map(|(i, p)| (i, &p[..]));
        let rebuilt = ParityDecoder::default()
            .decode(&block, originals)
            .expect("enough shards");
        assert_eq!(rebuilt.len(), 3);
        for (offset, shard) in rebuilt {
            assert!(lost.contains(&offset));
            assert_eq!(&shard[..sent[offset].len()], &sent[offset][..]);
        }
    }

    #[test]
    fn too_few_shards_rebuild_nothing() {
        let sent = payloads(4, 100);
        let mut encoder = ParityEncoder::default();
        let shard = encoder.shard(0, 0, &sent).expect("supported").to_vec();
        let block = RecoveryBlock {
            object_id: 1,
            object_len: 400,
            first_index: 0,
            fragment_count: 4,
            fragment_size: 100,
            len: 4,
            shard_len: 100,
            shards: vec![(0, shard)],
        };
        let originals = sent.iter().enumerate().skip(2).map(|(i, p)| (i, &p[..]));
        assert!(ParityDecoder::default().decode(&block, originals).is_none());
    }
}
