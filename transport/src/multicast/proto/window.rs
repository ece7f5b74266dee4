//! The sender's transmit window: every datagram sent and not yet acknowledged by every
//! member, which is also the retransmit buffer, and the objects those datagrams belong to.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;

/// One datagram's worth of an object.
#[derive(Debug)]
pub(crate) struct Fragment {
    pub(crate) object_id: u64,
    pub(crate) object_len: u64,
    pub(crate) index: u32,
    pub(crate) count: u32,
    pub(crate) payload: Bytes,
    /// The last repair: when, and to whom (`None`: the whole group).
    pub(crate) last_repair: Option<(Instant, Option<u32>)>,
}

/// An object with datagrams in the window.
#[derive(Debug)]
pub(crate) struct InFlightObject {
    pub(crate) object_id: u64,
    pub(crate) first_seq: u64,
    pub(crate) count: u32,
    /// When its last fragment first went out (`None`: not yet).
    pub(crate) sent_at: Option<Instant>,
    /// Members that have not yet acknowledged it or reported it lost.
    pub(crate) pending: Vec<u32>,
}

impl InFlightObject {
    /// One past its last sequence number.
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }
}

/// Sequence numbers `base..base + fragments.len()`, with their objects in sequence order.
#[derive(Debug, Default)]
pub(crate) struct TransmitWindow {
    base: u64,
    fragments: VecDeque<Fragment>,
    bytes: u64,
    objects: VecDeque<InFlightObject>,
    by_id: HashMap<u64, u64>,
}

impl TransmitWindow {
    /// Lowest sequence number still held.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The sequence number the next fragment gets.
    pub(crate) fn end(&self) -> u64 {
        self.base + self.fragments.len() as u64
    }

    /// Datagrams held.
    pub(crate) fn datagrams(&self) -> u64 {
        self.fragments.len() as u64
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether an object with this id is held.
    pub(crate) fn contains_object(&self, object_id: u64) -> bool {
        self.by_id.contains_key(&object_id)
    }

    /// Appends an object split in `fragment_payload`-byte pieces; returns its first seq.
    pub(crate) fn push_object(
        &mut self,
        object_id: u64,
        data: Bytes,
        fragment_payload: usize,
        pending: Vec<u32>,
    ) -> u64 {
        let first_seq = self.end();
        let object_len = data.len() as u64;
        let count = data.len().div_ceil(fragment_payload).max(1) as u32;
        for index in 0..count {
            let start = (index as usize * fragment_payload).min(data.len());
            let end = (start + fragment_payload).min(data.len());
            self.fragments.push_back(Fragment {
                object_id,
                object_len,
                index,
                count,
                payload: data.slice(start..end),
                last_repair: None,
            });
        }
        self.bytes += object_len;
        self.objects.push_back(InFlightObject {
            object_id,
            first_seq,
            count,
            sent_at: None,
            pending,
        });
        self.by_id.insert(object_id, first_seq);
        first_seq
    }

    /// The fragment with sequence number `seq`, if held.
    pub(crate) fn fragment(&self, seq: u64) -> Option<&Fragment> {
        let offset = seq.checked_sub(self.base)?;
        self.fragments.get(usize::try_from(offset).ok()?)
    }

    /// The fragment with sequence number `seq`, if held.
    pub(crate) fn fragment_mut(&mut self, seq: u64) -> Option<&mut Fragment> {
        let offset = seq.checked_sub(self.base)?;
        self.fragments.get_mut(usize::try_from(offset).ok()?)
    }

    fn object_index_by_seq(&self, seq: u64) -> Option<usize> {
        let index = self
            .objects
            .partition_point(|object| object.end_seq() <= seq);
        let object = self.objects.get(index)?;
        (object.first_seq <= seq).then_some(index)
    }

    /// The object that sequence number `seq` belongs to.
    pub(crate) fn object_by_seq_mut(&mut self, seq: u64) -> Option<&mut InFlightObject> {
        let index = self.object_index_by_seq(seq)?;
        self.objects.get_mut(index)
    }

    /// The object with this id.
    pub(crate) fn object_by_id_mut(&mut self, object_id: u64) -> Option<&mut InFlightObject> {
        let first_seq = *self.by_id.get(&object_id)?;
        self.object_by_seq_mut(first_seq)
    }

    /// Objects whose last sequence number is in `from..to` (`from`, `to` are end bounds).
    pub(crate) fn objects_ending_in(
        &mut self,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = &mut InFlightObject> {
        let start = self
            .objects
            .partition_point(|object| object.end_seq() <= from);
        let stop = self
            .objects
            .partition_point(|object| object.end_seq() <= to);
        self.objects.range_mut(start..stop.max(start))
    }

    /// All objects, oldest first.
    pub(crate) fn objects_mut(&mut self) -> impl Iterator<Item = &mut InFlightObject> {
        self.objects.iter_mut()
    }

    /// The oldest object.
    pub(crate) fn oldest_object(&self) -> Option<&InFlightObject> {
        self.objects.front()
    }

    /// The most recent objects that started below `before`, newest last, at most `limit`.
    pub(crate) fn recent_objects(
        &self,
        before: u64,
        limit: usize,
    ) -> impl Iterator<Item = &InFlightObject> {
        let stop = self
            .objects
            .partition_point(|object| object.first_seq < before);
        self.objects.range(stop.saturating_sub(limit)..stop)
    }

    /// Drops every datagram below `seq` and every object ending at or below it; returns the
    /// objects dropped.
    pub(crate) fn release_below(&mut self, seq: u64) -> Vec<InFlightObject> {
        let seq = seq.min(self.end());
        while self.base < seq {
            if let Some(fragment) = self.fragments.pop_front()
                && fragment.index + 1 == fragment.count
            {
                self.bytes = self.bytes.saturating_sub(fragment.object_len);
            }
            self.base += 1;
        }
        let mut released = Vec::new();
        while self
            .objects
            .front()
            .is_some_and(|object| object.end_seq() <= seq)
        {
            if let Some(object) = self.objects.pop_front() {
                self.by_id.remove(&object.object_id);
                released.push(object);
            }
        }
        released
    }
}
