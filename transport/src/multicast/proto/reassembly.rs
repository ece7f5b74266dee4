//! Objects being put back together from their fragments, under a memory bound.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

/// An object some of whose fragments arrived (or that a tail announced).
#[derive(Debug)]
pub(crate) struct PartialObject {
    pub(crate) object_id: u64,
    /// Known once a fragment arrived (a tail announcement does not carry it).
    pub(crate) object_len: Option<u64>,
    pub(crate) count: u32,
    fragments: BTreeMap<u32, Bytes>,
    held: usize,
}

/// Why a fragment was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It contradicts what is known of its object.
    Inconsistent,
    /// It would exceed the memory bound.
    OverMemory,
}

/// Result of storing a fragment.
#[derive(Debug)]
pub(crate) enum Stored {
    /// Stored; the object is still incomplete.
    Partial,
    /// The object is complete.
    Complete { object_id: u64, data: Bytes },
    /// All fragments arrived but they do not add up to the announced length.
    Corrupt { object_id: u64 },
}

/// Objects in reassembly of one session, keyed by their first sequence number.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    objects: BTreeMap<u64, PartialObject>,
}

impl Reassembly {
    /// The object that `seq` belongs to: its first seq and state.
    pub(crate) fn containing(&self, seq: u64) -> Option<(u64, &PartialObject)> {
        let (&first, object) = self.objects.range(..=seq).next_back()?;
        (seq < first + u64::from(object.count)).then_some((first, object))
    }

    /// Notes an object announced by a tail; nothing is allocated for its fragments.
    pub(crate) fn announce(&mut self, first_seq: u64, object_id: u64, count: u32) {
        self.objects.entry(first_seq).or_insert(PartialObject {
            object_id,
            object_len: None,
            count,
            fragments: BTreeMap::new(),
            held: 0,
        });
    }

    /// Removes the object starting at `first_seq`; returns the bytes it held.
    pub(crate) fn remove(&mut self, first_seq: u64) -> Option<PartialObject> {
        self.objects.remove(&first_seq)
    }

    /// Stores a fragment if `held + payload` stays within `limit`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &mut self,
        first_seq: u64,
        object_id: u64,
        object_len: u64,
        index: u32,
        count: u32,
        payload: &[u8],
        held: &mut usize,
        limit: usize,
    ) -> Result<Stored, Refused> {
        let object = self.objects.entry(first_seq).or_insert(PartialObject {
            object_id,
            object_len: Some(object_len),
            count,
            fragments: BTreeMap::new(),
            held: 0,
        });
        if object.object_id != object_id
            || object.count != count
            || object.object_len.is_some_and(|len| len != object_len)
            || payload.len() as u64 > object_len
        {
            return Err(Refused::Inconsistent);
        }
        object.object_len = Some(object_len);
        if object.fragments.contains_key(&index) {
            return Ok(Stored::Partial);
        }
        if *held + payload.len() > limit {
            // The object stays known (its id is needed to report it lost) without the bytes.
            return Err(Refused::OverMemory);
        }
        *held += payload.len();
        object.held += payload.len();
        object
            .fragments
            .insert(index, Bytes::copy_from_slice(payload));
        if object.fragments.len() < count as usize {
            return Ok(Stored::Partial);
        }
        let Some(object) = self.objects.remove(&first_seq) else {
            return Ok(Stored::Partial);
        };
        *held -= object.held;
        let total: u64 = object.fragments.values().map(|f| f.len() as u64).sum();
        if total != object_len {
            return Ok(Stored::Corrupt { object_id });
        }
        let mut data = BytesMut::with_capacity(object.held);
        for fragment in object.fragments.values() {
            data.extend_from_slice(fragment);
        }
        Ok(Stored::Complete {
            object_id,
            data: data.freeze(),
        })
    }

    /// Whether no object is in reassembly.
    pub(crate) fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Removes objects that end at or below `seq` without being complete; returns them.
    pub(crate) fn drain_below(&mut self, seq: u64) -> Vec<(u64, PartialObject)> {
        let stale: Vec<u64> = self
            .objects
            .range(..seq)
            .filter(|(first, object)| **first + u64::from(object.count) <= seq)
            .map(|(first, _)| *first)
            .collect();
        stale
            .into_iter()
            .filter_map(|first| self.objects.remove(&first).map(|object| (first, object)))
            .collect()
    }
}

impl PartialObject {
    /// The payload of fragment `index`, if it arrived.
    pub(crate) fn fragment(&self, index: u32) -> Option<&Bytes> {
        self.fragments.get(&index)
    }

    /// Bytes of fragments held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }
}
