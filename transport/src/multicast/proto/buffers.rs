//! Object buffers that come back for reuse once the application drops the object.
//!
//! A received object is one buffer of its whole length (see `reassembly`). Allocated fresh,
//! such a buffer is fresh memory more often than not: glibc hands a freed buffer of this size
//! back to the kernel as soon as the application drops the object, and the next object takes
//! a page fault per 4 KiB it is written to (16% of all samples of the multicast bench's 0%
//! cell in a profile without the pool, more than the copy itself). So a delivered object's [`Bytes`] owns its
//! buffer through a guard that, when the last clone is dropped, puts the buffer back in its
//! receiver's pool, up to [`POOL_BYTES`]; the next object of a similar size reuses it.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::sync::lock;

/// Bytes of idle buffers a pool keeps at most (beyond, a returned buffer is freed).
pub(crate) const POOL_BYTES: usize = 8 << 20;

/// A buffer is reused only for an object at least this fraction of its capacity, so that a
/// small object does not pin a large buffer.
const MIN_FILL_DIVISOR: usize = 2;

#[derive(Debug, Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// Idle object buffers of one receiver, shared with the objects it delivered.
#[derive(Debug, Clone, Default)]
pub(crate) struct BufferPool {
    idle: Arc<Mutex<Idle>>,
}

impl BufferPool {
    /// An empty buffer with room for `len` bytes: an idle one when one fits.
    pub(crate) fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = lock(&self.idle);
        let fits = |buffer: &Vec<u8>| {
            buffer.capacity() >= len && buffer.capacity() / MIN_FILL_DIVISOR <= len
        };
        match idle.buffers.iter().rposition(fits) {
            Some(index) => {
                let mut buffer = idle.buffers.swap_remove(index);
                idle.bytes -= buffer.capacity();
                buffer.clear();
                buffer
            }
            None => Vec::with_capacity(len),
        }
    }

    /// The object in `buffer`, as bytes that return the buffer here when the last clone is
    /// dropped (or free it, if the pool is full or gone).
    pub(crate) fn share(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Returning {
            buffer,
            pool: Arc::downgrade(&self.idle),
        })
    }

    /// Puts a buffer no object took back in the pool (one of an object given up on).
    pub(crate) fn give_back(&self, buffer: Vec<u8>) {
        keep(&self.idle, buffer);
    }

    /// Bytes of idle buffers held.
    #[cfg(test)]
    fn idle_bytes(&self) -> usize {
        lock(&self.idle).bytes
    }
}

fn keep(idle: &Mutex<Idle>, buffer: Vec<u8>) {
    let capacity = buffer.capacity();
    if capacity == 0 {
        return;
    }
    let mut idle = lock(idle);
    if idle.bytes + capacity <= POOL_BYTES {
        idle.bytes += capacity;
        idle.buffers.push(buffer);
    }
}

/// Owns a delivered object's buffer; returns it to its pool when dropped.
struct Returning {
    buffer: Vec<u8>,
    /// Weak: a pool goes with its receiver, whatever objects are still around.
    pool: Weak<Mutex<Idle>>,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            keep(&pool, std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_object_lends_its_buffer_to_the_next() {
        let pool = BufferPool::default();
        let mut buffer = pool.take(1000);
        buffer.extend_from_slice(&[7; 1000]);
        let address = buffer.as_ptr();
        let object = pool.share(buffer);
        let clone = object.clone();
        drop(object);
        assert_eq!(pool.idle_bytes(), 0, "a clone still holds the object");
        assert_eq!(&clone[..], &[7; 1000][..]);
        drop(clone);
        assert!(pool.idle_bytes() >= 1000);
        let reused = pool.take(900);
        assert_eq!(reused.as_ptr(), address);
        assert!(reused.is_empty(), "a reused buffer starts empty");
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn a_small_object_does_not_take_a_large_buffer() {
        let pool = BufferPool::default();
        pool.give_back(Vec::with_capacity(1000));
        assert!(pool.take(100).capacity() < 1000);
        assert!(pool.idle_bytes() >= 1000);
    }

    #[test]
    fn the_pool_keeps_a_bounded_amount() {
        let pool = BufferPool::default();
        for _ in 0..(POOL_BYTES / 1_000_000 + 2) {
            pool.give_back(Vec::with_capacity(1_000_000));
        }
        assert!(pool.idle_bytes() <= POOL_BYTES);
        assert!(pool.idle_bytes() > POOL_BYTES - 1_000_000);
    }

    #[test]
    fn objects_outlive_their_pool() {
        let pool = BufferPool::default();
        let mut buffer = pool.take(10);
        buffer.extend_from_slice(b"0123456789");
        let object = pool.share(buffer);
        drop(pool);
        assert_eq!(&object[..], b"0123456789");
    }
}
