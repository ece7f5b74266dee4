//! The queue of delivered objects between a [`FanoutReceiver`](super::FanoutReceiver) and its
//! application, bounded in objects and in bytes.
//!
//! Why bounded: an application slower than its writers (a storage whose disk lags) must slow
//! the writers down, not pile their objects up in memory. A full queue makes the receiver
//! wait before it delivers; a writer hears that its object arrived (its verdict, its unicast
//! acknowledgement) only once the object is in the queue. So a multicast socket's reader
//! stops reading, and the sender's flight limit stops the sender; a unicast stream is not
//! acknowledged, and QUIC's flow control stops the writer's link.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc};

use super::replica::DeliveredObject;

/// The sending half: the receiver's tasks put objects in.
pub(super) struct QueueIn {
    objects: mpsc::Sender<DeliveredObject>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
    queued: Arc<Counts>,
}

/// What is in the queue, counted apart from the bounds' permits (a push waiting for room may
/// hold some of them).
#[derive(Default)]
struct Counts {
    objects: AtomicU64,
    bytes: AtomicU64,
}

/// The receiving half: the application takes objects out.
pub(super) struct QueueOut {
    objects: mpsc::Receiver<DeliveredObject>,
    bytes: Arc<Semaphore>,
    max_bytes: u32,
    queued: Arc<Counts>,
}

/// What is queued now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Queued {
    pub(super) objects: u64,
    pub(super) bytes: u64,
}

/// A queue of at most `max_objects` objects and `max_bytes` bytes (an object larger than
/// `max_bytes` passes alone). Both bounds are at least 1.
pub(super) fn queue(max_objects: usize, max_bytes: u32) -> (QueueIn, QueueOut) {
    let max_bytes = max_bytes.max(1);
    let (objects_in, objects_out) = mpsc::channel(max_objects.max(1));
    let bytes = Arc::new(Semaphore::new(max_bytes as usize));
    let queued = Arc::new(Counts::default());
    let queue_in = QueueIn {
        objects: objects_in,
        bytes: bytes.clone(),
        max_bytes,
        queued: queued.clone(),
    };
    let queue_out = QueueOut {
        objects: objects_out,
        bytes,
        max_bytes,
        queued,
    };
    (queue_in, queue_out)
}

/// The bytes of the budget that `object` holds while queued.
fn charge(object: &DeliveredObject, max_bytes: u32) -> u32 {
    u32::try_from(object.data.len()).map_or(max_bytes, |len| len.min(max_bytes))
}

impl QueueIn {
    /// Waits for room, then queues `object`. Returns false once the application is gone (the
    /// object is dropped: nobody wants it).
    pub(super) async fn push(&self, object: DeliveredObject) -> bool {
        let charge = charge(&object, self.max_bytes);
        // Room in objects first: a byte budget held while waiting for a slot would starve
        // smaller objects behind it for nothing.
        let Ok(slot) = self.objects.reserve().await else {
            return false;
        };
        match self.bytes.acquire_many(charge).await {
            // Given back by the application when it takes the object.
            Ok(permit) => permit.forget(),
            Err(_) => return false, // Closed: the application is gone.
        }
        self.queued.objects.fetch_add(1, Ordering::Relaxed);
        self.queued
            .bytes
            .fetch_add(object.data.len() as u64, Ordering::Relaxed);
        slot.send(object);
        true
    }

    /// What is queued now.
    pub(super) fn queued(&self) -> Queued {
        Queued {
            objects: self.queued.objects.load(Ordering::Relaxed),
            bytes: self.queued.bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for QueueOut {
    fn drop(&mut self) {
        // A push waiting for bytes gives up (the slot is closed with the channel, but the
        // budget is not): nobody will take anything out any more.
        self.bytes.close();
    }
}

impl QueueOut {
    /// The next object; `None` once every sending half is gone and the queue is empty.
    pub(super) async fn recv(&mut self) -> Option<DeliveredObject> {
        let object = self.objects.recv().await?;
        Some(self.taken(object))
    }

    /// The next object already queued, without waiting.
    pub(super) fn try_recv(&mut self) -> Option<DeliveredObject> {
        let object = self.objects.try_recv().ok()?;
        Some(self.taken(object))
    }

    fn taken(&self, object: DeliveredObject) -> DeliveredObject {
        self.queued.objects.fetch_sub(1, Ordering::Relaxed);
        self.queued
            .bytes
            .fetch_sub(object.data.len() as u64, Ordering::Relaxed);
        self.bytes
            .add_permits(charge(&object, self.max_bytes) as usize);
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::ReceivedVia;
    use bytes::Bytes;

    fn object(id: u64, len: usize) -> DeliveredObject {
        DeliveredObject {
            writer: "writer".into(),
            object_id: id,
            data: Bytes::from(vec![0u8; len]),
            via: ReceivedVia::Unicast,
            digest: None,
        }
    }

    /// Whether `push` finishes without anything taken out (it is polled once: a push that
    /// must wait for room is pending then).
    fn pushes_now(queue_in: &QueueIn, object: DeliveredObject) -> bool {
        let push = std::pin::pin!(queue_in.push(object));
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        push.poll(&mut context).is_ready()
    }

    use std::future::Future;

    #[tokio::test]
    async fn a_full_queue_holds_the_next_object_until_one_is_taken() {
        let (queue_in, mut queue_out) = queue(2, 1000);
        assert!(pushes_now(&queue_in, object(1, 10)));
        assert!(pushes_now(&queue_in, object(2, 10)));
        assert_eq!(
            queue_in.queued(),
            Queued {
                objects: 2,
                bytes: 20
            }
        );
        assert!(!pushes_now(&queue_in, object(3, 10)), "two objects at most");
        assert_eq!(queue_out.try_recv().map(|o| o.object_id), Some(1));
        assert!(pushes_now(&queue_in, object(3, 10)));
        assert_eq!(queue_out.recv().await.map(|o| o.object_id), Some(2));
        assert_eq!(queue_out.recv().await.map(|o| o.object_id), Some(3));
        assert_eq!(queue_in.queued(), Queued::default());
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_the_queue_and_a_larger_object_passes_alone() {
        let (queue_in, mut queue_out) = queue(100, 1000);
        assert!(pushes_now(&queue_in, object(1, 600)));
        assert!(
            !pushes_now(&queue_in, object(2, 600)),
            "1,200 bytes > 1,000"
        );
        assert_eq!(queue_out.try_recv().map(|o| o.object_id), Some(1));
        // Larger than the whole budget: it takes all of it, and waits for an empty queue.
        assert!(pushes_now(&queue_in, object(3, 5000)));
        assert_eq!(queue_in.queued().bytes, 5000);
        assert!(!pushes_now(&queue_in, object(4, 1)));
        assert_eq!(queue_out.try_recv().map(|o| o.object_id), Some(3));
        assert!(pushes_now(&queue_in, object(4, 1)));
        assert_eq!(queue_out.try_recv().map(|o| o.object_id), Some(4));
        assert_eq!(queue_in.queued(), Queued::default());
    }

    #[tokio::test]
    async fn a_push_after_the_application_left_is_dropped() {
        let (queue_in, queue_out) = queue(2, 1000);
        drop(queue_out);
        assert!(!queue_in.push(object(1, 10)).await);
    }

    #[tokio::test]
    async fn a_push_waiting_for_bytes_gives_up_when_the_application_leaves() {
        let (queue_in, queue_out) = queue(4, 1000);
        assert!(pushes_now(&queue_in, object(1, 900)));
        // Waits for bytes (it holds a slot), until the application is gone.
        let waiting = queue_in.push(object(2, 900));
        drop(queue_out);
        assert!(!waiting.await, "not delivered, and not stuck");
    }
}
