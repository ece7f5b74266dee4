//! [`Compressibility`]: what a peer's link has learned about whether the payloads sent on it
//! compress.
//!
//! Trying zstd on incompressible data (media, already compressed or encrypted objects) costs
//! CPU for nothing, and every try runs on a blocking thread, a handoff of its own. After a
//! chunk that did not shrink, the next chunk is sent raw without trying, after two failures in
//! a row the next two, then four, up to [`MAX_SKIP`]; a chunk that shrinks resets this.
//!
//! The memory is the link's, not one object's: an object no larger than the chunk size (1 MiB
//! by default, so nearly all of them) is one chunk, and a memory per object would try every
//! one. Objects sent at once on one link share it; that they race for its counters only moves
//! a try by a chunk or two.

use std::sync::atomic::{AtomicU32, Ordering};

/// Chunks sent raw without trying zstd after the most tries in a row that did not shrink: a
/// link of incompressible payloads tries one chunk in `MAX_SKIP + 1`.
pub(crate) const MAX_SKIP: u32 = 16;

/// Whether the next chunks sent on a link are worth trying to compress.
#[derive(Debug)]
pub(crate) struct Compressibility {
    /// Chunks still to send raw without trying.
    skip: AtomicU32,
    /// Chunks to skip after the next try that does not shrink.
    backoff: AtomicU32,
}

impl Default for Compressibility {
    fn default() -> Self {
        Self {
            skip: AtomicU32::new(0),
            backoff: AtomicU32::new(1),
        }
    }
}

impl Compressibility {
    /// Whether the next chunk is to be tried. A chunk that is not uses up one of the skip.
    pub(crate) fn try_next(&self) -> bool {
        self.skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |skip| {
                skip.checked_sub(1)
            })
            .is_err()
    }

    /// Whether the next `chunks` chunks are all to be sent without trying, as things stand
    /// (chunks of other objects on the link may use the skip up meanwhile).
    pub(crate) fn skips(&self, chunks: u32) -> bool {
        self.skip.load(Ordering::Relaxed) >= chunks
    }

    /// A tried chunk shrank: try every chunk again.
    pub(crate) fn shrank(&self) {
        self.backoff.store(1, Ordering::Relaxed);
        self.skip.store(0, Ordering::Relaxed);
    }

    /// A tried chunk did not shrink: skip the next ones, twice as many as the last time.
    pub(crate) fn did_not_shrink(&self) {
        let backoff = self.backoff.load(Ordering::Relaxed);
        self.skip.store(backoff, Ordering::Relaxed);
        self.backoff
            .store((backoff * 2).min(MAX_SKIP), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_double_the_chunks_skipped_up_to_the_bound() {
        let history = Compressibility::default();
        let mut skipped = Vec::new();
        for _ in 0..7 {
            // The chunk before was tried and did not shrink; count the chunks not tried after
            // it until the next try.
            history.did_not_shrink();
            let mut run = 0;
            while !history.try_next() {
                run += 1;
            }
            skipped.push(run);
        }
        assert_eq!(skipped, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn a_chunk_that_shrinks_makes_every_chunk_tried_again() {
        let history = Compressibility::default();
        for _ in 0..5 {
            history.did_not_shrink();
        }
        assert!(history.skips(16));
        history.shrank();
        assert!(!history.skips(1));
        assert!(history.try_next());
        history.did_not_shrink();
        assert!(
            history.skips(1) && !history.skips(2),
            "the backoff started again at 1"
        );
    }
}
