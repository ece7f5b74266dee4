//! Objects being put back together from their fragments, under a memory bound.
//!
//! Each object gets one buffer of its whole length at its first fragment, and every fragment
//! is copied straight to its place there: the buffer becomes the delivered object without a
//! further copy, and a fragment costs no allocation of its own. The buffer is filled from its
//! start as fragments come in order; only a fragment ahead of the filled part zeroes the gap
//! before it (zeroing every buffer first cost as much as the copy it saved). A fragment's place follows
//! from the layout every sender uses (the wire's `fragment_size` of parity bodies): all
//! fragments but the last are equally long, so fragment `i` of a non-last length `s` starts
//! at `i * s`, and the last one ends where the object ends.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::buffers::BufferPool;

/// An object some of whose fragments arrived (or that a tail announced).
#[derive(Debug)]
pub(crate) struct PartialObject {
    pub(crate) object_id: u64,
    /// Known once a fragment arrived (a tail announcement does not carry it).
    pub(crate) object_len: Option<u64>,
    pub(crate) count: u32,
    /// The object's bytes: its whole length is reserved at the first fragment stored, and
    /// the vector's length is how far it is filled (fragments, or zeroes in gaps).
    data: Vec<u8>,
    /// Bytes reserved for `data` (counted against the memory bound).
    reserved: usize,
    /// One bit per fragment: whether it arrived.
    arrived: Vec<u64>,
    /// Fragments arrived.
    received: u32,
    /// Length of every fragment but the last, once one of them arrived.
    fragment_size: Option<usize>,
    /// Length of the last fragment, once it arrived.
    last_len: Option<usize>,
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

/// One fragment as its datagram describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fragment<'a> {
    /// Sequence number of the object's first fragment.
    pub(crate) first_seq: u64,
    pub(crate) object_id: u64,
    pub(crate) object_len: u64,
    pub(crate) index: u32,
    pub(crate) count: u32,
    pub(crate) payload: &'a [u8],
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
        self.objects
            .entry(first_seq)
            .or_insert_with(|| PartialObject::new(object_id, None, count));
    }

    /// Removes the object starting at `first_seq`; returns the bytes it held.
    pub(crate) fn remove(&mut self, first_seq: u64) -> Option<PartialObject> {
        self.objects.remove(&first_seq)
    }

    /// Stores a fragment. The object's buffer is taken from `buffers` at its first fragment,
    /// if `held` plus the object's length stays within `limit`; `held` counts it until the
    /// object leaves reassembly. A complete object's bytes return the buffer to `buffers`
    /// once the application drops them.
    pub(crate) fn store(
        &mut self,
        fragment: Fragment<'_>,
        held: &mut usize,
        limit: usize,
        buffers: &BufferPool,
    ) -> Result<Stored, Refused> {
        let Fragment {
            first_seq,
            object_id,
            object_len,
            index,
            count,
            payload,
        } = fragment;
        let object = self
            .objects
            .entry(first_seq)
            .or_insert_with(|| PartialObject::new(object_id, Some(object_len), count));
        if object.object_id != object_id
            || object.count != count
            || object.object_len.is_some_and(|len| len != object_len)
            || payload.len() as u64 > object_len
        {
            return Err(Refused::Inconsistent);
        }
        object.object_len = Some(object_len);
        if object.has(index) {
            return Ok(Stored::Partial);
        }
        let Some(start) = object.place(index, payload.len(), object_len) else {
            return Err(Refused::Inconsistent);
        };
        if object.reserved == 0 && object_len > 0 {
            let len = usize::try_from(object_len).map_err(|_| Refused::OverMemory)?;
            if held.saturating_add(len) > limit {
                // The object stays known (its id is needed to report it lost) without bytes.
                return Err(Refused::OverMemory);
            }
            *held += len;
            object.reserved = len;
            object.data = buffers.take(len);
        }
        object.write(start, payload);
        object.mark(index, payload.len());
        if object.received < count {
            return Ok(Stored::Partial);
        }
        let Some(object) = self.objects.remove(&first_seq) else {
            return Ok(Stored::Partial);
        };
        *held = held.saturating_sub(object.held());
        if !object.adds_up(object_len) {
            buffers.give_back(object.into_buffer());
            return Ok(Stored::Corrupt { object_id });
        }
        Ok(Stored::Complete {
            object_id,
            data: buffers.share(object.data),
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
    fn new(object_id: u64, object_len: Option<u64>, count: u32) -> Self {
        Self {
            object_id,
            object_len,
            count,
            data: Vec::new(),
            reserved: 0,
            arrived: Vec::new(),
            received: 0,
            fragment_size: None,
            last_len: None,
        }
    }

    /// Copies `payload` to `start` (which [`place`](Self::place) found within the object).
    fn write(&mut self, start: usize, payload: &[u8]) {
        if self.data.len() < start {
            self.data.resize(start, 0);
        }
        let overlap = (self.data.len() - start).min(payload.len());
        if let Some(filled) = self.data.get_mut(start..start + overlap) {
            filled.copy_from_slice(&payload[..overlap]);
        }
        self.data.extend_from_slice(&payload[overlap..]);
    }

    fn has(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.arrived
            .get(word)
            .is_some_and(|bits| bits & (1 << bit) != 0)
    }

    fn mark(&mut self, index: u32, len: usize) {
        let (word, bit) = (index as usize / 64, index % 64);
        if self.arrived.len() <= word {
            self.arrived.resize(self.count.div_ceil(64) as usize, 0);
        }
        if let Some(bits) = self.arrived.get_mut(word) {
            *bits |= 1 << bit;
        }
        self.received += 1;
        if index + 1 == self.count {
            self.last_len = Some(len);
        } else {
            self.fragment_size = Some(len);
        }
    }

    /// Where fragment `index` of `len` bytes starts in the object's buffer, or `None` when it
    /// does not fit the layout the fragments before it set (or the object's length).
    fn place(&self, index: u32, len: usize, object_len: u64) -> Option<usize> {
        let object_len = usize::try_from(object_len).ok()?;
        let last = index + 1 == self.count;
        let (size, last_len) = if last {
            (self.fragment_size, Some(len))
        } else {
            if self.fragment_size.is_some_and(|size| size != len) || len == 0 {
                return None;
            }
            (Some(len), self.last_len)
        };
        // Once both lengths are known, they must add up to the object (a single fragment,
        // with no other to agree with, is checked when the object completes).
        if let (Some(size), Some(last_len)) = (size, last_len)
            && (self.count.saturating_sub(1) as usize)
                .checked_mul(size)
                .and_then(|before| before.checked_add(last_len))
                != Some(object_len)
        {
            return None;
        }
        let start = if last {
            object_len.checked_sub(len)?
        } else {
            (index as usize).checked_mul(len)?
        };
        let end = start.checked_add(len)?;
        (end <= object_len).then_some(start)
    }

    /// Whether the fragments, all arrived, add up to `object_len`.
    fn adds_up(&self, object_len: u64) -> bool {
        let before_last =
            (self.fragment_size.unwrap_or(0)).saturating_mul(self.count.saturating_sub(1) as usize);
        Some(before_last.saturating_add(self.last_len.unwrap_or(0)))
            == usize::try_from(object_len).ok()
    }

    /// The payload of fragment `index`, if it arrived.
    pub(crate) fn fragment(&self, index: u32) -> Option<&[u8]> {
        if !self.has(index) {
            return None;
        }
        let range = if index + 1 == self.count {
            let len = self.last_len?;
            let end = usize::try_from(self.object_len?).ok()?;
            end.checked_sub(len)?..end
        } else {
            let size = self.fragment_size?;
            let start = (index as usize).checked_mul(size)?;
            start..start.checked_add(size)?
        };
        self.data.get(range)
    }

    /// The object's buffer, for reuse once the object is given up on.
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.data
    }

    /// Bytes held for the object (its buffer, once a fragment arrived).
    pub(crate) fn held(&self) -> usize {
        self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn fragment(index: u32, count: u32, object_len: u64, payload: &[u8]) -> Fragment<'_> {
        Fragment {
            first_seq: 100,
            object_id: 7,
            object_len,
            index,
            count,
            payload,
        }
    }

    #[test]
    fn fragments_in_any_order_make_the_object() {
        let object: Vec<u8> = (0..=250).collect();
        let pieces: Vec<&[u8]> = object.chunks(100).collect();
        let mut reassembly = Reassembly::default();
        let mut held = 0;
        let buffers = BufferPool::default();
        // The last fragment first: its place is known from the object's end.
        for index in [2, 0] {
            let stored = reassembly
                .store(
                    fragment(index, 3, 251, pieces[index as usize]),
                    &mut held,
                    LIMIT,
                    &buffers,
                )
                .expect("stored");
            assert!(matches!(stored, Stored::Partial), "{stored:?}");
            assert_eq!(held, 251, "the buffer is counted from the first fragment");
        }
        let (_, partial) = reassembly.containing(101).expect("in reassembly");
        assert_eq!(partial.fragment(0), Some(pieces[0]));
        assert_eq!(partial.fragment(2), Some(pieces[2]));
        assert_eq!(partial.fragment(1), None);
        match reassembly.store(fragment(1, 3, 251, pieces[1]), &mut held, LIMIT, &buffers) {
            Ok(Stored::Complete { object_id: 7, data }) => assert_eq!(&data[..], &object[..]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(held, 0);
        assert!(reassembly.is_empty());
    }

    #[test]
    fn a_fragment_that_breaks_the_layout_is_refused() {
        let mut reassembly = Reassembly::default();
        let mut held = 0;
        let buffers = BufferPool::default();
        reassembly
            .store(fragment(0, 3, 250, &[1; 100]), &mut held, LIMIT, &buffers)
            .expect("stored");
        // Another length for a fragment before the last.
        assert_eq!(
            reassembly
                .store(fragment(1, 3, 250, &[2; 90]), &mut held, LIMIT, &buffers)
                .err(),
            Some(Refused::Inconsistent)
        );
        // A last fragment that does not end the object where the others say.
        assert_eq!(
            reassembly
                .store(fragment(2, 3, 250, &[3; 40]), &mut held, LIMIT, &buffers)
                .err(),
            Some(Refused::Inconsistent)
        );
        // A fragment past the object's end: fragment 2 of 4 is not the last, and
        // [200, 300) exceeds 250 bytes.
        let mut other = Reassembly::default();
        assert_eq!(
            other
                .store(fragment(2, 4, 250, &[4; 100]), &mut held, LIMIT, &buffers)
                .err(),
            Some(Refused::Inconsistent)
        );
    }

    #[test]
    fn a_single_fragment_shorter_than_the_object_is_corrupt() {
        let mut reassembly = Reassembly::default();
        let mut held = 0;
        let buffers = BufferPool::default();
        match reassembly.store(fragment(0, 1, 10, &[1; 6]), &mut held, LIMIT, &buffers) {
            Ok(Stored::Corrupt { object_id: 7 }) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(held, 0);
    }

    #[test]
    fn the_memory_bound_counts_each_object_whole() {
        let mut reassembly = Reassembly::default();
        let mut held = 0;
        let buffers = BufferPool::default();
        reassembly
            .store(fragment(0, 4, 400, &[1; 100]), &mut held, 700, &buffers)
            .expect("the first object fits");
        assert_eq!(held, 400);
        let second = Fragment {
            first_seq: 200,
            object_id: 8,
            ..fragment(0, 4, 400, &[2; 100])
        };
        assert_eq!(
            reassembly.store(second, &mut held, 700, &buffers).err(),
            Some(Refused::OverMemory)
        );
        assert_eq!(held, 400);
        let (_, refused) = reassembly.containing(200).expect("still known");
        assert_eq!((refused.object_id, refused.held()), (8, 0));
        let removed = reassembly.remove(100).expect("first object");
        assert_eq!(removed.held(), 400);
    }
}
