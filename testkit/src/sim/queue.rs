//! [`Queue`]: what is in flight, in order of arrival.

use std::collections::BTreeMap;

/// Items in flight, each with its arrival time `T` (a virtual `Duration`, an `Instant`):
/// they come out in order of arrival, items arriving at the same time in the order they were
/// pushed.
#[derive(Debug)]
pub struct Queue<T, E> {
    items: BTreeMap<(T, u64), E>,
    sequence: u64,
}

impl<T: Ord + Copy, E> Default for Queue<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Copy, E> Queue<T, E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            items: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// Puts `item` in flight, arriving at `at`.
    pub fn push(&mut self, at: T, item: E) {
        self.sequence += 1;
        self.items.insert((at, self.sequence), item);
    }

    /// When the next item arrives.
    pub fn next_at(&self) -> Option<T> {
        self.items.keys().next().map(|(at, _)| *at)
    }

    /// The next item if it arrived by `now`, with its arrival time.
    pub fn pop_due(&mut self, now: T) -> Option<(T, E)> {
        if self.next_at()? > now {
            return None;
        }
        self.items.pop_first().map(|((at, _), item)| (at, item))
    }

    /// Keeps only the items `keep` takes.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.items.retain(|_, item| keep(item));
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many items are in flight.
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_by_arrival_then_by_push_order() {
        let mut queue = Queue::new();
        queue.push(5, "late");
        queue.push(1, "early");
        queue.push(1, "early too");
        assert_eq!(queue.pop_due(0), None);
        assert_eq!(queue.next_at(), Some(1));
        assert_eq!(queue.pop_due(3), Some((1, "early")));
        assert_eq!(queue.pop_due(3), Some((1, "early too")));
        assert_eq!(queue.pop_due(3), None);
        queue.retain(|item| *item != "late");
        assert!(queue.is_empty());
    }
}
